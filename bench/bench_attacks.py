"""Speed of captioner's FGSM and PGD against torchattacks on the same model and batch.

Both sides attack the same function: the offline EfficientNet-Lite0 with the shared
preprocessing in front (``captioner.attacks.PixelClassifier``, normalisation inside the
model, pixels in [0, 1], which is what torchattacks expects), on the same batch of the
example photos resized to 224 px, with the same labels (the model's predictions,
computed once and given to both, so neither pays for an extra forward pass) and, for
PGD, the same seed before each run. The two sides alternate, after one warm-up run
each, and the medians are compared.

    python bench/bench_attacks.py [--quick | --smoke] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
import torchattacks
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from modes import add_mode_flags, mode_flag  # noqa: E402

from captioner.attacks import FGSM, PGD, PixelClassifier  # noqa: E402
from captioner.data.preprocess import pil_to_tensor  # noqa: E402
from captioner.models import EncoderSpec, build_encoder  # noqa: E402


def _batch(size: int) -> torch.Tensor:
    photos = sorted((ROOT / "examples").glob("*.jpg"))
    images = [pil_to_tensor(Image.open(photos[i % len(photos)]).convert("RGB").resize((224, 224)))
              for i in range(size)]
    return torch.stack(images).float() / 255


def _time(run) -> tuple[float, torch.Tensor]:
    torch.manual_seed(0)
    start = time.perf_counter()
    result = run()
    return time.perf_counter() - start, result


def _compare(name: str, ours, theirs, repeats: int, command: str, notes: str) -> dict:
    _time(ours), _time(theirs)  # warm-up (allocator, oneDNN kernels)
    ours_times, theirs_times = [], []
    for _ in range(repeats):
        seconds, theirs_out = _time(theirs)
        theirs_times.append(seconds)
        seconds, ours_out = _time(ours)
        ours_times.append(seconds)
    baseline, value = statistics.median(theirs_times), statistics.median(ours_times)
    return {
        "row": name, "baseline": f"torchattacks {name}", "ours": f"captioner {name}",
        "baseline_value": round(baseline, 4), "ours_value": round(value, 4), "unit": "s",
        "ratio": round(value / baseline, 3), "target": "<= 1.1x", "met": value / baseline <= 1.1,
        "max_abs_diff": float((ours_out - theirs_out).abs().max()), "command": command,
        "notes": f"{notes}; medians of {repeats} alternating runs; torch threads: {torch.get_num_threads()}",
    }


def rows(mode: str = "full") -> list[dict]:
    batch, steps, repeats = {"full": (8, 10, 5), "quick": (4, 3, 3), "smoke": (1, 2, 1)}[mode]
    model = PixelClassifier(build_encoder(EncoderSpec()))
    images = _batch(batch)
    with torch.no_grad():
        labels = model(images).argmax(dim=1)
    command = "python bench/bench_attacks.py" + mode_flag(mode)
    where = f"Lite0 + preprocessing, batch {batch} x 224 px"
    fgsm = _compare("FGSM", lambda: FGSM(model, 2 / 255)(images, labels),
                    lambda: torchattacks.FGSM(model, 2 / 255)(images, labels),
                    repeats, command, f"{where}, eps 2/255")
    pgd = _compare("PGD", lambda: PGD(model, 8 / 255, 2 / 255, steps)(images, labels),
                   lambda: torchattacks.PGD(model, 8 / 255, 2 / 255, steps)(images, labels),
                   repeats, command, f"{where}, eps 8/255, alpha 2/255, {steps} steps, random start (same seed)")
    return [fgsm, pgd]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_mode_flags(parser)
    parser.add_argument("--json", action="store_true", help="print the rows as JSON")
    args = parser.parse_args()
    results = rows(args.mode)
    if args.json:
        print(json.dumps(results, indent=2))
        return
    for r in results:
        print(f"{r['row']:5s} torchattacks {r['baseline_value']:.3f} s, captioner {r['ours_value']:.3f} s, "
              f"ratio {r['ratio']:.2f} (target {r['target']}: {'met' if r['met'] else 'NOT met'}), "
              f"max |diff| {r['max_abs_diff']:.1e}  [{r['notes']}]")


if __name__ == "__main__":
    main()
