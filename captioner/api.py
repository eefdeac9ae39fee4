"""The Python API: caption images with a checkpoint.

    >>> from captioner import Captioner
    >>> captioner = Captioner.from_checkpoint()          # the bundled default model
    >>> captioner.caption(["photo.jpg"])[0].text
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import torch
from PIL import Image

from .checkpoint import CheckpointError, load_checkpoint
from .data.batches import image_batches
from .data.images import DEFAULT_MAX_PIXELS, ImageLoadError, to_rgb
from .data.preprocess import preprocess
from .data.vocab import Vocabulary
from .decoding import Hypothesis, beam_search, greedy, sample
from .models.captioner import CaptionModel
from .runtime import tune_allocator

DEFAULT_CHECKPOINT_NAME = "default.pt"
DECODING_DEFAULTS = {"method": "beam", "beam_size": 3, "length_penalty": 1.0, "max_length": 20}


def default_checkpoint_path() -> Path:
    """Where the bundled default checkpoint lives (inside the installed package)."""
    return Path(str(resources.files("captioner").joinpath("checkpoints", DEFAULT_CHECKPOINT_NAME)))


@dataclass(frozen=True)
class Caption:
    text: str
    log_prob: float
    score: float
    truncated: bool = False


@dataclass
class CaptionResult:
    """The captions of one image, best first, or the error that stopped it."""

    source: str
    captions: list[Caption] = field(default_factory=list)
    error: str | None = None

    @property
    def text(self) -> str | None:
        return self.captions[0].text if self.captions else None


def resolve_device(device: str | torch.device | None) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for, but PyTorch sees no CUDA GPU here; use --device cpu")
    return device


def default_reader_processes(images: int, batch_size: int) -> int:
    """Image-reading processes for captioning ``images`` files: one when there are many
    images and more than two CPU cores, else none (reading in the main process). On two
    cores a reader process takes CPU from torch's threads: 256 photos captioned at about
    50 images/s without it and 42 with it on a 2-core machine."""
    return 1 if images > 2 * batch_size and (os.cpu_count() or 1) > 2 else 0


class Captioner:
    """A trained captioning model with its vocabulary and default decoding settings."""

    def __init__(self, model: CaptionModel, vocab: Vocabulary, device: str | torch.device | None = None,
                 decoding: dict | None = None, metadata: dict | None = None):
        if model.decoder.config.vocab_size != len(vocab):
            raise ValueError(f"model predicts {model.decoder.config.vocab_size} words, vocabulary has {len(vocab)}")
        self.device = resolve_device(device)
        if self.device.type == "cpu":
            tune_allocator()  # about 2x the encoder's CPU throughput (captioner.runtime)
        self.model = model.to(self.device).eval()
        self.vocab = vocab
        self.decoding = {**DECODING_DEFAULTS, **(decoding or {})}
        self.metadata = metadata or {}

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike | None = None,
                        device: str | torch.device | None = None) -> "Captioner":
        """Load a checkpoint (the bundled default when ``path`` is None)."""
        if path is None:
            path = default_checkpoint_path()
            if not path.exists():
                raise CheckpointError(
                    path, "the bundled default checkpoint is not there (this build of captioner ships "
                    "without one); pass a checkpoint of your own with --checkpoint"
                )
        data = load_checkpoint(path)
        try:
            model = CaptionModel.from_checkpoint_data(data)
            vocab = Vocabulary.from_dict(data["vocab"])
        except (ValueError, KeyError, TypeError) as error:
            raise CheckpointError(path, f"damaged checkpoint: {error}") from None
        return cls(model, vocab, device, data.get("decoding"), data.get("training"))

    @property
    def preprocessing(self):
        return self.model.encoder.preprocessing

    # -- features -> text ------------------------------------------------------------
    def decode(self, features: torch.Tensor, method: str | None = None, beam_size: int | None = None,
               num_captions: int = 1, max_length: int | None = None, length_penalty: float | None = None,
               temperature: float = 1.0, top_k: int | None = None,
               generator: torch.Generator | None = None) -> list[list[Caption]]:
        """Captions for a batch of encoder features (B, D), ``num_captions`` per image."""
        method = method or self.decoding["method"]
        beam_size = beam_size or self.decoding["beam_size"]
        max_length = max_length or self.decoding["max_length"]
        penalty = self.decoding["length_penalty"] if length_penalty is None else length_penalty
        common = dict(start_id=self.vocab.start_id, end_id=self.vocab.end_id, max_length=max_length,
                      banned=self.vocab.never_generated)
        decoder = self.model.decoder
        features = features.to(self.device)
        if method == "greedy":
            if num_captions != 1:
                raise ValueError("greedy decoding gives one caption per image; use beam or sample for more")
            hyps = [[h] for h in greedy(decoder, features, **common)]
        elif method == "beam":
            if num_captions > beam_size:
                raise ValueError(f"--num-captions {num_captions} needs a beam size of at least {num_captions}")
            hyps = beam_search(decoder, features, beam_size=beam_size, length_penalty=penalty,
                               num_return=num_captions, **common)
        elif method == "sample":
            hyps = sample(decoder, features, temperature=temperature, top_k=top_k, num_samples=num_captions,
                          generator=generator, **common)
        else:
            raise ValueError(f"unknown decoding method {method!r}; choose greedy, beam or sample")
        return [[self._caption(h) for h in image_hyps] for image_hyps in hyps]

    def _caption(self, h: Hypothesis) -> Caption:
        return Caption(self.vocab.to_text(h.tokens), h.log_prob, h.score, h.truncated)

    @torch.no_grad()
    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        """Feature vectors of preprocessed pixels (B, 3, S, S) in [0, 1]."""
        return self.model.encoder(pixels.to(self.device))

    # -- images -> text ----------------------------------------------------------------
    def caption(self, images, batch_size: int = 16, **decode_options) -> list[CaptionResult]:
        """Caption paths, PIL images or image tensors (one, or a list).

        Tensors are (3, H, W) or (B, 3, H, W), uint8 or float in [0, 1]. Unreadable
        files raise :class:`captioner.data.images.ImageLoadError`; use
        :meth:`caption_files` to collect such errors instead.
        """
        if isinstance(images, (str, os.PathLike, Image.Image)) or (
            isinstance(images, torch.Tensor) and images.ndim == 3
        ):
            images = [images]
        if isinstance(images, torch.Tensor):
            images = list(images)
        images = list(images)
        if all(isinstance(x, (str, os.PathLike)) for x in images):
            results = list(self.caption_files([str(x) for x in images], batch_size=batch_size, **decode_options))
            for result in results:
                if result.error:
                    raise ImageLoadError(result.source, result.error.split(": ", 1)[-1])
            return results
        results = []
        for start in range(0, len(images), batch_size):
            chunk = images[start:start + batch_size]
            pixels = torch.stack([self._pixels(x) for x in chunk])
            for offset, caps in enumerate(self.decode(self.encode(pixels), **decode_options)):
                results.append(CaptionResult(_describe(chunk[offset], start + offset), caps))
        return results

    def _pixels(self, image) -> torch.Tensor:
        if isinstance(image, (str, os.PathLike)):
            raise TypeError("mix of paths and in-memory images; caption them in separate calls")
        if isinstance(image, Image.Image):
            image = to_rgb(image)
        return preprocess(image, self.preprocessing)

    def caption_files(self, paths: Sequence[str], batch_size: int = 16, num_workers: int = 0,
                      max_pixels: int = DEFAULT_MAX_PIXELS, **decode_options) -> Iterator[CaptionResult]:
        """Caption image files as a stream, in order; unreadable files yield a result with ``error`` set."""
        for batch in image_batches(paths, self.preprocessing, batch_size, num_workers, max_pixels):
            results = {i: CaptionResult(paths[i], error=message) for i, message in batch.errors}
            if batch.pixels is not None:
                captions = self.decode(self.encode(batch.pixels), **decode_options)
                results.update({i: CaptionResult(paths[i], caps) for i, caps in zip(batch.indices, captions)})
            for i in sorted(results):
                yield results[i]


def _describe(image, index: int) -> str:
    filename = getattr(image, "filename", "") if isinstance(image, Image.Image) else ""
    return filename or f"<image {index}>"
