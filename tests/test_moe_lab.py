"""The MoE lab (ds_core.labs.moe): the routing statistics are the Router's own and add up, the step-by-step view
equals both our Router's output and transformers' router on the same input, and the interventions change the
model's output and then put the model back exactly."""

from __future__ import annotations

import pytest
import torch

from conftest import CONFIGS
from ds_core import DeepSeekModel, Tokenizer
from ds_core.labs import moe as lab
from ds_core.attention import WindowAttention
from ds_core.evaluation.quality import RunOptions, perplexity
from ds_core.model.moe import Router
from ds_core.perf.moe_gathered import install_layer

NAMES = list(CONFIGS)


@pytest.fixture(scope="module")
def models(reference_checkpoints):
    return {name: DeepSeekModel.from_pretrained(path) for name, (path, _) in reference_checkpoints.items()}


def prompt(batch=2, length=12, seed=0):
    return torch.randint(2, 320, (batch, length), generator=torch.Generator().manual_seed(seed))


def router_calls(model, ids):
    """Each Router's input x [N, D] and returned Routing in one traced forward pass, captured by hooks."""
    calls = {}
    hooks = [m.register_forward_hook(lambda mod, args, out, name=name: calls.__setitem__(name, (args[0], out)))
             for name, m in model.named_modules() if isinstance(m, Router)]
    try:
        # as route() runs it (traced attention takes its explicit path): the same kernels, so the same bits
        with torch.inference_mode(), model.trace():
            model(ids)
    finally:
        for h in hooks:
            h.remove()
    return {int(name.split(".")[1]): call for name, call in calls.items()}


