"""ModelConfig: the architecture of a DeepSeek-V2/V3 model, read from and written to a Hugging Face config.json.

Field names follow the Hugging Face `config.json` keys, so a reader can look any of them up in a real
checkpoint. Keys that change the shape of the weights are required; keys that only change behaviour fall back
to the defaults of the `transformers` class for that model_type, so a config means the same thing here and there.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields

SUPPORTED_MODEL_TYPES = ("deepseek_v3", "deepseek_v2")

# Keys without which the weights' shapes are unknown. q_lora_rank may be null (DeepSeek-V2-Lite) but must be said.
REQUIRED_KEYS = (
    "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
    "kv_lora_rank", "q_lora_rank", "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim",
)
REQUIRED_MOE_KEYS = ("moe_intermediate_size", "num_experts_per_tok")

# Behaviour defaults of transformers' DeepseekV3Config / DeepseekV2Config, for keys a config.json may omit.
_DEFAULTS = {
    "deepseek_v3": dict(
        n_routed_experts=256, n_shared_experts=1, n_group=8, topk_group=4, first_k_dense_replace=3,
        norm_topk_prob=True, routed_scaling_factor=2.5, scoring_func="sigmoid", topk_method="noaux_tc",
        rope_interleave=True, bos_token_id=0, eos_token_id=1,
    ),
    "deepseek_v2": dict(
        n_routed_experts=64, n_shared_experts=2, n_group=None, topk_group=None, first_k_dense_replace=0,
        norm_topk_prob=False, routed_scaling_factor=1.0, scoring_func="softmax", topk_method="greedy",
        rope_interleave=True, bos_token_id=1, eos_token_id=2,
    ),
}
_ARCHITECTURES = {"deepseek_v3": "DeepseekV3ForCausalLM", "deepseek_v2": "DeepseekV2ForCausalLM"}
_TOPK_METHODS = {"sigmoid": ("noaux_tc",), "softmax": ("greedy", "group_limited_greedy")}


class ConfigError(ValueError):
    """config.json describes no model ds_core can build; the message says which key and what is allowed."""


@dataclass
class ModelConfig:
    vocab_size: int
    hidden_size: int
    intermediate_size: int          # dense MLP width (first_k_dense_replace layers)
    num_hidden_layers: int
    num_attention_heads: int
    kv_lora_rank: int               # width of the MLA latent c_KV that the absorbed cache stores
    q_lora_rank: int | None         # None: queries are projected directly (DeepSeek-V2-Lite)
    qk_nope_head_dim: int
    qk_rope_head_dim: int           # rotary part of each q/k head; one rope key shared by all heads
    v_head_dim: int
    model_type: str = "deepseek_v3"
    moe_intermediate_size: int = 0  # width of one routed expert
    n_routed_experts: int | None = None
    n_shared_experts: int | None = None
    num_experts_per_tok: int | None = None
    n_group: int | None = None
    topk_group: int | None = None
    first_k_dense_replace: int = 0
    moe_layer_freq: int = 1
    norm_topk_prob: bool = True
    routed_scaling_factor: float = 1.0
    scoring_func: str = "sigmoid"   # V3: sigmoid; V2: softmax
    topk_method: str = "noaux_tc"   # V3: noaux_tc (bias-corrected, group top-2 sum); V2: greedy | group_limited_greedy
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    rope_scaling: dict | None = None
    rope_interleave: bool = True
    max_position_embeddings: int = 4096
    attention_bias: bool = False
    mlp_bias: bool = False
    tie_word_embeddings: bool = False
    num_nextn_predict_layers: int = 0
    initializer_range: float = 0.02
    bos_token_id: int | None = None
    eos_token_id: int | list[int] | None = None
    pad_token_id: int | None = None
    extra: dict = field(default_factory=dict, repr=False)  # keys we do not interpret, written back unchanged

    # ---- derived sizes ------------------------------------------------------------------------------
    @property
    def qk_head_dim(self) -> int:
        return self.qk_nope_head_dim + self.qk_rope_head_dim

    @property
    def has_moe(self) -> bool:
        return bool(self.n_routed_experts)

    def is_moe_layer(self, i: int) -> bool:
        return self.has_moe and i >= self.first_k_dense_replace and i % self.moe_layer_freq == 0

    @property
    def softmax_scale(self) -> float:
        """1/sqrt(d_qk), times YaRN's mscale(factor, mscale_all_dim)^2 when the context is stretched."""
        scale = self.qk_head_dim ** -0.5
        rs = self.rope_scaling or {}
        if rs.get("type", rs.get("rope_type", "default")) != "default" and rs.get("mscale_all_dim"):
            m = yarn_mscale(rs["factor"], rs["mscale_all_dim"])
            scale *= m * m
        return scale

    @property
    def eos_ids(self) -> list[int]:
        e = self.eos_token_id
        return [] if e is None else [e] if isinstance(e, int) else list(e)

    # ---- Hugging Face config.json ------------------------------------------------------------------
    @classmethod
    def from_hf(cls, d: dict) -> "ModelConfig":
        """Build from a parsed config.json. Raises ConfigError naming the key that is missing or wrong."""
        model_type = d.get("model_type")
        if model_type is None:
            raise ConfigError("config.json has no 'model_type'; expected one of " + ", ".join(SUPPORTED_MODEL_TYPES))
        if model_type not in SUPPORTED_MODEL_TYPES:
            raise ConfigError(f"unknown model_type {model_type!r}; ds_core runs " + ", ".join(SUPPORTED_MODEL_TYPES))
        required = REQUIRED_KEYS + (REQUIRED_MOE_KEYS if d.get("n_routed_experts", 1) else ())
        for key in required:
            if key not in d:
                raise ConfigError(f"config.json is missing required key {key!r} (needed for {model_type})")
        known = {f.name for f in fields(cls)} - {"extra"}
        values = dict(_DEFAULTS[model_type])
        values.update({k: v for k, v in d.items() if k in known})
        values["model_type"] = model_type
        if model_type == "deepseek_v2":
            values["rope_interleave"] = True  # V2 always rotates interleaved pairs; it has no switch
        _read_rope(d, values)
        act = d.get("hidden_act", "silu")
        if act != "silu":
            raise ConfigError(f"hidden_act {act!r} is not supported; DeepSeek models use 'silu'")
        # num_key_value_heads is always num_attention_heads under MLA; to_hf writes it for transformers.
        skip = known | {"rope_parameters", "hidden_act", "architectures", "num_mtp_layers", "num_key_value_heads"}
        values["extra"] = {k: v for k, v in d.items() if k not in skip}
        cfg = cls(**values)
        cfg.validate()
        return cfg

    def to_hf(self) -> dict:
        """A config.json dict that both ds_core and transformers read back to the same model."""
        d = {k: v for k, v in asdict(self).items() if k != "extra"}
        d = {**self.extra, **d}
        d["architectures"] = [_ARCHITECTURES[self.model_type]]
        d["hidden_act"] = "silu"
        d["num_key_value_heads"] = self.num_attention_heads  # MLA: every head has its own K and V
        if self.model_type == "deepseek_v2":
            d.pop("rope_interleave")
        if self.rope_scaling is None:
            d.pop("rope_scaling")
        return d

    def validate(self) -> None:
        def need(ok: bool, msg: str) -> None:
            if not ok:
                raise ConfigError(msg)

        for name in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "kv_lora_rank",
                     "qk_rope_head_dim", "v_head_dim"):
            need(isinstance(getattr(self, name), int) and getattr(self, name) > 0,
                 f"{name} must be a positive integer, got {getattr(self, name)!r}")
        need(self.qk_rope_head_dim % 2 == 0, f"qk_rope_head_dim must be even, got {self.qk_rope_head_dim}")
        need(self.scoring_func in _TOPK_METHODS, f"scoring_func {self.scoring_func!r} is not one of sigmoid, softmax")
        need(self.topk_method in _TOPK_METHODS[self.scoring_func],
             f"topk_method {self.topk_method!r} does not go with scoring_func {self.scoring_func!r}; "
             f"allowed: {', '.join(_TOPK_METHODS[self.scoring_func])}")
        if self.has_moe:
            k, e = self.num_experts_per_tok, self.n_routed_experts
            need(isinstance(k, int) and 1 <= k <= e, f"num_experts_per_tok must be in 1..{e}, got {k!r}")
            if self.uses_groups:
                g, tg = self.n_group, self.topk_group
                need(e % g == 0, f"n_routed_experts ({e}) must be divisible by n_group ({g})")
                need(tg is not None and 1 <= tg <= g, f"topk_group must be in 1..{g}, got {tg!r}")
                need(tg * (e // g) >= k, f"topk_group={tg} groups of {e // g} experts cannot hold top-{k}")

    @property
    def uses_groups(self) -> bool:
        """Group-limited routing: only experts in the best topk_group of n_group groups may be chosen."""
        return (self.topk_method in ("noaux_tc", "group_limited_greedy")) and bool(self.n_group) and self.n_group > 1

    # ---- sizes a learner asks about -----------------------------------------------------------------
    def param_counts(self) -> dict[str, int]:
        """Parameter counts computed from the config alone (so they work for 671B without loading it).

        total: every weight in the model (MTP layers excluded). active: weights one token touches, i.e. total
        minus the routed experts it is not sent to.
        """
        d, h = self.hidden_size, self.num_attention_heads
        if self.q_lora_rank:
            q = d * self.q_lora_rank + self.q_lora_rank + self.q_lora_rank * h * self.qk_head_dim
        else:
            q = d * h * self.qk_head_dim
        kv = d * (self.kv_lora_rank + self.qk_rope_head_dim) + self.kv_lora_rank
        kv += self.kv_lora_rank * h * (self.qk_nope_head_dim + self.v_head_dim)
        attn = q + kv + h * self.v_head_dim * d
        if self.attention_bias:
            attn += (self.q_lora_rank or 0) + self.kv_lora_rank + self.qk_rope_head_dim + d
        mlp_bias = 1 if self.mlp_bias else 0

        def mlp(width: int) -> int:
            return 3 * d * width + mlp_bias * (2 * width + d)

        expert = mlp(self.moe_intermediate_size)
        total = active = 0
        for i in range(self.num_hidden_layers):
            layer = attn + 2 * d
            if self.is_moe_layer(i):
                router = self.n_routed_experts * d + (self.n_routed_experts if self.scoring_func == "sigmoid" else 0)
                shared = mlp(self.moe_intermediate_size * self.n_shared_experts) if self.n_shared_experts else 0
                total += layer + router + shared + self.n_routed_experts * expert
                active += layer + router + shared + self.num_experts_per_tok * expert
            else:
                total += layer + mlp(self.intermediate_size)
                active += layer + mlp(self.intermediate_size)
        embed = self.vocab_size * d * (1 if self.tie_word_embeddings else 2) + d
        return {"total": total + embed, "active": active + embed, "embeddings": embed}

    def kv_cache_numbers_per_token(self) -> dict[str, int]:
        """Numbers cached per token, all layers: per-head K and V (naive) vs latent plus rope key (absorbed)."""
        per_head = self.num_attention_heads * (self.qk_head_dim + self.v_head_dim)
        return {
            "naive": self.num_hidden_layers * per_head,
            "latent": self.num_hidden_layers * (self.kv_lora_rank + self.qk_rope_head_dim),
        }


def yarn_mscale(factor: float, mscale: float = 1.0) -> float:
    """YaRN's attention-temperature correction 0.1·mscale·ln(factor) + 1 (1 when the context is not stretched)."""
    return 1.0 if factor <= 1 else 0.1 * mscale * math.log(factor) + 1.0


def _read_rope(d: dict, values: dict) -> None:
    """Accept both spellings: legacy `rope_theta` + `rope_scaling`, and transformers 5's `rope_parameters`."""
    params = d.get("rope_parameters") or {}
    scaling = d.get("rope_scaling") or params  # transformers 5 may also have put rope_theta into rope_scaling
    if not isinstance(params, dict) or not isinstance(scaling, dict):
        raise ConfigError("rope_scaling / rope_parameters must be a JSON object, got "
                          f"{type(scaling if not isinstance(scaling, dict) else params).__name__}")
    theta = d.get("rope_theta", params.get("rope_theta", scaling.get("rope_theta", 10000.0)))
    values["rope_theta"] = float(theta)
    kind = scaling.get("type", scaling.get("rope_type", "default")) if scaling else "default"
    if kind == "default":
        values["rope_scaling"] = None
    elif kind == "yarn":
        if "factor" not in scaling:
            raise ConfigError("rope_scaling of type 'yarn' is missing required key 'factor'")
        values["rope_scaling"] = {"type": "yarn", **{k: v for k, v in scaling.items()
                                                     if k not in ("type", "rope_type", "rope_theta")}}
    else:
        raise ConfigError(f"rope scaling type {kind!r} is not supported; DeepSeek models use 'yarn' or none")
