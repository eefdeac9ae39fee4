""""a" or "an": the article agrees with how the next word sounds, in every caption.

The rule is decided while decoding, not by editing the text afterwards: after "a" the
words that take "an" are not candidates, and after "an" those that take "a" are not
(:class:`ArticleStepper`). So the printed caption is the token sequence that was scored
(:meth:`captioner.api.Captioner.score` gives its log-probability back). A word the decoder
never saw (:mod:`captioner.decoding.lexicon`) is read as its proxy, so the decoder chooses
the proxy's article; the text then writes the word's own, and reads it back as the proxy's.
Words that do not start with a letter (numbers, punctuation) are left free.
"""

from __future__ import annotations

from functools import lru_cache

import torch

# Spelled with a vowel, said with a consonant ("a unicorn", "a European", "a one-way street")
CONSONANT_SOUND = ("uni", "use", "usu", "uti", "ure", "uri", "uku", "eu", "ewe", "one", "once")
# ... except these ("an uninvited guest", "an unidentified object")
VOWEL_SOUND = ("unin", "unim", "unid")
# Spelled with a consonant, said with a vowel ("an hour", "an honest man", "an heir")
SILENT_H = ("hour", "honest", "honour", "honor", "heir")


def indefinite_article(word: str) -> str:
    """"a" or "an" before ``word``, by its first letters (good enough for the words of captions)."""
    word = word.lower()
    if word.startswith(SILENT_H):
        return "an"
    if word.startswith(CONSONANT_SOUND) and not word.startswith(VOWEL_SOUND):
        return "a"
    return "an" if word[:1] in "aeiou" else "a"


@lru_cache(maxsize=16)
def takes_an(words: tuple[str, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """Masks over ``words``: those that take "an", and those that take "a" (both start with a letter).
    Kept for the last few vocabularies: 6 ms for 3,221 words on these cores."""
    lettered = [w[:1].isalpha() for w in words]
    an = [ok and indefinite_article(w) == "an" for ok, w in zip(lettered, words)]
    return torch.tensor(an), torch.tensor([ok and not a for ok, a in zip(lettered, an)])


class ArticleStepper:
    """A stepper whose next word agrees with an "a" or "an" just written (see the module)."""

    def __init__(self, stepper, a_id: int, an_id: int, after_a: torch.Tensor, after_an: torch.Tensor,
                 rows_only: bool | None = None):
        self.stepper = stepper
        self.rows, self.device, self.state = stepper.rows, stepper.device, stepper.state
        self.reorder = stepper.reorder
        self.a_id, self.an_id = a_id, an_id
        self.rows_only = stepper.device.type == "cpu" if rows_only is None else rows_only
        # the words banned after no article, "a" and "an"
        self.banned = torch.stack([torch.zeros_like(after_a), after_a, after_an]).to(stepper.device)

    def step(self, tokens: torch.Tensor, state):
        """The step's log-probabilities with -inf for the words that disagree with an article just
        written. With ``rows_only`` (a CPU's default) only the rows after an article are touched:
        finding them is free there. Otherwise (CUDA) every row is, with no round trip to the host."""
        log_probs, state = self.stepper.step(tokens, state)
        article = (tokens == self.a_id).long() + 2 * (tokens == self.an_id).long()  # 0: none, 1: a, 2: an
        if not self.rows_only:
            return log_probs.masked_fill(self.banned[article], float("-inf")), state
        rows = article.nonzero().squeeze(1)
        if rows.numel():
            log_probs[rows] = log_probs[rows].masked_fill(self.banned[article[rows]], float("-inf"))
        return log_probs, state


def agree_articles(stepper, vocab, rows_only: bool | None = None):
    """``stepper`` with the article rule, for ``vocab`` (a Vocabulary, or a Lexicon whose extra
    words sound as their proxies, as the network reads them); itself when the vocabulary lacks
    "a" or "an"."""
    stoi = vocab.stoi
    if "a" not in stoi or "an" not in stoi:
        return stepper
    an, a = takes_an(tuple(getattr(vocab, "fed_words", vocab.itos)))
    return ArticleStepper(stepper, stoi["a"], stoi["an"], after_a=an, after_an=a, rows_only=rows_only)
