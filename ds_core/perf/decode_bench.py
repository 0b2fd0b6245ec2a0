"""Decode speed at batch 1 on CPU: ds_core against transformers' `generate`, same checkpoint, one run.

    python -m ds_core bench [decode] [--model DIR] [--prompt-len 32] [--new-tokens 128] [--repeats 3] [--threads N]
                                     [--no-compile] [--json PATH]

ds_core is timed twice: eager, and with its torch.compile'd decode step (generate_ids(compile=True), see
ds_core.perf.compiled_decode). The compiled step is compiled during the warm-up; that time is printed on its own
line and is not part of any tokens/s. --no-compile times eager ds_core only.

What is measured, and why it is fair:
- decode tokens/s = (new_tokens - 1) / (time from the first generated token to the last). The first token comes
  out of the prefill (the whole prompt in one forward pass); leaving it out times exactly new_tokens - 1
  single-token forward passes per engine, each with that engine's own sampling and bookkeeping.
- Both engines: batch 1, greedy, fp32, CPU, the same prompt ids, the same number of new tokens, the same torch
  thread count (default 1: at batch 1 a small model gains little from more, and a busy machine makes
  multi-threaded timings erratic), in the same process. Neither stops early and neither forbids EOS: both are
  given an empty list of EOS ids (`eos_ids=[]`, `eos_token_id=[]`), so both run the full new_tokens and pick
  the same argmax. (`min_new_tokens` would instead forbid EOS in transformers only, adding two logits
  processors to its loop and changing its tokens whenever EOS is the argmax.)
- transformers is timed from inside its own `generate` loop: a streamer receives each token the moment it is
  chosen (on CPU generate hands tokens over synchronously), and we stamp the clock there. ds_core is timed the
  same way, as `generate_ids` yields each token.
- Repeats alternate the engines (ds_core, ds_core compiled, transformers, ds_core, ...) so slow drift of the machine (heat, other
  processes) falls on both; the median of the repeats is reported. One short warm-up run of each comes first.
- Both runs' greedy tokens are compared: equal tokens show both engines computed the same model.

Without --model a random DeepSeek-V3-architecture checkpoint shaped like the small model the project ships is
written by transformers' save_pretrained to a temporary directory, and both engines load that same file.
Its weights are random, so its text is nonsense; its speed is what a trained model of that shape would have.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..checks import check_int
from ..cli import add_mla_argument
from ..generate import SamplingParams, generate_ids
from ..model import DeepSeekModel
from .command import Report, add_run_arguments, torch_threads

COMPILED = "ds_core compiled"  # the engine name of ds_core with its torch.compile'd decode step

# The random stand-in: the shape of the small model the project ships (8.3M parameters, 5.4M of them used per token).
RANDOM_MODEL = dict(
    model_type="deepseek_v3", vocab_size=4096, hidden_size=256, num_hidden_layers=6,
    num_attention_heads=8, num_key_value_heads=8, q_lora_rank=128, kv_lora_rank=64,
    qk_rope_head_dim=16, qk_nope_head_dim=32, v_head_dim=32,
    intermediate_size=768, first_k_dense_replace=1,              # layer 0 dense, layers 1..5 MoE
    moe_intermediate_size=128, n_routed_experts=8, num_experts_per_tok=2, n_shared_experts=1,
    n_group=2, topk_group=1, routed_scaling_factor=2.5, norm_topk_prob=True,
    max_position_embeddings=2048, bos_token_id=0, eos_token_id=1, tie_word_embeddings=False,
)


def make_random_checkpoint(path: str | Path, seed: int = 0) -> Path:
    """Write RANDOM_MODEL with transformers' default random init (save_pretrained) to path; returns path."""
    from transformers import AutoConfig, AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(AutoConfig.for_model(**RANDOM_MODEL), dtype=torch.float32)
    model.save_pretrained(path)
    return Path(path)


@dataclass
class Run:
    """One timed generation: the new token ids and the clock (perf_counter seconds) when each was chosen."""
    engine: str
    tokens: list[int]
    stamps: list[float]

    @property
    def decode_seconds(self) -> float:
        return self.stamps[-1] - self.stamps[0]

    @property
    def tokens_per_s(self) -> float:
        """Decode rate: the len-1 tokens after the first, over the time they took."""
        return (len(self.stamps) - 1) / self.decode_seconds


