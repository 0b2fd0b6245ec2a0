"""A seeded generator of short English stories with characters, their belongings, places and dialogue.

Every story introduces its characters early ("a young baker named Mira", "Mira's kite was red") and refers
back to them later, sometimes after a long stretch about someone else. Two kinds of reference are fixed by
the story, not by chance, so a model can only get them right by looking back:

- name recall: "the <role> named" is always followed by that character's name ("... the baker named Mira");
- object recall: a name's possessive is always followed by that character's own object ("Mira's kite"), and
  so is a name followed by one of OBJECT_VERBS and her/his ("Mira picked up her kite").

Both cues repeat the words of the introduction, so looking back means copying what followed them then (what
an induction head does).

`recall.py` cuts stories at exactly those points to measure recall by distance. Everything else (scenery,
errands, weather, conversation) is drawn from many templates and word lists, so the text is varied.

A story opens with an episode about its first character alone: a short plot (a lost object, a journey, a feast,
a repair) told in beats that always come in the same order. Episodes and scenes then alternate. Sentences drawn
independently of each other would make the likeliest next sentence the same everywhere, and greedy decoding
would repeat it forever; beats in order make the likeliest next sentence move the story on.

Most stories also carry a chant: different words drawn at random, in alphabetical order ("goose plum river
softly ..."), said once and repeated word for word later, sometimes several times. Nothing but the earlier
telling predicts which words, so it pays a model to learn to copy from context early in training; the recall
cues above need the same skill. Lists of things are told the same way, and retold once.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Callable

from . import words as W


def article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


IRREGULAR_PLURALS = {"sheep": "sheep", "deer": "deer", "mouse": "mice", "goose": "geese", "wolf": "wolves"}


def plural(noun: str) -> str:
    if noun in IRREGULAR_PLURALS:
        return IRREGULAR_PLURALS[noun]
    if noun.endswith(("s", "x", "ch", "sh")):
        return noun + "es"
    if noun.endswith("y") and noun[-2] not in "aeiou":
        return noun[:-1] + "ies"
    return noun + "s"


def cap(sentence: str) -> str:
    return sentence[0].upper() + sentence[1:]


@dataclass
class Character:
    name: str
    pronoun: str      # she / he
    possessive: str   # her / his
    role: str
    trait: str
    obj: str
    obj_adj: str

    @property
    def object_phrase(self) -> str:
        return f"{article(self.obj_adj)} {self.obj_adj} {self.obj}"


@dataclass
class Setting:
    place: str
    place_adj: str
    time: str


def make_characters(rng: random.Random, n: int) -> list[Character]:
    """n characters with distinct names, roles and objects (so every reference has one right answer)."""
    roles = rng.sample(W.ROLES, n)
    objects = rng.sample(W.OBJECTS, n)
    names = set()
    chars = []
    for i in range(n):
        female = rng.random() < 0.5
        pool = W.FEMALE_NAMES if female else W.MALE_NAMES
        name = rng.choice(pool)
        while name in names:
            name = rng.choice(pool)
        names.add(name)
        chars.append(Character(name, "she" if female else "he", "her" if female else "his", roles[i],
                               rng.choice(W.PERSON_ADJECTIVES), objects[i], rng.choice(W.OBJECT_ADJECTIVES)))
    return chars


# ---- sentences -------------------------------------------------------------------------------------
# Each takes (rng, setting, character(s)) and returns one or two sentences. Templates are combined with
# word lists at random, so the same template rarely gives the same sentence twice.

def opening(rng: random.Random, s: Setting) -> str:
    place = f"{s.place_adj} {s.place}"
    return rng.choice([
        f"Once upon a time, in {article(place)} {place}, there was a {s.time} nobody forgot.",
        f"This is a story about {article(place)} {place} and the people who lived there.",
        f"It happened one {s.time} in {article(place)} {place} by the {rng.choice(W.PLACES)}.",
        f"Long ago, {article(place)} {place} stood at the edge of the {rng.choice(W.PLACES)}.",
        f"The {s.place} was {s.place_adj} that {s.time}, and {rng.choice(W.WEATHER)}.",
        f"Everyone in the {s.place} still talks about that {s.time}.",
        f"One {s.time}, {rng.choice(W.WEATHER)} over the {s.place_adj} {s.place}.",
    ])


def introduction(rng: random.Random, s: Setting, c: Character) -> str:
    """Names the character and gives the role: the source of every later name recall."""
    who = f"{article(c.trait)} {c.trait} {c.role} named {c.name}"
    return rng.choice([
        f"There was {who}.",
        f"In the {s.place} lived {who}.",
        f"Near the {rng.choice(W.PLACES)} lived {who}.",
        f"Among them was {who}.",
        f"One of them was {who}, who liked {rng.choice(W.ACTIVITIES)}.",
        f"{cap(who)} had just come to the {s.place}.",
        f"Every {rng.choice(W.TIMES)}, {who} walked past the {rng.choice(W.FURNITURE + W.PLACES)}.",
    ])


def possession(rng: random.Random, c: Character) -> str:
    """Gives the character's object as '<Name>'s <object>': the source of every later object recall."""
    own = f"{c.name}'s {c.obj}"
    giver = rng.choice(["a friend", "an aunt", "a stranger", "an uncle", "a neighbour", "a teacher"])
    return rng.choice([
        f"{own} was {c.obj_adj}.",
        f"{c.name} had {c.object_phrase}, and {own} went everywhere.",
        f"Everyone knew {own}: it was {c.obj_adj} and old.",
        f"{own} had been a gift from {giver}.",
        f"By the {rng.choice(W.FURNITURE)} lay {own}, {c.obj_adj} as ever.",
        f"{c.name} was proud of {c.possessive} {c.obj_adj} {c.obj}, and {own} was never far away.",
    ])


def name_recall(rng: random.Random, s: Setting, c: Character) -> str:
    """'the <role> named <Name>': the name after the role is fixed by the introduction."""
    who = f"the {c.role} named {c.name}"
    rest = rng.choice([
        f"{rng.choice(W.VERBS_PAST)} {rng.choice(W.ADVERBS)} to the {rng.choice(W.PLACES)}",
        f"came back from the {rng.choice(W.PLACES)}",
        f"felt {rng.choice(W.FEELINGS)} and {rng.choice(W.VERBS_PAST)}",
        f"sat down on the {rng.choice(W.FURNITURE)} and ate some {rng.choice(W.FOODS)}",
        f"heard {rng.choice(W.SOUNDS)} outside",
        f"thought about the {rng.choice(W.ANIMALS)} by the {rng.choice(W.PLACES)}",
        f"put on {c.possessive} {rng.choice(W.CLOTHES)}",
        f"was {rng.choice(W.FEELINGS)}",
    ])
    return rng.choice([
        f"Then {who} {rest}.",
        f"{cap(who)} {rest}.",
        f"That {rng.choice(W.TIMES)}, {who} {rest}.",
        f"Meanwhile {who} {rest}.",
        f"After a while {who} {rest}.",
        f"Nobody knew that {who} {rest}.",
    ])


def object_recall(rng: random.Random, c: Character) -> str:
    """'<Name>'s <object>', or '<Name> <object verb> her <object>': the object is fixed by the possession
    sentence."""
    own = f"{c.name}'s {c.obj}"
    by_verb = f"{c.name} {rng.choice(W.OBJECT_VERBS)} {c.possessive} {c.obj}"
    return rng.choice([
        f"{own} was still by the {rng.choice(W.FURNITURE)}.",
        f"{own} looked {rng.choice(W.SCENERY_ADJECTIVES)} in the {rng.choice(W.SCENERY_NOUNS)}.",
        f"Nobody touched {own}.",
        f"Then {own} fell off the {rng.choice(W.FURNITURE)}.",
        f"Everyone could see {own} from the {rng.choice(W.PLACES)}.",
        f"{by_verb}, because the {rng.choice(W.SCENERY_NOUNS)} looked {rng.choice(W.SCENERY_ADJECTIVES)}.",
        f"Feeling {rng.choice(W.FEELINGS)}, {by_verb}.",
        f"Then {by_verb} and {rng.choice(W.VERBS_PAST)} {rng.choice(W.ADVERBS)}.",
    ])


def action(rng: random.Random, s: Setting, c: Character) -> str:
    """Something the character does, named but without a recall cue."""
    p = c.possessive
    return rng.choice([
        f"{c.name} {rng.choice(W.VERBS_PAST)} {rng.choice(W.ADVERBS)} past the {rng.choice(W.TREES)}.",
        f"{c.name} bought some {rng.choice(W.FOODS)} and some {rng.choice(W.FOODS)} at the {rng.choice(W.PLACES)}.",
        f"{c.name} spent the {rng.choice(W.TIMES)} {rng.choice(W.ACTIVITIES)} with a {rng.choice(W.ANIMALS)}.",
        f"{c.name} opened the {rng.choice(W.FURNITURE)} and found some {rng.choice(W.WORK_THINGS)}.",
        f"{c.name} felt {rng.choice(W.FEELINGS)} when the {rng.choice(W.ANIMALS)} {rng.choice(W.VERBS_PAST)} by.",
        f"{c.name} picked some {rng.choice(W.FLOWERS)} for the {rng.choice(W.FURNITURE)}.",
        f"{cap(c.pronoun)} {rng.choice(W.VERBS_PAST)} until the {rng.choice(W.SCENERY_NOUNS)} grew {rng.choice(W.SCENERY_ADJECTIVES)}.",
        f"{c.name} fixed {p} {rng.choice(W.CLOTHES)} with some {rng.choice(W.WORK_THINGS)}.",
        f"{c.name} {rng.choice(W.VERBS_PAST)} and {rng.choice(W.VERBS_PAST)}, then {rng.choice(W.VERBS_PAST)} again.",
        f"{c.name} counted {rng.randint(2, 12)} {plural(rng.choice(W.ANIMALS))} on the {rng.choice(W.PLACES)} road.",
        f"For a long time {c.name} watched the {rng.choice(W.SCENERY_NOUNS)} and said nothing.",
        f"{c.name} carried {rng.choice(W.WORK_THINGS)} to the {rng.choice(W.PLACES)} in a cart.",
    ])


def scenery(rng: random.Random, s: Setting) -> str:
    """A sentence with nobody in it: the distance between a mention and its recall grows with these."""
    return rng.choice([
        f"{cap(rng.choice(W.WEATHER))}.",
        f"The {rng.choice(W.SCENERY_NOUNS)} over the {s.place} looked {rng.choice(W.SCENERY_ADJECTIVES)}.",
        f"Somewhere a {rng.choice(W.ANIMALS)} was {rng.choice(W.SOUNDS)}.",
        f"The {rng.choice(W.TREES)} trees by the {rng.choice(W.PLACES)} swayed in the wind.",
        f"{cap(rng.choice(W.FLOWERS))} grew along the {rng.choice(W.SCENERY_NOUNS)}, {rng.choice(W.SCENERY_ADJECTIVES)} and {rng.choice(W.SCENERY_ADJECTIVES)}.",
        f"The {rng.choice(W.ANIMALS)} and the {rng.choice(W.ANIMALS)} {rng.choice(W.VERBS_PAST)} across the {rng.choice(W.PLACES)}.",
        f"The smell of {rng.choice(W.FOODS)} drifted from the {rng.choice(W.PLACES)}.",
        f"By {rng.choice(W.TIMES)} the {rng.choice(W.SCENERY_NOUNS)} had turned {rng.choice(W.SCENERY_ADJECTIVES)}.",
        f"There were {rng.randint(2, 30)} {plural(rng.choice(W.ANIMALS))} in the {rng.choice(W.PLACES)} that year.",
        f"The {s.place} was quiet except for the {rng.choice(W.SOUNDS)} of the {plural(rng.choice(W.ANIMALS))}.",
    ])


def dialogue(rng: random.Random, a: Character, b: Character) -> str:
    """An exchange between two characters, with quotes and speech verbs in several orders."""
    lines = [
        f"Have you seen my {a.obj}?",
        f"Would you like some {rng.choice(W.FOODS)}?",
        f"The {rng.choice(W.ANIMALS)} is back at the {rng.choice(W.PLACES)}!",
        f"I think it will rain before {rng.choice(W.TIMES)}.",
        f"Why are you so {rng.choice(W.FEELINGS)} today?",
        f"Let us go to the {rng.choice(W.PLACES)} together.",
        f"I made this {rng.choice(W.FURNITURE)} myself.",
        f"Do you remember the {rng.choice(W.SCENERY_ADJECTIVES)} {rng.choice(W.SCENERY_NOUNS)}?",
        f"Where did you put the {rng.choice(W.WORK_THINGS)}?",
        f"I am {rng.choice(W.FEELINGS)}, that is all.",
    ]
    replies = [
        "Yes, of course.", "No, not today.", "I am not sure.", "Maybe tomorrow.", "What a strange question!",
        f"Only if you bring the {rng.choice(W.FOODS)}.", f"Ask the {rng.choice(W.ANIMALS)}, not me.",
        "That sounds lovely.", "I would rather stay here.", f"It was {rng.choice(W.SCENERY_ADJECTIVES)}, I remember.",
    ]
    line, reply = rng.choice(lines), rng.choice(replies)
    say, answer = rng.choice(W.SPEECH_VERBS), rng.choice(W.SPEECH_VERBS)
    return rng.choice([
        f"\"{line}\" {say} {a.name}. \"{reply}\" {answer} {b.name}.",
        f"{a.name} turned to {b.name}. \"{line}\" \"{reply}\" {b.name} {answer}.",
        f"\"{line}\" {a.name} {say}, looking at {b.name}. {b.name} {answer}, \"{reply}\"",
        f"\"{b.name},\" {a.name} {say}, \"{line[0].lower() + line[1:]}\" \"{reply}\"",
    ])


def time_passes(rng: random.Random) -> str:
    return rng.choice([
        f"The next {rng.choice(W.TIMES)} came slowly.",
        f"Days went by, and {rng.choice(W.WEATHER)}.",
        f"Later that {rng.choice(W.TIMES)}, the {rng.choice(W.SOUNDS)} stopped.",
        f"By the time the {rng.choice(W.SCENERY_NOUNS)} changed, a week had passed.",
        f"Nothing much happened until {rng.choice(W.TIMES)}.",
    ])


def ending(rng: random.Random, s: Setting) -> str:
    return rng.choice([
        f"And that is how the {s.place} got its name.",
        f"From then on, {rng.choice(W.WEATHER)} every {rng.choice(W.TIMES)}, and nobody minded.",
        "The end.",
        f"Everyone went home {rng.choice(W.ADVERBS)}.",
        f"That night the {s.place} slept {rng.choice(W.ADVERBS)}.",
    ])


def listing(rng: random.Random) -> str:
    """A list of 5 to 10 different things in alphabetical order: "goose, kite, lantern and plums". (In no order,
    every unused thing is equally likely next, and greedy decoding repeats whichever it happens to favour.)"""
    pools = [W.OBJECTS, W.FOODS, W.ANIMALS, W.FLOWERS, W.WORK_THINGS]
    items = []
    n = rng.randint(5, 10)
    while len(items) < n:
        word = rng.choice(rng.choice(pools))
        if word not in items:
            items.append(word)
    items.sort()
    return ", ".join(items[:-1]) + " and " + items[-1]


LIST_TELLINGS = (  # (told early, retold later) pairs: the same list, word for word
    ("On the board by the {place} someone had written: {what}.", "Later the board by the {place} still said: {what}."),
    ("The children made up a song about {what}.", "Again the children sang about {what}."),
    ("In the cellar there were {what}.", "Nobody had touched the cellar, so there were still {what}."),
    ("The old map showed {what}.", "Looking at the map once more, everyone saw {what}."),
    ("The market sold {what} that {time}.", "At the end of the {time} the market still had {what}."),
)


def list_telling(rng: random.Random, s: Setting) -> tuple[str, str]:
    """A list told early in the story and the sentence that retells it later, word for word: the story's
    plainest test of copying from context."""
    what = listing(rng)
    told, retold = rng.choice(LIST_TELLINGS)
    return (told.format(place=s.place, what=what, time=s.time), retold.format(place=s.place, what=what, time=s.time))


# Single words from every list except names, so a chant never looks like a name or object reference.
CHANT_WORDS = tuple(sorted({w for pool in (W.OBJECTS, W.FOODS, W.ANIMALS, W.FLOWERS, W.WORK_THINGS, W.PLACES,
                                           W.TREES, W.SCENERY_NOUNS, W.SCENERY_ADJECTIVES, W.FEELINGS,
                                           W.ADVERBS, W.VERBS_PAST, W.CLOTHES, W.FURNITURE, W.SOUNDS)
                            for w in pool if " " not in w}))

CHANT_TELLINGS = (
    "{name} made up a secret password: {what}.",
    "On the old gate someone had carved the magic words: {what}.",
    "{name} learned a strange rhyme: {what}.",
    "The note under the {thing} said: {what}.",
    "{name} sang a silly song that went: {what}.",
)
CHANT_RETELLINGS = (
    "{name} said the words again: {what}.",
    "Once more {name} repeated: {what}.",
    "Nobody forgot the words: {what}.",
    "Again {name} read out: {what}.",
    "{name} still remembered it: {what}.",
)


def chant(rng: random.Random) -> str:
    """6 to 16 different words drawn at random, in alphabetical order: meaningless, so only an earlier telling can
    predict them, and never a word twice in a row."""
    return " ".join(sorted(rng.sample(CHANT_WORDS, rng.randint(6, 16))))


def chant_telling(rng: random.Random, b: "StoryBuilder") -> tuple[str, Callable[[], str]]:
    """A chant's first telling, and a function giving a retelling (a new sentence around the same words)."""
    what = chant(rng)

    def sentence(templates: tuple[str, ...]) -> str:
        return cap(rng.choice(templates).format(name=rng.choice(b.introduced).name, what=what,
                                                thing=rng.choice(W.FURNITURE)))
    return sentence(CHANT_TELLINGS), lambda: sentence(CHANT_RETELLINGS)


