"""Decoding: from image features to token sequences (greedy, beam search, constrained beam
search, sampling), with one settings record and one entry point, :func:`decode`."""

from .beam import beam_search
from .constraints import Constraint
from .decode import decode, decode_texts
from .search import Hypothesis, Stepper, Stepping, greedy, sample
from .settings import DEFAULTS, METHODS, DecodingError, DecodingSettings, methods, require_method

__all__ = ["DEFAULTS", "METHODS", "Constraint", "DecodingError", "DecodingSettings", "Hypothesis", "Stepper",
           "Stepping", "beam_search", "decode", "decode_texts", "greedy", "methods", "require_method", "sample"]
