"""Sampling and streaming generation: prefill the prompt once, then one token per step from the KV cache."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Iterator

import torch

from .attention import get_backend
from .cache import new_cache
from .checks import check_int, check_number
from .tokenizer import Tokenizer


@dataclass
class SamplingParams:
    """temperature 0 = greedy; top_k 0 = off; top_p 1 = off."""
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0

    def __post_init__(self):
        self.temperature = check_number("temperature", self.temperature, 0, why=" (0 means greedy)")
        self.top_k = check_int("top_k", self.top_k, 0, why=" (0 turns it off)")
        self.top_p = check_number("top_p", self.top_p, 0, 1, low_open=True, why=" (1 turns it off)")


def next_token_probs(logits: torch.Tensor, params: SamplingParams) -> torch.Tensor:
    """logits [..., V] -> the distribution tokens are sampled from [..., V]: softmax(logits/τ) cut by top-k, top-p.

    At τ = 0 it is one-hot on the argmax. top-k keeps exactly k tokens (ties broken by index); top-p keeps the
    smallest set of most likely tokens whose mass reaches p (always at least the top token).
    """
    logits = logits.float()
    if params.temperature == 0:
        return torch.nn.functional.one_hot(logits.argmax(-1), logits.shape[-1]).float()
    logits = logits / params.temperature
    if params.top_k and params.top_k < logits.shape[-1]:
        keep = logits.topk(params.top_k, dim=-1).indices
        logits = torch.full_like(logits, float("-inf")).scatter(-1, keep, logits.gather(-1, keep))
    probs = logits.softmax(-1)
    if params.top_p < 1:
        sorted_p, order = probs.sort(dim=-1, descending=True)
        before = sorted_p.cumsum(-1) - sorted_p  # mass of the tokens ranked above each token
        sorted_p = sorted_p.masked_fill(before >= params.top_p, 0.0)  # the top token always survives
        probs = torch.zeros_like(probs).scatter_(-1, order, sorted_p)
        probs = probs / probs.sum(-1, keepdim=True)
    return probs


def sample(logits: torch.Tensor, params: SamplingParams, generator: torch.Generator | None = None) -> torch.Tensor:
    """logits [B, V] -> token ids [B]."""
    if params.temperature == 0:
        return logits.argmax(-1)
    return torch.multinomial(next_token_probs(logits, params), 1, generator=generator)[:, 0]


def generate_ids(model, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, *,
                 params: SamplingParams = SamplingParams(), max_new_tokens: int = 64, seed: int | None = 0,
                 eos_ids: list[int] | None = None, mla: str | None = None, backend=None,
                 on_logits=None, compile: bool = False) -> Iterator[torch.Tensor]:
    """Yield the next token of every row, [B], once per step, until all rows hit EOS or max_new_tokens.

    input_ids [B, T], left-padded where attention_mask [B, T] is 0. Rows that finished repeat their EOS.
    on_logits(step, logits [B, V]) sees each step's logits before sampling (for showing the distribution).
    compile: decode through model.compile_decode() (torch.compile; the first call compiles for tens of seconds)
    where it applies (batch 1, absorbed MLA, dense attention; otherwise, or inside a trace, steps run eagerly).
    With a window backend the KV cache rolls (ds_core.cache.Rolling): it keeps the sinks and the last `window`
    tokens only, so its memory stays constant; the tokens are those of the same backend over the full cache.
    Arguments are checked when called, before the first token is asked for.
    """
    check_int("max_new_tokens", max_new_tokens, 1)
    if not isinstance(params, SamplingParams):
        raise TypeError(f"params must be a SamplingParams, got {type(params).__name__}")
    if not isinstance(input_ids, torch.Tensor) or input_ids.dim() != 2 or input_ids.shape[1] == 0:
        shape = tuple(input_ids.shape) if isinstance(input_ids, torch.Tensor) else type(input_ids).__name__
        raise ValueError(f"input_ids must be a [batch, tokens] tensor with at least one token, got {shape}")
    return _generate_ids(model, input_ids, attention_mask, params, max_new_tokens, seed, eos_ids, mla, backend,
                         on_logits, compile)


@torch.inference_mode()  # on a generator, torch enters inference mode around each step only, never the caller
def _generate_ids(model, input_ids, attention_mask, params, max_new_tokens, seed, eos_ids, mla, backend,
                  on_logits, compile=False) -> Iterator[torch.Tensor]:
    device = model.device
    input_ids = input_ids.to(device)
    generator = None
    if seed is not None:
        generator = torch.Generator(device=device).manual_seed(seed)
    eos = torch.tensor(eos_ids if eos_ids is not None else model.config.eos_ids, device=device, dtype=torch.long)
    decode = model.compile_decode() if compile else None
    backend = get_backend(backend)  # an instance, so the cache can ask it what later queries read
    if decode is not None and decode.supports(input_ids.shape[0], mla, backend):
        cache = decode.new_cache(input_ids.shape[0], input_ids.shape[1] + max_new_tokens)
    else:  # a window backend gets a rolling cache: constant memory however long the text grows
        decode, cache = None, new_cache(mla or model.mla, model.config.num_hidden_layers, backend)
    logits = model(input_ids, cache=cache, attention_mask=attention_mask, backend=backend,
                   logits_to_keep=1)[:, -1]  # the prefill needs the last position's logits only
    done = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=device)
    for step in range(max_new_tokens):
        if on_logits is not None:
            on_logits(step, logits)
        token = sample(logits, params, generator)
        if done.any():
            token = torch.where(done, eos[0], token)
        yield token
        done |= torch.isin(token, eos)
        if bool(done.all()) or step == max_new_tokens - 1:
            return
        if decode is not None:
            logits = decode.step(token, cache)
        else:
            logits = model(token[:, None], cache=cache, backend=backend)[:, -1]


@dataclass
class Step:
    """One generated token, as streamed."""
    index: int                 # 0 for the first generated token
    token_id: int
    text: str                  # text this token adds ('' while a character is still incomplete)
    seconds: float             # time of this step; for index 0 it is the time to first token (prefill included)
    elapsed: float             # seconds since generation started
    finish_reason: str | None  # 'eos' or 'length' on the last step, else None


def generate(model, tok: Tokenizer, prompt: str, *, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
             max_new_tokens: int = 64, seed: int | None = 0, mla: str | None = None, backend=None,
             on_logits=None, compile: bool = False) -> Iterator[Step]:
    """Stream the continuation of `prompt` one Step at a time. Same seed, same text.

    Bad arguments (an empty prompt, a temperature out of range, ...) raise ValueError here, when called.
    The Steps' texts add up to tok.decode of the generated ids. compile: as in generate_ids.
    """
    params = SamplingParams(temperature, top_k, top_p)
    ids = _encode_prompt(tok, prompt)
    check_int("max_new_tokens", max_new_tokens, 1)
    eos_ids = model.config.eos_ids or ([tok.eos_token_id] if tok.eos_token_id is not None else [])
    return _stream(model, tok, ids, params, max_new_tokens, seed, eos_ids, mla, backend, on_logits, compile)


def _stream(model, tok, ids, params, max_new_tokens, seed, eos_ids, mla, backend, on_logits,
            compile=False) -> Iterator[Step]:
    stream = tok.stream()
    start = last = time.perf_counter()
    tokens = generate_ids(model, torch.tensor([ids]), params=params, max_new_tokens=max_new_tokens, seed=seed,
                          eos_ids=eos_ids, mla=mla, backend=backend, on_logits=on_logits, compile=compile)
    for index, token in enumerate(tokens):
        token_id = int(token[0])
        now = time.perf_counter()
        finish = "eos" if token_id in eos_ids else "length" if index == max_new_tokens - 1 else None
        text = stream.add(token_id)
        if finish is not None:
            text += stream.finish()  # bytes held back for a character that will never be completed
        yield Step(index, token_id, text, now - last, now - start, finish)
        last = now


def _encode_prompt(tok: Tokenizer, prompt: str) -> list[int]:
    """Prompt text -> ids; an empty prompt is refused even when the tokenizer would add a BOS token."""
    if not isinstance(prompt, str):
        raise TypeError(f"the prompt must be a string, got {type(prompt).__name__}")
    ids = tok.encode(prompt)
    if prompt == "" or not ids:
        raise ValueError("the prompt is empty: give at least one character of text")
    return ids


def left_pad(rows: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Token lists of different lengths -> input_ids [B, T], attention_mask [B, T], padded on the left."""
    if not rows or any(len(r) == 0 for r in rows):
        raise ValueError("every prompt needs at least one token")
    width = max(map(len, rows))
    ids = torch.tensor([[pad_id] * (width - len(r)) + r for r in rows])
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
    return ids, mask


