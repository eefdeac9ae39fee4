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
    train_state       optional: what an exact resume needs (optimizer, scheduler, counters,
                      every process's RNG states, ...): a TrainState (captioner.training.state)

:class:`Checkpoint` is that layout as a typed record; only this module reads the dict.

The encoder's weights are stored only when they cannot be rebuilt from the spec
(fine-tuned or randomly initialised encoders). Weights must be finite: a file with a
NaN or inf weight is refused on load and on save. Files are written atomically: a
crash while saving leaves the previous file intact.
"""

from __future__ import annotations

import os
import pickle
import re
import zipfile
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from .errors import UserError
from .fileio import atomic_write
from .training.state import TrainState

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


@dataclass
class Checkpoint:
    """What a checkpoint file holds, as plain values and tensors (the layout above).

    ``path`` is where it was read from (None for one built in memory); errors about its
    content name it. Sections other modules need are attributes: nothing outside this
    module indexes the on-disk dict.
    """

    encoder_spec: dict
    encoder_state: dict | None
    decoder_config: dict
    decoder_state: dict
    vocab: dict
    decoding: dict = field(default_factory=dict)
    training: dict = field(default_factory=dict)
    train_state: TrainState | None = None
    path: str | None = field(default=None, compare=False)

    def error(self, problem: str) -> CheckpointError:
        return CheckpointError(self.path or "<checkpoint>", problem)

    @classmethod
    def from_dict(cls, data, path: str | os.PathLike | None = None) -> "Checkpoint":
        """Check a loaded dict and wrap it; any problem raises :class:`CheckpointError` naming ``path``."""
        where = str(path) if path is not None else "<checkpoint>"
        _check_layout(data, where)
        encoder, decoder = data["encoder"], data["decoder"]
        train_state = None
        if data.get("train_state") is not None:
            try:
                train_state = TrainState.from_dict(data["train_state"])
            except ValueError as error:
                raise CheckpointError(where, f"damaged checkpoint: {error}") from None
        record = cls(encoder_spec=encoder["spec"], encoder_state=encoder.get("state_dict"),
                     decoder_config=decoder["config"], decoder_state=decoder["state_dict"], vocab=data["vocab"],
                     decoding=data.get("decoding") or {}, training=data.get("training") or {},
                     train_state=train_state, path=None if path is None else str(path))
        record.check()
        return record

    def to_dict(self) -> dict:
        """The on-disk layout."""
        data = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "encoder": {"spec": self.encoder_spec, "state_dict": self.encoder_state},
            "decoder": {"config": self.decoder_config, "state_dict": self.decoder_state},
            "vocab": self.vocab,
            "decoding": self.decoding,
            "training": self.training,
        }
        if self.train_state is not None:
            data["train_state"] = self.train_state.to_dict()
        return data

    def check(self) -> None:
        """Section types, and weights that are tensors holding only finite numbers."""
        sections = {"encoder spec": (self.encoder_spec, dict), "decoder config": (self.decoder_config, dict),
                    "decoder weights": (self.decoder_state, dict), "decoding": (self.decoding, dict),
                    "training": (self.training, dict), "encoder weights": (self.encoder_state, (dict, type(None))),
                    "train_state": (self.train_state, (TrainState, type(None)))}
        for name, (value, kind) in sections.items():
            if not isinstance(value, kind):
                raise self.error(f"damaged checkpoint: {name} is a {type(value).__name__}, not a mapping")
        if not self.decoder_config:
            raise self.error("damaged checkpoint: decoder config is empty")
        itos = self.vocab.get("itos")
        if not isinstance(itos, list) or not all(isinstance(word, str) for word in itos):
            raise self.error("damaged checkpoint: vocabulary word list missing")
        for what, state in self._weight_sets():
            for key, tensor in state.items():
                if not isinstance(tensor, torch.Tensor):
                    raise self.error(f"damaged checkpoint: {what} weight {key} is a {type(tensor).__name__}, "
                                     "not a tensor")
                if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
                    bad = int((~torch.isfinite(tensor)).sum())
                    raise self.error(f"{what} weight {key} holds {bad} non-finite value(s) (NaN or inf); "
                                     "the model diverged or the file is damaged")

    def _weight_sets(self):
        yield "decoder", self.decoder_state
        if self.encoder_state is not None:
            yield "encoder", self.encoder_state
        if self.train_state is not None:
            for what, state in self.train_state.weight_copies():
                yield f"train_state {what}", state

    def resume_weights(self) -> "Checkpoint":
        """This checkpoint with the float32 weights that a float16 training checkpoint keeps
        in ``train_state`` (see :func:`make_checkpoint`), so that a resume is exact."""
        exact = self.train_state.float32_weights if self.train_state is not None else None
        if exact is None:
            return self
        return replace(self, decoder_state=exact["decoder"], encoder_state=exact["encoder"])

    def slim(self, half: bool = False, decoding: dict | None = None) -> "Checkpoint":
        """A release copy: no training state, optionally float16 weights and new default decoding."""
        return replace(self, encoder_state=_weights(self.encoder_state, half),
                       decoder_state=_weights(self.decoder_state, half), train_state=None,
                       decoding=dict(self.decoding if decoding is None else decoding), training=dict(self.training))

    def describe(self) -> dict:
        """What ``captioner checkpoint info`` reports (the JSON of ``--json``)."""
        training = self.training
        weights = list(self.decoder_state.values())
        return {
            "format_version": FORMAT_VERSION,
            "encoder": {**self.encoder_spec, "fine_tuned_weights_stored": self.encoder_state is not None},
            "decoder": self.decoder_config,
            "decoder_parameters": sum(t.numel() for t in weights),
            "weights_dtype": str(weights[0].dtype).replace("torch.", "") if weights else None,
            "vocabulary": {"words": len(self.vocab["itos"]), "min_count": self.vocab.get("min_count")},
            "decoding": self.decoding,
            "training": {
                "epoch": training.get("epoch"), "step": training.get("step"), "best": training.get("best", {}),
                "data": {k: v for k, v in (training.get("data") or {}).items() if k != "manifest"},
                "saved": training.get("saved"),
            },
            "resumable": self.train_state is not None,
        }


def _weights(state: dict | None, half: bool) -> dict | None:
    """Detached CPU copies of ``state``, floating tensors as float16 when ``half``."""
    if state is None:
        return None
    return {k: (v.detach().half() if half and v.is_floating_point() else v.detach()).cpu().clone()
            for k, v in state.items()}


def make_checkpoint(*, encoder_spec: dict, decoder_config: dict, decoder_state: dict, vocab: dict,
                    encoder_state: dict | None = None, decoding=None,
                    training: dict | None = None, train_state: TrainState | None = None,
                    half: bool = False) -> Checkpoint:
    """Build a checkpoint. ``half`` stores the weights as float16; a training checkpoint then
    also keeps them as float32 in ``train_state.float32_weights``, for an exact resume."""
    if half and train_state is not None:
        train_state = replace(train_state, float32_weights={"decoder": _weights(decoder_state, False),
                                                            "encoder": _weights(encoder_state, False)})
    return Checkpoint(
        encoder_spec=encoder_spec, encoder_state=_weights(encoder_state, half), decoder_config=decoder_config,
        decoder_state=_weights(decoder_state, half), vocab=vocab,
        decoding=decoding.to_dict() if hasattr(decoding, "to_dict") else dict(decoding or {}),
        training=dict(training or {}), train_state=train_state,
    )


def save_checkpoint(checkpoint: Checkpoint, path: str | os.PathLike) -> None:
    """Check ``checkpoint`` (as loading would) and write it atomically to ``path``."""
    replace(checkpoint, path=str(path)).check()
    atomic_torch_save(checkpoint.to_dict(), path)


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> Checkpoint:
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
    return Checkpoint.from_dict(data, path)


def _check_layout(data, path: str) -> None:
    """The format marker, version and sections of a loaded dict (not yet their content)."""
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
