"""The tracer: every documented name, with its documented shape, holding the tensor the forward pass really used.

The names and shapes are read from ds_core/trace.py's docstring, so the documentation is what is tested.
"""

import re
import threading

import pytest
import torch
import torch.nn.functional as F
from einops import rearrange

from conftest import CONFIGS
from ds_core import DeepSeekModel
from ds_core import trace as trace_mod

TOL = dict(atol=1e-5, rtol=1e-5)
NAMES = list(CONFIGS)
MLA = ["naive", "absorbed"]

DOCUMENTED = dict(re.findall(r"^ {4}([\w.{}]+)\s+\[([^\]]*)\]", trace_mod.__doc__, flags=re.M))


@pytest.fixture(scope="module")
def models(reference_checkpoints):
    return {name: DeepSeekModel.from_pretrained(path) for name, (path, _) in reference_checkpoints.items()}


def prompt(batch=2, length=10, seed=0):
    return torch.randint(2, 320, (batch, length), generator=torch.Generator().manual_seed(seed))


def expected_names(cfg) -> set[str]:
    """The documented names that apply to this config, layer templates expanded."""
    out = set()
    for name in DOCUMENTED:
        if "{i}" not in name:
            out.add(name)
            continue
        for i in range(cfg.num_hidden_layers):
            if ".moe." in name and not cfg.is_moe_layer(i):
                continue
            if name.endswith("q_latent") and not cfg.q_lora_rank:
                continue
            if name.endswith(("group_scores", "kept_groups")) and not cfg.uses_groups:
                continue
            if name.endswith("biased_scores") and cfg.scoring_func != "sigmoid":  # no correction bias
                continue
            if name.endswith("shared_output") and not cfg.n_shared_experts:
                continue
            out.add(name.replace("{i}", str(i)))
    return out


def expected_shape(template: str, cfg, B: int, T: int, S: int) -> tuple[int, ...]:
    sizes = dict(B=B, T=T, S=S, D=cfg.hidden_size, H=cfg.num_attention_heads, E=cfg.n_routed_experts,
                 k=cfg.num_experts_per_tok, V=cfg.vocab_size, d_qk=cfg.qk_head_dim, n_group=cfg.n_group)
    return tuple(sizes[s] if s in sizes else getattr(cfg, s) for s in (x.strip() for x in template.split(",")))


def template_of(name: str) -> str:
    return re.sub(r"^layers\.\d+\.", "layers.{i}.", name)


def test_docstring_lists_the_names():
    assert len(DOCUMENTED) >= 23
    assert DOCUMENTED["layers.{i}.attn.probs"] == "B, H, T, S"
    assert DOCUMENTED["logits"] == "B, T, V"


@pytest.mark.parametrize("mla", MLA)
@pytest.mark.parametrize("name", NAMES)
def test_every_documented_name_with_its_shape(models, name, mla):
    model = models[name]
    cfg = model.config
    ids = prompt()
    with model.trace() as tr:
        logits = model(ids, mla=mla)
    assert set(tr) == expected_names(cfg)
    for key, t in tr.items():
        assert tuple(t.shape) == expected_shape(DOCUMENTED[template_of(key)], cfg, 2, 10, 10), key
    assert torch.equal(tr["logits"], logits)
    assert tr.shapes()["logits"] == (2, 10, cfg.vocab_size)
    assert "layers.0.attn.probs" in repr(tr)


@pytest.mark.parametrize("mla", MLA)
def test_decode_step_shapes_with_cache(models, mla):
    """With a cache, S counts the cached tokens plus the new ones."""
    model = models["v3_groups"]
    ids = prompt(length=9)
    cache = model.new_cache(mla)
    model(ids[:, :7], cache=cache)
    with model.trace() as tr:
        model(ids[:, 7:9], cache=cache)
    for key, t in tr.items():
        assert tuple(t.shape) == expected_shape(DOCUMENTED[template_of(key)], model.config, 2, 2, 9), key
    assert tr["positions"].tolist() == [[7, 8], [7, 8]]
    probs = tr["layers.1.attn.probs"]
    assert (probs[:, :, 0, 8] == 0).all() and (probs[:, :, 1, :] > 0).all()  # token 7 cannot see token 8


