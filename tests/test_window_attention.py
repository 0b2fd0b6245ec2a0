"""WindowAttention: the rule, the block-sparse fast path against the explicit masked softmax, the dense case,
validation, what the fast path computes, and a real model run through it in both MLA modes."""

from __future__ import annotations

import pytest
import torch
from attention_helpers import brute_allowed as pair_by_pair
from attention_helpers import left_padded_positions, positions, qkv
import torch.nn.functional as F

from conftest import make_reference
from ds_core.attention import AttentionBackend, DenseAttention, Positions
from ds_core.attention.window import WindowAttention
from ds_core.model import DeepSeekModel


def brute_allowed(wa: WindowAttention, q_pos, k_pos, k_valid) -> torch.Tensor:
    """The rule as the module states it, one (query, key) pair at a time."""
    def near(p, s):
        return (p - s < wa.window
                or s < wa.n_global or s in wa.global_positions or p in wa.global_positions)
    return pair_by_pair(near, q_pos, k_pos, k_valid)


@pytest.mark.parametrize("window,n_global,glob", [(1, 0, ()), (3, 0, ()), (3, 2, ()), (2, 1, (4, 7)), (5, 0, (0, 6)),
                                                  (20, 0, ())])
def test_allowed_matches_the_rule_pair_by_pair(window, n_global, glob):
    wa = WindowAttention(window, n_global, glob)
    q_pos, k_pos = positions(2, 5, 9)
    assert torch.equal(wa.allowed(q_pos, k_pos, None), brute_allowed(wa, q_pos, k_pos, None))
    q_pos, k_pos, k_valid = left_padded_positions(5, 9)
    assert torch.equal(wa.allowed(q_pos, k_pos, k_valid), brute_allowed(wa, q_pos, k_pos, k_valid))


CASES = [  # (B, H, Hk, T, S, window, n_global, global_positions, temperature, block)
    (2, 4, 4, 100, 100, 1, 0, (), 1.0, 64),            # w=1: each token reads only itself
    (2, 4, 1, 100, 100, 7, 0, (), 1.0, 64),            # absorbed MLA: one shared K/V head
    (2, 4, 4, 70, 70, 16, 4, (), 0.5, 64),             # sinks; T not a multiple of the block
    (1, 4, 1, 130, 130, 9, 2, (3, 50, 129), 2.0, 64),  # global positions, one of them the last query
    (2, 2, 2, 37, 37, 5, 0, (0, 11, 12), 1.0, 8),      # many small blocks, globals inside a block
    (2, 4, 1, 37, 37, 3, 40, (), 1.0, 8),              # more sinks than tokens
    (2, 4, 1, 1, 50, 6, 3, (), 1.0, 64),               # decode: one query at position 49 reading a cache
    (2, 4, 4, 1, 50, 6, 0, (20,), 0.7, 64),            # decode with a global key
    (1, 4, 1, 1, 50, 6, 0, (49,), 1.0, 64),            # decode of a global query: reads every key
    (2, 4, 4, 9, 60, 10, 2, (30,), 1.0, 4),            # a chunk of 9 new tokens after 51 cached ones
]


@pytest.mark.parametrize("B,H,Hk,T,S,window,n_global,glob,tau,block", CASES)
def test_block_sparse_equals_the_explicit_masked_softmax(B, H, Hk, T, S, window, n_global, glob, tau, block):
    wa = WindowAttention(window, n_global, glob, temperature=tau, block=block)
    q, k, v = qkv(B, H, Hk, T, S)
    q_pos, k_pos = positions(B, T, S)
    fast = wa(q, k, v, Positions(q_pos, k_pos), 0.3, "attn")
    assert "block-sparse" in wa.last_note  # the fast path ran, not the reference it is checked against
    ref = wa.reference(q, k, v, Positions(q_pos, k_pos), 0.3, "attn")
    torch.testing.assert_close(fast, ref, atol=1e-5, rtol=1e-5)
    # the reference is the textbook formula with this rule and τ
    scores = (q @ k.transpose(-1, -2)) * 0.3 / tau
    mask = brute_allowed(wa, q_pos, k_pos, None)[:, None]
    by_hand = scores.masked_fill(~mask, float("-inf")).softmax(-1) @ v
    torch.testing.assert_close(ref, by_hand, atol=1e-5, rtol=1e-5)


