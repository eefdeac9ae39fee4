"""``captioner train``: data, feature cache, model, optimisation, validation, checkpoints.

Files in ``train.out_dir``: ``last.pt`` (every epoch, and on Ctrl-C: what ``--resume``
continues from), ``best.pt`` (the best epoch by ``train.val_metric``), ``log.csv`` (one
row per epoch), ``config.yaml`` and ``data_problems.txt``. Checkpoints are written by
rank 0 only and always atomically.
"""

from __future__ import annotations

import csv
import io
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import yaml
from torch.nn.parallel import DistributedDataParallel
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import DataLoader

from ..checkpoint import Checkpoint, load_checkpoint, make_checkpoint, save_checkpoint
from ..config import Config
from ..errors import UserError
from ..data.batches import image_batches
from ..data.cache import FeatureCache
from ..data.datasets import DatasetContents, read_dataset
from ..data.vocab import Vocabulary
from ..decoding import decode_texts
from ..fileio import check_writable, write_text_atomic
from ..metrics import java_available, score_captions
from ..models import CaptionModel, DecoderConfig, EncoderSpec, LSTMDecoder, build_encoder
from .batches import CachedPairs, ImagePairs, caption_pairs, collate, epoch_batches
from ..distributed import Distributed, setup, teardown
from .loop import NonFiniteLoss, train_one_epoch
from .scst import CaptionSampler, CiderReward, scst_one_epoch
from .state import Progress, TrainState, rng_of_ranks

# Keys that may change between a run and its --resume.
RESUMABLE_CHANGES = {"train.epochs", "train.early_stopping", "train.num_workers", "train.extract_batch_size",
                     "train.device", "decode.method", "decode.beam_size", "decode.num_captions", "decode.temperature",
                     "decode.top_k", "decode.guide", "decode.guide_threshold"}


class TrainingError(UserError, ValueError):
    """Training cannot start or continue because of its inputs; the message says why and what to do."""


@dataclass
class _Data:
    """The records, the indices of the training and validation ones, and (when the encoder
    is frozen) the feature cache's features, one row per record."""

    contents: DatasetContents
    train_idx: list[int]
    val_idx: list[int]
    features: np.ndarray | None = None

    @property
    def records(self) -> list:
        return self.contents.records

    @property
    def paths(self) -> list[str]:
        return [r.image_path for r in self.records]


@dataclass
class _Run:
    """One run's parts, as the stages of :func:`_train` build them, and where it is."""

    cfg: Config
    info: Distributed
    out: Path
    data: _Data
    vocab: Vocabulary
    model: CaptionModel
    ema: AveragedModel | None
    optimizer: torch.optim.Optimizer | None = None
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None
    run_epoch: Callable[[int], dict] | None = None  # trains one epoch (all ranks), returns its statistics
    progress: Progress = field(default_factory=Progress)
    history: list = field(default_factory=list)
    best: dict = field(default_factory=lambda: {"score": -math.inf, "epoch": -1, "bad_epochs": 0})


def train(config: Config, resume: bool = False) -> dict:
    info = setup(config.train.device)
    try:
        return _train(config, resume, info)
    finally:
        teardown(info)


