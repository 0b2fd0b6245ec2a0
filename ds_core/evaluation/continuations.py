"""What a continuation of a held-out story opening is measured by: does it stay on the opening's characters,
and does it loop? (ds_core.evaluation.quality.continuation_quality runs the model on these openings.)

Each opening is the first three sentences of a test-split story, which name one character. The same measures
are taken on the story's own continuation, cut to the same number of tokens, so every figure has the corpus's
value beside it: the stories themselves bring in new characters too, and retell lists word for word.

    returns     share of continuations that name one of the opening's characters again
    cast_share  share of all name mentions in the continuations that are the opening's characters
    loops       share of continuations with a word or a sentence repeated back to back
                ("clover, clover", "It rained. It rained."), which this corpus almost never does
"""

from __future__ import annotations

import re

from ..data import stories
from ..data import words as W

NAMES = frozenset(W.FEMALE_NAMES) | frozenset(W.MALE_NAMES)
OPENING_SENTENCES = 3


def held_out_openings(n: int, split: str = "test") -> list[tuple[str, str]]:
    """(opening, story) for the split's first n stories; the opening is the story's first three sentences."""
    out = []
    for text in stories.split(split, n):
        out.append((". ".join(text.split(". ")[:OPENING_SENTENCES]) + ".", text))
    return out


def names_in(text: str) -> list[str]:
    """Every mention of a character name, in order."""
    return [w for w in re.findall(r"[A-Z][a-z]+", text) if w in NAMES]


def loops(text: str) -> bool:
    """Whether a sentence repeats the one before it, or a word the one before it within a sentence."""
    sentences = [s.strip() for s in re.split(r"(?<=[.!?])\s+", text) if s.strip()]
    if any(a == b for a, b in zip(sentences, sentences[1:])):
        return True
    words = [re.findall(r"[\w'-]+", s.lower()) for s in sentences]
    return any(a == b for ws in words for a, b in zip(ws, ws[1:]))


def summarize(pairs: list[tuple[str, str]]) -> dict:
    """(opening, continuation) pairs -> {returns, cast_share, loops, n}."""
    returned = mentions = of_cast = looped = 0
    for opening, continuation in pairs:
        cast, named = set(names_in(opening)), names_in(continuation)
        returned += any(name in cast for name in named)
        mentions += len(named)
        of_cast += sum(name in cast for name in named)
        looped += loops(continuation)
    n = len(pairs)
    return {"returns": returned / n, "cast_share": of_cast / max(mentions, 1), "loops": looped / n, "n": n}


def story_continuation(tok, opening: str, story: str, max_new_tokens: int) -> str:
    """The story's own next max_new_tokens tokens after the opening, as text."""
    n_opening = len(tok.encode(opening))
    text = tok.decode(tok.encode(story)[:n_opening + max_new_tokens])
    if not text.startswith(opening):
        raise AssertionError(f"the story does not start with its opening: {opening!r}")
    return text[len(opening):]
