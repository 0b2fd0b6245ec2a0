"""Prefill time and peak memory: dense attention (SDPA) vs a sliding window + sinks, side by side, one run.

    python -m ds_core bench prefill [--model DIR] [--lengths 2048 8192 16384] [--window 256] [--sinks 4]
                                    [--repeats 3] [--threads 1] [--device cpu] [--json PATH]

What is timed: the engine's prefill as generate_ids runs it. T random token ids [1, T] (seeded, the same for
both backends) go through the model in one forward pass that fills a fresh KV cache (new_cache(mla, layers,
backend): the latent cache for dense, the rolling one for the window, which still holds all T slots when the
prefill ends). The LM head runs on the last position only, as generation only reads that row; over every
position it would add T x vocab logits (16K x 4096 = 256 MiB) of the same fixed cost to both backends. So the
time is the model body at T tokens plus one row of logits.

The two backends: DenseAttention (torch SDPA, is_causal) and WindowAttention(window, n_global=sinks), whose
block-sparse path scores each block of queries against only the keys its window and the sinks reach:
O(T·(w + g)) scores instead of O(T²). Repeats alternate the backends (dense, window, dense, ...) so drift of the
machine falls on both; after one warm-up of each, the median of the repeats is reported.

Peak memory of one forward pass, as bytes above what the process held before it:
- CPU on Linux: glibc's free memory is handed back to the system (malloc_trim), the kernel's peak-RSS mark is
  reset (writing "5" to /proc/self/clear_refs), and after the pass peak RSS (VmHWM) minus RSS before is read.
  Without the trim, memory an earlier pass freed stays in RSS and is reused unseen (measured: a window prefill
  then reads as 0 bytes). It can read a few % low: a reused hole's partial pages were never handed back;
- CUDA: torch.cuda.max_memory_allocated after reset_peak_memory_stats, minus memory_allocated before;
- anything else: not measured (None), and the table says so.

What to read: the ratios. dense / window time should grow with T (dense does T² work, the window T·(w + g));
peak memory per token stays flat for a backend whose memory is linear in T, and its growth exponent is about 1
(about 2 for memory quadratic in T). Lengths beyond the model's max_position_embeddings run all the same (rope has
no limit; the model is untrained there, which does not change the work a pass does).
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import gc
import math
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from ..attention import DenseAttention, WindowAttention, get_backend
from ..checks import check_int
from ..cache import new_cache
from ..viz.text import table
from ..model import DeepSeekModel
from ..cli import add_device_argument
from .command import Report, add_model_argument, add_run_arguments, torch_threads

MiB = 1 << 20


# ---- measuring one call -----------------------------------------------------------------------------------
def _status_bytes(field: str) -> int:
    """A memory line of /proc/self/status ('VmRSS', 'VmHWM'), in bytes."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024  # the kernel writes kB
    raise OSError(f"/proc/self/status has no {field} line")


def _reset_rss_peak() -> bool:
    """Reset the kernel's peak-RSS mark (VmHWM) to the current RSS; False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:  # not Linux, or a kernel / sandbox that refuses
        return False


_LIBC = ctypes.CDLL(ctypes.util.find_library("c")) if sys.platform.startswith("linux") else None


def _release_free_heap() -> None:
    """Hand glibc's free heap pages back to the system, so memory freed by an earlier pass (and still counted in
    RSS) cannot be reused unseen by the next one: without this the next pass's peak reads too low."""
    gc.collect()
    trim = getattr(_LIBC, "malloc_trim", None)  # glibc only (musl has none)
    if trim is not None:
        trim(0)


def memory_method(device: torch.device | str) -> str | None:
    """How peak memory is measured on `device`, in words, or None where it is not measured."""
    device = torch.device(device)
    if device.type == "cuda":
        return "CUDA max_memory_allocated"
    if device.type == "cpu" and sys.platform.startswith("linux") and _reset_rss_peak():
        return "peak RSS (VmHWM after resetting it via /proc/self/clear_refs)"
    return None


@dataclass
class Measured:
    """One call of a function: what it returned, its wall time, and the peak memory it added (None: unknown)."""
    value: object
    seconds: float
    peak_bytes: int | None


def measure(fn: Callable[[], object], device: torch.device | str = "cpu") -> Measured:
    """Call fn() once on `device` -> its value, seconds, and peak bytes above what was held before the call."""
    device = torch.device(device)
    method = memory_method(device)
    _release_free_heap()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
    elif method is not None:
        _reset_rss_peak()
        before = _status_bytes("VmRSS")
    start = time.perf_counter()
    value = fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    if method is None:
        peak = None
    elif device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device) - before
    else:
        peak = _status_bytes("VmHWM") - before
    return Measured(value, seconds, peak)


