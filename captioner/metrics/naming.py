"""Object naming: does a caption name the labelled main object of a photo?

The measure is the share of labelled photos whose caption names the photo's object. A photo
is labelled with one WordNet noun synset (``cat.n.01``) and the list of phrases that count as
naming it, computed once at build time by :func:`accepted_names`:

1. the label's own lemmas (its synonyms): ``cat``, ``true cat``;
2. the lemmas of every hyponym, at any depth (more specific names): ``tabby``, ``house cat``,
   ``golden retriever`` for a dog; for ``person.n.01`` this brings ``man``, ``woman``,
   ``child``, ``boy``, ``girl``, ``astronaut``... WordNet also files thousands of figurative
   uses of everyday nouns as kinds of people: ``dog`` (a man), ``suit`` (a businessman),
   ``image`` (a look-alike), ``star``, ``bear``. For the labels in :data:`FIGURATIVE_KINDS`
   a hyponym's word therefore counts only when its most common sense (WordNet's tagged sense
   counts, :meth:`Hierarchy.sense_counts`, ties in WordNet's own order) is one of those kinds:
   "a man" names a person, "a dog" and "a suit" do not. Other labels keep every hyponym's
   word, rarer senses included ("an oak" names a tree though ``oak`` is also a wood);
3. the lemmas of close parents: hypernyms (and instance hypernyms) at distance 1 or 2, except
   the generic ones in :data:`GENERIC` (``animal``, ``object``, ``device``, ``food``...). A
   generic parent also ends the climb: its own parents are not looked at. ``feline`` and
   ``carnivore`` name a cat; ``mammal`` (distance 3) and ``animal`` do not;
4. :data:`EXTRA_NAMES`: the few everyday words WordNet files elsewhere (``people`` is its
   own synset, not a plural of ``person``; ``kitten`` is a young mammal, not a cat).

Each phrase is lower-cased with underscores as spaces, and its plural is added by
:func:`plurals`. :func:`names_object` then looks for any accepted phrase as a run of whole
tokens in the caption, so ``cat`` never matches ``catalog``.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from captioner.data.vocab import tokenize

from ..errors import ArgumentError

#: Parents too general to count as naming anything: a caption saying "an object" or "an
#: animal" names no particular object.
GENERIC = frozenset({
    "entity.n.01", "physical_entity.n.01", "abstraction.n.06", "object.n.01", "whole.n.02",
    "thing.n.12", "matter.n.03", "substance.n.01", "substance.n.07", "solid.n.01",
    "living_thing.n.01", "organism.n.01", "causal_agent.n.01", "animal.n.01", "chordate.n.01",
    "vertebrate.n.01", "artifact.n.01", "instrumentality.n.03", "device.n.01",
    "container.n.01", "structure.n.01", "equipment.n.01", "implement.n.01", "commodity.n.01",
    "covering.n.02", "food.n.01", "food.n.02", "nutriment.n.01", "foodstuff.n.02",
    "reproductive_structure.n.01", "plant_organ.n.01", "plant_part.n.01", "natural_object.n.01",
    "vascular_plant.n.01", "product.n.02", "person.n.01",
})

#: Everyday names that are not lemmas of the label's hyponyms or close parents: WordNet files
#: ``people`` as its own synset and ``kitten`` under ``young_mammal``, not under ``cat``.
EXTRA_NAMES: Mapping[str, tuple[str, ...]] = {
    "person.n.01": ("people", "human", "humans"),
    "cat.n.01": ("kitten", "kittens"),
}

#: Labels whose hyponyms' words need to be used in their most common sense to name the label
#: (see the module docstring): WordNet files many figurative senses of other nouns under them.
FIGURATIVE_KINDS = frozenset({"person.n.01"})

#: How many hypernym steps up a parent may be and still name the object.
PARENT_DISTANCE = 2


class Hierarchy(Protocol):
    """The slice of a noun hierarchy that :func:`accepted_names` reads (synsets by name)."""

    def lemmas(self, synset: str) -> Sequence[str]:
        """Lemma names, underscores for spaces (``"house_cat"``)."""

    def hyponyms(self, synset: str) -> Sequence[str]:
        """Direct hyponyms (more specific synsets)."""

    def hypernyms(self, synset: str) -> Sequence[str]:
        """Direct hypernyms, instance hypernyms included."""

    def irregular_plurals(self, lemma: str) -> Sequence[str]:
        """Plurals the regular rules of :func:`plurals` get wrong (``mouse`` -> ``mice``)."""

    def sense_counts(self, lemma: str) -> Mapping[str, int]:
        """Every noun synset with ``lemma`` among its lemmas, in the hierarchy's order of
        senses, and how often that sense of the word was tagged in a corpus (0 when never)."""


def plurals(noun: str, irregular: Sequence[str] = ()) -> list[str]:
    """The plural forms of a (possibly multi-word) noun phrase; the last word is inflected.

    Irregular plurals, when given, are added to the regular one (``brother`` has both
    ``brothers`` and ``brethren``; a wrong regular form such as ``mouses`` does no harm, as
    no caption says it). The rules are the inverse of WordNet's own morphy suffix rules:
    ``-s -x -z -ch -sh`` add ``es`` (``box`` -> ``boxes``), consonant + ``y`` becomes ``ies``
    (``puppy`` -> ``puppies``), ``-man`` becomes ``-men`` (``fireman`` -> ``firemen``;
    not ``human``, ``german``, ``shaman``), anything else adds ``s``.
    """
    regular = _regular_plural(noun)
    return [regular, *[p for p in irregular if p != regular]]


def _regular_plural(noun: str) -> str:
    head, _, last = noun.rpartition(" ")
    prefix = f"{head} " if head else ""
    if last.endswith(("s", "x", "z", "ch", "sh")):
        return f"{prefix}{last}es"
    if len(last) > 1 and last.endswith("y") and last[-2] not in "aeiou":
        return f"{prefix}{last[:-1]}ies"
    if last.endswith("man") and last not in ("human", "german", "shaman"):
        return f"{prefix}{last[:-3]}men"
    return f"{prefix}{last}s"


def _phrases(lemma: str, hierarchy: Hierarchy) -> list[str]:
    phrase = lemma.replace("_", " ").lower()
    return [phrase, *plurals(phrase, hierarchy.irregular_plurals(lemma))]


def _descendants(synset: str, hierarchy: Hierarchy) -> list[str]:
    seen, stack, order = {synset}, [synset], []
    while stack:
        for child in hierarchy.hyponyms(stack.pop()):
            if child not in seen:
                seen.add(child)
                order.append(child)
                stack.append(child)
    return order


def close_parents(synset: str, hierarchy: Hierarchy, generic: Iterable[str] = GENERIC) -> list[str]:
    """Non-generic hypernyms at most :data:`PARENT_DISTANCE` steps up, not climbing past a
    generic one."""
    generic = frozenset(generic)
    found, level = [], [synset]
    for _ in range(PARENT_DISTANCE):
        level = [p for s in level for p in hierarchy.hypernyms(s) if p not in generic]
        found += level
    return [p for p in dict.fromkeys(found) if p != synset]


def _usual_sense_is_a(lemma: str, label: str, hierarchy: Hierarchy) -> bool:
    """Whether ``lemma``'s most often tagged noun sense (ties: the one listed first) is a kind
    of ``label``; a word the hierarchy has no senses for is given the benefit of the doubt."""
    senses = list(hierarchy.sense_counts(lemma).items())
    if not senses:
        return True
    usual = max(enumerate(senses), key=lambda item: (item[1][1], -item[0]))[1][0]
    return _is_kind_of(usual, label, hierarchy)


def _is_kind_of(synset: str, label: str, hierarchy: Hierarchy) -> bool:
    """Whether ``label`` is ``synset`` or one of its hypernyms (instance hypernyms included)."""
    seen, stack = {synset}, [synset]
    while stack:
        current = stack.pop()
        if current == label:
            return True
        for parent in hierarchy.hypernyms(current):
            if parent not in seen:
                seen.add(parent)
                stack.append(parent)
    return False


def accepted_names(synset: str, hierarchy: Hierarchy, generic: Iterable[str] = GENERIC) -> list[str]:
    """The phrases that name ``synset`` in a caption (the rule is in the module docstring),
    sorted and without duplicates."""
    descendants = _descendants(synset, hierarchy)
    own = {lemma for s in (synset, *close_parents(synset, hierarchy, generic)) for lemma in hierarchy.lemmas(s)}
    kinds = {lemma for s in descendants for lemma in hierarchy.lemmas(s)} - own
    if synset in FIGURATIVE_KINDS:
        kinds = {lemma for lemma in kinds if _usual_sense_is_a(lemma, synset, hierarchy)}
    lemmas = own | kinds
    names = {p for lemma in lemmas for p in _phrases(lemma, hierarchy)}
    names.update(EXTRA_NAMES.get(synset, ()))
    return sorted(names)


class WordNetHierarchy:
    """:class:`Hierarchy` over ``nltk.corpus.wordnet`` (needs the WordNet data installed)."""

    def __init__(self, wordnet=None):
        if wordnet is None:
            from nltk.corpus import wordnet
        self.wn = wordnet
        self._irregular: dict[str, list[str]] | None = None

    def lemmas(self, synset: str) -> list[str]:
        return self.wn.synset(synset).lemma_names()

    def hyponyms(self, synset: str) -> list[str]:
        return [s.name() for s in self.wn.synset(synset).hyponyms()]

    def hypernyms(self, synset: str) -> list[str]:
        s = self.wn.synset(synset)
        return [h.name() for h in s.hypernyms() + s.instance_hypernyms()]

    def irregular_plurals(self, lemma: str) -> list[str]:
        if self._irregular is None:
            self._irregular = {}
            # each line of noun.exc is an irregular form, then its base forms: "mice mouse"
            for line in self.wn.open("noun.exc"):
                plural, *bases = line.split()
                for base in bases:
                    self._irregular.setdefault(base, []).append(plural.replace("_", " "))
        return self._irregular.get(lemma.lower(), [])

    def sense_counts(self, lemma: str) -> dict[str, int]:
        counts: dict[str, int] = {}
        for item in self.wn.lemmas(lemma, pos="n"):  # the same word may be filed twice ("Fox", "fox")
            name = item.synset().name()
            counts[name] = max(counts.get(name, 0), item.count())
        return counts


def names_object(caption: str, accepted: Sequence[str]) -> bool:
    """True when some accepted phrase occurs in the caption as consecutive whole tokens."""
    tokens = tokenize(caption)
    runs = {tuple(tokens[i:j]) for i in range(len(tokens)) for j in range(i + 1, len(tokens) + 1)}
    return any(_phrase_tokens(phrase) in runs for phrase in accepted)


@functools.lru_cache(maxsize=None)
def _phrase_tokens(phrase: str) -> tuple[str, ...]:
    # a person label accepts some 19,000 phrases: tokenize each once, not once per caption (unbounded:
    # a bounded LRU cycled through lists larger than itself would miss every time; WordNet is finite)
    return tuple(tokenize(phrase))


@dataclass(frozen=True)
class LabelledPhoto:
    """One photo of a labelled set: its file, its object's synset and the accepted names."""

    image: Path
    label: str
    accept: tuple[str, ...]


