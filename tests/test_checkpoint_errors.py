"""Every way a checkpoint directory can be broken gives one CheckpointError that names the problem.

Each test copies the good `tiny_checkpoint` (written by transformers) into tmp_path, breaks one thing and checks
the message says what and where. The last tests check what must *not* fail: sharded checkpoints and DeepSeek's
multi-token-prediction layers.
"""

from __future__ import annotations

import json
import logging
import pickle
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from ds_core import CheckpointError, DeepSeekModel
from ds_core.checkpoint import INDEX_FILE, SINGLE_FILE, read_config, weight_files

IDS = torch.tensor([[0, 5, 17, 42, 99, 3, 250, 7]])


@pytest.fixture
def ckpt(tiny_checkpoint, tmp_path) -> Path:
    """A private, good copy of the tiny checkpoint to break."""
    dst = tmp_path / "ckpt"
    shutil.copytree(tiny_checkpoint, dst)
    return dst


def load(path):
    return DeepSeekModel.from_pretrained(path)


def error_of(path) -> str:
    with pytest.raises(CheckpointError) as info:
        load(path)
    return str(info.value)


def edit_config(path: Path, **changes) -> None:
    file = path / "config.json"
    cfg = json.loads(file.read_text())
    for k, v in changes.items():
        if v is None:
            cfg.pop(k)
        else:
            cfg[k] = v
    file.write_text(json.dumps(cfg))


def rewrite_tensors(path: Path, edit) -> None:
    """Load model.safetensors, let edit(dict) change it, write it back."""
    tensors = load_file(path / SINGLE_FILE)
    edit(tensors)
    save_file(tensors, path / SINGLE_FILE, metadata={"format": "pt"})


def assert_same_model(a, b) -> None:
    """Bit-identical weights, and logits equal up to float rounding (a matmul's last bits may depend on where
    the weights sit in memory, which the file layout changes)."""
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for name in sa:
        assert torch.equal(sa[name], sb[name]), name
    with torch.no_grad():
        torch.testing.assert_close(a(IDS), b(IDS), rtol=0, atol=1e-5)


def header_length(file: Path) -> int:
    return int.from_bytes(file.read_bytes()[:8], "little")


# ---- the directory and its config --------------------------------------------------------------------------
def test_good_copy_loads(ckpt):
    assert load(ckpt)(IDS).shape == (1, IDS.shape[1], 320)


def test_missing_directory(tmp_path):
    msg = error_of(tmp_path / "nowhere")
    assert "nowhere" in msg and "does not exist" in msg


def test_file_instead_of_directory(ckpt):
    msg = error_of(ckpt / "config.json")
    assert "config.json" in msg and "is a file" in msg and "directory" in msg


def test_missing_config(ckpt):
    (ckpt / "config.json").unlink()
    msg = error_of(ckpt)
    assert "missing file" in msg and "config.json" in msg


def test_invalid_json(ckpt):
    (ckpt / "config.json").write_text('{"model_type": "deepseek_v3", "hidden_size": 64,')
    msg = error_of(ckpt)
    assert "config.json" in msg and "not valid JSON" in msg and "line 1" in msg


def test_missing_required_key(ckpt):
    edit_config(ckpt, kv_lora_rank=None)
    msg = error_of(ckpt)
    assert "'kv_lora_rank'" in msg and "missing required key" in msg


def test_missing_model_type(ckpt):
    edit_config(ckpt, model_type=None)
    msg = error_of(ckpt)
    assert "model_type" in msg and "deepseek_v3" in msg and "deepseek_v2" in msg


def test_unknown_model_type(ckpt):
    edit_config(ckpt, model_type="llama")
    msg = error_of(ckpt)
    assert "'llama'" in msg and "deepseek_v3" in msg and "deepseek_v2" in msg


def test_invalid_config_value(ckpt):
    edit_config(ckpt, num_experts_per_tok=9)  # 8 experts
    msg = error_of(ckpt)
    assert "num_experts_per_tok" in msg and "1..8" in msg and "9" in msg


