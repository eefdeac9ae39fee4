"""The checkpoint file: one self-describing file per model, loadable without pickled code.

A checkpoint is a ``torch.save``-d dict of plain values and tensors, so it loads with
``torch.load(weights_only=True)`` on any device::

    format            "captioner-checkpoint"
    format_version    1
    encoder           {"spec": EncoderSpec dict, "state_dict": tensors or None}
    decoder           {"config": DecoderConfig dict, "state_dict": tensors}
    vocab             {"itos": [...], "min_count": n, "tokenizer": name}
    decoding          default decoding settings (beam size, length penalty, max length)
    training          metadata (config, epoch, step, scores, data sources, ...)
    train_state       optional: optimizer, scheduler and RNG states for an exact resume

The encoder's weights are stored only when they cannot be rebuilt from the spec
(fine-tuned or randomly initialised encoders). Files are written atomically: a
crash while saving leaves the previous file intact.
"""

from __future__ import annotations

import os
import pickle
import re
import zipfile
from pathlib import Path

import torch

from .errors import UserError
from .fileio import atomic_write

FORMAT = "captioner-checkpoint"
FORMAT_VERSION = 1
REQUIRED_KEYS = ("encoder", "decoder", "vocab")


class CheckpointError(UserError):
    """A checkpoint file is missing, damaged or not a captioner checkpoint."""

    def __init__(self, path, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


def atomic_torch_save(obj, path: str | os.PathLike) -> None:
    """``torch.save`` to a temporary file beside ``path``, then rename it into place."""
    atomic_write(path, lambda handle: torch.save(obj, handle), binary=True)


def make_checkpoint(*, encoder_spec: dict, decoder_config: dict, decoder_state: dict, vocab: dict,
                    encoder_state: dict | None = None, decoding=None,
                    training: dict | None = None, train_state: dict | None = None,
                    half: bool = False) -> dict:
    """Assemble a checkpoint dict. ``half`` stores floating weights as float16."""
    def weights(state):
        if state is None:
            return None
        return {k: (v.detach().half() if half and v.is_floating_point() else v.detach()).cpu().clone()
                for k, v in state.items()}

    data = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "encoder": {"spec": encoder_spec, "state_dict": weights(encoder_state)},
        "decoder": {"config": decoder_config, "state_dict": weights(decoder_state)},
        "vocab": vocab,
        "decoding": decoding.to_dict() if hasattr(decoding, "to_dict") else dict(decoding or {}),
        "training": dict(training or {}),
    }
    if train_state is not None:
        data["train_state"] = train_state
    return data


def save_checkpoint(data: dict, path: str | os.PathLike) -> None:
    validate(data, path)
    atomic_torch_save(data, path)


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """Read and check a checkpoint; any problem raises :class:`CheckpointError` naming the file."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(path, "no such checkpoint file")
    if path.is_dir():
        raise CheckpointError(path, "is a directory, not a checkpoint file")
    if path.stat().st_size == 0:
        raise CheckpointError(path, "empty file (0 bytes), not a checkpoint")
    try:
        data = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        found = re.search(r"GLOBAL ([\w.]+)", str(error))
        if found:
            raise CheckpointError(
                path, f"contains a pickled Python object ({found.group(1)}), which captioner refuses to load "
                "(captioner checkpoints hold only tensors and plain values)"
            ) from None
        raise CheckpointError(path, "cannot be read as a PyTorch file (not a checkpoint, or damaged)") from None
    except (RuntimeError, zipfile.BadZipFile, EOFError, OSError, ValueError) as error:
        text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        if "central directory" in text or "zip archive" in text or isinstance(error, EOFError):
            text = f"truncated or damaged file ({text})"
        raise CheckpointError(path, f"cannot be read as a PyTorch file: {text}") from None
    validate(data, path)
    return data


def validate(data, path) -> None:
    """Check the structure of a checkpoint dict (not yet that the weights fit a model)."""
    if not isinstance(data, dict):
        raise CheckpointError(path, f"not a captioner checkpoint (holds a {type(data).__name__}, not a dict)")
    if data.get("format") != FORMAT:
        if data and all(isinstance(v, torch.Tensor) for v in data.values()):
            raise CheckpointError(
                path, f"a bare PyTorch state_dict ({len(data)} tensors), not a captioner checkpoint; "
                "captioner checkpoints are written by `captioner train`"
            )
        keys = ", ".join(sorted(map(str, data))[:6])
        raise CheckpointError(path, f"not a captioner checkpoint (no 'format' marker; keys: {keys})")
    version = data.get("format_version")
    if not isinstance(version, int) or version < 1:
        raise CheckpointError(path, f"invalid format_version {version!r}")
    if version > FORMAT_VERSION:
        raise CheckpointError(
            path, f"checkpoint format version {version} is newer than this captioner understands "
            f"({FORMAT_VERSION}); upgrade captioner"
        )
    for key in REQUIRED_KEYS:
        if not isinstance(data.get(key), dict):
            raise CheckpointError(path, f"damaged checkpoint: missing section {key!r}")
    if not isinstance(data["decoder"].get("state_dict"), dict) or "config" not in data["decoder"]:
        raise CheckpointError(path, "damaged checkpoint: decoder weights or config missing")
    if "spec" not in data["encoder"]:
        raise CheckpointError(path, "damaged checkpoint: encoder spec missing")
    if not isinstance(data["vocab"].get("itos"), list):
        raise CheckpointError(path, "damaged checkpoint: vocabulary word list missing")
