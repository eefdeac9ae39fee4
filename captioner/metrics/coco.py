"""BLEU-1..4, METEOR, ROUGE-L and CIDEr-D as the coco-caption toolkit computes them.

The numbers come from pycocoevalcap's own scorers, called one by one on the tokenised
captions (``COCOEvalCap.evaluate()`` would also run SPICE, which downloads Stanford
CoreNLP at run time). All scores are reported x100, as papers print them.

What each scorer computes (read from pycocoevalcap 1.2's sources):

BLEU (``bleu/bleu_scorer.py``)
    Corpus BLEU: clipped n-gram matches (each n-gram counted at most as often as in the
    reference where it is most frequent) and candidate n-gram counts are summed over all
    images; p_n = (matches_n + 1e-15) / (total_n + 1e-9); BLEU-N is the geometric mean of
    p_1..p_N times the brevity penalty exp(1 - r/c) when c < r, where c is the total
    candidate length and r the sum over images of the reference length closest to the
    candidate's (ties go to the shorter). The tiny constants make a corpus without any
    4-gram match score a small positive BLEU-4 (about 0.01 x100), not 0. The per-image
    values are the same formula on one image (sentence BLEU), not shares of the corpus score.

METEOR (``meteor/meteor.py``)
    METEOR 1.5 (``-l en -norm``) in a Java subprocess; the corpus score is METEOR's
    aggregate over all images' statistics, not the mean of the per-image scores.

ROUGE-L (``rouge/rouge.py``)
    Per image: LCS-based F-measure with beta = 1.2 from the best precision and the best
    recall over the references (each maximised separately); the corpus score is the mean.

CIDEr-D (``cider/cider_scorer.py``, class ``Cider``)
    pycocoevalcap's ``Cider`` is CIDEr-D. For n = 1..4 each caption becomes a vector of
    n-gram count x idf, idf(g) = log(N) - log(max(1, df(g))), where N is the number of
    scored images and df(g) the number of them whose references contain g (so the idf
    comes from the scored set's references and scores are comparable only on the same
    set; with one image every idf is 0 and the score 0). Against each reference:
    sum_g min(h_g, r_g) r_g / (|h| |r|) (the candidate's counts are clipped; 0 when a
    vector is zero), times the Gaussian length penalty exp(-d^2 / (2 * 6^2)), d being the
    difference in length. (coco-caption measures length in bigrams, which gives the same
    differences as words for non-empty captions; an empty candidate scores 0 anyway.)
    Per image: 10 x the mean over n and over references; the corpus score is the mean
    over images, so a typical COCO model scores about 0.9-1.0 there, 90-100 here.
"""

from __future__ import annotations

import contextlib
import functools
import io
import numbers
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.meteor.meteor import Meteor
from pycocoevalcap.rouge.rouge import Rouge

from . import tokenize as _tokenize

METRICS = ("BLEU", "METEOR", "ROUGE-L", "CIDEr-D", "SPICE")
TOKENIZERS = ("auto", "ptb", "simple")
SPICE_NOTE = "SPICE not computed: it downloads Stanford CoreNLP at run time, unavailable offline"
# Below this many images, CIDEr-D's idf (from the scored references) is far from a test split's.
FEW_IMAGES_FOR_CIDER = 100


@dataclass
class ScoreReport:
    """Corpus scores (x100), per-image scores (x100), the tokenizer used and caveats."""

    scores: dict[str, float]
    per_image: dict[str | int, dict[str, float]]
    tokenizer: str
    notes: list[str] = field(default_factory=list)

    @property
    def num_images(self) -> int:
        return len(self.per_image)

    def to_dict(self) -> dict:
        """JSON-ready: image ids become strings (validation guarantees they stay distinct)."""
        return {
            "scores": dict(self.scores),
            "per_image": {str(image_id): dict(values) for image_id, values in self.per_image.items()},
            "tokenizer": self.tokenizer,
            "num_images": self.num_images,
            "notes": list(self.notes),
        }


