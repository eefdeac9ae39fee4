"""Captioning speed and memory: end to end vs the encoder alone, batched vs per-image beam
search, peak memory on 100 vs 1,000 images, guided vs unguided captioning.

    python bench/bench_captioning.py [--quick | --smoke]

Uses the bundled default checkpoint and JPEG files made from the example photos.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys

import torch

from common import ROOT, alternate, corpus, run_rows
from modes import mode_flag

from captioner import Captioner  # noqa: E402
from captioner.api import default_reader_processes  # noqa: E402
from captioner.data.images import load_image  # noqa: E402
from captioner.data.preprocess import preprocess  # noqa: E402
from captioner.decoding import decode  # noqa: E402
from captioner.models.stepping import LSTMStepper  # noqa: E402

BATCH = 16  # the CLI's default batch size


def _pixels(captioner, paths) -> torch.Tensor:
    return torch.stack([preprocess(load_image(p), captioner.preprocessing) for p in paths])


def row_end_to_end(mode: str = "full") -> dict:
    count, repeats = {"full": (256, 3), "quick": (64, 1), "smoke": (4, 1)}[mode]
    paths = [str(p) for p in corpus(count)]
    captioner = Captioner.from_checkpoint(device="cpu")
    pixels = _pixels(captioner, paths)  # decoded and preprocessed up front: not timed

    def encoder_only():
        with torch.no_grad():
            for chunk in pixels.split(BATCH):
                captioner.model.encoder(chunk)

    workers = default_reader_processes(count, BATCH)  # what `captioner caption` uses

    def end_to_end():
        results = list(captioner.caption_files(paths, batch_size=BATCH, num_workers=workers,
                                               method="beam", beam_size=3, guide="none"))
        assert all(r.text for r in results)

    t_encoder, t_e2e = alternate(encoder_only, end_to_end, repeats)
    ratio = t_encoder / t_e2e
    return {
        "row": "1. End-to-end captioning vs the encoder alone",
        "baseline": f"encoder forward on {count} images already decoded in memory",
        "ours": f"caption {count} JPEG files (640x480): read, preprocess, encode, beam 3",
        "baseline_value": round(count / t_encoder, 1), "ours_value": round(count / t_e2e, 1), "unit": "img/s",
        "ratio": round(ratio, 2), "ratio_is": "end-to-end throughput / encoder-only throughput",
        "target": ">= 0.8x", "met": ratio >= 0.8,
        "command": "python bench/bench_captioning.py" + mode_flag(mode),
        "notes": f"batch {BATCH}, {workers} reader process(es), medians of {repeats} alternating runs",
    }


def row_beam(mode: str = "full") -> dict:
    count, repeats = {"full": (256, 3), "quick": (64, 1), "smoke": (4, 1)}[mode]
    paths = [str(p) for p in corpus(count)]
    captioner = Captioner.from_checkpoint(device="cpu")
    with torch.no_grad():
        features = torch.cat([captioner.model.encoder(chunk) for chunk in _pixels(captioner, paths).split(BATCH)])
    decoder, vocab = captioner.model.decoder, captioner.vocab
    settings = captioner.settings(method="beam", beam_size=3, max_length=16, guide="none")
    results = {}

    def per_image():
        results["single"] = [decode(LSTMStepper(decoder, features[i:i + 1]), vocab, settings)[0][0].tokens
                             for i in range(count)]

    def batched():
        results["batched"] = [h[0].tokens for chunk in features.split(BATCH)
                              for h in decode(LSTMStepper(decoder, chunk), vocab, settings)]

    t_single, t_batched = alternate(per_image, batched, repeats)
    same = results["single"] == results["batched"]
    ratio = t_single / t_batched
    return {
        "row": "2. Batched beam search vs per-image decoding",
        "baseline": f"beam 3, one image at a time (its 3 beams as the batch), {count} images",
        "ours": f"beam 3, batches of {BATCH} images ({BATCH * 3} rows per step)",
        "baseline_value": round(count / t_single, 1), "ours_value": round(count / t_batched, 1), "unit": "img/s",
        "ratio": round(ratio, 2), "ratio_is": "speed-up", "target": ">= 3x", "met": ratio >= 3,
        "command": "python bench/bench_captioning.py" + mode_flag(mode),
        "notes": f"same captions from both: {'yes' if same else 'NO'}; medians of {repeats} alternating runs",
    }


def row_guided(mode: str = "full") -> dict:
    """``captioner caption DIR`` with the default settings (guided by the ImageNet classifier)
    against the same with ``--guide none``."""
    count, repeats = {"full": (256, 3), "quick": (64, 1), "smoke": (4, 1)}[mode]
    paths = [str(p) for p in corpus(count)]
    captioner = Captioner.from_checkpoint(device="cpu")
    workers = default_reader_processes(count, BATCH)
    forced = {}

    def unguided():
        list(captioner.caption_files(paths, batch_size=BATCH, num_workers=workers, guide="none"))

    def guided():
        results = list(captioner.caption_files(paths, batch_size=BATCH, num_workers=workers, guide="imagenet"))
        forced["images"] = sum(bool(r.forced) for r in results)

    t_plain, t_guided = alternate(unguided, guided, repeats)
    ratio = t_plain / t_guided
    settings = captioner.decoding
    return {
        "row": "9. Guided captioning vs unguided",
        "baseline": f"caption {count} JPEG files, --guide none (beam {settings.beam_size})",
        "ours": f"the same guided by the ImageNet classifier (threshold {settings.guide_threshold})",
        "baseline_value": round(count / t_plain, 1), "ours_value": round(count / t_guided, 1), "unit": "img/s",
        "ratio": round(ratio, 2), "ratio_is": "guided throughput / unguided throughput",
        "target": ">= 0.7x", "met": ratio >= 0.7,
        "command": "python bench/bench_captioning.py" + mode_flag(mode),
        "notes": f"words forced in {forced['images']} of {count} images; medians of {repeats} alternating runs",
    }


def _peak_rss_mb(count: int) -> float:
    folder = corpus(count)[0].parent
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "peak_rss.py"), "caption", str(folder), "--quiet",
                          "--device", "cpu"], capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"peak_rss.py failed: {out.stderr.strip()[-2000:]}")
    peak = float(out.stdout.strip().splitlines()[-1])
    if peak <= 0:
        raise RuntimeError("peak_rss.py measured no memory: it needs Linux's /proc/PID/smaps_rollup or status")
    return peak


def row_memory(mode: str = "full") -> dict:
    small, large, runs = {"full": (100, 1000, 3), "quick": (50, 250, 1), "smoke": (4, 8, 1)}[mode]
    peaks_small, peaks_large = [], []
    for _ in range(runs):  # alternately; one run's sampled peak varies by about 10% (the allocator)
        peaks_small.append(_peak_rss_mb(small))
        peaks_large.append(_peak_rss_mb(large))
    rss_small, rss_large = statistics.median(peaks_small), statistics.median(peaks_large)
    growth = rss_large / rss_small
    return {
        "row": "4. Peak memory, many images vs few",
        "baseline": f"captioner caption on {small} images", "ours": f"captioner caption on {large} images",
        "baseline_value": round(rss_small), "ours_value": round(rss_large), "unit": "MB peak",
        "ratio": round(growth, 3), "ratio_is": "peak memory ratio",
        "target": "<= 1.10x and < 1,536 MB", "met": growth <= 1.10 and rss_large < 1536,
        "command": "python bench/bench_captioning.py" + mode_flag(mode),
        "notes": "peak memory of the command's process tree (sum of PSS, so pages a forked image reader shares "
                 f"with its parent count once), sampled every 20 ms; medians of {runs} alternating fresh processes "
                 f"per side (peaks: {', '.join(f'{p:.0f}' for p in peaks_small)} and "
                 f"{', '.join(f'{p:.0f}' for p in peaks_large)} MB)",
    }


ENCODER_SCRIPT = """
import sys, time, torch
from captioner.models import EncoderSpec, build_encoder
from captioner.runtime import tune_allocator
tuned = tune_allocator()
encoder = build_encoder(EncoderSpec()).eval()
x = torch.rand({batch}, 3, 224, 224, generator=torch.Generator().manual_seed(0))
with torch.no_grad():
    encoder(x)
    times = []
    for _ in range({repeats}):
        start = time.perf_counter(); encoder(x); times.append(time.perf_counter() - start)
