"""KV caches: what decoding keeps so each new token costs one token of work.

Two kinds, one per MLA implementation:
- NaiveCache: per-head keys [B, H, S, d_qk] and values [B, H, S, v_head_dim], the way plain multi-head
  attention caches;
- LatentCache: per token only [c_KV | k_rope], kv_lora_rank + qk_rope_head_dim numbers shared by all heads.
Both also keep each slot's rotary position and whether it is padding, which attention masks need.
StaticLatentCache is a LatentCache preallocated to a fixed length, for the torch.compile'd decode step.
RollingNaiveCache / RollingLatentCache drop the slots no later query can read (for a sliding window: all but
the sinks and the last `window` tokens), so their memory stays constant as the text grows.
"""

from __future__ import annotations

import torch


class GrowingTensor:
    """A tensor that grows along one dim, reallocating by doubling so appends are amortised O(new)."""

    def __init__(self, dim: int):
        self.dim, self.length, self.buffer = dim, 0, None

    def append(self, x: torch.Tensor) -> torch.Tensor:
        """Append x along `dim`; returns a view of everything appended so far."""
        n = x.shape[self.dim]
        if self.buffer is None or self.length + n > self.buffer.shape[self.dim]:
            capacity = max(2 * (self.length + n), 16)
            shape = list(x.shape)
            shape[self.dim] = capacity
            grown = x.new_empty(shape)
            if self.buffer is not None:
                grown.narrow(self.dim, 0, self.length).copy_(self.view())
            self.buffer = grown
        self.buffer.narrow(self.dim, self.length, n).copy_(x)
        self.length += n
        return self.view()

    def view(self) -> torch.Tensor:
        return self.buffer.narrow(self.dim, 0, self.length)

    def keep(self, index: torch.Tensor) -> None:
        """Keep only the entries at `index` (LongTensor [n], ascending) along `dim`, moved to the front in
        order; the buffer (and so its capacity) stays."""
        kept = self.view().index_select(self.dim, index)  # a copy: the slices overlap
        self.buffer.narrow(self.dim, 0, len(index)).copy_(kept)
        self.length = len(index)

    @property
    def nbytes(self) -> int:
        """Bytes of the cached entries (not of spare capacity)."""
        return 0 if self.buffer is None else self.view().numel() * self.buffer.element_size()

    @property
    def allocated_bytes(self) -> int:
        """Bytes of the buffer, spare capacity included: what the tensor really holds on to."""
        return 0 if self.buffer is None else self.buffer.numel() * self.buffer.element_size()


