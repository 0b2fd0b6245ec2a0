"""The story corpus and the recall probes: reproducible, varied, and consistent where recall is measured."""

from __future__ import annotations

import re

import pytest

from ds_core.data import bpe, recall, stories
from ds_core.data import words as W

WORD = re.compile(r"[A-Za-z][A-Za-z-]*")


@pytest.fixture(scope="module")
def train_texts():
    return stories.split("train", 3000)


@pytest.fixture(scope="module")
def tokenizer(train_texts):
    return bpe.train_bpe(train_texts[:1500], 1024)


def test_same_seed_same_story_and_splits_are_disjoint():
    assert stories.story(7) == stories.story(7)
    assert stories.story(7) != stories.story(8)
    sets = {name: set(stories.split(name, 300)) for name in stories.SPLIT_SEEDS}
    assert not sets["train"] & sets["validation"] and not sets["train"] & sets["test"]
    assert not sets["validation"] & sets["test"]
    with pytest.raises(ValueError, match="split must be one of"):
        stories.split("dev", 1)


def test_vocabulary_structures_and_dialogue(train_texts):
    text = " ".join(train_texts)
    assert len(set(WORD.findall(text))) >= 1500
    # many sentence shapes: sentences with their names and content words masked still differ widely
    shapes = {WORD.sub("w", s) for t in train_texts[:500] for s in re.split(r"(?<=[.!?\"])\s", t)}
    assert len(shapes) > 100
    assert text.count('"') > 1000 and "?" in text and "!" in text and "," in text


def _cast(text: str) -> tuple[dict, dict]:
    """role -> name and name -> object, as the story introduced them (the first time each appears)."""
    roles, objects = {}, {}
    for role, name in re.findall(r"\b(\S+) named (\w+)", text):
        roles.setdefault(role, name)
    for name, obj in re.findall(r"\b(\w+)'s ([\w-]+)", text):
        objects.setdefault(name, obj)
    return roles, objects


def test_recall_cues_always_point_at_what_was_introduced(train_texts):
    checked = 0
    verbs = "|".join(map(re.escape, W.OBJECT_VERBS))
    for text in train_texts[:400]:
        roles, objects = _cast(text)
        assert len(set(roles.values())) == len(roles) and len(set(objects.values())) == len(objects)
        for role, name in re.findall(r"\b(\S+) named (\w+)", text):
            assert roles[role] == name, (role, name, text)
            checked += 1
        for name, obj in re.findall(r"\b(\w+)'s ([\w-]+)", text) + re.findall(
                rf"\b(\w+) (?:{verbs}) (?:her|his) ([\w-]+)", text):
            assert objects[name] == obj, (name, obj, text)
            checked += 1
    assert checked > 2000


def test_recall_probes_land_in_their_buckets(tokenizer):
    encode = lambda s: tokenizer.encode(s).ids  # noqa: E731
    probes = recall.recall_probes(encode, per_bucket=10, split="test")
    assert len(probes) == 10 * len(recall.BUCKETS)
    for lo, hi in recall.BUCKETS:
        mine = [p for p in probes if p.bucket == recall.bucket_name(lo, hi)]
        assert len(mine) == 10 and {p.kind for p in mine} == {"name", "object"}
        assert all(lo <= p.distance <= hi for p in mine)
    for p in probes:
        word = p.target.strip()
        hits = [m.start() for m in re.finditer(rf"\b{re.escape(word)}\b", p.text)]
        # introduced in one sentence, then never mentioned again before the cue
        assert hits[-1] < p.text.index(".", hits[0]), (word, p.text)
        assert p.text.endswith(" named" if p.kind == "name" else "'s")
        # the distance, recomputed: tokens from the word's introduction to the end of the text
        assert len(encode(p.text)) - len(encode(p.text[:hits[0]].rstrip())) == p.distance
        assert len(encode(p.text + p.target)) <= 512


def test_tokenizer_adds_bos_and_round_trips(tokenizer):
    text = stories.story(3)
    ids = tokenizer.encode(text).ids
    assert ids[0] == tokenizer.token_to_id(bpe.BOS) == 0 and tokenizer.token_to_id(bpe.EOS) == 1
    assert tokenizer.decode(ids) == text
