"""Turning image features into token sequences: greedy, beam search (optionally constrained)
and sampling.

All of them drive a *step decoder*: any object with

* ``init_state(features) -> state``,
* ``step(tokens, state) -> (log_probs (N, vocab), state)``,
* ``reorder_state(state, index) -> state`` (select rows of the batch),

which :class:`captioner.models.decoder.LSTMDecoder` is; the searches may overwrite the
log-probabilities a step returns. All apply the same rules:
``banned`` tokens never appear, captions have at least ``min_length`` words (default 1:
no empty captions) and at most ``max_length``. Every returned :class:`Hypothesis` is a
complete sequence ending in ``<end>``: when a sequence reaches ``max_length`` words,
``<end>`` is forced (and ``truncated`` is set), so a caption always comes back and its
``log_prob`` is that of an actual sequence.

Greedy decoding and beam search keep their bookkeeping on the features' device (scores,
back-pointers, finished hypotheses) and move it to the host once, at the end. On a CPU they
step only the rows still decoding (finished captions and dead beams leave the batch: beam 3
on the bundled model steps about 40% of its rows) and stop as soon as none is left; on
CUDA every row steps and they check every few steps whether anything is left (the extra
steps change nothing, and finding the live rows is a device-to-host round trip).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..errors import ArgumentError
from .constraints import AutomatonTables, Constraint
from .settings import DEFAULTS

CUDA_CHECK_EVERY = 4  # steps between "anything left?" checks on CUDA


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


def _check(features: torch.Tensor, max_length: int, min_length: int) -> None:
    if features.ndim != 2:
        raise ArgumentError(f"expected features of shape (B, D), got {tuple(features.shape)}")
    if max_length < 1:
        raise ArgumentError(f"max_length must be at least 1, got {max_length}")
    if not 0 <= min_length <= max_length:
        raise ArgumentError(f"min_length must be between 0 and max_length ({max_length}), got {min_length}")


def _forbidden(vocab: int, banned: Sequence[int], end_id: int, device: torch.device) -> tuple[torch.Tensor, ...]:
    """Additive masks (0 or -inf) over the vocabulary: banned tokens, and banned plus ``<end>``
    (for the steps before ``min_length``)."""
    mask = torch.zeros(vocab, device=device)
    mask[list(banned)] = float("-inf")
    early = mask.clone()
    early[end_id] = float("-inf")
    return mask, early


def _normalise(log_prob: float, num_words: int, length_penalty: float) -> float:
    return log_prob / float(num_words + 1) ** length_penalty


def _live_rows_only(device: torch.device) -> bool:
    """Whether searches on ``device`` step only the rows still decoding (finding them is a
    device-to-host round trip per step: free on a CPU, a stall on CUDA)."""
    return device.type == "cpu"


def _should_check(t: int, device: torch.device) -> bool:
    return device.type != "cuda" or t % CUDA_CHECK_EVERY == CUDA_CHECK_EVERY - 1


@torch.no_grad()
def greedy(decoder, features: torch.Tensor, start_id: int, end_id: int, max_length: int = DEFAULTS.max_length,
           min_length: int = 1, banned: Sequence[int] = ()) -> list[Hypothesis]:
    """The most probable next token at every step, for a batch of images.

    Lean per step, as it runs once per word: banned tokens (and ``<end>`` before
    ``min_length``) are overwritten with -inf in place, only where there are any, instead of
    adding a mask over the vocabulary (x + 0 is x and x + -inf is -inf: the same values); the
    words are kept as a list of tensors and each caption's length is found once, at the end
    (its first ``<end>``); on a CPU a finished caption's row leaves the batch. The sums are
    the same float32 additions in the same order as before, so the results are identical. (Taking the best logit and a log-sum-exp instead
    of the log-softmax was no faster on the CPU: PyTorch's log-sum-exp is four passes over
    the row, its log-softmax one fused kernel; and it would change the last bits.)
    """
    _check(features, max_length, min_length)
    device, batch = features.device, features.shape[0]
    state = decoder.init_state(features)
    tokens = torch.full((batch,), start_id, dtype=torch.long, device=device)
    total = torch.zeros(batch, device=device)
    done = torch.zeros(batch, dtype=torch.bool, device=device)
    forbidden = torch.tensor(sorted(set(banned)), dtype=torch.long, device=device)
    early = torch.tensor(sorted(set(banned) | {end_id}), dtype=torch.long, device=device)
    words = []
    # On a CPU, finished captions leave the batch: ``active`` are the rows still decoding
    # (``state`` and ``tokens`` hold only theirs). On CUDA all rows step to the end.
    compact = _live_rows_only(device)
    active = torch.arange(batch, device=device)
    for t in range(max_length + 1):
        log_probs, state = decoder.step(tokens, state)
        log_probs = log_probs.float()
        if t == max_length:  # no room for more words: <end> is forced
            if compact:
                total.index_add_(0, active, log_probs[:, end_id])
            else:
                total += log_probs[:, end_id].masked_fill(done, 0.0)
            break
        masked = early if t < min_length else forbidden
        if masked.numel():
            log_probs = log_probs.index_fill_(1, masked, float("-inf"))
        best_lp, tokens = log_probs.max(dim=-1)
        if compact:
            total.index_add_(0, active, best_lp)
            words.append(torch.full((batch,), end_id, dtype=torch.long, device=device).index_copy_(0, active, tokens))
            going = tokens != end_id
            if not bool(going.all()):
                if not bool(going.any()):
                    break
                keep = going.nonzero().squeeze(1)
                active, tokens = active[keep], tokens[keep]
                state = decoder.reorder_state(state, keep)
            continue
        total += best_lp.masked_fill_(done, 0.0)
        words.append(tokens)
        done |= tokens == end_id
        if _should_check(t, device) and bool(done.all()):
            break
    words, total = torch.stack(words, 1).cpu().tolist(), total.cpu().tolist()
    lengths = [w.index(end_id) if end_id in w else max_length for w in words]
    return [Hypothesis(tuple(w[:n]), lp, lp, n == max_length) for w, lp, n in zip(words, total, lengths)]


@torch.no_grad()
def beam_search(decoder, features: torch.Tensor, start_id: int, end_id: int, beam_size: int = DEFAULTS.beam_size,
                max_length: int = DEFAULTS.max_length, min_length: int = 1,
                length_penalty: float = DEFAULTS.length_penalty, num_return: int = 1, banned: Sequence[int] = (),
                constraints: Sequence[Sequence[Constraint]] | None = None,
                phrase_only_from: int | None = None) -> list[list[Hypothesis]]:
    """Beam search over a batch of images at once, optionally with lexical constraints.

    Without constraints, each step extends every live beam by every token and keeps, per
    image, the best ``beam_size - finished`` extensions by total log-probability;
    extensions that end with ``<end>`` leave the beam as finished hypotheses (so the beam
    shrinks, and beam size 1 is exactly greedy decoding). Finished hypotheses are ranked by
    ``log_prob / (words + 1) ** length_penalty``; 0 ranks by plain log-probability, which
    favours short captions, 1 by the mean log-probability per token.

    ``constraints[b]`` lists the constraints of image b (see
    :class:`captioner.decoding.constraints.Constraint`). Then the search is a grid beam
    search: the hypotheses are grouped by how many constraints they meet, each group keeps
    its own beam of ``beam_size`` with the rule above, and a token that meets a constraint
    moves its hypothesis up a group. The result is ranked from the group that meets all
    constraints; when it has fewer than ``num_return`` finished captions (none found
    within ``max_length``), the groups below fill the list, best group first, and their
    hypotheses say how many constraints they miss (``unmet``). Token ids from
    ``phrase_only_from`` on (words a :class:`captioner.decoding.lexicon.Lexicon` added) appear
    only where an image's constraints name them.
    Returns the ``num_return`` best hypotheses of every image, best first.
    """
    _check(features, max_length, min_length)
    if beam_size < 1:
        raise ArgumentError(f"beam_size must be at least 1, got {beam_size}")
    if not 1 <= num_return <= beam_size:
        raise ArgumentError(f"num_return must be between 1 and the beam size ({beam_size}), got {num_return}")
    device, batch, k = features.device, features.shape[0], beam_size
    if constraints is not None and len(constraints) != batch:
        raise ArgumentError(f"got constraints for {len(constraints)} images, features for {batch}")
    if batch == 0:  # as greedy decoding and sampling: nothing to decode
        return []
    tables = AutomatonTables.build(constraints or [[] for _ in range(batch)], device)
    groups = int(tables.top.max()) + 1 if batch else 1
    width = tables.tokens.shape[1]
    rows = batch * groups * k
    row_ids = torch.arange(rows, device=device)
    row_image = row_ids // (groups * k)
    tokens = torch.full((rows,), start_id, dtype=torch.long, device=device)
    scores = torch.full((rows,), float("-inf"), device=device)
    scores[::groups * k] = 0.0  # every image starts with one live beam, in group 0
    # On a CPU only the live rows are stepped (``state`` holds the states of ``state_rows``);
    # on CUDA every row is, as finding the live rows would be a round trip per step.
    compact = _live_rows_only(device)
    state_rows = row_ids[torch.isfinite(scores)] if compact else row_ids
    state = decoder.reorder_state(decoder.init_state(features), row_image[state_rows])
    automaton = tables.start[row_image]
    # Finished hypotheses, k slots per (image, group) and one dummy slot for scattered non-ends.
    slots = batch * groups * k
    fin_count = torch.zeros(batch * groups, dtype=torch.long, device=device)
    fin_step = torch.zeros(slots + 1, dtype=torch.long, device=device)
    fin_row = torch.zeros(slots + 1, dtype=torch.long, device=device)
    fin_lp = torch.full((slots + 1,), float("-inf"), device=device)
    fin_auto = torch.zeros(slots + 1, dtype=torch.long, device=device)
    fin_truncated = torch.zeros(slots + 1, dtype=torch.bool, device=device)
    words: list[torch.Tensor] = []  # words[t][r]: the t-th word of the prefix in row r
    parents: list[torch.Tensor] = []  # parents[t][r]: the row that prefix came from at step t
    masks = None
    image_tokens = tables.tokens[row_image]  # (rows, width): the phrase tokens of each row's image
    image_valid = tables.valid[row_image]
    for t in range(max_length + 1):
        log_probs, state = decoder.step(tokens[state_rows], state)
        if log_probs.shape[0] < rows:  # dead rows: any finite value, as their score is -inf
            log_probs = log_probs.new_zeros(rows, log_probs.shape[1]).index_copy_(0, state_rows, log_probs)
        vocab = log_probs.shape[-1]
        if masks is None:
            masks = _forbidden(vocab, banned, end_id, device)
        live = torch.isfinite(scores)
        if t == max_length:  # no room for more words: every live beam ends here, truncated
            group = (row_ids // k) % groups
            slot = row_image * groups + group
            dest = torch.where(live, slot * k + fin_count[slot] + row_ids % k, slots)
            end_lp = scores + log_probs[:, end_id].float()
            fin_step.scatter_(0, dest, torch.full_like(dest, t))
            fin_row.scatter_(0, dest, row_ids)
            fin_lp.scatter_(0, dest, end_lp)
            fin_truncated.scatter_(0, dest, torch.ones_like(live))
            fin_auto.scatter_(0, dest, automaton)
            fin_count += live.view(batch * groups, k).sum(1)
            break
        log_probs = log_probs.float() + masks[t < min_length]
        # Candidates: each row's best k + width tokens that meet no constraint (they keep the
        # row's group), and each of its image's phrase tokens (which may move it up).
        free = log_probs if phrase_only_from is None else log_probs[:, :phrase_only_from]
        top_lp, top_token = free.topk(min(free.shape[1], k + width), dim=1)
        next_auto = tables.reset[automaton].unsqueeze(1).expand_as(top_token)
        if width:
            is_phrase = ((top_token.unsqueeze(2) == image_tokens.unsqueeze(1)) & image_valid.unsqueeze(1)).any(2)
            top_lp = top_lp.masked_fill(is_phrase, float("-inf"))
            phrase_lp = log_probs.gather(1, image_tokens).masked_fill(~image_valid, float("-inf"))
            top_lp = torch.cat([top_lp, phrase_lp], 1)
            top_token = torch.cat([top_token, image_tokens], 1)
            next_auto = torch.cat([next_auto, tables.next_state[automaton]], 1)
        per_row = top_lp.shape[1]
        cand_score = (scores.unsqueeze(1) + top_lp).view(batch, -1)
        cand_token = top_token.reshape(batch, -1)
        cand_auto = next_auto.reshape(batch, -1)
        cand_row = row_ids.repeat_interleave(per_row).view(batch, -1)
        order = cand_score.argsort(dim=1, descending=True, stable=True)
        cand_score, cand_token = cand_score.gather(1, order), cand_token.gather(1, order)
        cand_auto, cand_row = cand_auto.gather(1, order), cand_row.gather(1, order)
        cand_group = tables.level[cand_auto]
        one_hot = F.one_hot(cand_group, groups)
        rank = (one_hot.cumsum(1) * one_hot).sum(2) - 1  # rank within its group, best first
        slot = torch.arange(batch, device=device).unsqueeze(1) * groups + cand_group
        room = k - fin_count[slot]
        accept = (rank < room) & torch.isfinite(cand_score)
        ends = accept & (cand_token == end_id)
        extend = accept & (cand_token != end_id)
        # Finished: into the next free slots of their (image, group).
        end_hot = one_hot * ends.unsqueeze(2)
        end_rank = (end_hot.cumsum(1) * end_hot).sum(2) - 1
        dest = torch.where(ends, slot * k + fin_count[slot] + end_rank, slots).view(-1)
        fin_step.scatter_(0, dest, torch.full_like(dest, t))
        fin_row.scatter_(0, dest, cand_row.view(-1))
        fin_lp.scatter_(0, dest, cand_score.view(-1))
        fin_auto.scatter_(0, dest, cand_auto.view(-1))
        fin_count += end_hot.sum(1).view(-1)
        # Live: to the front of their group's beam, in rank order; the other rows die.
        live_hot = one_hot * extend.unsqueeze(2)
        live_rank = (live_hot.cumsum(1) * live_hot).sum(2) - 1
        dest = torch.where(extend, slot * k + live_rank, rows).view(-1)
        new_scores = torch.full((rows + 1,), float("-inf"), device=device)
        new_scores.scatter_(0, dest, cand_score.view(-1))
        parent = torch.cat([row_ids, row_ids.new_zeros(1)]).scatter_(0, dest, cand_row.view(-1))[:rows]
        word = torch.full((rows + 1,), end_id, dtype=torch.long, device=device)
        word.scatter_(0, dest, cand_token.view(-1))
        new_auto = torch.cat([automaton, automaton.new_zeros(1)]).scatter_(0, dest, cand_auto.view(-1))[:rows]
        scores, tokens, automaton = new_scores[:rows], word[:rows], new_auto
        words.append(tokens)
        parents.append(parent)
        if compact:
            position = torch.empty_like(row_ids)
            position[state_rows] = torch.arange(state_rows.numel(), device=device)
            state_rows = row_ids[torch.isfinite(scores)]
            if not state_rows.numel():
                break
            state = decoder.reorder_state(state, position[parent[state_rows]])
        else:
            state = decoder.reorder_state(state, parent)
            if _should_check(t, device) and not bool(torch.isfinite(scores).any()):
                break
    return _collect(fin_count, fin_step, fin_row, fin_lp, fin_truncated, fin_auto, words, parents, tables,
                    groups, k, length_penalty, num_return)


def _collect(fin_count, fin_step, fin_row, fin_lp, fin_truncated, fin_auto, words, parents,
             tables: AutomatonTables, groups: int, k: int, length_penalty: float,
             num_return: int) -> list[list[Hypothesis]]:
    """The finished hypotheses, moved to the host once and traced back through the parents:
    those of the top group (all constraints met) by score, then, if they are too few, the
    others by the number of constraints they miss and their score."""
    counts = fin_count.cpu().tolist()
    met = tables.met[fin_auto].cpu().tolist()
    steps, rows, lps, truncated = (x.cpu().tolist() for x in (fin_step, fin_row, fin_lp, fin_truncated))
    words = torch.stack(words).cpu().tolist() if words else []
    parents = torch.stack(parents).cpu().tolist() if parents else []
    results = []
    for image, (top, need) in enumerate(zip(tables.top.cpu().tolist(), tables.required.cpu().tolist())):
        found: list[tuple[int, Hypothesis]] = []
        for group in range(top + 1):
            slot = image * groups + group
            for i in range(slot * k, slot * k + counts[slot]):
                tokens, row = [], rows[i]
                for t in range(steps[i] - 1, -1, -1):
                    tokens.append(words[t][row])
                    row = parents[t][row]
                tokens.reverse()
                score = _normalise(lps[i], len(tokens), length_penalty)
                found.append((group, Hypothesis(tuple(tokens), lps[i], score, truncated[i], need - met[i])))
        best = sorted((h for group, h in found if group == top), key=lambda h: h.score, reverse=True)
        rest = sorted((h for group, h in found if group != top), key=lambda h: (h.unmet, -h.score))
        results.append((best + rest)[:num_return])
    return results


@torch.no_grad()
def sample(decoder, features: torch.Tensor, start_id: int, end_id: int, max_length: int = DEFAULTS.max_length,
           min_length: int = 1, temperature: float = DEFAULTS.temperature, top_k: int | None = DEFAULTS.top_k,
           num_samples: int = 1, banned: Sequence[int] = (),
           generator: torch.Generator | None = None) -> list[list[Hypothesis]]:
    """Draw ``num_samples`` captions per image from the decoder's distribution.

    Each token is drawn from ``softmax(log_probs / temperature)``, restricted to the
    ``top_k`` most likely tokens when given. ``log_prob`` is reported under the
    model's own (untempered) distribution. The draws happen on the CPU with ``generator``
    (a CPU generator), so a seed gives the same captions on every device.
    """
    _check(features, max_length, min_length)
    if temperature <= 0:
        raise ArgumentError(f"temperature must be positive, got {temperature}")
    if top_k is not None and top_k < 1:
        raise ArgumentError(f"top_k must be at least 1, got {top_k}")
    device, batch = features.device, features.shape[0]
    rows = torch.arange(batch, device=device).repeat_interleave(num_samples)
    state = decoder.reorder_state(decoder.init_state(features), rows)
    n = rows.numel()
    tokens = torch.full((n,), start_id, dtype=torch.long, device=device)
    words = torch.full((n, max_length), end_id, dtype=torch.long)
    total = torch.zeros(n, dtype=torch.float64)
    done = torch.zeros(n, dtype=torch.bool)
    lengths = torch.full((n,), max_length, dtype=torch.long)
    masks = None
    for t in range(max_length + 1):
        log_probs, state = decoder.step(tokens, state)
        log_probs = log_probs.float().cpu()
        if masks is None:
            masks = _forbidden(log_probs.shape[-1], banned, end_id, torch.device("cpu"))
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
