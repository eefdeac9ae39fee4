"""Explaining one caption word by word: what the search saw, what drove each word, and what
the LSTM did (see :func:`explain_images`).

The caption is the one ``captioner caption`` prints with the same options: the image goes
through the same reading and preprocessing, and the same :meth:`Captioner.decode` (guide and
constraints included), with an observer on the beam. Everything else is computed afterwards
by teacher-forcing that caption (:meth:`Captioner.word_log_probs`): the words' probabilities
and alternatives, their saliency maps (:mod:`.saliency`) and the LSTM's gates (:mod:`.gates`).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from ..data.batches import image_batches
from ..data.images import DEFAULT_MAX_PIXELS
from ..decoding import DecodingSettings
from ..decoding.beam import BeamStep
from ..errors import ArgumentError
from .gates import LayerTrace, lstm_trace
from .saliency import METHODS, SaliencySettings, WordScores, gradcam, pixel_saliency

ALTERNATIVES = 5  # alternatives shown per word


@dataclass
class Word:
    """One word of the caption. ``read_as``: the word the network reads and scores in its place
    (a word outside the vocabulary reads as its proxy); ``alternatives``: the most probable
    words at that step after the caption's words before it, (word, probability), best first;
    ``forced``: the constraint that placed it (its JSON record), if any; ``beam``: the
    hypotheses alive after this step, (text, cumulative log-probability, whether it is the
    caption's own prefix)."""

    index: int
    word: str
    token: int
    read_as: str
    probability: float
    log_prob: float
    alternatives: list[tuple[str, float]]
    forced: dict | None = None
    beam: list[tuple[str, float, bool]] = field(default_factory=list)

    def to_dict(self) -> dict:
        record = {"index": self.index, "word": self.word, "token": self.token, "probability": round(self.probability, 4),
                  "log_prob": round(self.log_prob, 4),
                  "alternatives": [{"word": w, "probability": round(p, 4)} for w, p in self.alternatives]}
        if self.read_as != self.word:
            record["read_as"] = self.read_as
        if self.forced:
            record["forced"] = self.forced
        if self.beam:
            record["beam"] = [{"text": t, "log_prob": round(s, 4), "caption_prefix": chosen} for t, s, chosen in self.beam]
        return record


class BeamRecorder:
    """An observer of the beam search (:class:`captioner.decoding.beam.BeamStep`): keeps each
    step's rows of the first image, on the host."""

    def __init__(self):
        self.steps: list[BeamStep] = []

    def __call__(self, step: BeamStep) -> None:
        rows = slice(0, step.rows_per_image)
        self.steps.append(BeamStep(step.t, step.rows_per_image, step.scores[rows].cpu(), step.tokens[rows].cpu(),
                                   step.parents[rows].cpu()))

    def alive(self, t: int) -> list[tuple[tuple[int, ...], float]]:
        """The prefixes alive after step ``t`` (t + 1 words each) and their scores, best first."""
        found = []
        for row in torch.isfinite(self.steps[t].scores).nonzero().flatten().tolist():
            tokens, r = [], row
            for s in range(t, -1, -1):
                tokens.append(int(self.steps[s].tokens[r]))
                r = int(self.steps[s].parents[r])
            found.append((tuple(reversed(tokens)), float(self.steps[t].scores[row])))
        return sorted(found, key=lambda x: -x[1])


@dataclass
class Explanation:
    """The explanation of one image's caption (or the error that stopped it). ``image``: the
    pixels the model saw (3, S, S) in [0, 1]; ``maps``: per method, (words, h, w) arrays
    (``gradcam`` on the encoder's feature grid, the pixel methods at S x S); ``layers``: the
    LSTM's trace per layer over the steps (each step predicts the next word, the last one
    ``<end>``)."""

    source: str
    caption: str | None = None
    error: str | None = None
    words: list[Word] = field(default_factory=list)
    log_prob: float = 0.0
    end_probability: float = 0.0
    result: object = None
    settings: DecodingSettings | None = None
    image: torch.Tensor | None = None
    maps: dict[str, np.ndarray] = field(default_factory=dict)
    saliency: SaliencySettings | None = None
    layers: list[LayerTrace] = field(default_factory=list)
    feature_layer: str = ""

    @property
    def text(self) -> str | None:
        return self.caption

    def to_dict(self, files: dict[str, str] | None = None) -> dict:
        """The JSON record: the caption's record as ``caption --jsonl`` writes it, then per word
        its probabilities, beam and Grad-CAM map; the pixel maps are named by ``files`` (the
        .npy beside the record) when written. See :meth:`write`."""
        from .record import explanation_record

        return explanation_record(self, files or {})

    def html(self) -> str:
        """A self-contained HTML page (images inline)."""
        from .page import explanation_page

        return explanation_page(self)

    def write(self, out_dir: str | os.PathLike) -> dict[str, str]:
        """``page.html``, a PNG per word and map, the LSTM's heat maps, ``explanation.json`` and
        the pixel maps as ``.npy``, in ``out_dir`` (made if missing); returns the paths."""
        from .page import write_explanation

        return write_explanation(self, out_dir)


def _pixels(captioner, image, max_pixels: int) -> tuple[str, torch.Tensor | None, str | None]:
    """(source, preprocessed pixels (1, 3, S, S) on the captioner's device, error) of one image,
    by the path ``caption`` reads it (files) or :meth:`Captioner.caption`'s (in memory)."""
    from ..api import _describe

    if isinstance(image, (str, os.PathLike)):
        path = str(image)
        batch = next(image_batches([path], captioner.preprocessing, 1, 0, max_pixels, captioner.device))
        if batch.errors:
            return path, None, batch.errors[0][1]
        return path, batch.pixels.to(captioner.device), None
    return _describe(image, 0), captioner._pixels(image)[None].to(captioner.device), None


def explain_images(captioner, images, settings: DecodingSettings | None = None, include: Iterable[str] | str = (),
                   saliency: Sequence[str] = ("gradcam", "smoothgrad"), saliency_settings: SaliencySettings | None = None,
                   generator: torch.Generator | None = None, max_pixels: int = DEFAULT_MAX_PIXELS,
                   **options) -> list[Explanation]:
    """Explain the best caption of each image (paths or PIL images): see :class:`Explanation`.

    ``settings``, ``include`` and ``options`` as :meth:`Captioner.request` takes them; ``saliency``:
    the maps to make, of :data:`captioner.explain.saliency.METHODS`. An unreadable image gives
    an explanation with ``error`` set; bad settings raise before any image is read."""
    from ..api import _image_list

    unknown = [m for m in saliency if m not in METHODS]
    if unknown:
        raise ArgumentError(f"saliency method {unknown[0]!r} is unknown; use {', '.join(METHODS)}")
    settings, _ = captioner.request(settings, include, **options)
    saliency_settings = saliency_settings or SaliencySettings()
    results = []
    for image in _image_list(images):
        source, pixels, error = _pixels(captioner, image, max_pixels)
        if error:
            results.append(Explanation(source, error=error))
            continue
        results.append(_explain(captioner, source, pixels, settings, include, saliency, saliency_settings, generator))
    return results


def _explain(captioner, source: str, pixels: torch.Tensor, settings: DecodingSettings, include, saliency,
             saliency_settings: SaliencySettings, generator) -> Explanation:
    recorder = BeamRecorder()
    with torch.no_grad():  # the encoder's forward, keeping the grid Grad-CAM reads
        grid = captioner.model.encoder.grid(pixels)
        features = captioner.model.encoder.neck(grid)
    result = captioner.decode(features, settings, include, generator, observer=recorder)[0]
    result.source = source
    best = result.captions[0]
    lexicon = captioner.decode_lexicon([result.forced])
    tokens = list(best.tokens)
    device = captioner.device
    ids = torch.tensor([[lexicon.start_id, *tokens, lexicon.end_id]], device=device)
    fed = lexicon.fed_ids(ids)
    lengths = torch.tensor([ids.shape[1]])
    model = captioner.model
    with torch.no_grad():
        log_probs = model.decoder(features, fed, lengths).float().log_softmax(-1)[0]  # (words + 1, vocab)
    explanation = Explanation(source, best.text, result=result, settings=settings, image=pixels[0].cpu(),
                              saliency=saliency_settings, log_prob=best.log_prob,
                              end_probability=float(log_probs[-1, lexicon.end_id].exp()),
                              feature_layer=_feature_layer(model.encoder))
    explanation.words = _words(captioner, lexicon, tokens, log_probs, fed[0], result.forced, recorder)
    explanation.maps = saliency_maps(captioner, pixels, fed[0], saliency, saliency_settings, grid)
    explanation.layers = [_to_cpu(t) for t in lstm_trace(model.decoder, features[0], fed[0, :-1])]
    return explanation


def saliency_maps(captioner, pixels: torch.Tensor, fed: torch.Tensor, methods: Sequence[str] = ("gradcam",),
                  settings: SaliencySettings | None = None, grid: torch.Tensor | None = None) -> dict[str, np.ndarray]:
    """The saliency maps (``methods``) of every word of a caption for one image (pixels (1, 3, S, S)):
    ``fed`` (T,) is ``<start> w1 .. wn <end>`` as the network reads them (the caption need not
    be the model's own); per method an array (n, h, w). ``grid``: the encoder's feature grid of
    ``pixels``, when the caller has it already."""
    words = len(fed) - 2
    if words < 1:
        return {}
    fed = fed[None].to(captioner.device)
    scores = WordScores(captioner.model.encoder.neck, captioner.word_log_probs, fed, torch.tensor([fed.shape[1]]),
                        words)
    maps = {}
    for method in methods:
        found = gradcam(captioner.model.encoder, scores, pixels, grid) if method == "gradcam" else \
            pixel_saliency(method, captioner.model.encoder, scores, pixels, settings or SaliencySettings())
        maps[method] = found.float().cpu().numpy()
    return maps


def _words(captioner, lexicon, tokens: list[int], log_probs: torch.Tensor, fed: torch.Tensor, forced,
           recorder: BeamRecorder) -> list[Word]:
    itos, fed_words = lexicon.itos, lexicon.fed_words
    words = lexicon.words(tokens)
    allowed = log_probs.clone()
    allowed[:, sorted(lexicon.never_generated)] = float("-inf")  # never candidates in any search
    top_lp, top_ids = allowed.topk(ALTERNATIVES, dim=1)
    placed = _forced_positions(lexicon, tokens, forced)
    records = []
    for i, token in enumerate(tokens):
        lp = float(log_probs[i, int(fed[i + 1])])
        beam = []
        if i < len(recorder.steps):
            prefix = tuple(tokens[:i + 1])
            beam = [(lexicon.to_text(p), s, p == prefix) for p, s in recorder.alive(i)]
        records.append(Word(i, words[i], token, fed_words[token], float(np.exp(lp)), lp,
                            [(itos[j], float(np.exp(v))) for v, j in zip(top_lp[i].tolist(), top_ids[i].tolist())],
                            placed.get(i), beam))
    return records


def _forced_positions(lexicon, tokens: list[int], forced) -> dict[int, dict]:
    """Which words of the caption a constraint placed: each constraint's first phrase found in
    the caption (by token, or as the network reads it), with the constraint's record."""
    fed = lexicon.fed_ids(torch.tensor(tokens, dtype=torch.long)).tolist() if tokens else []
    placed = {}
    for constraint in forced:
        for word in constraint.words:
            try:
                phrase = list(lexicon.phrase_ids(word))
            except ArgumentError:  # a word this lexicon cannot spell cannot be in the caption
                continue
            read = lexicon.fed_ids(torch.tensor(phrase)).tolist()
            at = next((i for i in range(len(tokens) - len(phrase) + 1)
                       if tokens[i:i + len(phrase)] == phrase or fed[i:i + len(phrase)] == read), None)
            if at is not None:
                for i in range(at, at + len(phrase)):
                    placed.setdefault(i, constraint.to_dict())
                break
    return placed


def _to_cpu(trace: LayerTrace) -> LayerTrace:
    return LayerTrace(**{name: value.float().cpu() for name, value in vars(trace).items()})


def _feature_layer(encoder) -> str:
    """How the page names the layer Grad-CAM reads."""
    return f"the last feature map of {encoder.spec.backbone} ({encoder.feature_dim} channels)"
