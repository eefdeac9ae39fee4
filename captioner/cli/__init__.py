"""The ``captioner`` command: a thin layer over the Python API, one module per subcommand."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from .. import __version__
from ..errors import UserError
from ..runtime import tune_allocator
from . import attack, caption, checkpoint, evaluate, explain, serve, train, visualize

SUBCOMMANDS = [caption, train, evaluate, checkpoint, visualize, attack, explain, serve]

# Problems with the user's input (files, values, configs) are UserErrors: one line on stderr, exit code 2
# (set CAPTIONER_DEBUG=1 for the traceback). Any other exception is a bug and keeps its traceback.


class Terminated(BaseException):
    """SIGTERM (a `kill`, a job scheduler, torchrun stopping its workers), raised like Ctrl-C's
    KeyboardInterrupt so that every ``with`` block cleans up: no temporary file is left."""


@contextmanager
def sigterm_raises_terminated() -> Iterator[None]:
    """While open, SIGTERM raises :class:`Terminated` in this process. A process forked from
    it (an image-reading worker) still dies of SIGTERM at once, as by default."""
    parent = os.getpid()

    def terminate(signum, frame):
        if os.getpid() != parent:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTERM)
            return
        raise Terminated

    if threading.current_thread() is not threading.main_thread():  # only the main thread may handle signals
        yield
        return
    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)


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
        with sigterm_raises_terminated():
            return int(args.run(args) or 0)
    except KeyboardInterrupt:
        print("captioner: interrupted", file=sys.stderr)
        return 130
    except Terminated:
        print("captioner: terminated", file=sys.stderr)
        return 128 + signal.SIGTERM
    except BrokenPipeError:  # output piped into a reader that stopped early, e.g. `| head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except UserError as error:
        if os.environ.get("CAPTIONER_DEBUG"):
            raise
        print(f"captioner {args.command}: error: {error}", file=sys.stderr)
        return 2