# ---- plots -------------------------------------------------------------------------------------------
# Each plot is a list of beats, one sentence each, always in this order (why: the module docstring).

def lost_object(rng: random.Random, s: Setting, c: Character, friend: Character | None) -> list[str]:
    p, n, o = c.possessive, c.name, c.obj
    place, place2, furn = rng.sample(W.PLACES, 2) + [rng.choice(W.FURNITURE)]
    return [
        rng.choice([f"One {rng.choice(W.TIMES)}, {n} took {p} {o} to the {place}.",
                    f"{n} carried {p} {o} all the way to the {place}."]),
        rng.choice([f"At the {place}, {c.pronoun} put {p} {o} down on the {furn}.",
                    f"There {n} set {p} {o} on the {furn} and {rng.choice(W.VERBS_PAST)} off."]),
        rng.choice([f"When {c.pronoun} came back, {n}'s {o} was gone.", f"Later {n} saw that {p} {o} was gone."]),
        rng.choice([f"{n} looked for {p} {o} in the {place2}, but it was not there.",
                    f"{n} searched the {place2} for {p} {o}, but found nothing."]),
        *([rng.choice([f"So {c.pronoun} went to ask the {friend.role} named {friend.name}.",
                       f"Then {n} ran to find the {friend.role} named {friend.name}."]),
           f"\"Have you seen my {o}?\" {n} {rng.choice(W.SPEECH_VERBS)}. "
           f"\"{rng.choice(['Look under the ', 'I saw it by the '])}{furn}.\" {friend.name} {rng.choice(W.SPEECH_VERBS)}."]
          if friend else []),
        rng.choice([f"At last {n} found {p} {o} under the {furn}.", f"In the end {n}'s {o} was right there, under the {furn}."]),
        rng.choice([f"{n} was so {rng.choice(W.FEELINGS)} that {c.pronoun} {rng.choice(W.VERBS_PAST)} all the way home.",
                    f"From then on {n} never let go of {p} {o}."]),
    ]


