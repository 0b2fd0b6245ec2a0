"""ds_core.evaluation.continuations: the measures behind 'greedy continuations stay on their characters'."""

from __future__ import annotations

from pathlib import Path

import pytest

from ds_core import Tokenizer
from ds_core.evaluation.continuations import held_out_openings, loops, names_in, story_continuation, summarize
from ds_core.data import stories

TINY = Path(__file__).resolve().parents[1] / "assets" / "ds-tiny"


def test_names_in_finds_character_names_only():
    assert names_in("Then Mira's kite fell. The Baker met Oscar by the Tuesday market.") == ["Mira", "Oscar"]


@pytest.mark.parametrize("text,looped", [
    ("The market sold clover, clover and thistles.", True),
    ("It rained. It rained.", True),
    ("Mira ran. Mira's kite was red.", False),
    ("Noah looked at Lola. Lola said yes.", False),   # a name ending one sentence and starting the next
    ("She slept by. By noon it was warm.", False),
])
def test_loops_sees_back_to_back_repeats_within_a_sentence_or_of_a_sentence(text, looped):
    assert loops(text) is looped


def test_summarize_counts_returns_cast_share_and_loops():
    opening = "There was a baker named Mira. Mira's kite was red."
    pairs = [(opening, " Then Mira ran to Oscar."),        # returns; 1 of 2 names is the cast
             (opening, " Oscar sang, sang and sang."),      # new character only; loops
             (opening, " The rain stopped.")]               # no names
    s = summarize(pairs)
    assert s == {"returns": 1 / 3, "cast_share": 1 / 3, "loops": 1 / 3, "n": 3}


def test_openings_are_the_first_three_sentences_of_test_stories():
    (opening, story), = held_out_openings(1)
    assert story == stories.story(stories.SPLIT_SEEDS["test"])
    assert story.startswith(opening) and opening.count(". ") == 2 and opening.endswith(".")
    assert names_in(opening), "an opening introduces a character"


def test_story_continuation_is_the_next_tokens_of_the_story():
    tok = Tokenizer.from_pretrained(TINY)
    (opening, story), = held_out_openings(1)
    cont = story_continuation(tok, opening, story, 20)
    assert story.startswith(opening + cont)
    assert len(tok.encode(opening + cont)) == len(tok.encode(opening)) + 20


def test_continuation_quality_refuses_no_openings_before_generating():
    from ds_core.evaluation.quality import continuation_quality

    with pytest.raises(ValueError, match="n must be an integer >= 1, got 0"):
        continuation_quality(model=None, tok=None, n=0)
