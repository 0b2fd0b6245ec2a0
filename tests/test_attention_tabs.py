"""The Attention & masks and τ sharpness tabs through gradio_client: every picture and number is checked against
the engine, computed here independently (traced forward passes, WindowAttention.allowed, the DSA selection,
ds_core.labs.attention.sharpness, next_token_probs, ds_core.generate)."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
import torch

gradio_client = pytest.importorskip("gradio_client")
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:gradio.queueing")

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import app  # noqa: E402
from ds_core import DeepSeekModel, Tokenizer  # noqa: E402
from ds_core.attention import DenseAttention, DSAAttention, WindowAttention  # noqa: E402
from ds_core.attention.dsa import IndexerStack  # noqa: E402
from ds_core.labs.attention import fraction_computed, row_entropy, sharpness  # noqa: E402
from ds_core.generate import SamplingParams, generate, next_token_probs  # noqa: E402
from ds_core.ui import attention_tab  # noqa: E402

AppError = gradio_client.exceptions.AppError
PROMPT = "Once upon a time a fox named Ada found a red key under the old bridge."
# scheme, window, sinks, global positions, top-k, τ_attn: the attention event's options, then layer and head
WINDOW = ("window", 4, 1, "6", 8, 1.0)
DENSE = ("dense", 4, 1, "", 8, 1.0)


def serve(path):
    demo = app.build_app(path)
    demo.launch(server_name="127.0.0.1", prevent_thread_lock=True, quiet=True)
    return demo, gradio_client.Client(demo.local_url, verbose=False, analytics_enabled=False, download_files=False)


@pytest.fixture(scope="module")
def client(tiny_checkpoint):
    demo, c = serve(tiny_checkpoint)
    try:
        yield c
    finally:
        demo.close()


@pytest.fixture(scope="module")
def engine(tiny_checkpoint):
    return DeepSeekModel.from_pretrained(tiny_checkpoint), Tokenizer.from_pretrained(tiny_checkpoint)


def figure(plot) -> dict:
    return json.loads(plot["plot"])


def heatmap(plot) -> tuple[torch.Tensor, list[str], str]:
    fig = figure(plot)
    (trace,) = fig["data"]
    assert fig["layout"]["xaxis"]["title"]["text"] == "key token"
    assert fig["layout"]["yaxis"]["title"]["text"] == "query token"
    return torch.tensor(trace["z"]), fig["layout"]["yaxis"]["ticktext"], fig["layout"]["title"]["text"]


def measures(table) -> dict[str, float]:
    """The measurements table as {first word(s) of the measure: value}."""
    return {row[0].split(",")[0].split(" (")[0]: row[1] for row in table["data"]}


def traced(model, ids, backend):
    with torch.no_grad(), model.trace() as tr:
        model(ids, backend=backend)
    return tr


@pytest.mark.parametrize("options,backend", [(DENSE, DenseAttention()),
                                             (WINDOW, WindowAttention(4, 1, (6,), block=attention_tab.WINDOW_BLOCK))])
@pytest.mark.parametrize("layer,head", [(0, 1), (2, 3)])
def test_mask_and_probabilities_are_the_engine_s(client, engine, options, backend, layer, head):
    summary, table, mask_plot, probs_plot = client.predict(PROMPT, *options, layer, head, api_name="/attention")
    model, tok = engine
    ids = torch.tensor([tok.encode(PROMPT)])
    T = ids.shape[1]
    pos = torch.arange(T)[None]
    want_mask = backend.allowed(pos, pos, None)[0]
    want_probs = traced(model, ids, backend)[f"layers.{layer}.attn.probs"][0, head]

    mask, rows, title = heatmap(mask_plot)
    assert torch.equal(mask.bool(), want_mask) and len(rows) == T and title.endswith(f"[{T} × {T}]")
    probs, _, title = heatmap(probs_plot)
    torch.testing.assert_close(probs, want_probs, atol=1e-5, rtol=1e-5)
    assert f"layer {layer}, head {head}" in title and title.endswith(f"[{T} × {T}]")
    assert bool((probs[~want_mask] == 0).all())  # masked pairs get exactly no attention
    numbers = measures(table)
    assert numbers["prompt tokens T"] == T
    assert numbers["query-key pairs the mask allows"] == int(want_mask.sum())
    assert numbers["share of dense's T×T scores the fast path computes"] == pytest.approx(
        fraction_computed(backend, T))
    assert f"**{T} tokens**" in summary and f"[1, 4, {T}, {T}]" in summary


def test_window_costs_less_and_loses_something_dense_loses_nothing(client):
    _, dense, *_ = client.predict(PROMPT, *DENSE, 0, 0, api_name="/attention")
    summary, window, *_ = client.predict(PROMPT, *WINDOW, 0, 0, api_name="/attention")
    dense, window = measures(dense), measures(window)
    assert dense["KL(dense ‖ scheme)"] == 0 and dense["greedy next token changed"] == 0
    assert dense["share of dense's T×T scores the fast path computes"] == 1
    assert window["KL(dense ‖ scheme)"] > 0 and window["share of dense's T×T scores the fast path computes"] < 1
    assert "block-sparse" in summary  # the backend's last_note: how it really ran


def test_dsa_without_indexer_says_how_to_train_one(client, tiny_checkpoint):
    with pytest.raises(AppError, match=r"no trained indexer.*python -m ds_core train-indexer --model"):
        client.predict(PROMPT, "dsa", 4, 1, "", 3, 1.0, 0, 0, api_name="/attention")


def test_dsa_mask_is_the_indexer_s_selection(tiny_checkpoint, engine, tmp_path):
    shutil.copytree(tiny_checkpoint, tmp_path, dirs_exist_ok=True)
    model, tok = engine
    IndexerStack.for_model(model.config, seed=0).save(tmp_path)
    demo, c = serve(tmp_path)
    try:
        summary, table, mask_plot, probs_plot = c.predict(PROMPT, "dsa", 4, 1, "", 3, 1.0, 1, 2,
                                                          api_name="/attention")
    finally:
        demo.close()
    ids = torch.tensor([tok.encode(PROMPT)])
    T = ids.shape[1]
    tr = traced(model, ids, DSAAttention.from_pretrained(tmp_path, top_k=3))
    want_mask = DSAAttention.selection_mask(tr["layers.1.attn.dsa_selected"], T)[0]
    mask, _, _ = heatmap(mask_plot)
    probs, _, _ = heatmap(probs_plot)
    assert torch.equal(mask.bool(), want_mask)
    torch.testing.assert_close(probs, tr["layers.1.attn.probs"][0, 2], atol=1e-5, rtol=1e-5)
    assert measures(table)["share of dense's T×T scores the fast path computes"] == pytest.approx(3 / T)
    assert "top-3" in summary


def test_generation_with_the_scheme_beside_dense(client, engine):
    model, tok = engine
    scheme, dense, stats = client.predict(PROMPT, *WINDOW, 0.7, 12, 5, api_name="/attention_generate")
    window = WindowAttention(4, 1, (6,), block=attention_tab.WINDOW_BLOCK)
    for text, backend in ((scheme, window), (dense, DenseAttention())):
        want = "".join(s.text for s in generate(model, tok, PROMPT, temperature=0.7, max_new_tokens=12, seed=5,
                                                backend=backend))
        assert text == want
    assert "agree on their first" in stats


def test_sharpness_is_attention_lab_s(client, engine):
    model, tok = engine
    taus = (0.25, 1.0, 4.0)
    summary, plot, table = client.predict(PROMPT, 1, 2, 5, "0.25, 1, 4", api_name="/sharpness")
    want = sharpness(model, tok, PROMPT, layer=1, head=2, taus=taus, position=5)
    for row, w in zip(table["data"], want):
        assert row == pytest.approx([w[k] for k in ("tau", "entropy", "max_prob", "rerun_entropy",
                                                    "rerun_max_prob", "uniform_entropy")], rel=1e-5)
    fig = figure(plot)
    assert [line["name"] for line in fig["data"]] == [f"τ_attn = {t:g}" for t in taus]
    assert fig["layout"]["yaxis"]["title"]["text"] == "probability"
    for line, w in zip(fig["data"], want):  # the drawn rows are the ones measured
        assert len(line["y"]) == 6 and float(row_entropy(torch.tensor(line["y"]))) == pytest.approx(w["entropy"],
                                                                                                    rel=1e-4)
    assert "row 5 of `layers.1.attn.scores`" in summary


def test_sampling_distributions_are_next_token_probs(client, engine):
    model, tok = engine
    taus = (0.0, 0.7, 1.5)
    summary, plot, table = client.predict(PROMPT, "0, 0.7, 1.5", 8, 3, api_name="/sampling")
    with torch.no_grad():
        logits = model(torch.tensor([tok.encode(PROMPT)]))[0, -1]
    fig = figure(plot)
    for bars, t in zip(fig["data"], taus):
        top = next_token_probs(logits, SamplingParams(t))[logits.topk(len(bars["y"])).indices]
        assert bars["name"] == f"τ = {t:g}"
        torch.testing.assert_close(torch.tensor(bars["y"]), top, atol=1e-6, rtol=1e-5)
    assert fig["layout"]["xaxis"]["title"]["text"] == "candidate token"
    want = ["".join(s.text for s in generate(model, tok, PROMPT, temperature=t, max_new_tokens=8, seed=3))
            for t in taus]
    assert table["data"] == [[t, text] for t, text in zip(taus, want)]


@pytest.mark.parametrize("api,args,message", [
    ("/attention", ("", *DENSE, 0, 0), "the prompt is empty"),
    ("/attention", (PROMPT, "window", 0, 1, "", 8, 1.0, 0, 0), "window w must be an integer from 1"),
    ("/attention", (PROMPT, "window", 4, -1, "", 8, 1.0, 0, 0), "global sinks g must be an integer from 0"),
    ("/attention", (PROMPT, "window", 4, 1, "2, x", 8, 1.0, 0, 0), "global positions must be a comma-separated"),
    ("/attention", (PROMPT, "window", 4, 1, "-2", 8, 1.0, 0, 0), r"global position -2 .* must be an integer >= 0"),
    ("/attention", (PROMPT, "dsa", 4, 1, "", 0, 1.0, 0, 0), "top-k must be an integer from 1"),
    ("/attention", (PROMPT, "dense", 4, 1, "", 8, 0, 0, 0), "τ_attn must be a finite number > 0"),
    ("/attention", (PROMPT, "dense", 4, 1, "", 8, "nan", 0, 0), "τ_attn must be a finite number > 0"),
    ("/attention", (PROMPT, "sparse", 4, 1, "", 8, 1.0, 0, 0), "scheme must be one of dense, window, dsa"),
    ("/attention", (PROMPT, *DENSE, 3, 0), "layer must be an integer from 0 to 2"),
    ("/attention", (PROMPT, *DENSE, 0, 4), "head must be an integer from 0 to 3"),
    ("/attention_generate", (PROMPT, *DENSE, -1, 8, 0), "temperature must be a finite number >= 0"),
    ("/attention_generate", (PROMPT, *DENSE, 0, 129, 0), "max new tokens must be an integer from 1 to 128"),
    ("/sharpness", (PROMPT, 0, 0, 99, "1"), "query position must be an integer from -"),
    ("/sharpness", (PROMPT, 0, 0, -1, "0.5, nan"), "τ_attn must be a finite number > 0"),
    ("/sharpness", (PROMPT, 0, 0, -1, "0"), "τ_attn must be a finite number > 0"),
    ("/sharpness", (PROMPT, 0, 0, -1, ""), "τ_attn values: give 1 to 6 values"),
    ("/sampling", (PROMPT, "1, -0.5", 8, 0), "temperature must be a finite number >= 0"),
    ("/sampling", ("  ", "1", 8, 0), "the prompt is empty"),
])
def test_bad_input_gets_the_engine_s_message_and_the_app_keeps_serving(client, api, args, message):
    with pytest.raises(AppError, match=message):
        client.predict(*args, api_name=api)
    summary, *_ = client.predict(PROMPT, *DENSE, 0, 0, api_name="/attention")
    assert "tokens" in summary


def test_long_prompt_keeps_its_last_tokens_and_says_so(client):
    summary, _, mask_plot, _ = client.predict(PROMPT * 20, *WINDOW, 0, 0, api_name="/attention")
    _, rows, _ = heatmap(mask_plot)
    assert len(rows) <= attention_tab.MAX_TOKENS and "Only the last" in summary