def _train(cfg: Config, resume: bool, info: Distributed) -> dict:
    """The stages: settings, data, model, features, objective and optimiser, epochs."""
    out = Path(cfg.train.out_dir)
    check_writable(out, folder=True)  # a name too long, a file in the way: one line before any work
    torch.manual_seed(cfg.train.seed)
    previous = _resume_point(cfg, out) if resume else None
    _check_settings(cfg, resume)
    data = _read_data(cfg, info, out)
    init = load_checkpoint(cfg.train.init_from) if cfg.train.init_from else None
    run = _build_model(cfg, info, out, data, previous, init)
    if not cfg.train.fine_tune_encoder:
        _load_features(run)
    _prepare_optimisation(run)
    if previous is not None:
        run.progress = previous.train_state.restore(run.optimizer, run.scheduler, info, run.model, run.ema)
        run.history, run.best = list(previous.train_state.history), dict(previous.train_state.best)
        info.log(f"resuming at epoch {run.progress.epoch + 1}, step {run.progress.step}")
    if info.is_main:
        out.mkdir(parents=True, exist_ok=True)
        write_text_atomic(out / "config.yaml", yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    return _epochs(run)


def _check_settings(cfg: Config, resume: bool) -> None:
    if cfg.train.val_metric == "METEOR" and not java_available():
        raise TrainingError("train.val_metric METEOR needs Java (METEOR 1.5 is a Java program); "
                            "install Java or choose another metric")
    if cfg.train.objective == "scst" and not cfg.train.init_from and not resume:
        raise TrainingError("train.objective scst fine-tunes a teacher-forced model: set train.init_from")


def _read_data(cfg: Config, info: Distributed, out: Path) -> _Data:
    contents = read_dataset(cfg.data)
    _report_problems(info, contents.problems, out, cfg.data.strict)
    records = contents.records
    train_idx = [i for i, r in enumerate(records) if r.split == "train"]
    val_idx = [i for i, r in enumerate(records) if r.split == "val"]
    if cfg.train.val_max_images:
        val_idx = val_idx[:cfg.train.val_max_images]
    if not train_idx:
        raise TrainingError(f"{cfg.data.path}: no training images (check data.format and the split names)")
    if not val_idx:
        raise TrainingError(f"{cfg.data.path}: no validation images; validation decodes the val split")
    info.log(f"data: {len(train_idx)} train images, {len(val_idx)} val images, "
             f"{sum(len(records[i].raw) for i in train_idx)} train captions")
    return _Data(contents, train_idx, val_idx)


def _build_model(cfg: Config, info: Distributed, out: Path, data: _Data, previous: Checkpoint | None,
                 init: Checkpoint | None) -> _Run:
    """The vocabulary and the model: new, or from the resumed run's or ``init``'s checkpoint."""
    source = previous or init
    if source is not None:
        vocab = Vocabulary.from_dict(source.vocab)
    else:
        vocab = Vocabulary.build((t for i in data.train_idx for t in data.records[i].tokens),
                                 min_count=cfg.data.min_word_count)
    info.log(f"vocabulary: {len(vocab)} words (min count {vocab.min_count})")
    encoder = build_encoder(EncoderSpec(cfg.model.encoder, cfg.model.encoder_weights))
    decoder = LSTMDecoder(DecoderConfig(
        vocab_size=len(vocab), feature_dim=encoder.feature_dim, embed_dim=cfg.model.embed_dim,
        hidden_size=cfg.model.hidden_size, num_layers=cfg.model.num_layers, dropout=cfg.model.dropout,
        feature_norm=cfg.model.feature_norm,
    ))
    model = CaptionModel(encoder, decoder)
    if previous is not None:
        _load_weights(model, previous.resume_weights())
    elif init is not None:
        _load_weights(model, init)
    fine_tune = cfg.train.fine_tune_encoder
    encoder.set_trainable(fine_tune, cfg.train.encoder_batchnorm)
    model.to(info.device)
    ema = None
    if cfg.train.ema_decay > 0:  # (on --resume, TrainState.restore puts the raw weights back into model)
        ema = AveragedModel(model if fine_tune else decoder, use_buffers=True,
                            multi_avg_fn=get_ema_multi_avg_fn(cfg.train.ema_decay))
    return _Run(cfg, info, out, data, vocab, model, ema)


def _load_features(run: _Run) -> None:
    """The frozen encoder's features of every image, from the feature cache (built when
    missing); images that cannot be read are dropped from training and validation."""
    cfg, info, data, encoder = run.cfg, run.info, run.data, run.model.encoder
    cache = FeatureCache(cfg.train.cache_dir, cfg.data.name, encoder, data.paths, cfg.train.feature_views,
                         cfg.train.seed)
    built = cache.build(encoder, info.device, cfg.train.extract_batch_size, cfg.train.num_workers,
                        info.rank, info.world, info.barrier)
    info.log(f"feature cache: {cache.dir} ({'built' if built else 'reused'})")
    data.features, failed = cache.load()
    if failed:
        shown = "\n".join(f"  {error}" for error in list(failed.values())[:5])
        info.log(f"feature cache: {len(failed)} unreadable images skipped, e.g.:\n{shown}")
        data.train_idx = [i for i in data.train_idx if i not in failed]
        data.val_idx = [i for i in data.val_idx if i not in failed]


def _prepare_optimisation(run: _Run) -> None:
    """The objective (teacher forcing on cached features or on images, or SCST), the
    optimiser and the learning-rate schedule; ``run.run_epoch`` trains one epoch."""
    cfg, info, data, vocab, model = run.cfg, run.info, run.data, run.vocab, run.model
    encoder, decoder, fine_tune = model.encoder, model.decoder, cfg.train.fine_tune_encoder
    records, train_idx = data.records, data.train_idx
    pairs = caption_pairs([records[i] for i in train_idx], train_idx, vocab, cfg.data.max_caption_words)
    scst = cfg.train.objective == "scst"
    if scst:
        image_refs = [records[i].tokens for i in train_idx]
        reward = CiderReward(image_refs)
        net = CaptionSampler(decoder, vocab.start_id, vocab.end_id, vocab.never_generated, cfg.decode.max_length)
    elif fine_tune:
        dataset = ImagePairs(pairs, data.paths, encoder.preprocessing, cfg.train.seed)
        net = model
    else:
        dataset = CachedPairs(pairs, data.features, cfg.train.seed)
        net = decoder
    groups = [{"params": list(decoder.parameters()), "lr": cfg.train.lr}]
    if fine_tune:
        groups.append({"params": list(encoder.parameters()), "lr": cfg.train.encoder_lr})
    optimizer = torch.optim.AdamW(groups, lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)
    units = len(train_idx) if scst else len(pairs)  # scst steps over images, teacher forcing over captions
    steps_per_epoch = len(epoch_batches(units, cfg.train.batch_size, cfg.train.seed, 0))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _schedule(cfg, steps_per_epoch))
    if info.enabled:
        net = DistributedDataParallel(net, device_ids=[info.device.index] if info.device.type == "cuda" else None)
    ema = run.ema
    after_step = (lambda: ema.update_parameters(model if fine_tune else decoder)) if ema is not None else None
    loader_generator = torch.Generator()  # keeps DataLoader set-up away from the global RNG

    def run_epoch(epoch: int) -> dict:
        batches = epoch_batches(units, cfg.train.batch_size, cfg.train.seed, epoch)[run.progress.step_in_epoch:]
        shares = [b[info.rank::info.world] for b in batches]
        common = dict(grad_clip=cfg.train.grad_clip, device=info.device, show=info.is_main,
                      description=f"epoch {epoch + 1}/{cfg.train.epochs}", after_step=after_step,
                      gather=info.all_gather if info.enabled else None)
        if scst:
            return scst_one_epoch(net, decoder, optimizer, scheduler, list(zip(batches, shares)), data.features,
                                  train_idx, image_refs, reward, vocab, run.progress, samples=cfg.train.scst_samples,
                                  world=info.world, **common)
        normalisers = [sum(len(pairs[i][1]) - 1 for i in b) / info.world for b in batches]
        dataset.epoch = epoch
        loader = DataLoader(dataset, batch_sampler=shares, collate_fn=collate, generator=loader_generator,
                            num_workers=cfg.train.num_workers if fine_tune else 0)
        return train_one_epoch(net, optimizer, scheduler, loader, normalisers, run.progress,
                               label_smoothing=cfg.train.label_smoothing, **common)

    run.optimizer, run.scheduler, run.run_epoch = optimizer, scheduler, run_epoch


