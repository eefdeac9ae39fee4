"""Process-group set-up for multi-process training with ``torchrun``.

``torchrun --nproc_per_node=N -m captioner train ...`` starts N processes with
``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` set; a single ``captioner train`` runs as rank 0
of a world of 1, so the same code serves both.

On CUDA each process drives one GPU of its own, ``cuda:LOCAL_RANK``. More processes per
node than GPUs is refused up front, on every rank, with a message that says what to do
(fewer processes, or ``train.device: cpu``): sharing a GPU between processes is not an
option, as NCCL refuses two ranks on one device, and it would not train faster anyway.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass

import torch
import torch.distributed as dist

from ..errors import ArgumentError
from ..runtime import resolve_device


@dataclass(frozen=True)
class Distributed:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    def log(self, message: str) -> None:
        """A progress or warning line on stderr, from rank 0 only (once per run, not per process)."""
        if self.is_main:
            print(message, file=sys.stderr, flush=True)

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def all_gather(self, value) -> list:
        """Every rank's ``value`` (any picklable object), in rank order, on every rank."""
        if not self.enabled:
            return [value]
        values = [None] * self.world
        dist.all_gather_object(values, value)
        return values

    def broadcast_flag(self, flag: bool) -> bool:
        """Rank 0's decision, on every rank."""
        if not self.enabled:
            return flag
        value = torch.tensor([1 if flag else 0], dtype=torch.int64)
        dist.broadcast(value, src=0)
        return bool(value.item())


def choose_device(preference: str, local_rank: int = 0, local_world: int = 1) -> torch.device:
    """``train.device`` (auto, cpu, cuda) for the process of ``local_rank``, one of
    ``local_world`` processes on this machine, chosen by
    :func:`captioner.runtime.resolve_device`. On CUDA, process ``local_rank`` gets
    ``cuda:local_rank``; more processes than GPUs is an :class:`ArgumentError`."""
    device = resolve_device(preference)
    if device.type != "cuda":
        return device
    gpus = torch.cuda.device_count()
    processes = max(local_world, local_rank + 1)
    if processes > gpus:
        raise ArgumentError(
            f"torchrun started {processes} processes on this machine but PyTorch sees {gpus} CUDA GPU(s), "
            f"and each process needs a GPU of its own: use torchrun --nproc_per_node={gpus}, "
            "or --set train.device=cpu")
    return torch.device("cuda", local_rank)


def backend_for(device: torch.device) -> str:
    """The process group's backends: gloo on the CPU; on CUDA, NCCL for CUDA tensors (DDP's
    gradients) and gloo for CPU ones, as the run's own collectives (the early-stopping flag,
    every process's RNG states) are on the CPU, which NCCL alone refuses, and gathering them
    through gloo does not wait for the GPU."""
    return "cpu:gloo,cuda:nccl" if device.type == "cuda" else "gloo"


def setup(preference: str) -> Distributed:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Distributed(device=choose_device(preference))
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    device = choose_device(preference, local_rank, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend=backend_for(device))
    return Distributed(rank, world, local_rank, device)


def teardown(info: Distributed) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()
