"""The Attention & masks tab: which keys each query may read under an attention scheme, and what that costs.

For the visitor's prompt and a scheme (dense; a sliding window of w tokens + g global sinks + chosen global
positions; or DSA, whose lightning indexer picks each query's top-k keys) at attention temperature τ_attn:
- the mask, query × key: the pairs the rule allows (for DSA, the keys this prompt's indexer picked in the layer)
- the real attention probabilities of one layer and head under it: `layers.{i}.attn.probs` [1, H, T, T] of a
  traced forward pass with that backend (zero wherever the mask is)
- the share of dense attention's T×T scores the backend's fast path computes (ds_core.labs.attention.fraction_computed)
  and how it ran (the backend's last_note)
- what it loses against dense attention (τ_attn = 1, the model as trained) on this prompt: next-token
  KL(dense ‖ scheme) averaged over the T positions, and how often the greedy next token changes
- on request, a continuation generated with the scheme, streamed beside the dense one

Events (api_name), each served by the handler on_<api_name>:
    attention(prompt, scheme, window, sinks, global_positions, top_k, tau_attn, layer, head)
        -> (summary markdown, measurements table, mask figure, probabilities figure)
    attention_generate(prompt, scheme, window, sinks, global_positions, top_k, tau_attn,
                       temperature, max_new_tokens, seed) -> streamed (scheme text, dense text, stats markdown)
scheme is "dense", "window" or "dsa"; options of the schemes not chosen are ignored.
"""

from __future__ import annotations

from functools import partial
from itertools import zip_longest
from numbers import Real
from pathlib import Path
from typing import Iterator

import gradio as gr
import pandas as pd
import plotly.graph_objects as go
import torch

from ..attention import DenseAttention, DSAAttention, WindowAttention, check_temperature
from ..attention.dsa import CONFIG_FILE, TRAIN_COMMAND, WEIGHTS_FILE
from ..checks import parse_list
from ..generate import generate
from ..labs.attention import fraction_computed, next_token_divergence
from ..viz import heatmap_figure
from . import AppContext
from .generate_tab import SEED_MAX
from .inputs import (check_layer_head, check_prompt, check_whole, layer_head_sliders, no_tokenizer_notice,
                     prompt_box, prompt_tokens, refuse, truncation_note)

TITLE = "Attention & masks"
MAX_TOKENS = 64        # rows and columns a heatmap can still label legibly
MAX_NEW_TOKENS = 128   # the cap on one side-by-side generation
# WindowAttention's fast path scores whole blocks of queries against their band of keys; its default (64) spans
# every prompt this tab takes, so nothing would be saved. Blocks of 16 show the saving at these lengths.
WINDOW_BLOCK = 16
SCHEMES = [("dense (causal)", "dense"), ("window + global sinks", "window"), ("DSA top-k", "dsa")]
DEFAULTS = dict(prompt="There was a young baker named Mira. Mira had a red kite. The baker named",
                scheme="window", window=8, sinks=2, global_positions="", top_k=8, tau_attn=1.0, temperature=0.0,
                max_new_tokens=48, seed=0)


# ---- input (plain functions; no gradio) ---------------------------------------------------------------------
def has_indexer(path: Path) -> bool:
    return (Path(path) / WEIGHTS_FILE).is_file() and (Path(path) / CONFIG_FILE).is_file()


def make_backend(path: Path, context: int, scheme, window, sinks, global_positions, top_k, tau_attn):
    """The visitor's choice -> a fresh attention backend (DSA keeps per-call state: one per request, never
    shared). Only the chosen scheme's options are checked; ValueError says what was wrong."""
    tau = check_temperature(tau_attn)
    if scheme == "dense":
        return DenseAttention(tau)
    if scheme == "window":
        return WindowAttention(check_whole("window w", window, 1, context),
                               check_whole("global sinks g", sinks, 0, context),
                               parse_list("global positions", global_positions), tau, block=WINDOW_BLOCK)
    if scheme == "dsa":
        k = check_whole("top-k", top_k, 1, context)
        try:
            return DSAAttention(path, k, tau)  # reads the indexer files now, so ones trained since start-up count
        except FileNotFoundError as e:  # no indexer: the message names the command that trains one
            raise ValueError(str(e)) from None
    raise ValueError(f"scheme must be one of {', '.join(v for _, v in SCHEMES)}, got {scheme!r}")


