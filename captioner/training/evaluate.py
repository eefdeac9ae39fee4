"""``captioner evaluate``: decode a split and score it, beside retrieval baselines.

Every system (the checkpoint with each decoding method, and the baselines) is scored
by the same code on the same images and references, so the numbers compare:

* ``nn``: the caption of the nearest training image in encoder-feature space (cosine
  similarity of the pooled features; the classic retrieval baseline). When that image
  has several captions, the one that agrees most with its siblings (highest mean word
  overlap, F1) is used.
* ``frequent``: the most frequent training caption, for every image.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import torch

from ..api import Captioner
from ..data.cache import FeatureCache
from ..data.datasets import read_dataset
from ..fileio import AtomicLineWriter, write_json_atomic
from ..metrics import score_captions
from .loop import decode_features

BASELINES = ("nn", "frequent")


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _overlap_f1(a: list[str], b: list[str]) -> float:
    common = sum((Counter(a) & Counter(b)).values())
    return 0.0 if not common else 2 * common / (len(a) + len(b))


def consensus_caption(raw: list[str], tokens: list[list[str]]) -> str:
    """The caption that agrees most with the other captions of the same image."""
    if len(raw) == 1:
        return raw[0]
    scores = [sum(_overlap_f1(t, o) for j, o in enumerate(tokens) if j != i) for i, t in enumerate(tokens)]
    return raw[int(np.argmax(scores))]


def nearest_neighbour_captions(train_features: np.ndarray, train_captions: list[str],
                               query_features: np.ndarray, chunk: int = 1024) -> list[str]:
    """For each query vector, the caption of the most cosine-similar training vector."""
    train = torch.nn.functional.normalize(torch.as_tensor(np.asarray(train_features, dtype=np.float32)), dim=1)
    result = []
    for start in range(0, len(query_features), chunk):
        query = torch.as_tensor(np.asarray(query_features[start:start + chunk], dtype=np.float32))
        nearest = (torch.nn.functional.normalize(query, dim=1) @ train.T).argmax(dim=1)
        result.extend(train_captions[int(i)] for i in nearest)
    return result


def most_frequent_caption(captions: list[str]) -> str:
    counts = Counter(c.strip().lower().rstrip(".") for c in captions)
    return min(counts, key=lambda c: (-counts[c], c))


def evaluate(config, checkpoint: str | None, split: str = "test", methods: list[str] = ("beam",),
             baselines: list[str] = (), beam_size: int | None = None, length_penalty: float | None = None,
             max_length: int | None = None, device: str | None = None, json_out: str | None = None,
             predictions: str | None = None, show: bool = True) -> dict:
    """Score the checkpoint (once per decoding method) and the baselines on ``split``."""
    unknown = set(baselines) - set(BASELINES)
    if unknown:
        raise ValueError(f"unknown baseline(s) {sorted(unknown)}; choose from {', '.join(BASELINES)}")
    captioner = Captioner.from_checkpoint(checkpoint, device=device)
    contents = read_dataset(config.data)
    for problem in contents.problems[:5]:
        _log(f"data: {problem}")
    if len(contents.problems) > 5:
        _log(f"data: ... {len(contents.problems) - 5} more bad records")
    records = contents.records
    paths = [r.image_path for r in records]
    encoder = captioner.model.encoder
    cache = FeatureCache(config.train.cache_dir, config.data.name, encoder, paths, 1, config.train.seed)
    cache.build(encoder, captioner.device, config.train.extract_batch_size, config.train.num_workers,
                progress=show)
    features, failed = cache.load()
    test_rows = [i for i, r in enumerate(records) if r.split == split and i not in failed]
    if not test_rows:
        raise ValueError(f"{config.data.path}: the {split!r} split has no images")
    train_rows = [i for i, r in enumerate(records) if r.split == "train" and i not in failed]
    ids = [records[i].image_id for i in test_rows]
    references = {records[i].image_id: records[i].raw for i in test_rows}
    test_features = np.asarray(features[test_rows, 0], dtype=np.float32)

    systems: dict[str, list[str]] = {}
    overrides = {"beam_size": beam_size, "length_penalty": length_penalty, "max_length": max_length}
    decoding = {**captioner.decoding, **{k: v for k, v in overrides.items() if v is not None}}  # what was used
    decoding.pop("method", None)  # each system names its own method
    for method in methods:
        k = decoding["beam_size"]
        name = f"beam{k}" if method == "beam" else method
        systems[name] = decode_features(captioner.model.decoder, captioner.vocab, test_features, method, k,
                                        decoding["length_penalty"], decoding["max_length"], device=captioner.device,
                                        show=show)
    if "nn" in baselines:
        if not train_rows:
            raise ValueError("the nn baseline needs training images")
        captions = [consensus_caption(records[i].raw, records[i].tokens) for i in train_rows]
        systems["nn"] = nearest_neighbour_captions(features[train_rows, 0], captions, test_features)
    if "frequent" in baselines:
        frequent = most_frequent_caption([c for i in train_rows for c in records[i].raw])
        systems["frequent"] = [frequent] * len(test_rows)

    results = {}
    for name, captions in systems.items():
        report = score_captions(dict(zip(ids, captions)), references)
        results[name] = report.to_dict()
    summary = {
        "checkpoint": str(checkpoint) if checkpoint else "default", "data": config.data.path, "split": split,
        "images": len(test_rows), "scale": "x100", "decoding": decoding,
        "systems": results,
    }
    if json_out:
        write_json_atomic(json_out, summary, indent=2)
    if predictions:
        folder = Path(predictions)
        for name, captions in systems.items():
            writer = AtomicLineWriter(folder / f"{split}-{name}.jsonl")
            for row, caption in zip(test_rows, captions):
                writer.write(json.dumps({"image_id": records[row].image_id, "path": records[row].image_path,
                                         "caption": caption, "references": records[row].raw}, ensure_ascii=False))
            writer.close()
    return summary


def format_table(summary: dict) -> str:
    """The scores as a Markdown table, one row per system."""
    systems = summary["systems"]
    metrics = list(dict.fromkeys(m for s in systems.values() for m in s["scores"]))
    decoding = summary.get("decoding") or {}
    beam = next((name for name in systems if name.startswith("beam")), None)
    settings = (f"; {beam}: length penalty {decoding.get('length_penalty')}, at most {decoding.get('max_length')} words"
                if beam else "")
    lines = [
        f"{summary['split']} split, {summary['images']} images, scores x100{settings}",
        "",
        "| system | " + " | ".join(metrics) + " |",
        "|---|" + "---|" * len(metrics),
    ]
    for name, result in systems.items():
        lines.append(f"| {name} | " + " | ".join(f"{result['scores'].get(m, float('nan')):.1f}" for m in metrics) + " |")
    notes = list(dict.fromkeys(n for s in systems.values() for n in s.get("notes", [])))
    if notes:
        lines += [""] + [f"note: {n}" for n in notes]
    return "\n".join(lines)
