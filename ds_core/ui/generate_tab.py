"""The Generate tab: type a prompt, watch the model continue it token by token, inspect any step's choice.

- the continuation streams as ds_core.generate yields each Step, with time to first token and decode speed
- for a chosen step, the distribution the token was sampled from (ds_core.generate.next_token_probs: τ, then
  top-k, then top-p), its top candidates as bars, the sampled token marked (ds_core.viz.distribution_figure)
- a prompt too long for the model's context loses its oldest tokens, and the stats say so

Events (api_name), each served by the handler on_<api_name>:
    generate(prompt, temperature, top_k, top_p, max_new_tokens, seed) -> streamed (text, stats, ...)
    distribution(step) -> figure of that step of the session's last generation
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any, Iterator

import gradio as gr
import plotly.graph_objects as go
import torch

from ..generate import SamplingParams, Step, generate, next_token_probs
from ..tokenizer import Tokenizer
from ..viz import distribution_figure, token_label
from . import AppContext
from .inputs import FittedPrompt, check_whole, fit_prompt, no_tokenizer_notice, refuse, whole

TITLE = "Generate"
MAX_NEW_TOKENS = 512     # the app's cap on one request, whatever the model's context allows
TOP_N = 15               # candidates drawn per step
SEED_MAX = 2**63 - 1     # the largest seed torch.Generator.manual_seed takes as a signed integer
CONCURRENCY = 8          # generations served at once: each has its own cache and random generator
DEFAULTS = dict(prompt="Once upon a time", temperature=0.8, top_k=50, top_p=0.95, max_new_tokens=128, seed=0)


@dataclass
class GenerateTab:
    """Handles on the tab's components (later tabs and tests may wire to them)."""

    prompt: gr.Textbox
    button: gr.Button
    output: gr.Textbox
    stats: gr.Markdown
    step: gr.Slider
    plot: gr.Plot


# ---- requests (plain functions; no gradio) -------------------------------------------------------------------
@dataclass(frozen=True)
class Request:
    """A checked generation request."""

    prompt: str
    params: SamplingParams
    max_new_tokens: int
    seed: int


def max_new_limit(context: int) -> tuple[int, str]:
    """The most new tokens one request may ask for, and why that many."""
    if context - 1 < MAX_NEW_TOKENS:
        return context - 1, f" (this model's context is {context} tokens, and the prompt needs at least one)"
    return MAX_NEW_TOKENS, f" (the app's limit; this model's context is {context} tokens)"


def check_request(prompt: Any, temperature: Any, top_k: Any, top_p: Any, max_new_tokens: Any, seed: Any,
                  context: int) -> Request:
    """The raw inputs of a request, checked; ValueError says what was wrong and what is allowed."""
    if prompt is not None and not isinstance(prompt, str):
        raise ValueError(f"the prompt must be text, got {type(prompt).__name__}")
    params = SamplingParams(temperature, whole(top_k), top_p)  # ds_core's own messages for τ, top-k, top-p
    limit, why = max_new_limit(context)
    return Request(prompt or "", params, check_whole("max new tokens", max_new_tokens, 1, limit, why),
                   check_whole("seed", seed, 0, SEED_MAX))


# ---- what one generation recorded ---------------------------------------------------------------------------
@dataclass(frozen=True)
class StepCandidates:
    """One step's most likely candidates under the sampling distribution, and the token drawn."""

    ids: list[int]          # at most TOP_N, most likely first; only tokens that could be drawn (p > 0)
    probs: list[float]
    sampled_id: int
    sampled_prob: float
    sampled_rank: int       # 0 = the most likely token


@dataclass(frozen=True)
class Generation:
    """The tab's state: the sampling settings and every step's candidates of the last generation."""

    params: SamplingParams
    steps: list[StepCandidates]


class CandidateRecorder:
    """Collects each step's candidates: on_logits (generate's hook) sees the logits, add() the token drawn."""

    def __init__(self, params: SamplingParams):
        self.params = params
        self.steps: list[StepCandidates] = []
        self._probs: torch.Tensor | None = None

    def on_logits(self, step: int, logits: torch.Tensor) -> None:
        """logits [1, V] of the step about to be sampled -> the distribution it is sampled from."""
        self._probs = next_token_probs(logits[0], self.params)

    def add(self, token_id: int) -> None:
        """Record the step whose logits on_logits saw last, now that its token_id was drawn."""
        probs = self._probs
        top = probs.topk(min(TOP_N, probs.numel()))
        drawable = top.values > 0
        self.steps.append(StepCandidates(
            top.indices[drawable].tolist(), top.values[drawable].tolist(), token_id, float(probs[token_id]),
            int((probs > probs[token_id]).sum())))

    def generation(self) -> Generation:
        """Everything recorded, as the tab keeps it in gr.State."""
        return Generation(self.params, self.steps)


