"""The attention lab's measurements: what a sparse or sharpened attention costs, as numbers and table rows.

    backends = window_backends(windows=(16, 64), sinks=(0, 4))       # dense, then each w with and without sinks
    print(format_sweep(sweep(model, tok, backends)))                 # perplexity and recall by distance, per backend
    divergence(model, tok, WindowAttention(16, n_global=4))          # KL(dense || window) and greedy flips
    sharpness(model, tok, "Once upon a time", layer=1, head=0, taus=(0.25, 0.5, 1, 2))
    fraction_computed(WindowAttention(16), 256)                      # share of the T×S scores computed

The app and the lessons both call these, so what one shows the other measures the same way. Every model run
goes through ds_core.evaluation.quality (RunOptions, perplexity, recall_accuracy, story windows), the same code the eval
report uses; defaults are small enough for a CPU and are parameters.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..attention import DenseAttention, WindowAttention, check_temperature, get_backend
from ..checks import check_index, check_int
from ..evaluation.quality import RunOptions, perplexity, recall_accuracy, story_windows, window_logits
from ..generate import _encode_prompt
from ..tokenizer import Tokenizer


# ---- cost -----------------------------------------------------------------------------------------------
def fraction_computed(backend, T: int, S: int | None = None) -> float:
    """Share of dense attention's T×S score matrix that `backend` computes, for T queries that are the last of
    S keys (S defaults to T: a prefill), as the backend says for itself (AttentionBackend.fraction_computed:
    dense attention computes all of it, 1.0)."""
    T = check_int("T (queries)", T, 1)
    S = T if S is None else check_int("S (keys)", S, T)
    return float(get_backend(backend).fraction_computed(T, S))


# ---- sharpness: attention temperature τ_attn ------------------------------------------------------------------
def row_entropy(probs: torch.Tensor) -> torch.Tensor:
    """probs [..., S], rows of probabilities (masked keys 0) -> entropy [...] in nats, -Σ p·log p with 0·log 0 = 0.

    log S for a row spread evenly over S keys, 0 for a row on one key."""
    if not isinstance(probs, torch.Tensor) or probs.dim() == 0 or probs.shape[-1] == 0:
        raise ValueError("probs must be a tensor [..., S] of probability rows with S >= 1")
    p = probs.float()
    if bool((p < 0).any()) or not torch.allclose(p.sum(-1), torch.ones(()), atol=1e-3):
        raise ValueError("probs must be probability rows: entries >= 0, each row summing to 1")
    return torch.special.entr(p).sum(-1)


def _row_stats(probs: torch.Tensor) -> tuple[float, float]:
    """One attention row [S] -> (entropy in nats, largest probability)."""
    return float(row_entropy(probs)), float(probs.max())


@torch.inference_mode()
def sharpness(model, tok: Tokenizer, prompt: str, layer: int, head: int,
              taus=(0.25, 0.5, 1.0, 2.0, 4.0), position: int = -1, rerun: bool = True) -> list[dict]:
    """How τ_attn sharpens one attention row: the row of query `position` (default the last token) of `head` in
    `layer`, for the prompt, at each τ in taus -> one row per τ:

        tau, entropy, max_prob             the model's real scores (layers.{layer}.attn.scores, τ = 1)
                                           re-softmaxed at τ: softmax(scores / τ), this row alone changed
        rerun_entropy, rerun_max_prob      the model re-run with DenseAttention(temperature=τ) in every layer,
                                           so earlier layers' changes reach this row too (equal to the above
                                           in layer 0); None when rerun is False
        uniform_entropy                    log(keys the row reads): the entropy of an evenly spread row

    Entropy in nats; lower τ gives lower entropy and a larger max_prob.
    """
    cfg = model.config
    layer = check_int(f"layer (0..{cfg.num_hidden_layers - 1})", layer, 0)
    head = check_int(f"head (0..{cfg.num_attention_heads - 1})", head, 0)
    if layer >= cfg.num_hidden_layers or head >= cfg.num_attention_heads:
        raise ValueError(f"the model has layers 0..{cfg.num_hidden_layers - 1} and heads "
                         f"0..{cfg.num_attention_heads - 1}, got layer {layer}, head {head}")
    taus = [check_temperature(t) for t in taus]
    if not taus:
        raise ValueError("taus must name at least one attention temperature τ_attn")
    ids = torch.tensor([_encode_prompt(tok, prompt)], device=model.device)
    T = ids.shape[1]
    position = check_index("position", position, T, f" (the prompt has {T} tokens)")

    def attention_row(tau: float, what: str) -> torch.Tensor:
        with model.trace() as tr:
            model(ids, backend=DenseAttention(tau))
        return tr[f"layers.{layer}.attn.{what}"][0, head, position].float()  # [S]

    scores = attention_row(1.0, "scores")  # scale·q·k, -inf where the query may not look
    rows = []
    for tau in taus:
        entropy, max_prob = _row_stats(tempered(scores, tau))
        rerun_entropy, rerun_max_prob = _row_stats(attention_row(tau, "probs")) if rerun else (None, None)
        rows.append({"tau": tau, "entropy": entropy, "max_prob": max_prob, "rerun_entropy": rerun_entropy,
                     "rerun_max_prob": rerun_max_prob,
                     "uniform_entropy": math.log(int(torch.isfinite(scores).sum()))})
    return rows


def tempered(scores: torch.Tensor, tau: float) -> torch.Tensor:
    """scores [..., S] (scale·q·k, -inf where masked) -> softmax(scores / τ_attn) [..., S]: the row at τ_attn."""
    return (scores.float() / check_temperature(tau)).softmax(-1)


# ---- divergence from dense -------------------------------------------------------------------------------
def next_token_divergence(ref_logits: torch.Tensor, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """ref_logits, logits [..., V] -> (KL(ref ‖ other) in nats [...], whether the argmax token differs [...])."""
    log_p, log_q = ref_logits.float().log_softmax(-1), logits.float().log_softmax(-1)
    kl = F.kl_div(log_q, log_p, log_target=True, reduction="none").sum(-1)  # Σ p·(log p - log q)
    return kl, log_p.argmax(-1) != log_q.argmax(-1)


def _check_run_args(n: int, seq_len: int | None, batch_size: int) -> None:
    check_int("n (story windows)", n, 1)
    if seq_len is not None:
        check_int("seq_len", seq_len, 1)
    check_int("batch_size", batch_size, 1)


@torch.inference_mode()
def divergence(model, tok: Tokenizer, backend, n: int = 40, seq_len: int | None = None, split: str = "test",
               reference=None, mla: str | None = None, batch_size: int = 8) -> dict:
    """How far `backend`'s next-token distributions stray from `reference`'s (default dense attention) over n
    story windows of seq_len tokens (default the model's context) ->

        kl                  mean over positions of KL(reference || backend) in nats: what the scheme loses
        greedy_changed      share of positions whose argmax (greedy) token differs
        kl_by_position      [seq_len] mean KL at each position of the window (zero while a window does not bind)
        positions           how many positions were compared
    """
    _check_run_args(n, seq_len, batch_size)
    ids = story_windows(tok, split, n, seq_len or model.config.max_position_embeddings)
    runs = [window_logits(model, ids, RunOptions(get_backend(b), mla, batch_size)) for b in (reference, backend)]
    kl_sum = torch.zeros(ids.shape[1] - 1)  # [L], summed over windows
    changed = 0
    for (_, ref_logits), (_, logits) in zip(*runs):
        kl, differs = next_token_divergence(ref_logits, logits)  # [b, L] each
        kl_sum += kl.sum(0).cpu()
        changed += int(differs.sum())
    positions = ids.shape[0] * kl_sum.numel()
    return {"kl": float(kl_sum.sum()) / positions, "greedy_changed": changed / positions,
            "kl_by_position": (kl_sum / ids.shape[0]).tolist(), "positions": positions}


# ---- the sweep: quality against cost, one row per backend ------------------------------------------------------
def window_backends(windows=(16, 64), sinks=(0, 4), temperature: float = 1.0, dense: bool = True) -> dict:
    """Backends for a sweep: dense (if asked), then for each window w one backend per sink count g, so rows at
    equal w compare window-only with window + sinks (StreamingLLM's attention-sink finding). name -> backend."""
    out: dict = {"dense": DenseAttention(temperature)} if dense else {}
    for w in windows:
        for g in sinks:
            out[f"window {w}" + (f" + {g} sinks" if g else "")] = WindowAttention(w, n_global=g,
                                                                                 temperature=temperature)
    if not out:
        raise ValueError("no backends: give at least one window and one sink count, or dense=True")
    return out


def sweep(model, tok: Tokenizer, backends: dict, per_bucket: int = 25, n: int = 40, seq_len: int | None = None,
          split: str = "test", mla: str | None = None, batch_size: int = 8) -> list[dict]:
    """Perplexity over n story windows and greedy recall by distance (per_bucket probes per bucket) for each
    backend in `backends` (name -> backend or backend name) -> one row per backend, in order:

        name, backend (its repr), fraction_computed (of the seq_len × seq_len scores), perplexity, loss,
        recall {bucket: accuracy}, recall_n {bucket: probes}

    fraction_computed is what the backend really scores: WindowAttention scores whole blocks of queries (64 by
    default) against their band, so it falls below 1 only once seq_len is well past window + block.
    """
    if not isinstance(backends, dict) or not backends:
        raise ValueError("backends must be a non-empty dict: name -> attention backend")
    _check_run_args(n, seq_len, batch_size)
    check_int("per_bucket (recall probes per distance bucket)", per_bucket, 1)
    seq_len = seq_len or model.config.max_position_embeddings
    rows = []
    for name, backend in backends.items():
        opts = RunOptions(get_backend(backend), mla, batch_size)
        ppl = perplexity(model, tok, split, n, seq_len, opts)
        recall = {bucket: r for bucket, r in recall_accuracy(model, tok, per_bucket, split, opts).items()
                  if bucket != "probes"}
        rows.append({"name": name, "backend": repr(opts.backend),
                     "fraction_computed": fraction_computed(opts.backend, seq_len),
                     "perplexity": ppl["perplexity"], "loss": ppl["loss"],
                     "recall": {bucket: r["accuracy"] for bucket, r in recall.items()},
                     "recall_n": {bucket: r["n"] for bucket, r in recall.items()}})
    return rows


def format_sweep(rows: list[dict]) -> str:
    """sweep()'s rows as a plain-text table: one line per backend, recall accuracy per distance bucket."""
    buckets = list(rows[0]["recall"]) if rows else []
    name_width = max([len("backend")] + [len(r["name"]) for r in rows])
    head = f"{'backend':<{name_width}}  computed  perplexity" + "".join(f"  d {b:>7}" for b in buckets)
    lines = [head]
    for r in rows:
        lines.append(f"{r['name']:<{name_width}}  {r['fraction_computed']:>8.1%}  {r['perplexity']:>10.3f}"
                     + "".join(f"  {r['recall'][b]:>9.1%}" for b in buckets))
    return "\n".join(lines)
