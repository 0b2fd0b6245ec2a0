"""Naive vs absorbed MLA decoding as the context grows: tokens/s and KV-cache bytes, side by side, one run.

    python -m ds_core bench mla [--model DIR] [--contexts 128,512,2048] [--steps 32] [--repeats 5] [--threads 1]
                                [--json PATH]

For each context length the model prefills that many random token ids into a NaiveCache (per-head K and V)
and a LatentCache (MLA's c_KV and rope key), then times bursts of greedy single-token decode steps on each,
alternating the two (ds_core.labs.mla.decode_speed); the median burst is reported, with the cache bytes measured
after the prefill. Contexts longer than the model's max_position_embeddings are decoded all the same (rope has
no limit; the model is just untrained there, which does not change the work a step does).

What to read: the ratios. absorbed / naive tokens/s > 1 means absorbing W_UK and W_UV pays off at that context;
naive / latent cache bytes is what MLA saves in memory, and is the same at every context.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from ..checks import check_int, parse_list
from ..viz.text import human_bytes
from ..labs.mla import by_context, decode_speed
from ..model import DeepSeekModel
from .command import Report, add_model_argument, add_run_arguments, torch_threads


def format_table(pairs: list[dict], steps: int, repeats: int) -> str:
    """by_context's rows as the lines the command prints."""
    lines = [f"  {'context':>8}{'naive tok/s':>13}{'absorbed tok/s':>16}{'absorbed/naive':>16}"
             f"{'naive cache':>13}{'latent cache':>14}{'naive/latent':>14}"]
    for p in pairs:
        lines.append(f"  {p['context']:>8}{p['naive_tokens_per_s']:>13.1f}{p['absorbed_tokens_per_s']:>16.1f}"
                     f"{p['speedup']:>15.2f}x{human_bytes(p['naive_cache_bytes']):>13}"
                     f"{human_bytes(p['absorbed_cache_bytes']):>14}{p['cache_ratio']:>13.2f}x")
    lines.append(f"  tokens/s: median of {repeats} bursts of {steps} decode steps per implementation, alternated; "
                 "cache: bytes after the prefill, measured")
    return "\n".join(lines)


def benchmark(model_dir: str | Path, contexts: list[int], steps: int, repeats: int, threads: int) -> Report:
    """Load model_dir and time it -> the report; its rows are by_context's. Sets torch's threads for the run,
    then restores them."""
    for what, value in (("--steps", steps), ("--repeats", repeats), ("--threads", threads)):
        check_int(what, value, 1)
    model = DeepSeekModel.from_pretrained(model_dir, dtype=torch.float32)
    cfg = model.config
    with torch_threads(threads):
        decode_speed(model, contexts=[min(contexts)], steps=2, repeats=1)  # warm-up: first-call allocations
        pairs = by_context(decode_speed(model, contexts=contexts, steps=steps, repeats=repeats))
    beyond = [c for c in contexts if c > cfg.max_position_embeddings]
    note = (f"\n  contexts {', '.join(map(str, beyond))} exceed the model's max_position_embeddings "
            f"({cfg.max_position_embeddings}): decoded all the same, the work per step does not depend on it"
            if beyond else "")
    text = "\n".join([
        "MLA decode benchmark: naive (per-head K/V cache) vs absorbed (latent cache), batch 1, greedy, fp32, CPU",
        f"  model      {model_dir}  ({sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters, "
        f"{cfg.num_hidden_layers} layers, {cfg.num_attention_heads} heads, kv_lora_rank {cfg.kv_lora_rank})",
        f"  threads    {threads}   torch {torch.__version__}",
        "",
        format_table(pairs, steps, repeats) + note,
    ])
    settings = {"model": str(model_dir), "steps": steps, "repeats": repeats, "threads": threads}
    return Report(text, settings, pairs)


def parse_contexts(text: str) -> list[int]:
    """--contexts '128,512' -> [128, 512]; argparse reports a bad list as a usage error."""
    try:
        contexts = [check_int("each context", c, 1) for c in parse_list("contexts", text)]
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    if not contexts:
        raise argparse.ArgumentTypeError("contexts must name at least one context length")
    return contexts


# ---- python -m ds_core bench mla --------------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = ("Decode tokens/s and KV-cache bytes of naive vs absorbed MLA at several context "
                          "lengths, in one run; prints both and their ratios.")
    add_model_argument(parser)
    parser.add_argument("--contexts", type=parse_contexts, default=[128, 512, 2048],
                        help="comma list of cached tokens to decode after (default 128,512,2048)")
    parser.add_argument("--steps", type=int, default=32, help="decode steps per timed burst (default 32)")
    add_run_arguments(parser, repeats=5, what="bursts per implementation and context")


def run(args: argparse.Namespace) -> None:
    benchmark(args.model, args.contexts, args.steps, args.repeats, args.threads).show(args.json)
