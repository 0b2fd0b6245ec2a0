"""The MLA lab's measurements: what each attention scheme caches per token, MLA's latent and the K/V rebuilt
from it, and how fast naive and absorbed MLA decode as the context grows.

    kv_bytes_per_token(model.config, "bf16")              # MHA, GQA, MQA, MLA: numbers and bytes per token
    kv_bytes_per_token(REFERENCE_CONFIGS["DeepSeek-V3"].config)
    measured_bytes_per_token(model, ids)                  # the same, measured from real caches after a prefill
    lat = latent_and_reconstruction(model, ids, layer=0)  # c_KV [T, r] and the K, V rebuilt from the cache
    decode_speed(model, contexts=(128, 512))              # tokens/s and cache bytes, naive vs absorbed

The four schemes, each with the config's own head sizes (d_qk = qk_nope_head_dim + qk_rope_head_dim, d_v =
v_head_dim, H heads, L layers); numbers one token adds to one layer's cache:

    MHA  H·(d_qk + d_v)   every head its own K and V: what naive MLA caches (NaiveCache)
    GQA  G·(d_qk + d_v)   G key/value heads, each shared by H/G query heads; G = GQA_KV_HEADS (8) unless asked
    MQA  1·(d_qk + d_v)   one key/value head shared by all H query heads
    MLA  r + d_rope       the latent c_KV (kv_lora_rank r) and the one rope key all heads share (LatentCache)

This engine runs MHA-equivalent (naive) and MLA (absorbed) caches, so those two are also measured; GQA and MQA
are what a model of the same shape would cache with fewer key/value heads, computed only.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from ..checks import check_int
from ..config import ModelConfig
from ..checks import DTYPES, dtype_name
from ..evaluation.sizes import as_config
from .published import REFERENCE_CONFIGS

SCHEMES = ("MHA", "GQA", "MQA", "MLA")
# Key/value heads of the GQA comparison: Llama-2-70B, Llama-3-8B/70B/405B and DeepSeek 67B all use 8.
# A model with fewer query heads than that gets G = H (its GQA is its MHA).
GQA_KV_HEADS = 8


# ---- bytes per token, computed from a config ---------------------------------------------------------------
def gqa_kv_heads(cfg: ModelConfig, kv_heads: int = GQA_KV_HEADS) -> int:
    """The GQA comparison's key/value heads for cfg: kv_heads, or H if the model has fewer heads than that.
    ValueError unless it divides H (each K/V head serves the same number of query heads)."""
    H = cfg.num_attention_heads
    g = min(check_int("GQA key/value heads", kv_heads, 1), H)
    if H % g:
        raise ValueError(f"GQA key/value heads must divide the {H} attention heads, got {kv_heads}")
    return g


def cache_numbers_per_layer(source: str | Path | ModelConfig, kv_heads: int = GQA_KV_HEADS) -> dict[str, int]:
    """scheme -> numbers one token adds to one layer's cache (see the module docstring), from the config alone.
    MHA and MLA are ModelConfig.kv_cache_numbers_per_token's naive and latent figures."""
    cfg = as_config(source)
    numbers = cfg.kv_cache_numbers_per_token()
    L, H = cfg.num_hidden_layers, cfg.num_attention_heads
    mha = numbers["naive"] // L
    per_head = mha // H  # d_qk + d_v: one key/value head
    return {"MHA": mha, "GQA": gqa_kv_heads(cfg, kv_heads) * per_head, "MQA": per_head, "MLA": numbers["latent"] // L}


def kv_bytes_per_token(source: str | Path | ModelConfig, dtype: Any = "bf16",
                       kv_heads: int = GQA_KV_HEADS) -> dict[str, dict[str, int]]:
    """scheme -> {numbers_per_layer, numbers (all layers), bytes (all layers, in dtype)} for one token."""
    cfg = as_config(source)
    size = DTYPES[dtype_name(dtype)].itemsize
    L = cfg.num_hidden_layers
    return {scheme: {"numbers_per_layer": n, "numbers": n * L, "bytes": n * L * size}
            for scheme, n in cache_numbers_per_layer(cfg, kv_heads).items()}


def kv_bytes_by_model(models: dict[str, ModelConfig], dtype: Any = "bf16",
                      kv_heads: int = GQA_KV_HEADS) -> dict[str, dict[str, dict[str, int]]]:
    """model name -> kv_bytes_per_token of its config; a ValueError names the model it is about."""
    out = {}
    for name, cfg in models.items():
        try:
            out[name] = kv_bytes_per_token(cfg, dtype, kv_heads)
        except ValueError as e:
            raise ValueError(f"{name}: {e}") from None
    return out


def with_references(name: str, cfg: ModelConfig) -> dict[str, ModelConfig]:
    """{name: cfg} followed by every REFERENCE_CONFIGS model: the line-up the tab and the lesson compare."""
    return {name: cfg, **{ref: model.config for ref, model in REFERENCE_CONFIGS.items()}}


def cache_bytes_by_context(source: str | Path | ModelConfig, contexts: list[int], dtype: Any = "bf16",
                           kv_heads: int = GQA_KV_HEADS, batch: int = 1) -> dict[str, list[int]]:
    """scheme -> cache bytes at each context length (batch sequences of that many tokens): bytes/token × tokens."""
    per_token = kv_bytes_per_token(source, dtype, kv_heads)
    return {scheme: [row["bytes"] * c * batch for c in contexts] for scheme, row in per_token.items()}


# ---- measured on a real model ---------------------------------------------------------------------------------
@torch.inference_mode()
def measured_bytes_per_token(model, ids: torch.Tensor) -> dict[str, float]:
    """Prefill ids [B, T] into a NaiveCache and a LatentCache -> {"MHA": bytes, "MLA": bytes} per cached token,
    all layers, measured from the cache tensors (KVCache.bytes_per_token), in the model's dtype."""
    out = {}
    for scheme, mla in (("MHA", "naive"), ("MLA", "absorbed")):
        cache = model.new_cache(mla)
        model(ids.to(model.device), cache=cache)
        out[scheme] = cache.bytes_per_token()
    return out


@dataclass(frozen=True)
class LatentKV:
    """One layer's cache contents for a prompt, and the per-head keys and values rebuilt from them."""

    c_kv: torch.Tensor    # [T, kv_lora_rank]       the latent, what MLA caches
    k_rope: torch.Tensor  # [T, qk_rope_head_dim]   the rotated rope key, shared by all heads, cached beside it
    k: torch.Tensor       # [H, T, d_qk]            [c_KV·W_UKᵀ | k_rope] per head
    v: torch.Tensor       # [H, T, v_head_dim]      c_KV·W_UVᵀ per head


def check_layer(cfg: ModelConfig, layer: int) -> int:
    return check_int("layer", layer, 0, cfg.num_hidden_layers - 1)


@torch.inference_mode()
def latent_and_reconstruction(model, ids: torch.Tensor, layer: int) -> LatentKV:
    """Prefill ids [1, T] into a LatentCache (absorbed MLA), read `layer`'s cached [c_KV | k_rope] back and
    up-project it with the layer's kv_b_proj (MLA.expand): the K and V naive MLA would have cached. fp32, cpu."""
    if ids.dim() != 2 or ids.shape[0] != 1:
        raise ValueError(f"ids must be one prompt, shape [1, T], got {tuple(ids.shape)}")
    cfg = model.config
    attn = model.layers[check_layer(cfg, layer)].self_attn
    cache = model.new_cache("absorbed")
    model(ids.to(model.device), cache=cache)
    c_kv, k_rope = cache.kv[layer].view().split([cfg.kv_lora_rank, cfg.qk_rope_head_dim], dim=-1)  # [1, T, ·]
    k, v = attn.expand(c_kv, k_rope)
    return LatentKV(*(t[0].float().cpu() for t in (c_kv, k_rope, k, v)))


# ---- decode speed -----------------------------------------------------------------------------------------------
@dataclass
class DecodeSpeed:
    """Decoding `steps` tokens after a cache prefilled to `context` tokens, with one MLA implementation."""

    context: int
    mla: str                     # 'naive' (per-head K/V cache) or 'absorbed' (latent cache)
    steps: int
    cache_bytes: int             # KVCache.nbytes after the prefill, measured
    rates: list[float] = field(default_factory=list)  # tokens/s of each repeat

    @property
    def tokens_per_s(self) -> float:
        """The median repeat."""
        return statistics.median(self.rates)


@dataclass
class _Decoder:
    """One MLA implementation's cache for one context, and the logits its next step starts from."""

    mla: str
    cache: Any
    logits: torch.Tensor  # [1, V]

    @classmethod
    @torch.inference_mode()
    def prefill(cls, model, ids: torch.Tensor, mla: str) -> "_Decoder":
        cache = model.new_cache(mla)
        return cls(mla, cache, model(ids, cache=cache)[:, -1])

    @torch.inference_mode()
    def tokens_per_s(self, model, steps: int) -> float:
        """Decode `steps` greedy tokens one by one onto the cache; the rate of the steps alone."""
        logits = self.logits
        start = time.perf_counter()
        for _ in range(steps):
            logits = model(logits.argmax(-1, keepdim=True), cache=self.cache)[:, -1]
        seconds = time.perf_counter() - start
        self.logits = logits
        return steps / seconds


def decode_speed(model, contexts=(128, 512, 2048), mlas=("naive", "absorbed"), steps: int = 16, repeats: int = 3,
                 seed: int = 0, on_progress: Callable[[int, int, str], None] | None = None) -> list[DecodeSpeed]:
    """For each context length, prefill that many random token ids into a cache per MLA implementation, then time
    `repeats` bursts of `steps` greedy decode steps on each -> one DecodeSpeed per (context, mla), in that order.

    The bursts alternate the implementations (naive, absorbed, naive, ...) so drift of a busy machine falls on
    both; each burst adds `steps` tokens to its cache, so the last burst reads context + (repeats-1)·steps
    cached tokens. Contexts may exceed max_position_embeddings: rope has no limit, the model was just not
    trained there, which does not change the work a step does. on_progress(done, total, what) is called
    before each prefill and each burst.
    """
    contexts = [check_int("each context", c, 1) for c in contexts]
    if not contexts:
        raise ValueError("contexts must name at least one context length")
    for mla in mlas:
        if mla not in ("naive", "absorbed"):
            raise ValueError(f"mla must be 'naive' or 'absorbed', got {mla!r}")
    steps, repeats = check_int("steps", steps, 1), check_int("repeats", repeats, 1)
    gen = torch.Generator().manual_seed(seed)
    rows, total, done = [], len(contexts) * len(mlas) * (1 + repeats), 0

    def progress(what: str) -> None:
        nonlocal done
        if on_progress is not None:
            on_progress(done, total, what)
        done += 1

    for context in contexts:
        ids = torch.randint(0, model.config.vocab_size, (1, context), generator=gen).to(model.device)
        decoders = []
        for mla in mlas:
            progress(f"context {context}, {mla}: prefill")
            decoders.append(_Decoder.prefill(model, ids, mla))
        group = [DecodeSpeed(context, d.mla, steps, d.cache.nbytes) for d in decoders]
        for _ in range(repeats):
            for row, decoder in zip(group, decoders):
                progress(f"context {context}, {row.mla}: decode")
                row.rates.append(decoder.tokens_per_s(model, steps))
        rows += group
    return rows


def by_context(rows: list[DecodeSpeed]) -> list[dict[str, float]]:
    """decode_speed's rows (both MLA implementations) paired per context -> one dict per context: context,
    naive_tokens_per_s, absorbed_tokens_per_s, speedup (absorbed / naive), naive_cache_bytes,
    absorbed_cache_bytes, cache_ratio (naive / absorbed)."""
    paired: dict[int, dict[str, DecodeSpeed]] = {}
    for row in rows:
        paired.setdefault(row.context, {})[row.mla] = row
    out = []
    for context, pair in paired.items():
        if set(pair) != {"naive", "absorbed"}:
            raise ValueError(f"context {context} was not timed with both naive and absorbed MLA")
        naive, absorbed = pair["naive"], pair["absorbed"]
        out.append({"context": context, "naive_tokens_per_s": naive.tokens_per_s,
                    "absorbed_tokens_per_s": absorbed.tokens_per_s,
                    "speedup": absorbed.tokens_per_s / naive.tokens_per_s,
                    "naive_cache_bytes": naive.cache_bytes, "absorbed_cache_bytes": absorbed.cache_bytes,
                    "cache_ratio": naive.cache_bytes / absorbed.cache_bytes})
    return out


__all__ = [
    "SCHEMES", "GQA_KV_HEADS", "gqa_kv_heads",
    "cache_numbers_per_layer", "kv_bytes_per_token", "kv_bytes_by_model", "with_references",
    "cache_bytes_by_context", "measured_bytes_per_token",
    "LatentKV", "latent_and_reconstruction", "DecodeSpeed", "decode_speed", "by_context",
]
