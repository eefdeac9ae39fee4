"""Command-line options that several subcommands share: the decoding settings."""

from __future__ import annotations

import argparse
import math
import re
from dataclasses import fields

from ..decoding.settings import DEFAULTS, GUIDES, MAX_BEAM_SIZE, METHODS, DecodingError, DecodingSettings
from ..errors import ArgumentError

_FLAGS = {f.name: "--" + f.name.replace("_", "-") for f in fields(DecodingSettings)}


def add_decoding_options(parser, sampling: bool = False, methods=tuple(METHODS), several: bool = False,
                         guide_help: str = "") -> None:
    """``--method``, ``--beam-size``, ``--max-length``, ``--length-penalty``, ``--guide`` and
    ``--guide-threshold`` (and with ``sampling``: ``--num-captions``, ``--temperature``,
    ``--top-k``); unset means "the checkpoint's". ``several``: ``--method`` and ``--guide``
    take comma-separated lists, to compare the settings side by side."""
    if several:
        parser.add_argument("--method", type=list_of(methods), default=None,
                            help=f"{' or '.join(methods)}, or several side by side: {','.join(methods)} "
                                 "(default: the checkpoint's)")
        parser.add_argument("--guide", type=list_of(GUIDES),
                            help=f"{' or '.join(GUIDES)}, or both side by side: {','.join(GUIDES)} "
                                 "(default: the checkpoint's)")
    else:
        parser.add_argument("--method", choices=list(methods), help="decoding method (default: the checkpoint's)")
        parser.add_argument("--guide", choices=GUIDES, help=guide_help or "imagenet: the caption names what the "
                            "encoder's ImageNet classifier is sure of; none: the decoder's own caption (default: the "
                            "checkpoint's)")
    parser.add_argument("--guide-threshold", type=float, metavar="P",
                        help="probability a concept needs to be forced, in [0, 1] (default: the checkpoint's)")
    parser.add_argument("--unsure-below", type=_log_prob_or_off, metavar="LOGP|off",
                        help="say less when unsure: a guided caption whose log-probability per word is below LOGP, "
                             "with nothing forced, is redone in a few words naming the guide's surest concept "
                             "(default: the checkpoint's; off: never)")
    parser.add_argument("--unsure-threshold", type=float, metavar="P",
                        help="probability a concept needs to be named when unsure (default: the checkpoint's)")
    parser.add_argument("--beam-size", type=int, help="beam width (default: the checkpoint's)")
    parser.add_argument("--max-length", type=int, help="maximum words per caption (default: the checkpoint's)")
    parser.add_argument("--length-penalty", type=float,
                        help="beam ranking: log-prob / (words+1)**penalty (default: the checkpoint's)")
    if sampling:
        parser.add_argument("--num-captions", type=int, help="captions per image (at most the beam size; default 1)")
        parser.add_argument("--temperature", type=float, help="sampling temperature (default 1)")
        parser.add_argument("--top-k", type=int, help="sample only from the k most likely words")


def _log_prob_or_off(text: str) -> float:
    if text.strip().lower() == "off":
        return -math.inf
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number or 'off'") from None


def list_of(allowed):
    """An argparse type: a comma-separated list of some of ``allowed`` (at least one)."""
    def parse(text: str) -> list[str]:
        items = [item.strip() for item in text.split(",") if item.strip()]
        if not items:
            raise argparse.ArgumentTypeError(f"{text!r} names nothing; give {' or '.join(allowed)}, or a "
                                             f"comma-separated list such as {','.join(allowed)}")
        for item in items:
            if item not in allowed:
                raise argparse.ArgumentTypeError(f"{item!r} is not one of {', '.join(allowed)}")
        return list(dict.fromkeys(items))
    return parse


def decoding_options(args, **extra) -> dict:
    """The decoding settings given on the command line (and in ``extra``), checked up front;
    an impossible value is an error naming its flag. Lists (``several``) are left to the command."""
    names = [f.name for f in fields(DecodingSettings)]
    options = {name: getattr(args, name, None) for name in names}
    options.update(extra)
    options = {k: v for k, v in options.items() if v is not None and not isinstance(v, list)}
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
        return {"method": "beam", "beam_size": min(max(value, 1), MAX_BEAM_SIZE)}
    return {}
