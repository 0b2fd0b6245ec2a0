"""What the tabs share about a visitor's input: checking it (whole numbers in a range, prompts cut to the
context, bad input turned into a message, gr.Error, instead of a stack trace), and the input components several
tabs lay out alike (the prompt box, the layer and head sliders)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import gradio as gr
import torch

from ..checks import check_int
from ..tokenizer import Tokenizer
from ..viz import token_label

if TYPE_CHECKING:
    from ..config import ModelConfig
    from . import AppContext


def whole(value: Any) -> Any:
    """value as an int when it is a whole float (JSON, and so the browser, writes 5 and 5.0 alike), else as is."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def check_whole(name: str, value: Any, low: int, high: int, why: str = "") -> int:
    """value (5 or 5.0, as the browser sends it) as an int in [low, high], or ValueError naming the range."""
    return check_int(name, whole(value), low, high, why)


def check_layer_head(cfg: "ModelConfig", layer: Any, head: Any) -> tuple[int, int]:
    """layer and head (as the browser sends them) as ints naming a decoder layer and an attention head of cfg."""
    return (check_whole("layer", layer, 0, cfg.num_hidden_layers - 1),
            check_whole("head", head, 0, cfg.num_attention_heads - 1))


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


def prompt_tokens(tok: Tokenizer, fitted: FittedPrompt) -> tuple[torch.Tensor, list[str]]:
    """The fitted prompt as the model reads it: ids [1, T], and each token's visible label [T] for a chart's axis."""
    ids = tok.encode(fitted.text)
    return torch.tensor([ids]), [token_label(t) for t in tok.token_strings(ids)]


def no_tokenizer_notice(ctx: "AppContext", title: str, who: str = "This tab", fix: str = "") -> bool:
    """True, after laying out tab `title` as a notice saying why, when the checkpoint has no tokenizer that loads.

    who: what needs the tokenizer, to start the sentence; fix: a sentence after it saying how to add one."""
    if ctx.tokenizer is not None:
        return False
    with gr.Tab(title):
        gr.Markdown(f"{who} needs the checkpoint's tokenizer, and `{ctx.path}` has none that loads: "
                    f"{ctx.tokenizer_error}.{fix}")
    return True


# ---- components ----------------------------------------------------------------------------------------------
def prompt_box(text: str, max_tokens: int, elem_id: str, scale: int | None = 3) -> gr.Textbox:
    """The prompt textbox of a tab that reads at most the prompt's last max_tokens tokens."""
    return gr.Textbox(text, label=f"prompt (at most its last {max_tokens} tokens are used)", lines=2, scale=scale,
                      elem_id=elem_id)


def layer_head_sliders(cfg: "ModelConfig", prefix: str) -> tuple[gr.Slider, gr.Slider]:
    """Sliders choosing a decoder layer and an attention head of the model, elem_ids `{prefix}-layer`, `-head`."""
    return (gr.Slider(0, cfg.num_hidden_layers - 1, 0, step=1, label="layer", elem_id=f"{prefix}-layer"),
            gr.Slider(0, cfg.num_attention_heads - 1, 0, step=1, label="head", elem_id=f"{prefix}-head"))