# ---- measuring ----------------------------------------------------------------------------------------------
def scheme_mask(backend, tr, layer: int, T: int) -> torch.Tensor:
    """Bool [T, T]: may query t of the prompt read key s in `layer`? DSA: the keys its indexer picked (traced as
    dsa_selected; absent when top-k >= T and it ran dense); otherwise the backend's rule at positions 0..T-1."""
    selected = tr.get(f"layers.{layer}.attn.dsa_selected")
    if selected is not None:
        return DSAAttention.selection_mask(selected, T)[0].cpu()
    pos = torch.arange(T)[None]
    return backend.allowed(pos, pos, None)[0]


@torch.inference_mode()
def analyse(model, ids: torch.Tensor, backend, layer: int, head: int) -> dict:
    """ids [1, T] under `backend` -> mask [T, T], probs [T, T] (layer, head), fraction, note, kl, greedy_changed,
    heads H. Three passes: dense (the reference), the scheme as it really runs (its fast path: the logits and
    the note), then the scheme traced (its explicit path, which records probs; it would overwrite the note)."""
    ids = ids.to(model.device)
    T = ids.shape[1]
    dense_logits = model(ids, backend=DenseAttention())[0]
    logits = model(ids, backend=backend)[0]
    note = backend.last_note or backend.describe(T)  # a backend that always runs one way leaves no note
    with model.trace() as tr:
        model(ids, backend=backend)
    probs = tr[f"layers.{layer}.attn.probs"]  # [1, H, T, T]
    kl, differs = next_token_divergence(dense_logits, logits)
    kl, changed = float(kl.mean()), float(differs.float().mean())
    return dict(mask=scheme_mask(backend, tr, layer, T), probs=probs[0, head].float().cpu(), heads=probs.shape[1],
                fraction=fraction_computed(backend, T), kl=kl, greedy_changed=changed, note=note)


def describe(backend) -> str:
    """The scheme in a few words, for titles."""
    if isinstance(backend, WindowAttention):
        glob = f" + global positions {list(backend.global_positions)}" if backend.global_positions else ""
        what = f"window {backend.window} + {backend.n_global} sinks{glob}"
    elif isinstance(backend, DSAAttention):
        what = f"DSA top-{backend.top_k}"
    else:
        what = "dense"
    return f"{what}, τ_attn = {backend.temperature:g}"


def measurements(result: dict, T: int) -> pd.DataFrame:
    """The numbers of one analysis as a two-column table (measure, value)."""
    rows = [("prompt tokens T", T),
            ("share of dense's T×T scores the fast path computes", result["fraction"]),
            (f"query-key pairs the mask allows (of {T * (T + 1) // 2} causal)", int(result["mask"].sum())),
            ("KL(dense ‖ scheme), nats per position", result["kl"]),
            ("greedy next token changed, share of positions", result["greedy_changed"])]
    return pd.DataFrame(rows, columns=["measure", "value"], dtype=object)  # object: counts stay whole numbers


def rounded(table: pd.DataFrame, digits: int = 4):
    """table shown with `digits` significant digits per number; the API still returns the full values."""
    numbers = [c for c in table.columns if table[c].map(lambda v: isinstance(v, Real)).all()]
    return table.style.format(lambda v: f"{v:.{digits}g}", subset=numbers)


def figures(result: dict, labels: list[str], layer: int, head: int, backend) -> tuple[go.Figure, go.Figure]:
    """(mask heatmap, probabilities heatmap), query tokens down, key tokens across."""
    height = max(360, 14 * len(labels) + 160)
    scheme = describe(backend)
    picked = "keys the indexer picked" if isinstance(backend, DSAAttention) else "the pairs the rule allows"
    mask = heatmap_figure(result["mask"].float(), f"layer {layer} mask, {scheme}: {picked} (1 = may read)",
                          "key token", "query token", labels, labels, diverging=False, height=height)
    probs = heatmap_figure(result["probs"], f"layer {layer}, head {head}: attention probabilities, {scheme}",
                           "key token", "query token", labels, labels, diverging=False, height=height)
    return mask, probs


