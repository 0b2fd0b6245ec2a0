"""Evaluate a model on the story corpus: perplexity, long-range recall by distance, expert load, and whether
greedy continuations of held-out openings stay on their characters.

    python -m ds_core eval --model assets/ds-tiny                 # all of them, printed as a table
    python -m ds_core eval --model assets/ds-tiny --json out.json --dtype bf16 --window 32 --sinks 4

Every function takes the options generation takes (the attention backend, the MLA form; the dtype is the
model's own), so a lab can measure what a technique costs by passing the same options it generates with.
"""

from __future__ import annotations

import argparse
import json
import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import torch
import torch.nn.functional as F

from . import continuations
from ..checks import DTYPES, check_int
from ..cli import add_device_argument, add_json_argument, add_mla_argument
from ..data import recall, stories
from ..generate import generate
from ..model.moe import Router
from ..tokenizer import Tokenizer


@dataclass
class RunOptions:
    """How the model runs during an evaluation; the same knobs as generation."""
    backend: object = None      # attention backend or its name (None: dense)
    mla: str | None = None      # 'naive' or 'absorbed' (None: the model's default)
    batch_size: int = 8


def _forward(model, ids: torch.Tensor, opts: RunOptions) -> torch.Tensor:
    return model(ids.to(model.device), backend=opts.backend, mla=opts.mla)


def story_windows(tok: Tokenizer, split: str, n: int, seq_len: int) -> torch.Tensor:
    """n windows [n, seq_len + 1] starting at the split's story starts, as in training (ds_core.training.train)."""
    encoded = [tok.encode(text) + [tok.eos_token_id] for text in stories.split(split, n + 8)]
    stream = torch.tensor([i for ids in encoded for i in ids])  # 8 extra stories fill the last windows
    starts = torch.tensor([0] + [len(ids) for ids in encoded[:n - 1]]).cumsum(0)
    return torch.stack([stream[s:s + seq_len + 1] for s in starts.tolist() if s + seq_len + 1 <= len(stream)])


def window_logits(model, ids: torch.Tensor, opts: RunOptions) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Story windows ids [n, L + 1] (from story_windows), opts.batch_size at a time -> (chunk [b, L + 1],
    logits [b, L, V]): the logits of each window's first L tokens, which predict its last L."""
    for chunk in ids.split(opts.batch_size):
        yield chunk, _forward(model, chunk[:, :-1], opts)


@torch.inference_mode()
def perplexity(model, tok: Tokenizer, split: str = "test", n: int = 200, seq_len: int | None = None,
               opts: RunOptions = RunOptions()) -> dict:
    """exp(mean next-token cross-entropy) over n story windows of the split -> {loss, perplexity, tokens}."""
    seq_len = seq_len or model.config.max_position_embeddings
    ids = story_windows(tok, split, n, seq_len)
    total, count = 0.0, 0
    for chunk, logits in window_logits(model, ids, opts):
        total += F.cross_entropy(logits.float().flatten(0, 1), chunk[:, 1:].flatten().to(logits.device),
                                 reduction="sum").item()
        count += chunk[:, 1:].numel()
    loss = total / count
    return {"split": split, "loss": loss, "perplexity": math.exp(loss), "tokens": count}


@torch.inference_mode()
def recall_accuracy(model, tok: Tokenizer, per_bucket: int = 100, split: str = "test",
                    opts: RunOptions = RunOptions()) -> dict:
    """Greedy recall of a name or object introduced d tokens earlier, per distance bucket.

    A probe counts as recalled when greedy decoding reproduces every token of the target word. Returns
    {bucket: {accuracy, n, name, object}} plus 'probes': the per-probe results.
    """
    probes = recall.recall_probes(tok.encode, per_bucket, split)
    rows, results = [], []
    for p in probes:
        prefix, full = tok.encode(p.text), tok.encode(p.text + p.target)
        if full[:len(prefix)] != prefix:
            raise AssertionError(f"target {p.target!r} changes the tokens before it")
        rows.append((full, len(prefix)))
    pad = tok.eos_token_id
    for start in range(0, len(rows), opts.batch_size):
        chunk = rows[start:start + opts.batch_size]
        width = max(len(r) for r, _ in chunk)
        # right padding: causal attention never lets a real token see the padding after it
        ids = torch.tensor([r + [pad] * (width - len(r)) for r, _ in chunk])
        guess = _forward(model, ids, opts).argmax(-1).cpu()
        for row, (r, n_prefix) in enumerate(chunk):
            target = torch.tensor(r[n_prefix:])
            predicted = guess[row, n_prefix - 1:len(r) - 1]
            results.append(bool((predicted == target).all()))
    out: dict = {}
    for lo, hi in recall.BUCKETS:
        name = recall.bucket_name(lo, hi)
        hits = [(p, ok) for p, ok in zip(probes, results) if p.bucket == name]
        by_kind = {k: [ok for p, ok in hits if p.kind == k] for k in ("name", "object")}
        out[name] = {"accuracy": sum(ok for _, ok in hits) / len(hits), "n": len(hits),
                     **{k: sum(v) / len(v) for k, v in by_kind.items() if v}}
    out["probes"] = [{"bucket": p.bucket, "kind": p.kind, "distance": p.distance, "target": p.target.strip(),
                      "recalled": ok} for p, ok in zip(probes, results)]
    return out