def _epochs(run: _Run) -> dict:
    """Train from ``run.progress`` to the last epoch or an early stop; on Ctrl-C, save last.pt."""
    cfg, info, out = run.cfg, run.info, run.out
    # every process's RNG states at the start, in case the first step is interrupted
    run.progress.rng_ranks = rng_of_ranks(info.device, info.all_gather if info.enabled else None)
    stopped_early = False
    for epoch in range(run.progress.epoch, cfg.train.epochs):
        run.progress.epoch = epoch
        try:
            stats = run.run_epoch(epoch)
        except KeyboardInterrupt:
            if info.is_main:
                _save(run, out / "last.pt")
                info.log(f"interrupted at epoch {epoch + 1}, step {run.progress.step}; saved {out / 'last.pt'}; "
                         "continue with --resume")
            raise
        except NonFiniteLoss as error:
            raise _diverged(cfg, out, f"epoch {epoch + 1}: {error}") from None
        if not _finite(run.model):
            raise _diverged(cfg, out, f"epoch {epoch + 1}: the weights became NaN or infinite")
        run.progress.epoch, run.progress.step_in_epoch = epoch + 1, 0
        stop = _validate_and_save(run, stats) if info.is_main else False
        if info.broadcast_flag(stop):
            stopped_early = True
            info.log(f"early stopping: no better {cfg.train.val_metric} for {cfg.train.early_stopping} epochs")
            break
    info.barrier()
    return {"best_score": run.best["score"], "best_epoch": run.best["epoch"], "epochs_run": run.progress.epoch,
            "stopped_early": stopped_early, "history": run.history, "out_dir": str(out)}


