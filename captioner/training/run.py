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
import sys
import time
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
from ..data.datasets import read_dataset
from ..data.vocab import Vocabulary
from ..decoding import decode_texts
from ..fileio import write_text_atomic
from ..metrics import java_available, score_captions
from ..models import CaptionModel, DecoderConfig, EncoderSpec, LSTMDecoder, build_encoder
from .batches import CachedPairs, ImagePairs, caption_pairs, collate, epoch_batches
from .distributed import Distributed, setup, teardown
from .loop import NonFiniteLoss, Progress, rng_states, set_rng_states, train_one_epoch
from .scst import CaptionSampler, CiderReward, scst_one_epoch

# Keys that may change between a run and its --resume.
RESUMABLE_CHANGES = {"train.epochs", "train.early_stopping", "train.num_workers", "train.extract_batch_size",
                     "train.device", "decode.method", "decode.beam_size", "decode.num_captions", "decode.temperature",
                     "decode.top_k", "decode.guide", "decode.guide_threshold"}


class TrainingError(UserError, ValueError):
    """Training cannot start or continue because of its inputs; the message says why and what to do."""


def log(info: Distributed, message: str) -> None:
    if info.is_main:
        print(message, file=sys.stderr, flush=True)


def train(config: Config, resume: bool = False) -> dict:
    info = setup(config.train.device)
    try:
        return _train(config, resume, info)
    finally:
        teardown(info)


