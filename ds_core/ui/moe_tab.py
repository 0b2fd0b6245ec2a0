"""The MoE routing tab: how DeepSeekMoE sends each token of the visitor's prompt to its experts, and what the
parts of the MoE are worth.

For the prompt and one MoE layer, from the Router's own traced intermediates (ds_core.labs.moe.route):
- a token × expert heatmap of the affinities, each token's chosen top-k ringed, the experts of groups its group
  limit dropped crossed
- one token's group-limited selection step by step: the five steps in words, a row per expert, and bars of
  each expert's affinity and the biased score the choice ranks
- the load: token slots each expert received, in every MoE layer
- the L2 norms of the shared and the routed contribution, per token
On request, the interventions (force top-1, drop the shared expert, switch off the correction bias) measured on
the story corpus: perplexity and greedy recall against the model as trained
(ds_core.labs.moe.measure_interventions). They run on a copy of the model that shares its weights
(ds_core.labs.moe.shared_weight_copy), so requests in other tabs never see a patched model.

Events (api_name), each served by the handler on_<api_name>:
    moe_routing(prompt, layer, token) -> (summary markdown, heatmap, steps markdown, steps table, steps figure,
                                          load figure, norms figure)
    moe_interventions(interventions, stories, probes) -> (summary markdown, table, figure)
interventions is a list of names from ds_core.labs.moe.INTERVENTIONS ("top1", "no_shared", "no_bias").
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING

import gradio as gr
import pandas as pd
import plotly.graph_objects as go

from ..labs.moe import (INTERVENTIONS, LayerRouting, contribution_norms, format_steps, interventions_for,
                       measure_interventions, moe_layers, route, selection_steps, shared_weight_copy)
from ..viz import grouped_bars_figure, lines_figure, routing_figure
from . import AppContext
from .attention_tab import rounded
from .inputs import (FittedPrompt, check_prompt, check_whole, no_tokenizer_notice, prompt_box, prompt_tokens, refuse,
                     truncation_note)

if TYPE_CHECKING:
    from ..model import DeepSeekModel

TITLE = "MoE routing"
MAX_TOKENS = 48     # heatmap rows that stay legible
MAX_STORIES = 64    # story windows for perplexity: keeps one click within about a minute on a CPU
MAX_PROBES = 25     # recall probes per distance bucket
DEFAULTS = dict(prompt="There was a young baker named Mira. Mira had a red kite.", token=-1, stories=8, probes=6)
STEP_COLUMNS = {"expert": "expert", "group": "group", "affinity": "affinity s", "bias": "bias b",
                "choice_score": "s + b (ranks the choice)", "group_kept": "group kept", "rank": "rank",
                "chosen": "chosen", "weight": "gate weight"}
INTRO = ("A DeepSeekMoE layer sends every token through its **shared expert(s)** and through the few **routed "
         "experts** its router picks. The router scores each expert (the **affinity**, a sigmoid in DeepSeek-V3), "
         "adds a **correction bias** that balances the load (it changes which experts win, never their weights), "
         "keeps only the best **groups** of experts, and takes the **top-k** inside them. Everything below is what "
         "the model's own router did on your prompt.")


# ---- input --------------------------------------------------------------------------------------------------
def check_layer(cfg, layer) -> int:
    """layer as an int naming an MoE layer, or ValueError listing the MoE layers."""
    layers = moe_layers(cfg)
    layer = check_whole("layer", layer, 0, cfg.num_hidden_layers - 1)
    if layer not in layers:
        raise ValueError(f"layer {layer} has a dense MLP, not experts: choose an MoE layer, one of "
                         f"{', '.join(map(str, layers))}")
    return layer


def check_interventions(names, allowed: list[str]) -> list[str]:
    """The visitor's ticked interventions: a non-empty list of names among allowed, in INTERVENTIONS' order."""
    if not isinstance(names, list) or not names or any(n not in allowed for n in names):
        raise ValueError(f"interventions must be a non-empty list among {', '.join(allowed)}, got {names!r}")
    return [n for n in allowed if n in names]


# ---- figures and tables ------------------------------------------------------------------------------------
def steps_table(steps: dict) -> pd.DataFrame:
    table = pd.DataFrame(steps["experts"])[list(STEP_COLUMNS)]
    for flag in ("group_kept", "chosen"):  # words, not the 1/0 a number format would make of a bool
        table[flag] = table[flag].map({True: "yes", False: "no"})
    table["rank"] = [r["rank"] or "" for r in steps["experts"]]  # whole numbers; blank where the group was dropped
    return table.rename(columns=STEP_COLUMNS)


def steps_figure(steps: dict, token: str) -> go.Figure:
    """Bars per expert: its affinity and (with a bias) the biased score the choice ranks; labels mark the chosen
    (✓) and the experts of dropped groups (✗)."""
    rows = steps["experts"]
    labels = [f"e{r['expert']} g{r['group']}" + (" ✓" if r["chosen"] else "" if r["group_kept"] else " ✗")
              for r in rows]
    series = {"affinity s": [r["affinity"] for r in rows]}
    if any(r["bias"] for r in rows):
        series["s + b (ranks the choice)"] = [r["choice_score"] for r in rows]
    return grouped_bars_figure(labels, series, f"layer {steps['layer']}, token {token}: ✓ chosen, ✗ group not kept",
                               "routed expert and its group", "score")


def load_figure(layers: list[LayerRouting]) -> go.Figure:
    n, k = layers[0].experts.shape
    E = layers[0].scores.shape[1]
    series = {f"layer {lr.layer}": lr.load.tolist() for lr in layers}
    return grouped_bars_figure([f"e{e}" for e in range(E)], series,
                               f"token slots per expert: {n} tokens × top-{k} = {n * k} per layer "
                               f"(an even load is {n * k / E:.1f} each)", "routed expert", "token slots")


def norms_figure(lr: LayerRouting, labels: list[str]) -> go.Figure:
    series = {"routed experts (weighted sum)": lr.routed_norm.tolist()}
    if lr.shared_norm is not None:
        series = {"shared expert(s)": lr.shared_norm.tolist(), **series}
    return lines_figure(labels, series, f"layer {lr.layer}: L2 norm of each contribution to the residual stream",
                        "token", "L2 norm")


def interventions_table(rows: list[dict]) -> pd.DataFrame:
    buckets = list(rows[0]["recall_by_bucket"])
    return pd.DataFrame([[r["label"], r["perplexity"], r["d_perplexity"], r["recall"], r["d_recall"],
                          *(r["recall_by_bucket"][b] for b in buckets)] for r in rows],
                        columns=["run", "perplexity", "Δ perplexity", "recall", "Δ recall",
                                 *(f"recall d {b}" for b in buckets)])


@dataclass(frozen=True)
class Sandbox:
    """Where the interventions run: a copy of the model sharing its weights (ds_core.labs.moe.shared_weight_copy), so
    requests in other tabs never see a patched model, and the lock that lets one measurement patch it at a time."""

    model: "DeepSeekModel"
    lock: threading.Lock

    @classmethod
    def of(cls, model: "DeepSeekModel") -> "Sandbox":
        return cls(shared_weight_copy(model), threading.Lock())


def routing_summary(cfg, lr: LayerRouting, fitted: FittedPrompt) -> str:
    """One layer's routing in a sentence: the traced scores' shape, experts, groups, top-k, shared experts."""
    T, E, k = fitted.tokens, lr.scores.shape[1], lr.experts.shape[1]
    norms = contribution_norms([lr])[0]
    ratio = ("" if norms["shared_over_routed"] is None else
             f" · mean norm shared / routed {norms['shared_over_routed']:.2f}")
    return (f"**{T} tokens** · layer {lr.layer}: `layers.{lr.layer}.moe.scores` [1, {T}, {E}], {E} routed experts "
            f"in {E // lr.experts_per_group} groups of {lr.experts_per_group}, top-{k} per token from the best "
            f"{cfg.topk_group or 1} group(s) · {cfg.n_shared_experts or 0} shared expert(s) every token uses{ratio}"
            + truncation_note(fitted, MAX_TOKENS))


# ---- the handlers (plain functions: build wires them, tests call them) ---------------------------------------
def on_moe_routing(ctx: AppContext, prompt, layer, token) -> tuple:
    """(summary markdown, heatmap, steps markdown, steps table, steps figure, load figure, norms figure) of the
    router's choices for prompt in layer, token followed step by step."""
    cfg = ctx.config
    try:
        fitted = check_prompt(ctx.tokenizer, prompt, MAX_TOKENS)
        layer = check_layer(cfg, layer)
        T = fitted.tokens
        token = check_whole("token position", token, -T, T - 1, f" (the prompt has {T} tokens; -1 is the last)")
    except ValueError as e:
        raise refuse(e) from None
    token %= T
    ids, labels = prompt_tokens(ctx.tokenizer, fitted)
    layers = route(ctx.model, ids)
    lr = next(r for r in layers if r.layer == layer)
    steps = selection_steps(lr, token)
    heatmap = routing_figure(lr.scores, lr.experts, lr.weights, labels,
                             f"layer {layer}: affinity of each token for each routed expert ({cfg.scoring_func})",
                             lr.eligible() if lr.kept_groups is not None else None, lr.experts_per_group)
    where = f"{token} ({labels[token]})"
    steps_md = f"**Token {where}, step by step**\n\n```\n{format_steps(steps, cfg)}\n```"
    return (routing_summary(cfg, lr, fitted), heatmap, steps_md, rounded(steps_table(steps)),
            steps_figure(steps, where), load_figure(layers), norms_figure(lr, labels))