def journey(rng: random.Random, s: Setting, c: Character, friend: Character | None) -> list[str]:
    n = c.name
    goal, past, rest = rng.sample(W.PLACES, 3)
    return [
        rng.choice([f"One {rng.choice(W.TIMES)}, {n} set off for the {goal}.",
                    f"{n} decided to walk to the {goal} before {rng.choice(W.TIMES)}."]),
        rng.choice([f"First {c.pronoun} crossed the {past}, where a {rng.choice(W.ANIMALS)} {rng.choice(W.VERBS_PAST)}.",
                    f"The road went past the {past} and its {rng.choice(W.TREES)} trees."]),
        rng.choice([f"Halfway there, {rng.choice(W.WEATHER)}.", f"Halfway there, {n} stopped to eat some {rng.choice(W.FOODS)}."]),
        rng.choice([f"Next {n} reached the {rest} and rested by the {rng.choice(W.FURNITURE)}.",
                    f"After the {rest}, the road grew {rng.choice(W.SCENERY_ADJECTIVES)}."]),
        *([rng.choice([f"There {c.pronoun} met the {friend.role} named {friend.name}.",
                       f"At the {rest} the {friend.role} named {friend.name} was waiting."]),
           f"\"{rng.choice(['Where are you going?', 'Can I come too?', 'You look tired!'])}\" {friend.name} "
           f"{rng.choice(W.SPEECH_VERBS)}. \"To the {goal},\" {n} {rng.choice(W.SPEECH_VERBS)}."] if friend else []),
        rng.choice([f"By {rng.choice(W.TIMES)} {n} was at the {goal} at last.", f"Finally the {goal} came into view."]),
        rng.choice([f"{n} sat down and told everyone about the trip.", f"That night {n} slept {rng.choice(W.ADVERBS)}."]),
    ]


