"""python -m ds_core.eval: attention options are checked before anything loads, with a one-line error."""

from __future__ import annotations

import pytest

from ds_core import eval as evaluation


@pytest.mark.parametrize("argv,message", [
    (["--window", "0"], "window must be an integer >= 1, got 0"),
    (["--window", "8", "--sinks", "-1"], "n_global must be an integer >= 0, got -1"),
    (["--attn-temperature", "0"], "attention temperature τ_attn must be a finite number > 0"),
    (["--window", "8", "--dsa-top-k", "4"], "choose one of --window and --dsa-top-k"),
])
def test_bad_attention_options_exit_2_with_the_reason(argv, message, capsys):
    assert evaluation.main(argv) == 2
    assert message in capsys.readouterr().err


def test_dsa_without_a_trained_indexer_says_how_to_train_one(tmp_path, capsys):
    assert evaluation.main(["--model", str(tmp_path), "--dsa-top-k", "8"]) == 2
    assert f"python -m ds_core.train_indexer --model {tmp_path}" in capsys.readouterr().err
