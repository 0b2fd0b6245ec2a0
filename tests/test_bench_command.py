"""python -m ds_core bench NAME --json PATH: the file holds the rows of the table the command printed."""

from __future__ import annotations

import json

from ds_core.__main__ import main
from ds_core.perf.mla_bench import format_table


def bench(capsys, tmp_path, *argv) -> tuple[str, dict]:
    """Run `bench *argv --json FILE` -> (what it printed, the JSON it wrote)."""
    path = tmp_path / "bench.json"
    assert main(["bench", *map(str, argv), "--json", str(path)]) == 0
    return capsys.readouterr().out, json.loads(path.read_text())


def test_mla_json_rows_are_the_printed_table(tiny_checkpoint, tmp_path, capsys):
    out, data = bench(capsys, tmp_path, "mla", "--model", tiny_checkpoint, "--contexts", "8,20", "--steps", "2",
                      "--repeats", "1")
    assert [r["context"] for r in data["rows"]] == [8, 20]
    assert format_table(data["rows"], steps=2, repeats=1) in out  # the same table, rebuilt from the file alone
    assert (data["model"], data["steps"], data["repeats"], data["threads"]) == (str(tiny_checkpoint), 2, 1, 1)


def test_decode_json_rows_are_the_printed_table(tiny_checkpoint, tmp_path, capsys):
    out, data = bench(capsys, tmp_path, "decode", "--model", tiny_checkpoint, "--prompt-len", "4", "--new-tokens", "4",
                      "--repeats", "2", "--no-compile")
    printed = {line.split()[0]: line.split()[1:] for line in out.splitlines()
               if line.split()[:1] in (["ds_core"], ["transformers"])}
    assert [r["engine"] for r in data["rows"]] == ["ds_core", "transformers"] == list(printed)
    for r in data["rows"]:
        runs = ", ".join(f"{rate:.1f}" for rate in r["runs_tokens_per_s"])
        assert printed[r["engine"]] == [f"{r['tokens_per_s']:.1f}", f"{r['ms_per_token']:.3f}", *runs.split()]
        assert len(r["runs_tokens_per_s"]) == 2
    assert (data["new_tokens"], data["matching_tokens"]) == (4, 4)  # both engines chose the same greedy tokens
    assert "greedy tokens identical: yes" in out
