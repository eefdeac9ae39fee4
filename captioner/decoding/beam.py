"""Beam search over a batch of images at once, optionally with lexical constraints (a grid
beam search), its bookkeeping on the stepper's device.

The beam of every image is laid out as ``groups x beam_size`` rows (a group per level of
the constraint automaton; one group without constraints), all images' rows in one batch.
Each step: every live row proposes candidates (:func:`_candidates`), each image keeps the
best of them per group (:func:`_advance`), and those ending in ``<end>`` go to the
:class:`_Finished` record, which is moved to the host and traced back once, at the end.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..errors import ArgumentError
from .constraints import AutomatonTables, Constraint
from .search import Hypothesis, Stepper, Stepping, check_lengths, forbidden_masks, normalise
from .settings import DEFAULTS


@dataclass(frozen=True)
class _Grid:
    """The layout of one search: ``batch`` images x ``groups`` x ``k`` rows."""

    batch: int
    groups: int
    k: int
    tables: AutomatonTables
    row_ids: torch.Tensor
    row_image: torch.Tensor  # the image of each row
    image_tokens: torch.Tensor  # (rows, width): the phrase tokens of each row's image
    image_valid: torch.Tensor

    @classmethod
    def build(cls, batch: int, k: int, constraints, device: torch.device) -> "_Grid":
        tables = AutomatonTables.build(constraints or [[] for _ in range(batch)], device)
        groups = int(tables.top.max()) + 1
        row_ids = torch.arange(batch * groups * k, device=device)
        row_image = row_ids // (groups * k)
        return cls(batch, groups, k, tables, row_ids, row_image, tables.tokens[row_image], tables.valid[row_image])

    @property
    def rows(self) -> int:
        return self.batch * self.groups * self.k

    def slot(self, image: torch.Tensor, group: torch.Tensor) -> torch.Tensor:
        """The (image, group) beam a row or candidate belongs to."""
        return image * self.groups + group


@dataclass
class _Finished:
    """Finished hypotheses: ``k`` slots per (image, group), filled in order (``count``), and
    one dummy slot at the end where scatters send everything that did not finish."""

    count: torch.Tensor  # (batch * groups,)
    step: torch.Tensor  # the step each ended at (its number of words)
    row: torch.Tensor  # the row whose prefix it extends
    log_prob: torch.Tensor
    automaton: torch.Tensor
    truncated: torch.Tensor

    @classmethod
    def empty(cls, grid: _Grid, device: torch.device) -> "_Finished":
        slots = grid.rows + 1

        def zeros(dtype=torch.long):
            return torch.zeros(slots, dtype=dtype, device=device)

        return cls(torch.zeros(grid.batch * grid.groups, dtype=torch.long, device=device), zeros(), zeros(),
                   torch.full((slots,), float("-inf"), device=device), zeros(), zeros(torch.bool))

    def add(self, dest: torch.Tensor, t: int, row, log_prob, automaton, truncated: bool = False) -> None:
        """Store the entries whose ``dest`` is a real slot (the others go to the dummy slot)."""
        self.step.scatter_(0, dest, torch.full_like(dest, t))
        self.row.scatter_(0, dest, row)
        self.log_prob.scatter_(0, dest, log_prob)
        self.automaton.scatter_(0, dest, automaton)
        if truncated:
            self.truncated.scatter_(0, dest, torch.ones_like(dest, dtype=torch.bool))

    def collect(self, grid: _Grid, words: list[torch.Tensor], parents: list[torch.Tensor], length_penalty: float,
                num_return: int) -> list[list[Hypothesis]]:
        """Moved to the host once and traced back through ``parents``: those of the top group (all
        constraints met) by score, then, if they are too few, the others by the number of
        constraints they miss and their score."""
        counts = self.count.cpu().tolist()
        met = grid.tables.met[self.automaton].cpu().tolist()
        steps, rows, lps, truncated = (x.cpu().tolist() for x in (self.step, self.row, self.log_prob, self.truncated))
        words = torch.stack(words).cpu().tolist() if words else []
        parents = torch.stack(parents).cpu().tolist() if parents else []
        results = []
        for image, (top, need) in enumerate(zip(grid.tables.top.cpu().tolist(), grid.tables.required.cpu().tolist())):
            found: list[tuple[int, Hypothesis]] = []
            for group in range(top + 1):
                slot = image * grid.groups + group
                for i in range(slot * grid.k, slot * grid.k + counts[slot]):
                    tokens, row = [], rows[i]
                    for t in range(steps[i] - 1, -1, -1):
                        tokens.append(words[t][row])
                        row = parents[t][row]
                    tokens.reverse()
                    score = normalise(lps[i], len(tokens), length_penalty)
                    found.append((group, Hypothesis(tuple(tokens), lps[i], score, truncated[i], need - met[i])))
            best = sorted((h for group, h in found if group == top), key=lambda h: h.score, reverse=True)
            rest = sorted((h for group, h in found if group != top), key=lambda h: (h.unmet, -h.score))
            results.append((best + rest)[:num_return])
        return results


@dataclass(frozen=True)
class BeamStep:
    """What the beam holds after step ``t`` (the ``t + 1``-th word), for an observer of the
    search. Rows are laid out image by image, ``rows_per_image`` each (constraint groups x beam
    size); ``scores`` is -inf for a dead row, and ``tokens[r]`` extends the prefix of row
    ``parents[r]`` of the step before. Finished hypotheses have left the beam."""

    t: int
    rows_per_image: int
    scores: torch.Tensor
    tokens: torch.Tensor
    parents: torch.Tensor


@dataclass(frozen=True)
class _Candidates:
    """Each image's candidate extensions (batch, n), best first."""

    score: torch.Tensor
    token: torch.Tensor
    automaton: torch.Tensor
    row: torch.Tensor


