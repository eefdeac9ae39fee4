"""Caption metrics: BLEU-1..4, METEOR, ROUGE-L and CIDEr-D as coco-caption computes them.

``score_captions(predictions, references)`` scores one caption per image against its
references with pycocoevalcap's scorers and returns a :class:`ScoreReport` (scores x100).
"""

from .coco import METRICS, ScoreReport, java_available, score_captions
from .tokenize import ptb_tokenize, simple_tokenize

__all__ = ["METRICS", "ScoreReport", "java_available", "ptb_tokenize", "score_captions", "simple_tokenize"]