def _train(cfg: Config, resume: bool, info: Distributed) -> dict:
    out = Path(cfg.train.out_dir)
    torch.manual_seed(cfg.train.seed)
    previous = _resume_point(cfg, out) if resume else None
    if cfg.train.val_metric == "METEOR" and not java_available():
        raise TrainingError("train.val_metric METEOR needs Java (METEOR 1.5 is a Java program); "
                            "install Java or choose another metric")

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
    log(info, f"data: {len(train_idx)} train images, {len(val_idx)} val images, "
              f"{sum(len(records[i].raw) for i in train_idx)} train captions")

    init = load_checkpoint(cfg.train.init_from) if cfg.train.init_from else None
    source = previous or init
    if source is not None:
        vocab = Vocabulary.from_dict(source.vocab)
    else:
        vocab = Vocabulary.build((t for i in train_idx for t in records[i].tokens), min_count=cfg.data.min_word_count)
    log(info, f"vocabulary: {len(vocab)} words (min count {vocab.min_count})")

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
    if cfg.train.ema_decay > 0:
        ema = AveragedModel(model if fine_tune else decoder, use_buffers=True,
                            multi_avg_fn=get_ema_multi_avg_fn(cfg.train.ema_decay))
        if previous is not None:
            _restore_ema(model, ema, previous)

    paths = [r.image_path for r in records]
    features = None
    if not fine_tune:
        cache = FeatureCache(cfg.train.cache_dir, cfg.data.name, encoder, paths, cfg.train.feature_views,
                             cfg.train.seed)
        built = cache.build(encoder, info.device, cfg.train.extract_batch_size, cfg.train.num_workers,
                            info.rank, info.world, info.barrier)
        log(info, f"feature cache: {cache.dir} ({'built' if built else 'reused'})")
        features, failed = cache.load()
        if failed:
            shown = "\n".join(f"  {error}" for error in list(failed.values())[:5])
            log(info, f"feature cache: {len(failed)} unreadable images skipped, e.g.:\n{shown}")
            train_idx = [i for i in train_idx if i not in failed]
            val_idx = [i for i in val_idx if i not in failed]

    pairs = caption_pairs([records[i] for i in train_idx], train_idx, vocab, cfg.data.max_caption_words)
    scst = cfg.train.objective == "scst"
    if scst:
        if init is None and previous is None:
            raise TrainingError("train.objective scst fine-tunes a teacher-forced model: set train.init_from")
        image_refs = [records[i].tokens for i in train_idx]
        reward = CiderReward(image_refs)
        net = CaptionSampler(decoder, vocab.start_id, vocab.end_id, vocab.never_generated, cfg.decode.max_length)
    elif fine_tune:
        dataset = ImagePairs(pairs, paths, encoder.preprocessing, cfg.train.seed)
        net = model
    else:
        dataset = CachedPairs(pairs, features, cfg.train.seed)
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

    progress, history, best = Progress(), [], {"score": -math.inf, "epoch": -1, "bad_epochs": 0}
    if previous is not None:
        progress, history, best = _restore(previous, optimizer, scheduler, info)
        log(info, f"resuming at epoch {progress.epoch + 1}, step {progress.step}")
    if info.enabled:  # every process's RNG states, for last.pt (see Progress.rng_of_ranks)
        progress.gather_rng = lambda: info.all_gather(rng_states(info.device))
        progress.rng_of_ranks = progress.gather_rng()
    if info.is_main:
        out.mkdir(parents=True, exist_ok=True)
        write_text_atomic(out / "config.yaml", yaml.safe_dump(cfg.to_dict(), sort_keys=False))

    references = {records[i].image_id: records[i].raw for i in val_idx}
    state = dict(cfg=cfg, model=model, ema=ema, vocab=vocab, optimizer=optimizer, scheduler=scheduler, out=out,
                 contents=contents, train_images=len(train_idx), device=info.device)
    after_step = (lambda: ema.update_parameters(model if fine_tune else decoder)) if ema is not None else None
    loader_generator = torch.Generator()  # keeps DataLoader set-up away from the global RNG
    stopped_early = False
    for epoch in range(progress.epoch, cfg.train.epochs):
        progress.epoch = epoch
        batches = epoch_batches(units, cfg.train.batch_size, cfg.train.seed, epoch)[progress.step_in_epoch:]
        shares = [b[info.rank::info.world] for b in batches]
        common = dict(grad_clip=cfg.train.grad_clip, device=info.device, show=info.is_main,
                      description=f"epoch {epoch + 1}/{cfg.train.epochs}", after_step=after_step)
        try:
            if scst:
                stats = scst_one_epoch(
                    net, decoder, optimizer, scheduler, list(zip(batches, shares)), features, train_idx,
                    image_refs, reward, vocab, progress, samples=cfg.train.scst_samples, world=info.world, **common,
                )
            else:
                normalisers = [sum(len(pairs[i][1]) - 1 for i in b) / info.world for b in batches]
                dataset.epoch = epoch
                loader = DataLoader(dataset, batch_sampler=shares, collate_fn=collate, generator=loader_generator,
                                    num_workers=cfg.train.num_workers if fine_tune else 0)
                stats = train_one_epoch(net, optimizer, scheduler, loader, normalisers, progress,
                                        label_smoothing=cfg.train.label_smoothing, **common)
        except KeyboardInterrupt:
            if info.is_main:
                _save(state, out / "last.pt", progress, history, best)
                log(info, f"interrupted at epoch {epoch + 1}, step {progress.step}; saved {out / 'last.pt'}; "
                          "continue with --resume")
            raise
        except NonFiniteLoss as error:
            raise _diverged(cfg, out, f"epoch {epoch + 1}: {error}") from None
        if not _finite(model):
            raise _diverged(cfg, out, f"epoch {epoch + 1}: the weights became NaN or infinite")
        progress.epoch, progress.step_in_epoch = epoch + 1, 0
        stop = False
        if info.is_main:
            published = _published(model, ema)
            val_features = _val_features(published, features, val_idx, paths, cfg, info.device)
            scores = _validate(published, vocab, val_features, [records[i].image_id for i in val_idx], references, cfg,
                               info.device)
            row = {"epoch": epoch + 1, "step": progress.step, "lr": scheduler.get_last_lr()[0], **stats, **scores}
            history.append(row)
            score = scores.get(cfg.train.val_metric, math.nan)
            improved = score > best["score"]
            if improved:
                best.update(score=score, epoch=epoch + 1, bad_epochs=0)
            else:
                best["bad_epochs"] += 1
            _save(state, out / "last.pt", progress, history, best)
            if improved:
                _save(state, out / "best.pt", progress, history, best)
            _write_log(out / "log.csv", history)
            log(info, f"epoch {epoch + 1}: loss {stats['train_loss']:.3f}, {stats['samples_per_s']:.0f} samples/s, "
                      + ", ".join(f"{k} {v:.1f}" for k, v in scores.items())
                      + (" (best)" if improved else ""))
            stop = bool(cfg.train.early_stopping) and best["bad_epochs"] >= cfg.train.early_stopping
        if info.broadcast_flag(stop):
            stopped_early = True
            log(info, f"early stopping: no better {cfg.train.val_metric} for {cfg.train.early_stopping} epochs")
            break
    info.barrier()
    return {"best_score": best["score"], "best_epoch": best["epoch"], "epochs_run": progress.epoch,
            "stopped_early": stopped_early, "history": history, "out_dir": str(out)}


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