# ---- one prefill ------------------------------------------------------------------------------------------
def random_ids(model: DeepSeekModel, T: int, seed: int = 0) -> torch.Tensor:
    """T token ids [1, T] drawn uniformly from the vocabulary with `seed`, on the model's device."""
    T = check_int("T (tokens)", T, 1)
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(model.config.vocab_size, (1, T), generator=gen).to(model.device)


@dataclass
class Run:
    """One timed prefill of T tokens with one attention backend."""
    backend: str              # "dense" or "window"
    T: int
    seconds: float
    peak_bytes: int | None    # peak memory above what was held before the pass; None where not measured
    logits: torch.Tensor      # [V] fp32 on the CPU: the model's logits at the last position


@torch.inference_mode()
def prefill_run(model: DeepSeekModel, T: int, backend=None, seed: int = 0) -> Run:
    """Prefill T random ids (random_ids(model, T, seed)) into a fresh KV cache with `backend` (an instance or a
    name; default dense), as generate_ids does, computing logits at the last position only -> Run."""
    ids = random_ids(model, T, seed)
    backend = get_backend(backend)
    def prefill() -> torch.Tensor:
        cache = new_cache(model.mla, model.config.num_hidden_layers, backend)  # rolling for a window
        return model(ids, cache=cache, backend=backend, logits_to_keep=1)     # [1, 1, V]
    m = measure(prefill, model.device)
    return Run(backend.name, T, m.seconds, m.peak_bytes, m.value[0, -1].float().cpu())


# ---- dense vs window, by length ---------------------------------------------------------------------------
def _median(values: list) -> float | None:
    return None if None in values else statistics.median(values)


@dataclass
class Comparison:
    """Dense and window prefills of T tokens, alternated; medians and ratios."""
    T: int
    dense: list[Run]
    window: list[Run]
    fraction: float           # share of dense attention's T×T scores the window backend computes

    @property
    def dense_seconds(self) -> float:
        return _median([r.seconds for r in self.dense])

    @property
    def window_seconds(self) -> float:
        return _median([r.seconds for r in self.window])

    @property
    def speedup(self) -> float:
        """Dense time over window time (> 1: the window is faster)."""
        return self.dense_seconds / self.window_seconds

    @property
    def dense_peak(self) -> float | None:
        return _median([r.peak_bytes for r in self.dense])

    @property
    def window_peak(self) -> float | None:
        return _median([r.peak_bytes for r in self.window])

    @property
    def memory_ratio(self) -> float | None:
        """Dense peak over window peak (> 1: the window needs less); None where memory is not measured."""
        return None if self.dense_peak is None else self.dense_peak / self.window_peak

    def as_dict(self) -> dict:
        return {"T": self.T, "dense_ms": 1000 * self.dense_seconds, "window_ms": 1000 * self.window_seconds,
                "speedup": self.speedup, "dense_peak_bytes": self.dense_peak, "window_peak_bytes": self.window_peak,
                "memory_ratio": self.memory_ratio, "fraction_computed": self.fraction,
                "dense_runs_s": [r.seconds for r in self.dense], "window_runs_s": [r.seconds for r in self.window]}


def compare(model: DeepSeekModel, lengths=(2048, 8192, 16384), window: int = 256, sinks: int = 4,
            repeats: int = 3, seed: int = 0, on_length: Callable[[int], None] | None = None) -> list[Comparison]:
    """Prefill each length with dense attention and with WindowAttention(window, n_global=sinks), `repeats`
    times each, alternating, after one warm-up of each at the shortest length -> one Comparison per length.
    on_length(T) is called before each length (progress)."""
    lengths = [check_int("each length T", T, 1) for T in lengths]
    if not lengths:
        raise ValueError("lengths must name at least one T")
    repeats = check_int("repeats", repeats, 1)
    dense, sparse = DenseAttention(), WindowAttention(window, n_global=sinks)  # checks window >= 1, sinks >= 0
    for backend in (dense, sparse):  # first-call allocations and lazy initialisation: not timed
        prefill_run(model, min(lengths), backend, seed)
    out = []
    for T in lengths:
        if on_length is not None:
            on_length(T)
        runs = {"dense": [], "window": []}
        for _ in range(repeats):
            for backend in (dense, sparse):
                run = prefill_run(model, T, backend, seed)
                runs[run.backend].append(run)
        out.append(Comparison(T, runs["dense"], runs["window"], sparse.fraction_computed(T)))
    return out


def growth_exponent(comparisons: list[Comparison], backend: str) -> float | None:
    """k in peak ∝ T^k between the shortest and the longest length (about 1: linear, about 2: quadratic);
    None with one length or unmeasured memory."""
    first, last = comparisons[0], comparisons[-1]
    peaks = [getattr(c, f"{backend}_peak") for c in (first, last)]
    if first.T == last.T or None in peaks or min(peaks) <= 0:
        return None
    return math.log(peaks[1] / peaks[0]) / math.log(last.T / first.T)


