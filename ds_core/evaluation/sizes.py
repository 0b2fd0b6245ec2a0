"""What a checkpoint is, from its config.json alone: architecture, parameter counts, KV-cache size per token.

Nothing here loads weights, so it answers for DeepSeek-V3 671B as quickly as for the shipped tiny model. Each
function returns plain dicts or strings; the CLI (`python -m ds_core inspect PATH`) prints them and the app can
show the same numbers.

    from ds_core.evaluation.sizes import summary, report
    summary("assets/ds-tiny")["params"]["total"]
    print(report("assets/ds-tiny", dtype="bf16"))
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Any, Mapping

from ..checks import DTYPES, dtype_name
from ..config import ModelConfig
from ..viz.text import human_bytes, human_count, table


# The architecture fields a reader looks at, in the order they matter; (key, what it is).
ARCHITECTURE_FIELDS = (
    ("model_type", "model family"),
    ("vocab_size", "tokens in the vocabulary"),
    ("hidden_size", "width d of the residual stream"),
    ("num_hidden_layers", "decoder layers (MTP layers not counted)"),
    ("num_attention_heads", "attention heads h"),
    ("q_lora_rank", "query down-projection rank (None: direct q_proj)"),
    ("kv_lora_rank", "MLA latent width c_KV"),
    ("qk_nope_head_dim", "per-head q/k dims without rope"),
    ("qk_rope_head_dim", "per-head q/k rope dims (one rope key shared by all heads)"),
    ("v_head_dim", "per-head value dims"),
    ("intermediate_size", "dense MLP width"),
    ("first_k_dense_replace", "leading layers with a dense MLP"),
    ("moe_layer_freq", "every n-th later layer is MoE"),
    ("moe_intermediate_size", "width of one routed expert"),
    ("n_routed_experts", "routed experts per MoE layer"),
    ("n_shared_experts", "shared experts per MoE layer"),
    ("num_experts_per_tok", "routed experts each token uses (top-k)"),
    ("n_group", "expert groups"),
    ("topk_group", "groups a token may route into"),
    ("scoring_func", "router affinity"),
    ("topk_method", "routing method"),
    ("norm_topk_prob", "gate weights renormalised to sum 1"),
    ("routed_scaling_factor", "gate weights scaled by"),
    ("max_position_embeddings", "context length"),
    ("rope_theta", "rope base"),
    ("rope_scaling", "context extension (YaRN)"),
    ("tie_word_embeddings", "lm_head shares the embedding matrix"),
    ("num_nextn_predict_layers", "multi-token-prediction layers (skipped when running)"),
)
_MOE_ONLY = {"first_k_dense_replace", "moe_layer_freq", "moe_intermediate_size", "n_shared_experts",
             "num_experts_per_tok", "n_group", "topk_group", "scoring_func", "topk_method", "norm_topk_prob",
             "routed_scaling_factor"}


def as_config(source: str | Path | ModelConfig) -> ModelConfig:
    """A ModelConfig, or a checkpoint directory whose config.json is read (weights are never opened)."""
    if isinstance(source, ModelConfig):
        return source
    from ..checkpoint import read_config
    return read_config(source)


# ---- numbers --------------------------------------------------------------------------------------------
def architecture(source: str | Path | ModelConfig) -> dict[str, Any]:
    """field -> value for ARCHITECTURE_FIELDS (MoE fields left out for a model without routed experts)."""
    cfg = as_config(source)
    return {key: getattr(cfg, key) for key, _ in ARCHITECTURE_FIELDS if cfg.has_moe or key not in _MOE_ONLY}


def param_summary(source: str | Path | ModelConfig) -> dict[str, Any]:
    """total / active / embeddings parameter counts (ModelConfig.param_counts) and active as a share of total."""
    cfg = as_config(source)
    counts = cfg.param_counts()
    moe_layers = sum(cfg.is_moe_layer(i) for i in range(cfg.num_hidden_layers))
    return {**counts, "active_fraction": counts["active"] / counts["total"], "moe_layers": moe_layers}


def kv_cache_summary(source: str | Path | ModelConfig, dtype: Any = "bf16") -> dict[str, Any]:
    """Per token, all layers: numbers and bytes the naive cache (per-head K and V) and the latent cache keep.

    naive per layer = h·(qk_nope + qk_rope + v); latent per layer = kv_lora_rank + qk_rope_head_dim.
    """
    cfg = as_config(source)
    name = dtype_name(dtype)
    size = DTYPES[name].itemsize
    numbers = cfg.kv_cache_numbers_per_token()
    L = cfg.num_hidden_layers
    return {
        "dtype": name,
        "bytes_per_number": size,
        "naive_numbers": numbers["naive"],
        "latent_numbers": numbers["latent"],
        "naive_numbers_per_layer": numbers["naive"] // L,
        "latent_numbers_per_layer": numbers["latent"] // L,
        "naive_bytes": numbers["naive"] * size,
        "latent_bytes": numbers["latent"] * size,
        "ratio": numbers["naive"] / numbers["latent"],
    }


def summary(source: str | Path | ModelConfig, dtype: Any = "bf16") -> dict[str, Any]:
    """Everything `report` prints, as data."""
    cfg = as_config(source)
    return {"architecture": architecture(cfg), "params": param_summary(cfg), "kv_cache": kv_cache_summary(cfg, dtype)}


def report(source: str | Path | ModelConfig, dtype: Any = "bf16") -> str:
    """The text `python -m ds_core inspect PATH` prints."""
    cfg = as_config(source)
    info = summary(cfg, dtype)
    notes = dict(ARCHITECTURE_FIELDS)
    lines = []
    if not isinstance(source, ModelConfig):
        lines += [f"checkpoint: {source}", ""]
    lines += ["architecture", table(((k, _show(k, v), notes[k]) for k, v in info["architecture"].items()), align="lrl"), ""]

    p = info["params"]
    lines += ["parameters (from config.json; MTP layers excluded)", table([
        ("total", human_count(p["total"]), f"{p['total']:,}"),
        ("active per token", human_count(p["active"]), f"{p['active']:,}",
         f"{100 * p['active_fraction']:.1f}% of total"),
        ("embeddings + lm_head", human_count(p["embeddings"]), f"{p['embeddings']:,}"),
    ], align="lrr"), ""]

    kv = info["kv_cache"]
    L = cfg.num_hidden_layers
    lines += [f"KV cache per token, {L} layers, {kv['dtype']} ({kv['bytes_per_number']} bytes per number)", table([
        ("naive (per-head K and V)", f"{kv['naive_numbers']:,} numbers", human_bytes(kv["naive_bytes"]),
         f"{kv['naive_numbers_per_layer']:,} per layer = {cfg.num_attention_heads}·({cfg.qk_head_dim}+{cfg.v_head_dim})"),
        ("latent (MLA c_KV + k_rope)", f"{kv['latent_numbers']:,} numbers", human_bytes(kv["latent_bytes"]),
         f"{kv['latent_numbers_per_layer']:,} per layer = {cfg.kv_lora_rank}+{cfg.qk_rope_head_dim}"),
    ], align="lrrl"), f"latent cache is {kv['ratio']:.1f}x smaller than the naive one"]
    return "\n".join(lines)


# ---- python -m ds_core inspect ----------------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = "Read only config.json (no weights), so it works for any model size."
    parser.add_argument("path", metavar="PATH", help="checkpoint directory")
    parser.add_argument("--dtype", choices=tuple(DTYPES), default="bf16",
                        help="dtype of the KV cache for the byte counts (default bf16)")


def run(args: argparse.Namespace) -> None:
    print(report(args.path, dtype=args.dtype))


def _show(key: str, value: Any) -> Any:
    if key == "rope_scaling" and isinstance(value, dict):
        kind, factor = value.get("type", "?"), value.get("factor")
        orig = value.get("original_max_position_embeddings")
        return f"{kind} x{factor:g}" + (f" from {orig}" if orig else "")
    return value


# ---- rows for tables (the app's Model tab shows these) ----------------------------------------------------
def architecture_rows(source: str | Path | ModelConfig) -> list[tuple[str, Any, str]]:
    """(field, value as shown, what it is) for each field of `architecture`, in ARCHITECTURE_FIELDS order.

    Values are shown as `report` shows them (rope_scaling as 'yarn x40 from 4096'); None stays None.
    """
    notes = dict(ARCHITECTURE_FIELDS)
    return [(key, _show(key, value), notes[key]) for key, value in architecture(source).items()]


# Routed experts of one layer: layers.<i>.mlp.experts.<e>.<rest>
_EXPERT_NAME = re.compile(r"^(?P<head>.*\.experts\.)(?P<index>\d+)(?P<tail>\..+)$")


def weight_table(state_dict: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One row per weight tensor of a loaded model (`model.state_dict()`), routed experts folded together.

    The same weight of every routed expert in a layer (same shape and dtype) is one row named with the
    expert indices in braces, e.g. 'layers.1.mlp.experts.{0..7}.gate_proj.weight' with count 8. Rows keep
    the state_dict's order (of each row's first tensor). Each row:

        name      the key, or the folded pattern
        shape     tuple of one tensor's dims
        dtype     'fp32' | 'bf16' | 'fp16', or torch's name for any other dtype
        count     tensors the row stands for
        params    numbers in all of them (count x one tensor's numel)
        names     the state_dict keys the row stands for
        tied_to   key of an earlier tensor with the same storage (a tied lm_head), else None

    Nothing is copied or read beyond shapes, dtypes and storage addresses.
    """
    groups: dict[tuple, list[str]] = {}
    first_seen: dict[tuple, str] = {}
    for name, tensor in state_dict.items():
        m = _EXPERT_NAME.match(name)
        if m:
            key = ("experts", m["head"], m["tail"], tuple(tensor.shape), tensor.dtype)
        else:
            key = ("single", name)
        groups.setdefault(key, []).append(name)

    rows = []
    for key, names in groups.items():
        tensor = state_dict[names[0]]
        if key[0] == "experts" and len(names) > 1:
            head, tail = key[1], key[2]
            indices = sorted(int(_EXPERT_NAME.match(n)["index"]) for n in names)
            name = f"{head}{{{_index_set(indices)}}}{tail}"
        else:
            name = names[0]
        tied_to = None
        if tensor.device.type != "meta" and tensor.numel():
            where = (tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tuple(tensor.stride()),
                     tuple(tensor.shape), tensor.dtype)
            tied_to = first_seen.setdefault(where, names[0])
            tied_to = None if tied_to == names[0] else tied_to
        rows.append({
            "name": name, "shape": tuple(tensor.shape), "dtype": _dtype_label(tensor.dtype), "count": len(names),
            "params": len(names) * tensor.numel(), "names": list(names), "tied_to": tied_to,
        })
    return rows


def weight_totals(rows: list[dict[str, Any]]) -> dict[str, int]:
    """rows, tensors and params of a `weight_table`; params counts a tied tensor once (as param_counts does)."""
    return {"rows": len(rows), "tensors": sum(r["count"] for r in rows),
            "params": sum(r["params"] for r in rows if r["tied_to"] is None)}


def _index_set(indices: list[int]) -> str:
    """[0, 1, 2, 3] -> '0..3'; anything else -> '0,2,5'."""
    if len(indices) > 2 and indices == list(range(indices[0], indices[-1] + 1)):
        return f"{indices[0]}..{indices[-1]}"
    return ",".join(map(str, indices))


def _dtype_label(dtype: Any) -> str:
    try:
        return dtype_name(dtype)
    except ValueError:  # a dtype the engine does not run in (an int8 buffer, say): its torch name
        return str(dtype).removeprefix("torch.")


__all__ = [
    "architecture", "param_summary", "kv_cache_summary", "summary", "report",
    "architecture_rows", "weight_table", "weight_totals",
]
