"""The Python API: caption images with a checkpoint.

    >>> from captioner import Captioner
    >>> captioner = Captioner.from_checkpoint()          # the bundled default model
    >>> captioner.caption(["photo.jpg"])[0].text
    >>> captioner.caption("photo.jpg", guide="none", include=["dog|puppy"])
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path

import torch
from PIL import Image

from .checkpoint import CheckpointError, load_checkpoint
from .data.batches import image_batches
from .data.images import DEFAULT_MAX_PIXELS, ImageLoadError, to_rgb
from .data.preprocess import preprocess
from .data.vocab import Vocabulary, tokenize
from .decoding import DecodingSettings, decode, require_method
from .decoding.settings import SAY_LESS_WORDS
from .decoding.constraints import MAX_CONSTRAINTS, MAX_LEVELS, Constraint, ConstraintAutomaton, parse_alternatives, \
    word_constraints
from .decoding.lexicon import Lexicon
from .errors import ArgumentError
from .guidance import Forced, ImageNetGuide, choose_proxies
from .guidance.imagenet import MAX_FORCED
from .models.captioner import CaptionModel
from .models.stepping import LSTMStepper
from .onnx.layout import is_onnx_export
from .runtime import resolve_device, tune_allocator

DEFAULT_CHECKPOINT_NAME = "default.pt"
RUNTIMES = ("torch", "onnx")  # what runs the networks: PyTorch, or ONNX Runtime over an export (captioner.onnx)


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

    def to_dict(self) -> dict:
        """The caption's JSON record (log-probabilities and scores to 4 decimals)."""
        return {"caption": self.text, "log_prob": round(self.log_prob, 4), "score": round(self.score, 4),
                **({"truncated": True} if self.truncated else {}), **({"unmet": self.unmet} if self.unmet else {})}


