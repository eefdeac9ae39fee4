"""captioner.metrics: coco-caption scores checked against independent implementations.

METEOR's Java start takes about 9 s, so the full PTB + METEOR run happens once
(``full_run``) and several tests read it. Java is part of the environment: the tests
that need it fail, not skip, without it.
"""

from __future__ import annotations

import contextlib
import gc
import io
import json
import math
import os
import subprocess
import tempfile
import threading
from collections import Counter

import pytest

from captioner.metrics import coco, ptb_tokenize, score_captions, simple_tokenize

# Clean lower-case text without punctuation, so whitespace splitting is the tokenisation.
CASES = {
    # partial match; the closest reference lengths tie (9 and 11 for 10 words), BLEU takes 9
    1: ("a man riding a wave on top of a surfboard",
        ["a man is riding a wave on a surfboard",
         "a surfer rides a large wave in the blue ocean today",
         "a person on a surfboard riding a wave"]),
    # identical to all its references
    2: ("a red bus parked on the street",
        ["a red bus parked on the street", "a red bus parked on the street"]),
    # no word in common (nor a METEOR synonym or paraphrase: it would match "green" to "grass")
    3: ("three purple umbrellas", ["two dogs play with the ball in the park", "dogs playing fetch on grass"]),
    # short: brevity penalty
    4: ("a cat", ["a cat sleeping on a couch", "a black cat lies on the sofa"]),
    # repeated words: clipped counts
    "dog": ("a dog a dog a dog", ["a dog catching a frisbee", "a brown dog jumps to catch a frisbee"]),
    # one word
    "pizza": ("pizza", ["a pizza with cheese and tomatoes on a table", "a large pizza"]),
    # empty prediction
    7: ("", ["a bowl of fruit on a table", "fruit in a bowl"]),
}
PREDICTIONS = {i: pred for i, (pred, _) in CASES.items()}
REFERENCES = {i: refs for i, (_, refs) in CASES.items()}
NOT_METEOR = ("BLEU", "ROUGE-L", "CIDEr-D")


def ngrams(tokens: list[str], n: int) -> Counter:
    return Counter(tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1))


def coco_bleu(pairs: list[tuple[list[str], list[list[str]]]]) -> list[float]:
    """Corpus BLEU-1..4 x100 as coco-caption defines it."""
    matches, totals, hyp_len, ref_len = [0] * 4, [0] * 4, 0, 0
    for hyp, refs in pairs:
        hyp_len += len(hyp)
        ref_len += min((abs(len(ref) - len(hyp)), len(ref)) for ref in refs)[1]
        for n in range(1, 5):
            most = Counter()
            for ref in refs:
                most |= ngrams(ref, n)
            matches[n - 1] += sum((ngrams(hyp, n) & most).values())
            totals[n - 1] += max(0, len(hyp) - n + 1)
    # coco-caption adds 1e-15 to numerators and 1e-9 to denominators, precisions and length ratio alike
    log_precisions = [math.log((m + 1e-15) / (t + 1e-9)) for m, t in zip(matches, totals)]
    ratio = (hyp_len + 1e-15) / (ref_len + 1e-9)
    brevity = math.exp(1 - 1 / ratio) if ratio < 1 else 1.0
    return [100 * brevity * math.exp(sum(log_precisions[:n]) / n) for n in range(1, 5)]


def coco_cider_d(pairs: list[tuple[list[str], list[list[str]]]]) -> list[float]:
    """Per-image CIDEr-D x100 (coco-caption's x10, then x100)."""
    document_frequency = Counter()
    for _, refs in pairs:
        document_frequency.update({g for ref in refs for n in range(1, 5) for g in ngrams(ref, n)})

    def tf_idf(tokens, n):
        return {g: count * math.log(len(pairs) / max(1, document_frequency[g]))
                for g, count in ngrams(tokens, n).items()}

    def norm(vector):
        return math.sqrt(sum(v * v for v in vector.values()))

    scores = []
    for hyp, refs in pairs:
        total = 0.0
        for ref in refs:
            penalty = math.exp(-((len(hyp) - len(ref)) ** 2) / (2 * 6.0 ** 2))
            for n in range(1, 5):
                h, r = tf_idf(hyp, n), tf_idf(ref, n)
                if norm(h) and norm(r):
                    clipped_dot = sum(min(v, r.get(g, 0.0)) * r.get(g, 0.0) for g, v in h.items())
                    total += penalty * clipped_dot / (norm(h) * norm(r))
        scores.append(100 * 10 * total / (4 * len(refs)))
    return scores


def rouge_l(hyp: list[str], refs: list[list[str]]) -> float:
    """ROUGE-L x100 with beta 1.2 from the best precision and the best recall."""
    def lcs(a, b):
        table = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
        for i, x in enumerate(a, 1):
            for j, y in enumerate(b, 1):
                table[i][j] = table[i - 1][j - 1] + 1 if x == y else max(table[i - 1][j], table[i][j - 1])
        return table[-1][-1]

    if not hyp:
        return 0.0
    precision = max(lcs(hyp, ref) / len(hyp) for ref in refs)
    recall = max(lcs(hyp, ref) / len(ref) for ref in refs)
    if precision == 0 or recall == 0:
        return 0.0
    return 100 * (1 + 1.2 ** 2) * precision * recall / (recall + 1.2 ** 2 * precision)


