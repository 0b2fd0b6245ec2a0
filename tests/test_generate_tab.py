"""The Generate tab, served in-process and called through gradio_client; every answer checked against ds_core."""

from __future__ import annotations

import json
import math
import os
import sys
import time
from pathlib import Path

import pytest
import torch

gradio_client = pytest.importorskip("gradio_client")
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:gradio.queueing")  # gradio's pandas calls

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # app.py, wherever pytest was started
import app  # noqa: E402
from conftest import CORPUS  # noqa: E402
from ds_core import DeepSeekModel, SamplingParams, Tokenizer, generate  # noqa: E402
from ds_core.generate import next_token_probs  # noqa: E402
from ds_core.ui import generate_tab  # noqa: E402
from ds_core.viz import distribution, token_label  # noqa: E402

AppError = gradio_client.exceptions.AppError
PROMPT = "Once upon a time"
SAMPLED = dict(temperature=0.8, top_k=50, top_p=0.95, seed=7)
GREEDY = dict(temperature=0.0, top_k=0, top_p=1.0, seed=0)


@pytest.fixture(scope="module")
def served(tiny_checkpoint):
    """(client, demo): the whole app on tiny_checkpoint, on a port gradio finds free on 127.0.0.1."""
    demo = app.build_app(tiny_checkpoint)
    demo.launch(server_name="127.0.0.1", prevent_thread_lock=True, quiet=True)
    try:
        yield gradio_client.Client(demo.local_url, verbose=False, analytics_enabled=False,
                                   download_files=False), demo
    finally:
        demo.close()


@pytest.fixture(scope="module")
def engine(tiny_checkpoint):
    """(model, tokenizer) loaded here, apart from the app's, to compute what the app should answer."""
    return DeepSeekModel.from_pretrained(tiny_checkpoint), Tokenizer.from_pretrained(tiny_checkpoint)


def ask(client, prompt=PROMPT, *, temperature, top_k, top_p, seed, max_new_tokens=12):
    """Submit a /generate request (not waiting for it)."""
    return client.submit(prompt, temperature, top_k, top_p, max_new_tokens, seed, api_name="/generate")


def expected(engine, prompt=PROMPT, *, max_new_tokens=12, **params):
    """ds_core.generate's Steps for the same request."""
    model, tok = engine
    return list(generate(model, tok, prompt, max_new_tokens=max_new_tokens, **params))


def text_of(steps) -> str:
    return "".join(s.text for s in steps)


# ---- streaming -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("params", [GREEDY, SAMPLED], ids=["greedy", "sampled"])
def test_generate_streams_token_by_token_and_ends_with_ds_core_text(served, engine, params):
    client, _ = served
    job = ask(client, **params)
    final = job.result()
    steps = expected(engine, **params)
    assert len(steps) >= 4, "the request must run for several steps to show streaming"

    texts = [out[0] for out in job.outputs()]
    assert len(texts) > 2  # intermediate outputs arrived before the final one
    assert all(text_of(steps).startswith(t) for t in texts)  # each a prefix of the continuation
    assert final[0] == text_of(steps)
    stats = final[1]
    assert f"**{len(steps)}** new tokens" in stats and "time to first token" in stats
    assert f"tokens/s** (the {len(steps) - 1} steps after the first)" in stats
    assert "truncated" not in stats


def test_long_prompt_is_truncated_from_the_left_and_says_so(served, engine, tiny_checkpoint):
    client, _ = served
    model, tok = engine
    prompt, max_new = " ".join(CORPUS), 6
    budget = model.config.max_position_embeddings - max_new
    assert len(tok.encode(prompt)) > budget

    fitted = generate_tab.fit_prompt(tok, prompt, budget)
    assert fitted.truncated and prompt.endswith(fitted.text)
    assert budget - 2 <= fitted.tokens == len(tok.encode(fitted.text)) <= budget  # cut at a token boundary

    text, stats, *_ = ask(client, prompt, max_new_tokens=max_new, **GREEDY).result()
    assert text == text_of(expected(engine, fitted.text, max_new_tokens=max_new, **GREEDY))
    assert f"prompt truncated to the last {fitted.tokens} tokens" in stats


# ---- the next-token distribution ---------------------------------------------------------------------------
def bars(plot: dict) -> tuple[dict, dict]:
    """(the bar trace, the layout) of a gr.Plot value."""
    assert plot["type"] == "plotly"
    fig = json.loads(plot["plot"])
    (bar,) = fig["data"]
    return bar, fig["layout"]


