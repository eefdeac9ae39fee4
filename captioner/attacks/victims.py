"""What an attack attacks: a *victim* wraps a model with labels, a loss and predictions.

A victim has ``kind`` (``"classifier"`` or ``"captioner"``), ``module`` (the
``nn.Module``), ``loss(pixels, labels)`` (one value per image), ``predict(pixels)``,
``matches(predictions, labels)``, ``labels_from(value, batch)`` and ``describe(labels)``.
:class:`ClassifierVictim` is the one for image classifiers (any ``nn.Module`` passed to
an attack is wrapped in it); :class:`captioner.attacks.captioner.CaptionVictim` attacks
a captioning model.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..data.preprocess import preprocess
from ..errors import ArgumentError
from ..models.labels import resolve_class


class PixelClassifier(nn.Module):
    """An encoder's ImageNet classifier on the user's full-size pixels: ``x -> preprocess -> classify``.

    The resize and centre crop of :func:`captioner.data.preprocess.preprocess` are part of
    the attacked (differentiable) function, so the perturbation lives in the input's own
    pixels and an adversarial image keeps the input's size.
    """

    def __init__(self, encoder):
        super().__init__()
        self.encoder = encoder
        self.categories = encoder.categories

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.encoder.classify(preprocess(pixels, self.encoder.preprocessing))


class ClassifierVictim:
    """A classifier (pixels in [0, 1] -> logits) as an attack victim: labels are class indices."""

    kind = "classifier"

    def __init__(self, model: nn.Module, categories: Sequence[str] | None = None):
        self.module = model
        self.categories = list(categories) if categories is not None else getattr(model, "categories", None)

    @property
    def resize_size(self) -> int | None:
        """The size the model resizes images to (an encoder's preprocessing), if known: what
        :func:`captioner.data.images.load_image` checks extreme aspect ratios against."""
        preprocessing = getattr(getattr(self.module, "encoder", None), "preprocessing", None)
        return None if preprocessing is None else preprocessing.resize_size

    def loss(self, pixels: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(self.module(pixels), labels, reduction="none")

    def probabilities(self, pixels: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.module(pixels).softmax(dim=1)

    def predict(self, pixels: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.module(pixels).argmax(dim=1)

    def matches(self, predictions: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return predictions == labels

    def describe(self, labels: torch.Tensor) -> list[str]:
        if self.categories is None:
            return [str(int(i)) for i in labels]
        return [self.categories[int(i)] for i in labels]

    def label_index(self, label: int | str) -> int:
        """A class index from an index or a class name (see :func:`captioner.models.labels.resolve_class`)."""
        return resolve_class(self.categories, label)

    def labels_from(self, value, batch: int) -> torch.Tensor:
        """Labels for a batch from an index, a name, a list of either, or a tensor (one value broadcasts)."""
        if isinstance(value, torch.Tensor):
            labels = value.reshape(-1).long()
        elif isinstance(value, (int, str)):
            labels = torch.tensor([self.label_index(value)])
        else:
            labels = torch.tensor([self.label_index(v) for v in value])
        return broadcast_labels(labels, batch)


def broadcast_labels(labels: torch.Tensor, batch: int) -> torch.Tensor:
    """One label for every image of the batch, or one label per image."""
    if len(labels) == 1:
        return labels.expand(batch, *labels.shape[1:]).clone()
    if len(labels) != batch:
        raise ArgumentError(f"got {len(labels)} labels for {batch} images")
    return labels


def as_victim(model):
    """An ``nn.Module`` becomes a :class:`ClassifierVictim`; a victim stays itself."""
    return ClassifierVictim(model) if isinstance(model, nn.Module) else model