def random_words(tok: Tokenizer, n: int, length: int, seed: int = 0) -> torch.Tensor:
    """[n, length] ids: each row a run of words drawn at random from the corpus's chant vocabulary
    (stories.CHANT_WORDS), tokenized and cut to length tokens. Text in the model's own format that only an
    earlier showing can predict."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        ids = tok.encode(" " + " ".join(rng.choice(stories.CHANT_WORDS) for _ in range(length)))
        rows.append(ids[1:length + 1] if ids[0] == tok.bos_token_id else ids[:length])
    return torch.tensor(rows)


@torch.inference_mode()
def induction_score(model, tok: Tokenizer | None = None, n: int = 8, length: int = 100, seed: int = 0,
                    opts: RunOptions = RunOptions()) -> dict:
    """Can the model copy from its context? Random sequences [n, length] are shown twice in a row; a model with
    induction heads predicts the second copy far better than the first (which is unpredictable).

    With tok the sequences are random corpus words (random_words); without, random token ids, most of them
    word pieces never seen side by side, which a small model trained on one kind of text may not copy.
    Returns the mean next-token loss on each copy (nats) and their difference: near 0 means no copying.
    """
    g = torch.Generator().manual_seed(seed)
    if tok is None:
        seq = torch.randint(2, model.config.vocab_size, (n, length), generator=g)  # 2: skip <bos> and <eos>
    else:
        seq = random_words(tok, n, length, seed)
    ids = torch.cat([seq, seq], dim=1)
    logits = _forward(model, ids[:, :-1], opts).float().cpu()
    loss = F.cross_entropy(logits.flatten(0, 1), ids[:, 1:].flatten(), reduction="none").view(n, -1)
    first, second = loss[:, :length - 1].mean().item(), loss[:, length:].mean().item()
    return {"first_copy_loss": first, "second_copy_loss": second, "copy_gain": first - second}


@torch.inference_mode()
def continuation_quality(model, tok: Tokenizer, n: int = 50, max_new_tokens: int = 80, temperature: float = 0.0,
                         seed: int = 0, opts: RunOptions = RunOptions()) -> dict:
    """Continuations of n held-out story openings (greedy by default), measured against the stories' own
    (ds_core.evaluation.continuations) -> {model: summary, corpus: summary, tokens: max_new_tokens, temperature,
    samples: [{opening, model, story}]}."""
    check_int("n", n, 1)
    rows = []
    for opening, story in continuations.held_out_openings(n):
        text = "".join(s.text for s in generate(model, tok, opening, temperature=temperature, seed=seed,
                                                max_new_tokens=max_new_tokens, backend=opts.backend, mla=opts.mla))
        rows.append({"opening": opening, "model": text,
                     "story": continuations.story_continuation(tok, opening, story, max_new_tokens)})
    return {"model": continuations.summarize([(r["opening"], r["model"]) for r in rows]),
            "corpus": continuations.summarize([(r["opening"], r["story"]) for r in rows]),
            "tokens": max_new_tokens, "temperature": temperature, "samples": rows}


class ExpertLoad:
    """Counts the tokens each Router sends to each of its experts, through forward hooks.

    Use as a context manager (hooks removed on exit) or keep it attached (training's balancing does).
    counts[i] [E] belongs to routers[i], in layer order.
    """

    def __init__(self, model):
        self.routers = [m for m in model.modules() if isinstance(m, Router)]
        self.layers = [name.split(".")[1] for name, m in model.named_modules() if isinstance(m, Router)]
        self.counts = [torch.zeros(m.weight.shape[0]) for m in self.routers]
        self.hooks = [m.register_forward_hook(self._hook(i)) for i, m in enumerate(self.routers)]

    def _hook(self, i):
        def count(module, args, routing):
            self.counts[i] += torch.bincount(routing.experts.flatten(), minlength=len(self.counts[i])).cpu()
        return count

    def reset(self) -> list[torch.Tensor]:
        counts, self.counts = self.counts, [torch.zeros_like(c) for c in self.counts]
        return counts

    def __enter__(self) -> "ExpertLoad":
        return self

    def __exit__(self, *exc) -> None:
        for h in self.hooks:
            h.remove()


@torch.inference_mode()
def expert_load(model, tok: Tokenizer, split: str = "test", n: int = 100, seq_len: int | None = None,
                opts: RunOptions = RunOptions()) -> dict:
    """Share of each layer's routed token slots that each expert receives -> {layer: [E] fractions}."""
    seq_len = seq_len or model.config.max_position_embeddings
    ids = story_windows(tok, split, n, seq_len)
    with ExpertLoad(model) as load:
        for chunk in ids.split(opts.batch_size):
            _forward(model, chunk[:, :-1], opts)
    return {f"layers.{layer}": (c / c.sum()).tolist() for layer, c in zip(load.layers, load.counts)}


def evaluate(model, tok: Tokenizer, per_bucket: int = 100, n: int = 200, opts: RunOptions = RunOptions(),
             openings: int = 50) -> dict:
    return {"validation": perplexity(model, tok, "validation", n, opts=opts),
            "test": perplexity(model, tok, "test", n, opts=opts),
            "recall": recall_accuracy(model, tok, per_bucket, opts=opts),
            "induction": induction_score(model, tok, opts=opts),
            "induction_random_ids": induction_score(model, opts=opts),
            "expert_load": expert_load(model, tok, opts=opts),
            "continuations": continuation_quality(model, tok, openings, opts=opts)}


CONTINUATION_MEASURES = {"returns": "continuations that name an opening's character again",
                         "cast_share": "name mentions that are an opening's characters",
                         "loops": "continuations that repeat a word or a sentence back to back"}


def format_report(r: dict) -> str:
    lines = [f"perplexity: validation {r['validation']['perplexity']:.3f}, test {r['test']['perplexity']:.3f} "
             f"({r['test']['tokens']:,} tokens)", "recall by distance (greedy, test split):"]
    for key, v in r["recall"].items():
        if key != "probes":
            lines.append(f"  d {key:>8}: {v['accuracy']:.1%} of {v['n']}  (names {v.get('name', 0):.1%}, "
                         f"objects {v.get('object', 0):.1%})")
    ind = r["induction"]
    lines.append(f"copying a repeated run of random words: loss {ind['first_copy_loss']:.2f} on the first copy, "
                 f"{ind['second_copy_loss']:.2f} on the second")
    lines.append("greedy continuations of held-out openings (shares: model / the stories' own):")
    model, corpus = r["continuations"]["model"], r["continuations"]["corpus"]
    for key, label in CONTINUATION_MEASURES.items():
        lines.append(f"  {label}: {model[key]:.0%} / {corpus[key]:.0%}")
    lines.append("expert load (share of routed slots, min-max per layer):")
    for layer, shares in r["expert_load"].items():
        lines.append(f"  {layer}: {min(shares):.1%} - {max(shares):.1%}")
    return "\n".join(lines)


# ---- python -m ds_core eval -------------------------------------------------------------------------------
def backend_from_args(args):
    """The attention backend the command line asks for: dense, --window W [--sinks G] or --dsa-top-k K."""
    from ..attention import DenseAttention, DSAAttention, WindowAttention

    if args.window is not None and args.dsa_top_k is not None:
        raise ValueError("choose one of --window and --dsa-top-k")
    if args.window is not None:
        return WindowAttention(args.window, n_global=args.sinks, temperature=args.attn_temperature)
    if args.dsa_top_k is not None:
        return DSAAttention.from_pretrained(args.model, args.dsa_top_k, args.attn_temperature)
    return DenseAttention(temperature=args.attn_temperature)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = __doc__.split("\n\n")[0]
    parser.add_argument("--model", default="assets/ds-tiny", metavar="PATH", help="(default assets/ds-tiny)")
    parser.add_argument("--dtype", choices=tuple(DTYPES), default="fp32", help="weight dtype (default fp32)")
    add_device_argument(parser)
    parser.add_argument("--window", type=int, metavar="W", help="sliding-window attention over W tokens")
    parser.add_argument("--sinks", type=int, default=0, metavar="G", help="with --window: G sink tokens")
    parser.add_argument("--dsa-top-k", type=int, metavar="K",
                        help="DSA attention over each query's top K tokens (needs the model's trained indexer)")
    parser.add_argument("--attn-temperature", type=float, default=1.0, metavar="T", help="attention τ_attn")
    add_mla_argument(parser)
    parser.add_argument("--per-bucket", type=int, default=100, help="recall probes per distance bucket")
    parser.add_argument("--stories", type=int, default=200, help="story windows for perplexity")
    parser.add_argument("--openings", type=int, default=50, help="held-out openings to continue greedily")
    add_json_argument(parser)


def run(args: argparse.Namespace) -> None:
    from ..model import DeepSeekModel

    # The options first, before anything loads.
    for flag in ("per_bucket", "stories", "openings"):
        check_int("--" + flag.replace("_", "-"), getattr(args, flag), 1)
    backend = backend_from_args(args)
    model = DeepSeekModel.from_pretrained(args.model, device=args.device, dtype=DTYPES[args.dtype])
    tok = Tokenizer.from_pretrained(args.model)
    result = evaluate(model, tok, args.per_bucket, args.stories, RunOptions(backend, args.mla), args.openings)
    print(format_report(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
