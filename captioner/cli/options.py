"""Command-line options that several subcommands share: the decoding settings."""

from __future__ import annotations

import re
from dataclasses import fields

from ..decoding.settings import DEFAULTS, DecodingError, DecodingSettings
from ..errors import ArgumentError

_FLAGS = {f.name: "--" + f.name.replace("_", "-") for f in fields(DecodingSettings)}


def add_decoding_options(parser, sampling: bool = False, methods=("beam", "greedy", "sample")) -> None:
    """``--method``, ``--beam-size``, ``--max-length``, ``--length-penalty`` (and with
    ``sampling``: ``--num-captions``, ``--temperature``, ``--top-k``); unset means "the
    checkpoint's"."""
    parser.add_argument("--method", choices=list(methods), help="decoding method (default: the checkpoint's)")
    parser.add_argument("--beam-size", type=int, help="beam width (default: the checkpoint's)")
    parser.add_argument("--max-length", type=int, help="maximum words per caption (default: the checkpoint's)")
    parser.add_argument("--length-penalty", type=float,
                        help="beam ranking: log-prob / (words+1)**penalty (default: the checkpoint's)")
    if sampling:
        parser.add_argument("--num-captions", type=int, help="captions per image (at most the beam size; default 1)")
        parser.add_argument("--temperature", type=float, help="sampling temperature (default 1)")
        parser.add_argument("--top-k", type=int, help="sample only from the k most likely words")


def decoding_options(args, **extra) -> dict:
    """The decoding settings given on the command line (and in ``extra``), checked up front;
    an impossible value is an error naming its flag."""
    names = ("method", "beam_size", "max_length", "length_penalty", "num_captions", "temperature", "top_k")
    options = {name: getattr(args, name, None) for name in names}
    options.update(extra)
    options = {k: v for k, v in options.items() if v is not None}
    try:
        # each value on its own, so the check does not depend on the checkpoint's other settings
        for name, value in options.items():
            DEFAULTS.with_options(**{name: value, **_compatible(name, value)})
    except DecodingError as error:
        message = str(error)
        for name, flag in _FLAGS.items():
            message = re.sub(rf"\b{name}\b", flag, message)
        raise ArgumentError(message) from None
    return options


def _compatible(name: str, value) -> dict:
    """Settings that make ``name=value`` checkable on its own (many captions need a wide beam)."""
    if name == "num_captions" and isinstance(value, int):
        return {"method": "beam", "beam_size": max(value, 1)}
    return {}