def feast(rng: random.Random, s: Setting, c: Character, friend: Character | None) -> list[str]:
    n = c.name
    f1, f2, f3 = rng.sample(W.FOODS, 3)
    return [
        rng.choice([f"One {rng.choice(W.TIMES)}, {n} wanted to cook a feast.",
                    f"{n} decided to make dinner for the whole {s.place}."]),
        rng.choice([f"{cap(c.pronoun)} bought {f1} and {f2} at the {rng.choice(W.PLACES)}.",
                    f"First {n} gathered some {f1} and some {f2}."]),
        rng.choice([f"Then {c.pronoun} chopped the {f1} on the {rng.choice(W.FURNITURE)}.",
                    f"Then {n} washed the {f2} in the {rng.choice(W.PLACES)} stream."]),
        rng.choice([f"But there was no {f3} left.", f"But the {f3} had gone bad."]),
        *([rng.choice([f"So {n} asked the {friend.role} named {friend.name} for some {f3}.",
                       f"Luckily the {friend.role} named {friend.name} came by with some {f3}."])] if friend else []),
        rng.choice([f"Soon the smell of {f1} and {f3} filled the {s.place}.", f"The pot bubbled {rng.choice(W.ADVERBS)} for an hour."]),
        rng.choice(["Everyone ate until the plates were empty.",
                    f"{n} was {rng.choice(W.FEELINGS)}, because the feast was a success."]),
    ]


