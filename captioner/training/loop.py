"""One epoch of teacher-forced training."""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from tqdm import tqdm

from .state import Progress, rng_of_ranks


class NonFiniteLoss(ArithmeticError):
    """The training loss became NaN or infinite (the run has diverged)."""


def training_step(loss: torch.Tensor, optimizer, scheduler, progress: Progress, *, grad_clip: float,
                  device: torch.device, gather: Callable[[dict], list] | None = None, after_step=None) -> None:
    """One training step from ``loss``, in this order:

    1. the gradients (a NaN or infinite loss raises :class:`NonFiniteLoss` before it can
       reach the weights);
    2. every process's RNG states: the step has drawn all its random numbers, so these are
       the states before the next one. With several processes ``gather`` makes this a
       collective, taken here, before the weights change, so that it is not in the window
       between the weights and the counters;
    3. gradient clipping, the optimizer and schedule steps, and ``after_step`` (e.g. the
       weight average);
    4. the counters and those states, in one update (:meth:`Progress.advance`).

    A Ctrl-C before 4 leaves ``progress`` at the point before this step, with its states.
    """
    if not bool(torch.isfinite(loss.detach())):
        raise NonFiniteLoss(f"the training loss became {loss.item()} at step {progress.step + 1}")
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    following = rng_of_ranks(device, gather)
    if grad_clip > 0:
        torch.nn.utils.clip_grad_norm_([p for g in optimizer.param_groups for p in g["params"]], grad_clip)
    optimizer.step()
    scheduler.step()
    if after_step is not None:
        after_step()
    progress.advance(following)


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
                    description: str = "", after_step=None, gather: Callable[[dict], list] | None = None) -> dict:
    """Train on the batches of ``loader`` (already skipping the steps done before a resume).

    ``model(inputs, captions, lengths)`` returns logits; ``normalisers[i]`` belongs to
    the i-th batch the loader yields; ``after_step`` and ``gather`` are
    :func:`training_step`'s. Returns the epoch's mean loss and throughput.
    """
    model.train()
    total_loss, total_tokens, samples = 0.0, 0, 0
    start = time.perf_counter()
    bar = tqdm(total=len(normalisers), desc=description, unit="batch", disable=not show, leave=False)
    for (inputs, captions, lengths), normaliser in zip(loader, normalisers):
        inputs, captions, lengths = inputs.to(device), captions.to(device), lengths.to(device)
        logits = model(inputs, captions, lengths)
        loss = caption_loss(logits, captions, label_smoothing, normaliser)
        training_step(loss, optimizer, scheduler, progress, grad_clip=grad_clip, device=device, gather=gather,
                      after_step=after_step)
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
