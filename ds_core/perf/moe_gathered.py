"""The compiled decode step's MoE path: the chosen experts' matrices gathered by tensor index.

Why: the reference one-token path (MoE.run_experts_one_token) picks the token's k experts by Python int
(.tolist()), which torch.compile cannot trace without breaking the graph. Here the routed experts' matrices are
stacked once into gate [E, F, D], up [E, F, D] and down [E, D, F], and the k chosen ones are indexed by the
expert ids as a tensor. Written as multiply-and-sum, so the compiler fuses gather and product into one pass over
the weights; eagerly this is slower than the loop, so only the compiled decode step uses it. Equal to the loop:
tests/test_compiled_decode.py.

    install(model)                 # stack (or refresh) every MoE layer's experts; CompiledDecode.new_cache does
    moe.gathered(x, routing)       # what MoE.run_experts_one_token runs instead while compiling

The matrices come from each expert's Linear through matrix() (ds_core.model.linear), so a replaced Linear
(quantized, sharded) is stacked as what it applies.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..model.moe import MoE, Routing


class GatheredExperts:
    """Stacked copies of one MoE layer's routed-expert matrices, and the one-token product over k of them.

    Copies, not parameters or buffers: names and state_dict stay untouched. `source` identifies the matrices they
    were copied from (storage and in-place-modification counter of each), so install() can tell when to rebuild.
    """

    def __init__(self, matrices: list[list[torch.Tensor]], source: tuple):
        """matrices: per projection (gate, up, down), the E experts' [out, in] matrices."""
        with torch.no_grad():
            self.stacked = tuple(torch.stack(ms) for ms in matrices)  # gate [E, F, D], up [E, F, D], down [E, D, F]
        self.source = source

    def __call__(self, x: torch.Tensor, r: Routing) -> torch.Tensor:
        """x [1, D] -> Σ_k weight_k · expert_k(x) [1, D], for the token's k experts r.experts[0]."""
        gate, up, down = self.stacked
        experts, weights = r.experts[0], r.weights[0].to(x.dtype)           # [k], [k]
        h = F.silu((gate[experts] * x).sum(-1)) * (up[experts] * x).sum(-1)  # [k, F]
        h = h * weights[:, None]
        return (down[experts] * h[:, None, :]).sum(-1).sum(0, keepdim=True)  # [k, D] -> [1, D]

    def __deepcopy__(self, memo) -> "GatheredExperts":
        # Never changed in place (install makes a new one), and a model copy that shares the weights shares this
        # too (ds_core.labs.moe.shared_weight_copy); a copy with weights of its own gets its own at its next install.
        return self


def install(model) -> None:
    """Give every MoE layer of `model` its GatheredExperts, rebuilt only where an expert matrix was replaced or
    changed in place since (e.g. after loading or training). Call it before each compiled generation."""
    for moe in model.modules():
        if isinstance(moe, MoE):
            install_layer(moe)


def install_layer(moe: MoE) -> GatheredExperts:
    """Make or refresh moe.gathered; returns it. NotImplementedError for experts with biases."""
    linears = list(zip(*((e.gate_proj, e.up_proj, e.down_proj) for e in moe.experts)))  # per projection, [E]
    if any(linear.bias is not None for per_proj in linears for linear in per_proj):
        raise NotImplementedError(f"{moe.name}: experts with biases have no gathered one-token path")
    matrices = [[linear.matrix() for linear in per_proj] for per_proj in linears]
    source = tuple((m.data_ptr(), _version(m)) for per_proj in matrices for m in per_proj)
    if moe.gathered is None or moe.gathered.source != source:
        moe.gathered = GatheredExperts(matrices, source)
    return moe.gathered


def _version(t: torch.Tensor) -> int | None:
    """t's in-place-modification counter, or None for an inference tensor (which keeps none)."""
    try:
        return t._version
    except RuntimeError:
        return None