times.sort()
print(tuned, {batch} / times[len(times) // 2])
"""


def _encoder_throughput(tuned: bool, repeats: int, batch: int) -> tuple[bool, float]:
    env = {**os.environ, "CAPTIONER_MALLOC": "tuned" if tuned else "default"}
    out = subprocess.run([sys.executable, "-c", ENCODER_SCRIPT.format(batch=batch, repeats=repeats)],
                         capture_output=True, text=True, env=env)
    if out.returncode != 0:
        raise RuntimeError(f"encoder throughput script failed: {out.stderr.strip()[-2000:]}")
    flag, rate = out.stdout.split()
    return flag == "True", float(rate)


def row_allocator(mode: str = "full") -> dict:
    """The encoder's throughput in a fresh process with glibc's defaults vs tune_allocator()."""
    runs, repeats, batch = {"full": (3, 5, BATCH), "quick": (1, 2, BATCH), "smoke": (1, 1, 2)}[mode]
    default, tuned, applied = [], [], []
    for _ in range(runs):
        default.append(_encoder_throughput(False, repeats, batch)[1])
        flag, rate = _encoder_throughput(True, repeats, batch)
        tuned.append(rate)
        applied.append(flag)
    baseline, ours = statistics.median(default), statistics.median(tuned)
    return {
        "row": "8. Encoder throughput, glibc malloc defaults vs captioner.runtime.tune_allocator",
        "baseline": f"Lite0 forward, batch {batch} x 224 px, CAPTIONER_MALLOC=default",
        "ours": "the same with the raised mmap threshold (what the CLI and Captioner do)",
        "baseline_value": round(baseline, 1), "ours_value": round(ours, 1), "unit": "img/s",
        "ratio": round(ours / baseline, 2), "ratio_is": "speed-up",
        "target": "report only", "met": None,
        "command": "python bench/bench_captioning.py" + mode_flag(mode),
        "notes": f"medians over {runs} alternating fresh processes of the median of {repeats} batches each; "
                 f"allocator tuned: {'yes' if all(applied) else 'no (not glibc)'}",
    }


def rows(mode: str = "full") -> list[dict]:
    return [row_end_to_end(mode), row_beam(mode), row_memory(mode), row_allocator(mode), row_guided(mode)]


if __name__ == "__main__":
    run_rows(rows, __doc__)
