"""The web app: served in-process on 127.0.0.1 and called through gradio_client, as a visitor's browser would."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import torch

gr = pytest.importorskip("gradio")
gradio_client = pytest.importorskip("gradio_client")

# gradio's own queue code trips pandas deprecations; nothing the app does
pytestmark = [pytest.mark.filterwarnings("ignore:'future.no_silent_downcasting' is deprecated"),
              pytest.mark.filterwarnings("ignore:The copy keyword is deprecated")]

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import app  # noqa: E402
from ds_core import DeepSeekModel  # noqa: E402
from ds_core.checks import dtype_name  # noqa: E402
from ds_core.evaluation import sizes  # noqa: E402
from ds_core.viz.text import human_bytes  # noqa: E402


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def served(tiny_checkpoint):
    """(client, base url) for the app on tiny_checkpoint; closed after the module's tests."""
    demo = app.build_app(tiny_checkpoint)
    port = _free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    try:
        url = f"http://127.0.0.1:{port}/"
        client = gradio_client.Client(url, verbose=False, analytics_enabled=False, download_files=False)
        yield client, url
    finally:
        demo.close()


@pytest.mark.parametrize("dtype", ["fp32", "bf16", "fp16"])
def test_kv_cache_endpoint_matches_inspect(served, tiny_checkpoint, dtype):
    client, _ = served
    plot, table = client.predict(dtype, api_name="/kv_cache")
    kv = sizes.kv_cache_summary(tiny_checkpoint, dtype)

    assert plot["type"] == "plotly"
    fig = json.loads(plot["plot"])
    (bar,) = fig["data"]
    assert bar["type"] == "bar" and bar["y"] == [kv["naive_bytes"], kv["latent_bytes"]]
    assert bar["text"] == [human_bytes(kv["naive_bytes"]), human_bytes(kv["latent_bytes"])]
    layout = fig["layout"]
    assert "bytes per token" in layout["yaxis"]["title"]["text"] and dtype in layout["yaxis"]["title"]["text"]
    assert layout["xaxis"]["title"]["text"]
    assert f"{kv['ratio']:.1f}x" in layout["title"]["text"]

    naive, latent = table["data"]
    assert naive[1:5] == [kv["naive_numbers_per_layer"], kv["naive_numbers"], kv["bytes_per_number"], kv["naive_bytes"]]
    assert latent[1:5] == [kv["latent_numbers_per_layer"], kv["latent_numbers"], kv["bytes_per_number"],
                           kv["latent_bytes"]]


@pytest.mark.parametrize("bad", ["int8", "FP32 ", None])
def test_bad_dtype_gets_a_clear_error_and_the_app_keeps_serving(served, tiny_checkpoint, bad):
    client, _ = served
    with pytest.raises(gradio_client.exceptions.AppError, match=r"dtype must be one of fp32, bf16, fp16, got"):
        client.predict(bad, api_name="/kv_cache")
    plot, _ = client.predict("bf16", api_name="/kv_cache")
    kv = sizes.kv_cache_summary(tiny_checkpoint, "bf16")
    assert json.loads(plot["plot"])["data"][0]["y"] == [kv["naive_bytes"], kv["latent_bytes"]]


def _expand(name: str) -> list[str]:
    """'a.experts.{0..3}.w' -> four names; 'a.experts.{0,2}.w' -> two; a plain name -> itself."""
    m = re.search(r"\{(\d+)\.\.(\d+)\}", name)
    if m:
        return [name[:m.start()] + str(i) + name[m.end():] for i in range(int(m[1]), int(m[2]) + 1)]
    m = re.search(r"\{([\d,]+)\}", name)
    if m:
        return [name[:m.start()] + i + name[m.end():] for i in m[1].split(",")]
    return [name]


def test_tensor_table_lists_every_state_dict_tensor_once(served, tiny_checkpoint):
    client, _ = served
    table = client.predict("", api_name="/tensors")
    assert table["headers"] == ["name", "shape", "dtype", "count", "parameters"]
    state = DeepSeekModel.from_pretrained(tiny_checkpoint).state_dict()

    seen = Counter()
    for name, shape, dtype, count, params in table["data"]:
        names = _expand(name)
        assert count == len(names), name
        seen.update(names)
        for n in names:
            assert shape == str(list(state[n].shape)), n
            assert dtype == dtype_name(state[n].dtype), n
        assert params == count * state[names[0]].numel()
    assert seen == Counter(list(state))  # every tensor, each exactly once
    assert len(table["data"]) < len(state)  # experts folded: layers.1.mlp.experts.{0..7}.gate_proj.weight
    assert ["layers.1.mlp.experts.{0..7}.gate_proj.weight", "[24, 64]", "fp32", 8, 8 * 24 * 64] in table["data"]
    assert sum(r[4] for r in table["data"]) == sizes.param_summary(tiny_checkpoint)["total"]

    experts3 = client.predict("experts.3", api_name="/tensors")["data"]  # matches a member of a folded row
    assert experts3 and all(".experts.{0..7}." in r[0] for r in experts3)
    assert client.predict("no such tensor", api_name="/tensors")["data"] == []


def test_page_is_served(served):
    import httpx

    _, url = served
    page = httpx.get(url, timeout=10)
    assert page.status_code == 200 and "DeepSeek Inference Explorer" in page.text


def test_weight_table_folds_experts_and_spots_tied_weights():
    emb = torch.zeros(10, 4)
    state = {"embed_tokens.weight": emb, "layers.0.mlp.experts.0.w": torch.zeros(2, 3),
             "layers.0.mlp.experts.2.w": torch.zeros(2, 3), "layers.0.mlp.experts.5.w": torch.zeros(2, 3),
             "layers.0.mlp.experts.7.w": torch.zeros(3, 3, dtype=torch.bfloat16), "lm_head.weight": emb}
    rows = sizes.weight_table(state)
    assert [(r["name"], r["count"], r["dtype"], r["tied_to"]) for r in rows] == [
        ("embed_tokens.weight", 1, "fp32", None),
        ("layers.0.mlp.experts.{0,2,5}.w", 3, "fp32", None),
        ("layers.0.mlp.experts.7.w", 1, "bf16", None),
        ("lm_head.weight", 1, "fp32", "embed_tokens.weight"),
    ]
    assert sizes.weight_totals(rows) == {"rows": 4, "tensors": 6, "params": 40 + 18 + 9}


def test_bad_model_path_exits_2_with_one_clear_line():
    run = subprocess.run([sys.executable, "app.py", "--model", "/nonexistent"], cwd=ROOT, capture_output=True,
                         text=True, timeout=60)
    assert run.returncode == 2
    assert run.stdout == ""
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in run.stderr
    assert "/nonexistent" in lines[0] and "config.json" in lines[0] and "safetensors" in lines[0]