def _validate_and_save(run: _Run, stats: dict) -> bool:
    """Rank 0, after an epoch: validate, log, save last.pt (and best.pt when better); whether to stop early."""
    cfg, data, out, best, epoch = run.cfg, run.data, run.out, run.best, run.progress.epoch
    published = _published(run.model, run.ema)
    val_features = _val_features(published, data.features, data.val_idx, data.paths, cfg, run.info.device)
    references = {data.records[i].image_id: data.records[i].raw for i in data.val_idx}
    scores = _validate(published, run.vocab, val_features, [data.records[i].image_id for i in data.val_idx],
                       references, cfg, run.info.device)
    row = {"epoch": epoch, "step": run.progress.step, "lr": run.scheduler.get_last_lr()[0], **stats, **scores}
    run.history.append(row)
    score = scores.get(cfg.train.val_metric, math.nan)
    improved = score > best["score"]
    if improved:
        best.update(score=score, epoch=epoch, bad_epochs=0)
    else:
        best["bad_epochs"] += 1
    _save(run, out / "last.pt")
    if improved:
        _save(run, out / "best.pt")
    _write_log(out / "log.csv", run.history)
    run.info.log(f"epoch {epoch}: loss {stats['train_loss']:.3f}, {stats['samples_per_s']:.0f} samples/s, "
                 + ", ".join(f"{k} {v:.1f}" for k, v in scores.items()) + (" (best)" if improved else ""))
    return bool(cfg.train.early_stopping) and best["bad_epochs"] >= cfg.train.early_stopping


