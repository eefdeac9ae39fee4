"""Experiment configuration: dataclasses loaded from YAML, overridable from the command line.

A config file has four sections, each a dataclass below::

    data:    what to train on        (DataConfig)
    model:   encoder and decoder     (ModelConfig)
    train:   optimisation and output (TrainConfig)
    decode:  default decoding, stored in the checkpoint (captioner.decoding.DecodingSettings)

Unknown keys and values of the wrong type are errors that name the key (with a
suggestion for likely typos), never silently ignored. ``--set train.lr=3e-4`` style
overrides are parsed as YAML scalars and checked the same way.
"""

from __future__ import annotations

import difflib
import math
import reprlib
import types
import typing
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from pathlib import Path

import yaml

from .decoding.settings import DecodingSettings, methods
from .errors import UserError


class ConfigError(UserError, ValueError):
    """A config file or override is wrong; the message names the key and the problem."""


_QUOTE = reprlib.Repr()
_QUOTE.maxlevel, _QUOTE.maxlist, _QUOTE.maxdict, _QUOTE.maxstring, _QUOTE.maxother, _QUOTE.maxlong = 3, 4, 4, 60, 60, 40


def _quote(value) -> str:
    """``repr(value)``, cut short: a YAML alias bomb is a tiny file whose full repr is gigabytes."""
    text = _QUOTE.repr(value)  # bounded work: a few items of a few levels
    return text if len(text) <= 120 else text[:117] + "..."


