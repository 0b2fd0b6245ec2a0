"""Checking what a visitor typed, shared by the tabs: whole numbers in a range, prompts cut to the context,
and bad input turned into a message (gr.Error) instead of a stack trace."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import gradio as gr

from ..checks import check_int
from ..tokenizer import Tokenizer

if TYPE_CHECKING:
    from . import AppContext


def whole(value: Any) -> Any:
    """value as an int when it is a whole float (JSON, and so the browser, writes 5 and 5.0 alike), else as is."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def check_whole(name: str, value: Any, low: int, high: int, why: str = "") -> int:
    """value (5 or 5.0, as the browser sends it) as an int in [low, high], or ValueError naming the range."""
    return check_int(name, whole(value), low, high, why)


def refuse(error: ValueError) -> gr.Error:
    """Bad input as the visitor sees it: the message alone (expected, so no traceback in the server log)."""
    return gr.Error(str(error), print_exception=False)


@dataclass(frozen=True)
class FittedPrompt:
    """The prompt as generated from: its text, its token count, and whether its start was cut off."""

    text: str
    tokens: int
    truncated: bool


def fit_prompt(tok: Tokenizer, prompt: str, budget: int) -> FittedPrompt:
    """prompt, or its longest ending that encodes to at most budget tokens (cut at a token boundary).

    The cut is made in the text, so that ds_core.generate encodes the prompt as always (a BOS token included).
    Text cut at a token boundary may encode to slightly more tokens than were kept, hence the loop.
    """
    ids = tok.encode(prompt)
    if len(ids) <= budget:
        return FittedPrompt(prompt, len(ids), False)
    offsets = tok.tk.encode(prompt).offsets  # each token's character span, without the BOS the wrapper adds
    keep = budget - (len(ids) - len(offsets))
    while keep > 0:
        text = prompt[offsets[-keep][0]:]
        n = len(tok.encode(text))
        if n <= budget:
            return FittedPrompt(text, n, True)
        keep -= n - budget
    raise ValueError(f"no prompt token fits: the model's context leaves {budget} token(s) for the prompt; "
                     "ask for fewer new tokens")


def check_prompt(tok: Tokenizer, prompt, budget: int) -> FittedPrompt:
    """The visitor's prompt, refused when empty, cut to its last `budget` tokens when longer."""
    if not isinstance(prompt, str) or not prompt.strip():
        raise ValueError("the prompt is empty: give at least one character of text")
    return fit_prompt(tok, prompt, budget)


def truncation_note(fitted: FittedPrompt, budget: int) -> str:
    """A sentence saying the prompt was cut, or '' when it was not."""
    if not fitted.truncated:
        return ""
    return (f"\n\nOnly the last {fitted.tokens} tokens of the prompt are used (at most {budget}, so the axes stay "
            "readable).")


def tokenizer_or_notice(ctx: "AppContext", title: str) -> Tokenizer | None:
    """The checkpoint's tokenizer; or None, after laying out tab `title` as a notice saying why it has none."""
    try:
        return Tokenizer.from_pretrained(ctx.path)
    except Exception as e:  # no tokenizer.json, or an unreadable one (tokenizers raises a bare Exception)
        with gr.Tab(title):
            gr.Markdown(f"This tab needs the checkpoint's tokenizer, and `{ctx.path}` has none that loads: {e}.")
    return None
