"""Multi-head Latent Attention (DeepSeek-V2/V3).

Keys and values are not projected from x directly. x is first compressed into a small latent
c_KV = RMSNorm(W_DKV x) of kv_lora_rank numbers, plus one rotary key k_rope shared by all heads. Per-head keys
and values are up-projections of the latent: [k_nope | v] = W_UKV c_KV.

Two ways to run it, equal in exact arithmetic:
- naive: up-project K and V for every head and cache those (H·(d_qk + d_v) numbers per token and layer);
- absorbed: since q·k_nope = q·(W_UK c) = (W_UKᵀ q)·c, fold W_UK into the query and W_UV into the output,
  and attend over the latent itself; the cache keeps only [c_KV | k_rope] (kv_lora_rank + d_rope numbers).
"""

from __future__ import annotations

import torch
from einops import rearrange
from torch import nn

from .. import trace
from ..attention import AttentionBackend, Positions
from ..cache import KVCache, LatentCache, NaiveCache
from ..config import ModelConfig
from .linear import Linear
from .norm import RMSNorm
from .rope import apply_rope


class MLA(nn.Module):
    def __init__(self, cfg: ModelConfig, layer: int):
        super().__init__()
        self.cfg, self.layer, self.name = cfg, layer, f"layers.{layer}.attn"
        d, h = cfg.hidden_size, cfg.num_attention_heads
        self.n_heads, self.d_nope, self.d_rope, self.d_v = h, cfg.qk_nope_head_dim, cfg.qk_rope_head_dim, cfg.v_head_dim
        self.rank = cfg.kv_lora_rank
        if cfg.q_lora_rank:
            self.q_a_proj = Linear(d, cfg.q_lora_rank, bias=cfg.attention_bias)
            self.q_a_layernorm = RMSNorm(cfg.q_lora_rank)
            self.q_b_proj = Linear(cfg.q_lora_rank, h * cfg.qk_head_dim, bias=False)
        else:
            self.q_proj = Linear(d, h * cfg.qk_head_dim, bias=False)
        self.kv_a_proj_with_mqa = Linear(d, self.rank + self.d_rope, bias=cfg.attention_bias)
        self.kv_a_layernorm = RMSNorm(self.rank)
        self.kv_b_proj = Linear(self.rank, h * (self.d_nope + self.d_v), bias=False)
        self.o_proj = Linear(h * self.d_v, d, bias=cfg.attention_bias)
        self.scale = cfg.softmax_scale

    def forward(self, x, rope, pos: Positions, cache: KVCache | None, backend: AttentionBackend,
                mla: str) -> torch.Tensor:
        """x [B, T, D], rope: rotations `cis` [B, T, d_rope/2] (complex, see Rotary) -> [B, T, D].

        pos: where the queries and keys sit (with a cache: every cached slot plus these T; without: the T tokens).
        """
        trace.record(f"{self.name}.input", x)
        q_nope, q_rope = self.queries(x, rope)
        latent, k_rope = self.latent(x, rope)
        backend.observe(self.layer, x, pos, cache)
        attend = self.naive if mla == "naive" else self.absorbed
        out = attend(q_nope, q_rope, latent, k_rope, pos, cache, backend)
        out = self.o_proj(out.flatten(2))  # [B, T, H, d_v] -> [B, T, H·d_v]
        trace.record(f"{self.name}.output", out)
        return out

    def queries(self, x, rope) -> tuple[torch.Tensor, torch.Tensor]:
        """-> q_nope [B, H, T, d_nope], q_rope [B, H, T, d_rope] (rotated)."""
        if self.cfg.q_lora_rank:
            c_q = self.q_a_layernorm(self.q_a_proj(x))
            trace.record(f"{self.name}.q_latent", c_q)
            q = self.q_b_proj(c_q)
        else:
            q = self.q_proj(x)
        q = q.unflatten(-1, (self.n_heads, -1)).transpose(1, 2)  # [B, T, H·d_qk] -> [B, H, T, d_qk]
        q_nope, q_rope = q.split_with_sizes([self.d_nope, self.d_rope], dim=-1)
        return q_nope, apply_rope(q_rope, rope.unsqueeze(1), self.cfg.rope_interleave)  # unsqueeze: every head

    def latent(self, x, rope) -> tuple[torch.Tensor, torch.Tensor]:
        """-> c_KV [B, T, kv_lora_rank] (normed), k_rope [B, T, d_rope] (rotated)."""
        c_kv, k_rope = self.kv_a_proj_with_mqa(x).split_with_sizes([self.rank, self.d_rope], dim=-1)
        c_kv = self.kv_a_layernorm(c_kv)
        k_rope = apply_rope(k_rope, rope, self.cfg.rope_interleave)
        trace.record(f"{self.name}.kv_latent", c_kv)
        trace.record(f"{self.name}.k_rope", k_rope)
        return c_kv, k_rope

    def expand(self, latent: torch.Tensor, k_rope: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Up-project the latent: c_KV [B, S, r], k_rope [B, S, d_rope] -> k [B, H, S, d_qk], v [B, H, S, d_v]."""
        kv = rearrange(self.kv_b_proj(latent), "b s (h d) -> b h s d", h=self.n_heads)
        k_nope, v = kv.split([self.d_nope, self.d_v], dim=-1)
        k = torch.cat([k_nope, k_rope[:, None].expand(-1, self.n_heads, -1, -1)], dim=-1)
        return k, v

    def naive(self, q_nope, q_rope, latent, k_rope, pos, cache, backend):
        q = torch.cat([q_nope, q_rope], dim=-1)
        k, v = self.expand(latent, k_rope)
        if isinstance(cache, NaiveCache):
            k, v = cache.update(self.layer, k, v)
        elif cache is not None:
            raise TypeError(f"naive MLA needs a NaiveCache, got {type(cache).__name__}")
        trace.record(f"{self.name}.q", q)
        trace.record(f"{self.name}.k", k)
        trace.record(f"{self.name}.v", v)
        out = backend(q, k, v, pos, self.scale, self.name)  # [B, H, T, d_v]
        return rearrange(out, "b h t d -> b t h d")

    def absorbed(self, q_nope, q_rope, latent, k_rope, pos, cache, backend):
        # kv_b_proj's matrix [H·(d_nope + d_v), r] is, per head, W_UK [d_nope, r] stacked on W_UV [d_v, r]
        w = rearrange(self.kv_b_proj.matrix(), "(h d) r -> h d r", h=self.n_heads)
        w_uk, w_uv = w.split_with_sizes([self.d_nope, self.d_v], dim=1)
        kv = torch.cat([latent, k_rope], dim=-1)  # [B, S, r + d_rope]: all a token leaves in the cache
        if isinstance(cache, LatentCache):
            kv = cache.update(self.layer, kv)
        elif cache is not None:
            raise TypeError(f"absorbed MLA needs a LatentCache, got {type(cache).__name__}")
        if trace.active() is not None:  # show the per-head q, k, v this computation is equal to
            k_full, v_full = self.expand(*kv.split([self.rank, self.d_rope], dim=-1))
            trace.record(f"{self.name}.q", torch.cat([q_nope, q_rope], dim=-1))
            trace.record(f"{self.name}.k", k_full)
            trace.record(f"{self.name}.v", v_full)
        q_latent = torch.matmul(q_nope, w_uk)                     # [B, H, T, r]: W_UK folded into the query
        q = torch.cat([q_latent, q_rope], dim=-1)                # [B, H, T, r + d_rope]
        k = kv.unsqueeze(1)                                      # [B, 1, S, r + d_rope], one "head" for all
        v = k[..., : self.rank]                                  # [B, 1, S, r]: the values are the latent
        out_latent = backend(q, k, v, pos, self.scale, self.name)   # [B, H, T, r]
        out = torch.matmul(out_latent, w_uv.transpose(1, 2))      # [B, H, T, d_v]: W_UV folded into the output
        return out.transpose(1, 2)                                # [B, T, H, d_v]
