"""The MLA & KV cache tab: what Multi-head Latent Attention keeps per token, and what that buys.

From the visitor's prompt (ds_core.labs.mla does every measurement):
- one layer's latent c_KV [T, kv_lora_rank] read back from a real LatentCache after the prefill, and one head's
  K [T, d_qk] and V [T, d_v] rebuilt from it (latent_and_reconstruction)
- bytes per token for MHA, GQA (G key/value heads), MQA and MLA, as bars (log scale), for the loaded model and
  for DeepSeek-V2-Lite, V2 and V3 from their config.json fields (kv_bytes_by_model); and, for the loaded model,
  the MHA and MLA figures measured from a NaiveCache and a LatentCache holding the prompt
- cache size against context length for one chosen model (cache_bytes_by_context)
- on request, naive vs absorbed decode speed measured live as the context grows (decode_speed)

Events (api_name), each served by the handler on_<api_name>:
    mla(prompt, layer, head, dtype, kv_heads, context_model)
        -> (summary markdown, c_KV figure, K figure, V figure, bytes-per-token figure, bytes table,
            measured table, cache-vs-context figure)
    mla_speed(contexts, steps) -> (summary markdown, tokens/s figure, table)
contexts is text, a comma list such as "128, 512, 2048".
"""

from __future__ import annotations

import math
from functools import partial

import gradio as gr
import torch

from ..checks import DTYPES, dtype_name, parse_list
from ..evaluation import sizes
from ..labs.mla import (GQA_KV_HEADS, SCHEMES, by_context, cache_bytes_by_context, decode_speed, gqa_kv_heads,
                       kv_bytes_by_model, latent_and_reconstruction, measured_bytes_per_token, with_references)
from ..viz import grouped_bars_figure, heatmap_figure, lines_figure
from . import AppContext
from .inputs import (check_layer_head, check_prompt, check_whole, layer_head_sliders, no_tokenizer_notice,
                     prompt_box, prompt_tokens, refuse, truncation_note, whole)

TITLE = "MLA & KV cache"
MAX_TOKENS = 64           # rows a heatmap can still label legibly
MAX_CONTEXT = 4096        # the longest context the live speed measurement prefills
MAX_CONTEXTS = 4          # points on the speed chart (each costs two prefills and 2·REPEATS·steps decode steps)
MAX_STEPS = 64
REPEATS = 3               # timed bursts per context and implementation; the median is shown
CONTEXT_AXIS = (1024, 4096, 16384, 65536, 131072)  # tokens: 1K to 128K, DeepSeek-V3's served context
DEFAULTS = dict(prompt="There was a young baker named Mira. Mira had a red kite.", dtype="bf16",
                contexts="128, 512, 2048", steps=16)
BYTES_COLUMNS = ["model", "GQA K/V heads", *(f"{s} bytes" for s in SCHEMES), "MHA / MLA"]
MEASURED_COLUMNS = ["cache", "computed from the config (bytes per token)", "measured from the cache (bytes per token)"]
SPEED_COLUMNS = ["context", "naive tokens/s", "absorbed tokens/s", "absorbed / naive", "naive cache bytes",
                 "latent cache bytes", "naive / latent"]
INTRO = ("To decode, a model keeps the keys and values of every earlier token: the **KV cache**. Plain multi-head "
         "attention (**MHA**) keeps every head's K and V; **GQA** shares one K/V head among a group of query "
         "heads, **MQA** one among all. DeepSeek's **MLA** keeps a small latent **c_KV** per token (plus one "
         "rope key) and rebuilds each head's K and V from it, or, *absorbed*, never rebuilds them at all. "
         "Everything below is computed from configs or measured on your prompt.")


# ---- content (plain functions; no gradio) -------------------------------------------------------------------
def context_label(tokens: int) -> str:
    return f"{tokens // 1024}K" if tokens % 1024 == 0 else str(tokens)