def test_distribution_is_the_sampling_distribution_recomputed_from_logits(served, engine):
    client, _ = served
    model, tok = engine
    steps = expected(engine, **SAMPLED)
    generated = ask(client, **SAMPLED).result()
    assert generated[0] == text_of(steps)
    params = SamplingParams(SAMPLED["temperature"], SAMPLED["top_k"], SAMPLED["top_p"])
    ids = tok.encode(PROMPT) + [s.token_id for s in steps]

    for index in range(len(steps)):
        plot = client.predict(index, api_name="/distribution")
        if index == 0:
            assert plot == generated[3]  # generate ends by drawing step 0
        bar, layout = bars(plot)
        with torch.no_grad():  # a fresh forward pass, no cache: the logits for the token at this step
            probs = next_token_probs(model(torch.tensor([ids[:len(ids) - len(steps) + index]]))[0, -1], params)
        top = probs.topk(generate_tab.TOP_N)
        want_ids = top.indices[top.values > 0].tolist()
        n = len(want_ids)
        assert n > 1
        torch.testing.assert_close(torch.tensor(bar["y"][:n]), top.values[:n], rtol=1e-4, atol=1e-6)
        assert layout["xaxis"]["ticktext"][:n] == [token_label(t) for t in tok.token_strings(want_ids)]

        sampled = steps[index].token_id
        mark = want_ids.index(sampled) if sampled in want_ids else n  # a lower-ranked token is added at the end
        assert len(bar["y"]) == max(n, mark + 1)
        assert math.isclose(bar["y"][mark], float(probs[sampled]), rel_tol=1e-4)
        colors = bar["marker"]["color"]
        assert colors[mark] == distribution.SAMPLED_COLOR
        assert colors.count(distribution.SAMPLED_COLOR) == 1
        (note,) = layout["annotations"]
        assert note["text"] == "sampled" and note["x"] == mark
        assert layout["yaxis"]["title"]["text"] == "probability"
        assert layout["xaxis"]["title"]["text"] == "candidate token"
        assert f"step {index} " in layout["title"]["text"] and "τ = 0.8" in layout["title"]["text"]


def test_a_token_drawn_below_the_top_candidates_is_added_with_its_rank(engine):
    _, tok = engine
    c = generate_tab.StepCandidates(ids=[5, 6], probs=[0.5, 0.3], sampled_id=9, sampled_prob=0.01, sampled_rank=16)
    fig = generate_tab.step_figure(tok, generate_tab.Generation(SamplingParams(1.2), [c]), 0)
    (bar,) = fig.data
    assert list(bar.y) == [0.5, 0.3, 0.01]
    assert list(bar.marker.color) == [distribution.OTHER_COLOR] * 2 + [distribution.SAMPLED_COLOR]
    assert fig.layout.xaxis.ticktext[2] == token_label(tok.token_strings([9])[0]) + " (#17)"
    assert "τ = 1.2" in fig.layout.title.text


def test_token_labels_stay_visible():
    assert [token_label(t) for t in [" the", "\n", "\x1b", "<eos>", ""]] == ["␣the", "\\n", "\\x1b", "&lt;eos&gt;",
                                                                          "∅"]


# ---- bad input -----------------------------------------------------------------------------------------------
NORMAL = dict(prompt=PROMPT, temperature=0.0, top_k=0, top_p=1.0, max_new_tokens=3, seed=0)
LIMIT = "max new tokens must be an integer from 1 to 255 (this model's context is 256 tokens"


BAD_INPUT = [
    (dict(prompt=""), "the prompt is empty: give at least one character of text"),
    (dict(prompt=None), "the prompt is empty"),
    (dict(temperature=-0.5), "temperature must be a finite number >= 0 (0 means greedy), got -0.5"),
    (dict(temperature="nan"), "temperature must be a finite number >= 0"),  # JSON carries no NaN; see below
    (dict(top_p=0), "top_p must be a finite number in (0, 1] (1 turns it off), got 0"),
    (dict(top_p=1.5), "top_p must be a finite number in (0, 1]"),
    (dict(top_k=-1), "top_k must be an integer >= 0 (0 turns it off), got -1"),
    (dict(top_k=2.5), "top_k must be an integer >= 0"),
    (dict(max_new_tokens=0), LIMIT),
    (dict(max_new_tokens=256), LIMIT),
    (dict(seed=1.5), "seed must be an integer from 0 to"),
    (dict(seed="seven"), "seed must be an integer from 0 to"),
]


