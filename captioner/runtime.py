"""Process-level tuning for CPU inference and training.

glibc's malloc serves every request above its mmap threshold (at most 32 MB) with a
fresh ``mmap``: the kernel maps, faults in and zeroes those pages on every allocation and
unmaps them on every free. A batch of 16 images through EfficientNet-Lite0 at 224 px has
activations of about 77 MB, so each forward pass pays that cost for every large layer; it
halves the encoder's throughput on a CPU. :func:`tune_allocator` raises the threshold so
that large tensors come from the heap and are reused, and stops glibc from trimming the
heap after every free. Memory freed by torch stays with the process for reuse instead of
going back to the system, so the peak is what it was and later batches don't pay for it
again.

The ``captioner`` command calls it at start-up; call it yourself at the top of a script or
notebook that uses the Python API on a CPU. ``CAPTIONER_MALLOC=default`` turns it off.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

import torch

from .errors import ArgumentError

M_TRIM_THRESHOLD = -1  # mallopt parameters, from glibc's malloc.h
M_MMAP_THRESHOLD = -3
LARGE = 1 << 30  # 1 GiB: above any activation of the batch sizes used here

_tuned: bool | None = None


def tune_allocator() -> bool:
    """Raise glibc's mmap and trim thresholds; True if they were set (Linux with glibc only).

    Idempotent; does nothing where there is no glibc or when ``CAPTIONER_MALLOC=default``.
    """
    global _tuned
    if _tuned is not None:
        return _tuned
    _tuned = False
    if not sys.platform.startswith("linux") or os.environ.get("CAPTIONER_MALLOC", "").lower() == "default":
        return False
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and other C libraries have no mallopt
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    _tuned = bool(mallopt(M_MMAP_THRESHOLD, LARGE)) and bool(mallopt(M_TRIM_THRESHOLD, LARGE))
    return _tuned


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """The device a command runs on: ``None``/``"auto"`` picks CUDA when PyTorch sees a GPU,
    else the CPU; asking for CUDA where there is none is a one-line error (worded for the
    ``--device`` option that every subcommand has). Every subcommand and the Python API
    choose their device here."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(device)
    except RuntimeError:
        raise ArgumentError(f"unknown --device {device!r}; use cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ArgumentError(f"--device {device} was asked for, but PyTorch sees no CUDA GPU here; use --device cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ArgumentError(f"--device {device} was asked for, but PyTorch sees {torch.cuda.device_count()} "
                                "CUDA GPU(s)")
    elif device.type != "cpu":
        raise ArgumentError(f"--device {device} is not supported; use cpu or cuda")
    return device