def bytes_rows(per_model: dict, models: dict, kv_heads: int) -> list[list]:
    """kv_bytes_by_model -> one table row per model: name, GQA heads, bytes of each scheme, MHA / MLA."""
    return [[name, gqa_kv_heads(models[name], kv_heads), *(rows[s]["bytes"] for s in SCHEMES),
             round(rows["MHA"]["bytes"] / rows["MLA"]["bytes"], 2)] for name, rows in per_model.items()]


def bytes_figure(per_model: dict, dtype: str, kv_heads: int):
    names = list(per_model)
    return grouped_bars_figure(
        names, {s: [per_model[n][s]["bytes"] for n in names] for s in SCHEMES},
        f"KV cache per token, all layers, {dtype}; GQA with {kv_heads} K/V heads (or H if fewer)  "
        f"[{len(names)} models × {len(SCHEMES)} schemes]", "model", "bytes per token (log scale)", log_y=True)


def context_figure(cfg, name: str, dtype: str, kv_heads: int):
    series = cache_bytes_by_context(cfg, list(CONTEXT_AXIS), dtype, kv_heads)
    return lines_figure([context_label(c) for c in CONTEXT_AXIS], series,
                        f"{name}: KV cache of one sequence against its length, {dtype}", "context (tokens)",
                        "cache bytes (log scale)", log_y=True)


def speed_figure(pairs: list[dict]):
    labels = [str(p["context"]) for p in pairs]
    return lines_figure(labels, {f"{mla} MLA": [p[f"{mla}_tokens_per_s"] for p in pairs]
                                 for mla in ("naive", "absorbed")},
                        "decode speed after a cache of `context` tokens, batch 1", "context (tokens)", "tokens/s")


def default_kv_heads(heads: int) -> int:
    """GQA_KV_HEADS, unless it fails to divide a loaded model's heads (say 12): then their common divisor."""
    return GQA_KV_HEADS if heads % min(GQA_KV_HEADS, heads) == 0 else math.gcd(GQA_KV_HEADS, heads)


def parse_contexts(text) -> list[int]:
    contexts = [check_whole("context", c, 1, MAX_CONTEXT) for c in parse_list("contexts", text, int)]
    if not 1 <= len(contexts) <= MAX_CONTEXTS:
        raise ValueError(f"contexts: give 1 to {MAX_CONTEXTS} lengths, got {len(contexts)}")
    return sorted(set(contexts))


def model_name(ctx: AppContext) -> str:
    """The loaded model as the charts and tables name it, after its directory."""
    return f"this model ({ctx.path.name})"


def reference_models(ctx: AppContext) -> dict:
    """The loaded model's config, then DeepSeek-V2-Lite's, V2's and V3's, by name (with_references)."""
    return with_references(model_name(ctx), ctx.config)


def cache_figures(lat, labels: list[str], layer: int, head: int) -> tuple:
    """(c_KV, K, V heatmaps) of latent_and_reconstruction's result, head's K and V, tokens on the rows."""
    height = max(300, 18 * len(labels) + 120)
    where = f"layer {layer}, head {head}"
    return (heatmap_figure(lat.c_kv, f"layer {layer}: cached c_KV", "latent dimension", "token", y_labels=labels,
                           height=height),
            heatmap_figure(lat.k[head], f"{where}: K from c_KV", "k dimension (nope | rope)", "token",
                           y_labels=labels, height=height),
            heatmap_figure(lat.v[head], f"{where}: V from c_KV", "v dimension", "token", y_labels=labels,
                           height=height))


def measured_rows(model, ids) -> list[list]:
    """The loaded model's MHA and MLA bytes per token, from its config and measured from caches holding ids."""
    computed = sizes.kv_cache_summary(model.config, dtype_name(model.dtype))
    measured = measured_bytes_per_token(model, ids)
    return [["MHA (NaiveCache: per-head K and V)", computed["naive_bytes"], measured["MHA"]],
            ["MLA (LatentCache: c_KV and k_rope)", computed["latent_bytes"], measured["MLA"]]]


