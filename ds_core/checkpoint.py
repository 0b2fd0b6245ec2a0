"""Hugging Face checkpoint directories in and out: config.json plus safetensors (one file or index + shards).

Loading checks everything before it materialises anything: files present and readable, config complete, every
tensor the architecture needs present with its shape, nothing left over. Any problem raises one
CheckpointError that names it, so a model is never half-loaded. Only safetensors are read: pickle files
(pytorch_model.bin, *.pt) can run code when loaded and are refused.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from .checks import DTYPES
from .config import ConfigError, ModelConfig

log = logging.getLogger(__name__)

SINGLE_FILE, INDEX_FILE = "model.safetensors", "model.safetensors.index.json"
_LAYER = re.compile(r"^model\.layers\.(\d+)\.")
_KEEP_FP32 = ("e_score_correction_bias",)  # the balancing bias stays fp32 in every dtype, as in transformers


class CheckpointError(ValueError):
    """The directory is not a checkpoint ds_core can load; the message says what is wrong."""


def read_config(path: str | Path) -> ModelConfig:
    path = _checkpoint_dir(path)
    file = path / "config.json"
    if not file.is_file():
        raise CheckpointError(f"missing file: {file} (a Hugging Face checkpoint directory has a config.json)")
    try:
        raw = json.loads(file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{file} is not valid JSON: {e}") from None
    if "quantization_config" in raw:
        raise CheckpointError(f"{file} describes a quantized checkpoint ({raw['quantization_config'].get('quant_method')});"
                              " ds_core loads bf16/fp16/fp32 weights: dequantize it first")
    try:
        return ModelConfig.from_hf(raw)
    except ConfigError as e:
        raise CheckpointError(f"{file}: {e}") from None


def weight_files(path: str | Path) -> dict[str, Path]:
    """Tensor name on disk -> the safetensors file that holds it (from the index when sharded)."""
    path = _checkpoint_dir(path)
    if (path / INDEX_FILE).is_file():
        try:
            weight_map = json.loads((path / INDEX_FILE).read_text())["weight_map"]
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as e:
            raise CheckpointError(f"{path / INDEX_FILE} is not a valid safetensors index "
                                  f"(a JSON object with a 'weight_map'): {e}") from None
        if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
            raise CheckpointError(f"{path / INDEX_FILE}: 'weight_map' must map tensor names to shard file names")
        for shard in sorted(set(weight_map.values())):
            if not (path / shard).is_file():
                raise CheckpointError(f"missing file: {path / shard} (listed in {INDEX_FILE})")
        return {name: path / shard for name, shard in weight_map.items()}
    if (path / SINGLE_FILE).is_file():
        with _open(path / SINGLE_FILE) as f:
            return {name: path / SINGLE_FILE for name in f.keys()}
    pickles = sorted(p.name for p in path.iterdir() if p.suffix in (".bin", ".pt", ".pth", ".ckpt"))
    hint = f"; found only pickle files ({', '.join(pickles)}), which ds_core never loads" if pickles else ""
    raise CheckpointError(f"missing file: {path / SINGLE_FILE} (or {INDEX_FILE} with shards){hint}")


def load_model(cls, path: str | Path, device="cpu", dtype: torch.dtype = torch.float32):
    """Validate the checkpoint completely, then build `cls(config)` with its weights on device in dtype."""
    if dtype not in DTYPES.values():
        raise ValueError(f"dtype must be one of {', '.join(map(str, DTYPES.values()))}, got {dtype}")
    cfg = read_config(path)
    files = weight_files(path)
    with torch.device("meta"):
        model = cls(cfg)
    expected = {name: tuple(t.shape) for name, t in _named_weights(model).items()}

    on_disk: dict[str, tuple[Path, str]] = {}
    skipped = 0
    for disk_name, file in files.items():
        m = _LAYER.match(disk_name)
        if m and int(m.group(1)) >= cfg.num_hidden_layers and cfg.num_nextn_predict_layers:
            skipped += 1  # multi-token-prediction layers: a training aid, not needed to run the model
            continue
        on_disk[_to_module_name(disk_name)] = (file, disk_name)
    if skipped:
        log.info("skipped %d tensors of %d multi-token-prediction layer(s): ds_core predicts one token at a time",
                 skipped, cfg.num_nextn_predict_layers)

    missing = sorted(set(expected) - set(on_disk))
    unexpected = sorted(on_disk[n][1] for n in set(on_disk) - set(expected))
    if missing:
        raise CheckpointError(f"{path}: missing tensor(s) {_list(_to_disk_name(n) for n in missing)}")
    if unexpected:
        raise CheckpointError(f"{path}: unexpected tensor(s) {_list(unexpected)} (not part of this config's model)")

    by_file: dict[Path, list[str]] = {}
    for name, (file, _) in on_disk.items():
        by_file.setdefault(file, []).append(name)
    for file, names in by_file.items():
        with _open(file) as f:
            in_file = set(f.keys())
            for name in names:
                if on_disk[name][1] not in in_file:
                    raise CheckpointError(f"{file}: has no tensor {on_disk[name][1]}, though {INDEX_FILE} "
                                          "lists it there")
                shape = tuple(f.get_slice(on_disk[name][1]).get_shape())
                if shape != expected[name]:
                    raise CheckpointError(f"{file.name}: tensor {on_disk[name][1]} has shape {list(shape)}, "
                                          f"expected {list(expected[name])} for this config")

    state = {}
    for file, names in by_file.items():
        with _open(file) as f:
            for name in names:
                try:
                    t = f.get_tensor(on_disk[name][1])
                except (SafetensorError, RuntimeError, OSError) as e:
                    raise CheckpointError(f"{file}: cannot read tensor {on_disk[name][1]} ({e}); "
                                          "the file is truncated or corrupt") from None
                keep = name.endswith(_KEEP_FP32) or not t.is_floating_point()
                state[name] = t.to(device=device, dtype=None if keep else dtype)
    model.load_state_dict(state, strict=False, assign=True)
    if cfg.tie_word_embeddings:
        model.lm_head.weight = model.embed_tokens.weight
    model.rotary.to(device)
    model.requires_grad_(False)
    return model.eval()


def save_model(model, path: str | Path) -> None:
    """config.json + model.safetensors + generation_config.json, in DeepSeek's on-disk names."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    cfg = model.config
    tensors = {_to_disk_name(n): t.detach().contiguous().cpu() for n, t in _named_weights(model).items()}
    save_file(tensors, path / SINGLE_FILE, metadata={"format": "pt"})
    config = cfg.to_hf()
    config["torch_dtype"] = str(model.dtype).removeprefix("torch.")
    (path / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    gen = {k: getattr(cfg, k) for k in ("bos_token_id", "eos_token_id", "pad_token_id") if getattr(cfg, k) is not None}
    (path / "generation_config.json").write_text(json.dumps(gen, indent=2) + "\n")


# ---- helpers ----------------------------------------------------------------------------------------
def _checkpoint_dir(path: str | Path) -> Path:
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint directory {path} does not exist")
    if not path.is_dir():
        raise CheckpointError(f"{path} is a file; give the checkpoint directory (with config.json and safetensors)")
    return path


def _open(file: Path):
    try:
        return safe_open(str(file), framework="pt")
    except (SafetensorError, OSError, RuntimeError) as e:
        raise CheckpointError(f"{file} is not a readable safetensors file: {_diagnose(file) or e}") from None


def _diagnose(file: Path) -> str | None:
    """Why safetensors refused a file, in words: truncated header, truncated data, or not safetensors at all.

    Layout: 8-byte little-endian header length N, N bytes of JSON header, then the tensors' bytes, whose
    extent the header's data_offsets give.
    """
    try:
        size = file.stat().st_size
        with open(file, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                return f"the file is {size} bytes, too short to hold the 8-byte header length (truncated?)"
            n = int.from_bytes(head, "little")
            if n > size - 8:
                if n > 100_000_000:
                    return f"its first 8 bytes give a header length of {n} bytes: not a safetensors file"
                return (f"truncated in its header: the header should be {n} bytes but the file ends "
                        f"{size - 8} bytes after the length field")
            header = json.loads(f.read(n))
        end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
        if 8 + n + end > size:
            return (f"truncated in its data: the header lists tensors up to byte {8 + n + end} "
                    f"but the file has only {size} bytes")
    except (OSError, ValueError, KeyError, TypeError, IndexError, AttributeError):
        return None
    return None


def _named_weights(model) -> dict[str, torch.Tensor]:
    """Parameters and persistent buffers, without the tied lm_head (the checkpoint stores it once)."""
    weights = dict(model.state_dict())
    if model.config.tie_word_embeddings:
        weights.pop("lm_head.weight")
    return weights


def _to_module_name(disk_name: str) -> str:
    return disk_name.removeprefix("model.")


def _to_disk_name(name: str) -> str:
    return name if name.startswith("lm_head.") else "model." + name


def _list(names) -> str:
    names = list(names)
    shown = ", ".join(names[:8])
    return shown + (f" and {len(names) - 8} more" if len(names) > 8 else "")
