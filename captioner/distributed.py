"""Rank, world, device and process group of a command run under ``torchrun``: the one policy
that training, the feature cache and captioning share.

``torchrun --nproc_per_node=N -m captioner train ...`` (or ``caption``) starts N processes with
``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` set; a plain ``captioner`` command runs as rank 0
of a world of 1, so the same code serves both.

On CUDA each process drives one GPU of its own, ``cuda:LOCAL_RANK``. More processes per
node than GPUs is refused up front, on every rank, with a message that says what to do
(fewer processes, or the CPU): sharing a GPU between processes is not an
option, as NCCL refuses two ranks on one device, and it would not train faster anyway.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass

import torch
import torch.distributed as dist

from .errors import ArgumentError, UserError
from .runtime import resolve_device


class PeerLost(UserError):
    """Another process of a torchrun run stopped while this one waited for it."""


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
        """Wait for every process; one that died (killed, out of memory, an error) is a
        :class:`PeerLost` here rather than gloo's connection error or a hang."""
        if not self.enabled:
            return
        try:
            dist.barrier()
        except RuntimeError as error:  # gloo: "Connection closed by peer"; NCCL: a DistBackendError
            raise PeerLost(f"process {self.rank} of {self.world}: another process of this run stopped before "
                           f"finishing ({str(error).splitlines()[0][:200]})") from None

    def agree(self, decide) -> None:
        """Run ``decide()`` on rank 0 only; a :class:`UserError` it raises is raised on every
        rank (each process then stops with the same one-line message, none waits forever)."""
        message = None
        if self.is_main:
            try:
                decide()
            except UserError as error:
                if not self.enabled:
                    raise
                message = str(error)
        message = self.all_gather(message)[0]
        if message is not None:
            raise UserError(message)

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


def choose_device(preference: str | None, local_rank: int = 0, local_world: int = 1,
                  cpu_option: str = "--set train.device=cpu") -> torch.device:
    """The device (auto, cpu, cuda) for the process of ``local_rank``, one of
    ``local_world`` processes on this machine, chosen by
    :func:`captioner.runtime.resolve_device`. On CUDA, process ``local_rank`` gets
    ``cuda:local_rank``; more processes than GPUs is an :class:`ArgumentError` that suggests
    fewer processes or ``cpu_option`` (how the command asks for the CPU)."""
    device = resolve_device(preference)
    if device.type != "cuda":
        return device
    gpus = torch.cuda.device_count()
    processes = max(local_world, local_rank + 1)
    if processes > gpus:
        raise ArgumentError(
            f"torchrun started {processes} processes on this machine but PyTorch sees {gpus} CUDA GPU(s), "
            f"and each process needs a GPU of its own: use torchrun --nproc_per_node={gpus}, "
            f"or {cpu_option}")
    return torch.device("cuda", local_rank)


def backend_for(device: torch.device) -> str:
    """The process group's backends: gloo on the CPU; on CUDA, NCCL for CUDA tensors (DDP's
    gradients) and gloo for CPU ones, as the run's own collectives (the early-stopping flag,
    every process's RNG states) are on the CPU, which NCCL alone refuses, and gathering them
    through gloo does not wait for the GPU."""
    return "cpu:gloo,cuda:nccl" if device.type == "cuda" else "gloo"


def setup(preference: str | None, cpu_option: str = "--set train.device=cpu") -> Distributed:
    """This process's place in the run (joining the process group under torchrun)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Distributed(device=choose_device(preference, cpu_option=cpu_option))
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    device = choose_device(preference, local_rank, int(os.environ.get("LOCAL_WORLD_SIZE", "1")), cpu_option)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend=backend_for(device))
    return Distributed(rank, world, local_rank, device)


def teardown(info: Distributed) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()