# ---- the handlers (plain functions: build wires them, tests call them) ---------------------------------------
def on_mla(ctx: AppContext, prompt, layer, head, dtype, kv_heads, context_model) -> tuple:
    """(summary markdown, c_KV, K, V figures, bytes-per-token figure, bytes table, measured table,
    cache-vs-context figure) for prompt in layer and head."""
    models = reference_models(ctx)
    try:
        fitted = check_prompt(ctx.tokenizer, prompt, MAX_TOKENS)
        layer, head = check_layer_head(ctx.config, layer, head)
        dtype = dtype_name(dtype)
        kv_heads = whole(kv_heads)
        per_model = kv_bytes_by_model(models, dtype, kv_heads)
        if context_model not in models:
            raise ValueError(f"model for the context plot must be one of {', '.join(models)}, got {context_model!r}")
    except ValueError as e:
        raise refuse(e) from None
    ids, labels = prompt_tokens(ctx.tokenizer, fitted)
    lat = latent_and_reconstruction(ctx.model, ids, layer)
    mine = per_model[model_name(ctx)]
    summary = (f"**{ids.shape[1]} tokens** · layer {layer}'s LatentCache holds c_KV {list(lat.c_kv.shape)} and the "
               f"shared rope key k_rope {list(lat.k_rope.shape)}; from them K = [c_KV·W_UKᵀ | k_rope] "
               f"{list(lat.k.shape)} and V = c_KV·W_UVᵀ {list(lat.v.shape)} ([heads, tokens, dims]; "
               f"head {head} shown) · this model caches "
               f"**{mine['MLA']['numbers_per_layer']}** numbers per token and layer with MLA against "
               f"**{mine['MHA']['numbers_per_layer']}** for MHA "
               f"({mine['MHA']['bytes'] / mine['MLA']['bytes']:.1f}x smaller)" + truncation_note(fitted, MAX_TOKENS))
    return (summary, *cache_figures(lat, labels, layer, head), bytes_figure(per_model, dtype, kv_heads),
            bytes_rows(per_model, models, kv_heads), measured_rows(ctx.model, ids),
            context_figure(models[context_model], context_model, dtype, kv_heads))


def on_mla_speed(ctx: AppContext, contexts, steps, progress=gr.Progress()) -> tuple:
    """(summary markdown, tokens/s figure, table) of naive vs absorbed decoding timed after each context."""
    try:
        contexts = parse_contexts(contexts)
        steps = check_whole("decode steps", steps, 1, MAX_STEPS)
    except ValueError as e:
        raise refuse(e) from None

    def report(done: int, total: int, what: str) -> None:
        progress(done / total, desc=f"timing {what}")

    pairs = by_context(decode_speed(ctx.model, contexts, steps=steps, repeats=REPEATS, on_progress=report))
    rows = [[p["context"], round(p["naive_tokens_per_s"], 1), round(p["absorbed_tokens_per_s"], 1),
             round(p["speedup"], 2), p["naive_cache_bytes"], p["absorbed_cache_bytes"],
             round(p["cache_ratio"], 2)] for p in pairs]
    summary = (f"Each context: random token ids prefilled into a naive and a latent cache, then {REPEATS} "
               f"bursts of {steps} greedy decode steps on each, alternated; the median burst is shown. On "
               f"{ctx.model.device} with {torch.get_num_threads()} threads; other work on the machine makes "
               "timings noisy, so compare the two columns, not the absolute numbers. Contexts past the model's "
               f"{ctx.config.max_position_embeddings} trained positions still cost the same work per step.")
    return summary, speed_figure(pairs), rows


