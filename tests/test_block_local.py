"""BlockLocalAttention (the fixed-block scheme as a mask): its rule pair by pair, its output against the textbook
masked softmax, what a blocked kernel of it would compute, and a real model run through it."""

from __future__ import annotations

import pytest
import torch
from attention_helpers import brute_allowed as pair_by_pair
from attention_helpers import left_padded_positions, positions, qkv

from conftest import make_reference
from ds_core import trace
from ds_core.attention import DenseAttention, Positions, WindowAttention
from ds_core.attention.block_local import BlockLocalAttention
from ds_core.model import DeepSeekModel


def brute_allowed(bl: BlockLocalAttention, q_pos, k_pos, k_valid) -> torch.Tensor:
    """The rule as the module states it, one (query, key) pair at a time."""
    def near(p, s):
        return (p // bl.block == s // bl.block
                or s < bl.n_global or s in bl.global_positions or p in bl.global_positions)
    return pair_by_pair(near, q_pos, k_pos, k_valid)


@pytest.mark.parametrize("block,n_global,glob", [(1, 0, ()), (4, 0, ()), (4, 2, ()), (3, 1, (4, 7)), (5, 0, (0, 6)),
                                                 (32, 0, ())])
def test_allowed_matches_the_rule_pair_by_pair(block, n_global, glob):
    bl = BlockLocalAttention(block, n_global, glob)
    q_pos, k_pos = positions(2, 7, 13)
    assert torch.equal(bl.allowed(q_pos, k_pos, None), brute_allowed(bl, q_pos, k_pos, None))
    q_pos, k_pos, k_valid = left_padded_positions(7, 13)
    assert torch.equal(bl.allowed(q_pos, k_pos, k_valid), brute_allowed(bl, q_pos, k_pos, k_valid))


def test_the_first_query_of_a_block_sees_only_itself_and_the_global_tokens():
    bl = BlockLocalAttention(8, n_global=2)
    q_pos, k_pos = positions(1, 40, 40)
    ok = bl.allowed(q_pos, k_pos, None)[0]
    assert ok[16].nonzero().flatten().tolist() == [0, 1, 16]
    assert ok[23].nonzero().flatten().tolist() == [0, 1] + list(range(16, 24))
    # a sliding window of the same size gives every query its 8 most recent tokens
    sliding = WindowAttention(8).allowed(q_pos, k_pos, None)[0]
    assert sliding[16].nonzero().flatten().tolist() == list(range(9, 17))


CASES = [  # (B, H, Hk, T, S, block, n_global, global_positions, temperature)
    (2, 4, 4, 50, 50, 1, 0, (), 1.0),            # block 1: each token reads only itself
    (2, 4, 1, 50, 50, 8, 0, (), 1.0),            # absorbed MLA: one shared K/V head
    (2, 4, 4, 37, 37, 16, 4, (), 0.5),           # global tokens; T not a multiple of the block
    (1, 4, 1, 70, 70, 9, 2, (3, 50, 69), 2.0),   # global positions, one of them the last query
    (2, 4, 1, 1, 50, 8, 3, (), 1.0),             # decode: one query at position 49 reading a cache
    (2, 4, 4, 9, 60, 10, 2, (30,), 0.7),         # a chunk of 9 new tokens after 51 cached ones
]


@pytest.mark.parametrize("B,H,Hk,T,S,block,n_global,glob,tau", CASES)
def test_output_equals_the_masked_softmax(B, H, Hk, T, S, block, n_global, glob, tau):
    bl = BlockLocalAttention(block, n_global, glob, temperature=tau)
    q, k, v = qkv(B, H, Hk, T, S)
    q_pos, k_pos = positions(B, T, S)
    mask = brute_allowed(bl, q_pos, k_pos, None)[:, None]
    kk, vv = k.expand(B, H, S, -1), v.expand(B, H, S, -1)  # Hk = 1: every head reads the one key head
    by_hand = ((q @ kk.transpose(-1, -2)) * 0.3 / tau).masked_fill(~mask, float("-inf")).softmax(-1) @ vv
    fast = bl(q, k, v, Positions(q_pos, k_pos), 0.3, "attn")
    torch.testing.assert_close(fast, by_hand, atol=1e-5, rtol=1e-5)
    with trace.tracing() as tr:
        traced = bl(q, k, v, Positions(q_pos, k_pos), 0.3, "attn")
    torch.testing.assert_close(traced, by_hand, atol=1e-5, rtol=1e-5)
    assert torch.equal(tr["attn.probs"] > 0, mask.expand(B, H, T, S))


