"""One epoch of teacher-forced training."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from tqdm import tqdm


@dataclass
class Progress:
    """Where training is; saved in checkpoints so a resume continues exactly."""

    epoch: int = 0           # the epoch in progress (0-based)
    step: int = 0            # optimizer steps taken so far, in all epochs
    step_in_epoch: int = 0   # optimizer steps taken in the epoch in progress
    # The RNG states before the step in progress (see rng_states): what an interrupted run
    # must save, so that the resumed run redoes that step with the same dropout masks.
    rng_before_step: dict | None = field(default=None, repr=False, compare=False)
    # Multi-process runs: every process's RNG states before the step in progress (or the
    # next one), in rank order, so that rank 0 can save them all when interrupted, without
    # a collective call then. ``gather_rng`` (set by the run) collects them after each
    # step's backward pass, once the step has drawn all its random numbers.
    rng_of_ranks: list | None = field(default=None, repr=False, compare=False)
    gather_rng: Callable[[], list] | None = field(default=None, repr=False, compare=False)

    def counters(self) -> dict:
        return {"epoch": self.epoch, "step": self.step, "step_in_epoch": self.step_in_epoch}


class NonFiniteLoss(ArithmeticError):
    """The training loss became NaN or infinite (the run has diverged)."""


def rng_states(device: torch.device) -> dict:
    """The generators a training step draws from: the CPU's, and when training on CUDA,
    every GPU's (dropout on a GPU draws from the GPU's generator)."""
    cuda = torch.cuda.get_rng_state_all() if device.type == "cuda" else []
    return {"cpu": torch.get_rng_state(), "cuda": cuda}


def set_rng_states(states: dict, device: torch.device) -> None:
    """Restore what :func:`rng_states` returned; the GPUs' states only when training on CUDA
    (for as many GPUs as are both saved and present)."""
    torch.set_rng_state(states["cpu"])
    if device.type == "cuda":
        for index, state in enumerate(states.get("cuda") or []):
            if index < torch.cuda.device_count():
                torch.cuda.set_rng_state(state, index)


def optimizer_step(loss: torch.Tensor, optimizer, scheduler, progress: Progress, grad_clip: float,
                   after_step=None) -> None:
    """One training step from ``loss``: backward, optional gradient clipping, optimizer and
    schedule step, ``after_step`` (e.g. weight averaging), and the step counters. A NaN or
    infinite loss raises :class:`NonFiniteLoss` before it can reach the weights."""
    if not bool(torch.isfinite(loss.detach())):
        raise NonFiniteLoss(f"the training loss became {loss.item()} at step {progress.step + 1}")
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    following = progress.gather_rng() if progress.gather_rng is not None else None  # the next step's
    if grad_clip > 0:
        torch.nn.utils.clip_grad_norm_([p for g in optimizer.param_groups for p in g["params"]], grad_clip)
    optimizer.step()
    scheduler.step()
    if after_step is not None:
        after_step()
    progress.step += 1
    progress.step_in_epoch += 1
    progress.rng_before_step = None
    if following is not None:
        progress.rng_of_ranks = following


def caption_loss(logits: torch.Tensor, captions: torch.Tensor, label_smoothing: float,
                 normaliser: float, pad_id: int = 0) -> torch.Tensor:
    """Summed token cross-entropy divided by ``normaliser``.

    Logits (B, T-1, V) predict ``captions[:, 1:]``; padding is ignored. With one
    process the normaliser is the batch's token count (a per-token mean); with N
    processes it is the *global* batch's token count divided by N, so that the
    gradients DistributedDataParallel averages equal the single-process gradients.
    """
    targets = captions[:, 1:]
    total = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=pad_id,
                            label_smoothing=label_smoothing, reduction="sum")
    return total / normaliser


def train_one_epoch(model, optimizer, scheduler, loader, normalisers: list[float], progress: Progress, *,
                    label_smoothing: float, grad_clip: float, device: torch.device, show: bool,
                    description: str = "", after_step=None) -> dict:
    """Train on the batches of ``loader`` (already skipping the steps done before a resume).

    ``model(inputs, captions, lengths)`` returns logits; ``normalisers[i]`` belongs to
    the i-th batch the loader yields; ``after_step()`` runs after every optimizer step
    (the weight average). Returns the epoch's mean loss and throughput.
    """
    model.train()
    total_loss, total_tokens, samples = 0.0, 0, 0
    start = time.perf_counter()
    bar = tqdm(total=len(normalisers), desc=description, unit="batch", disable=not show, leave=False)
    for (inputs, captions, lengths), normaliser in zip(loader, normalisers):
        progress.rng_before_step = rng_states(device)
        inputs, captions, lengths = inputs.to(device), captions.to(device), lengths.to(device)
        logits = model(inputs, captions, lengths)
        loss = caption_loss(logits, captions, label_smoothing, normaliser)
        optimizer_step(loss, optimizer, scheduler, progress, grad_clip, after_step)
        tokens = int((lengths - 1).sum())
        total_loss += loss.item() * normaliser
        total_tokens += tokens
        samples += len(lengths)
        elapsed = time.perf_counter() - start
        bar.set_postfix(loss=f"{total_loss / max(total_tokens, 1):.3f}", samples_s=f"{samples / elapsed:.0f}")
        bar.update(1)
    bar.close()
    seconds = time.perf_counter() - start
    return {
        "train_loss": total_loss / total_tokens if total_tokens else math.nan,
        "samples": samples, "seconds": seconds, "samples_per_s": samples / seconds if seconds else math.nan,
    }
