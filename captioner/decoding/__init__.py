"""Decoding: from image features to token sequences (greedy, beam search, sampling)."""

from .search import Hypothesis, beam_search, greedy, sample

__all__ = ["Hypothesis", "beam_search", "greedy", "sample"]
