"""The beam search, greedy decoding and sampling as they were before decoding moved its bookkeeping onto
the device: a reference the current implementation must agree with (tests/test_decoding.py).

All three drive a *step decoder*: any object with

* ``init_state(features) -> state``,
* ``step(tokens, state) -> (log_probs (N, vocab), state)``,
* ``reorder_state(state, index) -> state`` (select rows of the batch),

which :class:`captioner.models.decoder.LSTMDecoder` is. All three apply the same
constraints: ``banned`` tokens never appear, captions have at least ``min_length``
words (default 1: no empty captions) and at most ``max_length``. Every returned
:class:`Hypothesis` is a complete sequence ending in ``<end>``: when a sequence
reaches ``max_length`` words, ``<end>`` is forced (and ``truncated`` is set), so a
caption always comes back and its ``log_prob`` is that of an actual sequence.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Hypothesis:
    """One decoded sequence.

    ``tokens`` are the word ids without ``<start>``/``<end>``; ``log_prob`` is the sum
    of the log-probabilities of the words and the final ``<end>``; ``score`` is
    ``log_prob / (len(tokens) + 1) ** length_penalty``, the ranking of beam search
    (greedy decoding and sampling report ``score == log_prob``).
    """

    tokens: tuple[int, ...]
    log_prob: float
    score: float
    truncated: bool = False


def _check(features: torch.Tensor, max_length: int, min_length: int) -> None:
    if features.ndim != 2:
        raise ValueError(f"expected features of shape (B, D), got {tuple(features.shape)}")
    if max_length < 1:
        raise ValueError(f"max_length must be at least 1, got {max_length}")
    if not 0 <= min_length <= max_length:
        raise ValueError(f"min_length must be between 0 and max_length ({max_length}), got {min_length}")


def _mask(log_probs: torch.Tensor, step: int, banned: Sequence[int], end_id: int,
          min_length: int) -> torch.Tensor:
    """Forbid banned tokens, and ``<end>`` before ``min_length`` words."""
    forbidden = list(banned) + ([end_id] if step < min_length else [])
    if forbidden:
        log_probs = log_probs.clone()
        log_probs[:, forbidden] = float("-inf")
    return log_probs


def _normalise(log_prob: float, num_words: int, length_penalty: float) -> float:
    return log_prob / float(num_words + 1) ** length_penalty


@torch.no_grad()
def greedy(decoder, features: torch.Tensor, start_id: int, end_id: int, max_length: int = 20,
           min_length: int = 1, banned: Sequence[int] = ()) -> list[Hypothesis]:
    """The most probable next token at every step, for a batch of images."""
    _check(features, max_length, min_length)
    batch = features.shape[0]
    state = decoder.init_state(features)
    tokens = torch.full((batch,), start_id, dtype=torch.long, device=features.device)
    words: list[list[int]] = [[] for _ in range(batch)]
    total = [0.0] * batch
    results: list[Hypothesis | None] = [None] * batch
    active = list(range(batch))  # images of the original batch still being decoded, one per row
    for t in range(max_length + 1):
        log_probs, state = decoder.step(tokens, state)
        if t == max_length:  # no room for more words: <end> is forced
            best = torch.full_like(tokens, end_id)
            best_lp = log_probs[:, end_id]
        else:
            best_lp, best = _mask(log_probs, t, banned, end_id, min_length).max(dim=-1)
        keep = []
        for row, (image, token, lp) in enumerate(zip(active, best.tolist(), best_lp.tolist())):
            total[image] += lp
            if token == end_id:
                results[image] = Hypothesis(tuple(words[image]), total[image], total[image], t == max_length)
            else:
                words[image].append(token)
                keep.append(row)
        if not keep:
            break
        index = torch.tensor(keep, device=features.device)
        active = [active[row] for row in keep]
        tokens = best[index]
        state = decoder.reorder_state(state, index)
    return results


def _with_score(h: Hypothesis, length_penalty: float) -> Hypothesis:
    return Hypothesis(h.tokens, h.log_prob, _normalise(h.log_prob, len(h.tokens), length_penalty), h.truncated)


@torch.no_grad()
def beam_search(decoder, features: torch.Tensor, start_id: int, end_id: int, beam_size: int = 3,
                max_length: int = 20, min_length: int = 1, length_penalty: float = 0.0,
                num_return: int = 1, banned: Sequence[int] = ()) -> list[list[Hypothesis]]:
    """Beam search over a batch of images at once (the batch is B * beam_size rows).

    Each step extends every live beam by every token and keeps, per image, the best
    ``beam_size - finished`` extensions by total log-probability; extensions that end
    with ``<end>`` leave the beam as finished hypotheses (so the beam shrinks, and
    beam size 1 is exactly greedy decoding). The finished hypotheses are ranked by
    ``log_prob / (words + 1) ** length_penalty``; 0 ranks by plain log-probability,
    which favours short captions, 1 by the mean log-probability per token.
    Returns the ``num_return`` best hypotheses of every image, best first.
    """
    _check(features, max_length, min_length)
    if beam_size < 1:
        raise ValueError(f"beam_size must be at least 1, got {beam_size}")
    if not 1 <= num_return <= beam_size:
        raise ValueError(f"num_return must be between 1 and the beam size ({beam_size}), got {num_return}")
    device = features.device
    batch, k = features.shape[0], beam_size
    state = decoder.reorder_state(
        decoder.init_state(features), torch.arange(batch, device=device).repeat_interleave(k)
    )
    tokens = torch.full((batch * k,), start_id, dtype=torch.long, device=device)
    scores = torch.full((batch, k), float("-inf"), device=device)
    scores[:, 0] = 0.0  # all beams start identical: expand only the first
    history = torch.zeros((batch, k, 0), dtype=torch.long, device=device)
    finished: list[list[Hypothesis]] = [[] for _ in range(batch)]
    rank = torch.arange(k, device=device).unsqueeze(0)
    for t in range(max_length + 1):
        log_probs, state = decoder.step(tokens, state)
        if t == max_length:  # no room for more words: every live beam ends here
            end_scores = (scores + log_probs[:, end_id].float().view(batch, k)).tolist()
            for image, slot in torch.isfinite(scores).nonzero().tolist():
                finished[image].append(Hypothesis(
                    tuple(history[image, slot].tolist()), end_scores[image][slot], 0.0, True,
                ))
            break
        log_probs = _mask(log_probs, t, banned, end_id, min_length).float()
        vocab = log_probs.shape[-1]
        candidates = (scores.view(-1, 1) + log_probs).view(batch, k * vocab)
        width = min(k, k * vocab)
        top_scores, top_index = candidates.topk(width, dim=1)
        if width < k:
            pad = k - width
            top_scores = torch.cat([top_scores, top_scores.new_full((batch, pad), float("-inf"))], 1)
            top_index = torch.cat([top_index, top_index.new_zeros((batch, pad))], 1)
        beam, word = top_index // vocab, top_index % vocab
        room = torch.tensor([k - len(f) for f in finished], device=device).unsqueeze(1)
        accept = (rank < room) & torch.isfinite(top_scores)
        ends = accept & (word == end_id)
        for image, slot in ends.nonzero().tolist():
            source = int(beam[image, slot])
            finished[image].append(Hypothesis(
                tuple(history[image, source].tolist()), float(top_scores[image, slot]), 0.0, False,
            ))
        live = accept & (word != end_id)
        if not bool(live.any()):
            break
        # Move live extensions to the front (in rank order); the other slots die.
        order = torch.argsort((~live).long() * k + rank, dim=1)
        beam, word = beam.gather(1, order), word.gather(1, order)
        scores = torch.where(live.gather(1, order), top_scores.gather(1, order), float("-inf"))
        history = torch.cat([history.gather(1, beam.unsqueeze(2).expand_as(history)), word.unsqueeze(2)], 2)
        flat = (beam + torch.arange(batch, device=device).unsqueeze(1) * k).view(-1)
        state = decoder.reorder_state(state, flat)
        tokens = word.view(-1)
    ranked = []
    for hyps in finished:
        hyps = sorted((_with_score(h, length_penalty) for h in hyps), key=lambda h: h.score, reverse=True)
        ranked.append(hyps[:num_return])
    return ranked


@torch.no_grad()
def sample(decoder, features: torch.Tensor, start_id: int, end_id: int, max_length: int = 20,
           min_length: int = 1, temperature: float = 1.0, top_k: int | None = None, num_samples: int = 1,
           banned: Sequence[int] = (), generator: torch.Generator | None = None) -> list[list[Hypothesis]]:
    """Draw ``num_samples`` captions per image from the decoder's distribution.

    Each token is drawn from ``softmax(log_probs / temperature)``, restricted to the
    ``top_k`` most likely tokens when given. ``log_prob`` is reported under the
    model's own (untempered) distribution.
    """
    _check(features, max_length, min_length)
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k must be at least 1, got {top_k}")
    batch = features.shape[0]
    rows = torch.arange(batch, device=features.device).repeat_interleave(num_samples)
    state = decoder.reorder_state(decoder.init_state(features), rows)
    n = rows.numel()
    tokens = torch.full((n,), start_id, dtype=torch.long, device=features.device)
    words: list[list[int]] = [[] for _ in range(n)]
    total = [0.0] * n
    results: list[Hypothesis | None] = [None] * n
    active = list(range(n))
    for t in range(max_length + 1):
        log_probs, state = decoder.step(tokens, state)
        if t == max_length:  # no room for more words: <end> is forced
            drawn = torch.full((len(active),), end_id, dtype=torch.long)
        else:
            logits = _mask(log_probs, t, banned, end_id, min_length) / temperature
            if top_k is not None and top_k < logits.shape[-1]:
                threshold = logits.topk(top_k, dim=-1).values[:, -1:]
                logits = logits.masked_fill(logits < threshold, float("-inf"))
            drawn = torch.multinomial(torch.softmax(logits.float(), -1).cpu(), 1, generator=generator).squeeze(1)
        drawn_lp = log_probs.cpu().gather(1, drawn.unsqueeze(1)).squeeze(1)
        keep = []
        for row, (seq, token, lp) in enumerate(zip(active, drawn.tolist(), drawn_lp.tolist())):
            total[seq] += lp
            if token == end_id:
                results[seq] = Hypothesis(tuple(words[seq]), total[seq], total[seq], t == max_length)
            else:
                words[seq].append(token)
                keep.append(row)
        if not keep:
            break
        index = torch.tensor(keep, device=features.device)
        active = [active[i] for i in keep]
        tokens = drawn.to(features.device)[index]
        state = decoder.reorder_state(state, index)
    return [results[i * num_samples:(i + 1) * num_samples] for i in range(batch)]
