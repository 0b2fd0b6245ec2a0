"""The tabs' handlers called directly, no gradio server: each tab's output checked against the engine (traced
tensors, the labs' numbers, ds_core.generate), bad input refused with gr.Error and its message, and build_app's
wiring: every event is its module's on_<api_name> bound to the context, streaming and reporting progress as gradio
sees it. The served path (gradio_client) stays covered by tests/test_*_tab.py."""

from __future__ import annotations

import re
import sys
from contextlib import contextmanager
from functools import partial
from pathlib import Path

import pytest
import torch

gr = pytest.importorskip("gradio")

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import app  # noqa: E402
from ds_core import DeepSeekModel, SamplingParams, Tokenizer, generate  # noqa: E402
from ds_core.attention import DenseAttention, WindowAttention  # noqa: E402
from ds_core.evaluation import sizes  # noqa: E402
from ds_core.generate import next_token_probs  # noqa: E402
from ds_core.labs import moe as moe_lab  # noqa: E402
from ds_core.labs.attention import sharpness  # noqa: E402
from ds_core.labs.mla import SCHEMES, kv_bytes_by_model  # noqa: E402
from ds_core.ui import (AppContext, attention_tab, generate_tab, mla_tab, model_tab, moe_tab, qkv_tab,  # noqa: E402
                        temperature_tab)

PROMPT = "Once upon a time a fox named Ada found a red key under the old bridge."
WINDOW = ("window", 4, 1, "6", 8, 1.0)  # scheme, window, sinks, global positions, top-k, τ_attn
DENSE = ("dense", 4, 1, "", 8, 1.0)


@pytest.fixture(scope="module")
def ctx(tiny_checkpoint) -> AppContext:
    """What build_app gives the tabs: the tiny model and its tokenizer."""
    return AppContext.load(tiny_checkpoint, DeepSeekModel.from_pretrained(tiny_checkpoint))


@pytest.fixture(scope="module")
def engine(tiny_checkpoint):
    """(model, tokenizer) loaded apart from ctx's, to compute what the handlers should return."""
    return DeepSeekModel.from_pretrained(tiny_checkpoint), Tokenizer.from_pretrained(tiny_checkpoint)


@contextmanager
def refused(pattern: str):
    """The block must raise gr.Error whose message (the text the visitor sees) matches pattern."""
    with pytest.raises(gr.Error) as err:
        yield
    assert re.search(pattern, err.value.message), err.value.message


def traced(model, ids, **kwargs):
    with torch.no_grad(), model.trace() as tr:
        model(ids, **kwargs)
    return tr


def z(fig) -> torch.Tensor:
    """The values a heatmap figure draws."""
    return torch.tensor(fig.data[0].z)


def prompt_ids(engine, prompt=PROMPT) -> torch.Tensor:
    return torch.tensor([engine[1].encode(prompt)])


def continuation(engine, prompt=PROMPT, **kwargs) -> str:
    return "".join(s.text for s in generate(*engine, prompt, **kwargs))


# ---- the context and the wiring ------------------------------------------------------------------------------
def test_the_app_loads_the_tokenizer_once_for_every_tab(tiny_checkpoint, monkeypatch):
    loads = []
    real = Tokenizer.from_pretrained.__func__
    monkeypatch.setattr(Tokenizer, "from_pretrained", classmethod(lambda cls, path: loads.append(path) or
                                                                  real(cls, path)))
    demo = app.build_app(tiny_checkpoint)
    assert loads == [tiny_checkpoint]
    assert {fn.api_name for fn in demo.fns.values()} >= {"generate", "qkv", "attention", "sharpness", "mla",
                                                         "moe_routing", "kv_cache"}


