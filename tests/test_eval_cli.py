"""python -m ds_core eval: options are checked before anything loads, with a one-line error."""

from __future__ import annotations

import pytest
import torch

from ds_core.__main__ import main
from ds_core.evaluation import quality as evaluation


@pytest.mark.parametrize("argv,message", [
    (["--window", "0"], "window must be an integer >= 1, got 0"),
    (["--window", "8", "--sinks", "-1"], "n_global must be an integer >= 0, got -1"),
    (["--attn-temperature", "0"], "attention temperature τ_attn must be a finite number > 0"),
    (["--window", "8", "--dsa-top-k", "4"], "choose one of --window and --dsa-top-k"),
    (["--openings", "0"], "--openings must be an integer >= 1, got 0"),
    (["--per-bucket", "-1"], "--per-bucket must be an integer >= 1, got -1"),
    (["--stories", "0"], "--stories must be an integer >= 1, got 0"),
])
def test_bad_options_exit_2_with_the_reason(argv, message, capsys):
    assert main(["eval", *argv]) == 2
    assert message in capsys.readouterr().err


def test_dsa_without_a_trained_indexer_says_how_to_train_one(tmp_path, capsys):
    assert main(["eval", "--model", str(tmp_path), "--dsa-top-k", "8"]) == 2
    assert f"python -m ds_core train-indexer --model {tmp_path}" in capsys.readouterr().err


def test_induction_score_sees_a_model_that_copies():
    """A stand-in 'model' whose logits put all mass on the token seen `length` positions back copies perfectly
    on the second copy; the score must say so (and say no gain for one that never copies)."""
    import torch

    class Copier:
        config = type("C", (), {"vocab_size": 50})()

        def __init__(self, copies: bool):
            self.copies = copies

        def __call__(self, ids, backend=None, mla=None):
            logits = torch.zeros(*ids.shape, 50)
            if self.copies:
                # position t predicts token t+1, which is token t+1-length (= t-99) of the first copy
                logits[:, 99:, :] = -30.0
                logits[:, 99:].scatter_(-1, ids[:, :ids.shape[1] - 99, None], 30.0)
            return logits

        device = torch.device("cpu")

    good = evaluation.induction_score(Copier(True), n=2, length=100)
    none = evaluation.induction_score(Copier(False), n=2, length=100)
    assert good["second_copy_loss"] < 0.01 and good["copy_gain"] > 3
    assert abs(none["copy_gain"]) < 1e-6


def test_random_words_are_corpus_words_cut_to_length():
    from ds_core import Tokenizer
    from ds_core.data import stories

    tok = Tokenizer.from_pretrained("assets/ds-tiny")
    ids = evaluation.random_words(tok, n=3, length=40, seed=1)
    assert ids.shape == (3, 40) and tok.bos_token_id not in ids.tolist()[0]
    assert not torch.equal(ids[0], ids[1])
    words = tok.decode(ids[0].tolist()).split()[:-1]  # the last word may be cut mid-way
    assert words and all(w in stories.CHANT_WORDS for w in words)