def stats_markdown(scheme_ids: list[int], dense_ids: list[int]) -> str:
    """Token counts of the two continuations and how long they agree."""
    same = next((i for i, (a, b) in enumerate(zip(scheme_ids, dense_ids)) if a != b),
                min(len(scheme_ids), len(dense_ids)))
    return (f"scheme **{len(scheme_ids)}** tokens · dense **{len(dense_ids)}** tokens · "
            f"the two agree on their first **{same}** tokens")


INTRO = ("Attention lets each query token read earlier key tokens. A **sparse scheme** lets it read only some: "
         "a sliding **window** of the last w tokens plus g **global sinks** (the first tokens, which every "
         "query reads) and chosen global positions, or **DSA**, where a small lightning indexer picks each "
         "query's top-k keys. τ_attn divides the scores before the softmax: < 1 sharpens, > 1 flattens. Every "
         "picture is a real forward pass on your prompt.")


def max_new_tokens_for(cfg) -> int:
    """The most new tokens one side-by-side generation may ask for: MAX_NEW_TOKENS, or what the context leaves
    after the longest prompt this tab takes."""
    return min(MAX_NEW_TOKENS, cfg.max_position_embeddings - MAX_TOKENS)


def no_indexer_note(path: Path) -> str:
    return (f"**DSA top-k** needs a lightning indexer trained for this model ({WEIGHTS_FILE} and {CONFIG_FILE} in "
            f"`{path}`), and there is none yet. Create it with `{TRAIN_COMMAND.format(path=path)}`; the tab reads "
            "it on the next request.")


# ---- the handlers (plain functions: build wires them, tests call them) ---------------------------------------
def on_attention(ctx: AppContext, prompt, scheme, window, sinks, global_positions, top_k, tau_attn, layer,
                 head) -> tuple:
    """(summary markdown, measurements table, mask figure, probabilities figure) of prompt under the scheme."""
    try:
        fitted = check_prompt(ctx.tokenizer, prompt, MAX_TOKENS)
        backend = make_backend(ctx.path, ctx.config.max_position_embeddings, scheme, window, sinks,
                               global_positions, top_k, tau_attn)
        layer, head = check_layer_head(ctx.config, layer, head)
    except ValueError as e:
        raise refuse(e) from None
    ids, labels = prompt_tokens(ctx.tokenizer, fitted)
    T = ids.shape[1]
    result = analyse(ctx.model, ids, backend, layer, head)
    summary = (f"**{T} tokens** · `{describe(backend)}` · mask [{T}, {T}] · traced "
               f"`layers.{layer}.attn.probs` [1, {result['heads']}, {T}, {T}], head {head} shown · "
               f"how it ran: {result['note']}" + truncation_note(fitted, MAX_TOKENS))
    return (summary, rounded(measurements(result, T)), *figures(result, labels, layer, head, backend))


def on_attention_generate(ctx: AppContext, prompt, scheme, window, sinks, global_positions, top_k, tau_attn,
                          temperature, max_new_tokens, seed) -> Iterator[tuple[str, str, str]]:
    """Stream the scheme's continuation beside the dense one: (scheme text, dense text, stats) per step."""
    tok = ctx.tokenizer
    try:
        fitted = check_prompt(tok, prompt, MAX_TOKENS)
        backend = make_backend(ctx.path, ctx.config.max_position_embeddings, scheme, window, sinks,
                               global_positions, top_k, tau_attn)
        n = check_whole("max new tokens", max_new_tokens, 1, max_new_tokens_for(ctx.config))
        seed = check_whole("seed", seed, 0, SEED_MAX)
        streams = [generate(ctx.model, tok, fitted.text, temperature=temperature, max_new_tokens=n, seed=seed,
                            backend=b) for b in (backend, DenseAttention())]
    except ValueError as e:
        raise refuse(e) from None
    texts, ids = ["", ""], [[], []]
    for pair in zip_longest(*streams):  # in lockstep, so both grow together; one may stop early at EOS
        for i, step in enumerate(pair):
            if step is not None:
                texts[i] += step.text
                ids[i].append(step.token_id)
        yield texts[0], texts[1], stats_markdown(*ids) + truncation_note(fitted, MAX_TOKENS)


