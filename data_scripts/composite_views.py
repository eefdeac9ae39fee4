"""Add composited training images to the offline dataset: cut-outs on varied backgrounds.

    python data_scripts/composite_views.py --data offline_data [--per-image 2] [--seed 0]

The offline dataset's pictures are objects on white. Real photos have backgrounds, and a
model that has only seen white ones describes a cat on a sofa as "a european coin". For
every *training* image with a transparent cut-out (``rgba`` in its record), this writes
``--per-image`` new images: the cut-out at a random scale (35-95% of the side) and
position, over a random background (a smooth random colour field, a gradient, stripes
or a check pattern, sometimes blurred), with a slight blur or noise on the whole image
now and then. They keep the captions and group of their original and are added to the
training split only; validation and test stay as built, so scores remain comparable.

Output: ``DATA/images/composite/*.jpg`` and ``DATA/dataset_offline_composite.json``
(the original records plus the new ones, Karpathy layout).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from captioner.fileio import write_json_atomic  # noqa: E402


def smooth_field(rng: np.random.Generator, size: int) -> np.ndarray:
    """A smooth random colour field: low-resolution noise upsampled, in [0, 255]."""
    cells = int(rng.integers(2, 9))
    low = rng.uniform(0, 255, (cells, cells, 3)).astype(np.uint8)
    return np.asarray(Image.fromarray(low).resize((size, size), Image.Resampling.BICUBIC), dtype=np.float32)


def background(rng: np.random.Generator, size: int) -> Image.Image:
    kind = rng.choice(["field", "gradient", "stripes", "checks", "plain"], p=[0.4, 0.25, 0.1, 0.1, 0.15])
    a, b = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size
    if kind == "field":
        array = smooth_field(rng, size)
    elif kind == "gradient":
        angle = rng.uniform(0, 2 * np.pi)
        t = (np.cos(angle) * x + np.sin(angle) * y)
        t = (t - t.min()) / (t.max() - t.min() + 1e-6)
        array = a * (1 - t[..., None]) + b * t[..., None]
    elif kind in ("stripes", "checks"):
        period = rng.uniform(0.05, 0.25)
        mask = (x // period) % 2 if kind == "stripes" else ((x // period) + (y // period)) % 2
        array = np.where(mask[..., None] > 0, a, b)
    else:
        array = np.broadcast_to(a, (size, size, 3))
    image = Image.fromarray(np.clip(array, 0, 255).astype(np.uint8))
    if rng.random() < 0.5:
        image = image.filter(ImageFilter.GaussianBlur(rng.uniform(1, 6)))
    return image


def composite(cutout: Image.Image, rng: np.random.Generator, size: int) -> Image.Image:
    canvas = background(rng, size).convert("RGBA")
    bbox = cutout.getbbox() or (0, 0, *cutout.size)
    obj = cutout.crop(bbox)
    scale = rng.uniform(0.35, 0.95) * size / max(obj.size)
    obj = obj.resize((max(1, round(obj.width * scale)), max(1, round(obj.height * scale))),
                     Image.Resampling.LANCZOS)
    left = int(rng.integers(0, size - obj.width + 1))
    top = int(rng.integers(0, size - obj.height + 1))
    canvas.alpha_composite(obj, (left, top))
    image = canvas.convert("RGB")
    if rng.random() < 0.3:
        image = image.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.2)))
    if rng.random() < 0.3:
        noise = rng.normal(0, rng.uniform(2, 10), (size, size, 3))
        image = Image.fromarray(np.clip(np.asarray(image, dtype=np.float32) + noise, 0, 255).astype(np.uint8))
    return image


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("offline_data"), help="the built offline dataset")
    parser.add_argument("--per-image", type=int, default=2, help="composites per training image")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", type=int, default=256)
    args = parser.parse_args(argv)
    source = args.data / "dataset_offline.json"
    if not source.is_file():
        print(f"error: {source} not found; build the offline dataset first (make offline-data)", file=sys.stderr)
        return 1
    data = json.loads(source.read_text())
    images = data["images"]
    out_dir = args.data / "images" / "composite"
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(args.seed)
    next_imgid = max(r["imgid"] for r in images) + 1
    next_sentid = max(s["sentid"] for r in images for s in r["sentences"]) + 1
    added, skipped = [], 0
    train = [r for r in images if r["split"] == "train" and r.get("rgba")]
    for record in tqdm(train, desc="composites", unit="img"):
        path = args.data / "rgba" / record["rgba"]
        try:
            cutout = Image.open(path).convert("RGBA")
        except OSError as error:
            print(f"skipped {path}: {error}", file=sys.stderr)
            skipped += 1
            continue
        for k in range(args.per_image):
            name = f"{Path(record['filename']).stem}__c{k}.jpg"
            composite(cutout, rng, args.size).save(out_dir / name, quality=92)
            sentences = []
            for s in record["sentences"]:
                sentences.append({**s, "imgid": next_imgid, "sentid": next_sentid})
                next_sentid += 1
            added.append({**record, "imgid": next_imgid, "filepath": "composite", "filename": name,
                          "sentences": sentences, "sentids": [s["sentid"] for s in sentences],
                          "kind": f"{record['kind']}-composite"})
            next_imgid += 1
    target = args.data / "dataset_offline_composite.json"
    write_json_atomic(target, {**data, "images": images + added, "composites": {
        "per_image": args.per_image, "seed": args.seed, "added": len(added), "skipped": skipped}})
    print(f"{len(added)} composites of {len(train)} training images written to {out_dir}; "
          f"{skipped} skipped; dataset: {target}")
    return 0 if not skipped or added else 1


if __name__ == "__main__":
    sys.exit(main())
