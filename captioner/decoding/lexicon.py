"""Words the decoder never saw: a vocabulary extended with stand-ins, as in DCC.

A constraint may name a word outside a checkpoint's vocabulary ("kangaroo"). Following
Deep Compositional Captioning (Hendricks et al., CVPR 2016), such a word is decoded as a
copy of a known word, its *proxy*: it gets the proxy's embedding (so the words after it are
predicted as after the proxy) and the proxy's output score (so it is as likely as the
proxy where the proxy would fit). Rather than editing the weights, :class:`Lexicon` wraps
the search's stepper: extra token ids ``V, V+1, ...`` are fed to the network as their proxies
and scored with their proxies' log-probabilities. The caption then reads "a kangaroo on
the grass" where the model would have written "a dog on the grass". Choosing a good
proxy is the caller's job (:mod:`captioner.guidance.proxies`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from ..data.vocab import Vocabulary, detokenize, tokenize
from ..errors import ArgumentError

VOWEL_SOUND_EXCEPTIONS = ("uni", "use", "usu", "euro", "one", "once")  # "a unicorn", "a European"
SILENT_H = ("hour", "honest", "honour", "honor", "heir")  # "an hour"


def indefinite_article(word: str) -> str:
    """"a" or "an" before ``word``, by its first letters (good enough for nouns)."""
    word = word.lower()
    if word.startswith(SILENT_H):
        return "an"
    if word.startswith(VOWEL_SOUND_EXCEPTIONS):
        return "a"
    return "an" if word[:1] in "aeiou" else "a"


class Lexicon:
    """A :class:`Vocabulary` plus extra words, each decoded as a copy of a known word.

    ``extra`` maps each new word (one token, possibly with spaces, e.g. ``"polar bear"``)
    to the id of its proxy in ``vocab``. It has the vocabulary's special ids and
    ``never_generated``, so :func:`captioner.decoding.decode` takes it in place of one.
    """

    def __init__(self, vocab: Vocabulary, extra: Mapping[str, int] | None = None):
        self.vocab = vocab
        self.extra_words = list(extra or {})
        self.proxies = [int(p) for p in (extra or {}).values()]
        for word, proxy in zip(self.extra_words, self.proxies):
            if word in vocab:
                raise ArgumentError(f"{word!r} is already in the vocabulary; it needs no proxy")
            if not 0 <= proxy < len(vocab) or proxy in vocab.never_generated or proxy == vocab.end_id:
                raise ArgumentError(f"proxy of {word!r} must be an ordinary word of the vocabulary, got id {proxy}")
        self.ids = {word: len(vocab) + i for i, word in enumerate(self.extra_words)}
        self.start_id, self.end_id, self.pad_id, self.unk_id = vocab.start_id, vocab.end_id, vocab.pad_id, vocab.unk_id
        self.never_generated = vocab.never_generated
        self.phrase_only_from = len(vocab) if self.extra_words else None

    def fed_ids(self, ids: torch.Tensor) -> torch.Tensor:
        """``ids`` with every added word replaced by its proxy: what the network itself reads."""
        if not self.extra_words:
            return ids
        proxies = torch.tensor(self.proxies, dtype=ids.dtype, device=ids.device)
        extra = ids >= len(self.vocab)
        return torch.where(extra, proxies[(ids - len(self.vocab)).clamp(0, len(self.proxies) - 1)], ids)

    def __len__(self) -> int:
        return len(self.vocab) + len(self.extra_words)

    def phrase_ids(self, phrase: str) -> tuple[int, ...]:
        """The token ids of ``phrase``: vocabulary words as they are, an extra word as its own id.
        Raises :class:`ArgumentError` for a word that is neither."""
        if phrase in self.ids:
            return (self.ids[phrase],)
        ids = []
        for word in tokenize(phrase):
            if word in self.ids:
                ids.append(self.ids[word])
            elif word in self.vocab:
                ids.append(self.vocab.stoi[word])
            else:
                raise ArgumentError(f"{word!r} is not in the vocabulary and has no proxy")
        return tuple(ids)

    def words(self, ids: Sequence[int]) -> list[str]:
        return self.vocab.decode(ids, self.extra_words)

    def to_text(self, ids: Sequence[int]) -> str:
        """The caption of ``ids``, with "a"/"an" made to agree with the extra words that follow them
        (the proxy chose the article for itself)."""
        words = self.words(ids)
        extra = set(self.extra_words)
        for i in range(len(words) - 1):
            if words[i] in ("a", "an") and words[i + 1] in extra:
                words[i] = indefinite_article(words[i + 1])
        return detokenize(words)

    def wrap(self, stepper):
        """``stepper`` (:class:`captioner.decoding.search.Stepper`) over this lexicon: itself when
        there are no extra words."""
        return stepper if not self.extra_words else _ProxyStepper(stepper, len(self.vocab), self.proxies)


class _ProxyStepper:
    """A stepper whose ids past ``base`` are fed and scored as their proxies."""

    def __init__(self, stepper, base: int, proxies: Sequence[int]):
        self.stepper = stepper
        self.rows, self.device, self.state = stepper.rows, stepper.device, stepper.state
        self.base = base
        self.proxies = torch.tensor(proxies, dtype=torch.long, device=stepper.device)
        self.reorder = stepper.reorder

    def step(self, tokens, state):
        extra = tokens >= self.base
        fed = torch.where(extra, self.proxies[(tokens - self.base).clamp(min=0, max=len(self.proxies) - 1)], tokens)
        log_probs, state = self.stepper.step(fed, state)
        return torch.cat([log_probs, log_probs[:, self.proxies]], dim=1), state