class _StrictLoader(yaml.SafeLoader):
    """``yaml.safe_load`` that refuses a key given twice in one mapping (YAML keeps the last, silently)."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            first: dict = {}
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=True)
                try:
                    line = first.setdefault(key, key_node.start_mark.line + 1)
                except TypeError:  # an unhashable key: SafeLoader reports it
                    continue
                if line != key_node.start_mark.line + 1:
                    raise ConfigError(f"duplicate key {_quote(key)} on line {key_node.start_mark.line + 1} "
                                      f"(first on line {line})")
        return super().construct_mapping(node, deep)


@dataclass
class DataConfig:
    name: str = "dataset"            # names the feature cache; change it when the data changes
    format: str = "karpathy"         # karpathy | coco | flickr8k | generic
    path: str = ""                   # Karpathy json, COCO captions json, Flickr8k.token.txt, or .jsonl/.csv
    images: str = ""                 # folder the image file names are relative to
    val_path: str = ""               # coco format only: the captions json of the val split
    val_images: str = ""             # coco format only: the val images folder
    restval: str = "train"           # karpathy: the split the "restval" images join
    val_fraction: float = 0.05       # generic/flickr8k without split files: share of images per split,
    test_fraction: float = 0.05      #   assigned by a hash of the image name (stable across runs)
    min_word_count: int = 5          # rarer words become <unk>
    max_caption_words: int = 30      # longer training captions are cut
    strict: bool = False             # stop on any bad record instead of reporting and skipping it


@dataclass
class ModelConfig:
    encoder: str = "efficientnet_lite0"
    encoder_weights: typing.Optional[str] = "DEFAULT"
    embed_dim: int = 512
    hidden_size: int = 512
    num_layers: int = 1
    dropout: float = 0.5
    feature_norm: str = "none"       # none | layernorm: normalise the image features before h0/c0


@dataclass
class TrainConfig:
    out_dir: str = "runs/experiment"
    cache_dir: str = "cache"
    device: str = "auto"             # auto | cpu | cuda
    seed: int = 0
    epochs: int = 20
    batch_size: int = 64             # global batch (split across processes when distributed)
    lr: float = 4e-4
    weight_decay: float = 0.01
    grad_clip: float = 5.0           # max gradient norm; 0 disables clipping
    lr_schedule: str = "cosine"      # cosine | step | constant
    warmup_steps: int = 0
    step_epochs: int = 8             # step schedule: multiply the lr by step_gamma every step_epochs
    step_gamma: float = 0.5
    label_smoothing: float = 0.0
    objective: str = "xe"            # xe: teacher-forced cross-entropy | scst: self-critical CIDEr-D training
    scst_samples: int = 5            # captions sampled per image by scst
    ema_decay: float = 0.0           # > 0: validate and save an exponential moving average of the weights
    feature_views: int = 1           # cached views per image: 1 = the plain centre crop, more = augmented
    fine_tune_encoder: bool = False  # train from images with the encoder unfrozen (no feature cache)
    encoder_lr: float = 1e-5
    encoder_batchnorm: str = "frozen"  # fine-tuning: frozen (stored statistics) | train (batch statistics)
    init_from: str = ""              # start from this checkpoint's weights (e.g. phase 2 fine-tuning)
    num_workers: int = 0             # image-reading processes (feature extraction, fine-tuning)
    extract_batch_size: int = 32
    val_method: str = "greedy"       # a deterministic decoding method (captioner.decoding.settings)
    val_beam_size: int = 3
    val_max_images: int = 0          # 0 = the whole val split
    val_metric: str = "CIDEr-D"
    early_stopping: int = 5          # stop after this many epochs without a better val_metric; 0 = never
    half_checkpoint: bool = False    # store weights as float16


VAL_METRICS = ("BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr-D")

# The largest learning rate a config may ask for. AdamW moves every weight by about lr per
# step whatever the gradient's scale (10 lr on the first step, its bias correction), and the
# weights start well below 1 in size: an lr of 10 already throws them far away in one step,
# so no useful run is near it (typical: 1e-5 to 1e-2). Huge finite values are not just
# useless: above about 3e38 (float32's limit) AdamW's update overflows with a traceback.
MAX_LR = 10.0


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    decode: DecodingSettings = field(default_factory=DecodingSettings)

    def to_dict(self) -> dict:
        return asdict(self)

    def validate(self) -> "Config":
        choices = {
            "data.format": (self.data.format, ("karpathy", "coco", "flickr8k", "generic")),
            "data.restval": (self.data.restval, ("train", "val", "test", "drop")),
            "train.lr_schedule": (self.train.lr_schedule, ("cosine", "step", "constant")),
            "train.val_method": (self.train.val_method, methods(deterministic=True)),
            "train.device": (self.train.device, ("auto", "cpu", "cuda")),
            "model.feature_norm": (self.model.feature_norm, ("none", "layernorm")),
            "train.objective": (self.train.objective, ("xe", "scst")),
            "train.encoder_batchnorm": (self.train.encoder_batchnorm, ("frozen", "train")),
            "train.val_metric": (self.train.val_metric, VAL_METRICS),
        }
        for key, (value, allowed) in choices.items():
            if value not in allowed:
                raise ConfigError(f"{key}: {_quote(value)} is not one of {', '.join(allowed)}")
        positive = {
            "train.epochs": self.train.epochs, "train.batch_size": self.train.batch_size,
            "train.feature_views": self.train.feature_views, "train.val_beam_size": self.train.val_beam_size,
            "data.min_word_count": self.data.min_word_count, "train.extract_batch_size": self.train.extract_batch_size,
        }
        for key, value in positive.items():
            if value < 1:
                raise ConfigError(f"{key} must be at least 1, got {value}")
        if self.train.objective == "scst" and (self.train.fine_tune_encoder or self.train.scst_samples < 2):
            raise ConfigError("train.objective scst needs train.scst_samples >= 2 and runs on cached features "
                              "(train.fine_tune_encoder false)")
        if not 0 <= self.train.ema_decay < 1:
            raise ConfigError(f"train.ema_decay must be in [0, 1), got {self.train.ema_decay}")
        for key, value in (("train.lr", self.train.lr), ("train.encoder_lr", self.train.encoder_lr)):
            if not 0 <= value <= MAX_LR:
                raise ConfigError(f"{key} must be in [0, {MAX_LR:g}] (AdamW moves each weight by about lr "
                                  f"per step), got {value:g}")
        if not 0 < self.train.step_gamma <= 1:
            raise ConfigError(f"train.step_gamma must be in (0, 1] (the step schedule multiplies the lr by it), "
                              f"got {self.train.step_gamma:g}")
        if self.train.step_epochs < 1 or self.train.warmup_steps < 0:
            raise ConfigError("train.step_epochs must be at least 1 and train.warmup_steps at least 0, got "
                              f"{self.train.step_epochs} and {self.train.warmup_steps}")
        if self.train.weight_decay < 0:
            raise ConfigError(f"train.weight_decay must be at least 0, got {self.train.weight_decay:g}")
        if not 0 <= self.train.label_smoothing < 1:
            raise ConfigError(f"train.label_smoothing must be in [0, 1), got {self.train.label_smoothing}")
        if self.data.val_fraction + self.data.test_fraction >= 1:
            raise ConfigError("data.val_fraction + data.test_fraction must be below 1")
        from .models.encoder import EncoderUnavailable, check_backbone

        try:
            check_backbone(self.model.encoder)
        except EncoderUnavailable as error:
            raise ConfigError(f"model.encoder: {error}") from None
        return self


def _type_name(tp) -> str:
    return getattr(tp, "__name__", str(tp)).replace("NoneType", "null")


def _check_value(key: str, value, tp):
    """Return ``value`` if it fits type ``tp`` (ints are accepted for floats), else raise."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        for option in typing.get_args(tp):
            try:
                return _check_value(key, value, option)
            except ConfigError:
                continue
        names = " or ".join(_type_name(t) for t in typing.get_args(tp))
        raise ConfigError(f"{key}: expected {names}, got {_quote(value)}")
    if tp is type(None):
        if value is None:
            return None
    elif tp is float:
        if (isinstance(value, (int, float)) and not isinstance(value, bool)) or (
            isinstance(value, str) and _looks_numeric(value)
        ):
            if not math.isfinite(float(value)):
                raise ConfigError(f"{key}: expected a finite number, got {value!r}")
            return float(value)
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is bool or tp is str:
        if isinstance(value, tp):
            return value
    raise ConfigError(f"{key}: expected {_type_name(tp)}, got {type(value).__name__} {_quote(value)}")


