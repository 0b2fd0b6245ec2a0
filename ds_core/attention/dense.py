"""Dense causal attention: the reference every other attention backend is measured against.

A backend turns queries, keys and values into attention outputs. The model hands it positions rather than a
ready-made mask, so a sparse backend can decide for itself which (query, key) pairs to compute.

Shapes: q [B, H, T, d], k [B, Hk, S, d], v [B, Hk, S, dv] with Hk = H (naive MLA) or Hk = 1 (absorbed MLA,
where every head reads the one shared latent). q_pos [B, T], k_pos [B, S]: rotary positions. k_valid [B, S]:
False at left padding, or None when nothing is padded.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .. import trace
from ..checks import check_number


def check_temperature(temperature) -> float:
    """The attention temperature τ_attn as a float, or ValueError: it must be a finite number > 0."""
    return check_number("attention temperature τ_attn", temperature, 0, low_open=True, why=" (1 = the model's own)")


class DenseAttention:
    """softmax(q·kᵀ · scale / τ_attn, causal) · v. Fast path: torch SDPA. Traced path: explicit scores and probs.

    τ_attn (temperature) sharpens (< 1) or flattens (> 1) every attention row; 1 is the model as trained. It is
    separate from the sampling temperature, which acts on the next-token distribution.
    """

    name = "dense"

    def __init__(self, temperature: float = 1.0):
        self.temperature = check_temperature(temperature)

    def allowed(self, q_pos: torch.Tensor, k_pos: torch.Tensor, k_valid: torch.Tensor | None) -> torch.Tensor:
        """Bool [B, T, S]: may query t read key s? Causal by position; padding is never read."""
        ok = k_pos[:, None, :] <= q_pos[:, :, None]
        if k_valid is not None:
            ok = ok & k_valid[:, None, :]
            # A padding query sees no key; let it see key 0 so its (unused) output stays finite.
            ok[..., 0] |= ~ok.any(-1)
        return ok

    def __call__(self, q, k, v, q_pos, k_pos, k_valid, scale: float, name: str) -> torch.Tensor:
        """-> [B, H, T, dv]. `name` prefixes the traced scores and probs (e.g. 'layers.0.attn')."""
        scale = scale / self.temperature
        if trace.active() is not None:
            return self.explicit(q, k, v, self.allowed(q_pos, k_pos, k_valid), scale, name)
        T, S = q.shape[2], k.shape[2]
        gqa = k.shape[1] != q.shape[1]
        if T == 1 and k.shape[1] == 1:  # one new token, absorbed MLA: mask only if some keys are padding
            allowed = None if k_valid is None else self.allowed(q_pos, k_pos, k_valid)
            return self.one_token_shared_kv(q, k, v, scale, allowed)
        if k_valid is None and T == 1:  # one new token after the cache: it may read every key
            return F.scaled_dot_product_attention(q, k, v, scale=scale, enable_gqa=gqa)
        if k_valid is None and T == S:  # prefill without padding: plain causal
            return F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale, enable_gqa=gqa)
        mask = self.allowed(q_pos, k_pos, k_valid)[:, None]
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale, enable_gqa=gqa)

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