def test_a_checkpoint_without_tokenizer_gets_a_notice_on_each_tab_that_needs_one(tiny_checkpoint, tmp_path):
    for name in ("config.json", "model.safetensors"):
        (tmp_path / name).symlink_to(tiny_checkpoint / name)
    ctx = AppContext.load(tmp_path, DeepSeekModel.from_pretrained(tmp_path))
    assert ctx.tokenizer is None and "tokenizer.json" in ctx.tokenizer_error
    demo = app.build_app(tmp_path, model=ctx.model)
    texts = [c["props"].get("value") or "" for c in demo.config["components"] if c["type"] == "markdown"]
    notice = f"This tab needs the checkpoint's tokenizer, and `{tmp_path}` has none that loads: {ctx.tokenizer_error}."
    assert texts.count(notice) == 5  # QKV, attention, τ, MLA, MoE; Generate says it its own way; Model needs none
    assert {fn.api_name for fn in demo.fns.values()} == {"kv_cache", "tensors"}


def test_every_event_is_its_module_s_handler_and_streams_or_reports_progress_as_it_does(ctx, tiny_checkpoint):
    demo = app.build_app(tiny_checkpoint, model=ctx.model)
    modules = {m.__name__: m for m in app.tabs()}
    fns = list(demo.fns.values())
    assert len(fns) == 13
    for fn in fns:
        assert isinstance(fn.fn, partial), fn.api_name
        handler = fn.fn.func
        assert handler.__name__ == f"on_{fn.api_name}" and getattr(modules[handler.__module__],
                                                                     handler.__name__) is handler
        assert fn.types_generator == (fn.api_name in {"generate", "attention_generate"}), fn.api_name
        assert fn.tracks_progress == (fn.api_name in {"mla_speed", "moe_interventions"}), fn.api_name


# ---- Generate ------------------------------------------------------------------------------------------------
def test_generate_streams_ds_core_s_text_and_records_each_step_s_distribution(ctx, engine):
    model, tok = engine
    outputs = list(generate_tab.on_generate(ctx, PROMPT, 0.8, 50, 0.95, 6, 7))
    steps = list(generate(model, tok, PROMPT, temperature=0.8, top_k=50, top_p=0.95, max_new_tokens=6, seed=7))
    assert len(outputs) == len(steps) + 1  # one update per token, then the final one with the distributions
    texts = [out[0] for out in outputs]
    assert texts[-1] == "".join(s.text for s in steps) and all(texts[-1].startswith(t) for t in texts)
    assert f"**{len(steps)}** new tokens" in outputs[-1][1]

    generation, figure = outputs[-1][2], outputs[-1][4]
    assert [c.sampled_id for c in generation.steps] == [s.token_id for s in steps]
    ids = tok.encode(PROMPT) + [s.token_id for s in steps]
    for index, c in enumerate(generation.steps):
        with torch.no_grad():  # a fresh forward pass, no cache: the logits this step was sampled from
            logits = model(torch.tensor([ids[:len(ids) - len(steps) + index]]))[0, -1]
        probs = next_token_probs(logits, SamplingParams(0.8, 50, 0.95))
        torch.testing.assert_close(torch.tensor(c.probs), probs[c.ids], rtol=1e-4, atol=1e-6)
        assert c.probs == sorted(c.probs, reverse=True)
        assert c.sampled_prob == pytest.approx(float(probs[c.sampled_id]), rel=1e-4)
    assert list(figure.data[0].y[:len(generation.steps[0].probs)]) == generation.steps[0].probs
    last = len(steps) - 1
    assert generate_tab.on_distribution(ctx, float(last), generation).layout.title.text.startswith(
        f"step {last} (of 0–{last})")


def test_generate_and_distribution_refuse_bad_input(ctx):
    with refused(r"^the prompt is empty: give at least one character of text$"):
        next(generate_tab.on_generate(ctx, "", 0.0, 0, 1.0, 3, 0))
    with refused(r"^top_p must be a finite number in \(0, 1\] \(1 turns it off\), got 0$"):
        next(generate_tab.on_generate(ctx, PROMPT, 0.0, 0, 0, 3, 0))
    with refused(r"^nothing generated yet: press Generate first, then choose a step$"):
        generate_tab.on_distribution(ctx, 0, None)
    *_, (_, _, generation, _, _) = generate_tab.on_generate(ctx, PROMPT, 0.0, 0, 1.0, 3, 0)
    with refused(r"^step must be an integer from 0 to 2 \(the last generation made 3 tokens\), got 3$"):
        generate_tab.on_distribution(ctx, 3, generation)


