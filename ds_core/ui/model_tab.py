"""The Model tab: what the loaded checkpoint is, before anything runs.

- architecture: the config fields that shape the model, each with a note (ds_core.evaluation.sizes.architecture_rows)
- parameters: total and active per token (ds_core.evaluation.sizes.param_summary)
- KV cache per token, naive vs latent, as a bar chart in the chosen dtype (ds_core.evaluation.sizes.kv_cache_summary)
- every weight tensor of the loaded model, routed experts folded into one row (ds_core.evaluation.sizes.weight_table)

Events (api_name), each served by the handler on_<api_name>: kv_cache(dtype) -> (figure, table);
tensors(filter) -> table.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any

import gradio as gr
import plotly.graph_objects as go

from ..checks import DTYPES, dtype_name
from ..evaluation import sizes
from ..viz.text import human_bytes, human_count
from . import AppContext
from .inputs import refuse

TITLE = "Model"

KV_COLUMNS = ["cache", "numbers per token per layer", "numbers per token", "bytes per number",
              "bytes per token", "bytes per token (readable)"]
TENSOR_COLUMNS = ["name", "shape", "dtype", "count", "parameters"]


@dataclass
class ModelTab:
    """Handles on the tab's components (later tabs and tests may wire to them)."""

    dtype: gr.Radio
    kv_plot: gr.Plot
    kv_table: gr.Dataframe
    tensor_filter: gr.Textbox
    tensors: gr.Dataframe


# ---- content (plain functions of ds_core's numbers; no gradio) ----------------------------------------------
def architecture_table(ctx: AppContext) -> list[list[str]]:
    return [[key, str(value), note] for key, value, note in sizes.architecture_rows(ctx.config)]


def params_table(ctx: AppContext) -> list[list[str]]:
    p = sizes.param_summary(ctx.config)
    return [
        ["total", f"{p['total']:,}", human_count(p["total"]), "every weight (MTP layers excluded)"],
        ["active per token", f"{p['active']:,}", human_count(p["active"]),
         f"{100 * p['active_fraction']:.1f}% of total (unused routed experts skipped)"],
        ["embeddings + lm_head", f"{p['embeddings']:,}", human_count(p["embeddings"]),
         "embeddings, final norm, lm_head"],
        ["MoE layers", str(p["moe_layers"]), "", f"of {ctx.config.num_hidden_layers} decoder layers"],
    ]


def kv_cache_table(kv: dict[str, Any]) -> list[list[Any]]:
    return [
        ["naive (per-head K and V)", kv["naive_numbers_per_layer"], kv["naive_numbers"], kv["bytes_per_number"],
         kv["naive_bytes"], human_bytes(kv["naive_bytes"])],
        ["latent (MLA c_KV + k_rope)", kv["latent_numbers_per_layer"], kv["latent_numbers"],
         kv["bytes_per_number"], kv["latent_bytes"], human_bytes(kv["latent_bytes"])],
    ]


def kv_cache_figure(kv: dict[str, Any], num_layers: int) -> go.Figure:
    """Bar chart of kv_cache_summary: bytes one token adds to the cache, naive vs latent."""
    rows = kv_cache_table(kv)
    fig = go.Figure(go.Bar(
        x=[r[0] for r in rows], y=[kv["naive_bytes"], kv["latent_bytes"]],
        text=[r[-1] for r in rows], textposition="outside", marker_color=["#c44e52", "#4c72b0"],
        hovertemplate="%{x}<br>%{y:,} bytes per token<extra></extra>",
    ))
    fig.update_layout(
        title=f"{kv['dtype']}: the latent cache is {kv['ratio']:.1f}x smaller",
        xaxis_title="what the cache keeps for each token",
        yaxis_title=f"bytes per token (all {num_layers} layers, {kv['dtype']})",
        title_font_size=14, title_x=0.02, yaxis_rangemode="tozero", height=440,
        margin=dict(t=80, b=40, l=60, r=20),
    )
    fig.update_yaxes(range=[0, 1.15 * kv["naive_bytes"]])  # room for the labels above the bars
    return fig


def tensor_rows(rows: list[dict[str, Any]], query: str = "") -> list[list[Any]]:
    """weight_table rows as table cells; query keeps rows whose name or any member's name contains it."""
    q = query.strip().lower()
    keep = [r for r in rows if not q or q in r["name"].lower() or any(q in n.lower() for n in r["names"])]
    return [[r["name"], str(list(r["shape"])), r["dtype"], r["count"], r["params"]] for r in keep]


