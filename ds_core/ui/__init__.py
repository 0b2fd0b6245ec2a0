"""The web explorer's tabs, one module per tab; app.py only assembles them.

A tab module provides

    TITLE                       the tab's label
    build(ctx: AppContext)      called inside `with gr.Blocks():`; opens `gr.Tab(TITLE)`, lays out the tab's
                                components, wires its events, and returns a handle on them

Rules every tab keeps:

- Numbers and figures come from ds_core; a tab lays them out and never re-derives a formula.
- Every event has an api_name, so `gradio_client` (and the tests) can call it:
  `Client(url).predict("bf16", api_name="/kv_cache")`.
- Bad input raises `gr.Error` with a message saying what was wrong and what is allowed; the app keeps serving.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..config import ModelConfig
    from ..model import DeepSeekModel


@dataclass(frozen=True)
class AppContext:
    """What every tab gets: the checkpoint directory and the model loaded from it once, at start-up."""

    path: Path
    model: "DeepSeekModel"

    @property
    def config(self) -> "ModelConfig":
        return self.model.config


__all__ = ["AppContext"]
