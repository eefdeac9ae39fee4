"""Recurrent layers under cuDNN."""

import pytest
import torch
from torch import nn

from captioner.models.recurrent import rnn_backward_without_cudnn


def test_rnn_layers_run_without_cudnn_and_the_flag_comes_back():
    model = nn.ModuleDict({"conv": nn.Conv2d(3, 3, 1), "lstm": nn.LSTM(4, 5, batch_first=True)})
    seen = {}

    def record(name):
        def hook(*_):
            seen.setdefault(name, torch.backends.cudnn.enabled)
        return hook

    model["conv"].register_forward_pre_hook(record("conv"))
    with rnn_backward_without_cudnn(model, active=True):
        model["lstm"].register_forward_pre_hook(record("lstm"))  # runs after the context's own hook
        model["lstm"](torch.rand(2, 3, 4))
        model["conv"](torch.rand(1, 3, 2, 2))
        assert torch.backends.cudnn.enabled
        with pytest.raises(RuntimeError):
            model["lstm"](torch.rand(2, 3, 7))  # wrong input size: the forward fails half-way
    assert seen == {"lstm": False, "conv": True}
    assert torch.backends.cudnn.enabled
    assert len(model["lstm"]._forward_pre_hooks) == 1 and not model["lstm"]._forward_hooks  # only the test's hook
