"""Shared by the tab tests: serve the app on a checkpoint and talk to it through gradio_client."""

from __future__ import annotations

import json
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import gradio_client

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import app  # noqa: E402


def serve(path):
    """The app on the checkpoint at path, launched in this process -> (demo, client); demo.close() stops it."""
    demo = app.build_app(path)
    demo.launch(server_name="127.0.0.1", prevent_thread_lock=True, quiet=True)
    return demo, gradio_client.Client(demo.local_url, verbose=False, analytics_enabled=False, download_files=False)


@contextmanager
def served(path) -> Iterator[gradio_client.Client]:
    """A client of the app on the checkpoint at path, for the block's duration (a module fixture's body)."""
    demo, client = serve(path)
    try:
        yield client
    finally:
        demo.close()


def figure(plot) -> dict:
    """A gr.Plot output as gradio_client returns it -> the plotly figure as a dict (data, layout)."""
    return json.loads(plot["plot"])
