"""``captioner evaluate``: decode a split and score it, beside retrieval baselines, and
measure how often captions name the object of labelled photos.

Every system (the checkpoint with each decoding method, guided and unguided, and the
baselines) is scored by the same code on the same images and references, so the numbers
compare:

* ``nn``: the caption of the nearest training image in encoder-feature space (cosine
  similarity of the pooled features; the classic retrieval baseline). When that image
  has several captions, the one that agrees most with its siblings (highest mean word
  overlap, F1) is used.
* ``frequent``: the most frequent training caption, for every image.

Object naming (``naming``): the share of labelled photos (``labels.jsonl`` of
``data_scripts/build_photo_set.py``) whose caption names the labelled object, by the rule
of :mod:`captioner.metrics.naming`; beside it, what the classifier's own top-1 ImageNet
label scores when read as a caption.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from .api import Captioner
from .data.batches import image_batches
from .data.cache import FeatureCache
from .data.datasets import read_dataset
from .decoding import DecodingSettings, require_method
from .distributed import Distributed, setup, teardown
from .errors import ArgumentError
from .fileio import AtomicLineWriter, write_json_atomic
from .formats import coco_image_ids, write_results
from .metrics import score_captions

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


def system_name(settings: DecodingSettings) -> str:
    """``beam5``, ``greedy``; ``+imagenet`` when guided."""
    name = f"beam{settings.beam_size}" if settings.method == "beam" else settings.method
    return name + ("" if settings.guide == "none" else f"+{settings.guide}")


def caption_features(captioner: Captioner, features: np.ndarray, settings: DecodingSettings,
                     batch_size: int = 100, show: bool = False) -> list[str]:
    """The best caption of every row of a feature array (a feature cache), guided as ``settings`` say."""
    captions: list[str] = []
    for start in tqdm(range(0, len(features), batch_size), desc=f"decoding ({system_name(settings)})",
                      disable=not show, leave=False):
        chunk = torch.as_tensor(np.asarray(features[start:start + batch_size], dtype=np.float32))
        captions.extend(result.text for result in captioner.decode(chunk.to(captioner.device), settings))
    return captions


def _systems(captioner: Captioner, methods, guides, options: dict) -> list[DecodingSettings]:
    systems = [captioner.settings(**{**options, "method": m, "guide": g, "num_captions": 1})
               for m in methods for g in guides]  # a method or guide of None: the checkpoint's
    for settings in systems:
        require_method(settings.method, "evaluation", deterministic=True)
    return systems


def evaluate(config, checkpoint: str | None, split: str = "test", methods: list[str] = ("beam",),
             guides: list[str] = ("none",), baselines: list[str] = (), options: dict | None = None,
             device: str | None = None, json_out: str | None = None, predictions: str | None = None,
             naming: str | None = None, show: bool = True, html: str | None = None,
             predictions_format: str = "jsonl") -> dict | None:
    """Score the checkpoint (once per decoding method and guide) and the baselines on ``split``
    of ``config``'s data, and/or the object naming rate on the photos of ``naming``.

    ``options``: decoding settings that override the checkpoint's (beam size, length
    penalty, guide threshold, ...). ``predictions``: a folder for each system's captions,
    ``SPLIT-SYSTEM.jsonl`` (with paths and references) or, with ``predictions_format="coco"``,
    ``SPLIT-SYSTEM.json`` as coco-caption's ``loadRes`` reads it. ``html``: a page with the scores and, by CIDEr-D, the best and
    worst images with each system's caption beside the references
    (:func:`captioner.report_pages.write_evaluation_page`). Under torchrun the processes share
    the feature extraction and the decoding; process 0 scores, writes and returns the summary,
    the others None.
    """
    unknown = set(baselines) - set(BASELINES)
    if unknown:
        raise ArgumentError(f"unknown baseline(s) {sorted(unknown)}; choose from {', '.join(BASELINES)}")
    if config is None and naming is None:
        raise ArgumentError("give --config (a captioned split to score) or --naming (labelled photos), or both")
    info = setup(device, cpu_option="--device cpu")
    try:
        captioner = Captioner.from_checkpoint(checkpoint, device=info.device)
        systems = _systems(captioner, methods, guides, options or {})
        photos = None
        if naming is not None:
            from .metrics.naming import read_labels

            photos = read_labels(naming)
        summary = {"checkpoint": str(checkpoint) if checkpoint else "default", "scale": "x100",
                   "decoding": {k: v for k, v in systems[0].to_dict().items() if k not in ("method", "guide")}}
        if html is not None and config is None:
            raise ArgumentError("--html shows the captions of a split: give --config")
        if config is not None:
            scored, per_image = _score_split(captioner, config, split, systems, baselines,
                                             (predictions, predictions_format), show, info)
            summary.update(scored)
            if html is not None and info.is_main:
                from .report_pages import write_evaluation_page

                write_evaluation_page(summary, per_image, html)
        if not info.is_main:
            return None
        if photos is not None:
            summary["naming"] = _score_naming(captioner, photos, naming, systems, show)
        if json_out:
            write_json_atomic(json_out, summary, indent=2)
        return summary
    finally:
        teardown(info)


def _score_split(captioner, config, split, systems, baselines, predictions, show,
                 info: Distributed) -> tuple[dict, list[dict]]:
    """Decode the split (each process of a torchrun run its share of the images) and, on
    process 0, score it: the summary and one record per image (captions, references, CIDEr-D);
    the other processes return an empty summary."""
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
                info.rank, info.world, info.barrier, progress=show and info.is_main)
    features, failed = cache.load()
    test_rows = [i for i, r in enumerate(records) if r.split == split and i not in failed]
    if not test_rows:
        raise ArgumentError(f"{config.data.path}: the {split!r} split has no images")
    train_rows = [i for i, r in enumerate(records) if r.split == "train" and i not in failed]
    ids = [records[i].image_id for i in test_rows]
    references = {records[i].image_id: records[i].raw for i in test_rows}
    test_features = np.asarray(features[test_rows, 0], dtype=np.float32)

    outputs: dict[str, list[str]] = {}
    for settings in systems:
        share = caption_features(captioner, test_features[info.rank::info.world], settings,
                                 show=show and info.is_main)
        outputs[system_name(settings)] = _interleave(info.all_gather(share))
    if not info.is_main:
        return {}, []
    if "nn" in baselines:
        if not train_rows:
            raise ArgumentError("the nn baseline needs training images")
        captions = [consensus_caption(records[i].raw, records[i].tokens) for i in train_rows]
        outputs["nn"] = nearest_neighbour_captions(features[train_rows, 0], captions, test_features)
    if "frequent" in baselines:
        frequent = most_frequent_caption([c for i in train_rows for c in records[i].raw])
        outputs["frequent"] = [frequent] * len(test_rows)
    results = {name: score_captions(dict(zip(ids, captions)), references).to_dict()
               for name, captions in outputs.items()}
    folder, fmt = predictions
    if folder:
        _write_predictions(Path(folder), fmt, split, outputs, [records[row] for row in test_rows])
    per_image = [{"path": records[row].image_path, "references": records[row].raw,
                  "captions": {name: captions[k] for name, captions in outputs.items()},
                  "cider": {name: results[name]["per_image"][str(records[row].image_id)].get("CIDEr-D", 0.0)
                            for name in outputs}}
                 for k, row in enumerate(test_rows)]
    return {"data": config.data.path, "split": split, "images": len(test_rows), "systems": results}, per_image


def _write_predictions(folder: Path, fmt: str, split: str, outputs: dict[str, list[str]], records: list) -> None:
    """Each system's captions of ``records``: JSON lines with paths and references, or a COCO
    results file (image ids: the dataset's when they are numbers, else the number in the file name)."""
    if fmt == "coco":
        unnumbered = [r for r in records if not r.image_id.isdigit()]
        from_names = coco_image_ids([r.image_path for r in unnumbered]) if unnumbered else {}
        ids = {r.image_path: int(r.image_id) if r.image_id.isdigit() else from_names[r.image_path] for r in records}
        for name, captions in outputs.items():
            results = [{"path": r.image_path, "captions": [{"caption": c}]} for r, c in zip(records, captions)]
            write_results(folder / f"{split}-{name}.json", results, "coco", ids)
        return
    for name, captions in outputs.items():
        with AtomicLineWriter(folder / f"{split}-{name}.jsonl") as writer:
            for record, caption in zip(records, captions):
                writer.write(json.dumps({"image_id": record.image_id, "path": record.image_path, "caption": caption,
                                         "references": record.raw}, ensure_ascii=False))


def _interleave(shares: list[list]) -> list:
    """The items of ``shares[r] = items[r::world]`` back in their order."""
    return [shares[i % len(shares)][i // len(shares)] for i in range(sum(map(len, shares)))]


def score_results(results: str, annotations: str) -> dict:
    """Score a COCO results file (``[{"image_id", "caption"}]``, as ``captioner caption --format
    coco`` writes it) against the reference captions of a COCO annotation file, loaded the way
    coco-caption loads them (``COCO.loadRes``): every result's image must be in the annotations."""
    import contextlib
    import io

    from pycocotools.coco import COCO

    from .formats import read_coco_results

    read_coco_results(results)  # a malformed file is one line naming it, before pycocotools sees it
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
        try:
            coco = COCO(str(annotations))
        except (OSError, KeyError, TypeError, ValueError, AssertionError) as error:
            raise ArgumentError(f"--annotations {annotations}: not a readable COCO annotation file "
                                f"({type(error).__name__}: {error})") from None
        try:
            loaded = coco.loadRes(str(results))
        except AssertionError:
            raise ArgumentError(f"{results}: some image ids are not among the images of {annotations}") from None
    ids = sorted(loaded.getImgIds())
    if not ids:
        raise ArgumentError(f"{results}: no captions to score")
    predictions = {i: loaded.imgToAnns[i][0]["caption"] for i in ids}
    references = {i: [a["caption"] for a in coco.imgToAnns[i]] for i in ids}
    report = score_captions(predictions, references).to_dict()
    return {"data": str(annotations), "split": "results", "images": len(ids), "systems": {Path(results).name: report}}


def _score_naming(captioner: Captioner, photos, source: str, systems, show: bool) -> dict:
    from .guidance import has_imagenet_head
    from .metrics.naming import naming_rate

    paths = [str(p.image) for p in photos]
    rates = {}
    for settings in systems:
        results = list(captioner.caption_files(paths, settings=settings))
        bad = [r.error for r in results if r.error]
        if bad:
            raise ArgumentError(f"{source}: {len(bad)} labelled photos cannot be read, e.g. {bad[0]}")
        rates[system_name(settings)] = naming_rate({r.source: r.text for r in results}, photos)
    encoder = captioner.model.encoder
    if has_imagenet_head(encoder):
        top1 = {}
        for batch in image_batches(paths, captioner.preprocessing):
            with torch.no_grad():
                indices = encoder.head(captioner.encode(batch.pixels)).argmax(dim=1).tolist()
            top1.update({paths[i]: encoder.categories[c] for i, c in zip(batch.indices, indices)})
        rates["classifier top-1 label"] = naming_rate(top1, photos)
    return {"labels": source, "photos": len(photos), "systems": rates}


def format_table(summary: dict) -> str:
    """The scores as Markdown tables, one row per system."""
    lines = []
    if "systems" in summary:
        systems = summary["systems"]
        metrics = list(dict.fromkeys(m for s in systems.values() for m in s["scores"]))
        decoding = summary.get("decoding") or {}
        beam = next((name for name in systems if name.startswith("beam")), None)
        settings = (f"; {beam.split('+')[0]}: length penalty {decoding.get('length_penalty')}, at most "
                    f"{decoding.get('max_length')} words" if beam else "")
        if any("+" in name for name in systems):
            settings += f"; +imagenet: guided, threshold {decoding.get('guide_threshold')}"
        lines += [
            f"{summary['split']} split, {summary['images']} images, scores x100{settings}",
            "",
            "| system | " + " | ".join(metrics) + " |",
            "|---|" + "---|" * len(metrics),
        ]
        for name, result in systems.items():
            lines.append(f"| {name} | " + " | ".join(f"{result['scores'].get(m, float('nan')):.1f}" for m in metrics)
                         + " |")
        notes = list(dict.fromkeys(n for s in systems.values() for n in s.get("notes", [])))
        if notes:
            lines += [""] + [f"note: {n}" for n in notes]
    if "naming" in summary:
        naming = summary["naming"]
        lines += (["", ""] if lines else []) + [
            f"object naming on {naming['photos']} labelled photos ({naming['labels']})", "",
            "| system | named | rate % |", "|---|---|---|"]
        for name, result in naming["systems"].items():
            lines.append(f"| {name} | {result['named']}/{result['photos']} | {result['naming_rate']:.1f} |")
    return "\n".join(lines)
