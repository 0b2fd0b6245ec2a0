"""Sampling and generation: argument checks, greedy = argmax, seeds, top-k/top-p, EOS, streaming, cache, batch.

Agreement with transformers' generate() lives in test_conformance.py; these tests check ds_core against itself
(full forward passes without a cache) and against hand-computed distributions.
"""

import math

import pytest
import torch

from ds_core import DeepSeekModel, SamplingParams, Step, Tokenizer, generate, generate_batch, generate_ids
from ds_core.generate import next_token_probs, sample

ATOL = 1e-4
MLA = ["naive", "absorbed"]
PROMPTS = ["Once upon a time a fox", "Ada", "The key opened a small door, and behind the door"]


@pytest.fixture(scope="module")
def models(reference_checkpoints):
    return {name: DeepSeekModel.from_pretrained(path) for name, (path, _) in reference_checkpoints.items()}


@pytest.fixture(scope="module")
def model(models):
    return models["v3_groups"]


@pytest.fixture(scope="module")
def tok(tiny_checkpoint):
    return Tokenizer.from_pretrained(tiny_checkpoint)


def ids_of(tok, text):
    return torch.tensor([tok.encode(text)])


def greedy(model, ids, n, **kw):
    return [int(t[0]) for t in generate_ids(model, ids, params=SamplingParams(temperature=0), max_new_tokens=n,
                                            eos_ids=[], **kw)]


# ---- argument checks ------------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs, name, allowed", [
    (dict(temperature=-0.1), "temperature", ">= 0"),
    (dict(temperature=float("nan")), "temperature", ">= 0"),
    (dict(temperature=float("inf")), "temperature", "finite"),
    (dict(temperature="hot"), "temperature", ">= 0"),
    (dict(temperature=True), "temperature", ">= 0"),
    (dict(top_p=0.0), "top_p", "(0, 1]"),
    (dict(top_p=-0.5), "top_p", "(0, 1]"),
    (dict(top_p=1.01), "top_p", "(0, 1]"),
    (dict(top_p=float("nan")), "top_p", "(0, 1]"),
    (dict(top_k=-1), "top_k", ">= 0"),
    (dict(top_k=2.5), "top_k", "integer"),
    (dict(top_k=3.0), "top_k", "integer"),
    (dict(top_k="5"), "top_k", "integer"),
])
def test_sampling_params_rejects_bad_values(kwargs, name, allowed):
    with pytest.raises(ValueError) as err:
        SamplingParams(**kwargs)
    assert name in str(err.value) and allowed in str(err.value)


def test_sampling_params_accepts_the_edges():
    SamplingParams(temperature=0, top_k=0, top_p=1)
    SamplingParams(temperature=100.0, top_k=1, top_p=1e-6)
    assert SamplingParams(temperature=1, top_k=3, top_p=1).temperature == 1.0


@pytest.mark.parametrize("n", [0, -3, 2.0, True])
def test_max_new_tokens_must_be_positive_integer(model, tok, n):
    ids = ids_of(tok, "Ada")
    # raised when called, not when the first token is asked for
    with pytest.raises(ValueError, match=r"max_new_tokens must be an integer >= 1"):
        generate_ids(model, ids, max_new_tokens=n)
    with pytest.raises(ValueError, match=r"max_new_tokens must be an integer >= 1"):
        generate(model, tok, "Ada", max_new_tokens=n)


def test_generate_checks_sampling_arguments_when_called(model, tok):
    with pytest.raises(ValueError, match="top_p"):
        generate(model, tok, "Ada", top_p=0)
    with pytest.raises(ValueError, match="temperature"):
        generate_batch(model, tok, ["Ada"], temperature=-1)


def test_empty_prompt_is_rejected_even_though_bos_is_added(model, tok):
    assert tok.encode("") == [tok.bos_token_id]  # why a plain `if not ids` check is not enough
    with pytest.raises(ValueError, match="prompt is empty"):
        generate(model, tok, "")
    with pytest.raises(ValueError, match="prompt is empty"):
        generate_batch(model, tok, ["Ada", ""])
    with pytest.raises(ValueError, match="non-empty list"):
        generate_batch(model, tok, [])
    with pytest.raises(TypeError, match="prompt must be a string"):
        generate(model, tok, None)
    with pytest.raises(ValueError, match="at least one token"):
        generate_ids(model, torch.zeros(1, 0, dtype=torch.long))