def _candidates(grid: _Grid, log_probs: torch.Tensor, scores: torch.Tensor, automaton: torch.Tensor,
                phrase_only_from: int | None) -> _Candidates:
    """Each row's best ``k + width`` tokens that meet no constraint (they keep the row's group),
    and each of its image's phrase tokens (which may move it up a group)."""
    width = grid.tables.tokens.shape[1]
    free = log_probs if phrase_only_from is None else log_probs[:, :phrase_only_from]
    top_lp, top_token = free.topk(min(free.shape[1], grid.k + width), dim=1)
    next_auto = grid.tables.reset[automaton].unsqueeze(1).expand_as(top_token)
    if width:
        tokens, valid = grid.image_tokens, grid.image_valid
        is_phrase = ((top_token.unsqueeze(2) == tokens.unsqueeze(1)) & valid.unsqueeze(1)).any(2)
        top_lp = top_lp.masked_fill(is_phrase, float("-inf"))
        phrase_lp = log_probs.gather(1, tokens).masked_fill(~valid, float("-inf"))
        top_lp = torch.cat([top_lp, phrase_lp], 1)
        top_token = torch.cat([top_token, tokens], 1)
        next_auto = torch.cat([next_auto, grid.tables.next_state[automaton]], 1)
    per_row = top_lp.shape[1]
    score = (scores.unsqueeze(1) + top_lp).view(grid.batch, -1)
    order = score.argsort(dim=1, descending=True, stable=True)
    row = grid.row_ids.repeat_interleave(per_row).view(grid.batch, -1)
    return _Candidates(score.gather(1, order), top_token.reshape(grid.batch, -1).gather(1, order),
                       next_auto.reshape(grid.batch, -1).gather(1, order), row.gather(1, order))


def _rank(one_hot: torch.Tensor) -> torch.Tensor:
    """The rank of each candidate among the marked ones of its group, best first."""
    return (one_hot.cumsum(1) * one_hot).sum(2) - 1


