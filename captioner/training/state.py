"""The resumable training state: where a run is, and what ``--resume`` needs to continue it exactly.

:class:`Progress` is the live position (counters and every process's RNG states, of one
point); :class:`TrainState` is the record a checkpoint keeps (see
:mod:`captioner.checkpoint`), captured from the run's objects and restored into them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, fields

import torch

# TrainState fields that hold copies of the weights ({"decoder": state_dict, "encoder": state_dict or None}).
WEIGHT_COPIES = ("raw_weights", "float32_weights")


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


def rng_of_ranks(device: torch.device, gather: Callable[[dict], list] | None = None) -> list[dict]:
    """Every process's :func:`rng_states`, in rank order. ``gather`` (``Distributed.all_gather``,
    a collective: every process must call this together) is needed only with several processes."""
    states = rng_states(device)
    return gather(states) if gather is not None else [states]


@dataclass
class Progress:
    """Where training is: the counters, and every process's RNG states at that point (before
    the next step), so that a resume redoes the step in progress with the same dropout masks."""

    epoch: int = 0           # the epoch in progress (0-based)
    step: int = 0            # optimizer steps taken so far, in all epochs
    step_in_epoch: int = 0   # optimizer steps taken in the epoch in progress
    rng_ranks: list = field(default_factory=list, repr=False, compare=False)

    def counters(self) -> dict:
        return {"epoch": self.epoch, "step": self.step, "step_in_epoch": self.step_in_epoch}

    def advance(self, rng_ranks: list) -> None:
        """Count one finished step, whose processes' RNG states are now ``rng_ranks``.

        One update of the instance's dict, a single call into C: a Ctrl-C (raised between
        bytecodes) finds the counters and the states of the same point, before or after.
        """
        vars(self).update(step=self.step + 1, step_in_epoch=self.step_in_epoch + 1, rng_ranks=rng_ranks)


@dataclass
class TrainState:
    """What ``--resume`` needs besides the published weights, as a checkpoint keeps it."""

    optimizer: dict
    scheduler: dict
    progress: Progress          # with every process's RNG states (rng_ranks), in rank order
    history: list = field(default_factory=list)
    best: dict = field(default_factory=dict)
    # With a weight average, the published weights are the average: the trained ones, and the
    # average's count, are kept here.
    raw_weights: dict | None = None
    ema_n_averaged: int | None = None
    # With float16 checkpoints: the published weights as float32 (see make_checkpoint).
    float32_weights: dict | None = None

    @classmethod
    def capture(cls, optimizer, scheduler, progress: Progress, history: list, best: dict, model=None, ema=None,
                fine_tune: bool = False) -> "TrainState":
        """The state of a run; ``model`` holds the trained weights when ``ema`` averages them."""
        state = cls(optimizer=optimizer.state_dict(), scheduler=scheduler.state_dict(),
                    progress=Progress(**progress.counters(), rng_ranks=list(progress.rng_ranks)),
                    history=list(history), best=dict(best))
        if ema is not None:
            state.raw_weights = {"decoder": model.decoder.state_dict(),
                                 "encoder": model.encoder.state_dict() if fine_tune else None}
            state.ema_n_averaged = int(ema.n_averaged)
        return state

    def restore(self, optimizer, scheduler, info, model=None, ema=None) -> Progress:
        """Put this state back into the run's objects; returns the progress to continue from.

        Each process takes its own RNG states when the run had as many processes (``info``,
        a :class:`~captioner.distributed.Distributed`), else every process takes
        process 0's, as a fresh run starts them all from one seed (not bit-exact then)."""
        optimizer.load_state_dict(self.optimizer)
        scheduler.load_state_dict(self.scheduler)
        if ema is not None:
            model.decoder.load_state_dict(self.raw_weights["decoder"])
            if self.raw_weights.get("encoder") is not None:
                model.encoder.load_state_dict(self.raw_weights["encoder"])
            ema.n_averaged.fill_(int(self.ema_n_averaged))
        ranks = self.progress.rng_ranks
        if len(ranks) == info.world:
            set_rng_states(ranks[info.rank], info.device)
        else:
            set_rng_states(ranks[0], info.device)
            info.log(f"--resume: last.pt holds the random-number states of {len(ranks)} process(es) and this run "
                     f"has {info.world}: every process continues from process 0's, so the result is not "
                     "bit-identical to an uninterrupted run")
        return Progress(**self.progress.counters(), rng_ranks=list(ranks))

    def weight_copies(self) -> Iterator[tuple[str, dict]]:
        """(name, state_dict) of every copy of the weights kept here."""
        for name in WEIGHT_COPIES:
            for part, state in (getattr(self, name) or {}).items():
                if state is not None:
                    yield f"{name} {part}", state

    def to_dict(self) -> dict:
        """The checkpoint's ``train_state`` section (plain values and tensors)."""
        data = {"optimizer": self.optimizer, "scheduler": self.scheduler, "progress": self.progress.counters(),
                "rng_ranks": self.progress.rng_ranks, "history": self.history, "best": self.best}
        for name in ("raw_weights", "ema_n_averaged", "float32_weights"):
            if getattr(self, name) is not None:
                data[name] = getattr(self, name)
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "TrainState":
        """Read :meth:`to_dict`'s layout, or an older one (rank 0's RNG states alone, in
        ``rng_cpu``/``rng_cuda``). A section missing or of the wrong kind raises ValueError."""
        if not isinstance(data, dict):
            raise ValueError(f"train_state is a {type(data).__name__}, not a mapping")
        missing = [key for key in ("optimizer", "scheduler", "progress") if key not in data]
        if "rng_ranks" not in data and "rng_cpu" not in data:
            missing.append("rng_ranks")
        if missing:
            raise ValueError(f"train_state lacks {', '.join(missing)}")
        ranks = data.get("rng_ranks") or [{"cpu": data["rng_cpu"], "cuda": data.get("rng_cuda") or []}]
        counters = data["progress"]
        if not isinstance(counters, dict) or set(counters) != {"epoch", "step", "step_in_epoch"}:
            raise ValueError(f"train_state progress is {counters!r}, not the epoch, step and step_in_epoch")
        for name in WEIGHT_COPIES:
            copies = data.get(name)
            if copies is not None and not (isinstance(copies, dict)
                                           and all(isinstance(v, (dict, type(None))) for v in copies.values())):
                raise ValueError(f"train_state {name} is a {type(copies).__name__}, not weights by part")
        known = {f.name for f in fields(cls)} - {"progress"}
        return cls(progress=Progress(**counters, rng_ranks=list(ranks)),
                   **{key: value for key, value in data.items() if key in known})
