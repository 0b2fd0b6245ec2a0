"""The torch.compile'd decode step (ds_core.perf.compiled_decode) against the eager model it compiles.

One compilation of the small v3_groups model (~15-30 s on 2 cores) serves the whole module: the compiled tests
share one model. Everything else here (static cache, gathered experts, fallbacks) runs eagerly.
"""

import warnings

import pytest
import torch

from ds_core import DeepSeekModel, SamplingParams, Tokenizer, generate, generate_ids
from ds_core.cache import StaticLatentCache
from ds_core.generate import left_pad
from ds_core.model.moe import MoE
from ds_core.perf.decode_bench import COMPILED, BenchResult, Run
from ds_core.perf.moe_gathered import install_layer

ATOL = 1e-4


@pytest.fixture(scope="module")
def model(tiny_checkpoint):
    """The model whose decode step gets compiled (once, by the first test that needs it)."""
    return DeepSeekModel.from_pretrained(tiny_checkpoint)


@pytest.fixture
def fresh_model(tiny_checkpoint):
    """A model of its own, so its CompiledDecode starts from scratch."""
    return DeepSeekModel.from_pretrained(tiny_checkpoint)


@pytest.fixture(scope="module")
def tok(tiny_checkpoint):
    return Tokenizer.from_pretrained(tiny_checkpoint)


def prompt(n=11, seed=0):
    return torch.randint(2, 320, (1, n), generator=torch.Generator().manual_seed(seed))


def greedy(model, ids, n, **kw):
    return [t.tolist() for t in generate_ids(model, ids, params=SamplingParams(temperature=0), max_new_tokens=n,
                                             eos_ids=[], **kw)]


# ---- eager building blocks ----------------------------------------------------------------------------
@torch.inference_mode()
def test_static_cache_gives_the_eager_logits_with_padding(fresh_model):
    """Prefill of a left-padded batch, then decode steps: a StaticLatentCache (unwritten slots masked) gives the
    logits of the growing LatentCache, eagerly."""
    model = fresh_model
    ids, mask = left_pad([[5, 9, 33, 17, 2, 8], [41, 7, 3]], pad_id=1)
    growing = model.new_cache()
    static = StaticLatentCache(3, batch=2, capacity=16, width=32 + 8)
    a = model(ids, cache=growing, attention_mask=mask)[:, -1]
    b = model(ids, cache=static, attention_mask=mask)[:, -1]
    torch.testing.assert_close(b, a, atol=ATOL, rtol=0)
    for _ in range(4):
        token = a.argmax(-1)[:, None]
        a = model(token, cache=growing)[:, -1]
        b = model(token, cache=static)[:, -1]
        torch.testing.assert_close(b, a, atol=ATOL, rtol=0)
    assert static.length == 10 and static.capacity == 16
    assert static.valid.view()[1].tolist() == [False] * 3 + [True] * 7 + [False] * 6
    model(torch.ones(2, 6, dtype=torch.long), cache=static)  # fills the last 6 slots
    with pytest.raises((IndexError, RuntimeError)):
        model(torch.ones(2, 1, dtype=torch.long), cache=static)  # full


@torch.inference_mode()
def test_gathered_experts_equal_the_expert_loop(fresh_model):
    moe = next(m for m in fresh_model.modules() if isinstance(m, MoE))
    install_layer(moe)
    x = torch.randn(1, fresh_model.config.hidden_size, generator=torch.Generator().manual_seed(1))
    r = moe.gate(x)
    torch.testing.assert_close(moe.gathered(x, r), moe.run_experts_one_token(x, r), atol=1e-5, rtol=0)
    before = moe.gathered.stacked
    install_layer(moe)
    assert moe.gathered.stacked is before  # nothing changed: kept
    with torch.no_grad():
        moe.experts[int(r.experts[0, 0])].up_proj.weight.mul_(2)
    install_layer(moe)  # an in-place change: rebuilt
    assert moe.gathered.stacked is not before
    torch.testing.assert_close(moe.gathered(x, r), moe.run_experts_one_token(x, r), atol=1e-5, rtol=0)
    assert not any("stacked" in name or "gathered" in name for name in fresh_model.state_dict())


