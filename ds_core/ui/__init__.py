"""The web explorer's tabs, one module per tab; app.py only assembles them.

A tab module provides

    TITLE                   the tab's label
    build(ctx: AppContext)  called inside `with gr.Blocks():`; opens `gr.Tab(TITLE)`, lays out the tab's
                            components and wires each event to its handler, nothing more, and returns a handle on
                            them (None when the tab shows a notice instead, say a checkpoint with no tokenizer)
    on_<api_name>(...)      one handler per event, a plain module-level function (no gradio server needed to call
                            it). It takes what it needs explicitly: the AppContext first (or what build made once
                            from it), then the event's inputs as the browser sends them (the events use
                            preprocess=False, so 5 may come as 5.0 and anything may be None). It returns the
                            event's outputs in order, as a tuple, or yields them one update at a time when the
                            event streams; a long one may take `progress=gr.Progress()` last, which gradio fills.
                            build wires it as `functools.partial(on_x, ctx)`: gradio reads the remaining
                            signature, so the partial streams and reports progress as the function would.

Rules every tab keeps:

- Numbers and figures come from ds_core; a tab lays them out and never re-derives a formula.
- Every event has an api_name, so `gradio_client` (and the tests) can call it:
  `Client(url).predict("bf16", api_name="/kv_cache")`; the tests also call its handler, `on_kv_cache(ctx, "bf16")`.
- Bad input raises `gr.Error` (via `inputs.refuse`) with a message saying what was wrong and what is allowed; the
  app keeps serving.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..tokenizer import Tokenizer

if TYPE_CHECKING:
    from ..config import ModelConfig
    from ..model import DeepSeekModel


@dataclass(frozen=True)
class AppContext:
    """What every tab gets, loaded once at start-up: the checkpoint directory, its model and its tokenizer.

    tokenizer is None when the checkpoint has none that loads; tokenizer_error then says why, and the tabs that
    need one show a notice instead (inputs.no_tokenizer_notice)."""

    path: Path
    model: "DeepSeekModel"
    tokenizer: Tokenizer | None
    tokenizer_error: str = ""

    @classmethod
    def load(cls, path: str | Path, model: "DeepSeekModel") -> "AppContext":
        """The context of model, loaded from path: its tokenizer read here once, or the reason it would not load."""
        path = Path(path)
        try:
            return cls(path, model, Tokenizer.from_pretrained(path))
        except Exception as e:  # no tokenizer.json, or an unreadable one (tokenizers raises a bare Exception)
            return cls(path, model, None, str(e))

    @property
    def config(self) -> "ModelConfig":
        return self.model.config


__all__ = ["AppContext"]