def repair(rng: random.Random, s: Setting, c: Character, friend: Character | None) -> list[str]:
    n, p = c.name, c.possessive
    broken, tool = rng.choice(W.FURNITURE), rng.choice(W.WORK_THINGS)
    return [
        rng.choice([f"One {rng.choice(W.TIMES)}, a storm came over the {s.place}.", f"That {rng.choice(W.TIMES)} the wind blew hard."]),
        rng.choice([f"In the morning {n} saw that the {broken} was broken.", f"The storm had broken {n}'s {c.obj}."]),
        rng.choice([f"{n} fetched some {tool} from the {rng.choice(W.PLACES)}.", f"{cap(c.pronoun)} needed {tool} to fix it."]),
        *([rng.choice([f"The {friend.role} named {friend.name} came to help.",
                       f"{n} asked the {friend.role} named {friend.name} to hold the {tool}."])] if friend else []),
        rng.choice([f"All {rng.choice(W.TIMES)} {n} worked {rng.choice(W.ADVERBS)}.", f"It took {rng.randint(2, 9)} hours of hard work."]),
        rng.choice([f"At last it was as good as new.", f"When it was done, {n} {rng.choice(W.VERBS_PAST)} with joy."]),
    ]


PLOTS = (lost_object, journey, feast, repair)


