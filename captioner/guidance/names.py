"""The names people use for the 1000 ImageNet classes (``imagenet_names.json``).

The file is built by ``data_scripts/build_imagenet_names.py`` from WordNet 3.0 and the
ImageNet WordNet ids, with hand corrections, and committed, so nothing here needs WordNet.
Each class maps to an entry-level *concept* ("tabby" -> cat, "espresso" -> coffee) or, for
people and what people wear, to none (``person``). Concepts form a small tree (``parent``)
for backing off when the classifier hesitates between siblings; ``generic`` concepts
("animal", "device") are never forced into a caption.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property, lru_cache
from importlib import resources

FORMAT = "captioner-imagenet-names"


@dataclass(frozen=True)
class Concept:
    name: str
    plural: str
    synonyms: tuple[str, ...]
    parent: str | None
    generic: bool

    @property
    def words(self) -> tuple[str, ...]:
        """What guidance forces (any one of them): the name and its synonyms. Not the plural:
        the decoder, trained on one object per picture, writes "a" before any noun."""
        return tuple(dict.fromkeys((self.name, *self.synonyms)))

    @property
    def forms(self) -> tuple[str, ...]:
        """Every way a text may name it: the name, its synonyms, and the plural."""
        return (*self.words, *((self.plural,) if self.plural not in self.words else ()))


@dataclass(frozen=True)
class ImageNetNames:
    concepts: dict[str, Concept]
    class_concepts: tuple[str | None, ...]  # per class index: its concept, None for people and the unnamed
    person_classes: tuple[int, ...]
    labels: tuple[str, ...]

    def ancestors(self, name: str) -> list[str]:
        """``name`` and the concepts above it, nearest first."""
        chain = []
        while name is not None and name not in chain:
            chain.append(name)
            name = self.concepts[name].parent
        return chain

    def concept_of_word(self, word: str) -> Concept | None:
        """The concept a word (name, synonym or plural) names, if any."""
        return self._word_index.get(word.lower())

    @cached_property
    def _word_index(self) -> dict[str, Concept]:
        index: dict[str, Concept] = {}
        for concept in self.concepts.values():
            for form in concept.forms:
                index.setdefault(form, concept)
        return index


@lru_cache(maxsize=1)
def load_imagenet_names() -> ImageNetNames:
    data = json.loads(resources.files("captioner.guidance").joinpath("imagenet_names.json").read_text("utf-8"))
    if data.get("format") != FORMAT or len(data.get("classes", ())) != 1000:
        raise RuntimeError("captioner/guidance/imagenet_names.json is damaged; reinstall captioner")
    concepts = {name: Concept(name, c["plural"], tuple(c["synonyms"]), c["parent"], bool(c["generic"]))
                for name, c in data["concepts"].items()}
    classes = sorted(data["classes"], key=lambda c: c["index"])
    return ImageNetNames(
        concepts=concepts,
        class_concepts=tuple(c["concept"] for c in classes),
        person_classes=tuple(c["index"] for c in classes if c["person"]),
        labels=tuple(c["label"] for c in classes),
    )
