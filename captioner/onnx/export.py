"""Writing a captioner as ONNX graphs (the folder :mod:`captioner.onnx.layout` describes).

The graphs are traced from the very modules the torch runtime runs, in float32 (a checkpoint's
float16 weights are widened on loading, as for the torch runtime), with PyTorch's TorchScript
exporter (``dynamo=False``): on Lite0 it exports in about 2 s where the torch.export-based
exporter took about 20 s, and it writes each graph as one file. Only the batch dimension is
dynamic; images come at the encoder's crop size, as :func:`captioner.data.preprocess.preprocess`
makes them.

Each graph is checked with ``onnx.checker`` and then run by ONNX Runtime on random inputs at a
batch size other than the traced one, against the torch module: the outputs must agree within
:data:`TOLERANCE` of their scale (float32 rounding in another order of operations is about
1e-6 of it; a wrongly traced graph is off by the whole scale).

The folder is written beside the target and moved into place when complete: an interrupted
export leaves the target as it was.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..errors import UserError
from ..fileio import OutputError, _umask, check_writable, write_json_atomic
from ..guidance.imagenet import has_imagenet_head
from .layout import FORMAT, FORMAT_VERSION, GRAPHS, SETTINGS, VOCAB, is_onnx_export

OPSET = 17
TOLERANCE = 1e-4  # of the largest output value: see the module's docstring
TRACE_ROWS, CHECK_ROWS = 2, 3


class _Step(nn.Module):
    """One decoder step as the torch runtime's :meth:`LSTMDecoder.step`: embedding, LSTM cell,
    output layer and log-softmax."""

    def __init__(self, decoder):
        super().__init__()
        self.decoder = decoder

    def forward(self, tokens, h, c):
        log_probs, (h, c) = self.decoder.step(tokens, (h, c))
        return log_probs, h, c


class _Init(nn.Module):
    """The decoder's initial state. (Wrappers are made in eval mode: the exporter puts the module
    back in the mode it found, and a wrapper in training mode would turn the decoder's dropout on.)"""

    def __init__(self, decoder):
        super().__init__()
        self.decoder = decoder

    def forward(self, features):
        return self.decoder.init_state(features)


def check_target(folder: str | os.PathLike) -> Path:
    """Refuse a target that is a file, or a folder holding anything but an earlier export."""
    folder = Path(folder)
    check_writable(folder, folder=True)
    if folder.is_dir() and any(folder.iterdir()) and not is_onnx_export(folder):
        raise OutputError(f"cannot export into {folder}: it holds other files; give a new or empty folder "
                          "(an earlier ONNX export there is replaced)")
    return folder


def export_onnx(captioner, folder: str | os.PathLike, source: str = "") -> dict:
    """Export a torch :class:`captioner.Captioner` into ``folder``; returns the settings written.
    ``source``: the checkpoint it came from, recorded in the settings."""
    try:
        import onnx
        import onnxruntime  # noqa: F401  (every graph is checked by running it)
    except ImportError as error:
        raise UserError(f"ONNX export needs onnx and onnxruntime ({error.name} is missing): "
                        "pip install 'captioner[onnx]'") from None
    folder = check_target(folder)
    model = captioner.model.to("cpu").eval()
    encoder, decoder = model.encoder, model.decoder
    size = encoder.preprocessing.crop_size
    config = decoder.config
    state = (config.num_layers, TRACE_ROWS, config.hidden_size)
    graphs = {
        "encoder": (encoder, (torch.rand(TRACE_ROWS, 3, size, size),), ["pixels"], ["features"],
                    {"pixels": 0, "features": 0}),
        "decoder_init": (_Init(decoder).eval(), (torch.randn(TRACE_ROWS, config.feature_dim),), ["features"], ["h", "c"],
                         {"features": 0, "h": 1, "c": 1}),
        "decoder_step": (_Step(decoder).eval(), (torch.tensor([captioner.vocab.start_id, captioner.vocab.end_id]), torch.randn(state),
                                          torch.randn(state)),
                         ["tokens", "h_in", "c_in"], ["log_probs", "h", "c"],
                         {"tokens": 0, "h_in": 1, "c_in": 1, "log_probs": 0, "h": 1, "c": 1}),
    }
    guided = has_imagenet_head(encoder)
    if guided:
        graphs["classifier"] = (encoder.head, (torch.randn(TRACE_ROWS, encoder.feature_dim),), ["features"],
                                ["class_logits"], {"features": 0, "class_logits": 0})
    folder.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    work.chmod(0o777 & ~_umask())  # mkdtemp's folder is private; the export gets a new folder's usual mode
    try:
        for role, (module, args, inputs, outputs, batch_axes) in graphs.items():
            path = work / GRAPHS[role]
            _export(module, args, path, inputs, outputs, batch_axes)
            onnx.checker.check_model(str(path), full_check=True)
            _compare(module, path, args, inputs, batch_axes)
        settings = {
            "format": FORMAT, "format_version": FORMAT_VERSION, "source": source,
            "encoder": encoder.spec.to_dict(), "categories": encoder.categories if guided else None,
            "decoder": config.to_dict(), "decoding": captioner.decoding.to_dict(),
            "training": json.loads(json.dumps(captioner.metadata, default=str)),
            "graphs": {role: GRAPHS[role] for role in graphs}, "opset": OPSET,
        }
        write_json_atomic(work / VOCAB, captioner.vocab.to_dict())
        write_json_atomic(work / SETTINGS, settings, indent=1)
        _publish(work, folder)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return settings


def _export(module, args, path: Path, inputs, outputs, batch_axes) -> None:
    axes = {name: {axis: "batch"} for name, axis in batch_axes.items()}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's deprecation notice and tracer warnings on fixed sizes
        torch.onnx.export(module, args, str(path), input_names=inputs, output_names=outputs, dynamic_axes=axes,
                          opset_version=OPSET, do_constant_folding=True, dynamo=False)


def _compare(module, path: Path, args, inputs, batch_axes) -> None:
    """Run the graph with ONNX Runtime at another batch size and compare it with ``module``."""
    import onnxruntime

    generator = torch.Generator().manual_seed(0)
    grown = []
    for name, value in zip(inputs, args):
        axis = batch_axes[name]
        index = torch.randint(0, value.shape[axis], (CHECK_ROWS,), generator=generator)
        picked = value.index_select(axis, index)
        grown.append(picked if not picked.is_floating_point() else
                     picked + 0.1 * torch.rand(picked.shape, generator=generator))
    with torch.no_grad():
        expected = module(*grown)
    expected = expected if isinstance(expected, tuple) else (expected,)
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {name: value.numpy() for name, value in zip(inputs, grown)})
    for want, have in zip(expected, got):
        scale = max(1.0, float(want.abs().max()))
        error = float(np.abs(have - want.numpy()).max()) if have.shape == tuple(want.shape) else float("inf")
        if not error <= TOLERANCE * scale:
            raise RuntimeError(f"ONNX export of {path.name} disagrees with the torch module by {error:.3g} "
                               f"(shape {have.shape} vs {tuple(want.shape)})")


def _publish(work: Path, folder: Path) -> None:
    """Move the finished export ``work`` into ``folder``, replacing an earlier export (or an empty folder)."""
    old = None
    if folder.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{folder.name}.old.", dir=folder.parent))
        os.replace(folder, old / "export")
    os.replace(work, folder)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