@dataclass
class CaptionResult:
    """The captions of one image, best first, or the error that stopped it. ``forced``: the
    words its captions had to contain, where they came from and how sure the classifier was.
    ``source``: the file (or a description of the in-memory image); empty for features.
    ``unsure``: the decoder was unsure of the image, so its captions say less (at most
    :data:`~captioner.decoding.settings.SAY_LESS_WORDS` words, see ``DecodingSettings.unsure_below``)."""

    source: str = ""
    captions: list[Caption] = field(default_factory=list)
    error: str | None = None
    forced: list[Forced] = field(default_factory=list)
    unsure: bool = False  # the decoder was unsure, so the caption says less (DecodingSettings.unsure_below)

    @property
    def text(self) -> str | None:
        return self.captions[0].text if self.captions else None

    @property
    def unmet(self) -> int:
        """Forced constraints the best caption does not meet (none could be met within the maximum length)."""
        return self.captions[0].unmet if self.captions else 0

    def to_dict(self) -> dict:
        """The image's JSON record, as ``captioner caption --jsonl`` writes it."""
        if self.error:
            return {"path": self.source, "error": self.error}
        record = {"path": self.source, "captions": [c.to_dict() for c in self.captions]}
        if self.forced:
            record["forced"] = [f.to_dict() for f in self.forced]
            if self.unmet:
                record["note"] = f"no caption within the maximum length meets {self.unmet} of the forced words"
        if self.unsure:
            record["unsure"] = True
        return record


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
        # The guide and the proxy table are shared by every call: a server captions from several threads.
        self._shared = threading.RLock()

    def __getstate__(self) -> dict:  # copies (copy.deepcopy, pickling) get a lock of their own
        state = self.__dict__.copy()
        state.pop("_shared", None)
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._shared = threading.RLock()

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike | None = None, device: str | torch.device | None = None,
                        runtime: str = "torch") -> "Captioner":
        """Load a checkpoint (the bundled default when ``path`` is None). ``runtime``: one of
        :data:`RUNTIMES`; ``"onnx"`` reads the folder that ``captioner checkpoint export CKPT
        --onnx DIR`` writes and runs it with ONNX Runtime (:mod:`captioner.onnx`)."""
        if runtime not in RUNTIMES:
            raise ArgumentError(f"unknown runtime {runtime!r}; use one of {', '.join(RUNTIMES)}")
        if runtime == "onnx":
            from .onnx.runtime import OnnxCaptioner

            return OnnxCaptioner.from_export(path, device)
        if path is not None and is_onnx_export(path):
            raise CheckpointError(path, "is an ONNX export, not a checkpoint file; caption it with --runtime onnx")
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
    def encoder(self):
        """The image encoder: its preprocessing, and the ImageNet head that guidance and proxies read."""
        return self.model.encoder

    @property
    def preprocessing(self):
        return self.encoder.preprocessing

    def stepper(self, features: torch.Tensor):
        """The decoder stepper (:class:`captioner.decoding.search.Stepper`) of a batch of features."""
        return LSTMStepper(self.model.decoder, features)

    def settings(self, **options) -> DecodingSettings:
        """The default decoding settings with ``options`` applied (None: keep the default)."""
        return self.decoding.with_options(**options)

    # -- features -> text ------------------------------------------------------------
    def request(self, settings: DecodingSettings | None = None, include: Iterable[str] | str = (),
                **options) -> tuple[DecodingSettings, list[Forced]]:
        """The decoding settings (``settings``, default this model's, with ``options`` applied) and
        the user's ``include`` constraints (one string such as ``"cat|kitten"``, or any iterable
        of them), checked together before any image is read."""
        settings = (settings or self.decoding).with_options(**options)
        given = [Forced(tuple(parse_alternatives(text, "--include")), "include") for text in _constraints(include)]
        if given:
            require_method(settings.method, "--include", constrained=True)
        for forced in given:
            for word in forced.words:
                special = [w for w in word.split() if w in self.vocab and self.vocab.stoi[w] in self._special]
                if special:
                    raise ArgumentError(f"--include {'|'.join(forced.words)!r}: {special[0]!r} is a special token "
                                        "of the vocabulary, not a word")
        room, levels = MAX_CONSTRAINTS, MAX_LEVELS
        if settings.guide == "imagenet":  # room for the guide's words
            room, levels = room - MAX_FORCED, levels - MAX_FORCED * self.imagenet_guide().longest_words
        if len(given) > room:
            raise ArgumentError(f"{len(given)} --include constraints; at most {room} fit beside the guide's "
                                f"(a search meets at most {MAX_CONSTRAINTS} constraints together)")
        ConstraintAutomaton(word_constraints([f.words for f in given]), max_levels=levels)  # what it would cost
        return settings, given

    @property
    def _special(self) -> set[int]:
        return {*self.vocab.never_generated, self.vocab.end_id}

    def forced_words(self, features: torch.Tensor, settings: DecodingSettings,
                     given: Sequence[Forced] = (), most: int = MAX_FORCED) -> list[list[Forced]]:
        """What each image's captions must contain: the user's constraints ``given``, then what
        the guide chooses (its ``most`` surest concepts)."""
        per_image = [list(given) for _ in range(len(features))]
        if settings.guide == "imagenet":
            for forced, chosen in zip(per_image, self.imagenet_guide().choose(features, settings.guide_threshold)):
                words = {w for f in forced for w in f.words}
                forced.extend(c for c in chosen[:most] if not words & set(c.words))
        return per_image

    def imagenet_guide(self) -> ImageNetGuide:
        """The guide of ``guide="imagenet"`` (a one-line error when the encoder has no ImageNet head)."""
        with self._shared:
            if self._guide is None:
                self._guide = ImageNetGuide(self.encoder)
            return self._guide

    def lexicon(self, words: Sequence[str] = ()) -> Lexicon:
        """The vocabulary plus every word outside it that a constraint has named so far (with
        ``words`` added), each with its proxy (:mod:`captioner.guidance.proxies`). Words keep
        their ids for the life of the captioner, so token ids from different calls compare.
        A word is kept only once its lexicon could be built. Safe to call from several threads:
        the table only grows, one call at a time."""
        with self._shared:
            new = [w for w in dict.fromkeys(words) if w not in self._proxies and w not in self.vocab]
            proxies = dict(self._proxies)
            if new:
                found = choose_proxies(new, self.vocab, self.encoder)
                proxies.update({w: found.get(w) for w in new})
            lexicon = Lexicon(self.vocab, {w: p for w, p in proxies.items() if p is not None})
            self._proxies = proxies
            return lexicon

    @torch.no_grad()
    def decode(self, features: torch.Tensor, settings: DecodingSettings | None = None,
               include: Iterable[str] | str = (), generator: torch.Generator | None = None,
               observer=None, **options) -> list[CaptionResult]:
        """Captions for a batch of encoder features (B, D), one result per image: ``settings``
        (default: this model's, with ``options`` applied), guided as they say, every caption
        containing the user's ``include`` constraints. ``observer``: see
        :func:`captioner.decoding.decode` (token ids are those of :meth:`decode_lexicon`); when the
        unsure rows are captioned again (``unsure_below``), it sees that second search too, which
        starts again at step 0 with those rows only."""
        settings, given = self.request(settings, include, **options)
        features = features.to(self.device)
        results = self._decode(features, settings, given, generator, observer)
        unsure = [i for i, result in enumerate(results) if _unsure(result, settings)]
        if unsure:  # say less: a short caption, naming the guide's one surest concept if it is likely enough
            shorter = replace(settings, guide_threshold=settings.unsure_threshold, unsure_below=None,
                              max_length=min(settings.max_length, SAY_LESS_WORDS))
            for i, result in zip(unsure, self._decode(features[unsure], shorter, given, generator, observer, most=1)):
                result.unsure = True
                results[i] = result
        return results

    def _decode(self, features: torch.Tensor, settings: DecodingSettings, given: Sequence[Forced],
                generator: torch.Generator | None, observer=None, most: int = MAX_FORCED) -> list[CaptionResult]:
        forced = self.forced_words(features, settings, given, most)
        lexicon = self.decode_lexicon(forced)
        constraints = [[_constraint(lexicon, f) for f in image] for image in forced] if any(forced) else None
        stepper = lexicon.wrap(self.stepper(features))
        hyps = decode(stepper, lexicon, settings, constraints, generator, observer=observer)
        return [CaptionResult(captions=[Caption(lexicon.to_text(h.tokens), h.log_prob, h.score, h.truncated, h.unmet,
                                                h.tokens) for h in image], forced=image_forced)
                for image, image_forced in zip(hyps, forced)]

    def decode_lexicon(self, forced: Sequence[Sequence[Forced]]) -> Lexicon:
        """The words :meth:`decode` decodes with, given what is forced per image: the plain
        vocabulary when nothing is (so added words cannot appear), else :meth:`lexicon`."""
        if not any(forced):
            return Lexicon(self.vocab)
        return self.lexicon([w for image in forced for f in image for w in f.words])

    @torch.no_grad()
    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        """Feature vectors of preprocessed pixels (B, 3, S, S) in [0, 1]."""
        return self.model.encoder(pixels.to(self.device, non_blocking=True))

    # -- images -> text ----------------------------------------------------------------
    def caption(self, images, batch_size: int = 16, include: Iterable[str] | str = (),
                generator: torch.Generator | None = None, settings: DecodingSettings | None = None,
                **options) -> list[CaptionResult]:
        """Caption paths, PIL images or image tensors (one, or a list).

        Tensors are (3, H, W) or (B, 3, H, W), uint8 or float in [0, 1]. ``options`` are
        decoding settings (``method``, ``beam_size``, ``guide``, ...; see
        :class:`captioner.decoding.DecodingSettings`) applied to ``settings`` (default: this
        model's); ``include``: words every caption must contain (``"dog|puppy"``, or a list of
        such). Unreadable files raise :class:`captioner.data.images.ImageLoadError`; use
        :meth:`caption_files` to collect such errors instead.
        """
        images = _image_list(images)
        include = _constraints(include)
        if all(isinstance(x, (str, os.PathLike)) for x in images):
            results = list(self.caption_files([str(x) for x in images], batch_size=batch_size, include=include,
                                              generator=generator, settings=settings, **options))
            for result in results:
                if result.error:
                    raise ImageLoadError(result.source, result.error.split(": ", 1)[-1])
            return results
        settings, _ = self.request(settings, include, **options)
        results = []
        for start in range(0, len(images), batch_size):
            chunk = images[start:start + batch_size]
            pixels = torch.stack([self._pixels(x) for x in chunk])
            for offset, result in enumerate(self.decode(self.encode(pixels), settings, include, generator)):
                result.source = _describe(chunk[offset], start + offset)
                results.append(result)
        return results

    @torch.no_grad()
    def score(self, images, captions: str | Sequence[str], batch_size: int = 16) -> list[float]:
        """The log-probability of each caption given its image (one caption per image; images as
        :meth:`caption` takes them), by teacher forcing: the sum of log p(word | image, the words
        before) over the caption's words and the final ``<end>``, what :attr:`Caption.log_prob`
        reports for a decoded caption. For re-ranking captions, or checking one. A word outside
        the vocabulary reads as its proxy when a constraint named it before or it names a concept
        (:mod:`captioner.guidance.proxies`), else as ``<unk>``."""
        images = _image_list(images)
        captions = [captions] if isinstance(captions, str) else list(captions)
        if len(captions) != len(images):
            raise ArgumentError(f"{len(captions)} captions for {len(images)} images; give one caption per image")
        lexicon = self.lexicon(_concept_words(captions, self.vocab))
        rows = [[self.vocab.start_id, *lexicon.encode_text(c), self.vocab.end_id] for c in captions]
        scores = []
        for start, features in self._features(images, batch_size):
            chunk = rows[start:start + len(features)]
            width = max(len(r) for r in chunk)
            ids = torch.tensor([r + [self.vocab.pad_id] * (width - len(r)) for r in chunk], device=self.device)
            lengths = torch.tensor([len(r) for r in chunk])
            scores.extend(self.word_log_probs(features, lexicon.fed_ids(ids), lengths).sum(1).tolist())
        return scores

    def word_log_probs(self, features: torch.Tensor, fed: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Teacher forcing: log p(word | image, the words before) of each word of ``fed`` (B, T)
        (``<start> w1 .. wn <end>`` as the network reads them, padded), as (B, T - 1), 0 past each
        row's ``lengths``. Differentiable (with gradients on): the caption's words' scores for
        attribution (:mod:`captioner.explain`); :meth:`score` sums them."""
        log_probs = self.model.decoder(features, fed, lengths).float().log_softmax(-1)
        taken = log_probs.gather(2, fed[:, 1:, None]).squeeze(2)
        valid = torch.arange(fed.shape[1] - 1)[None, :] < (lengths - 1)[:, None]
        return taken.masked_fill(~valid.to(taken.device), 0.0)

    def _features(self, images: list, batch_size: int) -> Iterator[tuple[int, torch.Tensor]]:
        """(first index, encoder features) per batch of ``images``; an unreadable file raises."""
        if all(isinstance(x, (str, os.PathLike)) for x in images):
            paths = [str(x) for x in images]
            for batch in image_batches(paths, self.preprocessing, batch_size, 0, DEFAULT_MAX_PIXELS, self.device):
                if batch.errors:
                    index, message = batch.errors[0]
                    raise ImageLoadError(paths[index], message.split(": ", 1)[-1])
                yield batch.indices[0], self.encode(batch.pixels)
            return
        for start in range(0, len(images), batch_size):
            yield start, self.encode(torch.stack([self._pixels(x) for x in images[start:start + batch_size]]))

    def _pixels(self, image) -> torch.Tensor:
        if isinstance(image, (str, os.PathLike)):
            raise TypeError("mix of paths and in-memory images; caption them in separate calls")
        if isinstance(image, Image.Image):
            image = to_rgb(image)
        return preprocess(image, self.preprocessing)

    def caption_files(self, paths: Sequence[str], batch_size: int = 16, num_workers: int | None = None,
                      max_pixels: int = DEFAULT_MAX_PIXELS, include: Iterable[str] | str = (),
                      generator: torch.Generator | None = None, settings: DecodingSettings | None = None,
                      **options) -> Iterator[CaptionResult]:
        """Caption image files as a stream, in order; unreadable files yield a result with ``error`` set.
        ``num_workers``: image-reading processes (default: :func:`default_reader_processes`); the
        decoding arguments are :meth:`caption`'s. Bad settings are refused before any file is read."""
        include = _constraints(include)
        settings, _ = self.request(settings, include, **options)
        if num_workers is None:
            num_workers = default_reader_processes(len(paths), batch_size)
        for batch in image_batches(paths, self.preprocessing, batch_size, num_workers, max_pixels, self.device):
            results = {i: CaptionResult(paths[i], error=message) for i, message in batch.errors}
            if batch.pixels is not None:
                for i, result in zip(batch.indices, self.decode(self.encode(batch.pixels), settings, include,
                                                                generator)):
                    result.source = paths[i]
                    results[i] = result
            for i in sorted(results):
                yield results[i]


def _constraint(lexicon: Lexicon, forced: Forced) -> Constraint:
    """The constraint of ``forced``: any one of its phrases. A phrase that reads exactly as another
    of them (an added word whose proxy is the known word: "kitty" read as "cat") is left out, so
    the word the caption shows is the word that was scored."""
    phrases: dict[tuple[int, ...], tuple[int, ...]] = {}
    for word in forced.words:
        ids = lexicon.phrase_ids(word)
        fed = tuple(lexicon.fed_ids(torch.tensor(ids)).tolist())
        if fed not in phrases or (phrases[fed] != fed and ids == fed):
            phrases[fed] = ids
    return Constraint(tuple(phrases.values()), "|".join(forced.words))


def _unsure(result: CaptionResult, settings: DecodingSettings) -> bool:
    """The decoder was unsure of this image: guided, nothing forced by the guide, and a best caption
    whose log-probability per word (``<end>`` included) is below ``settings.unsure_below``."""
    if settings.unsure_below is None or settings.guide == "none" or not result.captions:
        return False
    if any(f.source != "include" for f in result.forced):
        return False
    best = result.captions[0]
    return best.log_prob / (len(best.tokens) + 1) < settings.unsure_below


def _image_list(images) -> list:
    """One image (a path, a PIL image, a (3, H, W) tensor) or many, as a list."""
    if isinstance(images, (str, os.PathLike, Image.Image)) or (isinstance(images, torch.Tensor) and images.ndim == 3):
        return [images]
    return list(images)


def _concept_words(captions: Sequence[str], vocab: Vocabulary) -> list[str]:
    """The words of ``captions`` outside ``vocab`` that name a concept (they read as their proxies)."""
    from .guidance import load_imagenet_names

    names = load_imagenet_names()
    return [w for c in captions for w in tokenize(c) if w not in vocab and names.concept_of_word(w) is not None]


def _constraints(include: Iterable[str] | str) -> tuple[str, ...]:
    """The user's include constraints as a tuple: a string is one constraint, any other
    iterable (a list, a generator) gives one per item."""
    if isinstance(include, str):
        return (include,)
    try:
        given = tuple(include)
    except TypeError:
        raise ArgumentError(f"include must be a string or an iterable of strings, got {include!r}") from None
    for text in given:
        if not isinstance(text, str):
            raise ArgumentError(f"include: {text!r} is not a string; give words such as 'cat|kitten'")
    return given


def _describe(image, index: int) -> str:
    filename = getattr(image, "filename", "") if isinstance(image, Image.Image) else ""
    return filename or f"<image {index}>"
