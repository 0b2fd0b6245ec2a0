"""Sliding-window attention with global tokens: a sparse backend that computes O(T·(w+g)) scores, not O(T²).

The rule, by rotary position: the query at position p may read the key at position s iff s <= p and
    p - s < window          (the last `window` tokens, itself included)
    or s < n_global         (the first n_global tokens are attention sinks: everyone reads them)
    or s in global_positions or p in global_positions   (chosen tokens read, and are read by, everyone)
and the key is not padding. Scores are divided by an attention temperature τ: softmax(q·k · scale / τ).

Three ways to run it, equal up to rounding:
- dense: when the window never binds (w >= the tokens in play) the rule is plain causal attention, so the
  DenseAttention backend runs it (and `last_note` says so);
- reference: the explicit masked softmax over all T×S pairs, recording `{name}.scores` and `{name}.probs` like
  DenseAttention; used inside a trace, with padding, or with positions the fast path does not expect;
- block-sparse (the fast path): queries in blocks of `block`; each block gathers only the keys it can read (the
  sinks, the global keys and the band of the last `window` positions) and scores those. Queries at global
  positions read every earlier key, so they form one extra group with all keys.

Shapes as in base.py: q [B, H, T, d], k [B, Hk, S, d], v [B, Hk, S, dv], Hk = H or 1; pos: Positions.
"""

from __future__ import annotations

from typing import Iterator

import torch
from einops import rearrange, repeat

from .. import trace
from ..checks import check_int
from .base import AttentionBackend, Positions, check_global_positions, global_reach
from .dense import DenseAttention


