"""The τ sharpness tab: the two temperatures of a language model, each on the visitor's own prompt.

(a) attention temperature τ_attn: one real score row (layer, head, query position, default the last token) of
    `layers.{i}.attn.scores` [1, H, T, T] re-softmaxed at several τ_attn, softmax(scores / τ_attn), as one line
    per τ over the key tokens; per τ its entropy and largest probability (ds_core.labs.attention.sharpness, which
    also re-runs the whole model at that τ_attn)
(b) sampling temperature τ: the next-token distribution after the prompt at several τ
    (ds_core.generate.next_token_probs on the last position's logits [V]), its top candidates as grouped bars,
    and a continuation sampled at each τ with one fixed seed (ds_core.generate), side by side

Events (api_name), each served by the handler on_<api_name>:
    sharpness(prompt, layer, head, position, taus) -> (summary markdown, figure, table of entropy and max prob)
    sampling(prompt, taus, max_new_tokens, seed) -> (summary markdown, figure, continuations table)
taus is text, a comma list such as "0.25, 0.5, 1, 2, 4".
"""

from __future__ import annotations

from functools import partial

import gradio as gr
import pandas as pd
import plotly.graph_objects as go
import torch

from ..attention import DenseAttention, check_temperature
from ..checks import parse_list
from ..generate import SamplingParams, generate, next_token_probs
from ..labs.attention import sharpness, tempered
from ..tokenizer import Tokenizer
from ..viz import grouped_bars_figure, lines_figure, token_label
from . import AppContext
from .attention_tab import MAX_TOKENS, max_new_tokens_for, rounded
from .generate_tab import SEED_MAX
from .inputs import (check_layer_head, check_prompt, check_whole, layer_head_sliders, no_tokenizer_notice,
                     prompt_box, prompt_tokens, refuse, truncation_note)

TITLE = "τ sharpness"
MAX_TAUS = 6     # lines or bar groups one chart can still tell apart
TOP_N = 12       # candidate tokens drawn
DEFAULTS = dict(prompt="There was a young baker named Mira. Mira had a red kite. The baker named",
                attn_taus="0.25, 0.5, 1, 2, 4", sample_taus="0.3, 0.7, 1.0, 1.5", max_new_tokens=32, seed=0)
TABLE_COLUMNS = {"tau": "τ_attn", "entropy": "entropy (nats)", "max_prob": "max probability",
                 "rerun_entropy": "entropy, every layer at τ_attn",
                 "rerun_max_prob": "max prob, every layer at τ_attn",
                 "uniform_entropy": "entropy if spread evenly"}
INTRO = ("A model has two temperatures. **τ_attn** divides every attention score before its softmax: below 1 a "
         "head focuses on its top keys, above 1 it spreads out. The **sampling τ** divides the next-token logits "
         "before they are sampled: τ = 0 always takes the most likely token, larger τ gives rarer tokens a chance. "
         "Both are measured here on your prompt.")


# ---- input ----------------------------------------------------------------------------------------------------
def parse_taus(name: str, text, check) -> list[float]:
    """A comma list of temperatures -> its distinct values, each passed through check (the engine's own
    validation, which raises ValueError); 1 to MAX_TAUS of them."""
    taus = list(dict.fromkeys(check(t) for t in parse_list(name, text, float)))
    if not 1 <= len(taus) <= MAX_TAUS:
        raise ValueError(f"{name}: give 1 to {MAX_TAUS} values, got {len(taus)}")
    return taus


def sampling_temperature(tau: float) -> float:
    """tau checked as SamplingParams checks it: a finite number >= 0, 0 = greedy."""
    return SamplingParams(tau).temperature


# ---- (a) attention temperature ------------------------------------------------------------------------------
@torch.inference_mode()
def score_row(model, ids: torch.Tensor, layer: int, head: int, position: int) -> torch.Tensor:
    """ids [1, T] -> the scaled scores q·k of query `position` in (layer, head) at τ_attn = 1: [position + 1]
    (the keys it may read; later keys are -inf and left out)."""
    with model.trace() as tr:
        model(ids.to(model.device), backend=DenseAttention())
    return tr[f"layers.{layer}.attn.scores"][0, head, position, :position + 1].float().cpu()