class KVCache:
    """Positions and padding of the cached slots, shared by all layers; subclasses add per-layer tensors."""

    mla = ""  # which MLA implementation reads this cache

    def __init__(self, num_layers: int):
        self.num_layers = num_layers
        self.positions = GrowingTensor(dim=1)   # [B, S] rotary position of each slot
        self.valid = GrowingTensor(dim=1)       # [B, S] False where the slot is left padding
        self.has_padding = False
        self.next_position: torch.Tensor | None = None  # [B] position the next real token gets

    @property
    def length(self) -> int:
        return self.positions.length

    def add_positions(self, positions: torch.Tensor, valid: torch.Tensor | None = None
                      ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Record the new slots (valid None: none of them is padding); returns (k_pos [B, S], k_valid [B, S] or
        None if nothing is padded)."""
        if valid is None:
            valid = torch.ones_like(positions, dtype=torch.bool)
        else:
            self.has_padding |= not bool(valid.all())
        k_valid = self.valid.append(valid)
        return self.positions.append(positions), (k_valid if self.has_padding else None)

    def layer_tensors(self, layer: int) -> list[GrowingTensor]:
        """The K/V state of one layer."""
        raise NotImplementedError

    def tensors(self) -> list[GrowingTensor]:
        return [t for layer in range(self.num_layers) for t in self.layer_tensors(layer)]

    @property
    def nbytes(self) -> int:
        """Bytes of K/V state in the cache, all layers and batch rows, measured from the cache tensors."""
        return sum(t.nbytes for t in self.tensors())

    def bytes_per_token(self) -> float:
        """Bytes of K/V state per cached token, all layers, measured from the cache tensors themselves."""
        batch = self.positions.view().shape[0]
        return self.nbytes / (batch * self.length)


class NaiveCache(KVCache):
    """Per-head K and V, up-projected from the latent before caching: H·(d_qk + v_head_dim) numbers per layer."""

    mla = "naive"

    def __init__(self, num_layers: int):
        super().__init__(num_layers)
        self.k = [GrowingTensor(dim=2) for _ in range(num_layers)]  # [B, H, S, d_qk]
        self.v = [GrowingTensor(dim=2) for _ in range(num_layers)]  # [B, H, S, v_head_dim]

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.k[layer].append(k), self.v[layer].append(v)

    def layer_tensors(self, layer: int) -> list[GrowingTensor]:
        return [self.k[layer], self.v[layer]]


class LatentCache(KVCache):
    """MLA's cache: [c_KV | k_rope] per token, kv_lora_rank + qk_rope_head_dim numbers per layer."""

    mla = "absorbed"

    def __init__(self, num_layers: int):
        super().__init__(num_layers)
        self.kv = [GrowingTensor(dim=1) for _ in range(num_layers)]  # [B, S, kv_lora_rank + qk_rope_head_dim]

    def update(self, layer: int, latent_and_rope: torch.Tensor) -> torch.Tensor:
        return self.kv[layer].append(latent_and_rope)

    def layer_tensors(self, layer: int) -> list[GrowingTensor]:
        return [self.kv[layer]]


class FixedTensor:
    """GrowingTensor's view()/nbytes over a preallocated buffer [B, capacity, ...] written in place at given slots.

    view() is the whole buffer, slots not written yet included: its shape never changes, which is the point.
    """

    def __init__(self, buffer: torch.Tensor):
        self.buffer = buffer

    def write(self, slots: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """x [B, T, ...] into slots [T] (a tensor: a Python int would make torch.compile specialise on it)."""
        return self.buffer.index_copy_(1, slots, x)

    def view(self) -> torch.Tensor:
        return self.buffer

    @property
    def nbytes(self) -> int:
        return self.buffer.numel() * self.buffer.element_size()


class StaticLatentCache(LatentCache):
    """A LatentCache of fixed capacity: every tensor is allocated up front and written in place.

    Why: a torch.compile'd decode step (ds_core.perf.compiled_decode) must see the same shapes and the same
    tensors at every step. So the latent buffers are [B, capacity, kv_lora_rank + qk_rope_head_dim] from the start,
    and where the next tokens go is a tensor (`filled`), not a Python int. Attention reads all `capacity` slots; the
    ones not written yet are marked invalid, so the mask that hides left padding hides them too (has_padding is
    always True). The eager model runs on it unchanged (the prefill does), just with a masked attention.
    """

    def __init__(self, num_layers: int, batch: int, capacity: int, width: int,
                 dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu"):
        super().__init__(num_layers)
        self.capacity = capacity
        self.positions = FixedTensor(torch.zeros(batch, capacity, dtype=torch.long, device=device))
        self.valid = FixedTensor(torch.zeros(batch, capacity, dtype=torch.bool, device=device))
        self.kv = [FixedTensor(torch.zeros(batch, capacity, width, dtype=dtype, device=device))
                   for _ in range(num_layers)]
        self.has_padding = True
        self.filled = torch.zeros((), dtype=torch.long, device=device)  # slots written so far, the same for every row
        self.slots: torch.Tensor | None = None  # [T] where the tokens of the current forward pass go

    @property
    def length(self) -> int:
        return int(self.filled)

    def add_positions(self, positions: torch.Tensor, valid: torch.Tensor | None = None
                      ) -> tuple[torch.Tensor, torch.Tensor]:
        """Write the new slots' positions [B, T] and validity; returns (k_pos [B, capacity], k_valid [B, capacity]).
        Writing past capacity raises (index_copy_'s bounds check)."""
        T = positions.shape[1]
        self.slots = self.filled + torch.arange(T, device=positions.device)
        self.filled.add_(T)
        if valid is None:
            valid = torch.ones_like(positions, dtype=torch.bool)
        return self.positions.write(self.slots, positions), self.valid.write(self.slots, valid)

    def update(self, layer: int, latent_and_rope: torch.Tensor) -> torch.Tensor:
        """latent_and_rope [B, T, width] into this pass's slots; returns the whole buffer [B, capacity, width]."""
        return self.kv[layer].write(self.slots, latent_and_rope)

    def bytes_per_token(self) -> float:
        batch = self.positions.view().shape[0]
        return sum(t.nbytes for t in self.kv) / (batch * self.capacity)


class Rolling:
    """Mixin for NaiveCache / LatentCache: before each forward pass, drop the slots no later query can read.

    keep(k_pos [B, S], next_pos [B]) -> Bool [B, S] says which cached keys a query at a position >= next_pos may
    still read; the attention backend supplies it (WindowAttention.keys_needed: the sinks and the last window-1
    positions, while no global query is still to come). Slots are shared by the batch rows, so a slot stays while
    any row needs it (rows whose rule excludes it mask it, as they would in the full cache); padding goes.

    Only slots are dropped, never positions: each kept slot keeps its real rotary position, and new tokens keep
    counting from cache.next_position. Attention over the kept slots equals attention over the full cache,
    because the dropped slots were masked out anyway. Dropping happens at the start of the next pass (the
    positions in add_positions, each layer's tensors in its update), so between passes the cache holds the
    kept slots plus the tokens just added: n_global + window slots once a window-only decode is past them.
    """

    def __init__(self, num_layers: int, keep):
        super().__init__(num_layers)
        self.keep_rule = keep
        self.pending: list[torch.Tensor | None] = [None] * num_layers  # slots each layer must keep, not yet applied

    def add_positions(self, positions: torch.Tensor, valid: torch.Tensor | None = None):
        if self.length and self.next_position is not None:
            needed = self.keep_rule(self.positions.view(), self.next_position) & self.valid.view()
            kept = needed.any(0)  # [S]: the batch rows share slots
            if not bool(kept.all()):
                index = kept.nonzero()[:, 0]
                self.positions.keep(index)
                self.valid.keep(index)
                self.pending = [index] * self.num_layers
        return super().add_positions(positions, valid)

    def update(self, layer: int, *new: torch.Tensor):
        index, self.pending[layer] = self.pending[layer], None
        if index is not None:
            for t in self.layer_tensors(layer):
                t.keep(index)
        return super().update(layer, *new)


class RollingNaiveCache(Rolling, NaiveCache):
    """A NaiveCache that keeps only the slots a later query can read (see Rolling)."""


class RollingLatentCache(Rolling, LatentCache):
    """A LatentCache that keeps only the slots a later query can read (see Rolling)."""


def new_cache(mla: str, num_layers: int, backend=None) -> KVCache:
    """An empty cache for the MLA implementation `mla` ('naive' or 'absorbed').

    backend: the attention backend (an AttentionBackend) the cache will serve. One whose keys_needed rule drops
    keys (WindowAttention) gets a rolling cache of constant size; any other, a name or None the full one.
    """
    kinds = {"naive": NaiveCache, "absorbed": LatentCache}
    if mla not in kinds:
        raise ValueError(f"mla must be 'naive' or 'absorbed', got {mla!r}")
    keep = None if backend is None or isinstance(backend, str) else backend.keys_needed
    if keep is None:
        return kinds[mla](num_layers)
    return {"naive": RollingNaiveCache, "absorbed": RollingLatentCache}[mla](num_layers, keep)