class WindowAttention(AttentionBackend):
    """Sliding window of `window` tokens + `n_global` sink tokens + `global_positions`, at temperature τ.

    Not a DenseAttention subclass on purpose: code that asks isinstance(backend, DenseAttention) (the compiled
    decode step) must not mistake it for dense. It uses one for the dense case and for the explicit path.
    """

    name = "window"

    def __init__(self, window: int, n_global: int = 0, global_positions: tuple[int, ...] = (),
                 temperature: float = 1.0, block: int = 64):
        self.window = check_int("window", window, 1)
        self.n_global = check_int("n_global", n_global, 0)
        self.global_positions = check_global_positions(global_positions)
        super().__init__(temperature)
        self.block = check_int("block", block, 1)
        self.dense = DenseAttention()
        self.last_note = ""   # how the last call ran: dense, reference or block-sparse
        self.computed = 0     # score entries the last block-sparse call computed, per batch row and head

    def __repr__(self) -> str:
        return (f"WindowAttention(window={self.window}, n_global={self.n_global}, "
                f"global_positions={self.global_positions}, temperature={self.temperature})")

    # ---- the rule -----------------------------------------------------------------------------------
    def reach(self, p: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        """The rule above, causality and padding aside (allowed() adds those)."""
        return (p - s < self.window) | global_reach(p, s, self.n_global, self.global_positions)

    # ---- running ------------------------------------------------------------------------------------
    def __call__(self, q, k, v, pos: Positions, scale: float, name: str) -> torch.Tensor:
        """-> [B, H, T, dv]. Picks dense, reference or block-sparse; `last_note` says which ran."""
        span = int(pos.q.max()) - int(pos.k.min()) + 1  # positions from the first key to the last query
        if self.window >= span:  # every causal pair is within the window: the rule is plain causal
            self.last_note = self.describe(span)
            return self.dense(q, k, v, pos, scale / self.temperature, name)
        offsets = self.contiguous_offsets(pos)
        if trace.active() is not None or offsets is None:
            self.last_note = "reference: explicit masked softmax (traced, padded or non-contiguous positions)"
            return self.reference(q, k, v, pos, scale, name)
        out = self.block_sparse(q, k, v, *offsets, scale / self.temperature)
        T, S = q.shape[2], k.shape[2]
        self.last_note = f"{self.describe(S)}; computed {self.computed} of {T * S} scores"
        return out

    def reference(self, q, k, v, pos: Positions, scale: float, name: str) -> torch.Tensor:
        """The explicit masked softmax over all T×S pairs (DenseAttention.explicit with this rule and τ),
        recording {name}.scores and {name}.probs [B, H, T, S]. Same signature as __call__."""
        return DenseAttention.explicit(q, k, v, self.allowed(pos.q, pos.k, pos.k_valid), scale / self.temperature,
                                       name)

    @staticmethod
    def contiguous_offsets(pos: Positions) -> tuple[int, int] | None:
        """(q0, k0) if every batch row has q = q0 + arange(T) and k = k0 + arange(S), the queries lie among the
        keys and nothing is padded (prefill, or decode with a cache); else None. Then slot i of the keys is
        position k0 + i, so the keys a position range needs are a slice of slots."""
        if pos.k_valid is not None:
            return None
        q0, k0 = int(pos.q[0, 0]), int(pos.k[0, 0])
        T, S = pos.q.shape[1], pos.k.shape[1]
        q_ok = bool((pos.q == q0 + torch.arange(T, device=pos.q.device)).all())
        k_ok = bool((pos.k == k0 + torch.arange(S, device=pos.k.device)).all())
        return (q0, k0) if q_ok and k_ok and k0 <= q0 and q0 + T <= k0 + S else None

    def plan(self, q0: int, T: int, k0: int, S: int, device=None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The groups the block-sparse path computes: (rows, keys), LongTensor slots into the T queries (at
        positions q0..q0+T-1) and into the S keys (at k0..k0+S-1). Each group scores len(rows) × len(keys)."""
        glob = torch.tensor(self.global_positions, dtype=torch.long, device=device)
        special = torch.cat([torch.arange(self.n_global, device=device), glob]) - k0  # sink and global key slots
        special = special[(special >= 0) & (special < S)]
        global_rows = glob[(glob >= q0) & (glob < q0 + T)] - q0
        for t0 in range(0, T, self.block):
            t1 = min(t0 + self.block, T)
            rows = torch.arange(t0, t1, device=device)
            rows = rows[~torch.isin(rows, global_rows)]  # global queries read everything: the last group
            if len(rows) == 0:
                continue
            # the band: key positions [first query - window + 1, last query], as slots, clipped to the keys
            lo, hi = max(q0 + t0 - self.window + 1 - k0, 0), min(q0 + t1 - k0, S)
            band = torch.arange(lo, hi, device=device)
            yield rows, torch.cat([special[special < hi], band]).unique()  # unique: a sink may be in the band
        if len(global_rows):
            yield global_rows, torch.arange(min(q0 + int(global_rows.max()) + 1 - k0, S), device=device)

    def block_sparse(self, q, k, v, q0: int, k0: int, scale: float) -> torch.Tensor:
        """The fast path, for contiguous positions without padding (see contiguous_offsets). `scale` already
        includes τ. Computes only the planned groups' scores; sets self.computed to their number."""
        B, H, T, _ = q.shape
        out = q.new_empty(B, H, T, v.shape[-1])
        self.computed = 0
        for rows, keys in self.plan(q0, T, k0, k.shape[2], q.device):
            allowed = self.allowed(q0 + rows[None], k0 + keys[None], None)[0]  # [R, n]: the rule, by position
            out[:, :, rows] = self.attend(q[:, :, rows], k[:, :, keys], v[:, :, keys], allowed, scale)
            self.computed += len(rows) * len(keys)
        return out

    @staticmethod
    def attend(q, k, v, allowed: torch.Tensor, scale: float) -> torch.Tensor:
        """q [B, H, R, d], k [B, Hk, n, d], v [B, Hk, n, dv], allowed [R, n] -> [B, H, R, dv].

        The H / Hk query heads that share one key head are stacked as extra query rows, so with Hk = 1
        (absorbed MLA) it is one [H·R, d] x [d, n] product, and k, v are never copied per head.
        """
        g = q.shape[1] // k.shape[1]
        q = rearrange(q, "b (hk g) r d -> b hk (g r) d", g=g)
        scores = torch.matmul(q, k.transpose(-1, -2)).float() * scale       # [B, Hk, g·R, n]
        scores = scores.masked_fill(~repeat(allowed, "r n -> (g r) n", g=g), float("-inf"))
        out = torch.matmul(scores.softmax(dim=-1).to(v.dtype), v)           # [B, Hk, g·R, dv]
        return rearrange(out, "b hk (g r) d -> b (hk g) r d", g=g)

    # ---- what a decoding cache must keep ---------------------------------------------------------------
    def keys_needed(self, k_pos: torch.Tensor, next_pos: torch.Tensor) -> torch.Tensor:
        """Bool [B, S]: may a query at a position >= next_pos [B] still read the cached key at k_pos [B, S]?

        The rule for the nearest such query, since later ones reach no further back: the sinks, the global keys
        and the last window-1 positions. While a global query is still to come it reads every earlier key, so
        then all are needed. A rolling KV cache keeps just these (ds_core.cache.Rolling)."""
        needed = self.allowed(next_pos[:, None], k_pos, None)[:, 0]
        if self.global_positions:
            needed |= (next_pos <= self.global_positions[-1])[:, None]
        return needed

    # ---- what it costs ------------------------------------------------------------------------------
    def scores_computed(self, T: int, S: int | None = None) -> int:
        """Score entries (per batch row and head) a call computes for T queries that are the last of S keys at
        positions 0..S-1 (S defaults to T: a prefill): T·S when it runs as dense, else what the plan scores."""
        S = T if S is None else S
        if self.window >= S:
            return T * S
        return sum(len(rows) * len(keys) for rows, keys in self.plan(S - T, T, 0, S))

    def fraction_computed(self, T: int, S: int | None = None) -> float:
        """Share of the T×S score matrix of dense attention that this backend computes: 1.0 when it runs as
        dense, about (w + g + |globals| + block) / S for long inputs."""
        return self.scores_computed(T, S) / (T * (T if S is None else S))

    def describe(self, n_tokens: int) -> str:
        """One line: how a call over `n_tokens` positions (first key to last query) runs."""
        if self.window >= n_tokens:
            return f"window {self.window} >= {n_tokens} tokens: runs as dense"
        return (f"window {self.window} + {self.n_global} sinks + {len(self.global_positions)} global positions "
                f"over {n_tokens} tokens: block-sparse, blocks of {self.block} queries")
