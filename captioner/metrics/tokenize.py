"""Caption tokenisation for scoring: coco-caption's PTB tokenisation, and a Java-free fallback.

coco-caption scores captions after Stanford's PTBTokenizer (CoreNLP 3.4.1, run with
``-preserveLines -lowerCase``) and after dropping the punctuation tokens listed in
``pycocoevalcap.tokenizer.ptbtokenizer.PUNCTUATIONS``. :func:`ptb_tokenize` runs that same
jar with the same options (plus ``-encoding utf-8``, the jar's default, made explicit) and
drops the same tokens, giving the same output, but it does not use pycocoevalcap's
``PTBTokenizer`` class, because in pycocoevalcap 1.2 that class

- writes a temporary file into its own package directory (so it fails when
  site-packages is read-only); here the captions go through the tokenizer's stdin;
- lets Java split lines on ``\\r``, U+2028 and other line breaks it leaves in a caption,
  then zips the output lines with the image ids, so every caption after such a line
  silently goes to the wrong image; here all whitespace runs become one space first and
  the number of output lines is checked;
- sends Java's "PTBTokenizer tokenized N tokens" message to our stderr; here it is
  captured and only shown if the tokenizer fails.

Two coco-caption behaviours are kept on purpose, because published scores include them:
``-lowerCase`` also lower-cases the bracket escapes, so ``(red)`` becomes
``-lrb- red -rrb-`` and survives (the punctuation list spells them ``-LRB-``), and tokens
are separated on plain spaces only, so a token with a no-break space (``3 1/2``) stays one
token.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Sequence
from pathlib import Path

from nltk.tokenize import TreebankWordTokenizer
from pycocoevalcap.tokenizer import ptbtokenizer

PUNCTUATIONS = frozenset(ptbtokenizer.PUNCTUATIONS)
PTB_JAR = Path(ptbtokenizer.__file__).with_name(ptbtokenizer.STANFORD_CORENLP_3_4_1_JAR)
PTB_COMMAND = ["java", "-cp", str(PTB_JAR), "edu.stanford.nlp.process.PTBTokenizer",
               "-preserveLines", "-lowerCase", "-encoding", "utf-8"]

# The escapes PTBTokenizer writes for brackets, lower-cased as -lowerCase leaves them.
_BRACKETS = {"(": "-lrb-", ")": "-rrb-", "[": "-lsb-", "]": "-rsb-", "{": "-lcb-", "}": "-rcb-"}
_SENTENCE_BREAK = re.compile(r"(?<=[.!?])\s+")
_OPENING_QUOTE = re.compile(r"(^|\s)'(?=\w)")  # nltk would keep it on the word: 'ok -> "'ok"
_treebank = TreebankWordTokenizer()


def one_line(text: str) -> str:
    """``text`` with every run of whitespace (line breaks included) turned into one space."""
    return " ".join(text.split())


def _drop_punctuation(line: str) -> str:
    """coco-caption's post-processing of one tokenizer output line."""
    return " ".join(w for w in line.rstrip().split(" ") if w not in PUNCTUATIONS)


def ptb_tokenize(texts: Sequence[str]) -> list[str]:
    """coco-caption tokenisation of each text: space-separated lower-case tokens, punctuation dropped.

    One Java run for all the texts. Raises RuntimeError if the tokenizer fails.
    """
    if not texts:
        return []
    stdin = "".join(one_line(text) + "\n" for text in texts).encode("utf-8")
    try:
        result = subprocess.run(PTB_COMMAND, input=stdin, capture_output=True)
    except OSError as error:
        raise RuntimeError(f"cannot run the Stanford PTBTokenizer ({error})") from error
    if result.returncode != 0:
        message = result.stderr.decode("utf-8", "replace").strip()[-2000:]
        raise RuntimeError(f"the Stanford PTBTokenizer failed (exit code {result.returncode}): {message}")
    lines = result.stdout.decode("utf-8").split("\n")
    if lines[-1] == "":
        lines.pop()
    if len(lines) != len(texts):
        raise RuntimeError(f"the Stanford PTBTokenizer returned {len(lines)} lines for {len(texts)} captions")
    return [_drop_punctuation(line) for line in lines]


def simple_tokenize(text: str) -> str:
    """A Java-free approximation of :func:`ptb_tokenize` for one text.

    Lower-cases, splits sentences after ``. ! ?`` followed by a space, tokenises each
    with nltk's Treebank tokenizer (the PTB conventions in Python: ``dog's`` -> ``dog 's``,
    double quotes -> PTB quote tokens), writes brackets as PTBTokenizer does, and drops the
    same punctuation tokens. It agrees with PTBTokenizer on ordinary captions; it differs
    on rarer forms: abbreviations such as ``u.s.`` or ``mr.`` lose their final period,
    ``'90s`` its quote, and ``!!`` is dropped.
    """
    tokens = []
    text = _OPENING_QUOTE.sub(r"\1' ", one_line(text).lower())
    for sentence in _SENTENCE_BREAK.split(text):
        tokens.extend(_BRACKETS.get(token, token) for token in _treebank.tokenize(sentence))
    return " ".join(token for token in tokens if token not in PUNCTUATIONS)
