"""Shared pieces of the benchmarks: the image corpus, alternating timing, machine facts.

The claims of the benchmarks are ratios measured in one run: both sides of a row run
alternately, several times, and their medians are compared, so a slow or busy moment of
the machine hits both sides alike.
"""

from __future__ import annotations

import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from modes import add_mode_flags  # noqa: E402

from captioner.runtime import tune_allocator  # noqa: E402

tune_allocator()  # every row runs as the captioner command would (captioner.runtime)

# Where the generated image corpora go (ignored by git); CAPTIONER_BENCH_CORPUS moves them.
CORPUS_DIR = Path(os.environ.get("CAPTIONER_BENCH_CORPUS") or ROOT / "bench" / ".corpus")

# What each example photo shows, for benchmarks that need captions.
EXAMPLE_CAPTIONS = {
    "coffee": "a cup of coffee", "cat": "a cat", "astronaut": "an astronaut", "rocket": "a rocket",
    "coins": "some old coins", "clock": "a clock", "hubble": "stars in space", "retina": "an eye",
}


def corpus(count: int, size: tuple[int, int] = (640, 480), seed: int = 0) -> list[Path]:
    """``count`` JPEG files made from the example photos by random crops, flips and scales.

    Written once into bench/.corpus/ (ignored by git) and reused; the same seed gives the
    same files. A marker written last tells a complete corpus from an interrupted one.
    """
    folder = CORPUS_DIR / f"{count}-{size[0]}x{size[1]}-{seed}"
    paths = [folder / f"{i:05d}.jpg" for i in range(count)]
    complete = folder / ".complete"
    if complete.is_file() and all(p.is_file() for p in paths):
        return paths
    folder.mkdir(parents=True, exist_ok=True)
    photos = sorted((ROOT / "examples").glob("*.jpg"))
    sources = [Image.open(p).convert("RGB") for p in photos]
    rng = np.random.default_rng(seed)
    for i, path in enumerate(paths):
        image = sources[i % len(sources)]
        w, h = image.size
        scale = rng.uniform(0.6, 1.0)
        cw, ch = int(w * scale), int(h * scale)
        left, top = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
        view = image.crop((left, top, left + cw, top + ch)).resize(size, Image.Resampling.BICUBIC)
        if rng.random() < 0.5:
            view = view.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        view.save(path, quality=90)
    complete.write_text(f"{count} files\n")
    return paths


def caption_of(path: Path) -> str:
    """The caption of corpus image ``path`` (the example photo it was made from)."""
    photos = sorted((ROOT / "examples").glob("*.jpg"))
    return EXAMPLE_CAPTIONS[photos[int(path.stem) % len(photos)].stem]


def alternate(baseline, ours, repeats: int, warmup: bool = True) -> tuple[float, float]:
    """Median seconds of ``baseline()`` and ``ours()``, run alternately ``repeats`` times."""
    if warmup:
        baseline()
        ours()
    times_b, times_o = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        baseline()
        times_b.append(time.perf_counter() - start)
        start = time.perf_counter()
        ours()
        times_o.append(time.perf_counter() - start)
    return statistics.median(times_b), statistics.median(times_o)


def machine() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                memory = f"{int(line.split()[1]) / 1024 ** 2:.1f} GiB"
    except OSError:
        pass
    return {
        "cpu": cpu, "cores": os.cpu_count(), "memory": memory, "python": platform.python_version(),
        "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.is_available(), "load_average": os.getloadavg()[0],
    }


def run_rows(rows, doc: str) -> None:
    """Command line of a benchmark module: ``--quick`` or ``--smoke``, then one JSON line per row."""
    import argparse
    import json

    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    add_mode_flags(parser)
    for row in rows(parser.parse_args().mode):
        print(json.dumps(row))
