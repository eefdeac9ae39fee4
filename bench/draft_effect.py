"""What decoding JPEGs at reduced size would change: PIL's ``draft`` (DCT scaling in the JPEG
decoder: 1/2, 1/4 or 1/8 of the size) whenever the shorter side is at least twice the crop,
reduced no further than the crop, before the usual resize and centre crop.

    python bench/draft_effect.py [--photos photo_data/labels.jsonl] [--config configs/offline.yaml
                                  --set data.path=... --set data.images=...] [--work DIR]

Reports, without and with reduced decoding, the time to read and preprocess the bench corpus
(640x480 JPEGs: decoded at 320x240, then resized up to 256), the mean and largest pixel
change, the classifier's top-1 naming rate on labelled photos and, with ``--config``, the
test split's CIDEr-D (guided and unguided beam search; feature caches in ``--work``). The
reduced decoding is patched in here for the measurement only: captioner itself decodes at
full size.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import time
from pathlib import Path

import torch
from PIL import Image

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

from common import corpus  # noqa: E402

from captioner.config import load_config  # noqa: E402
from captioner.data import images as image_module  # noqa: E402
from captioner.data.datasets import read_dataset  # noqa: E402
from captioner.data.images import load_image  # noqa: E402
from captioner.data.preprocess import preprocess  # noqa: E402
from captioner.evaluation import evaluate  # noqa: E402
from captioner.models import EncoderSpec  # noqa: E402

CROP = EncoderSpec().resolved().preprocessing.crop_size


@contextlib.contextmanager
def reduced_decoding(on: bool):
    """While open (and ``on``), every image captioner opens is a JPEG decoded at reduced size."""
    if not on:
        yield
        return
    original = Image.open

    def open_reduced(path, *args, **kwargs):
        image = original(path, *args, **kwargs)
        width, height = image.size
        if image.format == "JPEG" and min(width, height) >= 2 * CROP:
            short = min(width, height)
            image.draft(image.mode, (width * CROP // short, height * CROP // short))
        return image

    image_module.Image.open = open_reduced
    try:
        yield
    finally:
        image_module.Image.open = original


def timing(spec, count: int = 64, repeats: int = 5) -> dict:
    paths = corpus(count)

    def read(on):
        with reduced_decoding(on):
            return torch.stack([preprocess(load_image(p, resize_to=spec.resize_size), spec) for p in paths])

    full, reduced = read(False), read(True)
    times = {False: [], True: []}
    for _ in range(repeats):
        for on in (False, True):
            start = time.perf_counter()
            read(on)
            times[on].append(time.perf_counter() - start)
    change = (full - reduced).abs()
    return {"ms_per_photo_full": 1000 * statistics.median(times[False]) / count,
            "ms_per_photo_reduced": 1000 * statistics.median(times[True]) / count,
            "pixel_change_mean": float(change.mean()), "pixel_change_max": float(change.max())}


def qualifies(path) -> bool:
    """Whether reduced decoding would apply to the image file ``path``."""
    with Image.open(path) as image:
        return image.format == "JPEG" and min(image.size) >= 2 * CROP


def rates(summary: dict) -> dict:
    """Naming rate per system, and which photos' captions or labels there are."""
    return {name: {"rate": system["naming_rate"], "captions": [row["caption"] for row in system["rows"]],
                   "named": [row["named"] for row in system["rows"]]}
            for name, system in summary.get("naming", {}).get("systems", {}).items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--photos", help="labels.jsonl of labelled photos")
    parser.add_argument("--config")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--checkpoint")
    parser.add_argument("--work", default=str(BENCH / ".draft"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(json.dumps({"timing (1 thread)": timing(EncoderSpec().resolved().preprocessing)}), flush=True)
    config = None
    if args.config:
        config = load_config(args.config, args.overrides)
        test = [r.image_path for r in read_dataset(config.data).split("test")]
        reduced = sum(qualifies(p) for p in test)
        print(json.dumps({"test images": len(test), "decoded at reduced size": reduced}), flush=True)
        if reduced == 0:  # the same pixels, so the same scores: nothing to evaluate
            config = None
    if config is None and args.photos is None:
        return 0
    if args.photos:
        photos = [json.loads(line)["image"] for line in Path(args.photos).read_text().splitlines() if line.strip()]
        base = Path(args.photos).parent
        print(json.dumps({"photos": len(photos), "decoded at reduced size": sum(qualifies(base / p) for p in photos)}))
    results = {}
    for on in (False, True):
        name = "reduced" if on else "full"
        if config is not None:
            config = load_config(args.config, [*args.overrides, f"train.cache_dir={args.work}/cache-{name}"])
        with reduced_decoding(on):
            summary = evaluate(config, args.checkpoint, methods=["beam"], guides=["imagenet", "none"],
                               naming=args.photos, show=False)
        results[name] = {"naming": rates(summary),
                         "CIDEr-D": {k: v.get("CIDEr-D") for k, v in summary.get("systems", {}).items()}}
    for system, full in results["full"]["naming"].items():
        reduced = results["reduced"]["naming"][system]
        print(json.dumps({"naming": system, "full": full["rate"], "reduced": reduced["rate"],
                          "outputs changed": sum(a != b for a, b in zip(full["captions"], reduced["captions"])),
                          "named changed": sum(a != b for a, b in zip(full["named"], reduced["named"]))}))
    print(json.dumps({"CIDEr-D": {name: r["CIDEr-D"] for name, r in results.items()}}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
