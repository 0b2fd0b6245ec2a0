"""python -m ds_core: its table of commands, their help and one-line errors; inspect, generate and bench as a user
runs them (subprocess), and in-process for the rest."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
import types
from pathlib import Path

import pytest

from ds_core import CheckpointError, DeepSeekModel, ModelConfig, Tokenizer, generate
from ds_core.__main__ import COMMANDS, main
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


def fake_benchmark(seen: list, name: str) -> types.SimpleNamespace:
    """A stand-in benchmark module that notes which one ran and with what --new-tokens."""
    def add_arguments(parser):
        parser.add_argument("--new-tokens", type=int, help="how many")
    return types.SimpleNamespace(add_arguments=add_arguments, run=lambda args: seen.append((name, args.new_tokens)))


def test_bench_delegates_with_its_arguments(monkeypatch, capsys):
    seen = []
    for name in ("decode", "mla"):
        monkeypatch.setitem(sys.modules, f"ds_core.perf.{name}_bench", fake_benchmark(seen, name))
    for argv in (["bench", "--new-tokens", "8"], ["bench", "decode", "--new-tokens", "8"],
                 ["bench", "mla", "--new-tokens", "3"]):
        rc, _, _ = cli(capsys, *argv)
        assert rc == 0
    assert seen == [("decode", 8), ("decode", 8), ("mla", 3)]
    rc, out, _ = cli(capsys, "bench", "--new-tokens", "8", "--help")  # --help goes to the benchmark, which stops
    assert rc == 0 and out.startswith("usage: python -m ds_core bench decode") and "--new-tokens" in out
    assert len(seen) == 3


def test_bench_missing_module_is_a_clear_error(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ds_core.perf", None)  # as if the module were not there
    monkeypatch.setitem(sys.modules, "ds_core.perf.decode_bench", None)  # (even if an earlier test imported it)
    rc, _, err = cli(capsys, "bench")
    assert rc == 2 and "benchmark is not available" in err


def test_usage_errors_exit_2(capsys):
    rc, _, err = cli(capsys, "generate", "Hi")  # --model is required
    assert rc == 2 and "--model" in err


# ---- the table of commands ----------------------------------------------------------------------------
SEVEN = ("generate", "inspect", "bench", "train", "train-indexer", "eval", "card")


def every_command() -> list[list[str]]:
    """The argv that names each command in the table, a group's members included: ['bench', 'mla'], ..."""
    out = []
    for c in COMMANDS.commands:
        out.append([c.name])
        out += [[c.name, m.name] for m in getattr(c, "commands", ())]
    return out


def test_top_level_help_lists_every_command_with_a_summary():
    r = run_cli("--help")
    assert r.returncode == 0 and r.stderr == ""
    listed = dict(line.split(maxsplit=1) for line in r.stdout.split("commands:\n")[1].split("\n\n")[0].splitlines())
    assert set(SEVEN) <= set(listed) and set(listed) == {c.name for c in COMMANDS.commands}
    assert all(summary.strip() for summary in listed.values())


def test_bench_help_lists_the_benchmarks(capsys):
    rc, out, err = cli(capsys, "bench", "--help")
    assert rc == 0 and err == ""
    listed = [line.split()[0] for line in out.split("benchmarks:\n")[1].split("\n\n")[0].splitlines()]
    assert listed == ["decode", "mla", "prefill"]


@pytest.mark.parametrize("argv", every_command(), ids=" ".join)
def test_every_command_has_help(argv, capsys):
    rc, out, err = cli(capsys, *argv, "--help")
    assert rc == 0 and err == ""
    assert out.startswith(f"usage: python -m ds_core {' '.join(argv)}")


@pytest.mark.parametrize("argv, words", [
    ([], ["no command given", "generate, inspect, bench, train, train-indexer, eval, card"]),
    (["nope"], ["unknown command 'nope'", "--help"]),
    (["--version"], ["unknown command '--version'"]),
    (["bench", "nope"], ["unknown benchmark 'nope'", "decode, mla, prefill"]),
    (["inspect", "assets/ds-tiny", "--colour"], ["unrecognized arguments: --colour", "inspect --help"]),
    (["bench", "mla", "--steps", "two"], ["argument --steps: invalid int value: 'two'", "bench mla --help"]),
    (["inspect", "assets/ds-tiny", "--dtype", "fp64"], ["argument --dtype", "'fp64'", "fp32"]),
    (["train-indexer", "--steps", "many"], ["argument --steps"]),
    (["generate", "Hi", "--model", "m", "--device", "tpu"], ["argument --device", "must be cpu or cuda, got 'tpu'"]),
    (["eval", "--openings", "0"], ["--openings must be an integer >= 1, got 0"]),
])
def test_bad_arguments_exit_2_with_one_error_line(argv, words, capsys):
    rc, out, err = cli(capsys, *argv)
    assert rc == 2 and out == ""
    assert err.startswith("error: ") and len(err.splitlines()) == 1, err
    assert all(w in err for w in words), err


def test_a_usage_error_is_one_line_from_the_shell_too():
    r = run_cli("bench", "prefill", "--window", "wide")
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.startswith("error: argument --window: invalid int value: 'wide'")
    assert len(r.stderr.splitlines()) == 1, r.stderr


def test_traceback_on_request(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DS_CORE_TRACEBACK", "1")
    with pytest.raises(CheckpointError, match="does not exist"):  # raised, not printed as `error: ...`
        main(["inspect", str(tmp_path / "no_such_model")])
