"""The QKV projection tab: the visitor's prompt through one real forward pass, and one layer's projections.

For a chosen layer and head it shows, as heatmaps with the tokens on the rows:
- X, the normalised input the attention projects  [T, D]
- the query latent c_Q and the key/value latent c_KV (MLA's down-projections)  [T, q_lora_rank], [T, kv_lora_rank]
- that head's Q, K and V (the up-projections; K's last qk_rope_head_dim columns are the rope key all heads share)

Event (api_name), served by the handler on_qkv: qkv(prompt, layer, head) -> (shapes markdown, X, c_Q, c_KV, Q, K,
V figures).
"""

from __future__ import annotations

from functools import partial

import gradio as gr
import plotly.graph_objects as go
import torch

from ..viz import heatmap_figure
from . import AppContext
from .inputs import (check_layer_head, check_prompt, layer_head_sliders, no_tokenizer_notice, prompt_tokens, refuse,
                     truncation_note)

TITLE = "QKV projection"
DEFAULT_PROMPT = "There was a young baker named Mira. Mira had a red kite."
MAX_TOKENS = 64  # rows a heatmap can still label legibly


def projections(model, ids: torch.Tensor, layer: int, head: int) -> dict[str, torch.Tensor]:
    """One traced forward pass of ids [1, T] -> layer's X [T, D], c_Q, c_KV, and head's Q, K [T, d_qk], V [T, d_v]."""
    with torch.inference_mode(), model.trace() as tr:
        model(ids.to(model.device))
    name = f"layers.{layer}.attn"
    out = {"X": tr[f"{name}.input"][0], "c_KV": tr[f"{name}.kv_latent"][0]}
    if f"{name}.q_latent" in tr:  # DeepSeek-V2-Lite projects queries directly
        out["c_Q"] = tr[f"{name}.q_latent"][0]
    out.update(Q=tr[f"{name}.q"][0, head], K=tr[f"{name}.k"][0, head], V=tr[f"{name}.v"][0, head])
    return {k: v.float().cpu() for k, v in out.items()}


CAPTIONS = {
    "X": ("X = input_layernorm(residual stream)", "hidden dimension"),
    "c_Q": ("c_Q = RMSNorm(X·W_DQ): query latent", "latent dimension"),
    "c_KV": ("c_KV = RMSNorm(X·W_DKV): the key/value latent MLA caches", "latent dimension"),
    "Q": ("Q = c_Q·W_UQ (nope | rope)", "q dimension"),
    "K": ("K = [c_KV·W_UK | shared rope key]", "k dimension"),
    "V": ("V = c_KV·W_UV", "v dimension"),
}


def figures(tensors: dict[str, torch.Tensor], labels: list[str], layer: int, head: int) -> dict[str, go.Figure]:
    out = {}
    for key, (caption, x_title) in CAPTIONS.items():
        if key in tensors:
            where = f"layer {layer}" + (f", head {head}" if key in "QKV" else "")
            out[key] = heatmap_figure(tensors[key], f"{where}: {caption}", x_title, "token", y_labels=labels,
                                      height=max(300, 18 * len(labels) + 120))
    return out


def on_qkv(ctx: AppContext, prompt, layer, head) -> tuple:
    """(shapes markdown, X, c_Q, c_KV, Q, K, V figures) of prompt's traced forward pass; c_Q is None for a model
    that projects queries directly."""
    try:
        fitted = check_prompt(ctx.tokenizer, prompt, MAX_TOKENS)
        layer, head = check_layer_head(ctx.config, layer, head)
    except ValueError as e:
        raise refuse(e) from None
    ids, labels = prompt_tokens(ctx.tokenizer, fitted)
    tensors = projections(ctx.model, ids, layer, head)
    figs = figures(tensors, labels, layer, head)
    shapes = ", ".join(f"{k} {list(v.shape)}" for k, v in tensors.items())
    return (f"**{ids.shape[1]} tokens** · {shapes}{truncation_note(fitted, MAX_TOKENS)}",
            *(figs.get(k) for k in CAPTIONS))


def build(ctx: AppContext) -> gr.Button | None:
    """Lay out the tab; call inside `with gr.Blocks():`. None when the checkpoint has no tokenizer."""
    if no_tokenizer_notice(ctx, TITLE):
        return None
    with gr.Tab(TITLE):
        gr.Markdown(
            "Attention turns each token into a query, a key and a value. In DeepSeek's Multi-head Latent "
            "Attention each goes through a small **latent** first: X → c_Q → Q and X → c_KV → K, V. Every "
            "picture below is the real tensor of one forward pass on your prompt.")
        with gr.Row():
            prompt = gr.Textbox(DEFAULT_PROMPT, label="prompt", lines=2, scale=3, elem_id="qkv-prompt")
            layer, head = layer_head_sliders(ctx.config, "qkv")
        button = gr.Button("Project", variant="primary", elem_id="qkv-button")
        shapes = gr.Markdown(elem_id="qkv-shapes")
        plots = {key: gr.Plot(show_label=False, elem_id=f"qkv-{key.lower().replace('_', '')}") for key in CAPTIONS}
    button.click(partial(on_qkv, ctx), inputs=[prompt, layer, head], outputs=[shapes, *plots.values()],
                 api_name="qkv", preprocess=False)
    return button
