"""DeepSeekModel: embeddings, decoder layers, final norm and LM head, with checkpoint I/O and tracing."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import torch
from torch import nn

from .. import trace
from ..attention import Positions, get_backend
from ..cache import KVCache, new_cache
from ..config import ModelConfig
from .block import DecoderLayer
from .linear import Linear
from .norm import RMSNorm
from .rope import Rotary

MLA_IMPLS = ("naive", "absorbed")


class DeepSeekModel(nn.Module):
    """input_ids LongTensor [B, T] -> logits FloatTensor [B, T, vocab_size].

    Parameter names equal the Hugging Face checkpoint's, less the leading 'model.'.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.config = cfg
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(cfg, i) for i in range(cfg.num_hidden_layers))
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.lm_head = Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        if cfg.tie_word_embeddings:
            self.lm_head.weight = self.embed_tokens.weight
        self.rotary = Rotary(cfg)
        self.mla = "absorbed"  # default MLA implementation; per call: model(ids, mla="naive")

    # ---- running ----------------------------------------------------------------------------------
    def forward(
        self,
        input_ids: torch.Tensor,
        cache: KVCache | None = None,
        attention_mask: torch.Tensor | None = None,
        backend=None,
        mla: str | None = None,
        logits_to_keep: int = 0,
    ) -> torch.Tensor:
        """input_ids [B, T] -> logits [B, T, V] (fp32), or [B, logits_to_keep, V] for the last positions only.

        cache: a KVCache from new_cache(); the T tokens are appended to it and attend to everything in it.
        attention_mask [B, T]: 1 for real tokens, 0 for left padding. Positions count real tokens only, so a
        left-padded prompt gets the same positions as the prompt alone.
        backend: attention backend or its name (default dense). mla: 'naive' or 'absorbed' (default
        self.mla; a cache fixes it to the kind it stores). logits_to_keep: if > 0, run the LM head on that many
        last positions only (a prefill needs one; transformers' argument of the same name).
        """
        if input_ids.dim() != 2:
            raise ValueError(f"input_ids must be [batch, tokens], got shape {tuple(input_ids.shape)}")
        mla = cache.mla if cache is not None else (mla or self.mla)
        if mla not in MLA_IMPLS:
            raise ValueError(f"mla must be one of {MLA_IMPLS}, got {mla!r}")
        backend = get_backend(backend)
        positions = self.assign_positions(input_ids, cache, attention_mask)
        pos = Positions.of_pass(positions, cache)  # the same for every layer

        x = self.embed_tokens(input_ids)
        trace.record("embed", x)
        trace.record("positions", positions)
        rope = self.rotary(positions)
        for layer in self.layers:
            x = layer(x, rope, pos, cache, backend, mla)
        x = self.norm(x)
        trace.record("final_norm", x)
        logits = self.lm_head(x[:, -logits_to_keep:] if logits_to_keep > 0 else x).float()
        trace.record("logits", logits)
        return logits

    @staticmethod
    def assign_positions(input_ids: torch.Tensor, cache: KVCache | None,
                         attention_mask: torch.Tensor | None) -> torch.Tensor:
        """Rotary positions [B, T] of the new tokens, counting on from the cache; recorded in the cache."""
        B, T = input_ids.shape
        device = input_ids.device
        start = cache.next_position if cache is not None and cache.next_position is not None else None
        if attention_mask is None:  # no padding (every decode step): positions start, start+1, ...
            positions = torch.arange(T, device=device).expand(B, T)
            if start is not None:
                positions = start[:, None] + positions
            if cache is not None:
                cache.add_positions(positions)
                cache.next_position = positions[:, -1] + 1
            return positions
        valid = attention_mask.to(device=device, dtype=torch.bool)
        if start is None:
            start = torch.zeros(B, dtype=torch.long, device=device)
        positions = (start[:, None] + valid.cumsum(1) - 1).clamp(min=0)  # padding slots repeat their neighbour's
        if cache is not None:
            cache.add_positions(positions, valid)
            cache.next_position = start + valid.sum(1)
        elif not bool(valid.all()):
            raise ValueError("attention_mask with padding needs a cache (use new_cache) so keys can be masked")
        return positions

    def new_cache(self, mla: str | None = None) -> KVCache:
        """An empty KV cache: 'absorbed' keeps the MLA latent, 'naive' keeps per-head K and V."""
        return new_cache(mla or self.mla, self.config.num_hidden_layers)

    def compile_decode(self):
        """This model's torch.compile'd decode step (made on first use, then kept): see
        ds_core.perf.compiled_decode. generate_ids(..., compile=True) uses it."""
        if self.__dict__.get("_compiled_decode") is None:
            from ..perf.compiled_decode import CompiledDecode
            self.__dict__["_compiled_decode"] = CompiledDecode(self)  # a plain attribute: not a submodule
        return self.__dict__["_compiled_decode"]

    @contextmanager
    def trace(self) -> Iterator[trace.Trace]:
        """Record the named intermediates (see ds_core.trace) of forward passes run inside the block."""
        with trace.tracing() as tr:
            yield tr

    # ---- facts about the loaded model ---------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return self.embed_tokens.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.embed_tokens.weight.dtype

    # ---- weights ----------------------------------------------------------------------------------
    def init_weights(self, seed: int | None = None) -> "DeepSeekModel":
        """Random initialisation as in DeepSeek/transformers: N(0, initializer_range) matrices, unit norms."""
        gen = torch.Generator().manual_seed(seed) if seed is not None else None
        std = self.config.initializer_range
        with torch.no_grad():
            for name, p in self.named_parameters():
                if name.endswith("norm.weight") or "layernorm" in name:
                    p.fill_(1.0)
                elif name.endswith(".bias"):
                    p.zero_()
                else:
                    p.copy_(torch.randn(p.shape, generator=gen) * std)
        return self

    @classmethod
    def from_pretrained(cls, path: str | Path, device: str | torch.device = "cpu",
                        dtype: torch.dtype = torch.float32) -> "DeepSeekModel":
        """Load a Hugging Face DeepSeek-V2/V3 directory (config.json + safetensors). See ds_core.checkpoint."""
        from ..checkpoint import load_model
        model = load_model(cls, path, device=device, dtype=dtype)
        return model.use_gemv_layout() if model.device.type == "cpu" else model

    def use_gemv_layout(self) -> "DeepSeekModel":
        """Store each wide Linear weight (out_features > in_features) transposed in memory; returns self.

        The tensors keep their shapes, values and names (W [out, in] becomes a view W_t.t() of a contiguous
        W_t [in, out]); only the memory order changes. Why: decoding one token makes every Linear a
        matrix-vector product whose cost is reading W, and for wide W the CPU BLAS streams x·W_t faster than it
        takes `out` short dot products with the rows of W: measured 1.3-2.6x for the LM head and the
        up-projections (MKL, AMD EPYC), about 10% of a decode step; no gain for narrow W, which stays as it is.
        Code that needs W contiguous (a raw .view(-1), a file writer) calls .contiguous() first, as
        save_pretrained does. from_pretrained applies this on CPU.
        """
        tied = self.lm_head.weight is self.embed_tokens.weight  # rows of the embedding table stay contiguous
        with torch.no_grad():
            for module in self.modules():
                if isinstance(module, nn.Linear) and module.out_features > module.in_features:
                    if not (tied and module is self.lm_head):
                        module.weight.data = module.weight.data.t().contiguous().t()
        return self

    def save_pretrained(self, path: str | Path) -> None:
        """Write config.json + model.safetensors that both ds_core and transformers load."""
        from ..checkpoint import save_model
        save_model(self, path)
