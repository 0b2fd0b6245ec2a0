"""The MLA & KV cache tab through gradio_client: the heatmaps are the cached latent and the K and V naive MLA
computes, the bars and tables are ds_core.labs.mla's figures for each model, the decode-speed table times real
caches of the asked lengths, and bad input gets a message."""

from __future__ import annotations

import pytest
import torch

gradio_client = pytest.importorskip("gradio_client")
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:gradio.queueing")

from tab_helpers import figure  # noqa: E402

from ds_core import DeepSeekModel, Tokenizer  # noqa: E402
from ds_core.evaluation.sizes import kv_cache_summary  # noqa: E402
from ds_core.labs.mla import SCHEMES, cache_bytes_by_context, kv_bytes_by_model, with_references  # noqa: E402
from ds_core.ui import mla_tab  # noqa: E402

AppError = gradio_client.exceptions.AppError
PROMPT = "Once upon a time a fox named Ada found a red key."
OPTIONS = ("bf16", 2, "DeepSeek-V3")  # dtype, GQA key/value heads, model of the context plot


@pytest.fixture(scope="module")
def model(tiny_checkpoint):
    return DeepSeekModel.from_pretrained(tiny_checkpoint)


@pytest.mark.parametrize("layer,head", [(0, 1), (2, 3)])
def test_heatmaps_are_the_latent_and_the_k_v_naive_mla_computes(client, model, tiny_checkpoint, layer, head):
    summary, latent, k, v, *_ = client.predict(PROMPT, layer, head, *OPTIONS, api_name="/mla")
    ids = torch.tensor([Tokenizer.from_pretrained(tiny_checkpoint).encode(PROMPT)])
    with torch.no_grad(), model.trace() as tr:
        model(ids, mla="naive")
    a = f"layers.{layer}.attn"
    for plot, want in ((latent, tr[f"{a}.kv_latent"][0]), (k, tr[f"{a}.k"][0, head]), (v, tr[f"{a}.v"][0, head])):
        fig = figure(plot)
        torch.testing.assert_close(torch.tensor(fig["data"][0]["z"]), want, atol=1e-5, rtol=1e-5)
        assert len(fig["layout"]["yaxis"]["ticktext"]) == ids.shape[1]
        assert f"layer {layer}" in fig["layout"]["title"]["text"]
    assert f"**{ids.shape[1]} tokens**" in summary


def test_bytes_per_token_for_every_model_and_scheme(client, model, tiny_checkpoint):
    _, _, _, _, bars, table, measured, context = client.predict(PROMPT, 0, 0, *OPTIONS, api_name="/mla")
    models = with_references(f"this model ({tiny_checkpoint.name})", model.config)
    want = kv_bytes_by_model(models, "bf16", kv_heads=2)
    assert [row[0] for row in table["data"]] == list(models)
    for row in table["data"]:
        assert row[2:6] == [want[row[0]][s]["bytes"] for s in SCHEMES] and row[1] == 2
    fig = figure(bars)
    assert [b["name"] for b in fig["data"]] == list(SCHEMES) and fig["layout"]["yaxis"]["type"] == "log"
    for bar, scheme in zip(fig["data"], SCHEMES):
        assert bar["y"] == [want[name][scheme]["bytes"] for name in models]
    # the loaded model's figures, computed and measured from caches holding the prompt (fp32)
    kv = kv_cache_summary(model.config, "fp32")
    assert [row[1:] for row in measured["data"]] == [[kv["naive_bytes"], kv["naive_bytes"]],
                                                     [kv["latent_bytes"], kv["latent_bytes"]]]
    lines = figure(context)["data"]
    want_ctx = cache_bytes_by_context(models["DeepSeek-V3"], list(mla_tab.CONTEXT_AXIS), "bf16", 2)
    assert {line["name"]: line["y"] for line in lines} == want_ctx


def test_decode_speed_is_measured_on_caches_of_each_context(client, model):
    summary, plot, table = client.predict("48, 16", 2, api_name="/mla_speed")
    kv = kv_cache_summary(model.config, "fp32")
    assert [row[0] for row in table["data"]] == [16, 48]
    for context, naive_tps, absorbed_tps, speedup, naive_bytes, latent_bytes, ratio in table["data"]:
        assert naive_tps > 0 and absorbed_tps > 0
        assert speedup == pytest.approx(absorbed_tps / naive_tps, rel=0.05)  # from unrounded rates
        assert (naive_bytes, latent_bytes) == (context * kv["naive_bytes"], context * kv["latent_bytes"])
        assert ratio == pytest.approx(kv["ratio"], abs=0.01)
    assert [line["name"] for line in figure(plot)["data"]] == ["naive MLA", "absorbed MLA"]
    assert "bursts of 2 greedy decode steps" in summary


@pytest.mark.parametrize("api,args,message", [
    ("/mla", ("", 0, 0, *OPTIONS), "the prompt is empty"),
    ("/mla", (PROMPT, 3, 0, *OPTIONS), "layer must be an integer from 0 to 2"),
    ("/mla", (PROMPT, 0, 4, *OPTIONS), "head must be an integer from 0 to 3"),
    ("/mla", (PROMPT, 0, 0, "int8", 2, "DeepSeek-V3"), "dtype must be one of fp32, bf16, fp16"),
    ("/mla", (PROMPT, 0, 0, "bf16", 3, "DeepSeek-V3"), "must divide the 4 attention heads, got 3"),
    ("/mla", (PROMPT, 0, 0, "bf16", 12, "DeepSeek-V3"), "DeepSeek-V2-Lite: .* must divide the 16 attention heads"),
    ("/mla", (PROMPT, 0, 0, "bf16", 0, "DeepSeek-V3"), "GQA key/value heads must be an integer >= 1"),
    ("/mla", (PROMPT, 0, 0, "bf16", 2, "GPT-4"), "model for the context plot must be one of"),
    ("/mla_speed", ("128, x", 4), "contexts must be a comma-separated list of whole numbers"),
    ("/mla_speed", ("0", 4), "context must be an integer from 1 to 4096"),
    ("/mla_speed", ("5000", 4), "context must be an integer from 1 to 4096"),
    ("/mla_speed", ("1, 2, 3, 4, 5", 4), "contexts: give 1 to 4 lengths"),
    ("/mla_speed", ("", 4), "contexts: give 1 to 4 lengths"),
    ("/mla_speed", ("16", 0), "decode steps must be an integer from 1 to 64"),
])
def test_bad_input_gets_a_clear_error_and_the_tab_keeps_serving(client, api, args, message):
    with pytest.raises(AppError, match=message):
        client.predict(*args, api_name=api)
    summary, *_ = client.predict(PROMPT, 0, 0, *OPTIONS, api_name="/mla")
    assert "tokens" in summary


def test_long_prompt_keeps_its_last_tokens_and_says_so(client):
    summary, latent, *_ = client.predict(PROMPT * 20, 0, 0, *OPTIONS, api_name="/mla")
    assert len(figure(latent)["layout"]["yaxis"]["ticktext"]) <= mla_tab.MAX_TOKENS and "Only the last" in summary
