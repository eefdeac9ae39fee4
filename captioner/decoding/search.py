"""Turning image features into token sequences: greedy decoding and sampling here, beam
search (optionally constrained) in :mod:`captioner.decoding.beam`.

Every search drives a :class:`Stepper`, whichever runtime provides it
(:class:`captioner.models.stepping.LSTMStepper` for the LSTM decoder); the searches may
overwrite the log-probabilities a step returns. All apply the same rules: ``banned``
tokens never appear, captions have at least ``min_length`` words (default 1: no empty
captions) and at most ``max_length``. Every returned :class:`Hypothesis` is a complete
sequence ending in ``<end>``: when a sequence reaches ``max_length`` words, ``<end>`` is
forced (and ``truncated`` is set), so a caption always comes back and its ``log_prob`` is
that of an actual sequence.

Greedy decoding and beam search keep their bookkeeping on the stepper's device (scores,
back-pointers, finished hypotheses) and move it to the host once, at the end. How they
step is :class:`Stepping`: either only the rows still decoding (finished captions and dead
beams leave the batch: beam 3 on the bundled model steps about 40% of its rows) until none
is left, the default on a CPU; or every row, checking every few steps whether anything is
left (the extra steps change nothing), the default on CUDA, where finding the live rows is
a device-to-host round trip.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from ..errors import ArgumentError
from .settings import DEFAULTS

CUDA_CHECK_EVERY = 4  # steps between "anything left?" checks when every row steps on CUDA


class Stepper(Protocol):
    """What a search drives: the decoder of one batch of ``rows`` images on ``device``.

    ``state`` is the initial state (the images' rows in order); ``step(tokens, state)``
    gives the log-probabilities (N, vocab) of the next token after ``tokens`` (N,) and the
    new state; ``reorder(state, index)`` selects (and repeats) rows of a state.
    """

    rows: int
    device: torch.device
    state: Any

    def step(self, tokens: torch.Tensor, state: Any) -> tuple[torch.Tensor, Any]: ...

    def reorder(self, state: Any, index: torch.Tensor) -> Any: ...


@dataclass(frozen=True)
class Stepping:
    """How a search steps: ``live_rows`` steps only the rows still decoding (a device-to-host
    round trip per step to find them); otherwise every row steps and the search checks every
    ``check_every`` steps whether any is still decoding."""

    live_rows: bool
    check_every: int = 1

    @classmethod
    def default(cls, device: torch.device) -> "Stepping":
        """Live rows on a CPU, where finding them is free; every row on CUDA."""
        return cls(live_rows=device.type != "cuda", check_every=CUDA_CHECK_EVERY if device.type == "cuda" else 1)

    def check(self, t: int) -> bool:
        """Whether step ``t`` (of every row stepping) checks for rows still decoding."""
        return t % self.check_every == self.check_every - 1


@dataclass(frozen=True)
class Hypothesis:
    """One decoded sequence.

    ``tokens`` are the word ids without ``<start>``/``<end>``; ``log_prob`` is the sum
    of the log-probabilities of the words and the final ``<end>``; ``score`` is
    ``log_prob / (len(tokens) + 1) ** length_penalty``, the ranking of beam search
    (greedy decoding and sampling report ``score == log_prob``). ``unmet`` counts the
    constraints the sequence does not meet (0 without constraints).
    """

    tokens: tuple[int, ...]
    log_prob: float
    score: float
    truncated: bool = False
    unmet: int = 0


def check_lengths(max_length: int, min_length: int) -> None:
    if max_length < 1:
        raise ArgumentError(f"max_length must be at least 1, got {max_length}")
    if not 0 <= min_length <= max_length:
        raise ArgumentError(f"min_length must be between 0 and max_length ({max_length}), got {min_length}")


def forbidden_masks(vocab: int, banned: Sequence[int], end_id: int, device: torch.device) -> tuple[torch.Tensor, ...]:
    """Additive masks (0 or -inf) over the vocabulary: banned tokens, and banned plus ``<end>``
    (for the steps before ``min_length``)."""
    mask = torch.zeros(vocab, device=device)
    mask[list(banned)] = float("-inf")
    early = mask.clone()
    early[end_id] = float("-inf")
    return mask, early


def normalise(log_prob: float, num_words: int, length_penalty: float) -> float:
    return log_prob / float(num_words + 1) ** length_penalty


@torch.no_grad()
def greedy(stepper: Stepper, start_id: int, end_id: int, max_length: int = DEFAULTS.max_length,
           min_length: int = 1, banned: Sequence[int] = (), stepping: Stepping | None = None) -> list[Hypothesis]:
    """The most probable next token at every step, for a batch of images.

    Lean per step, as it runs once per word: banned tokens (and ``<end>`` before
    ``min_length``) are overwritten with -inf in place, only where there are any, instead of
    adding a mask over the vocabulary (x + 0 is x and x + -inf is -inf: the same values); the
    words are kept as a list of tensors and each caption's length is found once, at the end
    (its first ``<end>``). The sums are the same float32 additions in the same order either
    way of ``stepping``, so the results are identical. (Taking the best logit and a
    log-sum-exp instead of the log-softmax was no faster on the CPU: PyTorch's log-sum-exp is
    four passes over the row, its log-softmax one fused kernel; and it would change the last
    bits.)
    """
    check_lengths(max_length, min_length)
    device, batch = stepper.device, stepper.rows
    stepping = stepping or Stepping.default(device)
    state = stepper.state
    tokens = torch.full((batch,), start_id, dtype=torch.long, device=device)
    total = torch.zeros(batch, device=device)
    done = torch.zeros(batch, dtype=torch.bool, device=device)
    forbidden = torch.tensor(sorted(set(banned)), dtype=torch.long, device=device)
    early = torch.tensor(sorted(set(banned) | {end_id}), dtype=torch.long, device=device)
    words = []
    active = torch.arange(batch, device=device)  # live rows: the rows ``state`` and ``tokens`` hold
    for t in range(max_length + 1):
        log_probs, state = stepper.step(tokens, state)
        log_probs = log_probs.float()
        if t == max_length:  # no room for more words: <end> is forced
            if stepping.live_rows:
                total.index_add_(0, active, log_probs[:, end_id])
            else:
                total += log_probs[:, end_id].masked_fill(done, 0.0)
            break
        masked = early if t < min_length else forbidden
        if masked.numel():
            log_probs = log_probs.index_fill_(1, masked, float("-inf"))
        best_lp, tokens = log_probs.max(dim=-1)
        if stepping.live_rows:
            total.index_add_(0, active, best_lp)
            words.append(torch.full((batch,), end_id, dtype=torch.long, device=device).index_copy_(0, active, tokens))
            going = tokens != end_id
            if not bool(going.all()):
                if not bool(going.any()):
                    break
                keep = going.nonzero().squeeze(1)
                active, tokens = active[keep], tokens[keep]
                state = stepper.reorder(state, keep)
            continue
        total += best_lp.masked_fill_(done, 0.0)
        words.append(tokens)
        done |= tokens == end_id
        if stepping.check(t) and bool(done.all()):
            break
    words, total = torch.stack(words, 1).cpu().tolist(), total.cpu().tolist()
    lengths = [w.index(end_id) if end_id in w else max_length for w in words]
    return [Hypothesis(tuple(w[:n]), lp, lp, n == max_length) for w, lp, n in zip(words, total, lengths)]


@torch.no_grad()
def sample(stepper: Stepper, start_id: int, end_id: int, max_length: int = DEFAULTS.max_length,
           min_length: int = 1, temperature: float = DEFAULTS.temperature, top_k: int | None = DEFAULTS.top_k,
           num_samples: int = 1, banned: Sequence[int] = (),
           generator: torch.Generator | None = None) -> list[list[Hypothesis]]:
    """Draw ``num_samples`` captions per image from the decoder's distribution.

    Each token is drawn from ``softmax(log_probs / temperature)``, restricted to the
    ``top_k`` most likely tokens when given. ``log_prob`` is reported under the
    model's own (untempered) distribution. The draws happen on the CPU with ``generator``
    (a CPU generator), so a seed gives the same captions on every device.
    """
    check_lengths(max_length, min_length)
    if temperature <= 0:
        raise ArgumentError(f"temperature must be positive, got {temperature}")
    if top_k is not None and top_k < 1:
        raise ArgumentError(f"top_k must be at least 1, got {top_k}")
    device, batch = stepper.device, stepper.rows
    rows = torch.arange(batch, device=device).repeat_interleave(num_samples)
    state = stepper.reorder(stepper.state, rows)
    n = rows.numel()
    tokens = torch.full((n,), start_id, dtype=torch.long, device=device)
    words = torch.full((n, max_length), end_id, dtype=torch.long)
    total = torch.zeros(n, dtype=torch.float64)
    done = torch.zeros(n, dtype=torch.bool)
    lengths = torch.full((n,), max_length, dtype=torch.long)
    masks = None
    for t in range(max_length + 1):
        log_probs, state = stepper.step(tokens, state)
        log_probs = log_probs.float().cpu()
        if masks is None:
            masks = forbidden_masks(log_probs.shape[-1], banned, end_id, torch.device("cpu"))
        if t == max_length:  # no room for more words: <end> is forced
            total += torch.where(done, 0.0, log_probs[:, end_id].double())
            break
        logits = (log_probs + masks[t < min_length]) / temperature
        if top_k is not None and top_k < logits.shape[-1]:
            threshold = logits.topk(top_k, dim=-1).values[:, -1:]
            logits = logits.masked_fill(logits < threshold, float("-inf"))
        logits = logits.masked_fill(done.unsqueeze(1), 0.0)  # finished rows draw anything: it is ignored
        drawn = torch.multinomial(torch.softmax(logits, -1), 1, generator=generator).squeeze(1)
        total += torch.where(done, 0.0, log_probs.gather(1, drawn.unsqueeze(1)).squeeze(1).double())
        ends = drawn == end_id
        lengths = torch.where(ends & ~done, t, lengths)
        words[:, t] = torch.where(done, end_id, drawn)
        done |= ends
        if bool(done.all()):
            break
        tokens = drawn.to(device)
    hyps = [Hypothesis(tuple(w[:n_]), lp, lp, n_ == max_length)
            for w, lp, n_ in zip(words.tolist(), total.tolist(), lengths.tolist())]
    return [hyps[i * num_samples:(i + 1) * num_samples] for i in range(batch)]
