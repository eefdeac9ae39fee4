"""A tiny captioning dataset of coloured shapes, written in every supported format."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from PIL import Image, ImageDraw

COLOURS = {"red": (220, 30, 30), "green": (30, 180, 30), "blue": (30, 60, 220)}
SHAPES = ("square", "circle", "triangle")
SPLIT_OF = {0: "train", 1: "train", 2: "train", 3: "train", 4: "val", 5: "test"}


def draw(colour: str, shape: str, variant: int, size: int = 96) -> Image.Image:
    image = Image.new("RGB", (size, size), (245, 245, 235) if variant % 2 else (200, 200, 200))
    pen = ImageDraw.Draw(image)
    pad = 12 + (variant * 5) % 20
    box = (pad, pad, size - pad, size - pad)
    fill = COLOURS[colour]
    if shape == "square":
        pen.rectangle(box, fill=fill)
    elif shape == "circle":
        pen.ellipse(box, fill=fill)
    else:
        pen.polygon([(size // 2, pad), (size - pad, size - pad), (pad, size - pad)], fill=fill)
    return image


def make_shapes(root: Path, variants: int = 6) -> list[dict]:
    """Draw colour x shape x variant images into ``root/images``; return their entries.

    Each image has two captions; splits: variants 0-3 train, 4 val, 5 test.
    """
    (root / "images").mkdir(parents=True, exist_ok=True)
    entries = []
    for colour in COLOURS:
        for shape in SHAPES:
            for variant in range(variants):
                name = f"{colour}_{shape}_{variant}.png"
                draw(colour, shape, variant).save(root / "images" / name)
                entries.append({
                    "name": name, "split": SPLIT_OF[variant % 6],
                    "captions": [f"a {colour} {shape}", f"a {shape} that is {colour}"],
                })
    return entries


def write_karpathy(root: Path, entries: list[dict]) -> Path:
    images = []
    for i, e in enumerate(entries):
        images.append({
            "imgid": i, "filepath": "", "filename": e["name"], "split": e["split"],
            "sentences": [{"raw": c, "tokens": c.split(), "imgid": i, "sentid": 2 * i + j}
                          for j, c in enumerate(e["captions"])],
        })
    path = root / "dataset_shapes.json"
    path.write_text(json.dumps({"dataset": "shapes", "images": images}))
    return path


def write_coco(root: Path, entries: list[dict]) -> tuple[Path, Path]:
    paths = []
    for split in ("train", "val"):
        chosen = [(i, e) for i, e in enumerate(entries) if (e["split"] == "train") == (split == "train")]
        data = {
            "info": {}, "licenses": [],
            "images": [{"id": 1000 + i, "file_name": e["name"], "width": 96, "height": 96} for i, e in chosen],
            "annotations": [{"id": 10 * i + j, "image_id": 1000 + i, "caption": c}
                            for i, e in chosen for j, c in enumerate(e["captions"])],
        }
        path = root / f"captions_{split}.json"
        path.write_text(json.dumps(data))
        paths.append(path)
    return paths[0], paths[1]


def write_flickr8k(root: Path, entries: list[dict]) -> Path:
    lines = [f"{e['name']}#{j}\t{c}" for e in entries for j, c in enumerate(e["captions"])]
    path = root / "Flickr8k.token.txt"
    path.write_text("\n".join(lines) + "\n")
    for split, listing in (("train", "trainImages"), ("val", "devImages"), ("test", "testImages")):
        (root / f"Flickr_8k.{listing}.txt").write_text("".join(f"{e['name']}\n" for e in entries if e["split"] == split))
    return path


def write_generic(root: Path, entries: list[dict]) -> tuple[Path, Path]:
    jsonl = root / "own.jsonl"
    jsonl.write_text("".join(json.dumps({"image": e["name"], "caption": c, "split": e["split"]}) + "\n"
                             for e in entries for c in e["captions"]))
    csv_path = root / "own.csv"
    with open(csv_path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image", "caption", "split"])
        for e in entries:
            for c in e["captions"]:
                writer.writerow([e["name"], c, e["split"]])
    return jsonl, csv_path