@functools.cache
def java_available() -> bool:
    """Whether ``java -version`` runs and succeeds (checked once per process)."""
    try:
        result = subprocess.run(["java", "-version"], capture_output=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return False
    return result.returncode == 0


def _some(ids) -> str:
    ids = sorted(ids, key=repr)
    shown = ", ".join(repr(i) for i in ids[:10])
    return shown + (f" and {len(ids) - 10} more" if len(ids) > 10 else "")


def _validate(predictions, references, metrics, tokenizer) -> None:
    if not isinstance(predictions, Mapping) or not isinstance(references, Mapping):
        raise ValueError("predictions and references must be dicts keyed by image id")
    if not references:
        raise ValueError("no images to score: references is empty")
    missing = references.keys() - predictions.keys()
    extra = predictions.keys() - references.keys()
    if missing or extra:
        problems = []
        if missing:
            problems.append(f"no prediction for {len(missing)} image id(s): {_some(missing)}")
        if extra:
            problems.append(f"no references for {len(extra)} predicted image id(s): {_some(extra)}")
        message = "image ids of predictions and references differ: " + "; ".join(problems)
        if {str(i) for i in missing} & {str(i) for i in extra}:
            message += " (some ids differ only in type, e.g. 1 and '1')"
        raise ValueError(message)
    as_text = {}
    for image_id in references:
        if not isinstance(image_id, (str, numbers.Integral)) or isinstance(image_id, bool):
            raise ValueError(f"image ids must be str or int, got {image_id!r}")
        if str(image_id) in as_text:
            raise ValueError(f"image ids {as_text[str(image_id)]!r} and {image_id!r} would be the same in JSON")
        as_text[str(image_id)] = image_id
        if not isinstance(predictions[image_id], str):
            raise ValueError(f"the prediction for image {image_id!r} must be a string, "
                             f"got {type(predictions[image_id]).__name__}")
        refs = references[image_id]
        if isinstance(refs, str) or not isinstance(refs, Sequence):
            raise ValueError(f"the references for image {image_id!r} must be a list of strings, "
                             f"got {type(refs).__name__}")
        if not refs:
            raise ValueError(f"image {image_id!r} has no reference caption")
        for k, ref in enumerate(refs):
            if not isinstance(ref, str) or not ref.strip():
                raise ValueError(f"reference {k} of image {image_id!r} is not a non-blank string: {ref!r}")
    unknown = [m for m in metrics if m not in METRICS]
    if isinstance(metrics, str) or unknown or not metrics:
        raise ValueError(f"metrics must be a non-empty tuple of {', '.join(METRICS)}; got {metrics!r}")
    if tokenizer not in TOKENIZERS:
        raise ValueError(f"tokenizer must be one of {', '.join(TOKENIZERS)}; got {tokenizer!r}")


def _tokenize_all(predictions, references, ids, use_ptb: bool):
    """Tokenised ``(gts, res)`` in pycocoevalcap's format: id -> list of strings."""
    texts = [predictions[i] for i in ids] + [ref for i in ids for ref in references[i]]
    tokens = _tokenize.ptb_tokenize(texts) if use_ptb else [_tokenize.simple_tokenize(t) for t in texts]
    res = {i: [tokens[k]] for k, i in enumerate(ids)}
    gts, position = {}, len(ids)
    for i in ids:
        count = len(references[i])
        gts[i] = tokens[position:position + count]
        position += count
        for k, ref in enumerate(gts[i]):
            if not ref:
                raise ValueError(f"reference {k} of image {i!r} has no words after tokenisation: "
                                 f"{references[i][k]!r}")
    return gts, res


class _Meteor(Meteor):
    """pycocoevalcap's METEOR wrapper with a reliable :meth:`close`.

    pycocoevalcap 1.2 only stops its Java process in ``__del__``, which takes a lock that
    stays held if ``compute_score`` raised (so garbage collection then blocks forever),
    fails with AttributeError when Java could not be started, and leaves the stdout and
    stderr pipes open.
    """

    def close(self) -> None:
        process = getattr(self, "meteor_p", None)
        if process is None:
            return
        with contextlib.suppress(OSError):
            process.stdin.close()  # METEOR exits at the end of its input
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        process.stdout.close()
        process.stderr.close()

    def __del__(self) -> None:
        self.close()


def _meteor(gts, res):
    try:
        meteor = _Meteor()
    except OSError as error:
        raise RuntimeError(f"cannot start METEOR's Java process ({error})") from error
    try:
        # METEOR's input format separates fields with "|||"; pycocoevalcap strips it from
        # the candidate only, so a reference containing it would split into two.
        gts = {i: [ref.replace("|||", "") for ref in refs] for i, refs in gts.items()}
        return meteor.compute_score(gts, res)
    except (ValueError, OSError) as error:
        meteor.meteor_p.kill()
        meteor.meteor_p.wait()
        message = meteor.meteor_p.stderr.read().decode("utf-8", "replace").strip()[-2000:]
        raise RuntimeError(f"METEOR failed ({error}): {message}") from error
    finally:
        meteor.close()


def score_captions(
    predictions: Mapping[str | int, str],
    references: Mapping[str | int, Sequence[str]],
    metrics: tuple[str, ...] = ("BLEU", "METEOR", "ROUGE-L", "CIDEr-D"),
    tokenizer: str = "auto",
) -> ScoreReport:
    """Score one predicted caption per image against that image's reference captions.

    ``tokenizer``: ``"ptb"`` (coco-caption's Stanford PTBTokenizer, needs Java),
    ``"simple"`` (Python approximation) or ``"auto"`` (``ptb`` when Java runs). Without
    Java, METEOR is skipped and ``report.notes`` says so. An empty prediction scores 0.
    Raises ValueError for bad inputs, RuntimeError when ``"ptb"`` is asked for without
    Java or a Java tool fails.
    """
    _validate(predictions, references, metrics, tokenizer)
    ids = list(references)
    notes = []
    has_java = java_available()
    if tokenizer == "ptb" and not has_java:
        raise RuntimeError("tokenizer='ptb' runs the Stanford PTBTokenizer, which needs Java "
                           "(`java -version` failed); use tokenizer='simple' or 'auto'")
    use_ptb = tokenizer == "ptb" or (tokenizer == "auto" and has_java)
    if not use_ptb:
        reason = "requested" if tokenizer == "simple" else "Java not found"
        notes.append(f"tokenizer: simple ({reason}); scores can differ slightly from coco-caption's, "
                     "which tokenises with the Stanford PTBTokenizer")
    gts, res = _tokenize_all(predictions, references, ids, use_ptb)

    scores: dict[str, float] = {}
    per_image: dict[str | int, dict[str, float]] = {i: {} for i in ids}

    def record(name, corpus, image_scores):
        scores[name] = 100.0 * float(corpus)
        for i, value in zip(ids, image_scores, strict=True):
            per_image[i][name] = 100.0 * float(value)

    with contextlib.redirect_stdout(io.StringIO()):
        if "BLEU" in metrics:
            corpus, image_scores = Bleu(4).compute_score(gts, res, verbose=0)
            for n in range(4):
                record(f"BLEU-{n + 1}", corpus[n], image_scores[n])
        if "METEOR" in metrics:
            if has_java:
                record("METEOR", *_meteor(gts, res))
            else:
                notes.append("METEOR skipped: Java not found (METEOR 1.5 is a Java program)")
        if "ROUGE-L" in metrics:
            record("ROUGE-L", *Rouge().compute_score(gts, res))
        if "CIDEr-D" in metrics:
            record("CIDEr-D", *Cider().compute_score(gts, res))
            if len(ids) < FEW_IMAGES_FOR_CIDER:
                notes.append(f"CIDEr-D on {len(ids)} image(s): its idf comes from these images' references, "
                             "so the score is not comparable with scores on a standard test split")
    notes.append(SPICE_NOTE)
    return ScoreReport(scores=scores, per_image=per_image, tokenizer="ptb" if use_ptb else "simple", notes=notes)
