"""Process-group set-up for multi-process training with ``torchrun``.

``torchrun --nproc_per_node=N -m captioner train ...`` starts N processes with
``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` set; a single ``captioner train`` runs as rank 0
of a world of 1, so the same code serves both.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

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

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def broadcast_flag(self, flag: bool) -> bool:
        """Rank 0's decision, on every rank."""
        if not self.enabled:
            return flag
        value = torch.tensor([1 if flag else 0], dtype=torch.int64)
        dist.broadcast(value, src=0)
        return bool(value.item())


def choose_device(preference: str, local_rank: int = 0) -> torch.device:
    """``train.device`` (auto, cpu, cuda) for the process of ``local_rank``, chosen by
    :func:`captioner.runtime.resolve_device`."""
    device = resolve_device(preference)
    return torch.device("cuda", local_rank) if device.type == "cuda" else device


def setup(preference: str) -> Distributed:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Distributed(device=choose_device(preference))
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    device = choose_device(preference, local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return Distributed(rank, world, local_rank, device)


def teardown(info: Distributed) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()