def on_moe_interventions(ctx: AppContext, sandbox: Sandbox, names, stories, probes, progress=gr.Progress()) -> tuple:
    """(summary markdown, table, perplexity figure) of the ticked interventions, measured on sandbox's model."""
    cfg = ctx.config
    try:
        names = check_interventions(names, interventions_for(cfg))
        n = check_whole("story windows", stories, 1, MAX_STORIES)
        per_bucket = check_whole("recall probes per distance bucket", probes, 1, MAX_PROBES)
    except ValueError as e:
        raise refuse(e) from None
    with sandbox.lock:  # the copy is patched while one measurement runs; one at a time
        rows = measure_interventions(sandbox.model, ctx.tokenizer, names, n, per_bucket,
                                     progress=lambda done, what: progress(done, desc=what))
    labels = [r["label"] for r in rows]
    figure = grouped_bars_figure(labels, {"perplexity": [r["perplexity"] for r in rows]},
                                 "test-split perplexity of each run (lower is better)", "run", "perplexity")
    summary = (f"{n} story windows of {cfg.max_position_embeddings} tokens ({rows[0]['tokens']:,} predicted "
               f"tokens) and {rows[0]['probes']} greedy recall probes ({per_bucket} per distance bucket), "
               "test split; Δ is the change from the model as trained. "
               + " · ".join(f"**{INTERVENTIONS[name].label}**: {INTERVENTIONS[name].effect}" for name in names))
    return summary, rounded(interventions_table(rows)), figure


