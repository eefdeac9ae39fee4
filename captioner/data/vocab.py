"""Tokenising captions and the vocabulary that maps words to ids and back.

Tokenisation is nltk's Treebank tokenizer on lower-cased text, which needs no
downloaded nltk data. The vocabulary is plain data (a word list and a few
settings), stored as JSON-compatible values inside checkpoints: never a pickled
class.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence

from nltk.tokenize import TreebankWordTokenizer
from nltk.tokenize.treebank import TreebankWordDetokenizer

PAD, START, END, UNK = "<pad>", "<start>", "<end>", "<unk>"
SPECIALS = (PAD, START, END, UNK)
TOKENIZER_NAME = "nltk-treebank-lower"

_tokenizer = TreebankWordTokenizer()
_detokenizer = TreebankWordDetokenizer()


def tokenize(text: str) -> list[str]:
    """Lower-cased Treebank tokens: ``"A dog's ball."`` -> ``['a', 'dog', "'s", 'ball', '.']``."""
    return _tokenizer.tokenize(text.lower().strip())


def detokenize(tokens: Sequence[str]) -> str:
    """Join tokens back into text (``['a', 'dog', "'s"]`` -> ``"a dog's"``)."""
    return _detokenizer.detokenize(list(tokens))


class Vocabulary:
    """Words <-> ids. Ids 0..3 are always ``<pad> <start> <end> <unk>``."""

    def __init__(self, words: Iterable[str], min_count: int = 1, tokenizer: str = TOKENIZER_NAME):
        words = list(words)
        if tuple(words[: len(SPECIALS)]) != SPECIALS:
            raise ValueError(f"a vocabulary must start with {SPECIALS}, got {words[:4]}")
        if len(set(words)) != len(words):
            duplicates = sorted(w for w, c in Counter(words).items() if c > 1)
            raise ValueError(f"vocabulary has duplicate words: {duplicates[:10]}")
        if tokenizer != TOKENIZER_NAME:
            raise ValueError(f"vocabulary uses tokenizer {tokenizer!r}; this version knows {TOKENIZER_NAME!r}")
        self.itos = words
        self.stoi = {w: i for i, w in enumerate(words)}
        self.min_count = min_count
        self.tokenizer = tokenizer

    pad_id, start_id, end_id, unk_id = 0, 1, 2, 3

    @classmethod
    def build(cls, captions: Iterable[str | Sequence[str]], min_count: int = 1) -> "Vocabulary":
        """Build from captions (text, or already tokenised lists).

        Words seen fewer than ``min_count`` times become ``<unk>``. Order: by
        frequency, then alphabetically, so the same captions always give the same ids.
        """
        counts: Counter[str] = Counter()
        for caption in captions:
            counts.update(tokenize(caption) if isinstance(caption, str) else caption)
        for special in SPECIALS:
            counts.pop(special, None)
        kept = sorted((w for w, c in counts.items() if c >= min_count), key=lambda w: (-counts[w], w))
        return cls([*SPECIALS, *kept], min_count=min_count)

    @property
    def never_generated(self) -> tuple[int, ...]:
        """Tokens a decoder must not emit: padding, ``<start>``, and ``<unk>`` (a caption
        saying "unknown word" tells the user nothing)."""
        return (self.pad_id, self.start_id, self.unk_id)

    def __len__(self) -> int:
        return len(self.itos)

    def __contains__(self, word: str) -> bool:
        return word in self.stoi

    def encode(self, caption: str | Sequence[str], add_specials: bool = True) -> list[int]:
        """Token ids of a caption, as ``<start> w1 ... wn <end>`` by default."""
        tokens = tokenize(caption) if isinstance(caption, str) else caption
        ids = [self.stoi.get(t, self.unk_id) for t in tokens]
        return [self.start_id, *ids, self.end_id] if add_specials else ids

    def decode(self, ids: Iterable[int], extra: Sequence[str] = ()) -> list[str]:
        """Words of a sequence of ids, stopping at ``<end>`` and skipping ``<start>``/``<pad>``.
        Ids past the vocabulary name the ``extra`` words, in order (see
        :class:`captioner.decoding.lexicon.Lexicon`)."""
        words = []
        for i in ids:
            i = int(i)
            if i == self.end_id:
                break
            if i in (self.start_id, self.pad_id):
                continue
            words.append(self.itos[i] if i < len(self.itos) else extra[i - len(self.itos)])
        return words

    def to_text(self, ids: Iterable[int]) -> str:
        return detokenize(self.decode(ids))

    def to_dict(self) -> dict:
        return {"itos": list(self.itos), "min_count": self.min_count, "tokenizer": self.tokenizer}

    @classmethod
    def from_dict(cls, data: dict) -> "Vocabulary":
        return cls(data["itos"], min_count=int(data.get("min_count", 1)),
                   tokenizer=data.get("tokenizer", TOKENIZER_NAME))

    def __eq__(self, other) -> bool:
        return isinstance(other, Vocabulary) and self.to_dict() == other.to_dict()

    def __repr__(self) -> str:
        return f"Vocabulary({len(self)} words, min_count={self.min_count})"