def test_quantized_checkpoint_refused(ckpt):
    edit_config(ckpt, quantization_config={"quant_method": "fp8", "weight_block_size": [128, 128]})
    msg = error_of(ckpt)
    assert "quantized" in msg and "fp8" in msg and "dequantize" in msg


def test_read_config_needs_no_weights(ckpt):
    (ckpt / SINGLE_FILE).unlink()
    assert read_config(ckpt).kv_lora_rank == 32


# ---- weight files ------------------------------------------------------------------------------------------
def test_missing_safetensors(ckpt):
    (ckpt / SINGLE_FILE).unlink()
    msg = error_of(ckpt)
    assert "missing file" in msg and SINGLE_FILE in msg and INDEX_FILE in msg
    assert "pickle" not in msg  # nothing else was there


def test_pytorch_bin_refused_never_unpickled(ckpt):
    """A pickle can run code when loaded: this one would create a file. It must be named and left alone."""
    (ckpt / SINGLE_FILE).unlink()
    marker = ckpt / "UNPICKLED"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    (ckpt / "pytorch_model.bin").write_bytes(pickle.dumps(Payload()))
    msg = error_of(ckpt)
    assert "pytorch_model.bin" in msg and "pickle" in msg and "never loads" in msg
    assert not marker.exists()


def test_missing_tensor(ckpt):
    name = "model.layers.1.self_attn.kv_b_proj.weight"
    rewrite_tensors(ckpt, lambda t: t.pop(name))
    msg = error_of(ckpt)
    assert "missing tensor" in msg and name in msg


def test_many_missing_tensors_are_summarised(ckpt):
    def drop_layer_2(t):
        for k in [k for k in t if k.startswith("model.layers.2.")]:
            t.pop(k)

    rewrite_tensors(ckpt, drop_layer_2)
    msg = error_of(ckpt)
    assert "missing tensor" in msg and "model.layers.2." in msg and "more" in msg and len(msg) < 1000


def test_unexpected_tensor(ckpt):
    rewrite_tensors(ckpt, lambda t: t.update({"model.layers.0.mlp.extra_proj.weight": torch.zeros(3, 3)}))
    msg = error_of(ckpt)
    assert "unexpected tensor" in msg and "model.layers.0.mlp.extra_proj.weight" in msg


def test_layer_beyond_num_hidden_layers_without_mtp_is_unexpected(ckpt):
    rewrite_tensors(ckpt, lambda t: t.update({"model.layers.3.input_layernorm.weight": torch.ones(64)}))
    msg = error_of(ckpt)
    assert "unexpected tensor" in msg and "model.layers.3.input_layernorm.weight" in msg


def test_wrong_shape(ckpt):
    name = "model.layers.0.self_attn.kv_a_proj_with_mqa.weight"  # [kv_lora_rank + rope, hidden] = [40, 64]
    rewrite_tensors(ckpt, lambda t: t.update({name: torch.zeros(36, 64)}))
    msg = error_of(ckpt)
    assert name in msg and "[36, 64]" in msg and "expected [40, 64]" in msg


def test_truncated_in_data(ckpt):
    file = ckpt / SINGLE_FILE
    data = file.read_bytes()
    data_start = 8 + header_length(file)
    cut = data_start + (len(data) - data_start) // 2
    file.write_bytes(data[:cut])
    msg = error_of(ckpt)
    assert SINGLE_FILE in msg and "truncated in its data" in msg
    assert f"only {cut} bytes" in msg and str(len(data)) in msg


