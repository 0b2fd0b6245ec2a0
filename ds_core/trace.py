"""The tracer: named intermediates of a real forward pass.

    with model.trace() as tr:
        logits = model(ids)
    tr["layers.0.attn.probs"]          # the attention probabilities that produced those logits

Recording is on only inside the `with` block, and only in the thread (or asyncio task) that opened it, so
concurrent requests in the app never see each other's tensors. (An asyncio task created *inside* the block
copies the context and so records into the same trace; other threads never do.) Outside a trace each
recording site costs one context variable lookup. Tensors are stored detached, on the device they were
computed on. A second forward pass inside the same block overwrites the names (a trace holds one pass; decode
steps use one trace each).

Names and shapes (B batch, T new tokens, S tokens attended, i.e. cached + new, D hidden_size, H heads,
E routed experts, k experts per token, V vocab; d_qk = qk_nope_head_dim + qk_rope_head_dim):

    embed                         [B, T, D]       token embeddings
    positions                     [B, T]          rotary positions of the new tokens
    layers.{i}.input              [B, T, D]       residual stream entering layer i
    layers.{i}.attn.input         [B, T, D]       input_layernorm(x): what the attention projects
    layers.{i}.attn.q_latent      [B, T, q_lora_rank]   RMS-normed query latent c_Q (only with q_lora_rank)
    layers.{i}.attn.kv_latent     [B, T, kv_lora_rank]  RMS-normed key/value latent c_KV (what MLA caches)
    layers.{i}.attn.k_rope        [B, T, qk_rope_head_dim]  rotated rope key, shared by all heads
    layers.{i}.attn.q             [B, H, T, d_qk] queries per head, rope part rotated
    layers.{i}.attn.k             [B, H, S, d_qk] keys per head (in absorbed mode rebuilt from the latent)
    layers.{i}.attn.v             [B, H, S, v_head_dim]
    layers.{i}.attn.scores        [B, H, T, S]    scaled q·k before softmax, masked entries = -inf
    layers.{i}.attn.probs         [B, H, T, S]    softmax of scores: each row sums to 1
    layers.{i}.attn.output        [B, T, D]       after o_proj
    layers.{i}.mlp.output         [B, T, D]       dense MLP or MoE output (routed + shared)
    layers.{i}.moe.scores         [B, T, E]       router affinities (sigmoid for V3, softmax for V2)
    layers.{i}.moe.biased_scores  [B, T, E]       scores + e_score_correction_bias: what the choice ranks (V3 only)
    layers.{i}.moe.group_scores   [B, T, n_group] score of each expert group (group-limited routing only)
    layers.{i}.moe.kept_groups    [B, T, topk_group]  the groups the choice was limited to (same condition)
    layers.{i}.moe.experts        [B, T, k]       chosen routed experts
    layers.{i}.moe.weights        [B, T, k]       their gate weights (after normalisation and scaling)
    layers.{i}.moe.shared_output  [B, T, D]       the shared experts' contribution
    layers.{i}.moe.routed_output  [B, T, D]       the routed experts' weighted contribution
    layers.{i}.output             [B, T, D]       residual stream leaving layer i
    final_norm                    [B, T, D]       after the last RMSNorm
    logits                        [B, T, V]
"""

from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar
from typing import Iterator

import torch

_active: ContextVar["Trace | None"] = ContextVar("ds_core_trace", default=None)


class Trace(dict):
    """name -> tensor, filled while the trace is active. A plain dict with a readable summary."""

    def shapes(self) -> dict[str, tuple[int, ...]]:
        return {name: tuple(t.shape) for name, t in self.items()}

    def __repr__(self) -> str:
        lines = [f"  {name:32s} {list(t.shape)} {str(t.dtype).removeprefix('torch.')}" for name, t in self.items()]
        return "Trace(\n" + "\n".join(lines) + "\n)"


def active() -> Trace | None:
    """The trace recording in this context, or None. Callers skip extra work when it is None."""
    return _active.get()


def record(name: str, tensor: torch.Tensor) -> None:
    trace = _active.get()
    if trace is not None:
        trace[name] = tensor.detach()


@contextmanager
def tracing() -> Iterator[Trace]:
    trace = Trace()
    token = _active.set(trace)
    try:
        yield trace
    finally:
        _active.reset(token)
