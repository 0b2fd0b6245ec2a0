"""Every weight matrix of the model sits in a Linear, and the model reaches it only through that module.

The contract, all the model ever asks of one:

    y = module(x)          # x [..., in] -> y [..., out]: every product with the matrix
    w = module.matrix()    # [out, in]: only where the model needs the matrix itself: absorbed MLA folds W_UK and
                           # W_UV (kv_b_proj) into its query and output; the compiled decode step stacks the
                           # routed experts' matrices (ds_core.perf.moe_gathered)
    module.bias            # [out] or None

So any module that provides these three can stand in for a Linear, however it stores its matrix (quantized,
sharded over devices): replace_linears swaps them. The model's own Linear is an nn.Linear, so parameter names
(`weight`, `bias`), checkpoints and state_dict stay as they were. The router's gate (moe.Router.weight, applied in
fp32) and the embedding are not Linears.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn


class Linear(nn.Linear):
    """nn.Linear that also hands out the [out, in] matrix it applies: its weight."""

    def matrix(self) -> torch.Tensor:
        return self.weight


def replace_linears(model: nn.Module, make: Callable[[str, Linear], nn.Module]) -> list[str]:
    """Put make(name, linear) in place of every Linear of `model` (name as in named_modules, e.g.
    'layers.0.self_attn.o_proj'); returns the names, in model order. What make returns must honour the contract
    above. It is handed the model's Linear itself, so a wrapper that keeps it keeps its weight as it is: tied to the
    embedding (lm_head with tie_word_embeddings), stored transposed (DeepSeekModel.use_gemv_layout)."""
    names = [name for name, module in model.named_modules() if isinstance(module, Linear)]
    for name in names:
        model.set_submodule(name, make(name, model.get_submodule(name)))
    return names