def test_generation_does_not_leave_inference_mode_on(model, tok):
    """The caller's code between steps runs with its own grad mode, not the generator's."""
    stream = generate(model, tok, "Ada", max_new_tokens=3)
    next(stream)
    assert not torch.is_inference_mode_enabled()
    list(stream)
    assert not torch.is_inference_mode_enabled()


# ---- greedy and seeds -----------------------------------------------------------------------------------
@pytest.mark.parametrize("mla", MLA)
def test_temperature_zero_is_argmax_of_full_forward(model, tok, mla):
    prompt = ids_of(tok, PROMPTS[0])
    seen = []
    got = greedy(model, prompt, 16, mla=mla, on_logits=lambda step, logits: seen.append(logits.clone()))
    assert len(got) == 16 and len(seen) == 16
    for t in range(16):
        full = model(torch.cat([prompt, torch.tensor([got[:t]], dtype=torch.long)], dim=1))[0, -1]
        assert int(full.argmax()) == got[t], f"step {t}"
        torch.testing.assert_close(seen[t][0], full, atol=ATOL, rtol=0)
    streamed = [s.token_id for s in generate(model, tok, PROMPTS[0], temperature=0, max_new_tokens=16, mla=mla)]
    assert streamed[:len(streamed)] == got[:len(streamed)]


def test_same_seed_same_text_different_seed_different_text(model, tok):
    def run(seed):
        steps = list(generate(model, tok, "Once upon", temperature=1.5, max_new_tokens=24, seed=seed))
        return [s.token_id for s in steps], "".join(s.text for s in steps)

    rng = torch.random.get_rng_state()
    a = run(0)
    torch.manual_seed(1234)  # the global RNG must not matter
    assert run(0) == a
    assert run(1)[0] != a[0] and run(2)[0] != a[0]
    torch.random.set_rng_state(rng)


def test_generation_leaves_global_rng_alone(model, tok):
    before = torch.random.get_rng_state()
    list(generate(model, tok, "Ada", temperature=1.0, max_new_tokens=5, seed=3))
    assert torch.equal(torch.random.get_rng_state(), before)


# ---- the sampling distribution --------------------------------------------------------------------------
def test_top_k_keeps_exactly_k_largest():
    logits = torch.randn(4, 50, generator=torch.Generator().manual_seed(0))
    for k in (1, 5, 17):
        probs = next_token_probs(logits, SamplingParams(temperature=0.7, top_k=k))
        assert ((probs > 0).sum(-1) == k).all()
        kept = probs.topk(k, dim=-1).indices.sort(-1).values
        assert torch.equal(kept, logits.topk(k, dim=-1).indices.sort(-1).values)
        expected = torch.zeros_like(logits).scatter(-1, kept, (logits.gather(-1, kept) / 0.7).softmax(-1))
        torch.testing.assert_close(probs, expected)
    # ties at the cut still keep exactly k
    tied = torch.tensor([[1.0, 1.0, 1.0, 1.0, 0.0]])
    assert int((next_token_probs(tied, SamplingParams(top_k=2)) > 0).sum()) == 2
    # k >= vocab turns it off
    torch.testing.assert_close(next_token_probs(logits, SamplingParams(top_k=50)), logits.softmax(-1))


@pytest.mark.parametrize("p, kept", [(0.45, 1), (0.69, 2), (0.72, 3), (0.84, 3), (0.9, 4), (0.96, 5), (1.0, 5)])
def test_top_p_keeps_smallest_prefix_reaching_p(p, kept):
    mass = torch.tensor([0.05, 0.5, 0.1, 0.2, 0.15])   # sorted: 0.5, 0.2, 0.15, 0.1, 0.05
    rank = [1, 3, 4, 2, 0]                             # token ids from most to least likely
    probs = next_token_probs(mass.log()[None], SamplingParams(top_p=p))[0]
    expected = torch.zeros(5)
    expected[rank[:kept]] = mass[rank[:kept]] / mass[rank[:kept]].sum()
    torch.testing.assert_close(probs, expected)


