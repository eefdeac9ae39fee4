"""Captioning in two processes under torchrun against one process: the same command, the same
cores, the same output file (checked byte for byte).

    python bench/bench_processes.py [--quick | --smoke] [--device cpu|cuda]

Both sides run ``captioner caption CORPUS --jsonl OUT`` as fresh processes (start-up, loading the
model and the merge included, as a user would run them), alternately. On the CPU the cores are
shared out: one process with a torch thread per core, or two with half as many each. On CUDA each
process needs a GPU of its own, so the row needs two GPUs there.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from common import ROOT, corpus
from modes import mode_flag

from captioner.runtime import resolve_device  # noqa: E402

PROCESSES = 2


def _command(processes: int, images: Path, out: Path, device: str) -> list[str]:
    chunk = max(1, sum(1 for _ in images.iterdir()) // 8)  # chunks enough for every process
    caption = ["-m", "captioner", "caption", str(images), "--jsonl", str(out), "--quiet", "--device", device,
               "--chunk", str(chunk)]
    if processes == 1:
        return [sys.executable, *caption]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}", *caption]


def _timed(processes: int, images: Path, out: Path, device: str, threads: int) -> float:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    start = time.perf_counter()
    done = subprocess.run(_command(processes, images, out, device), capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{processes} process(es) failed: {done.stderr[-1000:]}")
    return seconds


def _captions(line: str) -> list[str]:
    import json

    return [c["caption"] for c in json.loads(line).get("captions", [])]


def rows(mode: str = "full", device: str | None = None) -> list[dict]:
    device = resolve_device(device or "cpu")
    count, repeats = {"full": (512, 3), "quick": (64, 1), "smoke": (8, 1)}[mode]
    if device.type == "cuda" and torch.cuda.device_count() < PROCESSES:
        return [{"row": f"14. {PROCESSES}-process captioning (torchrun) vs 1 process",
                 "error": f"needs {PROCESSES} GPUs, found {torch.cuda.device_count()}", "met": None}]
    paths = corpus(count)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    one, two = [], []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "images"
        folder.mkdir()
        for path in paths:  # the corpus folder may hold other sizes' files: link only these
            (folder / path.name).symlink_to(path)
        outs = Path(tmp) / "one.jsonl", Path(tmp) / "two.jsonl"
        for _ in range(repeats):
            one.append(_timed(1, folder, outs[0], device.type, cores))
            two.append(_timed(PROCESSES, folder, outs[1], device.type, max(1, cores // PROCESSES)))
        # with another number of torch threads per process the scores may differ in their last
        # decimal (float rounding): the captions are compared
        same = [_captions(line) for line in outs[0].read_text().splitlines()] == \
            [_captions(line) for line in outs[1].read_text().splitlines()]
    t_one, t_two = sorted(one)[len(one) // 2], sorted(two)[len(two) // 2]
    ratio = t_one / t_two
    return [{
        "row": f"14. {PROCESSES}-process captioning (torchrun) vs 1 process",
        "baseline": f"`captioner caption` of {count} JPEG files (640x480), one process, {cores} torch thread(s)",
        "ours": f"the same under torchrun --nproc-per-node={PROCESSES} ({max(1, cores // PROCESSES)} thread(s) each), "
                "merged into one file",
        "baseline_value": round(count / t_one, 1), "ours_value": round(count / t_two, 1), "unit": "img/s",
        "ratio": round(ratio, 2), "ratio_is": "speed-up", "target": "report only (2 cores)", "met": None,
        "command": "python bench/bench_processes.py" + mode_flag(mode) + f" --device {device.type}",
        "notes": f"on {device.type}; whole commands in fresh processes (start-up and merge included); same "
                 f"captions: {'yes' if same else 'NO'}; medians of {repeats} alternating runs",
    }]


if __name__ == "__main__":
    import argparse
    import json

    from modes import add_mode_flags

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_mode_flags(parser)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    for row in rows(args.mode, args.device):
        print(json.dumps(row))
