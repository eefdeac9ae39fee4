"""The Python API: caption images with a checkpoint.

    >>> from captioner import Captioner
    >>> captioner = Captioner.from_checkpoint()          # the bundled default model
    >>> captioner.caption(["photo.jpg"])[0].text
    >>> captioner.caption("photo.jpg", guide="none", include=["dog|puppy"])
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
from .decoding import DecodingSettings, decode
from .decoding.constraints import MAX_CONSTRAINTS, Constraint, parse_alternatives
from .decoding.lexicon import Lexicon
from .errors import ArgumentError
from .guidance import Forced, ImageNetGuide, choose_proxies
from .guidance.imagenet import MAX_FORCED
from .models.captioner import CaptionModel
from .runtime import resolve_device, tune_allocator

DEFAULT_CHECKPOINT_NAME = "default.pt"


def default_checkpoint_path() -> Path:
    """Where the bundled default checkpoint lives (inside the installed package)."""
    return Path(str(resources.files("captioner").joinpath("checkpoints", DEFAULT_CHECKPOINT_NAME)))


@dataclass(frozen=True)
class Caption:
    text: str
    log_prob: float
    score: float
    truncated: bool = False
    unmet: int = 0  # forced constraints this caption does not meet (none could be met within max_length)
    tokens: tuple[int, ...] = ()  # its word ids in the captioner's lexicon (:meth:`Captioner.lexicon`)


@dataclass
class CaptionResult:
    """The captions of one image, best first, or the error that stopped it. ``forced``: the
    words its captions had to contain, where they came from and how sure the classifier was."""

    source: str
    captions: list[Caption] = field(default_factory=list)
    error: str | None = None
    forced: list[Forced] = field(default_factory=list)

    @property
    def text(self) -> str | None:
        return self.captions[0].text if self.captions else None


def default_reader_processes(images: int, batch_size: int, cores: int | None = None) -> int:
    """Image-reading processes for captioning ``images`` files: none for a few batches or on
    two cores or fewer (there a reader takes CPU from torch's threads: 256 photos captioned at
    about 50 images/s without one and 42 with one on 2 cores), else half the cores (8 of 16
    was the fastest of 4, 8 and 14 on a 16-core GPU machine), at most one per batch."""
    if cores is None:  # the cores this process may run on (a container or taskset may allow fewer)
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    if images <= 2 * batch_size or cores <= 2:
        return 0
    return min(cores // 2, -(-images // batch_size))


class Captioner:
    """A trained captioning model with its vocabulary and default decoding settings."""

    def __init__(self, model: CaptionModel, vocab: Vocabulary, device: str | torch.device | None = None,
                 decoding: DecodingSettings | dict | None = None, metadata: dict | None = None):
        if model.decoder.config.vocab_size != len(vocab):
            raise ValueError(f"model predicts {model.decoder.config.vocab_size} words, vocabulary has {len(vocab)}")
        self.device = resolve_device(device)
        if self.device.type == "cpu":
            tune_allocator()  # about 2x the encoder's CPU throughput (captioner.runtime)
        self.model = model.to(self.device).eval()
        self.vocab = vocab
        self.decoding = decoding if isinstance(decoding, DecodingSettings) else DecodingSettings.from_dict(decoding)
        self.metadata = metadata or {}
        self._guide: ImageNetGuide | None = None
        self._proxies: dict[str, int | None] = {}

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
        checkpoint = load_checkpoint(path)
        model = CaptionModel.from_checkpoint(checkpoint)
        try:
            vocab = Vocabulary.from_dict(checkpoint.vocab)
            decoding = DecodingSettings.from_dict(checkpoint.decoding)
        except (ValueError, KeyError, TypeError) as error:
            raise checkpoint.error(f"damaged checkpoint: {error}") from None
        return cls(model, vocab, device, decoding, checkpoint.training)

    @property
    def preprocessing(self):
        return self.model.encoder.preprocessing

    def settings(self, **options) -> DecodingSettings:
        """The default decoding settings with ``options`` applied (None: keep the default)."""
        return self.decoding.with_options(**options)

    # -- features -> text ------------------------------------------------------------
    def forced_words(self, features: torch.Tensor, settings: DecodingSettings,
                     include: Sequence[str] = ()) -> list[list[Forced]]:
        """What each image's captions must contain: the user's ``include`` constraints
        (``"cat|kitten"``), then what the guide chooses."""
        given = _included(include, settings)
        if settings.method == "sample":
            return [[] for _ in range(len(features))]  # sampling is never guided
        per_image = [list(given) for _ in range(len(features))]
        if settings.guide == "imagenet":
            for forced, chosen in zip(per_image, self.imagenet_guide().choose(features, settings.guide_threshold)):
                words = {w for f in forced for w in f.words}
                forced.extend(c for c in chosen if not words & set(c.words))
        return per_image

    def imagenet_guide(self) -> ImageNetGuide:
        """The guide of ``guide="imagenet"`` (a one-line error when the encoder has no ImageNet head)."""
        if self._guide is None:
            self._guide = ImageNetGuide(self.model.encoder)
        return self._guide

    def lexicon(self, words: Sequence[str] = ()) -> Lexicon:
        """The vocabulary plus every word outside it that a constraint has named so far (with
        ``words`` added), each with its proxy (:mod:`captioner.guidance.proxies`). Words keep
        their ids for the life of the captioner, so token ids from different calls compare."""
        new = [w for w in dict.fromkeys(words) if w not in self._proxies]
        if new:
            found = choose_proxies(new, self.vocab, self.model.encoder)
            self._proxies.update({w: found.get(w) for w in new})
        return Lexicon(self.vocab, {w: p for w, p in self._proxies.items() if p is not None})

    def _check(self, settings: DecodingSettings, include: Sequence[str]) -> None:
        """Refuse bad guidance settings before any image is read."""
        given = _included(include, settings)
        room = MAX_CONSTRAINTS - (MAX_FORCED if settings.guide == "imagenet" else 0)
        if len(given) > room:
            raise ArgumentError(f"{len(given)} --include constraints; at most {room} fit beside the guide's "
                                f"(a search meets at most {MAX_CONSTRAINTS} constraints together)")
        if settings.guide == "imagenet" and settings.method != "sample":
            self.imagenet_guide()

    def decode(self, features: torch.Tensor, settings: DecodingSettings | None = None,
               forced: Sequence[Sequence[Forced]] | None = None, generator: torch.Generator | None = None,
               **options) -> list[list[Caption]]:
        """Captions for a batch of encoder features (B, D): ``settings`` (default: this
        model's, with ``options`` applied), meeting the ``forced`` words of each image."""
        settings = (settings or self.decoding).with_options(**options)
        features = features.to(self.device)
        constraints = None
        if forced is not None and any(forced):
            lexicon = self.lexicon([w for image in forced for f in image for w in f.words])
            constraints = [[Constraint(tuple(lexicon.phrase_ids(w) for w in f.words), "|".join(f.words))
                            for f in image] for image in forced]
            decoder = lexicon.wrap(self.model.decoder)
        else:  # nothing forced: the plain vocabulary, so added words cannot appear
            lexicon, decoder = Lexicon(self.vocab), self.model.decoder
        hyps = decode(decoder, features, lexicon, settings, constraints, generator)
        return [[Caption(lexicon.to_text(h.tokens), h.log_prob, h.score, h.truncated, h.unmet, h.tokens)
                 for h in image] for image in hyps]

    @torch.no_grad()
    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        """Feature vectors of preprocessed pixels (B, 3, S, S) in [0, 1]."""
        return self.model.encoder(pixels.to(self.device, non_blocking=True))

    def _caption_features(self, features: torch.Tensor, settings: DecodingSettings, include: Sequence[str],
                          generator) -> list[tuple[list[Caption], list[Forced]]]:
        forced = self.forced_words(features, settings, include)
        return list(zip(self.decode(features, settings, forced, generator), forced))

    # -- images -> text ----------------------------------------------------------------
    def caption(self, images, batch_size: int = 16, include: Sequence[str] = (),
                generator: torch.Generator | None = None, **options) -> list[CaptionResult]:
        """Caption paths, PIL images or image tensors (one, or a list).

        Tensors are (3, H, W) or (B, 3, H, W), uint8 or float in [0, 1]. ``options`` are
        decoding settings (``method``, ``beam_size``, ``guide``, ...; see
        :class:`captioner.decoding.DecodingSettings`); ``include`` lists words every caption
        must contain (``"dog|puppy"``). Unreadable files raise
        :class:`captioner.data.images.ImageLoadError`; use :meth:`caption_files` to
        collect such errors instead.
        """
        if isinstance(images, (str, os.PathLike, Image.Image)) or (
            isinstance(images, torch.Tensor) and images.ndim == 3
        ):
            images = [images]
        if isinstance(images, torch.Tensor):
            images = list(images)
        images = list(images)
        if all(isinstance(x, (str, os.PathLike)) for x in images):
            results = list(self.caption_files([str(x) for x in images], batch_size=batch_size, include=include,
                                              generator=generator, **options))
            for result in results:
                if result.error:
                    raise ImageLoadError(result.source, result.error.split(": ", 1)[-1])
            return results
        settings = self.settings(**options)
        self._check(settings, include)
        results = []
        for start in range(0, len(images), batch_size):
            chunk = images[start:start + batch_size]
            pixels = torch.stack([self._pixels(x) for x in chunk])
            done = self._caption_features(self.encode(pixels), settings, include, generator)
            for offset, (captions, forced) in enumerate(done):
                results.append(CaptionResult(_describe(chunk[offset], start + offset), captions, forced=forced))
        return results

    def _pixels(self, image) -> torch.Tensor:
        if isinstance(image, (str, os.PathLike)):
            raise TypeError("mix of paths and in-memory images; caption them in separate calls")
        if isinstance(image, Image.Image):
            image = to_rgb(image)
        return preprocess(image, self.preprocessing)

    def caption_files(self, paths: Sequence[str], batch_size: int = 16, num_workers: int | None = None,
                      max_pixels: int = DEFAULT_MAX_PIXELS, include: Sequence[str] = (),
                      generator: torch.Generator | None = None, **options) -> Iterator[CaptionResult]:
        """Caption image files as a stream, in order; unreadable files yield a result with ``error`` set.
        ``num_workers``: image-reading processes (default: :func:`default_reader_processes`)."""
        settings = self.settings(**options)
        self._check(settings, include)
        if num_workers is None:
            num_workers = default_reader_processes(len(paths), batch_size)
        for batch in image_batches(paths, self.preprocessing, batch_size, num_workers, max_pixels, self.device):
            results = {i: CaptionResult(paths[i], error=message) for i, message in batch.errors}
            if batch.pixels is not None:
                done = self._caption_features(self.encode(batch.pixels), settings, include, generator)
                results.update({i: CaptionResult(paths[i], captions, forced=forced)
                                for i, (captions, forced) in zip(batch.indices, done)})
            for i in sorted(results):
                yield results[i]


def _included(include: Sequence[str], settings: DecodingSettings) -> list[Forced]:
    """The user's ``include`` constraints, checked (they need greedy or beam decoding)."""
    given = [Forced(tuple(parse_alternatives(text, "--include")), "include") for text in include]
    if given and settings.method == "sample":
        raise ArgumentError("--include needs greedy or beam decoding, not sampling")
    return given


def _describe(image, index: int) -> str:
    filename = getattr(image, "filename", "") if isinstance(image, Image.Image) else ""
    return filename or f"<image {index}>"
