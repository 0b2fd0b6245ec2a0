"""The induction guide: its copy targets follow the definition, its loss is the attention mass it claims, and
it never changes what the model computes."""

from __future__ import annotations

import torch

from ds_core import DeepSeekModel
from ds_core.training.induction_guide import InductionGuide, copy_targets


def brute_force_targets(ids: torch.Tensor) -> torch.Tensor:
    B, T = ids.shape
    mask = torch.zeros(B, T, T, dtype=torch.bool)
    for b in range(B):
        for t in range(1, T):
            for s in range(2, t + 1):
                mask[b, t, s] = bool(ids[b, s - 2] == ids[b, t - 1] and ids[b, s - 1] == ids[b, t])
    return mask


def test_copy_targets_match_the_definition():
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 4, (3, 40), generator=g)  # a small alphabet, so two-token matches are common
    mask = copy_targets(ids)
    assert mask.any()
    assert torch.equal(mask, brute_force_targets(ids))


def test_guide_loss_is_minus_log_attention_mass_on_targets(tiny_checkpoint):
    model = DeepSeekModel.from_pretrained(tiny_checkpoint).requires_grad_(True)  # loaded for inference
    seq = torch.randint(2, model.config.vocab_size, (1, 12), generator=torch.Generator().manual_seed(1))
    ids = torch.cat([seq, seq], dim=1)  # the second copy has a target at every position
    guide = InductionGuide(model, ((1, 2),))
    logits = model(ids, mla="naive")
    loss = guide.loss(ids)
    with torch.no_grad(), model.trace() as tr:
        model(ids, mla="naive")
    probs = tr["layers.1.attn.probs"][0, 2]                   # [T, T] the head's real attention
    targets = copy_targets(ids)[0]
    rows = targets.any(-1)
    want = -(probs * targets).sum(-1)[rows].log().mean()
    assert torch.allclose(loss, want, atol=1e-5)
    loss.backward()                                           # it trains the guided layer's projections
    assert model.layers[1].self_attn.kv_b_proj.weight.grad.abs().sum() > 0
    guide.remove()
    assert torch.allclose(model(ids, mla="naive"), logits)    # hooks only observe
    assert not model.layers[1].self_attn._forward_pre_hooks


def test_guide_is_idle_without_grad(tiny_checkpoint):
    model = DeepSeekModel.from_pretrained(tiny_checkpoint)
    guide = InductionGuide(model, ((1, 0),))
    with torch.no_grad():
        model(torch.tensor([[3, 4, 3, 4]]))
    assert guide.scores == []