def test_probabilities_sum_to_one_and_temperature_scales():
    logits = 3 * torch.randn(3, 40, generator=torch.Generator().manual_seed(1))
    for params in [SamplingParams(), SamplingParams(temperature=0.3, top_k=7), SamplingParams(top_p=0.5),
                   SamplingParams(temperature=2.0, top_k=10, top_p=0.8), SamplingParams(temperature=0)]:
        probs = next_token_probs(logits, params)
        torch.testing.assert_close(probs.sum(-1), torch.ones(3))
        assert (probs >= 0).all()
    torch.testing.assert_close(next_token_probs(logits, SamplingParams(temperature=0.5)), (logits / 0.5).softmax(-1))
    onehot = next_token_probs(logits, SamplingParams(temperature=0))
    assert torch.equal(onehot.argmax(-1), logits.argmax(-1)) and torch.equal(onehot.sum(-1), torch.ones(3))


def test_draws_stay_in_the_kept_set_and_follow_it():
    logits = torch.randn(1, 60, generator=torch.Generator().manual_seed(2))
    params = SamplingParams(temperature=1.3, top_k=8, top_p=0.7)
    probs = next_token_probs(logits, params)[0]
    kept = set(torch.nonzero(probs).flatten().tolist())
    assert 1 < len(kept) < 8
    draws = sample(logits.expand(20000, -1), params, torch.Generator().manual_seed(0))
    assert set(draws.tolist()) == kept
    freq = torch.bincount(draws, minlength=60).float() / len(draws)
    torch.testing.assert_close(freq, probs, atol=0.02, rtol=0)


def test_generated_tokens_lie_in_the_kept_set(model, tok):
    seen = []
    steps = list(generate(model, tok, PROMPTS[2], temperature=2.0, top_k=3, top_p=0.9, max_new_tokens=20, seed=5,
                          on_logits=lambda step, logits: seen.append(logits[0].clone())))
    for step, logits in zip(steps, seen):
        kept = next_token_probs(logits[None], SamplingParams(2.0, 3, 0.9))[0] > 0
        assert kept[step.token_id], step


# ---- stopping -------------------------------------------------------------------------------------------
def first_new_at(tokens, start=1):
    """Index of the first token (at or after start) that did not appear before it."""
    return next(i for i in range(start, len(tokens)) if tokens[i] not in tokens[:i])


def test_stops_at_eos(model, tok, monkeypatch):
    prompt = ids_of(tok, PROMPTS[0])
    free = greedy(model, prompt, 12)
    stop = first_new_at(free, 2)
    got = [int(t[0]) for t in generate_ids(model, prompt, params=SamplingParams(temperature=0), max_new_tokens=12,
                                           eos_ids=[free[stop]])]
    assert got == free[:stop + 1]

    monkeypatch.setattr(model.config, "eos_token_id", free[stop])
    steps = list(generate(model, tok, PROMPTS[0], temperature=0, max_new_tokens=12))
    assert [s.token_id for s in steps] == free[:stop + 1]
    assert steps[-1].finish_reason == "eos"
    assert all(s.finish_reason is None for s in steps[:-1])


def test_stops_at_max_new_tokens(model, tok, monkeypatch):
    monkeypatch.setattr(model.config, "eos_token_id", None)
    steps = list(generate(model, tok, "Ada", temperature=1.0, max_new_tokens=7, seed=0))
    assert len(steps) == 7
    assert steps[-1].finish_reason == "length"
    assert all(s.finish_reason is None for s in steps[:-1])
    assert len(list(generate(model, tok, "Ada", max_new_tokens=1))) == 1


def test_batch_rows_stop_at_their_own_eos(model, tok, monkeypatch):
    free = [greedy(model, ids_of(tok, p), 10) for p in PROMPTS]
    eos = free[0][first_new_at(free[0], 2)]
    monkeypatch.setattr(model.config, "eos_token_id", eos)
    got = generate_batch(model, tok, PROMPTS, temperature=0, max_new_tokens=10)
    for row, toks in zip(got, free):
        expected = toks[:toks.index(eos) + 1] if eos in toks else toks
        assert row == expected
    assert len(got[0]) < 10