# ---- what the tab shows -------------------------------------------------------------------------------------
def stats_markdown(steps: list[Step], prompt: FittedPrompt, context: int) -> str:
    """Tokens so far, time to first token, decode speed over the steps after the first, why it stopped."""
    n = len(steps)
    parts = [f"**{n}** new token{'s' if n != 1 else ''}",
             f"time to first token **{1000 * steps[0].seconds:.0f} ms** (prefill of {prompt.tokens} prompt "
             "tokens included)"]
    decode_seconds = steps[-1].elapsed - steps[0].elapsed
    if n > 1 and decode_seconds > 0:
        parts.append(f"decode **{(n - 1) / decode_seconds:.1f} tokens/s** (the {n - 1} steps after the first)")
    finish = steps[-1].finish_reason
    if finish:
        parts.append("stopped at the end-of-sequence token" if finish == "eos" else "stopped at max new tokens")
    text = " · ".join(parts)
    if prompt.truncated:
        text += (f"\n\nprompt truncated to the last {prompt.tokens} tokens: the model's context of {context} "
                 "tokens must hold the prompt and the new tokens")
    return text


def sampling_caption(params: SamplingParams) -> str:
    """The settings that shaped the distribution, for a chart title: 'τ = 0.8, top-k 50, top-p 0.95'."""
    if params.temperature == 0:
        return "τ = 0 (greedy)"
    cuts = (f", top-k {params.top_k}" if params.top_k else "") + (f", top-p {params.top_p:g}"
                                                                   if params.top_p < 1 else "")
    return f"τ = {params.temperature:g}{cuts}"


def step_figure(tok: Tokenizer, generation: Generation, index: int) -> go.Figure:
    """The bar chart of step index: its top candidates, the sampled token marked (added last if it ranked lower)."""
    c = generation.steps[index]
    labels = [token_label(s) for s in tok.token_strings(c.ids)]
    probs = list(c.probs)
    if c.sampled_id in c.ids:
        sampled = c.ids.index(c.sampled_id)
    else:
        labels.append(f"{token_label(tok.token_strings([c.sampled_id])[0])} (#{c.sampled_rank + 1})")
        probs.append(c.sampled_prob)
        sampled = len(probs) - 1
    title = (f"step {index} (of 0–{len(generation.steps) - 1}): next-token distribution, "
             f"{sampling_caption(generation.params)}")
    return distribution_figure(labels, probs, sampled, title)


INTRO = ("Type a prompt and press **Generate**: the continuation streams in token by token. "
         "τ = 0 always takes the most likely token; the same seed gives the same text. A prompt longer than "
         "the model's context (less the new tokens) is truncated from the left, keeping its last tokens, "
         "and the stats below the text say so.")
DIST_NOTE = ("The bars are the distribution each token was actually drawn from "
             "(`ds_core.generate.next_token_probs`): softmax(logits / τ), cut to the top-k tokens, then to the "
             "most likely tokens holding top-p of the mass, renormalised; at τ = 0 all mass is on the most "
             f"likely token. Up to {TOP_N} candidates with nonzero probability are shown; the sampled one is "
             "red (when it ranked lower, it is added at the right with its rank).")