def generate_batch(model, tok: Tokenizer, prompts: list[str], *, temperature: float = 0.0, top_k: int = 0,
                   top_p: float = 1.0, max_new_tokens: int = 64, seed: int | None = 0,
                   mla: str | None = None, backend=None) -> list[list[int]]:
    """Generate for several prompts at once (left-padded, masked). Returns each row's new tokens, up to EOS."""
    eos_ids = model.config.eos_ids or ([tok.eos_token_id] if tok.eos_token_id is not None else [])
    pad = eos_ids[0] if eos_ids else 0
    if isinstance(prompts, str) or not prompts:
        raise ValueError("prompts must be a non-empty list of strings")
    params = SamplingParams(temperature, top_k, top_p)
    ids, mask = left_pad([_encode_prompt(tok, p) for p in prompts], pad)
    out: list[list[int]] = [[] for _ in prompts]
    finished = [False] * len(prompts)
    for token in generate_ids(model, ids, mask, params=params,
                              max_new_tokens=max_new_tokens, seed=seed, eos_ids=eos_ids, mla=mla, backend=backend):
        for row, t in enumerate(token.tolist()):
            if not finished[row]:
                out[row].append(t)
                finished[row] = t in eos_ids
    return out


# ---- generation timing ----------------------------------------------------------------------------------
def generation_stats(steps: list) -> dict[str, float]:
    """From the ds_core.generate Steps of one run: tokens, seconds, tokens/s, time to first token, decode rate.

    tokens_per_s counts every generated token over the whole time (prefill included); decode_tokens_per_s
    leaves out the first token and the prefill that produced it.
    """
    if not steps:
        return {"tokens": 0, "seconds": 0.0, "tokens_per_s": 0.0, "ttft_s": 0.0, "decode_tokens_per_s": 0.0}
    n, total, ttft = len(steps), steps[-1].elapsed, steps[0].seconds
    decode = total - ttft
    return {"tokens": n, "seconds": total, "tokens_per_s": n / total if total > 0 else float("inf"),
            "ttft_s": ttft, "decode_tokens_per_s": (n - 1) / decode if n > 1 and decode > 0 else 0.0}


def format_generation_stats(stats: dict[str, float]) -> str:
    """'64 tokens, 12.3 tokens/s (time to first token 0.05 s)'."""
    return (f"{stats['tokens']} tokens, {stats['tokens_per_s']:.1f} tokens/s "
            f"(time to first token {stats['ttft_s']:.2f} s, decode {stats['decode_tokens_per_s']:.1f} tokens/s)")
