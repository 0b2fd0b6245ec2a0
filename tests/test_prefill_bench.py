"""The prefill benchmark: its runs are the model's real prefills, its memory probe sees real allocations, and the
command prints and writes what it measured. (Its speed figures are the benchmark's output, not asserted here.)"""

from __future__ import annotations

import json

import pytest
import torch

from ds_core import DeepSeekModel
from ds_core.__main__ import main
from ds_core.attention import WindowAttention
from ds_core.labs.attention import fraction_computed
from ds_core.perf.prefill_bench import (Comparison, Run, compare, format_table, measure,
                                        memory_method, prefill_run, random_ids)

MiB = 1 << 20
needs_rss = pytest.mark.skipif(memory_method("cpu") is None, reason="peak RSS is measured on Linux only")


@pytest.fixture(scope="module")
def model(tiny_checkpoint):
    return DeepSeekModel.from_pretrained(tiny_checkpoint)


# ---- the memory probe -------------------------------------------------------------------------------------
@needs_rss
def test_measure_sees_a_known_allocation():
    m = measure(lambda: torch.ones(16 * MiB // 4))  # 16 MiB, kept until the call returns
    assert m.value.shape == (16 * MiB // 4,) and m.seconds > 0
    assert 16 * MiB <= m.peak_bytes < 24 * MiB


@needs_rss
def test_measure_sees_allocations_that_reuse_memory_freed_before_the_call():
    # 64 KiB tensors come from the malloc heap; freeing every other one leaves 32 MiB of holes the heap cannot
    # give back on its own. Unless measure() hands them back first, the call below refills them unseen (0 bytes).
    holes, keep = [], []
    for _ in range(512):
        holes.append(torch.ones(16 << 10))
        keep.append(torch.ones(16 << 10))
    del holes
    m = measure(lambda: [torch.ones(16 << 10) for _ in range(512)])  # 32 MiB in 64 KiB pieces
    assert m.peak_bytes >= 0.9 * 32 * MiB  # partial pages of each hole stay resident: a few % low at most
    del keep


def test_memory_is_not_measured_where_there_is_no_probe():
    assert memory_method("meta") is None
    assert measure(lambda: 1, "meta").peak_bytes is None


# ---- one prefill ------------------------------------------------------------------------------------------
def test_prefill_runs_return_the_models_real_last_logits(model):
    T = 200
    ids = random_ids(model, T, seed=3)
    window = WindowAttention(64, n_global=4)
    dense_run, window_run = prefill_run(model, T, "dense", seed=3), prefill_run(model, T, window, seed=3)
    with torch.inference_mode():
        dense_ref = model(ids)[0, -1]
        with model.trace():  # inside a trace the window runs its explicit masked softmax: the reference
            window_ref = model(ids, backend=window)[0, -1]
    assert (dense_run.backend, dense_run.T, window_run.backend, window_run.T) == ("dense", T, "window", T)
    assert dense_run.logits.shape == (model.config.vocab_size,)
    torch.testing.assert_close(dense_run.logits, dense_ref, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(window_run.logits, window_ref, rtol=1e-4, atol=1e-4)
    assert float((window_run.logits - dense_run.logits).abs().max()) > 1e-3  # the window binds at T=200 > 64
    assert dense_run.seconds > 0 and window_run.seconds > 0
    if memory_method("cpu") is not None:
        assert dense_run.peak_bytes > 0 and window_run.peak_bytes > 0


def test_a_window_as_wide_as_the_prompt_is_dense(model):
    wide = prefill_run(model, 128, WindowAttention(128, n_global=4))
    torch.testing.assert_close(wide.logits, prefill_run(model, 128, "dense").logits, rtol=1e-5, atol=1e-5)


def test_the_seed_picks_the_ids(model):
    a, b = random_ids(model, 64, seed=0), random_ids(model, 64, seed=1)
    assert a.shape == (1, 64) and int(a.max()) < model.config.vocab_size
    assert torch.equal(a, random_ids(model, 64, seed=0)) and not torch.equal(a, b)


def test_logits_to_keep_computes_the_last_rows_only(model):
    ids = random_ids(model, 40)
    with torch.inference_mode():
        full = model(ids)
        last = model(ids, logits_to_keep=1)
        three = model(ids, logits_to_keep=3)
    assert last.shape == (1, 1, model.config.vocab_size) and three.shape == (1, 3, model.config.vocab_size)
    torch.testing.assert_close(last[0, 0], full[0, -1], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(three[0], full[0, -3:], rtol=1e-5, atol=1e-5)


# ---- dense vs window by length ----------------------------------------------------------------------------
def test_compare_alternates_backends_and_reports_medians(model):
    rows = compare(model, [128, 256], window=64, sinks=4, repeats=3)
    assert [c.T for c in rows] == [128, 256]
    for c in rows:
        assert [r.backend for r in c.dense] == ["dense"] * 3 and [r.backend for r in c.window] == ["window"] * 3
        assert c.fraction == fraction_computed(WindowAttention(64, n_global=4), c.T) < 1
        assert c.dense_seconds == sorted(r.seconds for r in c.dense)[1]
        assert c.speedup == pytest.approx(c.dense_seconds / c.window_seconds)
    table = format_table(rows)
    lines = table.splitlines()
    assert lines[0].split()[:3] == ["T", "dense", "ms"]
    assert [line.split()[0] for line in lines[1:3]] == ["128", "256"]
    assert f"{rows[1].speedup:.2f}x" in lines[2] and f"{rows[1].fraction:.1%}" in lines[2]


def test_unmeasured_memory_reads_not_available():
    def runs(name):
        return [Run(name, 64, 0.5, None, torch.zeros(3))]
    c = Comparison(64, runs("dense"), runs("window"), 0.5)
    assert c.memory_ratio is None and c.dense_peak is None
    assert "n/a" in format_table([c]) and "grows as" not in format_table([c])


def test_compare_refuses_bad_settings(model):
    for kwargs, message in ((dict(lengths=[0]), "each length T must be an integer >= 1"),
                            (dict(lengths=[]), "at least one T"),
                            (dict(lengths=[64], window=0), "window must be an integer >= 1"),
                            (dict(lengths=[64], sinks=-1), "n_global must be an integer >= 0"),
                            (dict(lengths=[64], repeats=0), "repeats must be an integer >= 1")):
        with pytest.raises(ValueError, match=message):
            compare(model, **kwargs)


# ---- the command ------------------------------------------------------------------------------------------
def test_bench_prefill_prints_the_table_and_writes_json(tiny_checkpoint, tmp_path, capsys):
    out_json = tmp_path / "prefill.json"
    rc = main(["bench", "prefill", "--model", str(tiny_checkpoint), "--lengths", "128", "300", "--window", "64",
               "--sinks", "4", "--repeats", "1", "--json", str(out_json)])
    out = capsys.readouterr().out
    assert rc == 0
    data = json.loads(out_json.read_text())
    assert (data["window"], data["sinks"], data["repeats"]) == (64, 4, 1)
    assert [r["T"] for r in data["rows"]] == [128, 300]
    rows = {line.split()[0]: line.split() for line in out.splitlines() if line.split()[:1] in (["128"], ["300"])}
    for r in data["rows"]:
        row = rows[str(r["T"])]
        assert row[1] == f"{r['dense_ms']:.1f}" and row[3] == f"{r['speedup']:.2f}x"
        assert row[-1] == f"{r['fraction_computed']:.1%}"
        assert r["fraction_computed"] == fraction_computed(WindowAttention(64, n_global=4), r["T"])
    assert "logits at the last position only" in out
    assert "lengths 300 exceed the model's max_position_embeddings (256)" in out  # 300 > 256: run all the same


@pytest.mark.parametrize("args, message", [
    (["--lengths", "512", "0"], "each length T must be an integer >= 1, got 0"),
    (["--window", "0"], "--window must be an integer >= 1, got 0"),
    (["--sinks", "-1"], "--sinks must be an integer >= 0, got -1"),
    (["--repeats", "0"], "--repeats must be an integer >= 1, got 0"),
])
def test_bench_prefill_bad_arguments_exit_2(args, message, capsys):
    rc = main(["bench", "prefill", "--model", "/nonexistent", *args])  # refused before loading anything
    err = capsys.readouterr().err
    assert rc == 2 and f"error: {message}" in err


def test_bench_prefill_missing_model_exits_2(tmp_path, capsys):
    rc = main(["bench", "prefill", "--model", str(tmp_path / "nope"), "--lengths", "8"])
    assert rc == 2 and capsys.readouterr().err.startswith("error: ")
