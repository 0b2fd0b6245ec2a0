"""The MoE routing tab through gradio_client: every picture and number is the engine's (ds_core.labs.moe.route on
the same prompt, measure_interventions with the same settings), bad input gets a clear error, and the tab keeps
serving."""

from __future__ import annotations

import pytest
import torch

gradio_client = pytest.importorskip("gradio_client")
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:gradio.queueing")

from tab_helpers import figure, served  # noqa: E402

from ds_core import DeepSeekModel, Tokenizer  # noqa: E402
from ds_core.labs import moe as moe_lab  # noqa: E402
from ds_core.ui import moe_tab  # noqa: E402

AppError = gradio_client.exceptions.AppError
PROMPT = "Once upon a time a fox named Ada found a red key under the old bridge."


@pytest.fixture(scope="module")
def engine(tiny_checkpoint):
    return DeepSeekModel.from_pretrained(tiny_checkpoint), Tokenizer.from_pretrained(tiny_checkpoint)


def points(trace: dict) -> set[tuple[int, int]]:
    """A scatter trace's markers as (row, column) cells."""
    return set(zip(trace["y"], trace["x"]))


@pytest.mark.parametrize("layer,token", [(1, 0), (2, -1)])
def test_routing_views_are_the_engine_s(client, engine, layer, token):
    summary, heatmap, steps_md, table, steps_plot, load_plot, norms_plot = client.predict(
        PROMPT, layer, token, api_name="/moe_routing")
    model, tok = engine
    ids = torch.tensor([tok.encode(PROMPT)])
    T = ids.shape[1]
    layers = moe_lab.route(model, ids)
    lr = next(r for r in layers if r.layer == layer)
    assert f"**{T} tokens**" in summary and f"layers.{layer}.moe.scores" in summary

    fig = figure(heatmap)
    grid, dropped, chosen = fig["data"]
    torch.testing.assert_close(torch.tensor(grid["z"]), lr.scores, atol=1e-6, rtol=0)
    assert fig["layout"]["xaxis"]["title"]["text"] == "routed expert" and len(fig["layout"]["yaxis"]["ticktext"]) == T
    assert points(chosen) == {(t, int(e)) for t in range(T) for e in lr.experts[t]}
    assert points(dropped) == {tuple(c) for c in (~lr.eligible()).nonzero().tolist()}
    assert chosen["customdata"] == pytest.approx(lr.weights.flatten().tolist(), abs=1e-6)

    steps = moe_lab.selection_steps(lr, token % T)
    assert moe_lab.format_steps(steps, model.config) in steps_md
    columns = table["headers"]
    rows = [dict(zip(columns, row)) for row in table["data"]]
    assert [r["expert"] for r in rows if r["chosen"] == "yes"] == sorted(lr.experts[token % T].tolist())
    assert [r["group kept"] == "yes" for r in rows] == lr.eligible()[token % T].tolist()
    assert [r["gate weight"] for r in rows] == pytest.approx([r["weight"] for r in steps["experts"]], abs=1e-6)
    bars = figure(steps_plot)["data"]
    assert [b["name"] for b in bars] == ["affinity s", "s + b (ranks the choice)"]
    assert bars[1]["y"] == pytest.approx(lr.choice_scores[token % T].tolist(), abs=1e-6)

    loads = {b["name"]: b["y"] for b in figure(load_plot)["data"]}
    assert loads == {f"layer {r.layer}": r.load.tolist() for r in layers}
    norms = {s["name"]: s["y"] for s in figure(norms_plot)["data"]}
    assert norms["shared expert(s)"] == pytest.approx(lr.shared_norm.tolist(), rel=1e-5)
    assert norms["routed experts (weighted sum)"] == pytest.approx(lr.routed_norm.tolist(), rel=1e-5)


def test_interventions_are_measured_like_the_lab_measures_them(client, engine):
    summary, table, plot = client.predict(["no_bias", "top1"], 2, 1, api_name="/moe_interventions")
    model, tok = engine
    expected = moe_lab.measure_interventions(model, tok, ["top1", "no_bias"], n=2, per_bucket=1)
    rows = [dict(zip(table["headers"], row)) for row in table["data"]]
    assert [r["run"] for r in rows] == [r["label"] for r in expected]
    assert [r["perplexity"] for r in rows] == pytest.approx([r["perplexity"] for r in expected], rel=1e-6)
    assert [r["recall"] for r in rows] == [r["recall"] for r in expected]
    assert figure(plot)["data"][0]["y"] == pytest.approx([r["perplexity"] for r in expected], rel=1e-6)
    assert "2 story windows" in summary and "4 greedy recall probes" in summary
    # the tab measured on its own copy: the served model routes as before
    summary, *_ = client.predict(PROMPT, 1, 0, api_name="/moe_routing")
    assert "tokens" in summary


@pytest.mark.parametrize("args,message", [
    (("", 1, 0), "the prompt is empty"),
    ((PROMPT, 0, 0), "layer 0 has a dense MLP, not experts: choose an MoE layer, one of 1, 2"),
    ((PROMPT, 3, 0), "layer must be an integer from 0 to 2"),
    ((PROMPT, 1, 999), "token position must be an integer from -"),
    ((PROMPT, 1, 0.5), "token position must be an integer"),
])
def test_bad_routing_input_gets_a_clear_error_and_the_tab_keeps_serving(client, args, message):
    with pytest.raises(AppError, match=message):
        client.predict(*args, api_name="/moe_routing")
    summary, *_ = client.predict(PROMPT, 1, 0, api_name="/moe_routing")
    assert "tokens" in summary


@pytest.mark.parametrize("args,message", [
    (([], 2, 1), "interventions must be a non-empty list among top1, no_shared, no_bias"),
    ((["top2"], 2, 1), "interventions must be a non-empty list"),
    ((["top1"], 0, 1), f"story windows must be an integer from 1 to {moe_tab.MAX_STORIES}"),
    ((["top1"], 2, moe_tab.MAX_PROBES + 1), "recall probes per distance bucket must be an integer"),
])
def test_bad_intervention_input_gets_a_clear_error(client, args, message):
    with pytest.raises(AppError, match=message):
        client.predict(*args, api_name="/moe_interventions")


def test_long_prompt_keeps_its_last_tokens_and_says_so(client):
    summary, heatmap, *_ = client.predict(PROMPT * 10, 1, -1, api_name="/moe_routing")
    assert len(figure(heatmap)["layout"]["yaxis"]["ticktext"]) <= moe_tab.MAX_TOKENS and "Only the last" in summary


def test_a_softmax_router_offers_no_bias_intervention(reference_checkpoints):
    with served(reference_checkpoints["v2_lite"][0]) as c:  # DeepSeek-V2 routing: softmax, no groups, no bias
        with pytest.raises(AppError, match="among top1, no_shared, got"):
            c.predict(["no_bias"], 1, 1, api_name="/moe_interventions")
        summary, heatmap, *_ = c.predict(PROMPT, 1, 0, api_name="/moe_routing")
        assert [t["name"] for t in figure(heatmap)["data"][1:]] == ["chosen (top-k)"]  # no group limit to cross