@contextlib.contextmanager
def everything_written():
    """Collect what is written to sys.stdout/stderr and to file descriptors 1 and 2."""
    with tempfile.TemporaryFile() as fd_out, contextlib.ExitStack() as stack:
        python_out = stack.enter_context(contextlib.redirect_stdout(io.StringIO()))
        python_err = stack.enter_context(contextlib.redirect_stderr(io.StringIO()))
        saved = [os.dup(1), os.dup(2)]
        written = {}
        try:
            os.dup2(fd_out.fileno(), 1)
            os.dup2(fd_out.fileno(), 2)
            yield written
        finally:
            for fd, original in zip((1, 2), saved):
                os.dup2(original, fd)
                os.close(original)
            fd_out.seek(0)
            written["text"] = python_out.getvalue() + python_err.getvalue() + fd_out.read().decode()


@pytest.fixture(scope="module")
def full_run():
    """PTB + all metrics on CASES: the report, all output, the subprocesses and thread count."""
    started = []

    class RecordingPopen(subprocess.Popen):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            started.append(self)

    threads_before = threading.active_count()
    with pytest.MonkeyPatch.context() as patch, everything_written() as written:
        patch.setattr(subprocess, "Popen", RecordingPopen)
        report = score_captions(PREDICTIONS, REFERENCES)
    return report, written["text"], started, threading.active_count() - threads_before


def test_java_is_available():
    assert coco.java_available(), "Java is part of this project's environment (`java -version` failed)"


def test_scores_match_independent_implementations(full_run):
    report = full_run[0]
    assert report.tokenizer == "ptb"
    pairs = [(pred.split(), [ref.split() for ref in refs]) for pred, refs in CASES.values()]
    expected = dict(zip(["BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4"], coco_bleu(pairs)))
    expected["ROUGE-L"] = sum(rouge_l(*pair) for pair in pairs) / len(pairs)
    cider = coco_cider_d(pairs)
    expected["CIDEr-D"] = sum(cider) / len(cider)
    assert set(report.scores) == {*expected, "METEOR"}
    for name, value in expected.items():
        assert report.scores[name] == pytest.approx(value, abs=1e-6), name
    for image_id, pair, cider_value in zip(CASES, pairs, cider):
        assert report.per_image[image_id]["CIDEr-D"] == pytest.approx(cider_value, abs=1e-6)
        assert report.per_image[image_id]["ROUGE-L"] == pytest.approx(rouge_l(*pair), abs=1e-6)
        assert report.per_image[image_id]["BLEU-4"] == pytest.approx(coco_bleu([pair])[3], abs=1e-6)
    assert 0 < report.scores["CIDEr-D"] < 1000 and 0 < report.scores["BLEU-4"] < 100


