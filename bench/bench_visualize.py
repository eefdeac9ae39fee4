"""Filter visualisation: 16 channels in one batch vs one run per channel.

Both sides render the same 16 channels of a Lite0 layer with the same steps, size and
seed through :func:`captioner.visualization.visualize_filters` (so they make the same
images, up to floating-point noise); only the batching differs. The two sides
alternate several times and the medians are compared.

The measurement runs on one torch thread unless told otherwise: on a 2-core machine that
other jobs share, two OpenMP threads stall on each other, which makes every small
single-image step many times slower (and the ratio meaninglessly large).

    python bench/bench_visualize.py [--quick | --smoke] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from modes import add_mode_flags, mode_flag  # noqa: E402

from captioner.models import EncoderSpec, build_encoder  # noqa: E402
from captioner.visualization import visualize_filters  # noqa: E402

LAYER = "features.4.0"
CHANNELS = list(range(16))
TARGET = 3.0


def _timed(fn):
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def row_filters(mode: str = "full", threads: int = 1) -> dict:
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return _measure(mode)
    finally:
        torch.set_num_threads(previous_threads)


def _measure(mode: str) -> dict:
    steps, size, repeats = {"full": (24, 128, 3), "quick": (4, 64, 2), "smoke": (1, 32, 1)}[mode]
    encoder = build_encoder(EncoderSpec())
    options = dict(steps=steps, size=size, seed=0, progress=False)
    visualize_filters(encoder, LAYER, CHANNELS[:2], steps=1, size=size, progress=False)  # warm-up
    batched_times, single_times, batched, singles = [], [], None, None
    for _ in range(repeats):
        seconds, batched = _timed(lambda: visualize_filters(encoder, LAYER, CHANNELS, **options))
        batched_times.append(seconds)
        seconds, singles = _timed(lambda: [visualize_filters(encoder, LAYER, [c], **options) for c in CHANNELS])
        single_times.append(seconds)
    difference = max(float((batched.images[i] - one.images[0]).abs().max()) for i, one in enumerate(singles))
    baseline, ours = statistics.median(single_times), statistics.median(batched_times)
    ratio = baseline / ours
    return {
        "row": "Filter visualisation, batched vs one run per channel",
        "baseline": f"16 runs of 1 channel ({LAYER}, {steps} steps, {size} px)",
        "ours": f"1 run of 16 channels in one batch ({LAYER}, {steps} steps, {size} px)",
        "baseline_value": round(baseline, 3),
        "ours_value": round(ours, 3),
        "unit": "s",
        "ratio": round(ratio, 2),
        "target": f">= {TARGET:g}x",
        "met": ratio >= TARGET,
        "command": "python bench/bench_visualize.py" + mode_flag(mode)
                   + ("" if torch.get_num_threads() == 1 else f" --threads {torch.get_num_threads()}"),
        "notes": (f"medians of {repeats} alternating repeats on {torch.get_num_threads()} torch thread(s), seed 0; "
                  f"largest pixel difference between the batched and the separate images: {difference:.1e}"
                  + (" (float rounding differs between batch sizes, and Adam's normalised first steps amplify it)"
                     if difference > 0 else "")),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_mode_flags(parser)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default: 1)")
    args = parser.parse_args(argv)
    print(json.dumps(row_filters(args.mode, threads=args.threads), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
