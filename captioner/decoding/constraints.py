"""Lexical constraints: words a caption must contain, and the automaton that tracks them.

A :class:`Constraint` is a disjunction: the caption meets it when it contains any one of
its phrases (``cat|kitten|tabby``; a phrase is one or more token ids in a row). For the
constrained beam search (:func:`captioner.decoding.search.beam_search`) the constraints of
one image become a small finite-state machine (:class:`ConstraintAutomaton`): a state
records, per constraint, either "met" or the longest end of the caption that starts one of
its phrases (an Aho-Corasick automaton per constraint, :class:`_Matcher`); a token that
occurs in no phrase sends the unmet constraints back to their start. Its states are enumerated up front, so the
search can follow them with table look-ups on the device.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ..errors import ArgumentError


@dataclass(frozen=True)
class Constraint:
    """Any one of ``phrases`` (each a non-empty tuple of token ids) must appear in the caption.
    ``label`` says what it stands for in reports (e.g. ``"cat"``)."""

    phrases: tuple[tuple[int, ...], ...]
    label: str = ""

    def __post_init__(self):
        if not self.phrases or any(not phrase for phrase in self.phrases):
            raise ArgumentError(f"constraint {self.label!r} has an empty phrase")


class _Matcher:
    """The phrases of one constraint as an Aho-Corasick automaton over token ids.

    A node is the longest suffix of the caption so far that is a proper prefix of a phrase
    (node 0: none); ``MET`` (= -1) once a phrase has occurred. After a token that does not
    extend the current prefix, the failure links fall back to the longest shorter suffix
    that still starts a phrase, so "A A B" is found in "A A A B" and the alternative "B D"
    of ``A B C|B D`` in "A B D".
    """

    MET = -1

    def __init__(self, phrases: Sequence[Sequence[int]]):
        self.children: list[dict[int, int]] = [{}]
        self.depth = [0]
        self.ends: list[bool] = [False]  # a phrase ends at this node
        for phrase in phrases:
            node = 0
            for token in phrase:
                if token not in self.children[node]:
                    self.children[node][token] = len(self.children)
                    self.children.append({})
                    self.depth.append(self.depth[node] + 1)
                    self.ends.append(False)
                node = self.children[node][token]
            self.ends[node] = True
        self.length = max(len(p) for p in phrases)
        self.fail = [0] * len(self.children)
        queue = list(self.children[0].values())
        for node in queue:  # breadth first: a node's failure is known before its children's
            for token, child in self.children[node].items():
                fallback = self.fail[node]
                while fallback and token not in self.children[fallback]:
                    fallback = self.fail[fallback]
                target = self.children[fallback].get(token, 0)
                self.fail[child] = target if target != child else 0
                self.ends[child] = self.ends[child] or self.ends[self.fail[child]]
                queue.append(child)

    def progress(self, node: int) -> int:
        """Tokens of the constraint covered: the depth into a phrase, or the longest phrase's
        length once met (so every way of meeting it counts the same)."""
        return self.length if node == self.MET else self.depth[node]

    def step(self, node: int, token: int | None) -> int:
        """The node after ``token`` (None: a token in no phrase)."""
        if node == self.MET:
            return self.MET
        if token is None:
            return 0
        while node and token not in self.children[node]:
            node = self.fail[node]
        node = self.children[node].get(token, 0)
        return self.MET if self.ends[node] else node


MAX_CONSTRAINTS = 8  # per image
MAX_PHRASE_WORDS = 8  # per alternative: a caption has 20 words by default
MAX_LEVELS = 24  # constraint tokens covered when all are met: the grid search's groups, less one
MAX_STATES = 4096  # joint automaton states per image


class ConstraintAutomaton:
    """The joint state of one image's constraints, enumerated from the start state.

    ``tokens``: the tokens that occur in some phrase (any other token is a "reset");
    ``next_state[s][i]``: the state after ``tokens[i]`` in state ``s``; ``reset[s]``: the
    state after any other token; ``met[s]``: how many constraints state ``s`` meets;
    ``level[s]``: how many constraint tokens it has covered (the grid search's group, as in
    Hokamp and Liu's grid beam search: a phrase's first word already moves a hypothesis up,
    so partial phrases are not crowded out of the beam); ``top`` is the level of meeting
    all constraints. State 0 is the start. Constraints that would cost too much (more than
    ``max_levels`` tokens to cover, ``max_states`` states, a phrase over MAX_PHRASE_WORDS
    words, over MAX_CONSTRAINTS constraints) are refused with an :class:`ArgumentError`.
    """

    def __init__(self, constraints: Sequence[Constraint], max_levels: int = MAX_LEVELS, max_states: int = MAX_STATES):
        _check_size(constraints, max_levels)
        self.constraints = list(constraints)
        tries = [_Matcher(c.phrases) for c in self.constraints]
        self.tokens = sorted({t for c in self.constraints for p in c.phrases for t in p})
        start = tuple(0 for _ in tries)
        index = {start: 0}
        states = [start]
        self.next_state: list[list[int]] = []
        self.reset: list[int] = []
        position = 0
        while position < len(states):
            state = states[position]
            position += 1
            row = []
            for token in [*self.tokens, None]:
                after = tuple(t.step(s, token) for t, s in zip(tries, state))
                if after not in index and len(states) == max_states:
                    raise ArgumentError(f"the constraints {_labels(constraints)} have too many ways of being partly "
                                        f"met to search for together (over {max_states}); give fewer or shorter ones")
                if after not in index:
                    index[after] = len(states)
                    states.append(after)
                row.append(index[after])
            self.next_state.append(row[:-1])
            self.reset.append(row[-1])
        self.met = [sum(s == _Matcher.MET for s in state) for state in states]
        self.level = [sum(t.progress(s) for t, s in zip(tries, state)) for state in states]
        self.top = sum(t.length for t in tries)

    @property
    def size(self) -> int:
        return len(self.met)


def _labels(constraints: Sequence[Constraint]) -> str:
    text = ", ".join(repr(c.label) for c in constraints if c.label)
    return text[:200] + ("..." if len(text) > 200 else "") if text else f"({len(constraints)})"


def _check_size(constraints: Sequence[Constraint], max_levels: int) -> None:
    """Refuse constraints whose search would cost too much (a phrase too long, too many tokens
    to cover, too many constraints), before anything is built."""
    if len(constraints) > MAX_CONSTRAINTS:
        raise ArgumentError(f"{len(constraints)} word constraints for one image; at most {MAX_CONSTRAINTS} "
                            "can be searched for together")
    for constraint in constraints:
        longest = max(len(p) for p in constraint.phrases)
        if longest > MAX_PHRASE_WORDS:
            raise ArgumentError(f"constraint {_labels([constraint])} has a phrase of {longest} words; at most "
                                f"{MAX_PHRASE_WORDS} words fit in one")
    levels = sum(max(len(p) for p in c.phrases) for c in constraints)
    if levels > max_levels:
        raise ArgumentError(f"the constraints {_labels(constraints)} cover {levels} words together; at most "
                            f"{max_levels} fit in one search")


def word_constraints(alternatives: Sequence[Sequence[str]]) -> list[Constraint]:
    """Constraints over words (each alternative split into words, each word its own id), to check
    what a search for them would cost before any token id exists."""
    ids: dict[str, int] = {}
    return [Constraint(tuple(tuple(ids.setdefault(w, len(ids)) for w in phrase.split()) for phrase in group),
                       "|".join(group)) for group in alternatives]


@dataclass
class AutomatonTables:
    """The automata of a batch of images as device tensors, states numbered globally.

    ``start[b]``: image b's start state; ``tokens[b, i]`` / ``valid[b, i]``: its phrase
    tokens (padded); ``next_state[s, i]``, ``reset[s]``, ``met[s]``: as in
    :class:`ConstraintAutomaton`; ``top[b]``: the level at which image b meets all its
    constraints, ``required[b]`` how many it has.
    """

    start: torch.Tensor
    tokens: torch.Tensor
    valid: torch.Tensor
    next_state: torch.Tensor
    reset: torch.Tensor
    met: torch.Tensor
    level: torch.Tensor
    top: torch.Tensor
    required: torch.Tensor

    @classmethod
    def build(cls, per_image: Sequence[Sequence[Constraint]], device: torch.device) -> "AutomatonTables":
        automata = [ConstraintAutomaton(c) for c in per_image]
        width = max((len(a.tokens) for a in automata), default=0)
        start, tokens, valid, next_state, reset, met, level = [], [], [], [], [], [], []
        for automaton in automata:
            offset = len(met)
            start.append(offset)
            pad = width - len(automaton.tokens)
            tokens.append(automaton.tokens + [0] * pad)
            valid.append([True] * len(automaton.tokens) + [False] * pad)
            for s in range(automaton.size):
                row = [offset + n for n in automaton.next_state[s]]
                next_state.append(row + [offset + s] * pad)
                reset.append(offset + automaton.reset[s])
            met.extend(automaton.met)
            level.extend(automaton.level)

        def tensor(values, dtype=torch.long):
            return torch.tensor(values, dtype=dtype, device=device)

        return cls(
            start=tensor(start), tokens=tensor(tokens).view(len(automata), width),
            valid=tensor(valid, torch.bool).view(len(automata), width),
            next_state=tensor(next_state).view(len(met), width), reset=tensor(reset), met=tensor(met),
            level=tensor(level), top=tensor([a.top for a in automata]),
            required=tensor([len(a.constraints) for a in automata]),
        )


def parse_alternatives(text: str, what: str = "constraint") -> list[str]:
    """``"cat|kitten"`` -> ``["cat", "kitten"]`` (lower-case, spaces tidied); refuses an empty
    constraint, alternatives without a letter and control or format characters (ESC, NUL,
    U+202E...: they would go raw into a caption), naming the value."""
    unprintable = [ch for ch in str(text) if unicodedata.category(ch) in ("Cc", "Cf") and not ch.isspace()]
    if unprintable:
        raise ArgumentError(f"{what} {text!r} holds the unprintable character {ascii(unprintable[0])}; give words "
                            "such as cat|kitten")
    alternatives = [" ".join(part.lower().split()) for part in str(text).split("|")]
    if not any(alternatives):
        raise ArgumentError(f"{what} {text!r} is empty; give a word, or alternatives such as cat|kitten")
    for alternative in alternatives:
        if not any(ch.isalpha() for ch in alternative):
            raise ArgumentError(f"{what} {text!r}: {alternative!r} has no letters; give words such as cat|kitten")
    return list(dict.fromkeys(alternatives))