@pytest.mark.parametrize("change, message", BAD_INPUT, ids=[repr(change) for change, _ in BAD_INPUT])
def test_bad_generate_input_gets_a_clear_error_and_the_app_keeps_serving(served, engine, change, message):
    client, _ = served
    with pytest.raises(AppError) as err:
        client.predict(*{**NORMAL, **change}.values(), api_name="/generate")
    assert message in str(err.value) and "Traceback" not in str(err.value)
    want = text_of(expected(engine, max_new_tokens=3, **GREEDY))
    assert client.predict(*NORMAL.values(), api_name="/generate")[0] == want


def test_nan_temperature_is_refused_with_ds_core_message():
    with pytest.raises(ValueError, match=r"temperature must be a finite number >= 0 \(0 means greedy\), got nan"):
        generate_tab.check_request(PROMPT, float("nan"), 0, 1.0, 3, 0, context=256)


def test_bad_step_gets_a_clear_error(served, engine):
    client, demo = served
    fresh = gradio_client.Client(demo.local_url, verbose=False, analytics_enabled=False, download_files=False)
    with pytest.raises(AppError, match="nothing generated yet: press Generate first"):
        fresh.predict(0, api_name="/distribution")  # a new session has no generation to show
    fresh.predict(*NORMAL.values(), api_name="/generate")
    for bad in (3, -1, 0.5, None):
        with pytest.raises(AppError, match=r"step must be an integer from 0 to 2 \(the last generation made 3"):
            fresh.predict(bad, api_name="/distribution")
    assert bars(fresh.predict(2, api_name="/distribution"))[0]["y"] == [1.0]  # greedy: all mass on one token


# ---- concurrency ---------------------------------------------------------------------------------------------
def test_eight_concurrent_generations_overlap_and_each_gets_its_own_text(served, engine):
    client, _ = served
    requests = [dict(prompt=f"{PROMPT} {word}", seed=seed, temperature=0.9, top_k=40, top_p=0.9, max_new_tokens=16)
                for seed, word in enumerate(["Ada", "Tom", "a fox", "the key", "bells", "a door", "old", "red"])]
    jobs = [ask(client, **r) for r in requests]
    first_output, finished = {}, {}
    while len(finished) < len(jobs):  # when each job streamed its first token, and when it finished
        now = time.perf_counter()
        for i, job in enumerate(jobs):
            if job.outputs() and i not in first_output:
                first_output[i] = now
            if job.done() and i not in finished:
                finished[i] = now
        time.sleep(0.005)
    for job, r in zip(jobs, requests):
        assert job.result()[0] == text_of(expected(engine, **r))
    # served one at a time, a job would start only after the one before it finished
    assert max(first_output.values()) < min(finished.values())


# ---- the app around the tab ----------------------------------------------------------------------------------
def test_generate_is_the_first_tab_with_its_components(served):
    _, demo = served
    components = demo.config["components"]
    tabs = [c["props"]["label"] for c in components if c["type"] == "tabitem"]
    assert tabs == [tab.TITLE for tab in app.tabs()] and tabs[0] == "Generate"
    ids = {c["props"].get("elem_id") for c in components}
    assert {"gen-prompt", "gen-temperature", "gen-button", "gen-output", "gen-stats", "gen-dist"} <= ids
    labels = {c["props"].get("label") for c in components}
    assert f"max new tokens (1 to 255; the app allows at most {generate_tab.MAX_NEW_TOKENS})" in labels


def test_checkpoint_without_tokenizer_says_so_instead_of_generating(tiny_checkpoint, tmp_path):
    for name in ("config.json", "model.safetensors"):
        os.symlink(tiny_checkpoint / name, tmp_path / name)
    demo = app.build_app(tmp_path)
    texts = [c["props"].get("value") or "" for c in demo.config["components"] if c["type"] == "markdown"]
    assert any("needs the checkpoint's tokenizer" in t and "tokenizer.json" in t for t in texts)
    apis = {d["api_name"] for d in demo.config["dependencies"]}
    assert "generate" not in apis and "kv_cache" in apis  # the other tabs still work


def test_model_path_that_is_not_a_checkpoint_exits_2_with_one_line(tmp_path, capsys):
    (tmp_path / "tokenizer.json").write_text("{}")  # a directory, but no config.json or weights
    assert app.main(["--model", str(tmp_path)]) == app.EXIT_BAD_INPUT
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(tmp_path) in err[0] and "config.json" in err[0]