def test_temperature_changes_the_output():
    q, k, v = qkv(1, 2, 2, 20, 20)
    q_pos, k_pos = positions(1, 20, 20)
    hot, cold = WindowAttention(5, temperature=2.0), WindowAttention(5, temperature=0.5)
    pos = Positions(q_pos, k_pos)
    assert not torch.allclose(hot(q, k, v, pos, 1.0, "a"), cold(q, k, v, pos, 1.0, "a"))


@pytest.mark.parametrize("T,S,Hk", [(37, 37, 4), (37, 37, 1), (1, 37, 1), (1, 37, 4)])
def test_a_window_covering_every_token_runs_as_dense(T, S, Hk):
    wa = WindowAttention(600, n_global=2, global_positions=(5,), temperature=0.8)
    q, k, v = qkv(2, 4, Hk, T, S)
    q_pos, k_pos = positions(2, T, S)
    out = wa(q, k, v, Positions(q_pos, k_pos), 0.3, "attn")
    assert wa.last_note == "window 600 >= 37 tokens: runs as dense" == wa.describe(37)
    assert wa.fraction_computed(T, S) == 1.0
    ref = F.scaled_dot_product_attention(q, k, v, is_causal=T == S, scale=0.3 / 0.8, enable_gqa=Hk != 4)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    assert "block-sparse" in wa.describe(601) and "runs as dense" not in WindowAttention(36).describe(37)


@pytest.mark.parametrize("kwargs,message", [
    (dict(window=0), "window must be an integer >= 1, got 0"),
    (dict(window=-3), "window must be an integer >= 1, got -3"),
    (dict(window=2.5), "window must be an integer >= 1, got 2.5"),
    (dict(window=True), "window must be an integer >= 1, got True"),
    (dict(window=4, n_global=-1), "n_global must be an integer >= 0, got -1"),
    (dict(window=4, temperature=0), r"attention temperature τ_attn must be a finite number > 0 \(1 = the model.s own\), got 0"),
    (dict(window=4, temperature=-1.0), r"attention temperature τ_attn must be a finite number > 0 \(1 = the model.s own\), got -1.0"),
    (dict(window=4, temperature=float("nan")), r"attention temperature τ_attn must be a finite number > 0 \(1 = the model.s own\), got nan"),
    (dict(window=4, global_positions=(3, -2)), r"global position -2 \(in global_positions\) must be an integer >= 0"),
    (dict(window=4, block=0), "block must be an integer >= 1, got 0"),
])
def test_bad_values_raise_a_clear_error(kwargs, message):
    with pytest.raises(ValueError, match=message):
        WindowAttention(**kwargs)


def test_fast_path_computes_o_of_t_times_window():
    """Structural, not timed: count the score entries the fast path computes."""
    w, g, glob, block = 32, 4, (100,), 64
    wa = WindowAttention(w, g, glob, block=block)
    for T in (1024, 2048, 4096):
        budget = T * (g + len(glob) + w + block - 1) + len(glob) * T  # per query: sinks, globals, band; global rows
        assert wa.fraction_computed(T) * T * T <= budget
    assert wa.fraction_computed(4096) < 0.03 and wa.fraction_computed(4096) < wa.fraction_computed(2048) / 1.9
    # the counter from a real call agrees with the plan
    q, k, v = qkv(1, 2, 1, 300, 300)
    q_pos, k_pos = positions(1, 300, 300)
    wa(q, k, v, Positions(q_pos, k_pos), 0.3, "attn")
    assert wa.computed == wa.scores_computed(300)
    # counted by hand, blocks of 4 over 10 tokens, w=3, sink 0, global 5: rows 0-3 x keys 0-3, rows 4,6,7 x
    # keys 0,2-7, rows 8,9 x keys 0,5,6-9, and the global row 5 x keys 0-5
    assert WindowAttention(3, 1, (5,), block=4).scores_computed(10) == 4 * 4 + 3 * 7 + 2 * 6 + 6
    # decode reads only the sinks and the last w keys
    q, k, v = qkv(1, 2, 1, 1, 500)
    q_pos, k_pos = positions(1, 1, 500)
    decode = WindowAttention(w, g)
    decode(q, k, v, Positions(q_pos, k_pos), 0.3, "attn")
    assert decode.computed == w + g