def time_ds_core(model: DeepSeekModel, prompt: torch.Tensor, new_tokens: int, mla: str | None = None,
                 compile: bool = False) -> Run:
    """prompt [1, T] -> Run of ds_core's generate_ids (greedy, no EOS), eager or with the compiled decode step."""
    tokens, stamps = [], []
    for token in generate_ids(model, prompt, params=SamplingParams(temperature=0.0), max_new_tokens=new_tokens,
                              seed=None, eos_ids=[], mla=mla, compile=compile):
        stamps.append(time.perf_counter())
        tokens.append(int(token[0]))
    return Run(COMPILED if compile else "ds_core", tokens, stamps)


class _StampingStreamer:
    """A transformers streamer that notes when each token arrives. generate first puts the prompt: skipped."""

    def __init__(self):
        self.tokens: list[int] = []
        self.stamps: list[float] = []
        self._prompt_seen = False

    def put(self, value: torch.Tensor) -> None:
        now = time.perf_counter()
        if not self._prompt_seen:
            self._prompt_seen = True
            return
        self.stamps.append(now)
        self.tokens.append(int(value.reshape(-1)[0]))

    def end(self) -> None:
        pass


def time_transformers(hf_model, prompt: torch.Tensor, new_tokens: int) -> Run:
    """prompt [1, T] -> Run of transformers' generate (greedy, KV cache on, no EOS so it never stops early)."""
    from transformers import GenerationConfig

    config = GenerationConfig(do_sample=False, max_new_tokens=new_tokens, use_cache=True,
                              eos_token_id=[], pad_token_id=0)  # [] = no EOS (None would mean "the model's")
    streamer = _StampingStreamer()
    with torch.inference_mode():
        hf_model.generate(prompt, attention_mask=torch.ones_like(prompt), generation_config=config, streamer=streamer)
    return Run("transformers", streamer.tokens, streamer.stamps)


