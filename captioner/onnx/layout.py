"""The folder an ONNX export is: its file names, its settings JSON, and reading them back.

    settings.json        format marker and version, the encoder spec (with its preprocessing),
                         the ImageNet class names, the decoder config, the default decoding
                         settings, the checkpoint's training metadata, and the graph files
    vocab.json           the vocabulary (as checkpoints store it)
    encoder.onnx         pixels (B, 3, S, S) in [0, 1] -> features (B, D)
    classifier.onnx      features (B, D) -> class_logits (B, 1000); only when the encoder has a head
    decoder_init.onnx    features (B, D) -> h, c (layers, B, hidden)
    decoder_step.onnx    tokens (N,) int64, h, c -> log_probs (N, vocab), h, c

This module needs neither onnx nor onnxruntime, so that the torch runtime can tell a user who
gives it an export folder what to do.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..checkpoint import CheckpointError

FORMAT = "captioner-onnx"
FORMAT_VERSION = 1
SETTINGS = "settings.json"
VOCAB = "vocab.json"
GRAPHS = {"encoder": "encoder.onnx", "classifier": "classifier.onnx", "decoder_init": "decoder_init.onnx",
          "decoder_step": "decoder_step.onnx"}


def is_onnx_export(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a folder holding an ONNX export's settings (of any version)."""
    settings = Path(path) / SETTINGS
    try:
        return Path(path).is_dir() and json.loads(settings.read_text()).get("format") == FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def read_export(path: str | os.PathLike) -> tuple[dict, dict]:
    """The settings and vocabulary of the export in folder ``path``; any problem raises
    :class:`captioner.checkpoint.CheckpointError` naming what to do."""
    folder = Path(path)
    if not folder.exists():
        raise CheckpointError(folder, "no such folder (an ONNX export is the folder that "
                                      "`captioner checkpoint export CKPT --onnx DIR` writes)")
    if not folder.is_dir():
        raise CheckpointError(folder, "is a file, not an ONNX export folder; export a checkpoint with "
                                      f"`captioner checkpoint export {folder} --onnx DIR`, or caption it with "
                                      "--runtime torch")
    if not is_onnx_export(folder):
        raise CheckpointError(folder, f"not an ONNX export of captioner (no readable {SETTINGS} marked {FORMAT!r})")
    settings, vocab = (_read_json(folder / name) for name in (SETTINGS, VOCAB))
    version = settings.get("format_version")
    if not isinstance(version, int) or not 1 <= version <= FORMAT_VERSION:
        raise CheckpointError(folder, f"ONNX export format version {version!r}; this captioner reads version "
                                      f"{FORMAT_VERSION} (export the checkpoint again, or upgrade captioner)")
    for role in settings.get("graphs", {}).values():
        if not (folder / role).is_file():
            raise CheckpointError(folder / role, "missing from the ONNX export; export the checkpoint again")
    return settings, vocab


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(path, "missing from the ONNX export; export the checkpoint again") from None
    except (OSError, ValueError) as error:
        raise CheckpointError(path, f"cannot be read as JSON ({error}); export the checkpoint again") from None
    if not isinstance(data, dict):
        raise CheckpointError(path, "damaged: not a JSON object; export the checkpoint again")
    return data
