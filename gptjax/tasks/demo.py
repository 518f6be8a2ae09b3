"""The demo tasks: a small world of invented words with hidden properties, made from a seed.

Nothing is read from disk.  A *world* is a set of invented creatures ("zorak", "vepax", ...),
each with hidden properties.  Every example mentions one creature in a random everyday
context sentence and asks about it:

* ``demo`` (classification): ``"... Question: Is a zorak dangerous?\\nAnswer:"`` -> `` yes``
  or `` no``.  Each creature has a hidden yes/no value per property, half of the creatures
  yes for each property.
* ``demo_gen`` (generation): ``"... Question: Where does the zorak live, and what does it
  eat?\\nAnswer:"`` -> `` It lives in the cave and eats honey.``  Each creature has a
  hidden home and a hidden food.

The only way to answer is to have seen training examples about the same creature, so which
training examples sit in a batch decides which test examples improve.  The ground truth is
exposed as each record's ``group`` (creature, plus the property asked about for ``demo``):
``Pools.relatedness[i, n] = 1`` where training example i and test example n share it.
All words are common English words, one Pythia token each with a leading space, except
the invented names (two or three tokens each).
"""

from __future__ import annotations

import dataclasses
import zlib
from collections.abc import Sequence

import numpy as np

from gptjax.tasks.base import Record, Task

_ONSETS = ("b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z")
_VOWELS = ("a", "e", "i", "o", "u")
_CODAS = ("k", "x", "z")  # rare word endings in English: the names stay invented

PROPERTIES = ("dangerous", "friendly", "heavy", "noisy", "rare", "fast")
PLACES = ("forest", "river", "desert", "cave", "lake", "mountain", "city", "sea")
FOODS = ("fish", "seeds", "grass", "bugs", "fruit", "meat", "leaves", "honey")

CONTEXTS = (
    "I saw a {word} {when}.",
    "A {word} walked past our house {when}.",
    "My uncle told me about a {word} {when}.",
    "We found a {word} near the old bridge {when}.",
    "The children drew a {word} at school {when}.",
    "A {word} was sleeping under the table {when}.",
    "Someone left a {word} by the road {when}.",
    "There was a {word} in the garden {when}.",
    "I read a story about a {word} {when}.",
    "A {word} appeared in my dream {when}.",
    "My sister took a photo of a {word} {when}.",
    "The teacher showed us a {word} {when}.",
)
WHEN = (
    "today",
    "yesterday",
    "last week",
    "this morning",
    "at noon",
    "in the evening",
    "last summer",
    "on Monday",
    "after lunch",
    "during the storm",
)


@dataclasses.dataclass(frozen=True)
class DemoWorld:
    """The hidden facts of one demo world (exposed for tests and for checking attribution)."""

    words: tuple[str, ...]
    properties: tuple[str, ...]
    answers: np.ndarray  # bool [n_words, n_properties]: is word w <property p>?
    homes: tuple[str, ...]
    foods: tuple[str, ...]


def _invent_words(rng: np.random.Generator, n: int) -> list[str]:
    words: list[str] = []
    seen: set[str] = set()
    while len(words) < n:
        w = (
            _ONSETS[rng.integers(len(_ONSETS))]
            + _VOWELS[rng.integers(len(_VOWELS))]
            + _ONSETS[rng.integers(len(_ONSETS))]
            + _VOWELS[rng.integers(len(_VOWELS))]
            + _CODAS[rng.integers(len(_CODAS))]
        )
        # no prefix of another word, so two names never tokenise to a shared full word
        if w not in seen and not any(w.startswith(o) or o.startswith(w) for o in seen):
            seen.add(w)
            words.append(w)
    return words