@pytest.mark.parametrize("mla", MLA)
@pytest.mark.parametrize("name", NAMES)
def test_attention_tensors_are_the_ones_used(models, name, mla):
    model = models[name]
    ids = prompt()
    with model.trace() as tr:
        model(ids, mla=mla)
    T = ids.shape[1]
    above = torch.ones(T, T, dtype=torch.bool).triu(1)
    assert torch.equal(tr["positions"], torch.arange(T).expand(2, T))
    for i, layer in enumerate(model.layers):
        attn = layer.self_attn
        p = f"layers.{i}.attn"
        probs, scores = tr[f"{p}.probs"], tr[f"{p}.scores"]
        torch.testing.assert_close(probs.sum(-1), torch.ones(probs.shape[:-1]), **TOL)
        assert (probs[..., above] == 0).all() and (probs[..., ~above] > 0).all()
        assert torch.isneginf(scores[..., above]).all()
        torch.testing.assert_close(scores.softmax(-1), probs, **TOL)
        q, k, v = tr[f"{p}.q"], tr[f"{p}.k"], tr[f"{p}.v"]
        torch.testing.assert_close((q @ k.transpose(-1, -2) * attn.scale)[..., ~above], scores[..., ~above], **TOL)
        # the attention output is o_proj of probs @ v, heads side by side
        out = attn.o_proj(rearrange(probs @ v, "b h t d -> b t (h d)"))
        torch.testing.assert_close(out, tr[f"{p}.output"], **TOL)
        # k and v are the up-projected latent; the rope part of k is the one shared rotated key
        torch.testing.assert_close(tr[f"{p}.input"], layer.input_layernorm(tr[f"layers.{i}.input"]), **TOL)
        k_full, v_full = attn.expand(tr[f"{p}.kv_latent"], tr[f"{p}.k_rope"])
        torch.testing.assert_close(k, k_full, **TOL)
        torch.testing.assert_close(v, v_full, **TOL)
        torch.testing.assert_close(k[..., attn.d_nope:], tr[f"{p}.k_rope"][:, None].expand(-1, attn.n_heads, -1, -1))
        if model.config.q_lora_rank:
            q_nope = rearrange(attn.q_b_proj(tr[f"{p}.q_latent"]), "b t (h d) -> b h t d", h=attn.n_heads)
            torch.testing.assert_close(q[..., :attn.d_nope], q_nope[..., :attn.d_nope], **TOL)


