"""Command line: python -m ds_core {generate,inspect,bench} ...

    python -m ds_core generate "Once upon a time" --model assets/ds-tiny --temperature 0.8 --top-k 50
    python -m ds_core inspect assets/ds-tiny --dtype bf16
    python -m ds_core bench --help
    python -m ds_core bench mla --help      # naive vs absorbed MLA decode by context (ds_core.perf.mla_bench)
    python -m ds_core bench prefill --help  # dense vs window prefill: time, peak memory (ds_core.perf.prefill_bench)

Bad input (a wrong sampling setting, a path that is no checkpoint) prints one line `error: ...` and exits 2.
Set DS_CORE_TRACEBACK=1 to see the traceback instead.
"""

from __future__ import annotations

import argparse
import os
import sys

from .checks import DTYPES

EXIT_BAD_INPUT = 2


class BadInput(Exception):
    """Raised for input the user can fix; main() prints it as `error: ...` and exits 2."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m ds_core",
                                     description="A readable DeepSeek-V2/V3 inference engine.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="{generate,inspect,bench}")

    g = sub.add_parser("generate", help="stream a continuation of PROMPT",
                       description="Load a checkpoint and stream the continuation of PROMPT to stdout; "
                                   "timings go to stderr.")
    g.add_argument("prompt", metavar="PROMPT")
    g.add_argument("--model", required=True, metavar="PATH", help="checkpoint directory (config.json, "
                   "safetensors, tokenizer.json)")
    g.add_argument("--temperature", type=float, default=1.0, help="sampling temperature, >= 0; 0 = greedy "
                   "(default 1.0)")
    g.add_argument("--top-k", type=int, default=0, help="keep the k most likely tokens; 0 = off (default)")
    g.add_argument("--top-p", type=float, default=1.0, help="nucleus mass in (0, 1]; 1 = off (default)")
    g.add_argument("--max-new-tokens", type=int, default=64, help="tokens to generate, >= 1 (default 64)")
    g.add_argument("--seed", type=int, default=0, help="sampling seed; same seed, same text (default 0)")
    g.add_argument("--mla", choices=("naive", "absorbed"), default=None,
                   help="MLA implementation and KV cache kind (default absorbed: the latent cache)")
    g.add_argument("--dtype", choices=tuple(DTYPES), default="fp32", help="weight dtype (default fp32)")
    g.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="(default cpu)")
    g.set_defaults(func=cmd_generate)

    i = sub.add_parser("inspect", help="architecture, parameter counts and KV-cache size from config.json",
                       description="Read only config.json (no weights), so it works for any model size.")
    i.add_argument("path", metavar="PATH", help="checkpoint directory")
    i.add_argument("--dtype", choices=tuple(DTYPES), default="bf16",
                   help="dtype of the KV cache for the byte counts (default bf16)")
    i.set_defaults(func=cmd_inspect)

    b = sub.add_parser("bench", help="decode benchmark (ds_core.perf.decode_bench; `bench mla`: "
                       "ds_core.perf.mla_bench; `bench prefill`: ds_core.perf.prefill_bench); arguments pass through",
                       add_help=False)
    b.add_argument("args", nargs=argparse.REMAINDER)
    b.set_defaults(func=cmd_bench)
    return parser


# ---- subcommands ------------------------------------------------------------------------------------------
def cmd_generate(args) -> int:
    from .generate import SamplingParams
    from .generate import format_generation_stats, generation_stats

    # Check the cheap things before loading anything.
    try:
        SamplingParams(args.temperature, args.top_k, args.top_p)
    except ValueError as e:
        raise BadInput(str(e)) from None
    if args.max_new_tokens < 1:
        raise BadInput(f"max_new_tokens must be an integer >= 1, got {args.max_new_tokens}")
    if not args.prompt:
        raise BadInput("the prompt is empty: give at least one character of text")

    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        raise BadInput("--device cuda: this torch build sees no CUDA device; use --device cpu")
    from . import DeepSeekModel, generate

    tok = _load_tokenizer(args.model)
    model = DeepSeekModel.from_pretrained(args.model, device=args.device, dtype=DTYPES[args.dtype])
    out = sys.stdout
    out.write(args.prompt)
    out.flush()
    steps = []
    for step in generate(model, tok, args.prompt, temperature=args.temperature, top_k=args.top_k,
                         top_p=args.top_p, max_new_tokens=args.max_new_tokens, seed=args.seed, mla=args.mla):
        steps.append(step)
        if step.text:
            out.write(step.text)
            out.flush()
    out.write("\n")
    out.flush()
    reason = f", stopped at {steps[-1].finish_reason}" if steps and steps[-1].finish_reason else ""
    print(f"-- {format_generation_stats(generation_stats(steps))}{reason}", file=sys.stderr, flush=True)
    return 0


def cmd_inspect(args) -> int:
    from .evaluation.sizes import report
    print(report(args.path, dtype=args.dtype))
    return 0


def cmd_bench(args) -> int:
    # `bench mla ...`: naive vs absorbed MLA; `bench prefill ...`: dense vs window prefill; else ds_core vs transformers
    name = args.args[0] if args.args[:1] in (["mla"], ["prefill"]) else None
    try:
        if name == "mla":
            from .perf import mla_bench as bench
        elif name == "prefill":
            from .perf import prefill_bench as bench
        else:
            from .perf import decode_bench as bench
    except ImportError as e:
        raise BadInput(f"the {name or 'decode'} benchmark is not available in this build ({e})") from None
    rc = bench.main(args.args[1:] if name else args.args)
    return rc if isinstance(rc, int) else 0


def _load_tokenizer(path: str):
    from . import Tokenizer
    from .checkpoint import read_config

    read_config(path)  # a bad directory or config.json is reported first, and before the (slow) weights load
    try:
        return Tokenizer.from_pretrained(path)
    except FileNotFoundError as e:
        raise BadInput(str(e)) from None


# ---- entry ------------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    # `bench` passes everything after it through untouched (including --help).
    if argv and argv[0] == "bench":
        args = argparse.Namespace(func=cmd_bench, args=argv[1:])
    else:
        args = parser.parse_args(argv)  # argparse itself exits 2 with a usage line on bad syntax
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return 130
    except BrokenPipeError:  # `... | head`: the reader left; nothing to report
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # keep the interpreter's last flush quiet
        return 0
    # CheckpointError and ConfigError are ValueErrors; bad sampling settings too. Their messages say what to fix.
    except (BadInput, ValueError, FileNotFoundError, PermissionError, IsADirectoryError) as e:
        if os.environ.get("DS_CORE_TRACEBACK"):  # for debugging ds_core itself: show where it came from
            raise
        return _error(str(e))


def _error(message: str) -> int:
    line = " ".join(message.split())  # one line, whatever the message held
    print(f"error: {line}", file=sys.stderr, flush=True)
    return EXIT_BAD_INPUT


if __name__ == "__main__":
    sys.exit(main())
