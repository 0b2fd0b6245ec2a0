"""DeepSeek Sparse Attention: top-k selection and attention against the explicit masked softmax, the dense case,
cached decoding against a full forward pass, indexer files, and a short indexer training on a tiny model."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from ds_core.attention import DenseAttention, Positions, get_backend
from ds_core.attention.dsa import CONFIG_FILE, WEIGHTS_FILE, DSAAttention, Indexer, IndexerStack
from ds_core.model import DeepSeekModel


def qkv(B, H, Hk, T, S, d=8, dv=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(B, H, T, d, generator=g), torch.randn(B, Hk, S, d, generator=g),
            torch.randn(B, Hk, S, dv, generator=g))


@pytest.mark.parametrize("H,Hk,T,S,top_k", [(4, 4, 20, 20, 5), (4, 1, 20, 20, 5), (4, 1, 1, 30, 7), (2, 2, 6, 25, 3)])
def test_top_k_attention_equals_the_masked_reference(H, Hk, T, S, top_k):
    q, k, v = qkv(2, H, Hk, T, S)
    q_pos = torch.arange(S - T, S).expand(2, T)
    allowed = DenseAttention().allowed(q_pos, torch.arange(S).expand(2, S), None)
    index = torch.randn(2, T, S, generator=torch.Generator().manual_seed(1))
    index[0, :, 3] = index[0, :, 4] = 0.0  # exact ties, as ReLU makes them
    selected = DSAAttention.select(index, allowed, top_k)
    for b in range(2):  # the selection, one query at a time: its allowed keys by index, best first
        for t in range(T):
            keys = [s for s in range(S) if allowed[b, t, s]]
            best = sorted(keys, key=lambda s: (-float(index[b, t, s]), s))[:top_k]
            assert selected[b, t].tolist() == best + [-1] * (top_k - len(best))
    fast = DSAAttention.attend(q, k, v, selected, 0.3)
    mask = DSAAttention.selection_mask(selected, S)
    assert mask.sum(-1).tolist() == (selected >= 0).sum(-1).tolist()
    ref = DenseAttention.explicit(q, k, v, mask, 0.3, "attn")
    torch.testing.assert_close(fast, ref, atol=1e-5, rtol=1e-5)


def test_indexer_rope_sees_relative_positions_only():
    torch.manual_seed(0)
    ix = Indexer(16, n_heads=2, head_dim=8, rope_dim=4)
    x, pos = torch.randn(1, 6, 16), torch.arange(6)[None]

    def index(q_pos, k_pos):
        return ix.scores(*ix.queries(x, q_pos), ix.keys(x, k_pos))

    torch.testing.assert_close(index(pos + 100, pos + 100), index(pos, pos), atol=1e-5, rtol=1e-5)
    assert not torch.allclose(index(pos, 2 * pos), index(pos, pos), atol=1e-3)  # distance does matter


@pytest.mark.parametrize("top_k", [0, -3, 2.5, True, "8"])
def test_bad_top_k_raises(top_k):
    with pytest.raises(ValueError, match="top_k must be an integer >= 1"):
        DSAAttention(IndexerStack(1, 8), top_k)


def test_missing_indexer_says_how_to_train_one(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"python -m ds_core train-indexer --model"):
        DSAAttention(tmp_path, top_k=4)
    with pytest.raises(RuntimeError, match="observe"):  # called without the model's hook
        pos = torch.arange(5)[None]
        DSAAttention(IndexerStack(1, 8), 4)(*qkv(1, 2, 2, 5, 5), Positions(pos, pos), 0.3, "attn")


# ---- through a real model ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def model(tiny_checkpoint):
    return DeepSeekModel.from_pretrained(tiny_checkpoint)


@pytest.fixture(scope="module")
def stack(model):
    return IndexerStack.for_model(model.config, seed=0, head_dim=16).requires_grad_(False)


def ids_for(B, T, seed=0):
    return torch.randint(2, 320, (B, T), generator=torch.Generator().manual_seed(seed))


def test_top_k_covering_every_key_runs_as_dense(model, stack):
    ids = ids_for(2, 30)
    dsa = DSAAttention(stack, top_k=30)
    with torch.no_grad():
        torch.testing.assert_close(model(ids, backend=dsa), model(ids), atol=1e-4, rtol=1e-4)
    assert dsa.last_note == "top-30 >= 30 keys: runs as dense" == dsa.describe(30)
    assert dsa.fraction_computed(30) == 1.0 and dsa.last_selection["layers.0.attn"] is None


@pytest.mark.parametrize("mla", ["naive", "absorbed"])
def test_sparse_run_equals_its_traced_reference_and_reads_only_the_picked_keys(model, stack, mla):
    ids = ids_for(2, 30)
    dsa = DSAAttention(stack, top_k=5, temperature=0.9)
    with torch.no_grad():
        fast = model(ids, backend=dsa, mla=mla)
        assert "top-5 of 30 keys" in dsa.last_note and dsa.fraction_computed(30) == 5 / 30
        with model.trace() as tr:
            traced = model(ids, backend=dsa, mla=mla)
        torch.testing.assert_close(fast, traced, atol=1e-4, rtol=1e-4)
        assert not torch.allclose(fast, model(ids, mla=mla), atol=1e-3)  # top-5 does change the model
    for i in range(model.config.num_hidden_layers):
        name = f"layers.{i}.attn"
        selected, index = tr[f"{name}.dsa_selected"], tr[f"{name}.dsa_index"]
        assert selected.shape == (2, 30, 5) and torch.equal(selected, dsa.last_selection[name])
        # queries 0..3 have fewer than 5 keys: all of them, then -1
        assert selected[:, 2].sort(-1).values.tolist() == [[-1, -1, 0, 1, 2]] * 2
        # later queries: their 5 highest index scores, and attention has weight there only
        top = index[:, 10:].topk(5, dim=-1).values
        assert torch.equal(index[:, 10:].gather(-1, selected[:, 10:]).sort(-1, descending=True).values, top)
        picked = DSAAttention.selection_mask(selected, 30)[:, None].expand(-1, model.config.num_attention_heads,
                                                                           -1, -1)
        assert torch.equal(tr[f"{name}.probs"] > 0, picked)


@pytest.mark.parametrize("mla", ["naive", "absorbed"])
def test_cached_decode_equals_the_full_forward(model, stack, mla):
    ids = ids_for(2, 32, seed=1)
    dsa = DSAAttention(stack, top_k=6)
    with torch.no_grad():
        full = model(ids, backend=dsa, mla=mla)
        cache = model.new_cache(mla)
        steps = [model(ids[:, :12], cache=cache, backend=dsa)]  # prefill: already sparse (12 keys > 6)
        steps += [model(ids[:, t:t + 1], cache=cache, backend=dsa) for t in range(12, 32)]
    assert "top-6 of 32 keys" in dsa.last_note
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-4, rtol=1e-4)


def test_left_padded_row_equals_the_row_alone(model, stack):
    ids = ids_for(1, 20, seed=2)
    dsa = DSAAttention(stack, top_k=4)
    with torch.no_grad():
        alone = model(ids, cache=model.new_cache(), backend=dsa)
        padded = torch.cat([torch.full((1, 5), 1), ids], dim=1)
        mask = torch.cat([torch.zeros(1, 5), torch.ones(1, 20)], dim=1)
        batch = model(torch.cat([padded, ids_for(1, 25, seed=3)]), cache=model.new_cache(),
                      attention_mask=torch.cat([mask, torch.ones(1, 25)]), backend=dsa)
    torch.testing.assert_close(batch[:1, 5:], alone, atol=1e-4, rtol=1e-4)


def test_a_cache_filled_by_another_backend_is_refused(model, stack):
    cache = model.new_cache()
    with torch.no_grad():
        model(ids_for(1, 10), cache=cache)
        with pytest.raises(ValueError, match="one DSAAttention from its first token on"):
            model(ids_for(1, 1), cache=cache, backend=DSAAttention(stack, top_k=4))


def test_indexer_save_load_round_trip(tmp_path, stack):
    stack.save(tmp_path, extra={"note": "kept"})
    loaded = IndexerStack.from_pretrained(tmp_path)
    assert loaded.config == stack.config and json.loads((tmp_path / CONFIG_FILE).read_text())["note"] == "kept"
    for name, t in stack.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], t), name
    (tmp_path / "config.json").write_text(json.dumps({"num_hidden_layers": 7, "hidden_size": 64}))
    with pytest.raises(ValueError, match="but the model in .* has 7"):
        IndexerStack.from_pretrained(tmp_path)


# ---- training ----------------------------------------------------------------------------------------
def test_training_lowers_the_kl_and_writes_files_both_loaders_accept(tiny_checkpoint, tmp_path, capsys):
    from transformers import AutoModelForCausalLM

    from ds_core.__main__ import main

    path = tmp_path / "ckpt"
    shutil.copytree(tiny_checkpoint, path)
    assert main(["train-indexer", "--model", str(path), "--steps", "30", "--batch-size", "2", "--seq-len", "64",
                 "--train-windows", "40", "--eval-windows", "4", "--head-dim", "16"]) == 0
    out = capsys.readouterr().out
    assert "final training KL" in out and "k =  16: indexer" in out
    result = json.loads((path / CONFIG_FILE).read_text())["training"]
    assert result["after"]["kl"] < 0.9 * result["before"]["kl"], result
    assert (path / WEIGHTS_FILE).is_file()

    dsa = get_backend("dsa", indexers=path, top_k=8)  # by name, as the app and the CLI pick backends
    model = DeepSeekModel.from_pretrained(path)
    with torch.no_grad():
        assert torch.isfinite(model(ids_for(1, 20), backend=dsa)).all()
    assert "top-8 of 20 keys" in dsa.last_note
    AutoModelForCausalLM.from_pretrained(path)  # the extra files leave transformers' loading alone