# ---- QKV projection ------------------------------------------------------------------------------------------
def test_qkv_heatmaps_are_the_traced_tensors(ctx, engine):
    shapes, *figs = qkv_tab.on_qkv(ctx, PROMPT, 2.0, 3)
    ids = prompt_ids(engine)
    tr, a = traced(engine[0], ids), "layers.2.attn"
    want = [tr[f"{a}.input"][0], tr[f"{a}.q_latent"][0], tr[f"{a}.kv_latent"][0], tr[f"{a}.q"][0, 3],
            tr[f"{a}.k"][0, 3], tr[f"{a}.v"][0, 3]]
    assert len(figs) == len(want) and shapes.startswith(f"**{ids.shape[1]} tokens**")
    for fig, expected in zip(figs, want):
        torch.testing.assert_close(z(fig), expected, atol=1e-5, rtol=1e-5)


def test_qkv_refuses_a_layer_or_head_the_model_lacks(ctx):
    with refused(r"^layer must be an integer from 0 to 2, got 3$"):
        qkv_tab.on_qkv(ctx, PROMPT, 3, 0)
    with refused(r"^head must be an integer from 0 to 3, got 4$"):
        qkv_tab.on_qkv(ctx, PROMPT, 0, 4)


# ---- Attention & masks ---------------------------------------------------------------------------------------
def test_attention_mask_and_probabilities_are_the_backend_s(ctx, engine):
    summary, table, mask_fig, probs_fig = attention_tab.on_attention(ctx, PROMPT, *WINDOW, 1, 2)
    ids = prompt_ids(engine)
    T = ids.shape[1]
    backend = WindowAttention(4, 1, (6,), block=attention_tab.WINDOW_BLOCK)
    pos = torch.arange(T)[None]
    want_mask = backend.allowed(pos, pos, None)[0]
    assert torch.equal(z(mask_fig).bool(), want_mask)
    torch.testing.assert_close(z(probs_fig), traced(engine[0], ids, backend=backend)["layers.1.attn.probs"][0, 2],
                               atol=1e-5, rtol=1e-5)
    measures = dict(table.data.values.tolist())  # the Styler's data: the unrounded numbers
    assert measures["prompt tokens T"] == T and measures[f"query-key pairs the mask allows (of {T * (T + 1) // 2} "
                                                        "causal)"] == int(want_mask.sum())
    assert measures["KL(dense ‖ scheme), nats per position"] > 0 and "block-sparse" in summary


def test_attention_generate_streams_the_scheme_beside_dense(ctx, engine):
    outputs = list(attention_tab.on_attention_generate(ctx, PROMPT, *WINDOW, 0.7, 6, 5))
    window = WindowAttention(4, 1, (6,), block=attention_tab.WINDOW_BLOCK)
    scheme, dense, stats = outputs[-1]
    assert scheme == continuation(engine, temperature=0.7, max_new_tokens=6, seed=5, backend=window)
    assert dense == continuation(engine, temperature=0.7, max_new_tokens=6, seed=5, backend=DenseAttention())
    assert len(outputs) > 1 and "agree on their first" in stats


def test_attention_refuses_bad_schemes_and_limits(ctx):
    with refused(r"^scheme must be one of dense, window, dsa, got 'sparse'$"):
        attention_tab.on_attention(ctx, PROMPT, "sparse", 4, 1, "", 8, 1.0, 0, 0)
    with refused(r"^window w must be an integer from 1 to 256, got 0$"):
        attention_tab.on_attention(ctx, PROMPT, "window", 0, 1, "", 8, 1.0, 0, 0)
    with refused(r"^max new tokens must be an integer from 1 to 128, got 129$"):
        next(attention_tab.on_attention_generate(ctx, PROMPT, *DENSE, 0, 129, 0))


