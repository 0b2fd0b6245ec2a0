"""Rotary position embeddings as DeepSeek uses them, with YaRN context extension.

Only the qk_rope_head_dim slice of each query and key is rotated. DeepSeek stores rotary pairs interleaved,
(x0, x1), (x2, x3), ... (`rope_interleave: true`); the other layout pairs x_i with x_{i+d/2}.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..config import ModelConfig, yarn_mscale


def rope_frequencies(cfg: ModelConfig) -> tuple[torch.Tensor, float]:
    """Inverse frequencies [d/2] and the factor that scales cos/sin (YaRN's attention_factor; 1 without YaRN)."""
    dim, base = cfg.qk_rope_head_dim, cfg.rope_theta
    exponents = torch.arange(0, dim, 2, dtype=torch.float32, device="cpu") / dim
    inv_freq = 1.0 / base ** exponents
    rs = cfg.rope_scaling
    if rs is None:
        return inv_freq, 1.0

    factor = rs["factor"]
    original_len = rs.get("original_max_position_embeddings", cfg.max_position_embeddings)
    beta_fast, beta_slow = rs.get("beta_fast") or 32, rs.get("beta_slow") or 1

    def dim_of_rotations(n_rot: float) -> float:
        # the dimension whose wavelength fits n_rot times into the original context
        return dim * math.log(original_len / (n_rot * 2 * math.pi)) / (2 * math.log(base))

    low, high = math.floor(dim_of_rotations(beta_fast)), math.ceil(dim_of_rotations(beta_slow))
    if rs.get("truncate", True) is False:
        low, high = dim_of_rotations(beta_fast), dim_of_rotations(beta_slow)
    low, high = max(low, 0), min(high, dim - 1)
    if low == high:
        high += 0.001
    # 0 for fast-rotating dims (kept as trained: extrapolate), 1 for slow ones (divided by factor: interpolate)
    ramp = ((torch.arange(dim // 2, dtype=torch.float32, device="cpu") - low) / (high - low)).clamp(0, 1)
    inv_freq = inv_freq / factor * ramp + inv_freq * (1 - ramp)

    if rs.get("attention_factor") is not None:
        attention_factor = rs["attention_factor"]
    elif rs.get("mscale") and rs.get("mscale_all_dim"):
        attention_factor = yarn_mscale(factor, rs["mscale"]) / yarn_mscale(factor, rs["mscale_all_dim"])
    else:
        attention_factor = yarn_mscale(factor)
    return inv_freq, float(attention_factor)


class Rotary(nn.Module):
    """positions [B, T] -> the rotations `cis` [B, T, qk_rope_head_dim/2], complex64 (fp32 parts).

    cis = attention_factor · e^{iθ}, θ = position · inv_freq: cis.real is the (scaled) cos, cis.imag the sin.
    Computed once per forward pass and shared by every layer's queries and keys.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        inv_freq, self.attention_factor = rope_frequencies(cfg)
        self.register_buffer("inv_freq", inv_freq, persistent=False)
        self.interleaved = cfg.rope_interleave

    def forward(self, positions: torch.Tensor) -> torch.Tensor:
        angles = positions[..., None].float() * self.inv_freq
        return torch.polar(torch.full_like(angles, self.attention_factor), angles)


def apply_rope(x: torch.Tensor, cis: torch.Tensor, interleaved: bool) -> torch.Tensor:
    """Rotate x [..., T, d] by cis [..., T, d/2] (complex, broadcast over heads). Computed in fp32.

    Interleaved layout (DeepSeek's): each pair (x0, x1), (x2, x3), ... is the complex number x0 + i·x1, and
    rotating it by θ is multiplying by e^{iθ}: (x0·cos − x1·sin) + i·(x1·cos + x0·sin). The output stays
    interleaved, so keys cached from it are in DeepSeek's own layout. The other layout pairs x_i with x_{i+d/2}.
    """
    xf = x.float()
    if interleaved and torch.compiler.is_compiling():  # inductor has no complex codegen: the same in real numbers
        x0, x1 = xf.unflatten(-1, (-1, 2)).unbind(-1)
        cos, sin = cis.real, cis.imag
        out = torch.stack((x0 * cos - x1 * sin, x1 * cos + x0 * sin), dim=-1).flatten(-2)
    elif interleaved:
        out = torch.view_as_real(_complex_pairs(xf) * cis).flatten(-2)
    else:
        cos, sin = cis.real, cis.imag
        x1, x2 = xf.chunk(2, dim=-1)
        out = torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1)
    return out.to(x.dtype)


def _complex_pairs(x: torch.Tensor) -> torch.Tensor:
    """x [..., d] fp32 -> a complex view [..., d/2] of its pairs (x0 + i·x1, x2 + i·x3, ...), without copying
    when the pairs already sit in memory as complex numbers do (the usual case: x is a slice of a projection)."""
    try:
        return torch.view_as_complex(x.unflatten(-1, (-1, 2)))
    except RuntimeError:  # a pair straddles an odd offset or stride: copy into a fresh, aligned tensor
        return torch.view_as_complex(x.contiguous().unflatten(-1, (-1, 2)))