def _advance(grid: _Grid, cand: _Candidates, finished: _Finished, automaton: torch.Tensor, end_id: int, t: int):
    """Keep, per (image, group), the best ``k - finished`` candidates: those ending in ``<end>``
    go to ``finished``, the others become the group's live rows, in rank order (every other
    row dies). Returns the new rows' scores, words, automaton states and parent rows."""
    k, rows = grid.k, grid.rows
    group = grid.tables.level[cand.automaton]
    one_hot = F.one_hot(group, grid.groups)
    slot = grid.slot(torch.arange(grid.batch, device=group.device).unsqueeze(1), group)
    accept = (_rank(one_hot) < k - finished.count[slot]) & torch.isfinite(cand.score)
    ends = accept & (cand.token == end_id)
    extend = accept & (cand.token != end_id)
    end_hot = one_hot * ends.unsqueeze(2)
    dest = torch.where(ends, slot * k + finished.count[slot] + _rank(end_hot), rows).view(-1)
    finished.add(dest, t, cand.row.view(-1), cand.score.view(-1), cand.automaton.view(-1))
    finished.count += end_hot.sum(1).view(-1)
    dest = torch.where(extend, slot * k + _rank(one_hot * extend.unsqueeze(2)), rows).view(-1)
    scores = torch.full((rows + 1,), float("-inf"), device=group.device).scatter_(0, dest, cand.score.view(-1))
    parent = torch.cat([grid.row_ids, grid.row_ids.new_zeros(1)]).scatter_(0, dest, cand.row.view(-1))
    word = torch.full((rows + 1,), end_id, dtype=torch.long, device=group.device).scatter_(0, dest, cand.token.view(-1))
    automaton = torch.cat([automaton, automaton.new_zeros(1)]).scatter_(0, dest, cand.automaton.view(-1))
    return scores[:rows], word[:rows], automaton[:rows], parent[:rows]


