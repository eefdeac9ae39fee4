"""The quality bar of class visualisation on the offline EfficientNet-Lite0.

For ten classes spread over the ImageNet label space, render the class with the default
settings, write the PNG, read it back with ``load_image``, preprocess it with the
encoder's own preprocessing and classify it. The bar: the class is top-1 with
probability >= 0.9 for at least 9 of the 10.

    python bench/check_class_quality.py [--out DIR] [--steps N] [--seed S] [--classes a,b,...] [--threads N]

Prints a Markdown table (class, index, probability read back from the PNG, top-1, wall
time) and exits with 1 when the bar is not met.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from captioner.data.images import load_image  # noqa: E402
from captioner.data.preprocess import preprocess  # noqa: E402
from captioner.models import EncoderSpec, build_encoder  # noqa: E402
from captioner.visualization import resolve_class, visualize_class  # noqa: E402

CLASSES = ["tench", "bald eagle", "golden retriever", "starfish", "balloon", "convertible", "parachute",
           "school bus", "banana", "volcano"]
BAR_PROBABILITY, BAR_SHARE = 0.9, 0.9  # 9 of 10


@torch.no_grad()
def classify_file(encoder, path: Path) -> torch.Tensor:
    pixels = preprocess(load_image(path), encoder.preprocessing)
    return encoder.classify(pixels.unsqueeze(0)).softmax(dim=-1)[0]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="bench/out/classes", help="folder for the PNGs")
    parser.add_argument("--classes", help="comma-separated class names (default: ten across the label space)")
    parser.add_argument("--steps", type=int, help="override the default number of steps")
    parser.add_argument("--seed", type=int, help="override the default seed")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (default: 1, the fastest on a 2-core machine shared with other jobs)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    encoder = build_encoder(EncoderSpec())
    names = args.classes.split(",") if args.classes else CLASSES
    out = Path(args.out)
    times, passed = [], 0
    print("| class | index | p (PNG read back) | top-1 (PNG) | wall time |")
    print("|---|---|---|---|---|")
    for name in names:
        index = resolve_class(encoder.categories, name)
        start = time.perf_counter()
        overrides = {key: value for key, value in (("steps", args.steps), ("seed", args.seed)) if value is not None}
        result = visualize_class(encoder, index, progress=False, **overrides)
        path = result.save(out / f"{index:03d}_{encoder.categories[index].replace(' ', '_')}.png")
        seconds = time.perf_counter() - start
        probabilities = classify_file(encoder, path)
        top = int(probabilities.argmax())
        ok = top == index and float(probabilities[index]) >= BAR_PROBABILITY
        passed += ok
        times.append(seconds)
        print(f"| {encoder.categories[index]} | {index} | {float(probabilities[index]):.4f} | "
              f"{encoder.categories[top]}{'' if ok else ' (miss)'} | {seconds:.1f} s |", flush=True)
    needed = math.ceil(BAR_SHARE * len(times))
    print(f"\n{passed}/{len(times)} classes top-1 with p >= {BAR_PROBABILITY} from the PNG "
          f"(bar: {needed}/{len(times)}); {sum(times) / len(times):.1f} s per class "
          f"on {torch.get_num_threads()} torch thread(s)")
    return 0 if passed >= needed else 1


if __name__ == "__main__":
    sys.exit(main())