def read_labels(path: str | Path) -> list[LabelledPhoto]:
    """Read ``labels.jsonl``; image paths are resolved against the file's folder.

    Raises ValueError naming the file and line for bad JSON, a missing or empty field.
    """
    path = Path(path)
    photos = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            where = f"{path}:{number}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                raise ArgumentError(f"{where}: not valid JSON ({error.msg})") from None
            if not isinstance(row, dict):
                raise ArgumentError(f"{where}: expected a JSON object, got {type(row).__name__}")
            missing = [key for key in ("image", "label", "accept") if key not in row]
            if missing:
                raise ArgumentError(f"{where}: missing {', '.join(missing)}")
            accept = row["accept"]
            if not isinstance(accept, list) or not all(isinstance(a, str) for a in accept):
                raise ArgumentError(f"{where}: 'accept' must be a list of strings")
            if not [a for a in accept if a.strip()]:
                raise ArgumentError(f"{where}: empty 'accept' list for {row['image']}")
            if not row["image"] or not row["label"]:
                raise ArgumentError(f"{where}: empty 'image' or 'label'")
            photos.append(LabelledPhoto(path.parent / row["image"], row["label"], tuple(accept)))
    return photos


def naming_rate(captions: Mapping[str, str], photos: Sequence[LabelledPhoto]) -> dict:
    """Share (%) of ``photos`` whose caption names its object.

    ``captions`` maps ``str(photo.image)`` to the caption; every photo needs one.
    Returns ``{"naming_rate", "named", "photos", "rows"}``, one row per photo with
    ``image, label, caption, named``.
    """
    missing = [str(p.image) for p in photos if str(p.image) not in captions]
    if missing:
        raise ArgumentError(f"no caption for {len(missing)} of {len(photos)} photos, e.g. {missing[0]}")
    rows = [{"image": str(p.image), "label": p.label, "caption": captions[str(p.image)],
             "named": names_object(captions[str(p.image)], p.accept)} for p in photos]
    named = sum(row["named"] for row in rows)
    return {"naming_rate": 100.0 * named / len(rows) if rows else 0.0,
            "named": named, "photos": len(rows), "rows": rows}
