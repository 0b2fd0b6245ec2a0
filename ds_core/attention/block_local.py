"""Block-local attention: the fixed-block scheme, written as a mask so it can be compared with a sliding window.

The positions are cut into fixed blocks of `block` tokens: 0..b-1, b..2b-1, ... The query at position p may read
the key at position s iff s <= p and
    p // block == s // block  (the same block: only the keys from the block's start up to p)
    or s < n_global           (the first n_global tokens: global tokens everyone reads)
    or s in global_positions or p in global_positions   (chosen tokens read, and are read by, everyone)
and the key is not padding. Scores are divided by an attention temperature τ: softmax(q·k · scale / τ).

This is the scheme of "split the sequence into chunks and attend inside each chunk". Unlike a sliding window
(ds_core.attention.window), how far back a query sees depends on where it falls in its block: the first query of
a block reads only itself (and the global tokens), the last reads `block` tokens. A sliding window of the same
size gives every query the same `window` tokens of context.

It is a reference backend: the masked softmax over all T×S pairs (torch SDPA with a boolean mask outside a
trace; DenseAttention.explicit inside one, recording `{name}.scores` and `{name}.probs`). fraction_computed says
what a blocked kernel would score: each block of queries against its own block plus the global keys.

Shapes as in base.py: q [B, H, T, d], k [B, Hk, S, d], v [B, Hk, S, dv], Hk = H or 1; pos: Positions.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .. import trace
from ..checks import check_int
from .base import AttentionBackend, Positions, check_global_positions, global_reach
from .dense import DenseAttention


class BlockLocalAttention(AttentionBackend):
    """Fixed blocks of `block` positions, causal inside each block, + `n_global` first tokens + `global_positions`."""

    name = "block_local"

    def __init__(self, block: int, n_global: int = 0, global_positions: tuple[int, ...] = (),
                 temperature: float = 1.0):
        self.block = check_int("block", block, 1)
        self.n_global = check_int("n_global", n_global, 0)
        self.global_positions = check_global_positions(global_positions)
        super().__init__(temperature)

    def __repr__(self) -> str:
        return (f"BlockLocalAttention(block={self.block}, n_global={self.n_global}, "
                f"global_positions={self.global_positions}, temperature={self.temperature})")

    # ---- the rule -----------------------------------------------------------------------------------
    def reach(self, p: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        """The rule above, causality and padding aside (allowed() adds those)."""
        return (p // self.block == s // self.block) | global_reach(p, s, self.n_global, self.global_positions)

    # ---- running ------------------------------------------------------------------------------------
    def __call__(self, q, k, v, pos: Positions, scale: float, name: str) -> torch.Tensor:
        """-> [B, H, T, dv]: the masked softmax, explicit (and recorded) inside a trace, else through SDPA."""
        allowed = self.allowed(pos.q, pos.k, pos.k_valid)
        scale = scale / self.temperature
        if trace.active() is not None:
            return DenseAttention.explicit(q, k, v, allowed, scale, name)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=allowed[:, None], scale=scale,
                                              enable_gqa=k.shape[1] != q.shape[1])

    # ---- what it costs ------------------------------------------------------------------------------
    def scores_computed(self, T: int, S: int | None = None) -> int:
        """Score entries (per batch row and head) a blocked kernel computes for T queries that are the last of S
        keys at positions 0..S-1: each group of queries in one block scores the keys of its block up to its last
        query, plus the global keys before that block; queries at global positions score every earlier key."""
        S = T if S is None else S
        glob = set(self.global_positions)
        special = set(range(min(self.n_global, S))) | {g for g in glob if g < S}
        total = 0
        q0 = S - T
        first_block, last_block = q0 // self.block, (S - 1) // self.block
        for blk in range(first_block, last_block + 1):
            lo, hi = max(blk * self.block, q0), min((blk + 1) * self.block, S)  # query positions lo..hi-1
            rows = [p for p in range(lo, hi) if p not in glob]
            if rows:
                start = blk * self.block
                total += len(rows) * (hi - start + len({s for s in special if s < start}))
        total += sum(p + 1 for p in glob if q0 <= p < S)
        return total

    def fraction_computed(self, T: int, S: int | None = None) -> float:
        """Share of dense attention's T×S scores a blocked kernel computes: about (block + g) / S for long inputs."""
        return self.scores_computed(T, S) / (T * (T if S is None else S))

    def describe(self, n_tokens: int) -> str:
        return (f"blocks of {self.block} + {self.n_global} global tokens + {len(self.global_positions)} global "
                f"positions over {n_tokens} tokens: masked softmax over all pairs")