# ---- the handlers (plain functions: build wires them, tests call them) ---------------------------------------
def on_generate(ctx: AppContext, prompt, temperature, top_k, top_p, max_new_tokens, seed) -> Iterator[tuple]:
    """Stream the continuation of prompt: (text, stats, skip, skip, skip) per token; the last yield also sets the
    session's Generation (gr.State), the step slider to its steps, and step 0's distribution figure."""
    tok, context = ctx.tokenizer, ctx.config.max_position_embeddings
    try:
        req = check_request(prompt, temperature, top_k, top_p, max_new_tokens, seed, context)
        fitted = fit_prompt(tok, req.prompt, context - req.max_new_tokens)
        recorder = CandidateRecorder(req.params)
        p = req.params
        stream = generate(ctx.model, tok, fitted.text, temperature=p.temperature, top_k=p.top_k,
                          top_p=p.top_p, max_new_tokens=req.max_new_tokens, seed=req.seed,
                          on_logits=recorder.on_logits)
    except ValueError as e:
        raise refuse(e) from None
    text, steps = "", []
    for step in stream:
        recorder.add(step.token_id)
        text += step.text
        steps.append(step)
        yield text, stats_markdown(steps, fitted, context), gr.skip(), gr.skip(), gr.skip()
    generation = recorder.generation()
    yield (text, stats_markdown(steps, fitted, context), generation,
           gr.Slider(maximum=len(steps) - 1, value=0), step_figure(tok, generation, 0))


def on_distribution(ctx: AppContext, step, generation: Generation | None) -> go.Figure:
    """The next-token distribution at step (0 = the first new token) of this session's last generation."""
    try:
        if generation is None:
            raise ValueError("nothing generated yet: press Generate first, then choose a step")
        n = len(generation.steps)
        index = check_whole("step", step, 0, n - 1, f" (the last generation made {n} tokens)")
    except ValueError as e:
        raise refuse(e) from None
    return step_figure(ctx.tokenizer, generation, index)


# ---- the tab ------------------------------------------------------------------------------------------------
NO_TOKENIZER_FIX = " Add its `tokenizer.json` (and `tokenizer_config.json`) and restart the app."


def build(ctx: AppContext) -> GenerateTab | None:
    """Lay out the Generate tab; call inside `with gr.Blocks():`. None when the checkpoint has no tokenizer."""
    if no_tokenizer_notice(ctx, TITLE, "Generation", NO_TOKENIZER_FIX):
        return None
    limit, why = max_new_limit(ctx.config.max_position_embeddings)
    with gr.Tab(TITLE):
        gr.Markdown(INTRO)
        with gr.Row():
            with gr.Column(scale=3):
                prompt = gr.Textbox(DEFAULTS["prompt"], label="prompt", lines=4, elem_id="gen-prompt")
                button = gr.Button("Generate", variant="primary", elem_id="gen-button")
                output = gr.Textbox(label="continuation", lines=8, interactive=False, elem_id="gen-output")
                stats = gr.Markdown(elem_id="gen-stats")
            with gr.Column(scale=2):
                temperature = gr.Slider(0, 2, DEFAULTS["temperature"], step=0.05, label="temperature τ",
                                        info="0 = greedy (always the most likely token); higher flattens",
                                        elem_id="gen-temperature")
                top_k = gr.Number(DEFAULTS["top_k"], precision=0, minimum=0, label="top-k",
                                  info="keep only the k most likely tokens; 0 = off", elem_id="gen-top-k")
                top_p = gr.Slider(0.01, 1, DEFAULTS["top_p"], step=0.01, label="top-p",
                                  info="keep the most likely tokens holding this much probability; 1 = off",
                                  elem_id="gen-top-p")
                max_new = gr.Slider(1, limit, min(DEFAULTS["max_new_tokens"], limit), step=1,
                                    label=f"max new tokens (1 to {limit}; the app allows at most {MAX_NEW_TOKENS})",
                                    info=why.strip(" ()"), elem_id="gen-max-new-tokens")
                seed = gr.Number(DEFAULTS["seed"], precision=0, minimum=0, label="seed",
                                 info="same seed, same text", elem_id="gen-seed")
        gr.Markdown("### Next-token distribution\n" + DIST_NOTE)
        step = gr.Slider(0, limit - 1, 0, step=1, label="step to inspect (0 = the first new token)",
                         elem_id="gen-step")
        plot = gr.Plot(show_label=False, elem_id="gen-dist")
        generation = gr.State(None)

    # preprocess=False: the handlers check the raw values themselves, so bad input gets their messages
    # (gradio's own bound checks would answer first, in other words).
    button.click(partial(on_generate, ctx), inputs=[prompt, temperature, top_k, top_p, max_new, seed],
                 outputs=[output, stats, generation, step, plot], api_name="generate", preprocess=False,
                 concurrency_limit=CONCURRENCY)
    step.change(partial(on_distribution, ctx), inputs=[step, generation], outputs=plot, api_name="distribution",
                preprocess=False, trigger_mode="always_last")
    return GenerateTab(prompt, button, output, stats, step, plot)
