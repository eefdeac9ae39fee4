"""Training speed: cached features vs re-running the frozen encoder every epoch, and
multi-process training with torchrun on 1 and 2 processes.

    python bench/bench_training.py [--quick | --smoke]
"""

from __future__ import annotations

import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
import yaml
from torch.utils.data import DataLoader

from common import alternate, caption_of, corpus, run_rows
from modes import mode_flag

from captioner.data.cache import FeatureCache  # noqa: E402
from captioner.data.datasets import CaptionRecord  # noqa: E402
from captioner.data.vocab import Vocabulary, tokenize  # noqa: E402
from captioner.models import CaptionModel, DecoderConfig, EncoderSpec, LSTMDecoder, build_encoder  # noqa: E402
from captioner.training.batches import CachedPairs, ImagePairs, caption_pairs, collate, epoch_batches  # noqa: E402
from captioner.training.loop import Progress, train_one_epoch  # noqa: E402

BATCH = 64


def _records(paths: list[Path]) -> list[CaptionRecord]:
    return [CaptionRecord(str(p), p.stem, [caption_of(p)], [tokenize(caption_of(p))], "train")
            for p in paths]


def row_cached_features(mode: str = "full") -> dict:
    count, repeats = {"full": (512, 3), "quick": (64, 1), "smoke": (8, 1)}[mode]
    paths = corpus(count)
    records = _records(paths)
    vocab = Vocabulary.build(t for r in records for t in r.tokens)
    encoder = build_encoder(EncoderSpec())
    model = CaptionModel(encoder, LSTMDecoder(DecoderConfig(vocab_size=len(vocab), feature_dim=encoder.feature_dim,
                                                            embed_dim=256, hidden_size=512)))
    pairs = caption_pairs(records, list(range(count)), vocab, 16)
    batches = epoch_batches(len(pairs), BATCH, 0, 0)
    normalisers = [float(sum(len(pairs[i][1]) - 1 for i in b)) for b in batches]
    with tempfile.TemporaryDirectory() as cache_dir:
        cache = FeatureCache(cache_dir, "bench", encoder, [str(p) for p in paths])
        cache.build(encoder, torch.device("cpu"), progress=False)  # a one-off cost, not timed
        features, _ = cache.load()

        def epoch(module, dataset):
            optimizer = torch.optim.AdamW(model.decoder.parameters(), lr=1e-3)
            scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
            loader = DataLoader(dataset, batch_sampler=batches, collate_fn=collate)
            train_one_epoch(module, optimizer, scheduler, loader, normalisers, Progress(), label_smoothing=0.1,
                            grad_clip=5.0, device=torch.device("cpu"), show=False)

        from_images = ImagePairs(pairs, [str(p) for p in paths], encoder.preprocessing, 0, augment=False)
        from_cache = CachedPairs(pairs, features, 0)
        t_images, t_cache = alternate(lambda: epoch(model, from_images), lambda: epoch(model.decoder, from_cache),
                                      repeats)
    ratio = t_images / t_cache
    return {
        "row": "3. Training epoch on cached features vs re-running the frozen encoder",
        "baseline": f"read + preprocess + frozen Lite0 forward every epoch, then the decoder step ({count} images)",
        "ours": f"features from the cache, then the same decoder step ({count} images)",
        "baseline_value": round(t_images, 2), "ours_value": round(t_cache, 3), "unit": "s/epoch",
        "ratio": round(ratio, 1), "ratio_is": "speed-up", "target": ">= 20x", "met": ratio >= 20,
        "command": "python bench/bench_training.py" + mode_flag(mode),
        "notes": f"batch {BATCH}, LSTM 512, same train_one_epoch code on both sides; medians of {repeats} alternating "
                 "epochs; building the cache (one encoder pass) is a one-off cost, not included",
    }


def _torchrun(config: Path, processes: int) -> float:
    """Median per-process training samples/s over the epochs of one run."""
    out_dir = Path(yaml.safe_load(config.read_text())["train"]["out_dir"]) / f"p{processes}"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}",
               "-m", "captioner", "train", "--config", str(config), "--set", f"train.out_dir={out_dir}"]
    env = {**os.environ, "OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 2) // processes))}
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"torchrun with {processes} process(es) failed: {done.stderr.strip()[-2000:]}")
    with open(out_dir / "log.csv") as handle:
        return statistics.median(float(row["samples_per_s"]) for row in csv.DictReader(handle))


def row_multiprocess(mode: str = "full") -> dict:
    count, epochs, repeats = {"full": (512, 4, 2), "quick": (96, 2, 1), "smoke": (8, 1, 1)}[mode]
    paths = corpus(count)
    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        rows = [{"image": p.name, "caption": caption_of(p), "split": "val" if i % 10 == 0 else "train"}
                for i, p in enumerate(paths)]
        (work / "captions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        config = work / "config.yaml"
        config.write_text(yaml.safe_dump({
            "data": {"name": "bench", "format": "generic", "path": str(work / "captions.jsonl"),
                     "images": str(paths[0].parent), "min_word_count": 1},
            "model": {"embed_dim": 256, "hidden_size": 512, "dropout": 0.0},
            "train": {"out_dir": str(work / "runs"), "cache_dir": str(work / "cache"), "epochs": epochs,
                      "device": "cpu",
                      "batch_size": BATCH, "early_stopping": 0},
        }))
        if mode != "smoke":  # in smoke mode the first measured run builds the cache (its figures are not used)
            _torchrun(config, 1)  # builds the feature cache; its time is not measured
        one, two = [], []
        for _ in range(repeats):
            one.append(_torchrun(config, 1))
            two.append(_torchrun(config, 2))
    single, per_process = statistics.median(one), statistics.median(two)
    return {
        "row": "7. Multi-process training (torchrun, gloo on CPU)",
        "baseline": "1 process", "ours": "2 processes (per process)",
        "baseline_value": round(single, 1), "ours_value": round(per_process, 1), "unit": "samples/s",
        "ratio": round(2 * per_process / single, 2), "ratio_is": "total throughput of 2 processes / 1 process",
        "target": "report only (2 cores: little gain expected)", "met": None,
        "command": "python bench/bench_training.py" + mode_flag(mode),
        "notes": f"{count} images, {epochs} epochs, global batch {BATCH}, cached features, median over epochs "
                 f"and {repeats} run(s) per side; OMP threads split between processes",
    }


def rows(mode: str = "full") -> list[dict]:
    return [row_cached_features(mode), row_multiprocess(mode)]


if __name__ == "__main__":
    run_rows(rows, __doc__)
