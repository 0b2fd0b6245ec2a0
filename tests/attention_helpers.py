"""Shared by the attention-backend tests: random q/k/v, positions, and a mask rule checked pair by pair."""

from __future__ import annotations

import torch


def brute_allowed(near, q_pos, k_pos, k_valid) -> torch.Tensor:
    """Bool [B, T, S] from near(p, s) -> bool (the backend's own rule, written plainly), one pair at a time,
    plus causality and padding as every backend treats them."""
    B, T, S = q_pos.shape[0], q_pos.shape[1], k_pos.shape[1]
    out = torch.zeros(B, T, S, dtype=torch.bool)
    for b in range(B):
        for t in range(T):
            p = int(q_pos[b, t])
            for j in range(S):
                s = int(k_pos[b, j])
                out[b, t, j] = s <= p and near(p, s) and (k_valid is None or bool(k_valid[b, j]))
            if not out[b, t].any():  # a padding query: key 0, so its output stays finite
                out[b, t, 0] = True
    return out


def qkv(B, H, Hk, T, S, d=8, dv=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(B, H, T, d, generator=g), torch.randn(B, Hk, S, d, generator=g),
            torch.randn(B, Hk, S, dv, generator=g))


def positions(B, T, S):
    """The last T of S positions 0..S-1, the same for every row (prefill T == S, or decode with a cache)."""
    return torch.arange(S - T, S).expand(B, T), torch.arange(S).expand(B, S)


def left_padded_positions(T, S, pad=3):
    """Two rows of S key slots, row 0 with `pad` left padding slots whose positions repeat 0 (as
    DeepSeekModel.assign_positions does) -> q_pos [2, T] (the last T slots), k_pos [2, S], k_valid [2, S]."""
    k_valid = torch.ones(2, S, dtype=torch.bool)
    k_valid[0, :pad] = False
    k_pos = torch.stack([(torch.arange(S) - pad).clamp(min=0), torch.arange(S)])
    return k_pos[:, -T:], k_pos, k_valid
