"""The QKV projection tab through gradio_client: each heatmap is the tensor a traced forward pass recorded."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

gradio_client = pytest.importorskip("gradio_client")
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:gradio.queueing")

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import app  # noqa: E402
from ds_core import DeepSeekModel, Tokenizer  # noqa: E402
from ds_core.ui import qkv_tab  # noqa: E402

AppError = gradio_client.exceptions.AppError
PROMPT = "Once upon a time a fox named Ada found a red key."


@pytest.fixture(scope="module")
def client(tiny_checkpoint):
    demo = app.build_app(tiny_checkpoint)
    demo.launch(server_name="127.0.0.1", prevent_thread_lock=True, quiet=True)
    try:
        yield gradio_client.Client(demo.local_url, verbose=False, analytics_enabled=False, download_files=False)
    finally:
        demo.close()


def heatmap(plot) -> tuple[torch.Tensor, list[str], str]:
    fig = json.loads(plot["plot"])
    (trace,) = fig["data"]
    return torch.tensor(trace["z"]), fig["layout"]["yaxis"]["ticktext"], fig["layout"]["title"]["text"]


@pytest.mark.parametrize("layer,head", [(0, 0), (2, 3)])
def test_heatmaps_are_the_traced_tensors(client, tiny_checkpoint, layer, head):
    shapes, *plots = client.predict(PROMPT, layer, head, api_name="/qkv")
    model, tok = DeepSeekModel.from_pretrained(tiny_checkpoint), Tokenizer.from_pretrained(tiny_checkpoint)
    ids = torch.tensor([tok.encode(PROMPT)])
    with torch.no_grad(), model.trace() as tr:
        model(ids)
    a = f"layers.{layer}.attn"
    want = [tr[f"{a}.input"][0], tr[f"{a}.q_latent"][0], tr[f"{a}.kv_latent"][0],
            tr[f"{a}.q"][0, head], tr[f"{a}.k"][0, head], tr[f"{a}.v"][0, head]]
    assert f"**{ids.shape[1]} tokens**" in shapes
    for plot, expected in zip(plots, want):
        z, rows, title = heatmap(plot)
        torch.testing.assert_close(z, expected, atol=1e-5, rtol=1e-5)
        assert len(rows) == ids.shape[1] and title.endswith(f"[{expected.shape[0]} × {expected.shape[1]}]")
        assert f"layer {layer}" in title


@pytest.mark.parametrize("args,message", [
    (("", 0, 0), "the prompt is empty"),
    ((PROMPT, 3, 0), "layer must be an integer from 0 to 2"),
    ((PROMPT, 0, 4), "head must be an integer from 0 to 3"),
    ((PROMPT, 0.5, 0), "layer must be an integer"),
])
def test_bad_input_gets_a_clear_error_and_the_tab_keeps_serving(client, args, message):
    with pytest.raises(AppError, match=message):
        client.predict(*args, api_name="/qkv")
    shapes, *_ = client.predict(PROMPT, 0, 0, api_name="/qkv")
    assert "tokens" in shapes


def test_long_prompt_keeps_its_last_tokens_and_says_so(client):
    shapes, x, *_ = client.predict(PROMPT * 20, 0, 0, api_name="/qkv")
    z, rows, _ = heatmap(x)
    assert len(rows) <= qkv_tab.MAX_TOKENS and "Only the last" in shapes