def make_world(seed: int, n_words: int = 8, n_properties: int = 1) -> DemoWorld:
    """A deterministic world from a seed."""
    if not 1 <= n_properties <= len(PROPERTIES):
        raise ValueError(f"n_properties must be in 1..{len(PROPERTIES)}, got {n_properties}")
    if n_words < 2:
        raise ValueError(f"n_words must be at least 2, got {n_words}")
    rng = np.random.default_rng([seed, zlib.crc32(b"demo-world")])
    words = _invent_words(rng, n_words)
    props = tuple(
        PROPERTIES[i] for i in sorted(rng.choice(len(PROPERTIES), n_properties, replace=False))
    )
    answers = np.zeros((n_words, n_properties), bool)
    for p in range(n_properties):  # exactly half of the words are "yes" for each property
        answers[rng.permutation(n_words)[: n_words // 2], p] = True
    homes = tuple(PLACES[i % len(PLACES)] for i in rng.permutation(n_words))
    foods = tuple(FOODS[i % len(FOODS)] for i in rng.permutation(n_words))
    return DemoWorld(tuple(words), props, answers, homes, foods)


class _DemoBase(Task):
    pool_split = "all"
    test_split = "all"  # one generated set: pools and test set are disjoint parts of it

    def __init__(self, n_words: int = 8, n_properties: int = 1, world_seed: int | None = None):
        self.n_words = int(n_words)
        self.n_properties = int(n_properties)
        self.world_seed = world_seed

    def world(self, seed: int = 0) -> DemoWorld:
        return make_world(
            self.world_seed if self.world_seed is not None else seed,
            self.n_words,
            self.n_properties,
        )

    def raw_text(self, record: Record) -> str:
        return f"{record.fields['context']} {record.fields['word']}"


class DemoTask(_DemoBase):
    name = "demo"
    kind = "classification"
    label_words = (" no", " yes")
    description = "demo (no files): invented words with hidden yes/no properties"
    finetune_templates = ("{context}\nQuestion: Is a {word} {property}?\nAnswer:",)
    instruction_templates = (
        "{context}\nFrom what you know, is a {word} {property}? Answer yes or no.\nAnswer:",
        "Question: is the {word} {property}?\nContext: {context}\nOPTIONS:\n{options}\nAnswer:",
        "Here is a sentence: {context}\nWould you say a {word} is {property}?\nReply:",
    )

    def load(self, split="all", *, data_root=None, source="local", seed=0) -> Sequence[Record]:
        w = self.world(seed)
        out = []
        for wi, word in enumerate(w.words):
            for pi, prop in enumerate(w.properties):
                for ci, ctx in enumerate(CONTEXTS):
                    for ti, when in enumerate(WHEN):
                        fields = {
                            "context": ctx.format(word=word, when=when),
                            "word": word,
                            "property": prop,
                        }
                        out.append(
                            Record(
                                fields,
                                int(w.answers[wi, pi]),
                                uid=f"demo:{word}:{prop}:{ci}:{ti}",
                                group=f"{word}|{prop}",
                            )
                        )
        return out


class DemoGenTask(_DemoBase):
    name = "demo_gen"
    kind = "generation"
    description = (
        "demo (no files): invented words with a hidden home and food, answered in a phrase"
    )
    finetune_templates = (
        "{context}\nQuestion: Where does the {word} live, and what does it eat?\nAnswer:",
    )
    instruction_templates = (
        "{context}\nDescribe where a {word} lives and what it eats.\nAnswer:",
        "Tell me about the {word}: its home and its food.\nContext: {context}\nAnswer:",
        "Here is a sentence: {context}\nWhat do you know about the {word}?\nReply:",
    )

    def load(self, split="all", *, data_root=None, source="local", seed=0) -> Sequence[Record]:
        w = self.world(seed)
        out = []
        for wi, word in enumerate(w.words):
            ref = f"It lives in the {w.homes[wi]} and eats {w.foods[wi]}."
            for ci, ctx in enumerate(CONTEXTS):
                for ti, when in enumerate(WHEN):
                    fields = {"context": ctx.format(word=word, when=when), "word": word}
                    out.append(
                        Record(fields, None, (ref,), uid=f"demo_gen:{word}:{ci}:{ti}", group=word)
                    )
        return out
