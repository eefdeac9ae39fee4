"""Attacking the captioner: change its caption, or make it write a chosen one.

:class:`CaptionVictim` turns a :class:`captioner.api.Captioner` into a victim for the
attacks of this package. Its labels are captions as token ids, and its loss is the
teacher-forced negative log-likelihood of a caption given the image:

* untargeted (``FGSM(victim, eps).run(pixels)``): raise the loss of the clean caption
  (the model's own, decoded from the clean image), so the caption changes;
* targeted (``BIM(victim, eps, steps=...).run(pixels, target="a dog on the grass")``):
  lower the loss of the chosen caption until decoding returns it. This is the
  Show-and-Fool idea (Chen et al., ACL 2018) with FGSM-family sign steps in place of
  their Adam-optimised C&W loss.

The attacked function is ``pixels -> preprocess -> encoder -> features -> decoder``,
so, as for classifiers, the perturbation lives in the user's full-size pixels.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..data.preprocess import preprocess
from ..data.vocab import tokenize
from ..decoding.settings import require_method
from ..errors import ArgumentError
from .victims import broadcast_labels


class CaptionVictim:
    """A captioner as an attack victim. Captions are judged as ``captioner caption`` would
    write them: with the captioner's decoding settings (``method``, ``beam_size`` and
    ``guide`` override them) through :meth:`captioner.api.Captioner.decode`, guidance
    included, so an attack reports the captions a user would get."""

    kind = "captioner"

    def __init__(self, captioner, method: str | None = None, beam_size: int | None = None,
                 guide: str | None = None):
        self.settings = captioner.settings(method=method, beam_size=beam_size, guide=guide, num_captions=1)
        require_method(self.settings.method, "judging captions in an attack", deterministic=True)
        self.captioner = captioner
        self.module = captioner.model
        self.vocab = captioner.vocab
        self.method = self.settings.method
        self.beam_size = self.settings.beam_size

    @property
    def resize_size(self) -> int:
        """The size the encoder's preprocessing resizes images to (see :func:`load_image`)."""
        return self.captioner.preprocessing.resize_size

    def features(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.module.encoder(preprocess(pixels, self.captioner.preprocessing))

    def loss(self, pixels: torch.Tensor, captions: torch.Tensor) -> torch.Tensor:
        """-log p(caption | image) per image, teacher-forced; ``captions`` (B, T) are
        ``<start> w1 .. wn <end>`` padded with ``<pad>`` (words the decoder never saw, which
        guidance may put in a caption, are read as their proxies)."""
        pad = self.vocab.pad_id
        captions = self.captioner.lexicon().fed_ids(captions)
        lengths = (captions != pad).sum(dim=1)
        logits = self.module.decoder(self.features(pixels), captions, lengths)
        nll = F.cross_entropy(logits.transpose(1, 2), captions[:, 1:], ignore_index=pad, reduction="none")
        return nll.sum(dim=1)

    def predict(self, pixels: torch.Tensor) -> torch.Tensor:
        """The decoded captions as padded token ids, like the labels."""
        with torch.no_grad():
            features = self.features(pixels)
        results = self.captioner.decode(features, self.settings)
        vocab = self.vocab
        return self._pad([[vocab.start_id, *r.captions[0].tokens, vocab.end_id] for r in results], pixels.device)

    def matches(self, predictions: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        width, pad = max(predictions.shape[1], labels.shape[1]), self.vocab.pad_id
        predictions = F.pad(predictions, (0, width - predictions.shape[1]), value=pad)
        labels = F.pad(labels.to(predictions.device), (0, width - labels.shape[1]), value=pad)
        return (predictions == labels).all(dim=1)

    def describe(self, labels: torch.Tensor) -> list[str]:
        lexicon = self.captioner.lexicon()
        return [lexicon.to_text(row.tolist()) for row in labels]

    def labels_from(self, value, batch: int) -> torch.Tensor:
        """Token ids from a caption or a list of captions (one caption applies to the whole batch)."""
        if isinstance(value, torch.Tensor):
            return broadcast_labels(value if value.ndim == 2 else value[None], batch)
        captions = [value] if isinstance(value, str) else list(value)
        rows = []
        for caption in captions:
            words = tokenize(caption)
            if not words:
                raise ArgumentError("the target caption is empty")
            unknown = [w for w in words if w not in self.vocab]
            if unknown:
                raise ArgumentError(f"caption {caption!r}: {', '.join(repr(w) for w in unknown)} not in the model's "
                                 f"vocabulary of {len(self.vocab)} words, so the model cannot write it")
            rows.append(self.vocab.encode(words))
        return broadcast_labels(self._pad(rows, torch.device("cpu")), batch)

    def _pad(self, rows: list[list[int]], device: torch.device) -> torch.Tensor:
        width = max(len(r) for r in rows)
        padded = [r + [self.vocab.pad_id] * (width - len(r)) for r in rows]
        return torch.tensor(padded, dtype=torch.long, device=device)
