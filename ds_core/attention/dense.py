"""Dense causal attention: the reference every other attention backend is measured against.

What a backend is handed and must answer is written down in base.py. Shapes: q [B, H, T, d], k [B, Hk, S, d],
v [B, Hk, S, dv] with Hk = H (naive MLA) or Hk = 1 (absorbed MLA, where every head reads the one shared latent).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .. import trace
from .base import AttentionBackend, Positions


class DenseAttention(AttentionBackend):
    """softmax(q·kᵀ · scale / τ_attn, causal) · v. Fast path: torch SDPA. Traced path: explicit scores and probs."""

    name = "dense"

    def __call__(self, q, k, v, pos: Positions, scale: float, name: str) -> torch.Tensor:
        """-> [B, H, T, dv]. `name` prefixes the traced scores and probs (e.g. 'layers.0.attn')."""
        scale = scale / self.temperature
        if trace.active() is not None:
            return self.explicit(q, k, v, self.allowed(pos.q, pos.k, pos.k_valid), scale, name)
        T, S = q.shape[2], k.shape[2]
        gqa = k.shape[1] != q.shape[1]
        if T == 1 and k.shape[1] == 1:  # one new token, absorbed MLA: mask only if some keys are padding
            allowed = None if pos.k_valid is None else self.allowed(pos.q, pos.k, pos.k_valid)
            return self.one_token_shared_kv(q, k, v, scale, allowed)
        if pos.k_valid is None and T == 1:  # one new token after the cache: it may read every key
            return F.scaled_dot_product_attention(q, k, v, scale=scale, enable_gqa=gqa)
        if pos.k_valid is None and T == S:  # prefill without padding: plain causal
            return F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale, enable_gqa=gqa)
        mask = self.allowed(pos.q, pos.k, pos.k_valid)[:, None]
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale, enable_gqa=gqa)

    def describe(self, n_tokens: int) -> str:
        return "dense: every query reads every earlier key"

    @staticmethod
    def one_token_shared_kv(q, k, v, scale: float, allowed: torch.Tensor | None = None) -> torch.Tensor:
        """Decode step with one key/value head shared by all query heads (absorbed MLA): q [B, H, 1, d],
        k [B, 1, S, d], v [B, 1, S, dv], allowed [B, 1, S] or None (every key) -> [B, H, 1, dv].

        The H heads of the one query read the same keys, so treat them as H queries of a single head: one
        [H, d] x [d, S] product instead of H products of one row each (SDPA's GQA path would copy k and v H times).
        """
        q = q.transpose(1, 2)                                     # [B, 1, H, d]
        scores = torch.matmul(q, k.transpose(-1, -2)).float() * scale  # [B, 1, H, S]
        if allowed is not None:  # left padding, or a StaticLatentCache's slots not written yet
            scores = scores.masked_fill(~allowed[:, :, None, :], float("-inf"))
        probs = scores.softmax(dim=-1).to(v.dtype)
        return torch.matmul(probs, v).transpose(1, 2)             # [B, H, 1, dv]

    @staticmethod
    def explicit(q, k, v, allowed: torch.Tensor, scale: float, name: str) -> torch.Tensor:
        """The textbook computation, step by step, recording scores [B,H,T,S] and probs [B,H,T,S]."""
        scores = torch.matmul(q, k.transpose(-1, -2)).float() * scale
        scores = scores.masked_fill(~allowed[:, None], float("-inf"))
        probs = scores.softmax(dim=-1)
        trace.record(f"{name}.scores", scores)
        trace.record(f"{name}.probs", probs)
        return torch.matmul(probs.to(v.dtype), v)
