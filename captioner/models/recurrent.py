"""Recurrent layers under cuDNN: a workaround shared by attacks and training."""

from __future__ import annotations

import contextlib

import torch
from torch import nn


@contextlib.contextmanager
def rnn_backward_without_cudnn(module: nn.Module, active: bool = True):
    """Run the RNN layers inside ``module`` without cuDNN while the context is open.

    cuDNN refuses the backward pass of an RNN run in eval mode ("cudnn RNN backward can
    only be called in training mode"), and an attack needs both eval mode (no dropout)
    and gradients. Switching the RNN to training mode would turn its dropout on, so
    instead each RNN's forward runs with cuDNN disabled (PyTorch's own kernels, whose
    backward works in eval mode). Only the RNN layers lose cuDNN: the CNN keeps it.
    The flag is restored on exit, also after an error.
    """
    rnns = [m for m in module.modules() if isinstance(m, nn.RNNBase)]
    if not active or not rnns:
        yield
        return
    previous = torch.backends.cudnn.enabled

    def off(*_):
        torch.backends.cudnn.enabled = False

    def back(*_):
        torch.backends.cudnn.enabled = previous

    handles = [h for m in rnns for h in (m.register_forward_pre_hook(off), m.register_forward_hook(back))]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
        torch.backends.cudnn.enabled = previous