def test_truncated_in_header(ckpt):
    file = ckpt / SINGLE_FILE
    data = file.read_bytes()
    n = header_length(file)
    file.write_bytes(data[:8 + n // 2])
    msg = error_of(ckpt)
    assert SINGLE_FILE in msg and "truncated in its header" in msg and f"{n} bytes" in msg


def test_truncated_in_header_length(ckpt):
    file = ckpt / SINGLE_FILE
    file.write_bytes(file.read_bytes()[:5])
    msg = error_of(ckpt)
    assert SINGLE_FILE in msg and "5 bytes" in msg and "truncated" in msg


def test_not_safetensors_at_all(ckpt):
    (ckpt / SINGLE_FILE).write_text("version https://git-lfs.github.com/spec/v1\noid sha256:0123\nsize 807328\n")
    msg = error_of(ckpt)
    assert SINGLE_FILE in msg and "not a safetensors file" in msg


# ---- sharded checkpoints -----------------------------------------------------------------------------------
@pytest.fixture
def sharded(reference_checkpoints, tmp_path) -> Path:
    """The same model as tiny_checkpoint, saved by transformers in several shards with an index."""
    path, model = reference_checkpoints["v3_groups"]
    dst = tmp_path / "sharded"
    model.save_pretrained(dst, max_shard_size="200KB")
    shutil.copy(path / "config.json", dst / "config.json")
    return dst


def shards(path: Path) -> list[str]:
    return sorted(set(json.loads((path / INDEX_FILE).read_text())["weight_map"].values()))


def test_sharded_loads_and_equals_single_file(sharded, tiny_checkpoint):
    assert not (sharded / SINGLE_FILE).exists() and len(shards(sharded)) >= 3
    assert len(set(weight_files(sharded).values())) == len(shards(sharded))
    assert_same_model(load(sharded), load(tiny_checkpoint))


def test_sharded_missing_shard(sharded):
    gone = shards(sharded)[1]
    (sharded / gone).unlink()
    msg = error_of(sharded)
    assert "missing file" in msg and gone in msg and INDEX_FILE in msg


def test_sharded_truncated_shard(sharded):
    victim = sharded / shards(sharded)[-1]
    data = victim.read_bytes()
    victim.write_bytes(data[: len(data) - 100])
    msg = error_of(sharded)
    assert victim.name in msg and "truncated in its data" in msg


def test_sharded_index_lists_tensor_shard_lacks(sharded):
    index = json.loads((sharded / INDEX_FILE).read_text())
    name = "model.norm.weight"
    first, other = shards(sharded)[0], shards(sharded)[1]
    index["weight_map"][name] = other if index["weight_map"][name] == first else first
    (sharded / INDEX_FILE).write_text(json.dumps(index))
    msg = error_of(sharded)
    assert name in msg and "has no tensor" in msg and INDEX_FILE in msg


def test_sharded_bad_index(sharded):
    (sharded / INDEX_FILE).write_text(json.dumps({"metadata": {}}))
    msg = error_of(sharded)
    assert INDEX_FILE in msg and "weight_map" in msg


# ---- multi-token prediction --------------------------------------------------------------------------------
def test_mtp_layers_are_skipped_with_a_note(ckpt, tiny_checkpoint, caplog):
    """DeepSeek-V3 ships one MTP layer as model.layers.{num_hidden_layers}.*: not needed to run, so skipped."""
    n_layers = json.loads((ckpt / "config.json").read_text())["num_hidden_layers"]
    edit_config(ckpt, num_nextn_predict_layers=1)

    def add_mtp(t):
        for k in [k for k in t if k.startswith(f"model.layers.{n_layers - 1}.")]:
            t[k.replace(f"layers.{n_layers - 1}.", f"layers.{n_layers}.")] = t[k].clone()
        t[f"model.layers.{n_layers}.eh_proj.weight"] = torch.zeros(64, 128)
        t[f"model.layers.{n_layers}.enorm.weight"] = torch.ones(64)
        t[f"model.layers.{n_layers}.hnorm.weight"] = torch.ones(64)
        t[f"model.layers.{n_layers}.shared_head.norm.weight"] = torch.ones(64)

    rewrite_tensors(ckpt, add_mtp)
    with caplog.at_level(logging.INFO, logger="ds_core.checkpoint"):
        model = load(ckpt)
    notes = [r.getMessage() for r in caplog.records if r.name == "ds_core.checkpoint"]
    assert any("multi-token-prediction" in m and "skipped" in m for m in notes), notes
    assert len(model.layers) == n_layers
    assert_same_model(model, load(tiny_checkpoint))