def _build(cls, data, prefix: str):
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'}: expected a mapping of keys, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in fields(cls)}
    kwargs = {}
    for key, value in data.items():
        full = prefix + (key if isinstance(key, str) and len(key) <= 60 else _quote(key))
        if key not in known:
            close = difflib.get_close_matches(str(key)[:100], sorted(known), n=1)
            hint = f" (did you mean {prefix}{close[0]}?)" if close else f"; known keys: {', '.join(sorted(known))}"
            raise ConfigError(f"unknown config key {full}{hint}")
        tp = hints[key]
        kwargs[key] = _build(tp, value, f"{full}.") if is_dataclass(tp) else _check_value(full, value, tp)
    try:
        return cls(**kwargs)
    except ValueError as error:  # a section that checks its own values (decode)
        raise ConfigError(f"{prefix.rstrip('.')}: {error}") from None


def config_from_dict(data: dict) -> Config:
    return _build(Config, data or {}, "").validate()


def load_config(path: str | Path | None, overrides: list[str] = ()) -> Config:
    """Read a YAML config (or start from the defaults) and apply ``key=value`` overrides."""
    data: dict = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        try:
            data = yaml.load(path.read_text(encoding="utf-8"), Loader=_StrictLoader)
        except yaml.YAMLError as error:
            raise ConfigError(f"{path}: not valid YAML ({str(error).splitlines()[0]})") from None
        except UnicodeDecodeError:
            raise ConfigError(f"{path}: not UTF-8 text; save the config as UTF-8") from None
        except ConfigError as error:
            raise ConfigError(f"{path}: {error}") from None
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise ConfigError(f"config {path}: expected a mapping of sections, got {type(data).__name__}")
    for override in overrides:
        key, sep, text = override.partition("=")
        if not sep or "." not in key:
            raise ConfigError(f"override {_quote(override)} must look like section.key=value, e.g. train.lr=3e-4")
        section, name = key.split(".", 1)
        try:
            value = yaml.safe_load(text) if text else ""
        except yaml.YAMLError:
            value = text
        if data.get(section) is None:  # absent, or "train:" with nothing under it
            data[section] = {}
        if not isinstance(data[section], dict):
            raise ConfigError(f"override {_quote(override)}: {section} is not a section")
        data[section][name] = value
    try:
        return config_from_dict(data)
    except ConfigError as error:
        raise ConfigError(f"{path}: {error}" if path is not None else str(error)) from None


def _looks_numeric(text: str) -> bool:
    """YAML 1.1 reads "3e-4" as a string; accept it as the number it obviously is."""
    try:
        float(text)
    except ValueError:
        return False
    return True
