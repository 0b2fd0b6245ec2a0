"""Every weight goes through its module (ds_core.model.linear): with each Linear of the model swapped for a
stand-in that computes the same and counts its calls, the logits stay bit-identical, eagerly in both MLA modes and
through the compiled decode step, and every stand-in is used."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ds_core import DeepSeekModel
from ds_core.model.linear import Linear, replace_linears
from ds_core.model.moe import MoE, Router


class Counted(nn.Module):
    """Stands in for a Linear: the same forward and matrix(), counting calls to either. The count is a tensor so
    that a compiled step adds to it too (the compiler would freeze a Python int as a constant)."""

    def __init__(self, linear: Linear):
        super().__init__()
        self.linear = linear
        self.register_buffer("calls", torch.zeros((), dtype=torch.long), persistent=False)

    @property
    def bias(self) -> torch.Tensor | None:
        return self.linear.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls.add_(1)
        return self.linear(x)

    def matrix(self) -> torch.Tensor:
        self.calls.add_(1)
        return self.linear.matrix()


@pytest.fixture(scope="module")
def models(tiny_checkpoint):
    """(the model as loaded, the same checkpoint with every Linear Counted, the names replace_linears gave)."""
    plain, swapped = DeepSeekModel.from_pretrained(tiny_checkpoint), DeepSeekModel.from_pretrained(tiny_checkpoint)
    for router in (m for model in (plain, swapped) for m in model.modules() if isinstance(m, Router)):
        router.e_score_correction_bias.zero_()  # its random balancing bias keeps some experts off any input
    names = replace_linears(swapped, lambda name, linear: Counted(linear))
    return plain, swapped, names


def calls(model) -> dict[str, int]:
    """name -> calls since the last reset, for every stand-in; resets them."""
    out = {name: int(m.calls) for name, m in model.named_modules() if isinstance(m, Counted)}
    for m in model.modules():
        if isinstance(m, Counted):
            m.calls.zero_()
    return out


def ids(B: int, T: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(2, 320, (B, T), generator=torch.Generator().manual_seed(seed))


def test_every_linear_is_swapped(models):
    plain, swapped, names = models
    linears = [name for name, m in plain.named_modules() if isinstance(m, nn.Linear)]
    assert names == linears == list(calls(swapped))
    kinds = {name.rsplit(".", 1)[-1] for name in linears}  # attention, experts, shared experts, dense MLP, lm_head
    assert {"q_a_proj", "q_b_proj", "kv_a_proj_with_mqa", "kv_b_proj", "o_proj", "lm_head"} <= kinds
    assert {"gate_proj", "up_proj", "down_proj"} <= kinds
    assert any(".shared_experts." in n for n in linears) and any(".experts." in n for n in linears)
    assert any(n.startswith("layers.0.mlp.") for n in linears)  # layer 0 is dense
    wrapped = {id(m.linear) for m in swapped.modules() if isinstance(m, Counted)}
    assert all(id(m) in wrapped for m in swapped.modules() if isinstance(m, nn.Linear))


@pytest.mark.parametrize("mla", ["naive", "absorbed"])
@torch.inference_mode()
def test_eager_logits_are_identical_and_every_linear_is_used(models, mla):
    """A batched forward pass, then a prefill and one-token decode steps (MoE's one-token path) through a cache."""
    plain, swapped, _ = models
    calls(swapped)
    x = ids(2, 24)
    assert torch.equal(swapped(x, mla=mla), plain(x, mla=mla))
    prompt = ids(1, 7, seed=1)
    caches = plain.new_cache(mla), swapped.new_cache(mla)
    steps = [model(prompt, cache=cache) for model, cache in zip((plain, swapped), caches)]
    for _ in range(4):
        token = steps[0][:, -1:].argmax(-1)
        steps = [model(token, cache=cache) for model, cache in zip((plain, swapped), caches)]
        assert torch.equal(steps[1], steps[0])
    unused = [name for name, n in calls(swapped).items() if n == 0]
    assert not unused


@torch.inference_mode()
def test_compiled_decode_is_identical_and_goes_through_the_linears(models):
    """The compiled step of each model (two compilations): the same logits, the experts stacked through
    matrix() when the cache is made, and every other Linear called by the compiled step itself."""
    plain, swapped, _ = models
    prompt = ids(1, 9, seed=2)

    def generate(model) -> tuple[torch.Tensor, dict[str, int], dict[str, int]]:
        decode = model.compile_decode()
        calls(model)
        cache = decode.new_cache(batch=1, length=prompt.shape[1] + 6)
        when_stacked = calls(model)
        logits = [model(prompt, cache=cache)[:, -1]]
        calls(model)
        for _ in range(5):
            logits.append(decode.step(logits[-1].argmax(-1), cache))
        assert decode.error is None and decode.compiled_steps == 5
        return torch.stack(logits), when_stacked, calls(model)

    expected, _, _ = generate(plain)
    got, when_stacked, in_steps = generate(swapped)
    assert torch.equal(got, expected)
    routed = {f"{name}.experts.{e}.{proj}" for name, m in swapped.named_modules() if isinstance(m, MoE)
              for e in range(len(m.experts)) for proj in ("gate_proj", "up_proj", "down_proj")}
    assert [name for name in routed if when_stacked[name] == 0] == []
    assert [name for name, n in in_steps.items() if name not in routed and n == 0] == []
    assert [name for name in routed if in_steps[name]] == []  # the step reads the stacked copies instead
