"""Choosing the known word a new word is decoded as (see :mod:`captioner.decoding.lexicon`).

No word vectors install offline, but the classifier's last layer has one 1280-d row per
ImageNet class, and rows of classes that look alike point the same way. So, in order:

1. a phrase whose last word is known stands in as that word ("polar bear" -> "bear"):
   the head noun fixes how the caption goes on;
2. a word that names a concept of :mod:`captioner.guidance.names` stands in as a known word
   of that same concept ("kitty" -> "cat", "aeroplane" -> "plane"), or else of the nearest
   concept above it ("gibbon" -> "ape", or "animal"), in the plural when the word is a
   plural: never as a word of another branch, so the caption is scored as something true;
3. a concept with no known word on its way up stands in as the known concept whose
   classifier rows (their mean, normalised) are most similar to its own;
4. anything else (no classifier head, a word ImageNet has no class for) stands in as the
   most frequent known concept name of the vocabulary (its lowest id, as vocabularies are
   ordered by frequency).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from ..data.vocab import Vocabulary, tokenize
from .imagenet import has_imagenet_head
from .names import ImageNetNames, load_imagenet_names


def choose_proxies(words: Iterable[str], vocab: Vocabulary, encoder=None,
                   names: ImageNetNames | None = None) -> dict[str, int]:
    """A proxy id in ``vocab`` for each word of ``words`` that is not a single vocabulary word."""
    names = names or load_imagenet_names()
    known = [c for c in names.concepts.values() if c.name in vocab and not c.generic]
    proxies: dict[str, int] = {}
    similarity = None
    for word in dict.fromkeys(words):
        tokens = tokenize(word)
        if len(tokens) == 1 and tokens[0] in vocab:
            continue
        if len(tokens) > 1 and tokens[-1] in vocab and all(t in vocab for t in tokens):
            continue  # every word known: the phrase is decoded word by word
        if len(tokens) > 1 and tokens[-1] in vocab:
            proxies[word] = vocab.stoi[tokens[-1]]
            continue
        concept = names.concept_of_word(word)
        own = _own_word(word, concept, vocab, names) if concept is not None else None
        if own is not None:
            proxies[word] = vocab.stoi[own]
            continue
        if concept is not None and known and encoder is not None and has_imagenet_head(encoder):
            if similarity is None:
                similarity = _ConceptSimilarity(encoder, names)
            best = similarity.closest(concept.name, [c.name for c in known if c.name != concept.name])
            if best is not None:
                target = names.concepts[best]
                plural = word == concept.plural and concept.plural != concept.name and target.plural in vocab
                proxies[word] = vocab.stoi[target.plural if plural else target.name]
                continue
        fallback = min((vocab.stoi[c.name] for c in known), default=None)
        proxies[word] = fallback if fallback is not None else _first_word(vocab)
    return proxies


def _own_word(word: str, concept, vocab: Vocabulary, names: ImageNetNames) -> str | None:
    """A vocabulary word of ``word``'s own concept or, failing that, of the nearest concept above
    it: the name, then the synonyms; for a plural, the plurals first."""
    plural = word == concept.plural and concept.plural != concept.name
    chain = [names.concepts[name] for name in names.ancestors(concept.name)]
    forms = [c.plural for c in chain] if plural else []
    forms += [form for c in chain for form in c.words]
    return next((form for form in forms if form in vocab), None)


def _first_word(vocab: Vocabulary) -> int:
    banned = set(vocab.never_generated) | {vocab.end_id}
    return next(i for i in range(len(vocab)) if i not in banned)


class _ConceptSimilarity:
    """Cosine similarity of concepts by the mean of their classes' classifier rows."""

    def __init__(self, encoder, names: ImageNetNames):
        rows = torch.nn.functional.normalize(encoder.head.weight.detach().float().cpu(), dim=1)
        members: dict[str, list[int]] = {}
        for index, concept in enumerate(names.class_concepts):
            if concept is not None:
                for name in names.ancestors(concept):
                    members.setdefault(name, []).append(index)
        self.vectors = {name: torch.nn.functional.normalize(rows[idx].mean(0), dim=0)
                        for name, idx in members.items()}

    def closest(self, name: str, candidates: list[str]) -> str | None:
        if name not in self.vectors:
            return None
        options = [c for c in candidates if c in self.vectors]
        if not options:
            return None
        scores = torch.stack([self.vectors[c] for c in options]) @ self.vectors[name]
        return options[int(scores.argmax())]
