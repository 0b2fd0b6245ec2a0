"""ds_core against the reference: transformers' DeepSeek-V2/V3 on the same checkpoints, fp32, within 1e-4.

Never loosen ATOL to make a test pass: a mismatch means the engine computes something else.
"""

import copy

import pytest
import torch

from conftest import CONFIGS
from ds_core import DeepSeekModel, generate_ids
from ds_core.generate import SamplingParams

ATOL = 1e-4
NAMES = list(CONFIGS)


def prompt(batch=2, length=48, seed=1):
    return torch.randint(2, 320, (batch, length), generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def loaded(reference_checkpoints):
    return {name: (DeepSeekModel.from_pretrained(path), ref) for name, (path, ref) in reference_checkpoints.items()}


@pytest.mark.parametrize("mla", ["naive", "absorbed"])
@pytest.mark.parametrize("name", NAMES)
def test_full_forward_matches_transformers(loaded, name, mla):
    model, ref = loaded[name]
    ids = prompt()
    with torch.no_grad():
        expected = ref(ids).logits
    got = model(ids, mla=mla)
    assert got.shape == expected.shape == (2, 48, 320)
    torch.testing.assert_close(got, expected, atol=ATOL, rtol=0)


@pytest.mark.parametrize("mla", ["naive", "absorbed"])
@pytest.mark.parametrize("name", NAMES)
def test_cached_decode_matches_transformers(loaded, name, mla):
    """Prefill 8 tokens, then feed the rest one at a time through the cache."""
    model, ref = loaded[name]
    ids = prompt(length=40)
    with torch.no_grad():
        expected = ref(ids).logits
    cache = model.new_cache(mla)
    steps = [model(ids[:, :8], cache=cache)]
    steps += [model(ids[:, t:t + 1], cache=cache) for t in range(8, ids.shape[1])]
    torch.testing.assert_close(torch.cat(steps, dim=1), expected, atol=ATOL, rtol=0)
    assert cache.length == ids.shape[1]


@pytest.mark.parametrize("name", NAMES)
def test_greedy_generation_matches_transformers(loaded, name):
    model, ref = loaded[name]
    ids = prompt(batch=1, length=12, seed=3)
    with torch.no_grad():
        expected = ref.generate(ids, do_sample=False, max_new_tokens=24, min_new_tokens=24,
                                attention_mask=torch.ones_like(ids))[0, 12:].tolist()
    got = [int(t) for t in generate_ids(model, ids, params=SamplingParams(temperature=0), max_new_tokens=24,
                                        eos_ids=[])]
    assert got == expected


@pytest.mark.parametrize("name", NAMES)
def test_transformers_loads_what_ds_core_saves(tmp_path, name):
    """Reverse direction: a ds_core model with fresh random weights, saved by ds_core, loaded by transformers."""
    from transformers import AutoModelForCausalLM

    from conftest import BASE
    from ds_core import ModelConfig

    cfg = ModelConfig.from_hf(copy.deepcopy({**BASE, **CONFIGS[name]}))
    model = DeepSeekModel(cfg).init_weights(seed=0)
    with torch.no_grad():
        for module in model.modules():  # non-trivial norms and balancing bias, so loading them matters
            if hasattr(module, "eps"):
                module.weight.uniform_(0.5, 1.5)
            if getattr(module, "e_score_correction_bias", None) is not None:
                module.e_score_correction_bias.normal_(0, 0.3)
    model.save_pretrained(tmp_path)
    ref = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    ids = prompt()
    with torch.no_grad():
        torch.testing.assert_close(model(ids), ref(ids).logits, atol=ATOL, rtol=0)
    reloaded = DeepSeekModel.from_pretrained(tmp_path).state_dict()
    for name, tensor in model.state_dict().items():
        assert torch.equal(reloaded[name], tensor), name


def test_correction_bias_steers_choice_not_weights(loaded):
    """The bias changes which experts win, but a chosen expert's weight is its unbiased affinity."""
    model, _ = loaded["v3_groups"]
    moe = model.layers[1].mlp
    x = torch.randn(64, model.config.hidden_size, generator=torch.Generator().manual_seed(0))
    r = moe.gate(x)
    bias = moe.gate.e_score_correction_bias
    assert bias.abs().sum() > 0
    raw = r.scores.gather(1, r.experts)
    expected = raw / raw.sum(-1, keepdim=True) * model.config.routed_scaling_factor
    torch.testing.assert_close(r.weights, expected)
    saved = bias.clone()
    bias.zero_()
    try:
        unbiased = moe.gate(x)
    finally:
        bias.copy_(saved)
    assert not torch.equal(unbiased.experts.sort(-1).values, r.experts.sort(-1).values)
