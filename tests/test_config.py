"""ModelConfig: parameter counts against real models, config.json round trips, rope spellings, and the sizes of
DeepSeek's published models computed from their config numbers alone."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch

from conftest import BASE, CONFIGS
from ds_core import ConfigError, DeepSeekModel, ModelConfig


def spec(name: str, **changes) -> dict:
    """A config.json dict: conftest.BASE merged with CONFIGS[name] (deep-copied: nothing shared is mutated)."""
    return copy.deepcopy({**BASE, **CONFIGS[name], **changes})


def meta_model(cfg: ModelConfig) -> DeepSeekModel:
    with torch.device("meta"):  # shapes only, no memory
        return DeepSeekModel(cfg)


def weights_numel(model: DeepSeekModel) -> int:
    """Parameters (a tied lm_head counted once) plus V3's router balancing bias, which is a buffer in the model
    but a weight in the checkpoint; param_counts counts it (256 numbers per MoE layer in DeepSeek-V3)."""
    params = sum(p.numel() for p in model.parameters())
    bias = sum(b.numel() for n, b in model.named_buffers() if n.endswith("e_score_correction_bias"))
    return params + bias


VARIANTS = [(name, tie, extra) for name in CONFIGS for tie in (False, True) for extra in ({},)] + [
    ("v3_qlora", False, {"attention_bias": True}),
    ("v2_lite", False, {"attention_bias": True}),
    ("v3_groups", True, {"mlp_bias": True}),
    ("v3_qlora", False, {"first_k_dense_replace": 0, "moe_layer_freq": 2}),
    ("v3_qlora", False, {"n_routed_experts": None, "n_shared_experts": None}),  # dense model
]


@pytest.mark.parametrize("name, tie, extra", VARIANTS, ids=lambda v: str(v))
def test_total_equals_model_numel(name, tie, extra):
    cfg = ModelConfig.from_hf(spec(name, tie_word_embeddings=tie, **extra))
    model = meta_model(cfg)
    counts = cfg.param_counts()
    assert counts["total"] == weights_numel(model)
    embed = model.embed_tokens.weight.numel() + model.norm.weight.numel()
    assert counts["embeddings"] == embed + (0 if tie else model.lm_head.weight.numel())
    if tie:
        assert model.lm_head.weight is model.embed_tokens.weight


@pytest.mark.parametrize("name", list(CONFIGS))
def test_active_count(name):
    """active = total minus the (E - k) routed experts a token skips in every MoE layer."""
    cfg = ModelConfig.from_hf(spec(name))
    model = meta_model(cfg)
    moe_layers = [layer for layer in model.layers if hasattr(layer.mlp, "experts")]
    assert len(moe_layers) == cfg.num_hidden_layers - cfg.first_k_dense_replace == 2
    expert = sum(p.numel() for p in moe_layers[0].mlp.experts[0].parameters())
    E, k = cfg.n_routed_experts, cfg.num_experts_per_tok
    counts = cfg.param_counts()
    assert counts["active"] == counts["total"] - len(moe_layers) * (E - k) * expert


def test_active_count_by_hand():
    """v3_qlora: hidden 64, expert width 24, 8 experts, top-2, 2 MoE layers."""
    counts = ModelConfig.from_hf(spec("v3_qlora")).param_counts()
    expert = 3 * 64 * 24  # gate, up, down
    assert counts["total"] - counts["active"] == 2 * (8 - 2) * expert == 55_296


def test_dense_model_active_equals_total():
    cfg = ModelConfig.from_hf(spec("v3_qlora", n_routed_experts=None, n_shared_experts=None))
    counts = cfg.param_counts()
    assert not cfg.has_moe and counts["active"] == counts["total"]


# ---- config.json round trips ---------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(CONFIGS))
def test_round_trip(name):
    cfg = ModelConfig.from_hf(spec(name))
    assert ModelConfig.from_hf(cfg.to_hf()) == cfg
    assert ModelConfig.from_hf(ModelConfig.from_hf(cfg.to_hf()).to_hf()) == cfg


def test_round_trip_of_a_config_built_in_python():
    fields = {k: v for k, v in spec("v3_yarn").items() if k != "num_key_value_heads"}
    # written out: once transformers has read CONFIGS (the session fixtures), its nested dict carries more keys
    fields["rope_scaling"] = {"type": "yarn", "factor": 4.0, "original_max_position_embeddings": 64,
                              "beta_fast": 32, "beta_slow": 1, "mscale": 0.707, "mscale_all_dim": 1.0}
    cfg = ModelConfig(**fields)
    assert ModelConfig.from_hf(cfg.to_hf()) == cfg


def test_unknown_keys_survive_round_trip():
    cfg = ModelConfig.from_hf(spec("v3_qlora", my_note="kept", quant_hint=[1, 2]))
    assert cfg.extra["my_note"] == "kept"
    assert cfg.to_hf()["quant_hint"] == [1, 2]


@pytest.mark.parametrize("name", list(CONFIGS))
def test_transformers_reads_what_to_hf_writes(name):
    from transformers import AutoConfig

    cfg = ModelConfig.from_hf(spec(name))
    hf = AutoConfig.for_model(**copy.deepcopy(cfg.to_hf()))
    back = ModelConfig.from_hf(hf.to_dict())
    assert dataclasses.replace(back, extra={}) == dataclasses.replace(cfg, extra={})


# ---- rope spellings ----------------------------------------------------------------------------------
YARN = {"factor": 40.0, "original_max_position_embeddings": 4096, "beta_fast": 32, "beta_slow": 1,
        "mscale": 1.0, "mscale_all_dim": 1.0}


@pytest.mark.parametrize("legacy, modern", [
    (dict(rope_theta=50000.0, rope_scaling={"type": "yarn", **YARN}),
     dict(rope_parameters={"rope_type": "yarn", "rope_theta": 50000.0, **YARN})),
    (dict(rope_theta=50000.0, rope_scaling={"rope_type": "yarn", **YARN}),
     dict(rope_parameters={"rope_type": "yarn", "rope_theta": 50000.0, **YARN})),
    # transformers 5 also leaves rope_theta / rope_type inside a legacy-looking rope_scaling
    (dict(rope_theta=50000.0, rope_scaling={"type": "yarn", **YARN}),
     dict(rope_scaling={"type": "yarn", "rope_type": "yarn", "rope_theta": 50000.0, **YARN})),
    (dict(rope_theta=20000.0), dict(rope_parameters={"rope_type": "default", "rope_theta": 20000.0})),
    (dict(), dict(rope_parameters={"rope_type": "default", "rope_theta": 10000.0})),
])
def test_rope_spellings_parse_the_same(legacy, modern):
    def base():
        d = spec("v3_qlora")
        d.pop("rope_scaling", None)
        return d

    a = ModelConfig.from_hf({**base(), **legacy})
    b = ModelConfig.from_hf({**base(), **modern})
    assert a == b
    assert a.rope_theta == legacy.get("rope_theta", 10000.0)
    if "rope_scaling" in legacy:
        assert a.rope_scaling == {"type": "yarn", **YARN}
        assert a.softmax_scale != a.qk_head_dim ** -0.5  # YaRN's mscale reaches the attention scale
    else:
        assert a.rope_scaling is None


def test_transformers_rope_parameters_match_legacy_spelling():
    """What transformers 5 writes for a legacy rope_scaling parses to the same config as the legacy dict."""
    from transformers import AutoConfig

    legacy = spec("v3_yarn")
    written = AutoConfig.for_model(**copy.deepcopy(legacy)).to_dict()
    assert "rope_parameters" in written
    a, b = ModelConfig.from_hf(legacy), ModelConfig.from_hf(written)
    assert dataclasses.replace(a, extra={}) == dataclasses.replace(b, extra={})


def test_unsupported_rope_type():
    with pytest.raises(ConfigError, match="'linear'.*yarn"):
        ModelConfig.from_hf(spec("v3_qlora", rope_scaling={"type": "linear", "factor": 2.0}))


def test_yarn_needs_factor():
    with pytest.raises(ConfigError, match="'factor'"):
        ModelConfig.from_hf(spec("v3_qlora", rope_scaling={"type": "yarn"}))


# ---- DeepSeek's published models, from their config numbers ---------------------------------------------
# The shape-defining fields of deepseek-ai/DeepSeek-V3's config.json (V3 and R1 share them).
DEEPSEEK_V3 = dict(
    model_type="deepseek_v3", vocab_size=129280, hidden_size=7168, intermediate_size=18432,
    moe_intermediate_size=2048, num_hidden_layers=61, num_attention_heads=128, num_key_value_heads=128,
    q_lora_rank=1536, kv_lora_rank=512, qk_nope_head_dim=128, qk_rope_head_dim=64, v_head_dim=128,
    n_routed_experts=256, n_shared_experts=1, num_experts_per_tok=8, n_group=8, topk_group=4,
    first_k_dense_replace=3, moe_layer_freq=1, num_nextn_predict_layers=1, tie_word_embeddings=False,
    scoring_func="sigmoid", topk_method="noaux_tc", routed_scaling_factor=2.5, norm_topk_prob=True,
    max_position_embeddings=163840, rope_theta=10000,
    rope_scaling={"type": "yarn", "factor": 40, "original_max_position_embeddings": 4096, "beta_fast": 32,
                  "beta_slow": 1, "mscale": 1.0, "mscale_all_dim": 1.0},
)
# deepseek-ai/DeepSeek-V2 (236B total, 21B active) and DeepSeek-V2-Lite (15.7B total).
_V2_COMMON = dict(model_type="deepseek_v2", vocab_size=102400, kv_lora_rank=512, qk_nope_head_dim=128,
                  qk_rope_head_dim=64, v_head_dim=128, first_k_dense_replace=1, n_shared_experts=2,
                  num_experts_per_tok=6)
DEEPSEEK_V2 = dict(_V2_COMMON, hidden_size=5120, num_hidden_layers=60, num_attention_heads=128, q_lora_rank=1536,
                   intermediate_size=12288, moe_intermediate_size=1536, n_routed_experts=160, n_group=8,
                   topk_group=3, topk_method="group_limited_greedy")
DEEPSEEK_V2_LITE = dict(_V2_COMMON, hidden_size=2048, num_hidden_layers=27, num_attention_heads=16,
                        q_lora_rank=None, intermediate_size=10944, moe_intermediate_size=1408, n_routed_experts=64)


def test_deepseek_v3_671b():
    cfg = ModelConfig.from_hf(copy.deepcopy(DEEPSEEK_V3))
    counts = cfg.param_counts()
    # Exact figures from the config: 671,026,419,200 total (MTP layer excluded), 37,552,297,472 active.
    assert counts["total"] == 671_026_419_200
    assert counts["active"] == 37_552_297_472
    assert abs(counts["total"] / 671e9 - 1) < 0.01
    assert abs(counts["active"] / 37e9 - 1) < 0.03


def test_deepseek_v3_kv_cache():
    cfg = ModelConfig.from_hf(copy.deepcopy(DEEPSEEK_V3))
    kv = cfg.kv_cache_numbers_per_token()
    assert kv["latent"] == 61 * 576 and kv["latent"] // 61 == 512 + 64
    assert kv["naive"] == 61 * 40960 and kv["naive"] // 61 == 128 * (192 + 128)


def test_deepseek_v2_sizes():
    v2 = ModelConfig.from_hf(copy.deepcopy(DEEPSEEK_V2)).param_counts()
    assert abs(v2["total"] / 236e9 - 1) < 0.01 and abs(v2["active"] / 21e9 - 1) < 0.03
    lite = ModelConfig.from_hf(copy.deepcopy(DEEPSEEK_V2_LITE)).param_counts()
    assert abs(lite["total"] / 15.7e9 - 1) < 0.01


def test_inspect_numbers_for_v3():
    """ds_core.evaluation.sizes reports the same numbers, from a config alone."""
    from ds_core.evaluation.sizes import kv_cache_summary, param_summary
    from ds_core.viz.text import human_count

    cfg = ModelConfig.from_hf(copy.deepcopy(DEEPSEEK_V3))
    p = param_summary(cfg)
    assert human_count(p["total"]) == "671.0B" and human_count(p["active"]) == "37.6B"
    kv = kv_cache_summary(cfg, "bf16")
    assert kv["latent_bytes"] == 61 * 576 * 2 and kv["naive_bytes"] == 61 * 40960 * 2
    assert kv["ratio"] == pytest.approx(40960 / 576)
    assert kv_cache_summary(cfg, torch.float32)["latent_bytes"] == 61 * 576 * 4


# ---- errors ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("key", ["kv_lora_rank", "q_lora_rank", "moe_intermediate_size", "v_head_dim"])
def test_missing_required_key(key):
    d = spec("v3_qlora")
    d.pop(key)
    with pytest.raises(ConfigError, match=f"'{key}'"):
        ModelConfig.from_hf(d)


def test_bad_values_are_named():
    with pytest.raises(ConfigError, match="n_routed_experts .8. must be divisible by n_group .3."):
        ModelConfig.from_hf(spec("v3_groups", n_group=3))
    with pytest.raises(ConfigError, match="qk_rope_head_dim must be even"):
        ModelConfig.from_hf(spec("v3_qlora", qk_rope_head_dim=7))
    with pytest.raises(ConfigError, match="hidden_act 'gelu'"):
        ModelConfig.from_hf(spec("v3_qlora", hidden_act="gelu"))
    with pytest.raises(ConfigError, match="rope_scaling / rope_parameters must be a JSON object"):
        ModelConfig.from_hf(spec("v3_qlora", rope_scaling="yarn"))
