"""RMSNorm, computed in fp32 whatever the model's dtype, as DeepSeek and transformers do."""

import torch
from torch import nn


class RMSNorm(nn.Module):
    """x [..., dim] -> weight * x / sqrt(mean(x^2) + eps), same shape and dtype as x."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        sum_sq = (xf * xf).sum(-1, keepdim=True)
        # mean + eps, in place on the small [..., 1] tensor: one op each (this runs 4 times per layer per token)
        inv_rms = torch.rsqrt(sum_sq.div_(xf.shape[-1]).add_(self.eps))
        return self.weight * (xf * inv_rms).to(x.dtype)