@dataclass
class BenchResult:
    """Everything one benchmark run measured; `table()` is what the command prints."""
    model: str
    random_weights: bool
    params: int
    prompt_len: int
    new_tokens: int
    threads: int
    mla: str
    hf_attention: str
    runs: dict[str, list[Run]] = field(default_factory=dict)  # engine -> its runs, in ENGINES order
    compile_seconds: float | None = None  # time to compile ds_core's decode step (in the warm-up, not timed)
    compile_error: str | None = None      # why compiling failed (then "ds_core compiled" ran eagerly)

    ENGINES = ("ds_core", COMPILED, "transformers")
    NOISY = 1.25  # slowest / fastest run of one engine above this: the machine was busy, say so

    def median_tokens_per_s(self, engine: str) -> float:
        return statistics.median(r.tokens_per_s for r in self.runs[engine])

    @property
    def engines(self) -> list[str]:
        return [e for e in self.ENGINES if self.runs.get(e)]

    def ratio_of(self, engine: str, baseline: str = "transformers") -> float:
        """engine's tokens/s over baseline's (> 1: engine is faster)."""
        return self.median_tokens_per_s(engine) / self.median_tokens_per_s(baseline)

    @property
    def ratio(self) -> float:
        """ds_core tokens/s over transformers tokens/s, the compiled step's when it was timed."""
        return self.ratio_of(COMPILED if self.runs.get(COMPILED) else "ds_core")

    @property
    def matching_tokens(self) -> int:
        """How many leading greedy tokens all engines agree on (new_tokens when they agree on all)."""
        runs = [self.runs[e][0].tokens for e in self.engines]
        n = 0
        while n < min(map(len, runs)) and len({r[n] for r in runs}) == 1:
            n += 1
        return n

    def spread(self, engine: str) -> float:
        """Fastest run over slowest run's tokens/s, >= 1."""
        rates = [r.tokens_per_s for r in self.runs[engine]]
        return max(rates) / min(rates)

    def rows(self) -> list[dict]:
        """One dict per engine: the figures of the table's rows, unrounded."""
        return [{"engine": e, "tokens_per_s": self.median_tokens_per_s(e),
                 "ms_per_token": 1000 / self.median_tokens_per_s(e),
                 "runs_tokens_per_s": [r.tokens_per_s for r in self.runs[e]]} for e in self.engines]

    def report(self) -> Report:
        """The table, with its rows and this run's settings for --json."""
        settings = {"model": self.model, "random_weights": self.random_weights, "params": self.params,
                    "prompt_len": self.prompt_len, "new_tokens": self.new_tokens, "threads": self.threads,
                    "mla": self.mla, "hf_attention": self.hf_attention, "transformers": _hf_version(),
                    "ratio": self.ratio, "matching_tokens": self.matching_tokens,
                    "compile_seconds": self.compile_seconds, "compile_error": self.compile_error}
        return Report(self.table(), settings, self.rows())

    def table(self) -> str:
        what = ("RANDOM weights, DeepSeek-V3 architecture, saved by transformers (nonsense text, real speed)"
                if self.random_weights else "weights from the checkpoint")
        repeats = len(self.runs["ds_core"])
        compiled = "with and without its compiled decode step " if self.runs.get(COMPILED) else ""
        lines = [
            "decode benchmark: batch 1, greedy, fp32, CPU",
            f"  model      {self.model}",
            f"             {what}, {self.params / 1e6:.1f}M parameters",
            f"  prompt     {self.prompt_len} tokens, then {self.new_tokens} new tokens; decode rate = "
            f"{self.new_tokens - 1} tokens / time from the 1st new token to the last (prefill excluded)",
            f"  threads    {self.threads} for both   torch {torch.__version__}   transformers {_hf_version()}",
            f"  engines    ds_core generate_ids (mla={self.mla}) {compiled}vs transformers generate "
            f"(attn={self.hf_attention}); {repeats} runs each, alternated; median",
            "",
            f"  {'engine':<18}{'tokens/s':>10}{'ms/token':>10}   each run (tokens/s)",
        ]
        for row in self.rows():
            runs = ", ".join(f"{rate:.1f}" for rate in row["runs_tokens_per_s"])
            lines.append(f"  {row['engine']:<18}{row['tokens_per_s']:>10.1f}{row['ms_per_token']:>10.3f}   {runs}")
        match = self.matching_tokens
        same = "yes" if match == self.new_tokens else f"NO (the first {match} of {self.new_tokens} agree)"
        lines.append("")
        if self.runs.get(COMPILED):
            lines += [
                f"  ratio ds_core compiled / transformers: {self.ratio:.2f}x   (target >= 2x; project target >= 5x)",
                f"  ratio ds_core eager / transformers:    {self.ratio_of('ds_core'):.2f}x",
                f"  ratio ds_core compiled / eager:        {self.ratio_of(COMPILED, 'ds_core'):.2f}x",
                f"  compiling the decode step took {self.compile_seconds or 0:.1f} s (in the warm-up, not timed)"
                if self.compile_error is None else
                f"  warning: compiling failed, so 'ds_core compiled' ran eagerly: {self.compile_error}",
            ]
        else:
            lines.append(f"  ratio ds_core / transformers: {self.ratio:.2f}x   (target >= 2x; project target >= 5x)")
        lines.append(f"  greedy tokens identical{' (all engines)' if len(self.engines) > 2 else ''}: {same}")
        noisy = [e for e in self.engines if self.spread(e) > self.NOISY]
        if noisy:
            lines.append(f"  warning: runs of {' and '.join(noisy)} differ by up to "
                         f"{max(self.spread(e) for e in noisy):.1f}x: the machine was busy. Rerun with more "
                         "--repeats, or when it is idle, before trusting the ratio.")
        return "\n".join(lines)