def episode(b: "StoryBuilder", hero: Character) -> None:
    """One plot about hero, beat by beat, now and then interrupted by a sentence of scenery."""
    others = [c for c in b.introduced if c is not hero]
    friend = b.rng.choice(others) if others and b.rng.random() < 0.7 else None
    for sentence in b.rng.choice(PLOTS)(b.rng, b.setting, hero, friend):
        b.add(sentence)
        if b.rng.random() < 0.2:
            b.add(scenery(b.rng, b.setting) if b.rng.random() < 0.7 else time_passes(b.rng))


# ---- stories -----------------------------------------------------------------------------------------

@dataclass
class StoryBuilder:
    """Sentences of one story, with the characters introduced so far."""
    rng: random.Random
    setting: Setting
    cast: list[Character]
    sentences: list[str] = field(default_factory=list)
    introduced: list[Character] = field(default_factory=list)

    def add(self, sentence: str) -> None:
        self.sentences.append(sentence)

    def introduce(self, c: Character) -> None:
        self.add(introduction(self.rng, self.setting, c))
        self.add(possession(self.rng, c))
        self.introduced.append(c)

    def event(self, among: list[Character]) -> None:
        """One sentence about the characters in `among` (or about nobody)."""
        rng = self.rng
        kinds = ["scenery", "action", "name", "object", "time"] + (["dialogue"] if len(among) > 1 else [])
        weights = [3, 4, 3, 3, 1] + ([3] if len(among) > 1 else [])
        kind = rng.choices(kinds, weights)[0] if among else rng.choice(["scenery", "time"])
        if kind == "scenery":
            self.add(scenery(rng, self.setting))
        elif kind == "time":
            self.add(time_passes(rng))
        elif kind == "action":
            self.add(action(rng, self.setting, rng.choice(among)))
        elif kind == "name":
            self.add(name_recall(rng, self.setting, rng.choice(among)))
        elif kind == "object":
            self.add(object_recall(rng, rng.choice(among)))
        else:
            a, b = rng.sample(among, 2)
            self.add(dialogue(rng, a, b))

    def text(self) -> str:
        return " ".join(self.sentences)