def format_table(comparisons: list[Comparison]) -> str:
    """The comparisons as the table the command prints, with the memory growth lines under it."""
    def mib(n):
        return "n/a" if n is None else f"{n / MiB:.1f}"

    def per_token(n, T):
        return "n/a" if n is None else f"{n / T / 1024:.1f}"

    rows = [("T", "dense ms", "window ms", "dense/window", "dense MiB", "window MiB", "dense/window",
             "dense KiB/tok", "window KiB/tok", "scores computed")]
    for c in comparisons:
        ratio = "n/a" if c.memory_ratio is None else f"{c.memory_ratio:.2f}x"
        rows.append((c.T, f"{1000 * c.dense_seconds:.1f}", f"{1000 * c.window_seconds:.1f}", f"{c.speedup:.2f}x",
                     mib(c.dense_peak), mib(c.window_peak), ratio, per_token(c.dense_peak, c.T),
                     per_token(c.window_peak, c.T), f"{c.fraction:.1%}"))
    lines = [table(rows, align="r" * len(rows[0]), sep="   ")]
    for name in ("dense", "window"):
        k = growth_exponent(comparisons, name)
        if k is not None:
            lines.append(f"{name} peak memory grows as T^{k:.2f} from T={comparisons[0].T} to "
                         f"T={comparisons[-1].T} (1 = linear, 2 = quadratic)")
    return "\n".join(lines)


# ---- the command ------------------------------------------------------------------------------------------
def benchmark(model_dir: str | Path, lengths: list[int], window: int, sinks: int, repeats: int, threads: int,
              device: str = "cpu") -> Report:
    """Load model_dir and compare -> the report; its rows are the comparisons' as_dict(). Sets torch's threads
    for the run, then restores them."""
    for what, value, low in (("each length T", min(lengths, default=0), 1), ("--window", window, 1),
                             ("--sinks", sinks, 0), ("--repeats", repeats, 1), ("--threads", threads, 1)):
        check_int(what, value, low)
    model = DeepSeekModel.from_pretrained(model_dir, device=device, dtype=torch.float32)
    cfg = model.config
    with torch_threads(threads):
        comparisons = compare(model, lengths, window, sinks, repeats,
                              on_length=lambda T: print(f"  ... T={T}", file=sys.stderr, flush=True))
    method = memory_method(model.device)
    beyond = [T for T in lengths if T > cfg.max_position_embeddings]
    text = "\n".join([
        f"prefill benchmark: dense (SDPA, causal) vs window {window} + {sinks} sinks (block-sparse), batch 1, "
        f"fp32, {model.device.type}",
        f"  model      {model_dir}  ({sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters, "
        f"{cfg.num_hidden_layers} layers, {cfg.num_attention_heads} heads, mla {model.mla})",
        "  timed      one forward pass of T random ids into a fresh KV cache, logits at the last position only",
        f"             median of {repeats}, backends alternated, after one warm-up of each",
        f"  memory     {method or 'not measured on this platform'}, above what the process held before the pass",
        f"  threads    {threads}   torch {torch.__version__}",
        "",
        format_table(comparisons),
        "'scores computed': the share of dense attention's T x T scores the window backend computes "
        "(ds_core.labs.attention.fraction_computed)",
    ] + ([f"lengths {', '.join(map(str, beyond))} exceed the model's max_position_embeddings "
          f"({cfg.max_position_embeddings}): run all the same, the work of a pass does not depend on it"]
         if beyond else []))
    settings = {"model": str(model_dir), "window": window, "sinks": sinks, "repeats": repeats, "threads": threads,
                "device": model.device.type, "memory": method}
    return Report(text, settings, [c.as_dict() for c in comparisons])


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = ("Prefill time and peak memory of dense attention (SDPA) vs a sliding window + sink "
                          "tokens at several lengths, in one run; prints both and their ratios.")
    add_model_argument(parser)
    parser.add_argument("--lengths", type=int, nargs="+", default=[2048, 8192, 16384], metavar="T",
                        help="prompt lengths in tokens (default 2048 8192 16384)")
    parser.add_argument("--window", type=int, default=256, help="window size w in tokens, >= 1 (default 256)")
    parser.add_argument("--sinks", type=int, default=4, help="sink tokens every query reads, >= 0 (default 4)")
    add_run_arguments(parser, repeats=3, what="prefills per backend and length")
    add_device_argument(parser)


def run(args: argparse.Namespace) -> None:
    benchmark(args.model, args.lengths, args.window, args.sinks, args.repeats, args.threads,
              args.device).show(args.json)
