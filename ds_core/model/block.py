"""One decoder layer: x + MLA(norm(x)), then + MLP(norm(x)) where the MLP is dense or DeepSeekMoE."""

from __future__ import annotations

import torch
from torch import nn

from .. import trace
from ..attention import AttentionBackend, Positions
from ..cache import KVCache
from ..config import ModelConfig
from .mla import MLA
from .moe import MLP, MoE
from .norm import RMSNorm


class DecoderLayer(nn.Module):
    def __init__(self, cfg: ModelConfig, layer: int):
        super().__init__()
        self.name = f"layers.{layer}"
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.self_attn = MLA(cfg, layer)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        if cfg.is_moe_layer(layer):
            self.mlp = MoE(cfg, layer)
        else:
            self.mlp = MLP(cfg.hidden_size, cfg.intermediate_size, cfg.mlp_bias)

    def forward(self, x: torch.Tensor, rope, pos: Positions, cache: KVCache | None, backend: AttentionBackend,
                mla: str) -> torch.Tensor:
        """x [B, T, D] -> [B, T, D]. rope, pos, cache, backend, mla: as MLA.forward takes them."""
        trace.record(f"{self.name}.input", x)
        x = x + self.self_attn(self.input_layernorm(x), rope, pos, cache, backend, mla)
        mlp_out = self.mlp(self.post_attention_layernorm(x))
        trace.record(f"{self.name}.mlp.output", mlp_out)
        x = x + mlp_out
        trace.record(f"{self.name}.output", x)
        return x