def run_benchmark(model_dir: str | Path | None = None, prompt_len: int = 32, new_tokens: int = 128,
                  repeats: int = 3, threads: int = 1, mla: str | None = None, seed: int = 0,
                  compile: bool = True) -> BenchResult:
    """Load model_dir (or a fresh random checkpoint) into both engines and time them, alternating.

    compile: also time ds_core with its compiled decode step (compiled during the warm-up, timed separately).

    Sets torch's thread count to `threads` for the measurement and restores it afterwards.
    """
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    check_int("prompt_len", prompt_len, 1)
    check_int("new_tokens", new_tokens, 2, why=" (a rate needs two tokens)")
    check_int("repeats", repeats, 1)
    check_int("threads", threads, 1)
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    with tempfile.TemporaryDirectory(prefix="ds_core_bench_") as tmp:
        random_weights = model_dir is None
        path = make_random_checkpoint(tmp, seed) if random_weights else Path(model_dir)
        ours = DeepSeekModel.from_pretrained(path, dtype=torch.float32)
        theirs = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()

    cfg = ours.config
    if prompt_len + new_tokens > cfg.max_position_embeddings:
        raise ValueError(f"prompt_len + new_tokens = {prompt_len + new_tokens} exceeds the model's "
                         f"max_position_embeddings ({cfg.max_position_embeddings})")
    special = [i for i in cfg.eos_ids + [cfg.bos_token_id, cfg.pad_token_id] if i is not None]
    low = max(special) + 1 if special and max(special) + 1 < cfg.vocab_size else 0  # prompt avoids special ids
    prompt = torch.randint(low, cfg.vocab_size, (1, prompt_len), generator=torch.Generator().manual_seed(seed))

    result = BenchResult(
        model="(a temporary directory, deleted after loading)" if random_weights else str(model_dir),
        random_weights=random_weights, params=sum(p.numel() for p in ours.parameters()),
        prompt_len=prompt_len, new_tokens=new_tokens, threads=threads,
        mla=mla or ours.mla, hf_attention=str(theirs.config._attn_implementation),
        runs={engine: [] for engine in BenchResult.ENGINES},
    )
    engines = {
        "ds_core": lambda n: time_ds_core(ours, prompt, n, mla),
        COMPILED: lambda n: time_ds_core(ours, prompt, n, mla, compile=True),
        "transformers": lambda n: time_transformers(theirs, prompt, n),
    }
    compile = compile and ours.compile_decode().supports(batch=1, mla=mla)  # naive MLA: no compiled step
    if not compile:
        del engines[COMPILED]
    with torch_threads(threads):
        for timed in engines.values():  # warm-up: first-call allocations and lazy initialisation; compiling
            timed(min(new_tokens, 8))
        if compile:
            result.compile_seconds = ours.compile_decode().compile_seconds
            result.compile_error = ours.compile_decode().error
        for _ in range(repeats):
            for engine, timed in engines.items():
                gc.collect()
                timed_run = timed(new_tokens)
                if len(timed_run.tokens) != new_tokens:  # would make the two rates incomparable
                    raise RuntimeError(f"{engine} produced {len(timed_run.tokens)} tokens, expected {new_tokens}")
                result.runs[engine].append(timed_run)
    return result


def _hf_version() -> str:
    import transformers
    return transformers.__version__


# ---- python -m ds_core bench decode -----------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Decode tokens/s at batch 1 on CPU: ds_core against transformers' generate on the same checkpoint, "
        "in one run; prints both (ds_core eager and with its compiled decode step), ms/token and their ratios.")
    parser.add_argument("--model", metavar="PATH", help="Hugging Face DeepSeek-V2/V3 checkpoint directory "
                        "(default: a random-weight DeepSeek-V3 checkpoint of the shipped model's shape, built for "
                        "the run)")
    parser.add_argument("--prompt-len", type=int, default=32, help="prompt tokens (default 32)")
    parser.add_argument("--new-tokens", type=int, default=128, help="tokens generated per run, >= 2 (default 128)")
    add_run_arguments(parser, repeats=3, what="runs per engine, alternated")
    add_mla_argument(parser)
    parser.add_argument("--no-compile", dest="compile", action="store_false",
                        help="time ds_core eagerly only, without its torch.compile'd decode step (which "
                             "takes about a minute to compile, and needs the absorbed MLA: --mla naive skips it too)")


def run(args: argparse.Namespace) -> None:
    result = run_benchmark(args.model, args.prompt_len, args.new_tokens, args.repeats, args.threads, args.mla,
                           compile=args.compile)
    result.report().show(args.json)
