"""Guidance from the encoder's own ImageNet classifier: its confident classes become words
the caption must contain (novel-object captioning with constrained beam search, Anderson
et al., EMNLP 2017, with the classifier as the image tagger).

For each image, the classifier's probabilities are summed per concept of
:mod:`captioner.guidance.names` (all classes that are a cat count for "cat") and up the
concept tree (a concept's mass includes the concepts below it). Of the non-generic concepts
whose mass reaches the threshold, those with no such concept below them are the candidates
(so the caption is never more specific than the classifier is sure of: when its top
classes disagree below a shared parent, the parent, "bird" or "dog", is what reaches the
threshold), and the surest candidate is forced; a second one is forced too when it also
reaches the threshold. Depth decides only between a concept and its own ancestors: across
unrelated branches the larger probability wins.
ImageNet has no class for people: when the classes that show people or what they wear
carry at least :data:`PERSON_SHARE` of the probability, nothing is forced and the decoder
writes its own caption.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..errors import UserError
from .names import ImageNetNames, load_imagenet_names

PERSON_SHARE = 0.25
MAX_FORCED = 2
TOP_CLASSES = 3  # classes recorded per forced concept


class GuidanceError(UserError, ValueError):
    """Guidance cannot run with this model or these settings."""


@dataclass(frozen=True)
class Forced:
    """One constraint of one image: any of ``words`` must appear in its caption.

    ``source``: ``"imagenet"`` (the classifier) or ``"include"`` (the user);
    ``probability``: the classifier's probability of the concept (None for the user's);
    ``classes``: the classes that made it, with their probabilities.
    """

    words: tuple[str, ...]
    source: str
    probability: float | None = None
    classes: tuple[tuple[str, float], ...] = field(default=())

    def to_dict(self, met: bool | None = None) -> dict:
        record = {"words": "|".join(self.words), "source": self.source}
        if self.probability is not None:
            record["probability"] = round(self.probability, 4)
            record["classes"] = [{"label": label, "probability": round(p, 4)} for label, p in self.classes]
        if met is not None:
            record["met"] = met
        return record


def has_imagenet_head(encoder) -> bool:
    categories = getattr(encoder, "categories", None)
    return (getattr(encoder, "head", None) is not None and categories is not None and len(categories) == 1000
            and encoder.spec.weights is not None)


class ImageNetGuide:
    """Chooses the words to force for a batch of encoder features (see the module docstring)."""

    def __init__(self, encoder, names: ImageNetNames | None = None):
        if not has_imagenet_head(encoder):
            raise GuidanceError(
                f"--guide imagenet needs an encoder with a trained ImageNet classification head; "
                f"{encoder.spec.backbone} (weights {encoder.spec.weights}) has none; use --guide none")
        self.encoder = encoder
        self.names = names or load_imagenet_names()
        self.concepts = list(self.names.concepts)
        column = {name: i for i, name in enumerate(self.concepts)}
        membership = torch.zeros(1000, len(self.concepts))
        for index, concept in enumerate(self.names.class_concepts):
            if concept is not None:
                for name in self.names.ancestors(concept):
                    membership[index, column[name]] = 1.0
        person = torch.zeros(1000)
        person[list(self.names.person_classes)] = 1.0
        self.membership = membership
        self.person = person
        # each concept's ancestors (without itself), as columns
        self.above = [{column[a] for a in self.names.ancestors(name)[1:]} for name in self.concepts]
        self.longest_words = max(len(w.split()) for c in self.concepts for w in self.names.concepts[c].words)

    @torch.no_grad()
    def probabilities(self, features: torch.Tensor) -> torch.Tensor:
        return self.encoder.head(features).float().softmax(dim=-1)

    @torch.no_grad()
    def choose(self, features: torch.Tensor, threshold: float) -> list[list[Forced]]:
        """The concepts to force for each image of ``features`` (B, D)."""
        if not 0.0 <= threshold <= 1.0:
            raise GuidanceError(f"guide threshold must be in [0, 1], got {threshold}")
        probabilities = self.probabilities(features).cpu()
        mass = probabilities @ self.membership
        person = (probabilities @ self.person).tolist()
        chosen = []
        for row, (masses, people) in enumerate(zip(mass.tolist(), person)):
            if people >= PERSON_SHARE:
                chosen.append([])
                continue
            chosen.append([self._forced(i, masses[i], probabilities[row]) for i in self._pick(masses, threshold)])
        return chosen

    def _pick(self, masses: list[float], threshold: float) -> list[int]:
        """The surest of the most specific concepts that reach ``threshold`` (at most MAX_FORCED,
        none an ancestor of another)."""
        reached = [i for i, m in enumerate(masses)
                   if m >= threshold and m > 0 and not self.names.concepts[self.concepts[i]].generic]
        covered = set().union(*(self.above[i] for i in reached))  # have a reached concept below them
        return sorted((i for i in reached if i not in covered), key=lambda i: (-masses[i], i))[:MAX_FORCED]

    def _forced(self, column: int, mass: float, probabilities: torch.Tensor) -> Forced:
        concept = self.names.concepts[self.concepts[column]]
        members = self.membership[:, column] * probabilities
        values, indices = members.topk(TOP_CLASSES)
        classes = tuple((self.names.labels[int(i)], float(v)) for v, i in zip(values, indices) if v > 0)
        return Forced(concept.words, "imagenet", mass, classes)