# ---- the tab ------------------------------------------------------------------------------------------------
def scheme_options() -> list:
    """A row of the schemes' options: window w, global sinks g, global positions, DSA top-k, τ_attn."""
    with gr.Row():
        return [gr.Number(DEFAULTS["window"], precision=0, label="window w", info="the last w tokens, itself included",
                          elem_id="attn-window"),
                gr.Number(DEFAULTS["sinks"], precision=0, label="global sinks g", info="the first g tokens",
                          elem_id="attn-sinks"),
                gr.Textbox(DEFAULTS["global_positions"], label="global positions",
                           info="comma list, e.g. 5, 12: read by and reading every token", elem_id="attn-globals"),
                gr.Number(DEFAULTS["top_k"], precision=0, label="DSA top-k", info="keys each query reads",
                          elem_id="attn-top-k"),
                gr.Number(DEFAULTS["tau_attn"], label="τ_attn", info="> 0; 1 = the model as trained",
                          elem_id="attn-tau")]


def sampling_options(max_new: int) -> list:
    """A row of the side-by-side generation's settings: sampling temperature τ, max new tokens, seed."""
    with gr.Row():
        return [gr.Slider(0, 2, DEFAULTS["temperature"], step=0.05, label="sampling temperature τ",
                          elem_id="attn-temperature"),
                gr.Slider(1, max_new, min(DEFAULTS["max_new_tokens"], max_new), step=1,
                          label=f"max new tokens (1 to {max_new})", elem_id="attn-max-new-tokens"),
                gr.Number(DEFAULTS["seed"], precision=0, minimum=0, label="seed", elem_id="attn-seed")]


def build(ctx: AppContext) -> gr.Button | None:
    """Lay out the tab; call inside `with gr.Blocks():`. None when the checkpoint has no tokenizer."""
    if no_tokenizer_notice(ctx, TITLE):
        return None
    with gr.Tab(TITLE):
        gr.Markdown(INTRO)
        if not has_indexer(ctx.path):
            gr.Markdown(no_indexer_note(ctx.path))
        with gr.Row():
            prompt = prompt_box(DEFAULTS["prompt"], MAX_TOKENS, "attn-prompt")
            scheme = gr.Radio(SCHEMES, value=DEFAULTS["scheme"], label="scheme", elem_id="attn-scheme")
        options = [scheme, *scheme_options()]
        with gr.Row():
            layer, head = layer_head_sliders(ctx.config, "attn")
        button = gr.Button("Show attention", variant="primary", elem_id="attn-button")
        summary = gr.Markdown(elem_id="attn-summary")
        table = gr.Dataframe(headers=["measure", "value"], label="cost and loss against dense attention (τ_attn = 1)",
                             interactive=False, elem_id="attn-measures")
        plots = [gr.Plot(show_label=False, elem_id="attn-mask"), gr.Plot(show_label=False, elem_id="attn-probs")]

        gr.Markdown("### Generate with the chosen scheme\nThe same prompt continued with the scheme and with "
                    "dense attention, token by token. τ = 0 is greedy; the same seed gives the same text.")
        sampling = sampling_options(max_new_tokens_for(ctx.config))
        gen_button = gr.Button("Generate with the chosen scheme", elem_id="attn-gen-button")
        with gr.Row():
            texts = [gr.Textbox(label="with the chosen scheme", lines=6, interactive=False, elem_id="attn-gen-scheme"),
                     gr.Textbox(label="dense attention", lines=6, interactive=False, elem_id="attn-gen-dense")]
        gen_stats = gr.Markdown(elem_id="attn-gen-stats")

    # preprocess=False: the handlers check the raw values themselves, so bad input gets their messages
    button.click(partial(on_attention, ctx), inputs=[prompt, *options, layer, head],
                 outputs=[summary, table, *plots], api_name="attention", preprocess=False)
    gen_button.click(partial(on_attention_generate, ctx), inputs=[prompt, *options, *sampling],
                     outputs=[*texts, gen_stats], api_name="attention_generate", preprocess=False)
    return button