def _finish_truncated(grid: _Grid, finished: _Finished, scores, end_lp, automaton, t: int) -> None:
    """At ``max_length`` every live row ends, truncated."""
    live = torch.isfinite(scores)
    slot = grid.slot(grid.row_image, (grid.row_ids // grid.k) % grid.groups)
    dest = torch.where(live, slot * grid.k + finished.count[slot] + grid.row_ids % grid.k, grid.rows)
    finished.add(dest, t, grid.row_ids, scores + end_lp, automaton, truncated=True)
    finished.count += live.view(grid.batch * grid.groups, grid.k).sum(1)


def _check_arguments(stepper: Stepper, beam_size: int, num_return: int, max_length: int, min_length: int,
                     constraints) -> None:
    check_lengths(max_length, min_length)
    if beam_size < 1:
        raise ArgumentError(f"beam_size must be at least 1, got {beam_size}")
    if not 1 <= num_return <= beam_size:
        raise ArgumentError(f"num_return must be between 1 and the beam size ({beam_size}), got {num_return}")
    if constraints is not None and len(constraints) != stepper.rows:
        raise ArgumentError(f"got constraints for {len(constraints)} images, features for {stepper.rows}")


@torch.no_grad()
def beam_search(stepper: Stepper, start_id: int, end_id: int, beam_size: int = DEFAULTS.beam_size,
                max_length: int = DEFAULTS.max_length, min_length: int = 1,
                length_penalty: float = DEFAULTS.length_penalty, num_return: int = 1, banned: Sequence[int] = (),
                constraints: Sequence[Sequence[Constraint]] | None = None, phrase_only_from: int | None = None,
                stepping: Stepping | None = None,
                observer: Callable[[BeamStep], None] | None = None) -> list[list[Hypothesis]]:
    """The ``num_return`` best hypotheses of every image, best first.

    Without constraints, each step extends every live beam by every token and keeps, per
    image, the best ``beam_size - finished`` extensions by total log-probability;
    extensions that end with ``<end>`` leave the beam as finished hypotheses (so the beam
    shrinks, and beam size 1 is exactly greedy decoding). Finished hypotheses are ranked by
    ``log_prob / (words + 1) ** length_penalty``; 0 ranks by plain log-probability, which
    favours short captions, 1 by the mean log-probability per token.

    ``constraints[b]`` lists the constraints of image b (see
    :class:`captioner.decoding.constraints.Constraint`). Then the search is a grid beam
    search: the hypotheses are grouped by how many constraint tokens they cover, each group
    keeps its own beam of ``beam_size`` with the rule above, and a token that advances a
    constraint moves its hypothesis up. The result is ranked from the group that meets all
    constraints; when it has fewer than ``num_return`` finished captions (none found
    within ``max_length``), the groups below fill the list, best group first, and their
    hypotheses say how many constraints they miss (``unmet``). Token ids from
    ``phrase_only_from`` on (words a :class:`captioner.decoding.lexicon.Lexicon` added) appear
    only where an image's constraints name them. ``observer``, when given, is called with a
    :class:`BeamStep` after every step (to show what the beam held; it changes nothing).
    """
    _check_arguments(stepper, beam_size, num_return, max_length, min_length, constraints)
    if stepper.rows == 0:  # as greedy decoding and sampling: nothing to decode
        return []
    device = stepper.device
    stepping = stepping or Stepping.default(device)
    grid = _Grid.build(stepper.rows, beam_size, constraints, device)
    tokens = torch.full((grid.rows,), start_id, dtype=torch.long, device=device)
    scores = torch.full((grid.rows,), float("-inf"), device=device)
    scores[::grid.groups * grid.k] = 0.0  # every image starts with one live beam, in group 0
    # ``state`` holds the states of ``state_rows``: the live rows, or every row.
    state_rows = grid.row_ids[torch.isfinite(scores)] if stepping.live_rows else grid.row_ids
    state = stepper.reorder(stepper.state, grid.row_image[state_rows])
    automaton = grid.tables.start[grid.row_image]
    finished = _Finished.empty(grid, device)
    words: list[torch.Tensor] = []  # words[t][r]: the t-th word of the prefix in row r
    parents: list[torch.Tensor] = []  # parents[t][r]: the row that prefix came from at step t
    masks = None
    for t in range(max_length + 1):
        log_probs, state = stepper.step(tokens[state_rows], state)
        if log_probs.shape[0] < grid.rows:  # dead rows: any finite value, as their score is -inf
            log_probs = log_probs.new_zeros(grid.rows, log_probs.shape[1]).index_copy_(0, state_rows, log_probs)
        if masks is None:
            masks = forbidden_masks(log_probs.shape[-1], banned, end_id, device)
        if t == max_length:  # no room for more words: every live beam ends here, truncated
            _finish_truncated(grid, finished, scores, log_probs[:, end_id].float(), automaton, t)
            break
        log_probs = log_probs.float() + masks[t < min_length]
        cand = _candidates(grid, log_probs, scores, automaton, phrase_only_from)
        scores, tokens, automaton, parent = _advance(grid, cand, finished, automaton, end_id, t)
        words.append(tokens)
        parents.append(parent)
        if observer is not None:
            observer(BeamStep(t, grid.groups * grid.k, scores, tokens, parent))
        if stepping.live_rows:
            position = torch.empty_like(grid.row_ids)
            position[state_rows] = torch.arange(state_rows.numel(), device=device)
            state_rows = grid.row_ids[torch.isfinite(scores)]
            if not state_rows.numel():
                break
            state = stepper.reorder(state, position[parent[state_rows]])
        else:
            state = stepper.reorder(state, parent)
            if stepping.check(t) and not bool(torch.isfinite(scores).any()):
                break
    return finished.collect(grid, words, parents, length_penalty, num_return)
