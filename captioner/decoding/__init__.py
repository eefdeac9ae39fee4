"""Decoding: from image features to token sequences (greedy, beam search, constrained beam
search, sampling), with one settings record and one entry point, :func:`decode`."""

from .constraints import Constraint
from .decode import decode, decode_texts
from .search import Hypothesis, beam_search, greedy, sample
from .settings import DEFAULTS, DecodingError, DecodingSettings

__all__ = ["DEFAULTS", "Constraint", "DecodingError", "DecodingSettings", "Hypothesis", "beam_search", "decode", "decode_texts",
           "greedy", "sample"]
