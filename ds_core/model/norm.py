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
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * xf.to(x.dtype)
