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
from .articles import indefinite_article
from ..errors import ArgumentError

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
        """The caption of ``ids``. An extra word is decoded as its proxy, so the "a" or "an" before
        it agrees with the proxy (:mod:`captioner.decoding.articles`); the text gives it the
        article of the extra word itself, and :meth:`encode_text` reads it back as the proxy's."""
        words = self.words(ids)
        extra = set(self.extra_words)
        for i in range(len(words) - 1):
            if words[i] in ("a", "an") and words[i + 1] in extra:
                words[i] = indefinite_article(words[i + 1])
        return detokenize(words)

    @property
    def fed_words(self) -> list[str]:
        """Every id's word as the network reads it: an extra word as its proxy."""
        return [*self.vocab.itos, *(self.vocab.itos[p] for p in self.proxies)]

    @property
    def itos(self) -> list[str]:
        """Every word by id: the vocabulary's, then the extra words."""
        return [*self.vocab.itos, *self.extra_words]

    @property
    def stoi(self) -> dict[str, int]:
        return {**self.vocab.stoi, **self.ids}

    def encode_text(self, caption: str) -> list[int]:
        """The ids of a caption's words, as :meth:`to_text` writes them: an extra word (one or more
        words) as its own id, a vocabulary word as itself, anything else as ``<unk>``; "a" or
        "an" before an extra word as its proxy's article."""
        tokens, ids, words, i = tokenize(caption), [], [], 0
        longest = max((len(w.split()) for w in self.extra_words), default=1)
        while i < len(tokens):
            for n in range(min(longest, len(tokens) - i), 0, -1):
                phrase = " ".join(tokens[i:i + n])
                if phrase in self.ids and (n > 1 or phrase not in self.vocab):
                    ids.append(self.ids[phrase])
                    break
            else:
                n, phrase = 1, tokens[i]
                ids.append(self.vocab.stoi.get(phrase, self.unk_id))
            words.append(phrase)
            i += n
        first_extra = len(self.vocab)
        for i in range(len(ids) - 1):
            if words[i] in ("a", "an") and ids[i + 1] >= first_extra:
                article = indefinite_article(self.vocab.itos[self.proxies[ids[i + 1] - first_extra]])
                ids[i] = self.vocab.stoi.get(article, ids[i])
        return ids

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