# ---- the tab --------------------------------------------------------------------------------------------------
IV_NOTE = ("### Interventions\nRun the model changed and measure what it costs on the story corpus: perplexity, and "
           "greedy recall of a name or object introduced earlier. Small numbers are quick (about 10 s on a CPU for "
           "the defaults) but noisy.")


def routing_outputs() -> list:
    """The routing event's outputs after its summary, laid out in this order: heatmap, steps markdown, steps figure,
    steps table, and the load and norms figures side by side."""
    heatmap = gr.Plot(show_label=False, elem_id="moe-heatmap")
    steps_md = gr.Markdown(elem_id="moe-steps")
    steps_plot = gr.Plot(show_label=False, elem_id="moe-steps-plot")
    steps = gr.Dataframe(label="the token's routing, one row per routed expert", interactive=False,
                         elem_id="moe-steps-table")
    with gr.Row():
        load_plot = gr.Plot(show_label=False, elem_id="moe-load")
        norms_plot = gr.Plot(show_label=False, elem_id="moe-norms")
    return [heatmap, steps_md, steps, steps_plot, load_plot, norms_plot]  # in the order on_moe_routing returns them


def build(ctx: AppContext) -> gr.Button | None:
    """Lay out the tab; call inside `with gr.Blocks():`. None when the checkpoint has no tokenizer or no experts."""
    if not ctx.config.has_moe:
        with gr.Tab(TITLE):
            gr.Markdown(f"`{ctx.path}` has no routed experts (n_routed_experts is not set): nothing is routed.")
        return None
    if no_tokenizer_notice(ctx, TITLE):
        return None
    layers_available, allowed = moe_layers(ctx.config), interventions_for(ctx.config)
    with gr.Tab(TITLE):
        gr.Markdown(INTRO)
        with gr.Row():
            prompt = prompt_box(DEFAULTS["prompt"], MAX_TOKENS, "moe-prompt")
            layer = gr.Dropdown(layers_available, value=layers_available[0], label="MoE layer",
                                info="the first first_k_dense_replace layers are dense", elem_id="moe-layer")
            token = gr.Number(DEFAULTS["token"], precision=0, label="token to follow step by step",
                              info="0 = the first, -1 = the last", elem_id="moe-token")
        button = gr.Button("Route", variant="primary", elem_id="moe-button")
        outputs = [gr.Markdown(elem_id="moe-summary"), *routing_outputs()]

        gr.Markdown(IV_NOTE)
        with gr.Row():
            chosen = gr.CheckboxGroup([(INTERVENTIONS[n].label, n) for n in allowed], value=allowed,
                                      label="interventions", elem_id="moe-interventions")
            stories = gr.Number(DEFAULTS["stories"], precision=0, label=f"story windows (1 to {MAX_STORIES})",
                                elem_id="moe-stories")
            probes = gr.Number(DEFAULTS["probes"], precision=0, label=f"recall probes per bucket (1 to {MAX_PROBES})",
                               elem_id="moe-probes")
        measure = gr.Button("Measure interventions", elem_id="moe-measure-button")
        iv_outputs = [gr.Markdown(elem_id="moe-iv-summary"),
                      gr.Dataframe(label="perplexity and recall per run", interactive=False, elem_id="moe-iv-table"),
                      gr.Plot(show_label=False, elem_id="moe-iv-plot")]

    # preprocess=False: the handlers check the raw values themselves, so bad input gets their messages
    button.click(partial(on_moe_routing, ctx), inputs=[prompt, layer, token], outputs=outputs,
                 api_name="moe_routing", preprocess=False)
    measure.click(partial(on_moe_interventions, ctx, Sandbox.of(ctx.model)), inputs=[chosen, stories, probes],
                  outputs=iv_outputs, api_name="moe_interventions", preprocess=False)
    return button
