"""Checks of command-line options that several subcommands share."""

from __future__ import annotations


def check_decoding_options(beam_size: int | None = None, length_penalty: float | None = None,
                           max_length: int | None = None) -> None:
    """Reject impossible decoding settings before any work starts (None = not given)."""
    for flag, value in (("--beam-size", beam_size), ("--max-length", max_length)):
        if value is not None and value < 1:
            raise ValueError(f"{flag} must be at least 1, got {value}")
    if length_penalty is not None and length_penalty < 0:
        raise ValueError(f"--length-penalty must be >= 0, got {length_penalty}")
