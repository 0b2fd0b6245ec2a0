"""python -m ds_core: inspect, generate and bench, as a user runs them (subprocess) and in-process for the rest."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
import types
from pathlib import Path

import pytest

from ds_core import DeepSeekModel, ModelConfig, Tokenizer, generate
from ds_core.__main__ import main
from ds_core.viz.text import human_count

ROOT = Path(__file__).resolve().parents[1]


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ds_core", *map(str, args)], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)


# ---- as a user runs it --------------------------------------------------------------------------------
def test_inspect_subprocess(tiny_checkpoint):
    r = run_cli("inspect", tiny_checkpoint)
    assert r.returncode == 0, r.stderr
    cfg = ModelConfig.from_hf(json.loads((tiny_checkpoint / "config.json").read_text()))
    counts = cfg.param_counts()
    out = r.stdout
    assert "deepseek_v3" in out and "kv_lora_rank" in out
    assert f"{counts['total']:,}" in out and f"{counts['active']:,}" in out
    assert human_count(counts["total"]) in out
    assert "bf16 (2 bytes per number)" in out and "latent" in out and "naive" in out
    kv = cfg.kv_cache_numbers_per_token()
    assert f"{kv['naive'] / kv['latent']:.1f}x smaller" in out


def test_generate_subprocess(tiny_checkpoint):
    r = run_cli("generate", "Once upon a time", "--model", tiny_checkpoint, "--max-new-tokens", "12",
                "--temperature", "0.8", "--top-k", "50", "--top-p", "0.95", "--seed", "1")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("Once upon a time")
    assert "tokens/s" in r.stderr and "time to first token" in r.stderr
    assert "-- 12 tokens," in r.stderr or "stopped at eos" in r.stderr
    assert "Traceback" not in r.stderr


def test_bad_temperature_subprocess(tiny_checkpoint):
    r = run_cli("generate", "Hello", "--model", tiny_checkpoint, "--temperature", "-0.5")
    assert r.returncode == 2
    assert "temperature" in r.stderr and r.stderr.startswith("error: ")
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1


# ---- in-process: the same entry point, faster --------------------------------------------------------
def cli(capsys, *args) -> tuple[int, str, str]:
    rc = main([str(a) for a in args])
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_generate_streams_what_generate_yields(tiny_checkpoint, capsys):
    rc, out, err = cli(capsys, "generate", "The key", "--model", tiny_checkpoint, "--max-new-tokens", "10",
                       "--temperature", "0", "--mla", "naive")
    assert rc == 0
    model, tok = DeepSeekModel.from_pretrained(tiny_checkpoint), Tokenizer.from_pretrained(tiny_checkpoint)
    steps = list(generate(model, tok, "The key", temperature=0, max_new_tokens=10))
    assert out == "The key" + "".join(s.text for s in steps) + "\n"
    n = len(steps)
    assert err.startswith(f"-- {n} tokens, ") and "tokens/s (time to first token" in err


@pytest.mark.parametrize("args, words", [
    (["--temperature", "nan"], ["temperature"]),
    (["--top-p", "0"], ["top_p", "(0, 1]"]),
    (["--top-p", "1.5"], ["top_p"]),
    (["--top-k", "-3"], ["top_k", ">= 0"]),
    (["--max-new-tokens", "0"], ["max_new_tokens", ">= 1"]),
])
def test_bad_sampling_settings(tiny_checkpoint, capsys, args, words):
    rc, out, err = cli(capsys, "generate", "Hi", "--model", tiny_checkpoint, *args)
    assert rc == 2 and out == ""
    assert err.startswith("error: ") and all(w in err for w in words), err


def test_empty_prompt(tiny_checkpoint, capsys):
    rc, _, err = cli(capsys, "generate", "", "--model", tiny_checkpoint)
    assert rc == 2 and "prompt is empty" in err


def test_broken_checkpoint(tiny_checkpoint, tmp_path, capsys):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(tiny_checkpoint, broken)
    cfg = json.loads((broken / "config.json").read_text())
    cfg.pop("kv_lora_rank")
    (broken / "config.json").write_text(json.dumps(cfg))
    for cmd in (["generate", "Hi", "--model", broken], ["inspect", broken]):
        rc, _, err = cli(capsys, *cmd)
        assert rc == 2 and "kv_lora_rank" in err and err.count("\n") == 1


def test_missing_tokenizer(tiny_checkpoint, tmp_path, capsys):
    import shutil

    copy_ = tmp_path / "no_tok"
    shutil.copytree(tiny_checkpoint, copy_)
    (copy_ / "tokenizer.json").unlink()
    rc, _, err = cli(capsys, "generate", "Hi", "--model", copy_)
    assert rc == 2 and "tokenizer.json" in err


def test_inspect_needs_only_config_json(tmp_path, capsys):
    """A directory with DeepSeek-V3's config.json and no weights: 671B answered in an instant."""
    from test_config import DEEPSEEK_V3

    (tmp_path / "config.json").write_text(json.dumps(copy.deepcopy(DEEPSEEK_V3)))
    rc, out, _ = cli(capsys, "inspect", tmp_path, "--dtype", "fp16")
    assert rc == 0
    assert "671.0B" in out and "671,026,419,200" in out and "37,552,297,472" in out
    assert "fp16 (2 bytes per number)" in out and "40,960 per layer" in out and "576 per layer" in out
    assert "71.1x smaller" in out and "yarn x40 from 4096" in out


@pytest.mark.parametrize("cmd", ["generate", "inspect"])
def test_missing_checkpoint_dir(tmp_path, capsys, cmd):
    args = ["generate", "Hello", "--model", tmp_path / "no_such_model"] if cmd == "generate" else \
        ["inspect", tmp_path / "no_such_model"]
    rc, out, err = cli(capsys, *args)
    assert rc == 2 and out == ""
    assert err.startswith("error: ") and "no_such_model" in err and "does not exist" in err


def test_file_instead_of_dir(tiny_checkpoint, capsys):
    rc, _, err = cli(capsys, "generate", "Hello", "--model", tiny_checkpoint / "config.json")
    assert rc == 2 and "is a file" in err


def test_bench_delegates_with_its_arguments(monkeypatch, capsys):
    seen = []
    bench = types.SimpleNamespace(main=lambda argv: seen.append(argv) or 0)
    monkeypatch.setitem(sys.modules, "ds_core.perf", types.SimpleNamespace(decode_bench=bench))
    monkeypatch.setitem(sys.modules, "ds_core.perf.decode_bench", bench)
    rc, _, _ = cli(capsys, "bench", "--new-tokens", "8", "--help")
    assert rc == 0 and seen == [["--new-tokens", "8", "--help"]]


def test_bench_missing_module_is_a_clear_error(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ds_core.perf", None)  # as if the module were not there
    rc, _, err = cli(capsys, "bench")
    assert rc == 2 and "benchmark is not available" in err


def test_usage_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as e:
        main(["generate", "Hi"])  # --model is required
    assert e.value.code == 2 and "--model" in capsys.readouterr().err