# ---- τ sharpness ---------------------------------------------------------------------------------------------
def test_sharpness_table_is_attention_lab_s_and_sampling_bars_are_next_token_probs(ctx, engine):
    model, tok = engine
    _, lines, table = temperature_tab.on_sharpness(ctx, PROMPT, 1, 2, 5, "0.25, 1, 4")
    want = sharpness(model, tok, PROMPT, layer=1, head=2, taus=(0.25, 1.0, 4.0), position=5)
    for row, w in zip(table.data.values.tolist(), want, strict=True):
        assert row == pytest.approx([w[k] for k in temperature_tab.TABLE_COLUMNS], rel=1e-5)
    assert [line.name for line in lines.data] == ["τ_attn = 0.25", "τ_attn = 1", "τ_attn = 4"]

    _, bars, continuations = temperature_tab.on_sampling(ctx, PROMPT, "0, 1.5", 6, 3)
    with torch.no_grad():
        logits = model(prompt_ids(engine))[0, -1]
    for bar, tau in zip(bars.data, (0.0, 1.5)):
        top = logits.topk(len(bar.y)).indices
        torch.testing.assert_close(torch.tensor(bar.y), next_token_probs(logits, SamplingParams(tau))[top],
                                   atol=1e-6, rtol=1e-5)
    assert continuations.values.tolist() == [[t, continuation(engine, temperature=t, max_new_tokens=6, seed=3)]
                                             for t in (0.0, 1.5)]


def test_temperature_handlers_refuse_bad_taus(ctx):
    with refused(r"^τ_attn values: give 1 to 6 values, got 0$"):
        temperature_tab.on_sharpness(ctx, PROMPT, 0, 0, -1, "")
    with refused(r"^query position must be an integer from -\d+ to \d+ \(the prompt has \d+ tokens; -1 is the "
                 r"last\), got 99$"):
        temperature_tab.on_sharpness(ctx, PROMPT, 0, 0, 99, "1")
    with refused(r"^temperature must be a finite number >= 0 \(0 means greedy\), got -0.5$"):
        temperature_tab.on_sampling(ctx, PROMPT, "1, -0.5", 8, 0)


# ---- MLA & KV cache ------------------------------------------------------------------------------------------
def test_mla_heatmaps_are_the_cached_latent_and_naive_k_v_and_the_bytes_the_lab_s(ctx, engine, tiny_checkpoint):
    _, latent, k, v, _, table, measured, _ = mla_tab.on_mla(ctx, PROMPT, 2, 1, "bf16", 2, "DeepSeek-V3")
    tr, a = traced(engine[0], prompt_ids(engine), mla="naive"), "layers.2.attn"
    for fig, want in ((latent, tr[f"{a}.kv_latent"][0]), (k, tr[f"{a}.k"][0, 1]), (v, tr[f"{a}.v"][0, 1])):
        torch.testing.assert_close(z(fig), want, atol=1e-5, rtol=1e-5)
    models = mla_tab.reference_models(ctx)
    want = kv_bytes_by_model(models, "bf16", kv_heads=2)
    assert [row[0] for row in table] == [f"this model ({tiny_checkpoint.name})", *list(models)[1:]]
    assert [row[2:6] for row in table] == [[want[name][s]["bytes"] for s in SCHEMES] for name in models]
    kv = sizes.kv_cache_summary(engine[0].config, "fp32")
    assert [row[1:] for row in measured] == [[kv["naive_bytes"]] * 2, [kv["latent_bytes"]] * 2]


def test_mla_speed_times_each_context_and_reports_progress(ctx):
    reports = []
    summary, _, rows = mla_tab.on_mla_speed(ctx, "32, 8", 1, progress=lambda done, desc: reports.append((done,
                                                                                                          desc)))
    kv = sizes.kv_cache_summary(ctx.config, "fp32")
    assert [row[0] for row in rows] == [8, 32]
    assert [row[4:6] for row in rows] == [[c * kv["naive_bytes"], c * kv["latent_bytes"]] for c in (8, 32)]
    fractions = [done for done, _ in reports]
    assert fractions[0] == 0 and fractions == sorted(fractions) and all(d.startswith("timing ") for _, d in reports)
    assert "bursts of 1 greedy decode steps" in summary


