"""How big a benchmark run is, and the command-line flags that choose it.

"full" measures (``make bench``); "quick" runs every row small, to check that they work
(``make bench-quick``); "smoke" runs one tiny case of each row, seconds of work, to check
each row's code path and its result record (tests/test_bench.py). Figures come only from
"full". No side effects on import (unlike common.py, which tunes the allocator), so the
modules that run on their own can use it.
"""

from __future__ import annotations

MODES = ("full", "quick", "smoke")


def mode_flag(mode: str) -> str:
    """The command-line flag of ``mode`` ("" for a full run), for the rows' ``command``."""
    return "" if mode == "full" else f" --{mode}"


def add_mode_flags(parser) -> None:
    """``--quick`` and ``--smoke`` on a benchmark's command line; ``parser.parse_args().mode`` is the mode."""
    sizes = parser.add_mutually_exclusive_group()
    sizes.add_argument("--quick", dest="mode", action="store_const", const="quick", default="full",
                       help="every row small: checks that they run")
    sizes.add_argument("--smoke", dest="mode", action="store_const", const="smoke",
                       help="one tiny case of each row, seconds: checks each row's code path and record")
