"""DeepSeekMoE: shared experts every token uses, plus fine-grained routed experts a router picks per token.

The router (DeepSeek-V3):
  1. affinity s_e = sigmoid(u · e_e) for every routed expert (DeepSeek-V2: softmax over experts);
  2. for *choosing* only, add the auxiliary-loss-free balancing bias b_e (e_score_correction_bias);
  3. group-limited routing: experts sit in n_group groups; keep the topk_group groups whose best experts
     score highest (V3: sum of each group's top-2; V2 group_limited_greedy: the group's max);
  4. top-k experts among the kept groups;
  5. gate weights are the *unbiased* affinities of the chosen experts, normalised to sum to 1 if
     norm_topk_prob, then times routed_scaling_factor.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .. import trace
from ..config import ModelConfig
from .linear import Linear


class MLP(nn.Module):
    """SwiGLU: down(silu(gate(x)) * up(x)). x [..., D] -> [..., D]. Used for dense layers and each expert."""

    def __init__(self, dim: int, hidden: int, bias: bool = False):
        super().__init__()
        self.gate_proj = Linear(dim, hidden, bias=bias)
        self.up_proj = Linear(dim, hidden, bias=bias)
        self.down_proj = Linear(hidden, dim, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


@dataclass
class Routing:
    """One routing decision for N tokens, with the intermediate steps that led to it."""
    scores: torch.Tensor        # [N, E] affinities, fp32
    group_scores: torch.Tensor | None  # [N, n_group] (group-limited routing only)
    experts: torch.Tensor       # [N, k] chosen expert ids
    weights: torch.Tensor       # [N, k] gate weights, fp32
    biased_scores: torch.Tensor | None = None  # [N, E] scores + correction bias: what the choice ranks (V3 only)
    kept_groups: torch.Tensor | None = None    # [N, topk_group] the groups the choice was limited to


class Router(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.weight = nn.Parameter(torch.empty(cfg.n_routed_experts, cfg.hidden_size))
        if cfg.scoring_func == "sigmoid":  # V3's balancing bias: steers choice, never the weights
            self.register_buffer("e_score_correction_bias", torch.zeros(cfg.n_routed_experts, dtype=torch.float32))
        else:
            self.e_score_correction_bias = None

    def forward(self, x: torch.Tensor) -> Routing:
        """x [N, D] -> Routing. Computed in fp32 so the choice does not flip with the model's dtype."""
        cfg = self.cfg
        logits = F.linear(x.float(), self.weight.float())
        scores = logits.sigmoid() if cfg.scoring_func == "sigmoid" else logits.softmax(dim=-1)
        biased = None if self.e_score_correction_bias is None else scores + self.e_score_correction_bias
        choice = scores if biased is None else biased
        group_scores = kept = None
        if cfg.uses_groups:
            grouped = choice.view(x.shape[0], cfg.n_group, -1)
            if cfg.topk_method == "noaux_tc":
                group_scores = grouped.topk(2, dim=-1).values.sum(-1)
            else:
                group_scores = grouped.amax(dim=-1)
            kept = group_scores.topk(cfg.topk_group, dim=-1).indices                          # [N, topk_group]
            dropped = torch.ones_like(group_scores, dtype=torch.bool).scatter_(1, kept, False)  # [N, n_group]
            choice = grouped.masked_fill(dropped[..., None], float("-inf")).flatten(1)         # [N, E]
        experts = choice.topk(cfg.num_experts_per_tok, dim=-1).indices
        weights = scores.gather(1, experts)
        if cfg.norm_topk_prob:
            weights = weights / (weights.sum(-1, keepdim=True) + 1e-20)
        return Routing(scores, group_scores, experts, weights * cfg.routed_scaling_factor, biased, kept)


class MoE(nn.Module):
    # The one-token path the compiled decode step runs instead of run_experts_one_token: x [1, D], Routing ->
    # [1, D] with no Python int taken from a tensor. Installed by ds_core.perf.moe_gathered (CompiledDecode does);
    # a plain attribute, so it is neither a submodule nor in the state_dict.
    gathered: Callable[[torch.Tensor, Routing], torch.Tensor] | None = None

    def __init__(self, cfg: ModelConfig, layer: int):
        super().__init__()
        self.name = f"layers.{layer}.moe"
        self.gate = Router(cfg)
        self.experts = nn.ModuleList(
            MLP(cfg.hidden_size, cfg.moe_intermediate_size, cfg.mlp_bias) for _ in range(cfg.n_routed_experts)
        )
        self.shared_experts = (
            MLP(cfg.hidden_size, cfg.moe_intermediate_size * cfg.n_shared_experts, cfg.mlp_bias)
            if cfg.n_shared_experts else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, T, D] -> [B, T, D]."""
        B, T, D = x.shape
        flat = x.reshape(-1, D)
        r = self.gate(flat)
        routed = self.run_experts(flat, r).view(B, T, D)
        if trace.active() is not None:
            for key, value in vars(r).items():  # every step of the routing decision, per token
                if value is not None:
                    trace.record(f"{self.name}.{key}", value.view(B, T, -1))
            trace.record(f"{self.name}.routed_output", routed)
        if self.shared_experts is None:
            return routed
        shared = self.shared_experts(x)
        trace.record(f"{self.name}.shared_output", shared)
        return routed + shared

    def run_experts(self, x: torch.Tensor, r: Routing) -> torch.Tensor:
        """x [N, D] -> Σ_k weight_k · expert_k(x) [N, D]: each expert runs once, on the tokens sent to it."""
        if x.shape[0] == 1:
            return self.run_experts_one_token(x, r)
        k = r.experts.shape[1]
        flat_experts = r.experts.flatten()              # [N*k]
        order = flat_experts.argsort(stable=True)       # slots grouped by expert
        counts = torch.bincount(flat_experts, minlength=len(self.experts)).tolist()
        tokens = order // k
        weights = r.weights.flatten()[order].to(x.dtype)[:, None]
        out = torch.zeros_like(x)
        start = 0
        for e, n in enumerate(counts):
            if n:
                idx = tokens[start:start + n]
                out.index_add_(0, idx, self.experts[e](x[idx]) * weights[start:start + n])
                start += n
        return out

    def run_experts_one_token(self, x: torch.Tensor, r: Routing) -> torch.Tensor:
        """x [1, D] -> [1, D]. Batch-1 decoding: run the token's k experts in turn. Grouping tokens by expert
        (run_experts) pays for itself when many tokens share experts; for one token it is pure overhead."""
        if torch.compiler.is_compiling():  # .tolist() would break the graph: pick weights by tensor index instead
            if self.gathered is None:
                raise RuntimeError(f"{self.name}: compiling the one-token path needs its gathered experts: "
                                   "ds_core.perf.moe_gathered.install(model) first")
            return self.gathered(x, r)
        experts, weights = r.experts[0].tolist(), r.weights[0].tolist()
        out = self.experts[experts[0]](x) * weights[0]
        for e, weight in zip(experts[1:], weights[1:]):
            out += self.experts[e](x) * weight
        return out