def test_mla_handlers_refuse_bad_heads_and_contexts(ctx):
    with refused(r"must divide the 4 attention heads, got 3"):
        mla_tab.on_mla(ctx, PROMPT, 0, 0, "bf16", 3, "DeepSeek-V3")
    with refused(r"^model for the context plot must be one of this model \(.*\), DeepSeek-V2-Lite, .*got 'GPT-4'$"):
        mla_tab.on_mla(ctx, PROMPT, 0, 0, "bf16", 2, "GPT-4")
    with refused(r"^context must be an integer from 1 to 4096, got 0$"):
        mla_tab.on_mla_speed(ctx, "0", 4)


# ---- MoE routing ---------------------------------------------------------------------------------------------
def test_moe_routing_shows_the_router_s_traced_choices(ctx, engine):
    summary, heatmap, steps_md, table, _, load, _ = moe_tab.on_moe_routing(ctx, PROMPT, 2.0, -1)
    ids = prompt_ids(engine)
    T = ids.shape[1]
    tr = traced(engine[0], ids)
    torch.testing.assert_close(z(heatmap), tr["layers.2.moe.scores"][0], atol=1e-6, rtol=0)
    chosen = {(int(t), int(e)) for t, e in zip(heatmap.data[2].y, heatmap.data[2].x)}
    assert chosen == {(t, int(e)) for t in range(T) for e in tr["layers.2.moe.experts"][0, t]}
    rows = table.data  # the steps table as numbers, one row per routed expert
    assert sorted(rows.loc[rows["chosen"] == "yes", "expert"]) == sorted(tr["layers.2.moe.experts"][0, -1].tolist())
    want_load = {f"layer {i}": torch.bincount(tr[f"layers.{i}.moe.experts"].flatten(), minlength=8).tolist()
                 for i in (1, 2)}
    assert {bar.name: list(bar.y) for bar in load.data} == want_load
    assert f"**{T} tokens**" in summary and f"Token {T - 1} " in steps_md


def test_moe_interventions_run_on_the_sandbox_as_the_lab_measures_them(ctx, engine):
    sandbox, reports = moe_tab.Sandbox.of(ctx.model), []
    summary, table, _ = moe_tab.on_moe_interventions(ctx, sandbox, ["top1"], 1, 1,
                                                     progress=lambda done, desc: reports.append(desc))
    want = moe_lab.measure_interventions(*engine, ["top1"], n=1, per_bucket=1)
    assert table.data["perplexity"].tolist() == pytest.approx([r["perplexity"] for r in want], rel=1e-6)
    assert table.data["run"].tolist() == [r["label"] for r in want] and reports
    assert sandbox.model is not ctx.model and "1 story windows" in summary


def test_moe_handlers_refuse_dense_layers_and_unknown_interventions(ctx):
    with refused(r"^layer 0 has a dense MLP, not experts: choose an MoE layer, one of 1, 2$"):
        moe_tab.on_moe_routing(ctx, PROMPT, 0, 0)
    with refused(r"^interventions must be a non-empty list among top1, no_shared, no_bias, got \['top2'\]$"):
        moe_tab.on_moe_interventions(ctx, None, ["top2"], 2, 1)


# ---- Model ---------------------------------------------------------------------------------------------------
def test_kv_cache_and_tensors_are_sizes_numbers(ctx):
    figure, table = model_tab.on_kv_cache(ctx, "fp16")
    kv = sizes.kv_cache_summary(ctx.config, "fp16")
    assert list(figure.data[0].y) == [kv["naive_bytes"], kv["latent_bytes"]]
    assert [row[4] for row in table] == [kv["naive_bytes"], kv["latent_bytes"]]
    rows = sizes.weight_table(ctx.model.state_dict())
    experts3 = model_tab.on_tensors(rows, "experts.3")
    assert experts3 and all(".experts.{0..7}." in r[0] for r in experts3)
    assert sum(r[4] for r in model_tab.on_tensors(rows, None)) == sizes.param_summary(ctx.config)["total"]


def test_kv_cache_and_tensors_refuse_what_they_cannot_read(ctx):
    with refused(r"^dtype must be one of fp32, bf16, fp16, got 'int8'$"):
        model_tab.on_kv_cache(ctx, "int8")
    with refused(r"^filter must be text, got 5$"):
        model_tab.on_tensors([], 5)