def _restore(checkpoint: Checkpoint, optimizer, scheduler, info: Distributed) -> tuple[Progress, list, dict]:
    """Optimizer, schedule, counters and RNG states from ``checkpoint``: each process takes
    its own RNG states when the run had as many processes, else every process takes
    process 0's (as a fresh run starts them all from one seed; not bit-exact then)."""
    state = checkpoint.train_state
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    ranks = state.get("rng_ranks") or [{"cpu": state["rng_cpu"], "cuda": state.get("rng_cuda")}]
    if len(ranks) == info.world:
        set_rng_states(ranks[info.rank], info.device)
    else:
        set_rng_states(ranks[0], info.device)
        log(info, f"--resume: last.pt holds the random-number states of {len(ranks)} process(es) and this run has "
                  f"{info.world}: every process continues from process 0's, so the result is not bit-identical "
                  "to an uninterrupted run")
    progress = Progress(**state["progress"])
    return progress, list(state["history"]), dict(state["best"])


def _published(model: CaptionModel, ema) -> CaptionModel:
    """The weights that are validated and saved: the moving average when there is one."""
    if ema is None:
        return model
    averaged = ema.module
    return averaged if isinstance(averaged, CaptionModel) else CaptionModel(model.encoder, averaged)


def _restore_ema(model: CaptionModel, ema, checkpoint: Checkpoint) -> None:
    """On --resume the checkpoint's weights (already in ``ema``, copied from ``model``) are
    the average; put the raw weights, kept in train_state, back into ``model``."""
    raw = checkpoint.train_state["raw_weights"]
    model.decoder.load_state_dict(raw["decoder"])
    if raw.get("encoder") is not None:
        model.encoder.load_state_dict(raw["encoder"])
    ema.n_averaged.fill_(int(checkpoint.train_state["ema_n_averaged"]))


def _save(state: dict, path: Path, progress: Progress, history: list, best: dict) -> None:
    cfg, vocab, ema = state["cfg"], state["vocab"], state["ema"]
    model = _published(state["model"], ema)
    contents = state["contents"]
    training = {
        "config": cfg.to_dict(),
        "epoch": progress.epoch, "step": progress.step, "best": dict(best), "history": history,
        "data": {"name": cfg.data.name, "format": cfg.data.format, "path": cfg.data.path,
                 "train_images": state["train_images"], "problems": len(contents.problems),
                 "manifest": _manifest(cfg.data.path)},
        "saved": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    rng = progress.rng_before_step or rng_states(state["device"])
    train_state = {
        "optimizer": state["optimizer"].state_dict(), "scheduler": state["scheduler"].state_dict(),
        "rng_cpu": rng["cpu"], "rng_cuda": rng["cuda"],
        # every process's states, this one's first (the others were gathered after their last step)
        "rng_ranks": [rng, *(progress.rng_of_ranks or [])[1:]],
        "progress": progress.counters(), "history": history, "best": dict(best),
    }
    if ema is not None:
        raw = state["model"]
        train_state["raw_weights"] = {
            "decoder": raw.decoder.state_dict(),
            "encoder": raw.encoder.state_dict() if cfg.train.fine_tune_encoder else None,
        }
        train_state["ema_n_averaged"] = int(ema.n_averaged)
    checkpoint = make_checkpoint(
        encoder_spec=model.encoder.spec.to_dict(), decoder_config=model.decoder.config.to_dict(),
        decoder_state=model.decoder.state_dict(), vocab=vocab.to_dict(),
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
        log(info, f"data: {len(problems)} bad records reported and skipped, e.g.:\n{shown}\n"
                  f"  (all of them in {out / 'data_problems.txt'})")
