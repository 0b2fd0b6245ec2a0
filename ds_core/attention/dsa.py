"""DeepSeek Sparse Attention (DSA, DeepSeek-V3.2): a small "lightning indexer" picks, for every query, the top-k
past tokens, and attention runs over those k keys only: O(T·k) attention scores instead of O(T²).

The indexer of a layer scores every (query t, key s) pair cheaply, with H_I small heads and one shared key:

    I(t, s) = Σ_h w[t, h] · ReLU(q_I[t, h] · k_I[s])

q_I [H_I, d_I] and w [H_I] come from the query token, k_I [d_I] from the key token (one per token, as in MQA,
so the cache adds d_I numbers per token and layer). All three are projections of x, the layer's normed attention
input. (DeepSeek-V3.2 projects q_I from the query latent c_Q; x works for every config, including those without
q_lora_rank, and keeps the indexer independent of the attention it steers.) The first rope_dim dims of q_I and k_I
are rotated by position, as V3.2 does: in layer 0, x is the bare token embedding, so without rope the indexer
could not prefer nearby tokens. Then for each query the k keys with the highest I(t, ·) among those it may read
(causal, no padding) are the only keys its attention reads; ties break towards earlier keys (a stable sort).

How it plugs into MLA: a backend is called with q, k, v and positions only, so it overrides the contract's
observe hook (base.py), which MLA.forward calls first with the layer's normed input: observe computes the
indexer's queries and keys; the indexer keys of earlier tokens are kept per cache object, so decoding with a KV
cache selects as a full forward pass would. A cache must therefore be used with one DSAAttention from its first
token on.

The indexer weights live beside the checkpoint (indexer.safetensors + indexer_config.json), not in
model.safetensors, so transformers loads the directory as before. Train them with
`python -m ds_core train-indexer --model PATH`.
"""

from __future__ import annotations

import json
import weakref
from pathlib import Path

import torch
from einops import einsum, rearrange
from safetensors.torch import load_file, save_file
from torch import nn

from .. import trace
from ..cache import GrowingTensor
from ..checks import check_int
from .base import AttentionBackend, Positions
from .dense import DenseAttention

WEIGHTS_FILE, CONFIG_FILE = "indexer.safetensors", "indexer_config.json"
TRAIN_COMMAND = "python -m ds_core train-indexer --model {path}"


# ---- the indexer ----------------------------------------------------------------------------------------

