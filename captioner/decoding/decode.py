"""The one entry point from a stepper to captions: :func:`decode` picks the search the
settings ask for; every caller (the API, evaluation, validation during training, the
caption attacks, the benchmarks) goes through it, so they all ban the same tokens and use
the same defaults. What is forced into a caption (a guide's words, the user's) is decided
above it, by :meth:`captioner.api.Captioner.decode`."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from tqdm import tqdm

from ..models.stepping import LSTMStepper
from .articles import agree_articles
from .beam import beam_search
from .constraints import Constraint
from .search import Hypothesis, Stepper, Stepping, greedy, sample
from .settings import DecodingSettings, require_method


def decode(stepper: Stepper, vocab, settings: DecodingSettings,
           constraints: Sequence[Sequence[Constraint]] | None = None, generator: torch.Generator | None = None,
           stepping: Stepping | None = None, observer=None) -> list[list[Hypothesis]]:
    """``settings.num_captions`` hypotheses per image of ``stepper``, best first.

    ``vocab`` gives the special ids and the tokens never generated (``<pad>``, ``<start>``,
    ``<unk>``); a :class:`captioner.decoding.lexicon.Lexicon` also the first id of the words
    it added, which only constraints may place. ``constraints[b]``: words image b's captions
    must contain; they run a constrained beam search (with beam size 1 when the method is
    greedy). ``generator`` seeds sampling; ``stepping``: how greedy and beam search step
    (default: the device's way); ``observer``: called after every step of a beam search
    (:class:`captioner.decoding.beam.BeamStep`; greedy decoding and sampling have no beam to
    show and ignore it). "a" and "an" agree with the next word
    (:mod:`captioner.decoding.articles`).
    """
    common = dict(start_id=vocab.start_id, end_id=vocab.end_id, max_length=settings.max_length,
                  banned=vocab.never_generated)
    stepper = agree_articles(stepper, vocab)
    constrained = constraints is not None and any(constraints)
    if constrained:
        require_method(settings.method, "word constraints", constrained=True)
    if settings.method == "sample":
        return sample(stepper, temperature=settings.temperature, top_k=settings.top_k,
                      num_samples=settings.num_captions, generator=generator, **common)
    if settings.method == "greedy" and not constrained:
        return [[h] for h in greedy(stepper, stepping=stepping, **common)]
    beam_size = 1 if settings.method == "greedy" else settings.beam_size
    return beam_search(stepper, beam_size=beam_size, length_penalty=settings.length_penalty,
                       num_return=settings.num_captions, constraints=constraints if constrained else None,
                       phrase_only_from=getattr(vocab, "phrase_only_from", None), stepping=stepping,
                       observer=observer, **common)


@torch.no_grad()
def decode_texts(decoder, vocab, features: np.ndarray | torch.Tensor, settings: DecodingSettings,
                 device: torch.device = torch.device("cpu"), batch_size: int = 100,
                 show: bool = False) -> list[str]:
    """The best caption of every feature vector of an array (e.g. a feature cache), in batches,
    by an :class:`captioner.models.LSTMDecoder` (validation during training)."""
    was_training = decoder.training
    decoder.eval()
    captions: list[str] = []
    try:
        for start in tqdm(range(0, len(features), batch_size), desc=f"decoding ({settings.method})",
                          disable=not show, leave=False):
            chunk = torch.as_tensor(np.asarray(features[start:start + batch_size], dtype=np.float32)).to(device)
            hyps = decode(LSTMStepper(decoder, chunk), vocab, settings)
            captions.extend(vocab.to_text(image[0].tokens) for image in hyps)
    finally:
        decoder.train(was_training)
    return captions