# ---- routing statistics ------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
def test_routing_statistics_add_up(models, name):
    model = models[name]
    cfg = model.config
    ids = prompt()
    N, k, E = ids.numel(), cfg.num_experts_per_tok, cfg.n_routed_experts
    layers = lab.route(model, ids)
    assert [lr.layer for lr in layers] == [i for i in range(cfg.num_hidden_layers) if i >= cfg.first_k_dense_replace]
    for lr in layers:
        assert lr.experts.shape == (N, k) and lr.scores.shape == (N, E)
        assert (lr.experts.sort(-1).values.diff(dim=-1) > 0).all()  # k different experts per token
        chosen = lr.scores.gather(1, lr.experts)
        if cfg.norm_topk_prob:
            torch.testing.assert_close(lr.weights.sum(-1), torch.full((N,), cfg.routed_scaling_factor))
            chosen = chosen / chosen.sum(-1, keepdim=True)
        torch.testing.assert_close(lr.weights, chosen * cfg.routed_scaling_factor)  # unbiased affinities
        assert int(lr.load.sum()) == N * k
        assert torch.equal(lr.load, torch.bincount(lr.experts.flatten(), minlength=E))
        assert lr.chosen().sum(-1).eq(k).all() and (lr.chosen() <= lr.eligible()).all()
        if cfg.uses_groups:
            per_group = E // cfg.n_group
            assert lr.kept_groups.shape == (N, cfg.topk_group)
            assert ((lr.experts // per_group)[:, :, None] == lr.kept_groups[:, None, :]).any(-1).all()
            assert lr.eligible().sum(-1).eq(cfg.topk_group * per_group).all()
        else:
            assert lr.kept_groups is None and lr.eligible().all()
        assert (lr.biased_scores is None) == (cfg.scoring_func != "sigmoid")
        assert (lr.shared_norm is None) == (not cfg.n_shared_experts)
        assert lr.routed_norm.shape == (N,) and (lr.routed_norm > 0).all()


@pytest.mark.parametrize("name", NAMES)
def test_route_is_what_the_router_returned_and_what_transformers_routes(models, reference_checkpoints, name):
    model, (_, reference) = models[name], reference_checkpoints[name]
    ids = prompt()
    layers = {lr.layer: lr for lr in lab.route(model, ids)}
    for i, (x, r) in router_calls(model, ids).items():
        lr = layers[i]
        for key in ("scores", "experts", "weights", "group_scores", "kept_groups", "biased_scores"):
            ours, traced = getattr(r, key), getattr(lr, key)
            assert (ours is None) == (traced is None), key
            if ours is not None:
                assert torch.equal(ours, traced), key
        with torch.no_grad():  # transformers' router on the very same input
            _, ref_weights, ref_experts = reference.model.layers[i].mlp.gate(x)
        order, ref_order = lr.experts.argsort(-1), ref_experts.argsort(-1)
        assert torch.equal(lr.experts.gather(1, order), ref_experts.gather(1, ref_order))
        torch.testing.assert_close(lr.weights.gather(1, order), ref_weights.gather(1, ref_order))


@pytest.mark.parametrize("name", NAMES)
def test_selection_steps_lay_out_the_router_s_choice(models, name):
    model = models[name]
    cfg = model.config
    lr = lab.route(model, prompt())[0]
    for token in (0, 7, -1):
        steps = lab.selection_steps(lr, token)
        rows = steps["experts"]
        chosen = sorted(r["expert"] for r in rows if r["chosen"])
        assert chosen == sorted(lr.experts[token].tolist())
        # the chosen are the top-k choice scores among the experts of kept groups (re-derived from the rows)
        eligible = sorted((r for r in rows if r["group_kept"]), key=lambda r: -r["choice_score"])
        assert sorted(r["expert"] for r in eligible[:steps["k"]]) == chosen
        assert sorted(r["rank"] for r in rows if r["chosen"]) == list(range(1, steps["k"] + 1))
        for r in rows:
            torch.testing.assert_close(r["choice_score"], r["affinity"] + r["bias"], atol=1e-6, rtol=0)
        kept = [g for g in steps["groups"] if g["kept"]]
        assert len(kept) == (cfg.topk_group if cfg.uses_groups else 1)
        assert {r["group"] for r in rows if r["chosen"]} <= {g["group"] for g in kept}
        if cfg.norm_topk_prob:
            assert sum(r["weight"] for r in rows) == pytest.approx(cfg.routed_scaling_factor, abs=1e-5)
        text = lab.format_steps(steps, cfg)
        assert text.count("\n") == 4 and all(f"e{e}" in text.splitlines()[3] for e in chosen)
    with pytest.raises(ValueError, match="token must be an integer"):
        lab.selection_steps(lr, lr.scores.shape[0])


def test_contribution_norms_are_the_traced_outputs_norms(models):
    model = models["v3_groups"]
    ids = prompt()
    layers = lab.route(model, ids)
    with torch.no_grad(), model.trace() as tr:
        model(ids)
    for lr, row in zip(layers, lab.contribution_norms(layers)):
        shared = tr[f"layers.{lr.layer}.moe.shared_output"].flatten(0, 1).norm(dim=-1)
        routed = tr[f"layers.{lr.layer}.moe.routed_output"].flatten(0, 1).norm(dim=-1)
        assert row["shared_norm"] == pytest.approx(float(shared.mean()), rel=1e-5)
        assert row["routed_norm"] == pytest.approx(float(routed.mean()), rel=1e-5)
        assert row["shared_over_routed"] == pytest.approx(row["shared_norm"] / row["routed_norm"])


def test_correction_bias_changes_the_choice_not_the_weights(models):
    model = models["v3_groups"]
    ids = prompt(batch=4)
    before = lab.route(model, ids)
    with lab.without_correction_bias(model):
        after = lab.route(model, ids)
    first = lab.routing_changes(before, after)[0]  # the first MoE layer sees the same input either way
    assert first["changed"] > 0
    assert first["same_set_weight_diff"] is not None and first["same_set_weight_diff"] < 1e-6
    assert all(lr.biased_scores is None for lr in after)
    assert lab.routing_changes(before, before)[0] == {"layer": before[0].layer, "changed": 0.0,
                                                      "same_set_weight_diff": 0.0}


# ---- interventions -----------------------------------------------------------------------------------------
def snapshot(model) -> dict:
    """Everything an intervention could leave changed: module objects, parameter and buffer objects (and their
    values), the routers' configs and the state_dict's keys in order."""
    return {"modules": [(n, id(m)) for n, m in model.named_modules()],
            "tensors": [(n, id(t), t.clone()) for n, t in (*model.named_parameters(), *model.named_buffers())],
            "configs": [id(m.cfg) for m in model.modules() if isinstance(m, Router)],
            "keys": list(model.state_dict())}


def assert_same(model, before: dict) -> None:
    after = snapshot(model)
    for key in ("modules", "configs", "keys"):
        assert after[key] == before[key], key
    assert [(n, i) for n, i, _ in after["tensors"]] == [(n, i) for n, i, _ in before["tensors"]]
    for (n, _, a), (_, _, b) in zip(after["tensors"], before["tensors"]):
        assert torch.equal(a, b), n


CASES = [(name, iv) for name in NAMES for iv in lab.INTERVENTIONS]


@pytest.mark.parametrize("name,intervention", CASES, ids=[f"{n}-{i}" for n, i in CASES])
def test_intervention_changes_the_output_and_restores_the_model_exactly(models, name, intervention):
    model = models[name]
    cfg = model.config
    if intervention not in lab.interventions_for(cfg):
        with pytest.raises(ValueError, match="no correction bias"):
            lab.intervene(model, intervention).__enter__()
        return
    ids = prompt()
    before, state = model(ids).detach(), snapshot(model)
    with lab.intervene(model, intervention):
        changed = model(ids).detach()
        with torch.no_grad(), model.trace() as tr:
            model(ids)
        layers = lab.route(model, ids)
    assert not torch.allclose(changed, before, atol=1e-4)
    if intervention == "top1":
        assert all(lr.experts.shape[1] == 1 for lr in layers)
        if cfg.norm_topk_prob:
            assert all(torch.allclose(lr.weights, torch.tensor(cfg.routed_scaling_factor)) for lr in layers)
    elif intervention == "no_shared":
        assert not any(k.endswith("shared_output") for k in tr)
        for lr in layers:
            assert torch.equal(tr[f"layers.{lr.layer}.mlp.output"], tr[f"layers.{lr.layer}.moe.routed_output"])
    else:
        assert not any(k.endswith("biased_scores") for k in tr)
    assert_same(model, state)
    assert torch.equal(model(ids).detach(), before)


def test_interventions_compose_and_restore_after_an_exception(models):
    model = models["v3_groups"]
    ids = prompt()
    before, state = model(ids).detach(), snapshot(model)
    with pytest.raises(RuntimeError, match="inside"):
        with lab.intervene(model, "top1", "no_shared", "no_bias"):
            layers = lab.route(model, ids)
            with torch.no_grad(), model.trace() as tr:
                model(ids)
            raise RuntimeError("inside the block")
    assert all(lr.experts.shape[1] == 1 and lr.biased_scores is None and lr.shared_norm is None for lr in layers)
    assert not any(k.endswith(("shared_output", "biased_scores")) for k in tr)
    assert_same(model, state)
    assert torch.equal(model(ids).detach(), before)


@pytest.mark.parametrize("call,match", [
    (lambda m: lab.force_top_k(m, 0), "num_experts_per_tok must be in 1..8"),
    (lambda m: lab.force_top_k(m, 5), "topk_group=2 groups of 2 experts cannot hold top-5"),
    (lambda m: lab.intervene(m, "top2").__enter__(), "interventions must be among top1, no_shared, no_bias"),
])
def test_bad_interventions_are_refused_and_change_nothing(models, call, match):
    model = models["v3_groups"]
    state = snapshot(model)
    with pytest.raises(ValueError, match=match):
        call(model)
    assert_same(model, state)


def test_shared_weight_copy_shares_tensors_but_not_patches(models):
    model = models["v3_groups"]
    ids = prompt()
    model.compile_decode()  # a model the app has decoded with: its compiled step is not copied
    moe = model.layers[1].mlp
    install_layer(moe)
    copy = lab.shared_weight_copy(model)
    assert all(a is b for a, b in zip(copy.parameters(), model.parameters()))
    assert all(a is b for a, b in zip(copy.buffers(), model.buffers()))
    assert copy.layers[1].mlp.gathered.stacked[0] is moe.gathered.stacked[0]
    assert copy.__dict__["_compiled_decode"] is None
    assert copy.compile_decode().model is copy
    before = model(ids).detach()
    assert torch.equal(copy(ids).detach(), before)
    with lab.intervene(copy, "no_shared", "no_bias"):
        assert torch.equal(model(ids).detach(), before)
        assert not torch.allclose(copy(ids).detach(), before, atol=1e-4)


def test_measure_interventions_runs_the_eval_functions_under_each_patch(reference_checkpoints, models):
    model, tok = models["v3_groups"], Tokenizer.from_pretrained(reference_checkpoints["v3_groups"][0])
    opts = RunOptions(backend=WindowAttention(8), batch_size=2)
    seen = []
    rows = lab.measure_interventions(model, tok, ["no_shared", ("top1", "no_bias")], n=2, per_bucket=1,
                                     seq_len=24, opts=opts, progress=lambda done, what: seen.append(done))
    assert [r["name"] for r in rows] == ["baseline", "no_shared", "top1+no_bias"]
    assert rows[2]["label"] == "force top-1 + switch off the correction bias"
    assert seen == [0, 1 / 3, 2 / 3]
    # each row is the eval function under the same patch and options, so the patches compose with opts
    assert rows[0]["perplexity"] == perplexity(model, tok, "test", 2, 24, opts)["perplexity"]
    with lab.intervene(model, "no_shared"):
        assert rows[1]["perplexity"] == perplexity(model, tok, "test", 2, 24, opts)["perplexity"]
    assert rows[0]["perplexity"] != perplexity(model, tok, "test", 2, 24, RunOptions())["perplexity"]  # opts used
    assert rows[0]["d_perplexity"] == 0 and rows[1]["d_perplexity"] == rows[1]["perplexity"] - rows[0]["perplexity"]
    assert all(r["probes"] == 4 and set(r["recall_by_bucket"]) == {"<=32", "33-128", "129-256", "257-480"}
               for r in rows)
    assert len(lab.format_interventions(rows).splitlines()) == 4
    with pytest.raises(ValueError, match="n \\(story windows\\) must be an integer >= 1"):
        lab.measure_interventions(model, tok, n=0)
    with pytest.raises(ValueError, match="no correction bias"):
        lab.measure_interventions(DeepSeekModel.from_pretrained(reference_checkpoints["v2_lite"][0]), tok,
                                  ["no_bias"], n=1, per_bucket=1, seq_len=8)
