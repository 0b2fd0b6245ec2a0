"""The attention lab: the rolling KV cache of window decoding (same tokens as the full cache, constant memory)
and the measurements of ds_core.labs.attention (entropy, sharpness against τ_attn, divergence from dense, the sweep,
the fraction of scores computed)."""

from __future__ import annotations

import math
import sys

import pytest
import torch

from conftest import make_reference
from ds_core.labs import attention as lab
from ds_core.attention import DenseAttention, WindowAttention
from ds_core.cache import LatentCache, NaiveCache, RollingLatentCache, RollingNaiveCache, new_cache
from ds_core.generate import SamplingParams, generate_ids, left_pad
from ds_core.model import DeepSeekModel
from ds_core.tokenizer import Tokenizer

generate_module = sys.modules["ds_core.generate"]  # the package re-exports a function of the same name

PROMPT = "Once upon a time a fox named Ada found a red key under the old bridge."


@pytest.fixture(scope="module")
def model_and_tok(tmp_path_factory):
    path = tmp_path_factory.mktemp("lab")
    make_reference("v3_groups", path)
    return DeepSeekModel.from_pretrained(path), Tokenizer.from_pretrained(path)


@torch.inference_mode()
def greedy_on_full_cache(model, ids, mask, backend, steps: int, mla: str) -> torch.Tensor:
    """The reference: the same backend decoding greedily over a cache that keeps every token -> [B, steps]."""
    cache = model.new_cache(mla)
    assert type(cache) in (LatentCache, NaiveCache)
    logits = model(ids, cache=cache, attention_mask=mask, backend=backend)[:, -1]
    out = []
    for _ in range(steps):
        out.append(logits.argmax(-1))
        logits = model(out[-1][:, None], cache=cache, backend=backend)[:, -1]
    return torch.stack(out, 1)


# ---- the rolling cache -------------------------------------------------------------------------------------
@pytest.mark.parametrize("mla", ["absorbed", "naive"])
@pytest.mark.parametrize("window,n_global,glob,padded", [
    (4, 0, (), False),      # window only: the rolled cache is all in the window, attention runs as dense
    (5, 2, (), True),       # sinks (non-contiguous slots: the reference path), left-padded batch
    (3, 1, (30,), False),   # a global query at 30 reads everything before it; afterwards only its key stays
])
def test_rolling_cache_generates_what_the_full_cache_does(model_and_tok, monkeypatch, mla, window, n_global, glob,
                                                         padded):
    model, _ = model_and_tok
    backend = WindowAttention(window, n_global, glob)
    g = torch.Generator().manual_seed(0)
    rows = [torch.randint(2, 320, (n,), generator=g).tolist() for n in ((12, 7) if padded else (12, 12))]
    ids, mask = left_pad(rows, pad_id=1)
    mask = mask if padded else None
    made = []  # the caches generate_ids decodes with

    def recording_new_cache(*args):
        made.append(new_cache(*args))
        return made[-1]

    monkeypatch.setattr(generate_module, "new_cache", recording_new_cache)
    steps = 70
    rolled = torch.stack(list(generate_ids(model, ids, mask, params=SamplingParams(0), max_new_tokens=steps,
                                           mla=mla, backend=backend, eos_ids=[])), 1)
    assert isinstance(made[0], RollingLatentCache if mla == "absorbed" else RollingNaiveCache)
    # it rolled: sinks (of each row: padding shifts them) + window + the global key; the full cache holds 82
    assert made[0].length <= 2 * (n_global + window) + len(glob)
    torch.testing.assert_close(rolled, greedy_on_full_cache(model, ids, mask, backend, steps, mla), rtol=0, atol=0)