def tensor_caption(ctx: AppContext, rows: list[dict[str, Any]]) -> str:
    t = sizes.weight_totals(rows)
    config_total = sizes.param_summary(ctx.config)["total"]
    check = ("equal to the count from config.json above" if t["params"] == config_total
             else f"config.json predicts {config_total:,}")
    tied = [f"`{r['names'][0]}` is `{r['tied_to']}` (tied, counted once)" for r in rows if r["tied_to"]]
    return (f"**{t['tensors']} tensors** in {t['rows']} rows (the same weight of every routed expert in a layer "
            f"is one row; `count` says how many), **{t['params']:,} numbers** in all, {check}."
            + (" " + "; ".join(tied) + "." if tied else ""))


# ---- the handlers (plain functions: build wires them, tests call them) ---------------------------------------
def on_kv_cache(ctx: AppContext, dtype: Any) -> tuple[go.Figure, list[list[Any]]]:
    """KV-cache bytes per token, naive vs latent, in dtype ('fp32', 'bf16' or 'fp16'): (figure, table)."""
    try:
        kv = sizes.kv_cache_summary(ctx.config, dtype)
    except ValueError as e:
        raise refuse(e) from None
    return kv_cache_figure(kv, ctx.config.num_hidden_layers), kv_cache_table(kv)


def on_tensors(rows: list[dict[str, Any]], query: str | None) -> list[list[Any]]:
    """The weight-tensor table of rows (sizes.weight_table), those whose name contains query (empty: all)."""
    if query is not None and not isinstance(query, str):
        raise refuse(ValueError(f"filter must be text, got {query!r}"))
    return tensor_rows(rows, query or "")


# ---- the tab ------------------------------------------------------------------------------------------------
def build(ctx: AppContext) -> ModelTab:
    """Lay out the Model tab; call inside `with gr.Blocks():`."""
    cfg = ctx.config
    weights = sizes.weight_table(ctx.model.state_dict())  # the loaded model never changes: build rows once
    start_dtype = dtype_name(ctx.model.dtype)
    start_kv = sizes.kv_cache_summary(cfg, start_dtype)
    with gr.Tab(TITLE):
        gr.Markdown(f"Checkpoint `{ctx.path}`, loaded in {start_dtype} on {ctx.model.device}. "
                    "Everything here is read from its config.json and its weights; nothing has run yet.")
        with gr.Row():
            with gr.Column(scale=3):
                gr.Markdown("### Architecture")
                gr.Dataframe(architecture_table(ctx), headers=["field", "value", "what it is"],
                             datatype="str", interactive=False, max_height=760, wrap=True,
                             column_widths=["32%", "18%", "50%"])
            with gr.Column(scale=2):
                gr.Markdown("### Parameters")
                gr.Dataframe(params_table(ctx), headers=["parameters", "exact", "≈", "note"], datatype="str",
                             interactive=False, wrap=True, column_widths=["27%", "18%", "15%", "40%"])
                gr.Markdown("### KV cache per token")
                dtype = gr.Radio(list(DTYPES), value=start_dtype, label="cache dtype",
                                 info="bytes per cached number: fp32 4, bf16 and fp16 2")
                kv_plot = gr.Plot(kv_cache_figure(start_kv, cfg.num_hidden_layers), show_label=False)
        kv_table = gr.Dataframe(kv_cache_table(start_kv), headers=KV_COLUMNS,
                                datatype=["str", "number", "number", "number", "number", "str"],
                                interactive=False, label="KV cache per token, all layers")
        gr.Markdown("### Weight tensors of the loaded model")
        tensor_filter = gr.Textbox(label="filter by name", placeholder="e.g. layers.1.  or  experts  or  kv_")
        gr.Markdown(tensor_caption(ctx, weights))
        tensor_table = gr.Dataframe(tensor_rows(weights), headers=TENSOR_COLUMNS,
                                    datatype=["str", "str", "str", "number", "number"], interactive=False,
                                    max_height=600, show_search="none")

    # preprocess=False: the handler checks the dtype itself, so a bad value gets ds_core's message.
    dtype.change(partial(on_kv_cache, ctx), inputs=dtype, outputs=[kv_plot, kv_table], api_name="kv_cache",
                 preprocess=False)
    tensor_filter.change(partial(on_tensors, weights), inputs=tensor_filter, outputs=tensor_table,
                         api_name="tensors")
    return ModelTab(dtype, kv_plot, kv_table, tensor_filter, tensor_table)