# ---- the tab ------------------------------------------------------------------------------------------------
SPEED_NOTE = ("### Naive vs absorbed decoding, as the context grows\nNaive MLA caches per-head K and V and attends "
              "over them; absorbed MLA folds W_UK into the query and W_UV into the output and attends over the "
              "latent cache directly. Both give the same logits; here is what each costs per token, measured now "
              "(a few seconds).")


def cache_outputs(model_dtype: str) -> list:
    """The cache event's outputs after its summary: c_KV, K and V heatmaps in a row, the bytes chart and table,
    the measured table, the cache-vs-context chart."""
    with gr.Row():
        heatmaps = [gr.Plot(show_label=False, elem_id=f"mla-{key}") for key in ("latent", "k", "v")]
    return [*heatmaps, gr.Plot(show_label=False, elem_id="mla-bytes"),
            gr.Dataframe(headers=BYTES_COLUMNS, label="KV cache per token, all layers (bytes)", interactive=False,
                         elem_id="mla-bytes-table"),
            gr.Dataframe(headers=MEASURED_COLUMNS, label=f"this model, {model_dtype}: computed vs measured from real "
                         "caches holding your prompt", interactive=False, elem_id="mla-measured"),
            gr.Plot(show_label=False, elem_id="mla-context")]


def build(ctx: AppContext) -> gr.Button | None:
    """Lay out the tab; call inside `with gr.Blocks():`. None when the checkpoint has no tokenizer."""
    if no_tokenizer_notice(ctx, TITLE):
        return None
    with gr.Tab(TITLE):
        gr.Markdown(INTRO)
        with gr.Row():
            prompt = prompt_box(DEFAULTS["prompt"], MAX_TOKENS, "mla-prompt")
            layer, head = layer_head_sliders(ctx.config, "mla")
        with gr.Row():
            dtype = gr.Radio(list(DTYPES), value=DEFAULTS["dtype"], label="cache dtype",
                             info="bytes per cached number: fp32 4, bf16 and fp16 2", elem_id="mla-dtype")
            kv_heads = gr.Number(default_kv_heads(ctx.config.num_attention_heads), precision=0,
                                 label="GQA key/value heads G",
                                 info="must divide each model's heads (a model with fewer heads uses H)",
                                 elem_id="mla-kv-heads")
            context_model = gr.Dropdown(list(reference_models(ctx)), value="DeepSeek-V3",
                                        label="model for the context plot", elem_id="mla-context-model")
        button = gr.Button("Show the cache", variant="primary", elem_id="mla-button")
        summary = gr.Markdown(elem_id="mla-summary")
        outputs = cache_outputs(dtype_name(ctx.model.dtype))

        gr.Markdown(SPEED_NOTE)
        with gr.Row():
            contexts = gr.Textbox(DEFAULTS["contexts"], label="contexts (tokens)",
                                  info=f"comma list, 1 to {MAX_CONTEXTS} lengths, each 1 to {MAX_CONTEXT}",
                                  elem_id="mla-contexts")
            steps = gr.Slider(1, MAX_STEPS, DEFAULTS["steps"], step=1, label="decode steps timed per context",
                              elem_id="mla-steps")
        speed_button = gr.Button("Measure decode speed", elem_id="mla-speed-button")
        speed_outputs = [gr.Markdown(elem_id="mla-speed-summary"), gr.Plot(show_label=False, elem_id="mla-speed-plot"),
                         gr.Dataframe(headers=SPEED_COLUMNS, label="decode speed and cache bytes per context",
                                      interactive=False, elem_id="mla-speed-table")]

    # preprocess=False: the handlers check the raw values themselves, so bad input gets their messages
    button.click(partial(on_mla, ctx), inputs=[prompt, layer, head, dtype, kv_heads, context_model],
                 outputs=[summary, *outputs], api_name="mla", preprocess=False)
    speed_button.click(partial(on_mla_speed, ctx), inputs=[contexts, steps], outputs=speed_outputs,
                       api_name="mla_speed", preprocess=False)
    return button
