"""The ``captioner`` command: a thin layer over the Python API, one module per subcommand."""

from __future__ import annotations

import argparse
import sys

from .. import __version__
from . import caption

SUBCOMMANDS = [caption]


class UsageError(Exception):
    """Bad input from the user (a file, a value): printed as one line, exit code 2."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="captioner",
        description="CNN + LSTM image captioning, with network visualisation and adversarial tools.",
    )
    parser.add_argument("--version", action="version", version=f"captioner {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in SUBCOMMANDS:
        module.add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except KeyboardInterrupt:
        print("captioner: interrupted", file=sys.stderr)
        return 130
    except caption.EXPECTED_ERRORS as error:
        print(f"captioner {args.command}: error: {error}", file=sys.stderr)
        return 2