def new_story(rng: random.Random, n_characters: int) -> StoryBuilder:
    setting = Setting(rng.choice(W.PLACES), rng.choice(W.PLACE_ADJECTIVES), rng.choice(W.TIMES))
    b = StoryBuilder(rng, setting, make_characters(rng, n_characters))
    b.add(opening(rng, setting))
    return b


def story(seed: int, words: int | None = None) -> str:
    """One story, the same for the same seed: about `words` words (default: drawn from 80 to 400).

    The story opens with a plot about its first character (an episode: beats in a fixed order), then runs in
    episodes and scenes; a scene follows one or two of the characters, so a character can drop out for a long
    stretch and come back with a name or object recall. Most stories also tell a list of things after the
    first episode and repeat it word for word later, and carry a chant repeated up to three times.
    """
    rng = random.Random(seed)
    b = new_story(rng, rng.choice([2, 3, 3, 4]))
    budget = words or rng.randint(80, 400)
    b.introduce(b.cast[0])
    episode(b, b.cast[0])  # alone: the others come in later, so a story goes on with the character it opened on
    retold = None
    if rng.random() < 0.6:
        told, retold = list_telling(rng, b.setting)
        b.add(told)
    chant_retold, chant_left = None, 0
    if rng.random() < 0.85:
        told, chant_retold = chant_telling(rng, b)
        b.add(told)
        chant_left = rng.randint(1, 3)
    while sum(len(x.split()) for x in b.sentences) < budget:
        if retold and rng.random() < 0.3:
            b.add(retold)
            retold = None
        if chant_left and rng.random() < 0.3:
            b.add(chant_retold())
            chant_left -= 1
        pending = [c for c in b.cast if c not in b.introduced]
        if pending and rng.random() < 0.25:
            b.introduce(pending[0])
        if rng.random() < 0.4:
            episode(b, rng.choice(b.introduced))
        else:
            known = b.introduced
            scene = rng.sample(known, min(len(known), rng.choice([1, 1, 2])))
            for _ in range(rng.randint(2, 6)):
                b.event(scene)
    if retold:
        b.add(retold)
    if chant_left:
        b.add(chant_retold())
    if rng.random() < 0.8:
        b.add(rng.choice([name_recall(rng, b.setting, c) for c in b.introduced]
                         + [object_recall(rng, c) for c in b.introduced]))
    b.add(ending(rng, b.setting))
    return b.text()


SPLIT_SEEDS = {"train": 0, "validation": 10_000_000, "test": 20_000_000}


def split(name: str, n: int) -> list[str]:
    """The first n stories of a split; splits use disjoint seed ranges, so they never share a story."""
    if name not in SPLIT_SEEDS:
        raise ValueError(f"split must be one of {tuple(SPLIT_SEEDS)}, got {name!r}")
    base = SPLIT_SEEDS[name]
    return [story(base + i) for i in range(n)]
