"""Command line: python -m ds_core COMMAND ...; `python -m ds_core --help` lists the commands.

    python -m ds_core generate "Once upon a time" --model assets/ds-tiny --temperature 0.8 --top-k 50
    python -m ds_core inspect assets/ds-tiny --dtype bf16
    python -m ds_core bench --help           # the benchmarks: decode (the default), mla, prefill
    python -m ds_core train --help

COMMANDS is the table: a new command is one line here, naming the module that implements it (its
add_arguments(parser) and run(args); ds_core.cli says how they are called), and a new benchmark one line in
BENCHMARKS. The generate command is implemented below: its work is ds_core.generate itself.

Bad input (a wrong option, a path that is no checkpoint) prints one line `error: ...` and exits 2.
Set DS_CORE_TRACEBACK=1 to see the traceback instead.
"""

from __future__ import annotations

import argparse
import sys

from . import cli
from .checks import DTYPES, check_int

BENCHMARKS = cli.Group(
    "bench", "time the engine: each benchmark prints a table, and --json PATH writes its rows",
    noun="benchmark", default="decode", commands=(
        cli.Command("decode", "ds_core.perf.decode_bench",
                    "decode tokens/s at batch 1: ds_core (eager and compiled) against transformers' generate"),
        cli.Command("mla", "ds_core.perf.mla_bench",
                    "naive vs absorbed MLA decoding as the context grows: tokens/s and KV-cache bytes"),
        cli.Command("prefill", "ds_core.perf.prefill_bench",
                    "dense vs sliding-window prefill by length: time and peak memory"),
    ))

COMMANDS = cli.Group(
    "python -m ds_core", "A readable DeepSeek-V2/V3 inference engine.", commands=(
        cli.Command("generate", __name__, "stream a continuation of PROMPT from a checkpoint"),
        cli.Command("inspect", "ds_core.evaluation.sizes",
                    "architecture, parameter counts and KV-cache bytes, from config.json alone"),
        BENCHMARKS,
        cli.Command("train", "ds_core.training.train", "train the shipped model, assets/ds-tiny, from nothing"),
        cli.Command("train-indexer", "ds_core.training.train_indexer",
                    "train the DSA lightning indexers of a frozen model"),
        cli.Command("eval", "ds_core.evaluation.quality",
                    "perplexity, recall by distance, expert load and greedy continuations on the story corpus"),
        cli.Command("card", "ds_core.training.card", "measure the shipped model and rewrite its model card"),
    ))


def main(argv: list[str] | None = None) -> int:
    """python -m ds_core's arguments (default sys.argv[1:]) -> exit code."""
    return cli.main(COMMANDS, argv)


# ---- generate ---------------------------------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = ("Load a checkpoint and stream the continuation of PROMPT to stdout; timings go to "
                          "stderr.")
    parser.add_argument("prompt", metavar="PROMPT")
    parser.add_argument("--model", required=True, metavar="PATH",
                        help="checkpoint directory (config.json, safetensors, tokenizer.json)")
    parser.add_argument("--temperature", type=float, default=1.0,
                        help="sampling temperature, >= 0; 0 = greedy (default 1.0)")
    parser.add_argument("--top-k", type=int, default=0, help="keep the k most likely tokens; 0 = off (default)")
    parser.add_argument("--top-p", type=float, default=1.0, help="nucleus mass in (0, 1]; 1 = off (default)")
    parser.add_argument("--max-new-tokens", type=int, default=64, help="tokens to generate, >= 1 (default 64)")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed; same seed, same text (default 0)")
    cli.add_mla_argument(parser)
    parser.add_argument("--dtype", choices=tuple(DTYPES), default="fp32", help="weight dtype (default fp32)")
    cli.add_device_argument(parser)


def run(args: argparse.Namespace) -> None:
    from . import DeepSeekModel, Tokenizer, generate
    from .checkpoint import read_config
    from .generate import SamplingParams, format_generation_stats, generation_stats

    # The cheap checks first, before anything loads.
    SamplingParams(args.temperature, args.top_k, args.top_p)
    check_int("max_new_tokens", args.max_new_tokens, 1)
    if not args.prompt:
        raise ValueError("the prompt is empty: give at least one character of text")
    read_config(args.model)  # a bad directory or config.json is reported first, and before the (slow) weights load
    tok = Tokenizer.from_pretrained(args.model)
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


if __name__ == "__main__":
    sys.exit(main())
