"""The published DeepSeek models every lab compares against, known by the config.json fields that fix their shape
(never downloaded): DeepSeek-V2-Lite, V2 and V3 as ModelConfigs, and the dense DeepSeek LLM 67B, each with its source.

    REFERENCE_CONFIGS["DeepSeek-V3"].config      # a ModelConfig, as ModelConfig.from_hf reads the real config.json
    DEEPSEEK_67B.kv_numbers_per_token()
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from ..config import ModelConfig


@dataclass(frozen=True)
class ReferenceModel:
    """A published model known by its config.json fields (never downloaded): the ones that fix its shape."""

    name: str
    source: str                # where the fields are from
    fields: dict[str, Any]

    @property
    def config(self) -> ModelConfig:
        return ModelConfig.from_hf(copy.deepcopy(self.fields))  # from_hf keeps nested dicts: give it a copy


_V2_COMMON = dict(model_type="deepseek_v2", vocab_size=102400, kv_lora_rank=512, qk_nope_head_dim=128,
                  qk_rope_head_dim=64, v_head_dim=128, first_k_dense_replace=1, n_shared_experts=2,
                  num_experts_per_tok=6, max_position_embeddings=163840,
                  rope_scaling={"type": "yarn", "factor": 40, "original_max_position_embeddings": 4096,
                                "beta_fast": 32, "beta_slow": 1, "mscale": 0.707, "mscale_all_dim": 0.707})
REFERENCE_CONFIGS = {
    "DeepSeek-V2-Lite": ReferenceModel(
        "DeepSeek-V2-Lite", "https://huggingface.co/deepseek-ai/DeepSeek-V2-Lite/blob/main/config.json",
        dict(_V2_COMMON, hidden_size=2048, num_hidden_layers=27, num_attention_heads=16, q_lora_rank=None,
             intermediate_size=10944, moe_intermediate_size=1408, n_routed_experts=64, n_group=1, topk_group=1,
             topk_method="greedy", routed_scaling_factor=1.0)),
    "DeepSeek-V2": ReferenceModel(
        "DeepSeek-V2", "https://huggingface.co/deepseek-ai/DeepSeek-V2/blob/main/config.json",
        dict(_V2_COMMON, hidden_size=5120, num_hidden_layers=60, num_attention_heads=128, q_lora_rank=1536,
             intermediate_size=12288, moe_intermediate_size=1536, n_routed_experts=160, n_group=8, topk_group=3,
             topk_method="group_limited_greedy", routed_scaling_factor=16.0)),
    "DeepSeek-V3": ReferenceModel(
        "DeepSeek-V3", "https://huggingface.co/deepseek-ai/DeepSeek-V3/blob/main/config.json",
        dict(model_type="deepseek_v3", vocab_size=129280, hidden_size=7168, intermediate_size=18432,
             moe_intermediate_size=2048, num_hidden_layers=61, num_attention_heads=128, q_lora_rank=1536,
             kv_lora_rank=512, qk_nope_head_dim=128, qk_rope_head_dim=64, v_head_dim=128, n_routed_experts=256,
             n_shared_experts=1, num_experts_per_tok=8, n_group=8, topk_group=4, first_k_dense_replace=3,
             moe_layer_freq=1, scoring_func="sigmoid", topk_method="noaux_tc", routed_scaling_factor=2.5,
             norm_topk_prob=True, num_nextn_predict_layers=1, max_position_embeddings=163840,
             rope_scaling={"type": "yarn", "factor": 40, "original_max_position_embeddings": 4096, "beta_fast": 32,
                           "beta_slow": 1, "mscale": 1.0, "mscale_all_dim": 1.0})),
}


@dataclass(frozen=True)
class DenseModel:
    """A model with plain (not latent) attention, Llama-style, known by the config.json fields that size its
    KV cache: per token and layer it keeps num_key_value_heads keys and values of hidden_size/heads numbers."""

    name: str
    source: str
    num_hidden_layers: int
    hidden_size: int
    num_attention_heads: int
    num_key_value_heads: int

    def kv_numbers_per_token(self) -> int:
        """Numbers cached per token, all layers: L · 2 (K and V) · kv_heads · head_dim."""
        head_dim = self.hidden_size // self.num_attention_heads
        return self.num_hidden_layers * 2 * self.num_key_value_heads * head_dim


# The dense model DeepSeek-V2's paper compares against ("reduces the KV cache by 93.3%"): a GQA model, 8 KV heads.
DEEPSEEK_67B = DenseModel("DeepSeek LLM 67B", "https://huggingface.co/deepseek-ai/deepseek-llm-67b-base/blob/main/"
                          "config.json (and the DeepSeek LLM paper, arXiv:2401.02954)", num_hidden_layers=95,
                          hidden_size=8192, num_attention_heads=64, num_key_value_heads=8)
