"""The decode step through torch.compile: one new token on a StaticLatentCache, fused into a few kernels.

Why: at batch 1 on CPU an eager decode step of a small model is ~900 small ops, and launching them costs more
than the matrix-vector products themselves. Compiled, the step runs 1.7-2x faster.

How, without a second copy of the model:
- the compiled function is the model's own forward (`model(token, cache=cache)`); what changes is its inputs;
- a StaticLatentCache keeps every shape and tensor the same from step to step (no recompiling per token), and
  its unwritten slots are masked like padding;
- MoE, when compiling, picks the chosen experts' weights by tensor index from stacked copies
  (ds_core.perf.moe_gathered, installed by new_cache) instead of Python ints (.tolist() would break the graph);
- trace.record and trace.active are no-ops to the compiler (torch._dynamo ignore_logging_functions), so the
  compiled step never records: when a trace is active, the step runs eagerly instead and records as usual.

It is opt-in (generate_ids(..., compile=True), `python -m ds_core bench`), batch 1 only (each batch size would
be a compilation of its own), absorbed MLA, dense attention and bias-free experts only; anything else decodes
eagerly. If compiling fails, it warns once and decodes eagerly from then on. The first step compiles (20-60 s
on a CPU), and so does the first generation needing a longer cache (capacities are powers of two >= 256); the
prefill always runs eagerly (its length varies, and it runs once per generation).
"""

from __future__ import annotations

import time
import warnings

import torch

from .. import trace
from ..attention import DenseAttention
from ..cache import StaticLatentCache
from . import moe_gathered

# The compiled code must not look up the tracer's context variable (a graph break); it never records either.
torch._dynamo.config.ignore_logging_functions |= {trace.record, trace.active}

MIN_CAPACITY = 256  # cache lengths are rounded up to a power of two >= this, so few lengths mean few compilations


def _decode_step(model, token_ids: torch.Tensor, cache: StaticLatentCache) -> torch.Tensor:
    """token_ids [B, 1] -> logits [B, V] of the next token; appends to cache. What torch.compile compiles."""
    return model(token_ids, cache=cache)[:, -1]


class CompiledDecode:
    """A model's compiled decode step. Get it with model.compile_decode(); generate_ids(compile=True) uses it.

        decode = model.compile_decode()
        cache = decode.new_cache(batch=1, length=prompt_len + new_tokens)
        logits = model(prompt, cache=cache)[:, -1]        # prefill, eager
        logits = decode.step(next_token, cache)          # [1] -> [1, V], compiled
    """

    def __init__(self, model):
        self.model = model
        self.compiled = None            # the torch.compile'd _decode_step, made on the first step
        self.error: str | None = None   # why compiling failed; then every step runs eagerly
        self.compile_seconds: float | None = None  # wall time of the first compiled step (tracing + codegen)
        self.compiled_steps = 0         # steps that ran compiled (for tests and the benchmark)

    def supports(self, batch: int, mla: str | None = None, backend=None) -> bool:
        """Would generate_ids decode through the compiled step for this batch size, MLA and backend?"""
        # the compiled step runs the default backend: plain dense attention at τ_attn = 1
        dense = backend is None or backend == "dense" or (type(backend) is DenseAttention
                                                          and backend.temperature == 1.0)
        plain_experts = not self.model.config.mlp_bias  # the gathered experts have no biases
        return (self.error is None and batch == 1 and (mla or self.model.mla) == "absorbed" and dense
                and plain_experts)

    def new_cache(self, batch: int, length: int) -> StaticLatentCache:
        """A StaticLatentCache for `length` tokens (prompt + new), capacity rounded up to a power of two.
        Call it once per generation: it also refreshes the MoE layers' gathered experts, in case the weights
        changed since the last one (moe_gathered.install rebuilds only then)."""
        cfg, model = self.model.config, self.model
        moe_gathered.install(model)
        capacity = max(MIN_CAPACITY, 1 << (length - 1).bit_length())
        return StaticLatentCache(cfg.num_hidden_layers, batch, capacity, cfg.kv_lora_rank + cfg.qk_rope_head_dim,
                                 dtype=model.dtype, device=model.device)

    @torch.inference_mode()  # one grad mode, so one graph (generate_ids runs in inference mode anyway)
    def step(self, token: torch.Tensor, cache: StaticLatentCache) -> torch.Tensor:
        """token [B] -> logits [B, V] of the next one, appending the token to cache. Compiled unless a trace is
        active or compiling failed."""
        token_ids = token[:, None]
        if self.error is not None or trace.active() is not None:
            return _decode_step(self.model, token_ids, cache)
        start = time.perf_counter()
        try:
            if self.compiled is None:
                self.compiled = torch.compile(_decode_step, fullgraph=True, dynamic=False)
                with warnings.catch_warnings():  # the first call compiles
                    # Rotary's torch.polar stays one uncompiled op (apply_rope uses real arithmetic when compiling);
                    # inductor's warning about it is no news to the user.
                    warnings.filterwarnings("ignore", "Torchinductor does not support code generation for complex")
                    logits = self.compiled(self.model, token_ids, cache)
            else:
                logits = self.compiled(self.model, token_ids, cache)
        except Exception as e:  # noqa: BLE001 - any compiler failure: fall back, once, loudly
            self.error = f"{type(e).__name__}: {e}".splitlines()[0]
            warnings.warn(f"compiled decoding failed, decoding eagerly instead ({self.error})", RuntimeWarning,
                          stacklevel=2)
            return _decode_step(self.model, token_ids, cache)
        if self.compile_seconds is None:
            self.compile_seconds = time.perf_counter() - start
        self.compiled_steps += 1
        return logits
