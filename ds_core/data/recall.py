"""Long-range recall probes: story prefixes that stop where the next word must be a name or an object the
story introduced d tokens earlier, with nothing in between mentioning it.

A probe introduces one character first (for an object probe, with the object), then tells about the others for a while, then cues the character:
- kind "name":   "... Then the baker named"  -> " Mira"  (introduced as "a young baker named Mira")
- kind "object": "... Nobody touched Mira's" -> " kite"  (introduced as "Mira's kite was red")
d counts tokens from the target's first token in the introduction to the position that must predict it.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import Callable

from .stories import SPLIT_SEEDS, introduction, new_story, possession

BUCKETS = ((1, 32), (33, 128), (129, 256), (257, 480))


def bucket_name(lo: int, hi: int) -> str:
    return f"<={hi}" if lo <= 1 else f"{lo}-{hi}"


@dataclass
class Probe:
    text: str        # the story up to the cue, without the target
    target: str      # the word to recall, with its leading space
    kind: str        # 'name' or 'object'
    distance: int    # tokens from the target's introduction to the position that predicts it
    bucket: str      # one of bucket_name(*BUCKETS[i])


def _cue(rng: random.Random, kind: str, c) -> tuple[str, str]:
    if kind == "name":
        lead = rng.choice(["Then the", "After a while the", "Meanwhile the", "The"])
        return f"{lead} {c.role} named", f" {c.name}"
    lead = rng.choice(["Then ", "Nobody touched ", "Everyone could see ", ""])
    return f"{lead}{c.name}'s", f" {c.obj}"


def make_probe(seed: int, kind: str, lo: int, hi: int, encode: Callable[[str], list[int]],
               tries: int = 50, max_tokens: int = 512) -> Probe | None:
    """One probe whose distance lies in [lo, hi] and whose text and target fit in max_tokens, or None if this
    seed can't land there."""
    rng = random.Random(seed)
    b = new_story(rng, rng.choice([2, 3, 4]))
    x, others = b.cast[0], b.cast[1:]
    b.add(introduction(rng, b.setting, x))
    if kind == "object":  # a name probe leaves it out: the name then appears once before the cue
        b.add(possession(rng, x))
    word = x.name if kind == "name" else x.obj
    first = re.search(rf"\b{re.escape(word)}\b", b.text()).start()
    source = len(encode(b.text()[:first].rstrip()))  # index of the word's first token
    cue, target = _cue(rng, kind, x)
    goal = rng.randint(lo, hi)
    for _ in range(tries):
        distance = len(encode(b.text() + " " + cue)) - source
        if len(encode(b.text() + " " + cue + target)) > max_tokens:
            return None
        if lo <= distance <= hi and distance >= goal - 12:
            return Probe(b.text() + " " + cue, target, kind, distance, bucket_name(lo, hi))
        if distance > hi:
            return None
        pending = [c for c in others if c not in b.introduced]
        if pending and rng.random() < 0.5:
            b.introduce(pending[0])
        elif b.introduced and distance < goal - 20:
            b.event(rng.sample(b.introduced, min(len(b.introduced), rng.choice([1, 2]))))
        else:
            b.event([])  # scenery: small steps to land in the bucket
    return None


def recall_probes(encode: Callable[[str], list[int]], per_bucket: int = 100, split: str = "test") -> list[Probe]:
    """per_bucket probes for each distance bucket, half names and half objects, from the split's seeds.

    encode maps text to token ids as the model sees them (with BOS if the tokenizer adds one).
    """
    base = SPLIT_SEEDS[split] + 5_000_000  # apart from the split's stories
    probes: list[Probe] = []
    seed = base
    for lo, hi in BUCKETS:
        for kind in ("name", "object"):
            made = 0
            while made < per_bucket // 2 + (kind == "name") * (per_bucket % 2):
                p = make_probe(seed, kind, lo, hi, encode)
                seed += 1
                if p is not None:
                    probes.append(p)
                    made += 1
    return probes
