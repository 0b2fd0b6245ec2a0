"""The attention-backend contract: what the model hands a backend, and what every backend answers.

In every MLA layer of every forward pass the model calls

    backend.observe(layer, x, pos, cache)       # first: the layer's normed input x [B, T, D] (DSA's indexer)
    out = backend(q, k, v, pos, scale, name)    # then the attention itself -> [B, H, T, dv]

with q [B, H, T, d], k [B, Hk, S, d], v [B, Hk, S, dv] (Hk = H: naive MLA; Hk = 1: absorbed MLA, where every
head reads the one shared latent) and pos, the Positions DeepSeekModel.forward builds once per pass. A backend
gets positions rather than a ready-made mask, so a sparse one can decide for itself which pairs to compute.
`name` prefixes what it records in a trace (e.g. 'layers.0.attn.probs').

What a backend says about itself, each with a default for one that has nothing to add:
- reach(p, s): which (query position, key position) pairs its rule reaches; allowed() adds causality and padding,
  written once here (default: every pair, so allowed() is plain causal attention);
- keys_needed: which cached keys a later query may still read, so a decoding cache can drop the rest
  (default None: all of them, and the cache does not roll);
- fraction_computed(T, S): the share of dense attention's T×S scores it computes (default 1.0);
- describe(n_tokens), last_note: one line each for the UI: how a call over n tokens runs, and how the last call
  ran ('' for a backend that always runs one way, whose describe() says it all).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Callable

import torch

from ..cache import KVCache
from ..checks import check_int, check_number


@dataclass(frozen=True)
class Positions:
    """Where the queries and keys of one forward pass sit, the same for every layer.

    q [B, T]: rotary positions of the T new tokens. k [B, S]: positions of the S keys they attend to (with a cache:
    every cached slot, these T included; without: q itself). k_valid [B, S]: False at left padding and at a
    StaticLatentCache's slots not written yet, or None when no key is masked.
    """
    q: torch.Tensor
    k: torch.Tensor
    k_valid: torch.Tensor | None = None

    @classmethod
    def of_pass(cls, q: torch.Tensor, cache: KVCache | None) -> "Positions":
        """The positions of a pass whose new tokens sit at q [B, T], after they were added to `cache`."""
        if cache is None:
            return cls(q, q)
        return cls(q, cache.positions.view(), cache.valid.view() if cache.has_padding else None)


def check_temperature(temperature) -> float:
    """The attention temperature τ_attn as a float, or ValueError: it must be a finite number > 0."""
    return check_number("attention temperature τ_attn", temperature, 0, low_open=True, why=" (1 = the model's own)")


class AttentionBackend(ABC):
    """Base of every backend: softmax(q·kᵀ · scale / τ_attn) · v over the (query, key) pairs allowed() allows.

    τ_attn (temperature) sharpens (< 1) or flattens (> 1) every attention row; 1 is the model as trained. It is
    separate from the sampling temperature, which acts on the next-token distribution.
    """

    name = ""
    last_note = ""
    # keys_needed(k_pos [B, S], next_pos [B]) -> bool [B, S]: may a query at a position >= next_pos still read the
    # cached key at k_pos? A rolling cache (ds_core.cache.Rolling) keeps just those. None: every key, always.
    keys_needed: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None

    def __init__(self, temperature: float = 1.0):
        self.temperature = check_temperature(temperature)

    @abstractmethod
    def __call__(self, q, k, v, pos: Positions, scale: float, name: str) -> torch.Tensor:
        """-> [B, H, T, dv]; shapes as in the module docstring."""

    @abstractmethod
    def describe(self, n_tokens: int) -> str:
        """One line: how a call over `n_tokens` positions (first key to last query) runs."""

    def observe(self, layer: int, x: torch.Tensor, pos: Positions, cache: KVCache | None) -> None:
        """Called by layer `layer` before the attention, with its normed input x [B, T, D]. Default: nothing."""

    # ---- the rule -----------------------------------------------------------------------------------
    def reach(self, p: torch.Tensor, s: torch.Tensor) -> torch.Tensor | bool:
        """May a query at position p read the key at position s, causality and padding aside? p [B, T, 1] and
        s [B, 1, S] broadcast to bool [B, T, S]. Default: True, every pair."""
        return True

    def allowed(self, q_pos: torch.Tensor, k_pos: torch.Tensor, k_valid: torch.Tensor | None) -> torch.Tensor:
        """Bool [B, T, S]: may query t read key s? Causal by position, within reach(), and padding is never read."""
        p, s = q_pos[:, :, None], k_pos[:, None, :]
        ok = (s <= p) & self.reach(p, s)
        if k_valid is not None:
            ok = ok & k_valid[:, None, :]
            # A padding query sees no key; let it see key 0 so its (unused) output stays finite.
            ok[..., 0] |= ~ok.any(-1)
        return ok

    # ---- what it costs ------------------------------------------------------------------------------
    def fraction_computed(self, T: int, S: int | None = None) -> float:
        """Share of dense attention's T×S scores this backend computes for T queries that are the last of S keys
        (S defaults to T: a prefill). Default: 1.0, all of them."""
        return 1.0


# ---- global tokens: shared by the backends whose rule has them (window, block-local) ----------------------

def check_global_positions(global_positions) -> tuple[int, ...]:
    """Chosen global positions (any iterable of integers >= 0) -> sorted, without repeats; else ValueError."""
    global_positions = tuple(global_positions)  # a list or generator is fine too; read it once
    for p in global_positions:
        check_int(f"global position {p!r} (in global_positions)", p, 0)
    return tuple(sorted(set(int(p) for p in global_positions)))


def global_reach(p: torch.Tensor, s: torch.Tensor, n_global: int, global_positions: tuple[int, ...]) -> torch.Tensor:
    """The pairs global tokens add, shapes as in reach(): the first n_global keys (sinks everyone reads), and
    the chosen global positions, which read and are read by everyone."""
    reach = s < n_global
    if global_positions:
        glob = torch.tensor(global_positions, device=p.device)
        reach = reach | torch.isin(s, glob) | torch.isin(p, glob)
    return reach