def test_padding_keeps_outputs_finite():
    bl = BlockLocalAttention(4, 1)
    q, k, v = qkv(2, 2, 2, 12, 12)
    k_valid = torch.ones(2, 12, dtype=torch.bool)
    k_valid[0, :3] = False
    k_pos = torch.stack([(torch.arange(12) - 3).clamp(min=0), torch.arange(12)])
    assert torch.isfinite(bl(q, k, v, Positions(k_pos, k_pos, k_valid), 0.3, "attn")).all()


def test_fraction_computed_counts_a_blocked_kernel():
    # blocks of 4 over 10 tokens, 1 global token, global position 5: rows 0-3 x keys 0-3, rows 4,6,7 x keys
    # 0 and 4-7, rows 8,9 x keys 0, 5 and 8-9, and the global row 5 x keys 0-5
    assert BlockLocalAttention(4, 1, (5,)).scores_computed(10) == 4 * 4 + 3 * 5 + 2 * 4 + 6
    # decode at position 49 with blocks of 8: keys 48, 49 and the 3 global tokens
    assert BlockLocalAttention(8, 3).scores_computed(1, 50) == 2 + 3
    # at least every allowed pair, about (block + g) / T for long inputs
    for T in (64, 512, 2048):
        bl = BlockLocalAttention(32, 4)
        q_pos, k_pos = positions(1, T, T)
        assert bl.scores_computed(T) >= int(bl.allowed(q_pos, k_pos, None).sum())
        assert bl.fraction_computed(T) <= (32 + 4) / T
    assert BlockLocalAttention(600).fraction_computed(100) == 1.0


@pytest.mark.parametrize("kwargs,message", [
    (dict(block=0), "block must be an integer >= 1, got 0"),
    (dict(block=True), "block must be an integer >= 1, got True"),
    (dict(block=4, n_global=-1), "n_global must be an integer >= 0, got -1"),
    (dict(block=4, temperature=0), "attention temperature τ_attn must be a finite number > 0"),
    (dict(block=4, global_positions=(3, -2)), r"global position -2 \(in global_positions\) must be an integer >= 0"),
])
def test_bad_values_raise_a_clear_error(kwargs, message):
    with pytest.raises(ValueError, match=message):
        BlockLocalAttention(**kwargs)


# ---- through a real model ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def model(tmp_path_factory):
    path = tmp_path_factory.mktemp("block_local_v3")
    make_reference("v3_groups", path)
    return DeepSeekModel.from_pretrained(path)


@pytest.mark.parametrize("mla", ["naive", "absorbed"])
def test_model_through_the_block_local_backend(model, mla):
    ids = torch.randint(2, 320, (2, 40), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        # one block covering every token is plain causal attention
        torch.testing.assert_close(model(ids, backend=BlockLocalAttention(64), mla=mla),
                                   model(ids, backend=DenseAttention(), mla=mla), atol=1e-4, rtol=1e-4)
        bl = BlockLocalAttention(8, n_global=2)
        out = model(ids, backend=bl, mla=mla)
        assert torch.isfinite(out).all() and not torch.allclose(out, model(ids, mla=mla), atol=1e-3)
        # the first block's queries see all their causal keys, so the first 8 positions match dense
        torch.testing.assert_close(out[:, :8], model(ids, mla=mla)[:, :8], atol=1e-4, rtol=1e-4)
        # decoding one token after a cache gives what the full forward gives at that position
        cache = model.new_cache(mla)
        model(ids[:, :-1], cache=cache, backend=bl)
        step = model(ids[:, -1:], cache=cache, backend=bl)
        torch.testing.assert_close(step[:, 0], out[:, -1], atol=1e-4, rtol=1e-4)