def test_identical_prediction_gets_full_marks(full_run):
    identical = full_run[0].per_image[2]
    for name in ("BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "ROUGE-L", "METEOR"):
        assert identical[name] == pytest.approx(100, abs=1e-6), name
    captions = {"a": "a red bus on a road", "b": "two cats sleeping on a bed"}
    corpus = score_captions(captions, {i: [text, text] for i, text in captions.items()}, metrics=NOT_METEOR)
    assert corpus.scores["BLEU-4"] == pytest.approx(100, abs=1e-6)
    assert corpus.scores["ROUGE-L"] == pytest.approx(100, abs=1e-6)


@pytest.mark.parametrize("image_id", [3, 7], ids=["no-shared-word", "empty"])
def test_prediction_without_shared_words_scores_zero(full_run, image_id):
    for name, value in full_run[0].per_image[image_id].items():
        assert value == pytest.approx(0, abs=1e-6), name


def test_meteor_is_scored_in_range(full_run):
    per_image = {i: scores["METEOR"] for i, scores in full_run[0].per_image.items()}
    assert 0 < per_image[1] < 100 and 0 < per_image[4] < per_image[1]
    assert 0 < full_run[0].scores["METEOR"] < 100


def test_run_is_silent_and_leaves_no_process_or_thread(full_run):
    report, written, started, extra_threads = full_run
    assert written == ""
    assert any("meteor-1.5.jar" in process.args for process in started)
    assert any("edu.stanford.nlp.process.PTBTokenizer" in process.args for process in started)
    for process in started:
        assert process.returncode is not None, process.args
        assert all(stream is None or stream.closed for stream in (process.stdin, process.stdout, process.stderr))
    assert extra_threads == 0


def test_report_to_dict_is_json(full_run):
    report = full_run[0]
    data = json.loads(json.dumps(report.to_dict()))
    assert data["tokenizer"] == "ptb" and data["num_images"] == len(CASES)
    assert data["scores"] == report.scores
    assert data["per_image"]["dog"] == report.per_image["dog"] and data["per_image"]["7"] == report.per_image[7]
    assert any(note.startswith("SPICE not computed") for note in data["notes"])
    assert any(note.startswith("CIDEr-D on 7 image(s)") for note in data["notes"])


def test_simple_tokenizer_scores_equal_ptb_on_clean_text(full_run):
    simple = score_captions(PREDICTIONS, REFERENCES, metrics=NOT_METEOR, tokenizer="simple")
    assert simple.tokenizer == "simple"
    assert simple.scores == {k: v for k, v in full_run[0].scores.items() if k != "METEOR"}


def test_without_java_meteor_is_skipped_and_the_rest_scored(full_run, monkeypatch):
    monkeypatch.setattr(coco, "java_available", lambda: False)
    report = score_captions(PREDICTIONS, REFERENCES)
    assert report.tokenizer == "simple"
    assert report.scores == {k: v for k, v in full_run[0].scores.items() if k != "METEOR"}
    assert all("METEOR" not in scores for scores in report.per_image.values())
    assert any(note.startswith("METEOR skipped: Java not found") for note in report.notes)
    assert any(note.startswith("tokenizer: simple (Java not found)") for note in report.notes)
    with pytest.raises(RuntimeError, match="needs Java"):
        score_captions(PREDICTIONS, REFERENCES, tokenizer="ptb")


def test_meteor_failing_to_start_is_a_clean_error(monkeypatch):
    monkeypatch.setattr(coco, "java_available", lambda: True)
    monkeypatch.setenv("PATH", "")
    with pytest.raises(RuntimeError, match="cannot start METEOR"):
        score_captions({1: "a dog"}, {1: ["a dog"]}, metrics=("METEOR",), tokenizer="simple")
    gc.collect()  # an AttributeError in a __del__ here would fail the test (see pyproject's filterwarnings)


def test_meteor_dying_is_a_clean_error(monkeypatch):
    class BrokenMeteor(subprocess.Popen):
        def __init__(self, args, **kwargs):
            if "meteor-1.5.jar" in args:
                args = ["java", "-XX:+NoSuchOption"]
            super().__init__(args, **kwargs)

    monkeypatch.setattr(subprocess, "Popen", BrokenMeteor)
    with pytest.raises(RuntimeError, match="METEOR failed .*NoSuchOption"):
        score_captions({1: "a dog"}, {1: ["a dog"]}, metrics=("METEOR",), tokenizer="simple")
    gc.collect()


def test_ptb_tokenizer_as_coco_caption_runs_it():
    texts = ["A man's (red) hat.", 'He said "hi" -- ok...', "Two dogs;\r\nplaying,\u2028outside!",
             "", "Café crème", "3 1/2 cups", "U.S. flag; e-mail"]
    assert ptb_tokenize(texts) == ["a man 's -lrb- red -rrb- hat", "he said hi ok", "two dogs playing outside",
                                   "", "café crème", "3\xa01/2 cups", "u.s. flag e-mail"]


def test_simple_tokenizer_agrees_with_ptb_on_ordinary_captions():
    texts = ["A dog's ball is red.", "Two people, a dog, and a cat: outside!", "Is this a cat?",
             'A sign that says "stop".', "A man (left) and a woman.", "A dog. It runs.",
             "People don't walk here; they drive.", "The 'open' sign.", "A  BLUE\ttrain\n",
             "A group of people -- with umbrellas..."]
    assert [simple_tokenize(text) for text in texts] == ptb_tokenize(texts)


@pytest.mark.parametrize("predictions, references, kwargs, message", [
    ({1: "a"}, {1: ["a"], 2: ["b"]}, {}, r"no prediction for 1 image id\(s\): 2"),
    ({1: "a", 3: "c"}, {1: ["a"]}, {}, r"no references for 1 predicted image id\(s\): 3"),
    ({"1": "a"}, {1: ["a"]}, {}, "differ only in type"),
    ({}, {}, {}, "references is empty"),
    ({1: "a"}, {1: []}, {}, "image 1 has no reference"),
    ({1: "a"}, {1: "a dog"}, {}, "must be a list of strings"),
    ({1: "a"}, {1: ["a dog", "  "]}, {}, "reference 1 of image 1 is not a non-blank string"),
    ({1: "a"}, {1: ["a dog", None]}, {}, "reference 1 of image 1"),
    ({1: "a"}, {1: ["..."]}, {"tokenizer": "simple"}, "no words after tokenisation"),
    ({1: ["a"]}, {1: ["a"]}, {}, "prediction for image 1 must be a string"),
    ({1: "a", "1": "b"}, {1: ["a"], "1": ["b"]}, {}, "would be the same in JSON"),
    ({1.5: "a"}, {1.5: ["a"]}, {}, "must be str or int"),
    ({1: "a"}, {1: ["a"]}, {"metrics": ("BLEU", "CIDEr")}, "metrics must be"),
    ({1: "a"}, {1: ["a"]}, {"metrics": "BLEU"}, "metrics must be"),
    ({1: "a"}, {1: ["a"]}, {"tokenizer": "nltk"}, "tokenizer must be one of"),
])
def test_invalid_inputs_are_refused(predictions, references, kwargs, message):
    with pytest.raises(ValueError, match=message):
        score_captions(predictions, references, **kwargs)