@pytest.mark.parametrize("name", NAMES)
def test_residual_stream_and_moe(models, name):
    model = models[name]
    cfg = model.config
    ids = prompt()
    with model.trace() as tr:
        logits = model(ids)
    torch.testing.assert_close(tr["embed"], model.embed_tokens(ids))
    assert torch.equal(tr["layers.0.input"], tr["embed"])
    moe_layers = 0
    for i, layer in enumerate(model.layers):
        x, p = tr[f"layers.{i}.input"], f"layers.{i}"
        torch.testing.assert_close(tr[f"{p}.output"], x + tr[f"{p}.attn.output"] + tr[f"{p}.mlp.output"], **TOL)
        if i + 1 < len(model.layers):
            assert torch.equal(tr[f"layers.{i + 1}.input"], tr[f"{p}.output"])
        if not cfg.is_moe_layer(i):
            continue
        moe_layers += 1
        h = layer.post_attention_layernorm(x + tr[f"{p}.attn.output"])  # what the MoE sees
        torch.testing.assert_close(tr[f"{p}.moe.shared_output"] + tr[f"{p}.moe.routed_output"],
                                   tr[f"{p}.mlp.output"], **TOL)
        torch.testing.assert_close(tr[f"{p}.moe.shared_output"], layer.mlp.shared_experts(h), **TOL)
        scores, experts, weights = tr[f"{p}.moe.scores"], tr[f"{p}.moe.experts"], tr[f"{p}.moe.weights"]
        router_logits = F.linear(h, layer.mlp.gate.weight)
        expected_scores = router_logits.sigmoid() if cfg.scoring_func == "sigmoid" else router_logits.softmax(-1)
        torch.testing.assert_close(scores, expected_scores, **TOL)

        # the choice: top-k of the (biased) scores among the experts of the kept groups
        bias = layer.mlp.gate.e_score_correction_bias
        choice = scores + bias if bias is not None else scores.clone()
        if bias is not None:
            torch.testing.assert_close(tr[f"{p}.moe.biased_scores"], choice, **TOL)
        if cfg.uses_groups:
            grouped = choice.view(*choice.shape[:2], cfg.n_group, -1)
            group_scores = tr[f"{p}.moe.group_scores"]
            torch.testing.assert_close(group_scores, grouped.topk(2, dim=-1).values.sum(-1), **TOL)
            kept = group_scores.topk(cfg.topk_group, dim=-1).indices
            assert torch.equal(tr[f"{p}.moe.kept_groups"].sort(-1).values, kept.sort(-1).values)
            per_group = cfg.n_routed_experts // cfg.n_group
            assert ((experts // per_group)[..., :, None] == kept[..., None, :]).any(-1).all()  # in kept groups
            allowed = torch.zeros_like(group_scores, dtype=torch.bool).scatter_(-1, kept, True)
            choice = choice.masked_fill(~allowed.repeat_interleave(per_group, dim=-1), float("-inf"))
        expected_experts = choice.topk(cfg.num_experts_per_tok, dim=-1).indices
        assert torch.equal(experts.sort(-1).values, expected_experts.sort(-1).values)
        assert experts.shape[-1] == cfg.num_experts_per_tok and (experts.sort(-1).values.diff(dim=-1) > 0).all()

        # the weights: unbiased scores of the chosen experts, normalised, times routed_scaling_factor
        chosen = scores.gather(-1, experts)
        if cfg.norm_topk_prob:
            torch.testing.assert_close(weights.sum(-1), torch.full(weights.shape[:-1], cfg.routed_scaling_factor))
            chosen = chosen / chosen.sum(-1, keepdim=True)
        torch.testing.assert_close(weights, chosen * cfg.routed_scaling_factor, **TOL)

        # the routed output is Σ weight · expert(x), computed token by token
        b, t = 1, 4
        routed = sum(w * layer.mlp.experts[int(e)](h[b, t]) for e, w in zip(experts[b, t], weights[b, t]))
        torch.testing.assert_close(tr[f"{p}.moe.routed_output"][b, t], routed, **TOL)
    assert moe_layers == cfg.num_hidden_layers - cfg.first_k_dense_replace
    last = tr[f"layers.{cfg.num_hidden_layers - 1}.output"]
    torch.testing.assert_close(tr["final_norm"], model.norm(last), **TOL)
    torch.testing.assert_close(logits, model.lm_head(tr["final_norm"]), **TOL)


@pytest.mark.parametrize("name", NAMES)
def test_naive_and_absorbed_traces_agree(models, name):
    model = models[name]
    ids = prompt()
    traces = {}
    for mla in MLA:
        with model.trace() as traces[mla]:
            model(ids, mla=mla)
    naive, absorbed = traces["naive"], traces["absorbed"]
    assert set(naive) == set(absorbed)
    for i in range(model.config.num_hidden_layers):
        for what in ("q", "k", "v", "probs", "kv_latent", "k_rope", "output"):
            key = f"layers.{i}.attn.{what}"
            torch.testing.assert_close(naive[key], absorbed[key], **TOL, msg=key)
        s_n, s_a = naive[f"layers.{i}.attn.scores"], absorbed[f"layers.{i}.attn.scores"]
        assert torch.equal(torch.isinf(s_n), torch.isinf(s_a))
        torch.testing.assert_close(s_n[s_n.isfinite()], s_a[s_a.isfinite()], **TOL)


def test_nothing_recorded_outside_the_block(models):
    model = models["v3_groups"]
    ids = prompt()
    model(ids)  # before: nothing to record into
    with model.trace() as tr:
        assert trace_mod.active() is tr
        model(ids)
    assert trace_mod.active() is None
    snapshot = {k: v.clone() for k, v in tr.items()}
    model(prompt(length=6, seed=9))
    model(prompt(length=6, seed=9), mla="naive")
    assert set(tr) == set(snapshot)
    assert all(torch.equal(tr[k], snapshot[k]) for k in tr)


def test_nested_traces_record_into_the_innermost(models):
    model = models["v3_groups"]
    with model.trace() as outer:
        model(prompt(length=4))
        with model.trace() as inner:
            model(prompt(length=6))
        assert trace_mod.active() is outer
    assert outer["embed"].shape[1] == 4 and inner["embed"].shape[1] == 6


def test_a_trace_sees_only_its_own_thread(models):
    model = models["v3_groups"]
    mine, theirs = prompt(length=10), prompt(length=5, seed=3)
    start = threading.Barrier(2)
    other_trace, errors = {}, []

    def other():
        try:
            start.wait()
            for _ in range(5):
                model(theirs)          # untraced forward while the main thread's trace is open
            with model.trace() as tr:  # and a trace of its own
                model(theirs)
            other_trace["tr"] = tr
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    worker = threading.Thread(target=other)
    with model.trace() as tr:
        worker.start()
        start.wait()
        for _ in range(5):
            logits = model(mine)
        worker.join()
    assert not errors
    assert set(tr) == expected_names(model.config)
    for key, t in tr.items():  # every tensor is from the main thread's 10-token forward
        assert tuple(t.shape) == expected_shape(DOCUMENTED[template_of(key)], model.config, 2, 10, 10), key
    assert torch.equal(tr["logits"], logits)
    assert other_trace["tr"]["embed"].shape[1] == 5 and other_trace["tr"]["logits"].shape[1] == 5


@pytest.mark.parametrize("mla", MLA)
def test_tracing_does_not_change_the_logits(models, mla):
    model = models["v3_yarn"]
    ids = prompt()
    plain = model(ids, mla=mla)
    with model.trace():
        traced = model(ids, mla=mla)
    torch.testing.assert_close(traced, plain, atol=1e-5, rtol=0)
    # and with a cache, decoding step by step
    cache, traced_steps = model.new_cache(mla), []
    cache_plain, plain_steps = model.new_cache(mla), []
    for t in range(ids.shape[1]):
        plain_steps.append(model(ids[:, t:t + 1], cache=cache_plain))
        with model.trace():
            traced_steps.append(model(ids[:, t:t + 1], cache=cache))
    torch.testing.assert_close(torch.cat(traced_steps, 1), torch.cat(plain_steps, 1), atol=1e-5, rtol=0)
    torch.testing.assert_close(torch.cat(plain_steps, 1), plain, atol=1e-4, rtol=0)