# ---- compiled --------------------------------------------------------------------------------------------
@torch.inference_mode()
def test_compiled_steps_equal_eager_cached_steps(model):
    decode = model.compile_decode()
    graphs = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    ids = prompt()
    cache = model.new_cache()
    static = decode.new_cache(batch=1, length=ids.shape[1] + 10)
    logits = model(ids, cache=cache)[:, -1]
    torch.testing.assert_close(model(ids, cache=static)[:, -1], logits, atol=ATOL, rtol=0)
    for step in range(10):
        token = logits.argmax(-1)
        logits = model(token[:, None], cache=cache)[:, -1]
        compiled = decode.step(token, static)
        torch.testing.assert_close(compiled, logits, atol=ATOL, rtol=0, msg=f"step {step}")
    assert decode.error is None and decode.compiled_steps >= 10 and decode.compile_seconds > 0
    # one graph for every step (not one per position), and none again for the next generation
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] - graphs <= 1


def test_compiled_generate_equals_eager(model, tok):
    decode = model.compile_decode()
    ids = prompt(7, seed=3)
    steps = decode.compiled_steps
    assert greedy(model, ids, 12, compile=True) == greedy(model, ids, 12)
    assert decode.compiled_steps == steps + 11 and decode.error is None  # the 1st token comes from the prefill
    text = "".join(s.text for s in generate(model, tok, "Once upon a time", temperature=0, max_new_tokens=9,
                                            compile=True))
    assert text == "".join(s.text for s in generate(model, tok, "Once upon a time", temperature=0,
                                                    max_new_tokens=9))
    assert decode.compiled_steps == steps + 11 + 8


def test_batch_with_padding_decodes_eagerly(model):
    decode = model.compile_decode()
    ids, mask = left_pad([[5, 9, 33, 17, 2, 8], [41, 7, 3]], pad_id=1)
    steps = decode.compiled_steps
    assert greedy(model, ids, 6, attention_mask=mask, compile=True) == greedy(model, ids, 6, attention_mask=mask)
    assert decode.compiled_steps == steps and not decode.supports(batch=2)
    assert not decode.supports(batch=1, mla="naive")


def test_a_trace_makes_the_steps_eager_and_they_record(model):
    decode = model.compile_decode()
    ids = prompt(5, seed=4)
    expected = greedy(model, ids, 4)
    steps = decode.compiled_steps
    with model.trace() as tr:
        assert greedy(model, ids, 4, compile=True) == expected
    assert decode.compiled_steps == steps
    assert tr["positions"].tolist() == [[ids.shape[1] + 2]]  # the last step ran eagerly, and recorded
    assert "layers.1.moe.experts" in tr and "layers.0.attn.probs" in tr


def test_compile_failure_warns_once_and_decodes_eagerly(fresh_model, monkeypatch):
    def broken_compile(*args, **kwargs):
        raise RuntimeError("no compiler here")

    monkeypatch.setattr(torch, "compile", broken_compile)
    ids = prompt(6, seed=5)
    with pytest.warns(RuntimeWarning, match="compiled decoding failed.*no compiler here"):
        tokens = greedy(fresh_model, ids, 6, compile=True)
    assert tokens == greedy(fresh_model, ids, 6)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once: the next generation just decodes eagerly
        assert greedy(fresh_model, ids, 6, compile=True) == tokens
    assert fresh_model.compile_decode().compiled_steps == 0


def test_a_failing_compiled_call_falls_back_too(fresh_model, monkeypatch):
    def compile_to_failure(fn, **kwargs):
        def failing(*args):
            raise torch._dynamo.exc.Unsupported("cannot trace this")
        return failing

    monkeypatch.setattr(torch, "compile", compile_to_failure)
    ids = prompt(6, seed=6)
    with pytest.warns(RuntimeWarning, match="compiled decoding failed"):
        assert greedy(fresh_model, ids, 5, compile=True) == greedy(fresh_model, ids, 5)


# ---- the benchmark's table ---------------------------------------------------------------------------------
def test_bench_table_shows_eager_compiled_and_their_ratios():
    def run(engine, rate):
        return Run(engine, [3, 4, 5], [0.0, 1 / rate, 2 / rate])

    result = BenchResult("m", True, 10, 4, 3, 1, "absorbed", "sdpa",
                         runs={"ds_core": [run("ds_core", 200)], COMPILED: [run(COMPILED, 400)],
                               "transformers": [run("transformers", 100)]}, compile_seconds=12.5)
    table = result.table()
    assert result.ratio == pytest.approx(4.0)
    for line in ("ratio ds_core compiled / transformers: 4.00x", "ratio ds_core eager / transformers:    2.00x",
                 "ratio ds_core compiled / eager:        2.00x", "took 12.5 s", "identical (all engines): yes"):
        assert line in table
