"""The ``captioner`` command: a thin layer over the Python API, one module per subcommand."""

from __future__ import annotations

import argparse
import os
import sys

from .. import __version__
from ..errors import UserError
from ..runtime import tune_allocator
from . import attack, caption, checkpoint, evaluate, train, visualize

SUBCOMMANDS = [caption, train, evaluate, checkpoint, visualize, attack]

# Problems with the user's input (files, values, configs) are UserErrors: one line on stderr, exit code 2
# (set CAPTIONER_DEBUG=1 for the traceback). Any other exception is a bug and keeps its traceback.


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
    tune_allocator()  # large tensors from the heap, not a fresh mmap each time (see captioner.runtime)
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except KeyboardInterrupt:
        print("captioner: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into a reader that stopped early, e.g. `| head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except UserError as error:
        if os.environ.get("CAPTIONER_DEBUG"):
            raise
        print(f"captioner {args.command}: error: {error}", file=sys.stderr)
        return 2