def _schedule(cfg: Config, steps_per_epoch: int):
    total = max(1, cfg.train.epochs * steps_per_epoch)
    warmup, kind = cfg.train.warmup_steps, cfg.train.lr_schedule

    def factor(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        if kind == "cosine":
            progress = min(1.0, (step - warmup) / max(1, total - warmup))
            return 0.5 * (1.0 + math.cos(math.pi * progress))
        if kind == "step":
            return cfg.train.step_gamma ** ((step // max(1, steps_per_epoch)) // cfg.train.step_epochs)
        return 1.0

    return factor


def _finite(model: CaptionModel) -> bool:
    return all(bool(torch.isfinite(p).all()) for p in model.parameters() if p.is_floating_point())


def _diverged(cfg: Config, out: Path, what: str) -> TrainingError:
    """The error of a run that diverged; its checkpoints are those of the last good epoch."""
    kept = f"{out / 'last.pt'} is from the last good epoch" if (out / "last.pt").exists() else "no checkpoint written"
    return TrainingError(f"training diverged: {what} (train.lr is {cfg.train.lr}; try a lower one); {kept}")


def _resume_point(cfg: Config, out: Path) -> Checkpoint:
    path = out / "last.pt"
    if not path.exists():
        raise TrainingError(f"--resume: {path} does not exist; nothing to resume (start without --resume)")
    checkpoint = load_checkpoint(path)
    if checkpoint.train_state is None:
        raise TrainingError(f"--resume: {path} has no training state (it is not from an unfinished run)")
    before = _flatten(checkpoint.training.get("config", {}))
    now = _flatten(cfg.to_dict())
    changed = sorted(k for k in set(before) | set(now) if before.get(k) != now.get(k) and k not in RESUMABLE_CHANGES)
    if changed:
        details = ", ".join(f"{k}: {before.get(k)!r} -> {now.get(k)!r}" for k in changed[:5])
        raise TrainingError(f"--resume: the config differs from the run in {out} ({details}); "
                            "only epochs, early_stopping, num_workers, extract_batch_size and device may change")
    return checkpoint


def _flatten(config: dict) -> dict:
    return {f"{section}.{key}": value for section, values in config.items() for key, value in values.items()}


def _load_weights(model: CaptionModel, checkpoint: Checkpoint) -> None:
    restored = CaptionModel.from_checkpoint(checkpoint)
    if restored.decoder.config != model.decoder.config:
        raise checkpoint.error(f"does not fit this config: decoder {restored.decoder.config} does not match the "
                               f"config's {model.decoder.config}")
    model.decoder.load_state_dict(restored.decoder.state_dict())
    if checkpoint.encoder_state is not None:
        model.encoder.load_state_dict(restored.encoder.state_dict())
        model.encoder.fine_tuned = True


def _published(model: CaptionModel, ema) -> CaptionModel:
    """The weights that are validated and saved: the moving average when there is one."""
    if ema is None:
        return model
    averaged = ema.module
    return averaged if isinstance(averaged, CaptionModel) else CaptionModel(model.encoder, averaged)


def _save(run: _Run, path: Path) -> None:
    cfg = run.cfg
    model = _published(run.model, run.ema)
    training = {
        "config": cfg.to_dict(),
        "epoch": run.progress.epoch, "step": run.progress.step, "best": dict(run.best), "history": run.history,
        "data": {"name": cfg.data.name, "format": cfg.data.format, "path": cfg.data.path,
                 "train_images": len(run.data.train_idx), "problems": len(run.data.contents.problems),
                 "manifest": _manifest(cfg.data.path)},
        "saved": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    train_state = TrainState.capture(run.optimizer, run.scheduler, run.progress, run.history, run.best, run.model,
                                     run.ema, cfg.train.fine_tune_encoder)
    checkpoint = make_checkpoint(
        encoder_spec=model.encoder.spec.to_dict(), decoder_config=model.decoder.config.to_dict(),
        decoder_state=model.decoder.state_dict(), vocab=run.vocab.to_dict(),
        encoder_state=model.encoder_state_to_save(), decoding=cfg.decode.to_dict(), training=training,
        train_state=train_state, half=cfg.train.half_checkpoint,
    )
    save_checkpoint(checkpoint, path)


def _manifest(data_path: str) -> dict | None:
    """The dataset's manifest.json (sources and licences), when it has one beside it."""
    path = Path(data_path).parent / "manifest.json"
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def _val_features(model, features, val_idx, paths, cfg: Config, device) -> np.ndarray:
    if features is not None:
        return np.asarray(features[val_idx, 0], dtype=np.float32)
    encoder = model.encoder
    was_training = encoder.training
    encoder.eval()
    chunks = []
    with torch.no_grad():
        for batch in image_batches([paths[i] for i in val_idx], encoder.preprocessing, cfg.train.extract_batch_size,
                                   cfg.train.num_workers):
            if batch.errors:
                raise TrainingError(f"validation image became unreadable: {batch.errors[0][1]}")
            chunks.append(encoder(batch.pixels.to(device)).cpu().numpy())
    encoder.train(was_training)
    return np.concatenate(chunks)


def _validate(model, vocab, val_features, ids, references, cfg: Config, device) -> dict:
    settings = cfg.decode.with_options(method=cfg.train.val_method, beam_size=cfg.train.val_beam_size,
                                       num_captions=1, guide="none")
    captions = decode_texts(model.decoder, vocab, val_features, settings, device=device)
    metrics = ("BLEU", "CIDEr-D") if cfg.train.val_metric in ("CIDEr-D", "BLEU-4") else ("BLEU", "CIDEr-D", "METEOR", "ROUGE-L")
    report = score_captions(dict(zip(ids, captions)), references, metrics=metrics)
    return dict(report.scores)


def _write_log(path: Path, history: list[dict]) -> None:
    columns = list(dict.fromkeys(k for row in history for k in row))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns)
    writer.writeheader()
    for row in history:
        writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    write_text_atomic(path, buffer.getvalue())


def _report_problems(info: Distributed, problems, out: Path, strict: bool) -> None:
    if not problems:
        return
    if strict:
        raise TrainingError(f"{len(problems)} bad records in the data (data.strict is on); first: {problems[0]}")
    if info.is_main:
        out.mkdir(parents=True, exist_ok=True)
        write_text_atomic(out / "data_problems.txt", "".join(f"{p}\n" for p in problems))
        shown = "\n".join(f"  {p}" for p in problems[:5])
        info.log(f"data: {len(problems)} bad records reported and skipped, e.g.:\n{shown}\n"
                  f"  (all of them in {out / 'data_problems.txt'})")