class Indexer(nn.Module):
    """One layer's lightning indexer. x [B, T, D] -> keys [B, T, d_I]; queries [B, T, H_I, d_I] and head weights
    [B, T, H_I]; scores(queries, weights, keys) -> I [B, T, S]."""

    def __init__(self, hidden_size: int, n_heads: int = 4, head_dim: int = 32, rope_dim: int = 8,
                 rope_theta: float = 10000.0):
        super().__init__()
        if rope_dim % 2 or not 0 <= rope_dim <= head_dim:
            raise ValueError(f"rope_dim must be even and in [0, head_dim={head_dim}], got {rope_dim}")
        self.n_heads, self.head_dim, self.rope_dim = n_heads, head_dim, rope_dim
        self.wq = nn.Linear(hidden_size, n_heads * head_dim, bias=False)
        self.wk = nn.Linear(hidden_size, head_dim, bias=False)
        self.k_norm = nn.LayerNorm(head_dim)  # as V3.2: keeps key scale fixed whatever the layer's x looks like
        self.head_weights = nn.Linear(hidden_size, n_heads, bias=False)
        inv_freq = 1.0 / rope_theta ** (torch.arange(0, rope_dim, 2, dtype=torch.float32) / max(rope_dim, 1))
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def rotate(self, x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Rope on the first rope_dim dims of x [B, T, (h,) d], positions [B, T]; the rest passes through."""
        from ..model.rope import apply_rope  # here, not at the top: ds_core.model imports this package
        if not self.rope_dim:
            return x
        cis = torch.polar(torch.ones_like(self.inv_freq), positions[..., None].float() * self.inv_freq)
        if x.dim() == 4:
            cis = cis[:, :, None]  # the same rotation for every head of a query
        rot, rest = x.split([self.rope_dim, self.head_dim - self.rope_dim], dim=-1)
        return torch.cat([apply_rope(rot, cis, interleaved=False), rest], dim=-1)

    def keys(self, x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """x [B, T, D], positions [B, T] -> k_I [B, T, d_I]: what the cache keeps per token."""
        return self.rotate(self.k_norm(self.wk(x)), positions)

    def queries(self, x: torch.Tensor, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x [B, T, D], positions [B, T] -> q_I [B, T, H_I, d_I], w [B, T, H_I]."""
        q = rearrange(self.wq(x), "b t (h d) -> b t h d", h=self.n_heads)
        # the fixed scales (as V3.2) keep I(t, s) of order 1 at initialisation
        return self.rotate(q, positions) * self.head_dim ** -0.5, self.head_weights(x) * self.n_heads ** -0.5

    @staticmethod
    def scores(q: torch.Tensor, w: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        """I(t, s) = Σ_h w[t, h] · ReLU(q[t, h] · k[s]): q [B, T, H_I, d_I], w [B, T, H_I], k [B, S, d_I] -> [B, T, S]."""
        return einsum(w, einsum(q, k, "b t h d, b s d -> b t h s").relu(), "b t h, b t h s -> b t s")


class IndexerStack(nn.Module):
    """One Indexer per decoder layer, saved and loaded as indexer.safetensors + indexer_config.json."""

    def __init__(self, num_layers: int, hidden_size: int, n_heads: int = 4, head_dim: int = 32, rope_dim: int = 8,
                 rope_theta: float = 10000.0):
        super().__init__()
        self.config = dict(num_layers=num_layers, hidden_size=hidden_size, n_heads=n_heads, head_dim=head_dim,
                           rope_dim=rope_dim, rope_theta=rope_theta)
        self.layers = nn.ModuleList(Indexer(hidden_size, n_heads, head_dim, rope_dim, rope_theta)
                                    for _ in range(num_layers))

    @classmethod
    def for_model(cls, model_config, seed: int | None = None, **options) -> "IndexerStack":
        """A freshly initialised stack that fits a ModelConfig; options: n_heads, head_dim, rope_dim, rope_theta."""
        if seed is not None:
            torch.manual_seed(seed)
        return cls(model_config.num_hidden_layers, model_config.hidden_size, **options)

    def save(self, path: str | Path, extra: dict | None = None) -> None:
        """Write the two files into the checkpoint directory; `extra` (e.g. training results) goes into the JSON."""
        path = Path(path)
        save_file({n: t.detach().contiguous().cpu() for n, t in self.state_dict().items()}, path / WEIGHTS_FILE)
        (path / CONFIG_FILE).write_text(json.dumps({**self.config, **(extra or {})}, indent=2) + "\n")

    @classmethod
    def from_pretrained(cls, path: str | Path) -> "IndexerStack":
        """Load the stack saved in a checkpoint directory, checked against its config.json when there is one."""
        path = Path(path)
        if not (path / WEIGHTS_FILE).is_file() or not (path / CONFIG_FILE).is_file():
            raise FileNotFoundError(f"no trained indexer in {path} (needs {WEIGHTS_FILE} and {CONFIG_FILE}); "
                                    f"train one with: {TRAIN_COMMAND.format(path=path)}")
        saved = json.loads((path / CONFIG_FILE).read_text())
        stack = cls(**{k: saved[k] for k in ("num_layers", "hidden_size", "n_heads", "head_dim", "rope_dim",
                                             "rope_theta")})
        if (path / "config.json").is_file():
            model = json.loads((path / "config.json").read_text())
            if (model.get("num_hidden_layers"), model.get("hidden_size")) != (stack.config["num_layers"],
                                                                              stack.config["hidden_size"]):
                raise ValueError(f"{path / CONFIG_FILE} is for {stack.config['num_layers']} layers of width "
                                 f"{stack.config['hidden_size']}, but the model in {path} has "
                                 f"{model.get('num_hidden_layers')} of width {model.get('hidden_size')}; retrain "
                                 f"with: {TRAIN_COMMAND.format(path=path)}")
        stack.load_state_dict(load_file(path / WEIGHTS_FILE))
        return stack.eval().requires_grad_(False)


# ---- the backend ----------------------------------------------------------------------------------------

class DSAAttention(AttentionBackend):
    """Top-k sparse attention chosen by a trained IndexerStack (or the checkpoint directory holding one).

        dsa = DSAAttention.from_pretrained("assets/ds-tiny", top_k=32)
        logits = model(ids, backend=dsa)
        dsa.last_selection["layers.1.attn"]   # [B, T, k] key slots each query read, best first (-1: none)

    top_k >= the number of keys: every causal key is picked, so it runs as DenseAttention (last_note says so).
    Inside a trace it runs the explicit masked softmax (recording {name}.scores and {name}.probs [B, H, T, S],
    zero outside the picked keys) and records {name}.dsa_index [B, T, S] and {name}.dsa_selected [B, T, k].
    Keeps per-call state (the indexer output between observe and the call, the indexer keys per cache): use one
    instance per generation or request, not one shared by threads.
    """

    name = "dsa"

    def __init__(self, indexers: "IndexerStack | str | Path", top_k: int, temperature: float = 1.0):
        self.indexers = indexers if isinstance(indexers, IndexerStack) else IndexerStack.from_pretrained(indexers)
        self.top_k = check_int("top_k", top_k, 1, why=" (the keys each query reads)")
        super().__init__(temperature)
        self.dense = DenseAttention()
        self.last_note = ""  # how the last call ran: dense or top-k
        self.last_selection: dict[str, torch.Tensor | None] = {}  # attention name -> [B, T, k] (None: ran dense)
        self.pending: tuple[Indexer, torch.Tensor, torch.Tensor, torch.Tensor] | None = None  # set by observe
        self.cached_keys: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # cache -> [GrowingTensor]/layer

    @classmethod
    def from_pretrained(cls, path: str | Path, top_k: int, temperature: float = 1.0) -> "DSAAttention":
        return cls(IndexerStack.from_pretrained(path), top_k, temperature)

    def __repr__(self) -> str:
        return f"DSAAttention(top_k={self.top_k}, temperature={self.temperature})"

    # ---- the indexer, fed by MLA.forward --------------------------------------------------------------
    def observe(self, layer: int, x: torch.Tensor, pos: Positions, cache) -> None:
        """Run layer `layer`'s indexer on x [B, T, D] (the normed attention input) at the query positions pos.q;
        append its keys to those kept for `cache` (None: a pass without cache). The next call uses the result."""
        indexer = self.indexers.layers[layer]
        if indexer.wk.weight.device != x.device:
            self.indexers.to(x.device)
        x = x.to(indexer.wk.weight.dtype)  # a bf16 model still gets fp32 index scores
        keys = indexer.keys(x, pos.q)
        if cache is not None:
            per_layer = self.cached_keys.setdefault(cache, [GrowingTensor(dim=1) for _ in self.indexers.layers])
            keys = per_layer[layer].append(keys)
        self.pending = (indexer, *indexer.queries(x, pos.q), keys)

    def index_scores(self, n_keys: int, needed: bool = True) -> torch.Tensor | None:
        """I(t, s) [B, T, S] from what observe left (None when not `needed`: a dense call only checks and clears
        it); checks that its keys line up with the S keys attention reads."""
        if self.pending is None:
            raise RuntimeError("DSAAttention needs the layer's hidden states: run it through DeepSeekModel, whose "
                               "MLA calls backend.observe(...) before the backend")
        indexer, q, w, keys = self.pending
        self.pending = None
        if keys.shape[1] != n_keys:
            raise ValueError(f"the indexer has keys for {keys.shape[1]} tokens but attention reads {n_keys}: use "
                             "a KV cache with one DSAAttention from its first token on (a StaticLatentCache is "
                             "not supported)")
        return indexer.scores(q, w, keys) if needed else None

    # ---- running ------------------------------------------------------------------------------------
    def __call__(self, q, k, v, pos: Positions, scale: float, name: str) -> torch.Tensor:
        """-> [B, H, T, dv]. Shapes as in base.py. Picks each query's top_k keys by the indexer, attends to those."""
        S = k.shape[2]
        index = self.index_scores(S, needed=self.top_k < S)
        if index is None:  # every causal key is among the top k: dense attention, exactly
            self.last_note, self.last_selection[name] = self.describe(S), None
            return self.dense(q, k, v, pos, scale / self.temperature, name)
        allowed = self.allowed(pos.q, pos.k, pos.k_valid)  # the contract's rule: causal, padding never read
        selected = self.select(index, allowed, self.top_k)
        self.last_selection[name] = selected
        trace.record(f"{name}.dsa_index", index.masked_fill(~allowed, float("-inf")))
        trace.record(f"{name}.dsa_selected", selected)
        self.last_note = f"{self.describe(S)}; computed {q.shape[2] * self.top_k} of {q.shape[2] * S} scores"
        if trace.active() is not None:
            return DenseAttention.explicit(q, k, v, self.selection_mask(selected, S), scale / self.temperature, name)
        return self.attend(q, k, v, selected, scale / self.temperature)

    @staticmethod
    def select(index: torch.Tensor, allowed: torch.Tensor, top_k: int) -> torch.Tensor:
        """index [B, T, S], allowed [B, T, S] -> [B, T, min(top_k, S)]: the allowed key slots with the highest
        index, best first; -1 where a query may read fewer than top_k keys.

        A stable sort, not topk: ReLU makes exact ties (often at 0) common, and a stable sort breaks them the same
        way (earlier slot first) in a full forward pass and in a decode step, which see different row lengths."""
        index = index.masked_fill(~allowed, float("-inf"))
        order = index.sort(dim=-1, descending=True, stable=True).indices[..., :top_k]
        return order.masked_fill(~allowed.gather(-1, order), -1)

    @staticmethod
    def selection_mask(selected: torch.Tensor, n_keys: int) -> torch.Tensor:
        """selected [B, T, k] (slots, -1: none) -> bool [B, T, S], True at the selected slots."""
        mask = torch.zeros(*selected.shape[:2], n_keys + 1, dtype=torch.bool, device=selected.device)
        return mask.scatter_(-1, selected % (n_keys + 1), True)[..., :n_keys]  # -1 lands in the extra last column

    @staticmethod
    def attend(q, k, v, selected: torch.Tensor, scale: float) -> torch.Tensor:
        """The fast path: q [B, H, T, d], k [B, Hk, S, d], v [B, Hk, S, dv], selected [B, T, n] -> [B, H, T, dv].

        Gathers each query's n keys and values ([B, Hk, T, n, ·]) and scores only those. The H / Hk query heads
        that share a key head read the same gathered keys (with Hk = 1, absorbed MLA, they are gathered once)."""
        B, Hk = k.shape[:2]
        rows = torch.arange(B, device=k.device)[:, None, None, None]
        heads = torch.arange(Hk, device=k.device)[None, :, None, None]
        slots = selected.clamp(min=0)[:, None]                                   # [B, 1, T, n]
        k_sel, v_sel = k[rows, heads, slots], v[rows, heads, slots]              # [B, Hk, T, n, d | dv]
        q = rearrange(q, "b (hk g) t d -> b hk g t d", hk=Hk)
        scores = einsum(q, k_sel, "b hk g t d, b hk t n d -> b hk g t n").float() * scale
        scores = scores.masked_fill((selected < 0)[:, None, None], float("-inf"))
        out = einsum(scores.softmax(dim=-1).to(v.dtype), v_sel, "b hk g t n, b hk t n d -> b hk g t d")
        return rearrange(out, "b hk g t d -> b (hk g) t d")

    # ---- what it costs ------------------------------------------------------------------------------
    def fraction_computed(self, T: int, S: int | None = None) -> float:
        """Share of the T×S attention scores of dense attention that this backend computes (S defaults to T):
        min(k, S) / S. The indexer still scores all T×S pairs, with H_I·d_I multiply-adds per pair instead of
        attention's H·d_qk (4·32 vs 128·192 in DeepSeek-V3-sized heads)."""
        S = T if S is None else S
        return min(self.top_k, S) / S

    def describe(self, n_keys: int) -> str:
        """One line: how a call over `n_keys` keys runs."""
        if self.top_k >= n_keys:
            return f"top-{self.top_k} >= {n_keys} keys: runs as dense"
        cfg = self.indexers.config
        return (f"top-{self.top_k} of {n_keys} keys per query, picked by a {cfg['n_heads']}-head "
                f"lightning indexer (d_I = {cfg['head_dim']})")

