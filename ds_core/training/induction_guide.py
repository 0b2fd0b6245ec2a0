"""An auxiliary training loss that guides a few attention heads to become induction heads.

Recall ("the baker named" -> " Mira", introduced 400 tokens earlier) needs induction heads: a head at
position t that attends to the token right after an earlier occurrence of what it has just read, so the
next layer can copy it. Small models find these heads only after a long loss plateau; a published fit
(Aoyama et al. 2025, arXiv:2511.16893) puts their emergence at about 10^5.7·sqrt(batch × context) training
tokens, ~39M for ds-tiny's batch of 12 × 512, more than two CPU hours allow. Training without this guide,
ds-tiny showed no copying after 11M tokens (copy gain 0 nats, recall beyond 32 tokens ≤ 5%).

The guide adds, for each guided head, the cross-entropy of "attend to a copy target": for query position t
the targets are the positions s ≤ t whose previous two tokens equal the two tokens ending at t
(ids[s-2], ids[s-1]) == (ids[t-1], ids[t]); the loss is −log Σ_{s ∈ targets} p(t → s), averaged over the
positions that have targets. Matching two tokens, not one, is what the recall cues need ("baker named",
"Mira 's"). The guide only shapes where those heads look; what they copy, and whether the model uses it, is
left to the language-modelling loss. The architecture is unchanged, so transformers loads the result as is.
"""

from __future__ import annotations

import torch
from torch import nn


def copy_targets(ids: torch.Tensor) -> torch.Tensor:
    """ids [B, T] -> mask [B, T, T]: mask[b, t, s] when s ≤ t and ids[b, s-2:s] == ids[b, t-1:t+1]."""
    B, T = ids.shape
    same_last = ids[:, :, None] == ids[:, None, :]                      # [B, t, j]: ids[t] == ids[j]
    same_two = same_last.clone()
    same_two[:, 1:, 1:] &= same_last[:, :-1, :-1]                       # and ids[t-1] == ids[j-1]
    same_two[:, 0, :] = False                                           # t = 0 has no previous token
    same_two[:, :, 0] = False                                           # nor has j = 0
    mask = torch.zeros_like(same_two)
    mask[:, :, 1:] = same_two[:, :, :-1]                                # target s = j + 1
    s = torch.arange(T, device=ids.device)
    return mask & (s[None, :] <= s[:, None])                            # causal; s = t + 1 is never a target


class InductionGuide:
    """Forward pre-hooks on the guided layers' attention that recompute the guided heads' scores with the
    module's own projections; `loss(ids)` turns them into the guide loss. Active only with grad enabled, so
    evaluation passes cost nothing. `remove()` detaches the hooks."""

    def __init__(self, model: nn.Module, heads: tuple[tuple[int, int], ...]):
        self.heads = heads
        self.scores: list[torch.Tensor] = []
        self.hooks = [model.layers[layer].self_attn.register_forward_pre_hook(self._hook(head))
                      for layer, head in heads]

    def _hook(self, head: int):
        def hook(attn, args):
            if not torch.is_grad_enabled():
                return
            x, rope = args[0], args[1]
            q_nope, q_rope = attn.queries(x, rope)
            k, _ = attn.expand(*attn.latent(x, rope))
            q = torch.cat([q_nope[:, head], q_rope[:, head]], dim=-1)   # [B, T, d_qk]
            self.scores.append((q @ k[:, head].transpose(-1, -2)).float() * attn.scale)  # [B, T, T]
        return hook

    def loss(self, ids: torch.Tensor) -> torch.Tensor:
        """ids [B, T] (the model's input) -> mean guide loss over the guided heads; clears the scores."""
        scores, self.scores = self.scores, []
        targets = copy_targets(ids)
        rows = targets.any(-1)                                           # [B, T] positions with a target
        if not rows.any():
            return ids.new_zeros((), dtype=torch.float32)
        T = ids.shape[1]
        causal = torch.ones(T, T, dtype=torch.bool, device=ids.device).tril()
        total = 0.0
        for s in scores:
            log_all = s.masked_fill(~causal, float("-inf")).logsumexp(-1)    # [B, T]
            log_hit = s.masked_fill(~targets, float("-inf")).logsumexp(-1)   # [B, T]
            total = total + (log_all - log_hit)[rows].mean()
        return total / len(scores)

    def remove(self) -> None:
        for h in self.hooks:
            h.remove()
        self.scores = []
