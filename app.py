"""DeepSeek Inference Explorer: the web app.

    python app.py                          # the shipped model, assets/ds-tiny, at http://127.0.0.1:7860
    python app.py --model PATH --port 7861

The model and its tokenizer are loaded once at start-up and shared by every tab. Each tab is a module in
ds_core/ui/ (see its __init__ for what a tab provides); this file only assembles them. The server binds 127.0.0.1
unless --host says otherwise.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

DEFAULT_MODEL = "assets/ds-tiny"
EXIT_BAD_INPUT = 2
CHECKPOINT_CONTENTS = ("a checkpoint is a directory with config.json and model.safetensors "
                       "(or model.safetensors.index.json and its shards)")


def tabs():
    """The tab modules, in the order they appear."""
    from ds_core.ui import attention_tab, generate_tab, mla_tab, model_tab, moe_tab, qkv_tab, temperature_tab
    return (generate_tab, qkv_tab, attention_tab, temperature_tab, mla_tab, moe_tab, model_tab)


def build_app(model_path: str | Path, model=None):
    """gr.Blocks with every tab, around the model at model_path (loaded fp32 on cpu unless model is given)."""
    import gradio as gr
    import torch

    from ds_core import DeepSeekModel
    from ds_core.evaluation.sizes import param_summary
    from ds_core.viz.text import human_count
    from ds_core.ui import AppContext

    path = Path(model_path)
    if model is None:
        model = DeepSeekModel.from_pretrained(path, device="cpu", dtype=torch.float32)
    ctx = AppContext.load(path, model)  # the tokenizer too, once for every tab
    with gr.Blocks(title="DeepSeek Inference Explorer", analytics_enabled=False) as demo:
        gr.Markdown(f"# DeepSeek Inference Explorer\n`{path}`: {ctx.config.model_type}, "
                    f"{human_count(param_summary(ctx.config)['total'])} parameters")
        with gr.Tabs():
            for tab in tabs():
                tab.build(ctx)
    return demo


def check_checkpoint(path: str | Path) -> str | None:
    """None if path looks like a loadable checkpoint (config and weight index read), else a one-line message."""
    from ds_core.checkpoint import CheckpointError, read_config, weight_files

    try:
        read_config(path)
        weight_files(path)
    except CheckpointError as e:
        return _bad_model(path, e)
    return None


def _bad_model(path, error) -> str:
    default = " (the default; pass --model PATH)" if str(path) == DEFAULT_MODEL else ""
    return f"error: --model {path}{default} is not a loadable checkpoint: {error}; {CHECKPOINT_CONTENTS}"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python app.py", description="DeepSeek Inference Explorer (web app).")
    parser.add_argument("--model", default=DEFAULT_MODEL, metavar="PATH",
                        help=f"checkpoint directory (default {DEFAULT_MODEL})")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to bind (default 127.0.0.1: this machine only; 0.0.0.0 exposes it)")
    parser.add_argument("--port", type=int, default=7860, help="(default 7860)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    problem = check_checkpoint(args.model)  # before the slow gradio import, so a typo fails at once
    if problem:
        print(problem, file=sys.stderr)
        return EXIT_BAD_INPUT
    from ds_core.checkpoint import CheckpointError

    try:
        demo = build_app(args.model)
    except CheckpointError as e:  # found while loading: a missing tensor, a wrong shape, a truncated file
        print(_bad_model(args.model, e), file=sys.stderr)
        return EXIT_BAD_INPUT
    demo.launch(server_name=args.host, server_port=args.port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