# ---- streaming ------------------------------------------------------------------------------------------
def test_steps_stream_text_and_timing(model, tok):
    for seed in range(12):  # high temperature: random bytes, so characters split across tokens and stay broken
        steps = list(generate(model, tok, "Ada", temperature=1.5, max_new_tokens=25, seed=seed))
        assert all(isinstance(s, Step) for s in steps)
        assert [s.index for s in steps] == list(range(len(steps)))
        ids = [s.token_id for s in steps]
        assert "".join(s.text for s in steps) == tok.decode(ids)
        elapsed = [s.elapsed for s in steps]
        assert all(b >= a for a, b in zip(elapsed, elapsed[1:]))
        assert all(s.seconds >= 0 for s in steps)
        assert math.isclose(sum(s.seconds for s in steps), elapsed[-1], rel_tol=1e-9, abs_tol=1e-9)


def test_text_stream_holds_back_split_characters(tok):
    ids = tok.encode("é!")[1:]  # byte-level: 'é' is two byte tokens in this small vocabulary
    assert len(ids) == 3 and tok.decode(ids) == "é!"
    s = tok.stream()
    assert s.add(ids[0]) == ""          # half a character: nothing to show yet
    assert s.add(ids[1]) == "é"
    assert s.add(ids[2]) == "!"
    assert s.finish() == ""
    s = tok.stream()
    assert s.add(ids[0]) == ""
    assert s.finish() == tok.decode(ids[:1]) == "\ufffd"  # an unfinished character shows as decode shows it
    s = tok.stream()
    assert s.add(tok.eos_token_id) == "" and s.finish() == ""  # special tokens have no text


# ---- KV cache -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("mla", MLA)
@pytest.mark.parametrize("name", ["v3_groups", "v2_lite", "v3_yarn"])
def test_cached_steps_equal_full_forward(models, name, mla):
    model = models[name]
    ids = torch.randint(2, 320, (2, 20), generator=torch.Generator().manual_seed(4))
    full = model(ids, mla=mla)
    cache = model.new_cache(mla)
    assert cache.mla == mla
    steps = [model(ids[:, :6], cache=cache)] + [model(ids[:, t:t + 1], cache=cache) for t in range(6, 20)]
    torch.testing.assert_close(torch.cat(steps, 1), full, atol=ATOL, rtol=0)
    assert cache.length == 20
    other = "naive" if mla == "absorbed" else "absorbed"
    torch.testing.assert_close(full, model(ids, mla=other), atol=ATOL, rtol=0)


# ---- batches --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("mla", MLA)
@pytest.mark.parametrize("name", ["v3_groups", "v2_lite"])
def test_left_padded_batch_equals_each_prompt_alone(models, tok, name, mla, monkeypatch):
    model = models[name]
    monkeypatch.setattr(model.config, "eos_token_id", None)  # compare full-length runs
    rows = [tok.encode(p) for p in PROMPTS]
    assert len({len(r) for r in rows}) == 3
    batch = generate_batch(model, tok, PROMPTS, temperature=0, max_new_tokens=10, mla=mla)
    for prompt, row, got in zip(PROMPTS, rows, batch):
        alone = [s.token_id for s in generate(model, tok, prompt, temperature=0, max_new_tokens=10, mla=mla)]
        assert got == alone == greedy(model, torch.tensor([row]), 10, mla=mla)

    # the logits of every step, the prompt's last position first, equal each prompt's own
    from ds_core.generate import left_pad
    ids, mask = left_pad(rows, pad_id=0)
    assert (mask == 0).any()
    batch_logits = []
    list(generate_ids(model, ids, mask, params=SamplingParams(temperature=0), max_new_tokens=6, eos_ids=[], mla=mla,
                      on_logits=lambda step, lg: batch_logits.append(lg.clone())))
    for b, row in enumerate(rows):
        alone_logits = []
        list(generate_ids(model, torch.tensor([row]), params=SamplingParams(temperature=0), max_new_tokens=6,
                          eos_ids=[], mla=mla, on_logits=lambda step, lg: alone_logits.append(lg.clone())))
        torch.testing.assert_close(batch_logits[0][b], model(torch.tensor([row]))[0, -1], atol=ATOL, rtol=0)
        for step, (lb, la) in enumerate(zip(batch_logits, alone_logits)):
            torch.testing.assert_close(lb[b], la[0], atol=ATOL, rtol=0, msg=f"row {b} step {step}")