def sharpness_figure(scores: torch.Tensor, taus: list[float], labels: list[str], where: str) -> go.Figure:
    """scores [S] of one query -> one line per τ of softmax(scores / τ) over the S key tokens."""
    rows = {f"τ_attn = {t:g}": tempered(scores, t).tolist() for t in taus}
    return lines_figure(labels, rows, f"{where}: one attention row at each τ_attn  [{len(labels)} keys]",
                        "key token", "probability")


# ---- (b) sampling temperature ---------------------------------------------------------------------------------
@torch.inference_mode()
def last_logits(model, ids: torch.Tensor) -> torch.Tensor:
    """ids [1, T] -> the logits [V] of the token after the prompt."""
    return model(ids.to(model.device))[0, -1].float().cpu()


def candidates(logits: torch.Tensor, taus: list[float], n: int = TOP_N) -> tuple[list[int], dict[float, list[float]]]:
    """logits [V] -> (the n most likely token ids, {τ: their probabilities under next_token_probs at τ}).

    One ranking serves every τ: dividing by τ > 0 keeps the order, and τ = 0 puts all mass on the first."""
    top = logits.topk(min(n, logits.numel())).indices
    return top.tolist(), {t: next_token_probs(logits, SamplingParams(t))[top].tolist() for t in taus}


def continuations(model, tok: Tokenizer, prompt: str, taus: list[float], max_new_tokens: int,
                  seed: int) -> pd.DataFrame:
    """One continuation per τ, sampled with the same seed: a row per τ (τ, text), so the texts line up."""
    rows = [(t, "".join(s.text for s in generate(model, tok, prompt, temperature=t, max_new_tokens=max_new_tokens,
                                                 seed=seed)))
            for t in taus]
    return pd.DataFrame(rows, columns=["sampling τ", "continuation"])


# ---- the handlers (plain functions: build wires them, tests call them) ---------------------------------------
def on_sharpness(ctx: AppContext, prompt, layer, head, position, taus) -> tuple:
    """(summary markdown, one line per τ_attn figure, table of entropy and max prob) for one attention row."""
    cfg = ctx.config
    try:
        fitted = check_prompt(ctx.tokenizer, prompt, MAX_TOKENS)
        layer, head = check_layer_head(cfg, layer, head)
        T = fitted.tokens
        position = check_whole("query position", position, -T, T - 1,
                               f" (the prompt has {T} tokens; -1 is the last)") % T
        taus = parse_taus("τ_attn values", taus, check_temperature)
    except ValueError as e:
        raise refuse(e) from None
    ids, labels = prompt_tokens(ctx.tokenizer, fitted)
    rows = sharpness(ctx.model, ctx.tokenizer, fitted.text, layer, head, taus, position)
    where = f"layer {layer}, head {head}, query {position} ({labels[position]})"
    figure = sharpness_figure(score_row(ctx.model, ids, layer, head, position), taus, labels[:position + 1], where)
    summary = (f"**{T} tokens** · row {position} of `layers.{layer}.attn.scores` [1, {cfg.num_attention_heads}, "
               f"{T}, {T}], head {head}: {position + 1} keys · each line is softmax(scores / τ_attn)"
               + truncation_note(fitted, MAX_TOKENS))
    return summary, figure, rounded(pd.DataFrame(rows)[list(TABLE_COLUMNS)].rename(columns=TABLE_COLUMNS))