def test_rolling_cache_memory_is_constant_past_sinks_plus_window(model_and_tok):
    model, _ = model_and_tok
    window, n_global = 6, 2
    backend = WindowAttention(window, n_global)
    cache, full = new_cache("absorbed", model.config.num_hidden_layers, backend), model.new_cache("absorbed")
    assert isinstance(cache, RollingLatentCache)
    held, full_held = [], []
    token = torch.tensor([[5, 6, 7]])
    with torch.inference_mode():
        for step in range(40):
            model(token, cache=full, backend=backend)
            token = model(token, cache=cache, backend=backend)[:, -1:].argmax(-1)
            held.append((cache.nbytes, sum(t.allocated_bytes for t in cache.tensors()), cache.length))
            full_held.append(full.nbytes)
    tokens = [3 + step for step in range(40)]
    past = [h for n, h in zip(tokens, held) if n >= n_global + window]
    assert len(past) > 30 and len(set(past)) == 1                  # constant, spare capacity included
    assert past[0][2] == n_global + window
    cfg = model.config  # float32 latents [c_KV | k_rope] of n_global + window tokens in every layer
    assert past[0][0] == cfg.num_hidden_layers * (cfg.kv_lora_rank + cfg.qk_rope_head_dim) * 4 * (n_global + window)
    assert full_held[-1] > 4 * past[0][0]                          # while the full cache keeps growing
    # the kept slots carry their real positions: the sinks, then the last `window` tokens
    last = tokens[-1]
    assert cache.positions.view()[0].tolist() == [0, 1] + list(range(last - window, last))
    assert int(cache.next_position[0]) == last


def test_dense_and_named_backends_keep_the_full_cache():
    assert type(new_cache("absorbed", 2)) is LatentCache
    assert type(new_cache("naive", 2, DenseAttention())) is NaiveCache
    assert type(new_cache("absorbed", 2, "dense")) is LatentCache  # a name is not asked for keys_needed


# ---- measurements ------------------------------------------------------------------------------------------
def test_row_entropy_on_known_distributions():
    for n in (1, 2, 7, 100):
        assert float(lab.row_entropy(torch.full((n,), 1 / n))) == pytest.approx(math.log(n), abs=1e-5)
    one_hot = torch.zeros(3, 5).scatter_(1, torch.tensor([[0], [2], [4]]), 1.0)
    assert lab.row_entropy(one_hot).tolist() == [0.0, 0.0, 0.0]
    assert float(lab.row_entropy(torch.tensor([0.5, 0.5, 0.0]))) == pytest.approx(math.log(2))
    for bad in (torch.tensor([0.5, 0.6]), torch.tensor([1.5, -0.5]), torch.tensor(1.0), [0.5, 0.5]):
        with pytest.raises(ValueError, match="prob"):
            lab.row_entropy(bad)


def test_sharpness_entropy_falls_as_tau_falls(model_and_tok):
    model, tok = model_and_tok
    taus = (4.0, 2.0, 1.0, 0.5, 0.25)
    rows = lab.sharpness(model, tok, PROMPT, layer=2, head=1, taus=taus)
    assert [r["tau"] for r in rows] == list(taus)
    entropy, top = [r["entropy"] for r in rows], [r["max_prob"] for r in rows]
    assert all(a > b for a, b in zip(entropy, entropy[1:])) and all(a < b for a, b in zip(top, top[1:]))
    assert all(0 <= r["entropy"] <= r["uniform_entropy"] for r in rows)
    assert rows[0]["uniform_entropy"] == pytest.approx(math.log(len(tok.encode(PROMPT))))  # last query reads all
    # τ = 1 is the model itself; in layer 0 re-running at τ changes nothing before the row, so both agree
    at_one = rows[2]
    assert at_one["rerun_entropy"] == pytest.approx(at_one["entropy"], abs=1e-5)
    for r in lab.sharpness(model, tok, PROMPT, layer=0, head=3, taus=taus):
        assert r["rerun_entropy"] == pytest.approx(r["entropy"], abs=1e-4)
        assert r["rerun_max_prob"] == pytest.approx(r["max_prob"], abs=1e-4)