def test_padding_and_tracing_fall_back_to_the_reference():
    wa = WindowAttention(4, 1)
    q, k, v = qkv(2, 2, 2, 12, 12)
    k_valid = torch.ones(2, 12, dtype=torch.bool)
    k_valid[0, :3] = False
    k_pos = torch.stack([(torch.arange(12) - 3).clamp(min=0), torch.arange(12)])
    out = wa(q, k, v, Positions(k_pos, k_pos, k_valid), 0.3, "attn")
    assert wa.last_note.startswith("reference")
    assert torch.isfinite(out).all()
    from ds_core import trace

    q_pos, k_pos = positions(2, 12, 12)
    with trace.tracing() as tr:
        traced = wa(q, k, v, Positions(q_pos, k_pos), 0.3, "attn")
    assert wa.last_note.startswith("reference")
    assert tr["attn.probs"].shape == (2, 2, 12, 12)
    assert torch.equal(tr["attn.probs"] > 0, brute_allowed(wa, q_pos, k_pos, None)[:, None].expand(2, 2, 12, 12))
    torch.testing.assert_close(traced, wa(q, k, v, Positions(q_pos, k_pos), 0.3, "attn"), atol=1e-5, rtol=1e-5)


# ---- through a real model ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def model(tmp_path_factory):
    path = tmp_path_factory.mktemp("window_v3")
    make_reference("v3_groups", path)
    return DeepSeekModel.from_pretrained(path)


class ReferenceOnly(AttentionBackend):
    """A backend that always runs WindowAttention's explicit masked softmax."""

    def __init__(self, wa: WindowAttention):
        super().__init__()
        self.wa = wa

    def __call__(self, *args):
        return self.wa.reference(*args)

    def describe(self, n_tokens: int) -> str:
        return f"reference of {self.wa!r}"


@pytest.mark.parametrize("mla", ["naive", "absorbed"])
def test_model_through_the_window_backend(model, mla):
    ids = torch.randint(2, 320, (2, 40), generator=torch.Generator().manual_seed(0))
    wa = WindowAttention(6, n_global=2, global_positions=(17,), temperature=0.9, block=16)
    with torch.no_grad():
        fast = model(ids, backend=wa, mla=mla)
        assert "block-sparse" in wa.last_note
        ref = model(ids, backend=ReferenceOnly(wa), mla=mla)
        torch.testing.assert_close(fast, ref, atol=1e-4, rtol=1e-4)
        assert not torch.allclose(fast, model(ids, mla=mla), atol=1e-3)  # the window does change the model

        # decode one token after a cache: the window reads the cache's last 6 slots and the sinks
        cache = model.new_cache(mla)
        model(ids[:, :-1], cache=cache, backend=wa)
        step = model(ids[:, -1:], cache=cache, backend=wa)
        assert "block-sparse" in wa.last_note
        torch.testing.assert_close(step[:, -1], ref[:, -1], atol=1e-4, rtol=1e-4)

        wide = WindowAttention(40)
        torch.testing.assert_close(model(ids, backend=wide, mla=mla), model(ids, mla=mla), atol=1e-5, rtol=1e-5)
        assert wide.last_note == "window 40 >= 40 tokens: runs as dense"


def test_backends_by_name_with_options_and_clear_errors():
    from ds_core.attention import get_backend

    wa = get_backend("window", window=8, n_global=2)
    assert isinstance(wa, WindowAttention) and (wa.window, wa.n_global) == (8, 2)
    assert get_backend(None).temperature == 1.0 and get_backend("dense", temperature=0.5).temperature == 0.5
    with pytest.raises(ValueError, match="attention backend 'window': .*window"):
        get_backend("window")
    with pytest.raises(ValueError, match="unknown attention backend 'sparse'; choose one of dense, window, dsa, block_local"):
        get_backend("sparse")
    with pytest.raises(ValueError, match="attention temperature τ_attn must be a finite number > 0"):
        get_backend("dense", temperature=0)
    with pytest.raises(ValueError, match="attention backend must be None, a name .* or an AttentionBackend, got "
                                         "function"):
        get_backend(lambda q, k, v, pos, scale, name: v)  # a plain callable does not honour the contract


def test_dense_attention_temperature_divides_the_scores():
    torch.manual_seed(0)
    q, k, v = torch.randn(1, 2, 6, 8), torch.randn(1, 2, 6, 8), torch.randn(1, 2, 6, 8)
    pos = torch.arange(6)[None]
    causal = torch.ones(6, 6).tril().bool()
    for tau in (0.25, 1.0, 3.0):
        scores = (q @ k.transpose(-1, -2) * 0.5 / tau).masked_fill(~causal, float("-inf"))
        expected = scores.softmax(-1) @ v
        got = DenseAttention(temperature=tau)(q, k, v, Positions(pos, pos), 0.5, "t")
        torch.testing.assert_close(got, expected, atol=1e-6, rtol=1e-5)