def on_sampling(ctx: AppContext, prompt, taus, max_new_tokens, seed) -> tuple:
    """(summary markdown, grouped bars of the next-token distribution per τ, continuations table)."""
    tok = ctx.tokenizer
    try:
        fitted = check_prompt(tok, prompt, MAX_TOKENS)
        taus = parse_taus("sampling τ values", taus, sampling_temperature)
        n = check_whole("max new tokens", max_new_tokens, 1, max_new_tokens_for(ctx.config))
        seed = check_whole("seed", seed, 0, SEED_MAX)
    except ValueError as e:
        raise refuse(e) from None
    logits = last_logits(ctx.model, torch.tensor([tok.encode(fitted.text)]))
    top, probs = candidates(logits, taus)
    labels = [token_label(t) for t in tok.token_strings(top)]
    figure = grouped_bars_figure(labels, {f"τ = {t:g}": p for t, p in probs.items()},
                                 f"next-token distribution at each sampling τ: top {len(top)} of {logits.numel()} "
                                 "tokens", "candidate token", "probability")
    held = " · ".join(f"τ = {t:g}: {sum(p):.1%}" for t, p in probs.items())
    summary = (f"**{fitted.tokens} tokens** · logits [{logits.numel()}] at the last position of `logits` "
               f"[1, {fitted.tokens}, {logits.numel()}] · next_token_probs at each τ (no top-k, no top-p) · "
               f"mass on the {len(top)} shown: {held} · continuations: seed {seed}, {n} new tokens at most"
               + truncation_note(fitted, MAX_TOKENS))
    return summary, figure, continuations(ctx.model, tok, fitted.text, taus, n, seed)


# ---- the tab ----------------------------------------------------------------------------------------------------
def build(ctx: AppContext) -> gr.Button | None:
    """Lay out the tab; call inside `with gr.Blocks():`. None when the checkpoint has no tokenizer."""
    if no_tokenizer_notice(ctx, TITLE):
        return None
    max_new = max_new_tokens_for(ctx.config)
    with gr.Tab(TITLE):
        gr.Markdown(INTRO)
        prompt = prompt_box(DEFAULTS["prompt"], MAX_TOKENS, "tau-prompt", scale=None)
        gr.Markdown("### Attention temperature τ_attn: one attention row")
        with gr.Row():
            layer, head = layer_head_sliders(ctx.config, "tau")
            position = gr.Number(-1, precision=0, label="query position", info="0 = the first token, -1 = the last",
                                 elem_id="tau-position")
            attn_taus = gr.Textbox(DEFAULTS["attn_taus"], label="τ_attn values", info=f"comma list, each > 0; "
                                   f"at most {MAX_TAUS}", elem_id="tau-attn-taus")
        attn_button = gr.Button("Sharpen", variant="primary", elem_id="tau-sharpness-button")
        attn_outputs = [gr.Markdown(elem_id="tau-sharpness-summary"),
                        gr.Plot(show_label=False, elem_id="tau-sharpness-plot"),
                        gr.Dataframe(label="entropy and largest probability of the row, per τ_attn", interactive=False,
                                     elem_id="tau-sharpness-table")]

        gr.Markdown("### Sampling temperature τ: the next token")
        with gr.Row():
            sample_taus = gr.Textbox(DEFAULTS["sample_taus"], label="sampling τ values",
                                     info=f"comma list, each >= 0 (0 = greedy); at most {MAX_TAUS}",
                                     elem_id="tau-sample-taus")
            max_new_tokens = gr.Slider(1, max_new, min(DEFAULTS["max_new_tokens"], max_new), step=1,
                                       label=f"max new tokens (1 to {max_new})", elem_id="tau-max-new-tokens")
            seed = gr.Number(DEFAULTS["seed"], precision=0, minimum=0, label="seed", elem_id="tau-seed")
        sample_button = gr.Button("Sample", variant="primary", elem_id="tau-sampling-button")
        sample_outputs = [gr.Markdown(elem_id="tau-sampling-summary"),
                          gr.Plot(show_label=False, elem_id="tau-sampling-plot"),
                          gr.Dataframe(label="continuations, one per τ, same seed", interactive=False, wrap=True,
                                       column_widths=["12%", "88%"], elem_id="tau-continuations")]

    # preprocess=False: the handlers check the raw values themselves, so bad input gets their messages
    attn_button.click(partial(on_sharpness, ctx), inputs=[prompt, layer, head, position, attn_taus],
                      outputs=attn_outputs, api_name="sharpness", preprocess=False)
    sample_button.click(partial(on_sampling, ctx), inputs=[prompt, sample_taus, max_new_tokens, seed],
                        outputs=sample_outputs, api_name="sampling", preprocess=False)
    return attn_button
