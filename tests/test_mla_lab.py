"""ds_core.labs.mla: KV-cache bytes per token computed from configs equal the bytes of real caches; the published
DeepSeek configs give their known sizes; K and V rebuilt from the latent cache are the ones naive MLA computes;
decode_speed times both MLA implementations on caches of the asked length."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from ds_core import DeepSeekModel
from ds_core.checkpoint import read_config
from ds_core.evaluation.sizes import kv_cache_summary
from ds_core.labs.published import DEEPSEEK_67B, REFERENCE_CONFIGS
from ds_core.labs.mla import (by_context, cache_bytes_by_context,
                             cache_numbers_per_layer, decode_speed, gqa_kv_heads, kv_bytes_by_model,
                             kv_bytes_per_token, latent_and_reconstruction, measured_bytes_per_token,
                             with_references)

SHIPPED = Path(__file__).resolve().parents[1] / "assets" / "ds-tiny"


def prompt_ids(cfg, T: int = 21, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, cfg.vocab_size, (1, T), generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module", params=["v3_qlora", "v3_groups", "v3_yarn", "v2_lite", "ds-tiny"])
def model(request, reference_checkpoints) -> DeepSeekModel:
    """Each test checkpoint; for the shipped model its config with random weights (only the shape matters)."""
    if request.param == "ds-tiny":
        return DeepSeekModel(read_config(SHIPPED)).init_weights(seed=0).eval()
    return DeepSeekModel.from_pretrained(reference_checkpoints[request.param][0])


# ---- computed equals measured ------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype,name", [(torch.float32, "fp32"), (torch.bfloat16, "bf16")])
def test_bytes_per_token_from_the_config_equal_the_real_caches(model, dtype, name):
    model = copy.deepcopy(model).to(dtype)  # the fixture's model stays fp32 for the other tests
    cfg = model.config
    ids = torch.cat([prompt_ids(cfg), prompt_ids(cfg, seed=1)])  # [2, T]: bytes per token of each row
    measured = measured_bytes_per_token(model, ids)
    computed = kv_bytes_per_token(cfg, name)
    assert measured == {"MHA": computed["MHA"]["bytes"], "MLA": computed["MLA"]["bytes"]}
    # and the same as the figures inspect already reports (built on, not computed twice)
    summary = kv_cache_summary(cfg, name)
    assert (computed["MHA"]["bytes"], computed["MLA"]["bytes"]) == (summary["naive_bytes"], summary["latent_bytes"])


def test_the_four_schemes_from_the_head_sizes(model):
    cfg = model.config
    n = cache_numbers_per_layer(cfg, kv_heads=2)
    one_head = cfg.qk_nope_head_dim + cfg.qk_rope_head_dim + cfg.v_head_dim
    assert n == {"MHA": cfg.num_attention_heads * one_head, "GQA": 2 * one_head, "MQA": one_head,
                 "MLA": cfg.kv_lora_rank + cfg.qk_rope_head_dim}
    rows = kv_bytes_per_token(cfg, "fp16", kv_heads=2)
    assert all(rows[s]["bytes"] == 2 * cfg.num_hidden_layers * n[s] for s in n)


def test_cache_grows_linearly_with_the_context():
    cfg = REFERENCE_CONFIGS["DeepSeek-V3"].config
    per_token = kv_bytes_per_token(cfg, "bf16")
    by_ctx = cache_bytes_by_context(cfg, [1, 1024, 131072], "bf16", batch=2)
    assert by_ctx["MLA"] == [2 * c * per_token["MLA"]["bytes"] for c in (1, 1024, 131072)]
    assert by_ctx["MHA"][-1] / by_ctx["MLA"][-1] == pytest.approx(40960 / 576)


def test_gqa_heads_are_clamped_to_the_model_and_must_divide_it():
    tiny = read_config(SHIPPED)
    assert gqa_kv_heads(tiny, 8) == min(8, tiny.num_attention_heads)
    v3 = REFERENCE_CONFIGS["DeepSeek-V3"].config
    assert gqa_kv_heads(v3) == 8
    with pytest.raises(ValueError, match="must divide the 128 attention heads, got 3"):
        gqa_kv_heads(v3, 3)
    with pytest.raises(ValueError, match="integer >= 1"):
        gqa_kv_heads(v3, 0)
    with pytest.raises(ValueError, match="^DeepSeek-V2-Lite: .*must divide the 16"):
        kv_bytes_by_model(with_references("tiny", tiny), kv_heads=12)


# ---- the published models ----------------------------------------------------------------------------------
def test_deepseek_v3_caches_576_numbers_per_layer_against_40960_for_mha():
    cfg = REFERENCE_CONFIGS["DeepSeek-V3"].config
    assert cache_numbers_per_layer(cfg) == {"MHA": 40960, "GQA": 8 * 320, "MQA": 320, "MLA": 576}
    rows = kv_bytes_per_token(cfg, "bf16")
    assert rows["MLA"]["numbers"] == 61 * 576 and rows["MLA"]["bytes"] == 61 * 576 * 2
    assert rows["MHA"]["bytes"] == 61 * 40960 * 2


def test_reference_configs_have_their_published_sizes():
    """The typed config fields are right if they give the parameter counts DeepSeek publishes."""
    counts = {name: ref.config.param_counts() for name, ref in REFERENCE_CONFIGS.items()}
    assert counts["DeepSeek-V3"]["total"] == 671_026_419_200 and counts["DeepSeek-V3"]["active"] == 37_552_297_472
    assert abs(counts["DeepSeek-V2"]["total"] / 236e9 - 1) < 0.01
    assert abs(counts["DeepSeek-V2"]["active"] / 21e9 - 1) < 0.03
    assert abs(counts["DeepSeek-V2-Lite"]["total"] / 15.7e9 - 1) < 0.01
    for ref in REFERENCE_CONFIGS.values():
        assert ref.source.startswith("https://huggingface.co/deepseek-ai/") and ref.source.endswith("config.json")


def test_the_v2_paper_s_93_3_percent_needs_its_6_bit_cache():
    """DeepSeek-V2 (MLA, 60 layers) against DeepSeek 67B (GQA, 8 KV heads, 95 layers), per token."""
    v2 = kv_bytes_per_token(REFERENCE_CONFIGS["DeepSeek-V2"].config)["MLA"]["numbers"]
    dense = DEEPSEEK_67B.kv_numbers_per_token()
    assert (v2, dense) == (60 * 576, 95 * 2 * 8 * 128)
    assert round(100 * (1 - v2 / dense), 1) == 82.2            # both caches in bf16
    assert round(100 * (1 - v2 * 6 / (dense * 16)), 1) == 93.3  # V2's cache at 6 bits a number, as deployed


# ---- the latent and what is rebuilt from it --------------------------------------------------------------------
@pytest.mark.parametrize("layer", [0, -1])
def test_rebuilt_k_and_v_are_the_ones_naive_mla_computes(model, layer):
    cfg = model.config
    layer %= cfg.num_hidden_layers
    ids = prompt_ids(cfg)
    lat = latent_and_reconstruction(model, ids, layer)
    with torch.no_grad(), model.trace() as tr:
        model(ids, mla="naive")  # computes K and V itself, no cache involved
    a = f"layers.{layer}.attn"
    T, H = ids.shape[1], cfg.num_attention_heads
    assert lat.c_kv.shape == (T, cfg.kv_lora_rank) and lat.k.shape == (H, T, cfg.qk_head_dim)
    assert lat.v.shape == (H, T, cfg.v_head_dim)
    for mine, traced in ((lat.c_kv, tr[f"{a}.kv_latent"][0]), (lat.k_rope, tr[f"{a}.k_rope"][0]),
                         (lat.k, tr[f"{a}.k"][0]), (lat.v, tr[f"{a}.v"][0])):
        torch.testing.assert_close(mine, traced, atol=1e-5, rtol=1e-5)


def test_reconstruction_refuses_a_bad_layer_or_batch(tiny_checkpoint):
    model = DeepSeekModel.from_pretrained(tiny_checkpoint)
    ids = prompt_ids(model.config, 5)
    with pytest.raises(ValueError, match="layer must be an integer from 0 to 2, got 3"):
        latent_and_reconstruction(model, ids, 3)
    with pytest.raises(ValueError, match=r"shape \[1, T\]"):
        latent_and_reconstruction(model, ids.repeat(2, 1), 0)


# ---- decode speed --------------------------------------------------------------------------------------------
def test_decode_speed_times_both_implementations_on_caches_of_each_length(tiny_checkpoint):
    model = DeepSeekModel.from_pretrained(tiny_checkpoint)
    seen = []
    rows = decode_speed(model, contexts=(8, 40), steps=3, repeats=2,
                        on_progress=lambda done, total, what: seen.append((done, total, what)))
    assert [(r.context, r.mla) for r in rows] == [(8, "naive"), (8, "absorbed"), (40, "naive"), (40, "absorbed")]
    assert seen[0] == (0, 12, "context 8, naive: prefill") and seen[-1] == (11, 12, "context 40, absorbed: decode")
    kv = kv_cache_summary(model.config, "fp32")
    for r in rows:
        assert len(r.rates) == 2 and all(rate > 0 for rate in r.rates) and r.steps == 3
        per_token = kv["naive_bytes"] if r.mla == "naive" else kv["latent_bytes"]
        assert r.cache_bytes == r.context * per_token  # measured after the prefill: exactly the context
    pairs = by_context(rows)
    assert [p["context"] for p in pairs] == [8, 40]
    assert pairs[1]["cache_ratio"] == pytest.approx(kv["ratio"])
    assert pairs[0]["speedup"] == pytest.approx(rows[1].tokens_per_s / rows[0].tokens_per_s)


@pytest.mark.parametrize("kwargs,message", [
    (dict(contexts=()), "contexts must name at least one context length"),
    (dict(contexts=(0,)), "each context must be an integer >= 1, got 0"),
    (dict(mlas=("latent",)), "mla must be 'naive' or 'absorbed'"),
    (dict(steps=0), "steps must be an integer >= 1"),
])
def test_decode_speed_refuses_bad_arguments(tiny_checkpoint, kwargs, message):
    model = DeepSeekModel.from_pretrained(tiny_checkpoint)
    with pytest.raises(ValueError, match=message):
        decode_speed(model, **kwargs)


def test_by_context_needs_both_implementations(tiny_checkpoint):
    model = DeepSeekModel.from_pretrained(tiny_checkpoint)
    with pytest.raises(ValueError, match="not timed with both"):
        by_context(decode_speed(model, contexts=(4,), mlas=("naive",), steps=1, repeats=1))


# ---- the benchmark command -------------------------------------------------------------------------------------
def test_bench_mla_prints_both_implementations_and_their_ratios(tiny_checkpoint, capsys):
    from ds_core.__main__ import main

    rc = main(["bench", "mla", "--model", str(tiny_checkpoint), "--contexts", "8,300", "--steps", "2",
               "--repeats", "1"])
    out = capsys.readouterr().out
    assert rc == 0
    rows = [line.split() for line in out.splitlines() if line.strip().split(" ")[0] in ("8", "300")]
    assert [row[0] for row in rows] == ["8", "300"]
    ratio = kv_cache_summary(read_config(tiny_checkpoint), "fp32")["ratio"]
    assert all(row[-1] == f"{ratio:.2f}x" for row in rows)  # naive / latent cache bytes, measured
    assert "exceed the model's max_position_embeddings (256)" in out  # 300 > 256: decoded all the same


def test_bench_mla_refuses_bad_contexts(capsys):
    from ds_core.__main__ import main

    rc = main(["bench", "mla", "--contexts", "0,5"])
    assert rc == 2 and "each context must be an integer >= 1, got 0" in capsys.readouterr().err
