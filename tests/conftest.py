"""Shared fixtures: tiny random checkpoints written by transformers (the reference), and a tokenizer.

Each config exercises one DeepSeek feature; weights are random with a spread large enough that routing,
rope and attention all matter to the logits.
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path

# Two xdist workers (and the notebook kernels they start, which inherit this) share 2 cores: OpenMP threads
# that spin while waiting starve each other's work, measured 5-10x slower. Set before torch starts OpenMP.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest
import torch

VOCAB = 320
CORPUS = [
    "Once upon a time a fox named Ada found a red key under the old bridge.",
    "The key opened a small door, and behind the door was a garden full of bells.",
    "\"Who rings these bells?\" asked Ada. Nobody answered, so she rang one herself.",
    "Tom the heron laughed. 'Every bell has a story,' he said, and told her three.",
] * 20

BASE = dict(
    vocab_size=VOCAB, hidden_size=64, intermediate_size=96, moe_intermediate_size=24, num_hidden_layers=3,
    num_attention_heads=4, num_key_value_heads=4, kv_lora_rank=32, qk_nope_head_dim=16, qk_rope_head_dim=8,
    v_head_dim=16, n_routed_experts=8, num_experts_per_tok=2, first_k_dense_replace=1, max_position_embeddings=256,
    bos_token_id=0, eos_token_id=1, pad_token_id=None, tie_word_embeddings=False, num_nextn_predict_layers=0,
)
CONFIGS = {
    "v3_qlora": dict(model_type="deepseek_v3", q_lora_rank=48, n_group=1, topk_group=1, n_shared_experts=1,
                     routed_scaling_factor=2.5, norm_topk_prob=True),
    "v3_groups": dict(model_type="deepseek_v3", q_lora_rank=48, n_group=4, topk_group=2, num_experts_per_tok=3,
                      n_shared_experts=1, routed_scaling_factor=1.5, norm_topk_prob=True),
    "v3_yarn": dict(model_type="deepseek_v3", q_lora_rank=48, n_group=2, topk_group=1, n_shared_experts=1,
                    rope_scaling={"type": "yarn", "factor": 4.0, "original_max_position_embeddings": 64,
                                  "beta_fast": 32, "beta_slow": 1, "mscale": 0.707, "mscale_all_dim": 1.0}),
    "v2_lite": dict(model_type="deepseek_v2", q_lora_rank=None, n_shared_experts=2, topk_method="greedy",
                    norm_topk_prob=False, routed_scaling_factor=1.0),
}


def make_reference(name: str, path: Path, seed: int = 0):
    """Build a transformers DeepSeek model for CONFIGS[name], randomise it, save it to path, return it."""
    from transformers import AutoConfig, AutoModelForCausalLM

    spec = copy.deepcopy({**BASE, **CONFIGS[name]})  # transformers edits nested dicts in place
    cfg = AutoConfig.for_model(**spec)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(cfg).eval()
    with torch.no_grad():
        for pname, p in model.named_parameters():
            if "norm" in pname:
                p.copy_(1 + 0.2 * torch.randn_like(p))
            else:
                p.normal_(0, 0.15)
        for mod_name, buf in model.named_buffers():
            if mod_name.endswith("e_score_correction_bias"):
                buf.copy_(0.3 * torch.randn_like(buf))  # non-zero: it must steer the choice, not the weights
    model.save_pretrained(path)
    write_tokenizer(path)
    return model


def write_tokenizer(path: Path) -> None:
    """A byte-level BPE tokenizer with VOCAB tokens, trained here with the `tokenizers` library."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB, special_tokens=["<bos>", "<eos>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tk.train_from_iterator(CORPUS, trainer)
    tk.save(str(path / "tokenizer.json"))
    (path / "tokenizer_config.json").write_text(json.dumps(
        {"bos_token": "<bos>", "eos_token": "<eos>", "add_bos_token": True,
         "tokenizer_class": "PreTrainedTokenizerFast"}))


@pytest.fixture(scope="session")
def reference_checkpoints(tmp_path_factory):
    """name -> (directory, transformers model) for every config in CONFIGS."""
    out = {}
    for name in CONFIGS:
        path = tmp_path_factory.mktemp(name)
        out[name] = (path, make_reference(name, path))
    return out


@pytest.fixture(scope="session")
def tiny_checkpoint(reference_checkpoints) -> Path:
    """One small V3 checkpoint directory (with tokenizer) for tests that need any model."""
    return reference_checkpoints["v3_groups"][0]


@pytest.fixture(scope="module")
def client(tiny_checkpoint):
    """The app served on the tiny checkpoint, through gradio_client (one server per test module)."""
    from tab_helpers import served

    with served(tiny_checkpoint) as c:
        yield c