@pytest.mark.parametrize("kwargs,match", [
    (dict(taus=(1.0, 0.0)), "temperature"), (dict(taus=()), "at least one"), (dict(layer=3), "layers 0..2"),
    (dict(head=4), "heads 0..3"), (dict(layer=-1), "layer"), (dict(position=500), "position"),
])
def test_sharpness_refuses_bad_arguments(model_and_tok, kwargs, match):
    model, tok = model_and_tok
    with pytest.raises(ValueError, match=match):
        lab.sharpness(model, tok, PROMPT, **{"layer": 0, "head": 0, **kwargs})


def test_divergence_is_zero_for_dense_and_positive_for_a_narrow_window(model_and_tok):
    model, tok = model_and_tok
    same = lab.divergence(model, tok, DenseAttention(), n=4, seq_len=48)
    assert same["kl"] == 0 and same["greedy_changed"] == 0 and same["positions"] == 4 * 48
    narrow = lab.divergence(model, tok, WindowAttention(1), n=4, seq_len=48)
    assert narrow["kl"] > 0.01 and narrow["greedy_changed"] > 0
    # by position: nothing changes while the window covers every earlier token, then it does
    w = lab.divergence(model, tok, WindowAttention(8), n=4, seq_len=48)["kl_by_position"]
    assert len(w) == 48 and max(w[:8]) < 1e-5 and min(w[12:]) > 1e-4
    with pytest.raises(ValueError, match="n \\(story windows\\)"):
        lab.divergence(model, tok, WindowAttention(1), n=0)


def test_sweep_gives_a_row_per_backend(model_and_tok):
    model, tok = model_and_tok
    backends = lab.window_backends(windows=(4, 64), sinks=(0, 2))
    assert list(backends) == ["dense", "window 4", "window 4 + 2 sinks", "window 64", "window 64 + 2 sinks"]
    rows = lab.sweep(model, tok, backends, per_bucket=2, n=3, seq_len=64)
    assert [r["name"] for r in rows] == list(backends)
    buckets = ["<=32", "33-128", "129-256", "257-480"]
    for r in rows:
        assert math.isfinite(r["perplexity"]) and r["perplexity"] > 1
        assert list(r["recall"]) == buckets and all(0 <= a <= 1 for a in r["recall"].values())
        assert list(r["recall_n"].values()) == [2, 2, 2, 2]
    dense, w4 = rows[0], rows[1]
    assert dense["fraction_computed"] == 1.0 and "WindowAttention(window=4" in w4["backend"]
    assert w4["perplexity"] != dense["perplexity"]
    # a window as long as the text never binds: the same perplexity as dense
    assert rows[3]["perplexity"] == pytest.approx(dense["perplexity"], rel=1e-5)
    table = lab.format_sweep(rows)
    assert table.count("\n") == len(rows) and "window 4 + 2 sinks" in table
    with pytest.raises(ValueError, match="non-empty dict"):
        lab.sweep(model, tok, {})
    with pytest.raises(ValueError, match="per_bucket"):
        lab.sweep(model, tok, backends, per_bucket=0)


def test_fraction_computed_for_any_backend():
    assert lab.fraction_computed("dense", 100) == 1.0 == lab.fraction_computed(DenseAttention(0.5), 10, 50)
    w = WindowAttention(8, 2, block=16)
    assert lab.fraction_computed(w, 256) == w.fraction_computed(256) < 0.2
    assert lab.fraction_computed(w, 1, 300) == w.fraction_computed(1, 300)
    with pytest.raises(ValueError, match="attention backend must be None, a name .* or an AttentionBackend, got object"):
        lab.fraction_computed(object(), 10)
    with pytest.raises(ValueError, match="S \\(keys\\)"):
        lab.fraction_computed(w, 10, 5)
    with pytest.raises(ValueError, match="window"):
        lab.window_backends(windows=(0,))
