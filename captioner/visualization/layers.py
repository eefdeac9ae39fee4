"""Naming the parts of a network: its layers (for filters).

A layer is addressed by its module path inside the :class:`ImageEncoder` (``body.3.1``,
``head``) or by a friendly name: the module's name in the torchvision model it came from
(``features.3.1``, ``layer4.2``), the names of the literature for VGG (``conv1_1`` ..
``conv5_3``, ``relu3_2``, ``pool4``, ``fc6``, ``fc7``) and ``logits`` for the classifier.
Any module path works; :func:`list_layers` lists the ones worth looking at.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import ArgumentError
from ..models.encoder import ImageEncoder
from .objectives import INPUT, LOGITS

# Where each family's body came from in the torchvision model (see models.encoder._split).
_BODY_NAMES = {
    ("resnet", "resnext", "wide_resnet"): ["conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4"],
    ("regnet",): ["stem", "trunk_output"],
    ("densenet",): ["features", "relu"],
}
_BODY_PREFIX = {("mnasnet",): "layers"}


@dataclass(frozen=True)
class LayerInfo:
    path: str  # module path in the encoder, e.g. "body.3.1"
    name: str  # friendly name, e.g. "features.3.1" or "conv4_2"
    kind: str  # module class name
    shape: tuple[int, ...]  # output shape for one image at the encoder's crop size

    @property
    def channels(self) -> int:
        return self.shape[0]


def _candidate_paths(encoder: ImageEncoder) -> list[str]:
    """Body children (the blocks instead of plain Sequential stages, whose output is their
    last block's), the neck's Linear layers and the head: the granularity at which
    people usually look at a CNN."""
    paths = []
    for name, child in encoder.body.named_children():
        if type(child) is nn.Sequential:
            paths.extend(f"body.{name}.{sub}" for sub, _ in child.named_children())
        else:
            paths.append(f"body.{name}")
    paths.extend(f"neck.{name}" for name, m in encoder.neck.named_children() if isinstance(m, nn.Linear))
    if encoder.head is not None:
        paths.append("head")
    return paths


def _vgg_names(encoder: ImageEncoder) -> dict[str, str]:
    names, block, conv = {}, 1, 0
    for name, module in encoder.body.named_children():
        if isinstance(module, nn.Conv2d):
            conv += 1
            names[f"body.{name}"] = f"conv{block}_{conv}"
        elif isinstance(module, nn.ReLU) and conv:
            names[f"body.{name}"] = f"relu{block}_{conv}"
        elif isinstance(module, nn.MaxPool2d):
            names[f"body.{name}"] = f"pool{block}"
            block, conv = block + 1, 0
    linears = [f"neck.{n}" for n, m in encoder.neck.named_children() if isinstance(m, nn.Linear)]
    names.update({path: f"fc{6 + i}" for i, path in enumerate(linears)})
    return names


def _torchvision_name(backbone: str, path: str) -> str | None:
    if not path.startswith("body."):
        return None
    first, _, rest = path[len("body."):].partition(".")
    for families, names in _BODY_NAMES.items():
        if backbone.startswith(families):
            base = names[int(first)] if first.isdigit() and int(first) < len(names) else None
            return None if base is None else base + (f".{rest}" if rest else "")
    for families, prefix in _BODY_PREFIX.items():
        if backbone.startswith(families):
            return f"{prefix}.{path[len('body.'):]}"
    return f"features.{path[len('body.'):]}"


def friendly_names(encoder: ImageEncoder) -> dict[str, list[str]]:
    """Module path -> its other names, the preferred one first."""
    backbone = encoder.spec.backbone
    names: dict[str, list[str]] = {}
    vgg = _vgg_names(encoder) if backbone.startswith("vgg") else {}
    for path, _ in encoder.named_modules():
        aliases = [vgg[path]] if path in vgg else []
        tv = _torchvision_name(backbone, path)
        if tv is not None:
            aliases.append(tv)
        if path == "head":
            aliases.append(LOGITS)
        if aliases:
            names[path] = aliases
    return names


def resolve_layer(encoder: ImageEncoder, name: str) -> str:
    """The module path of a layer given by path or friendly name; a clear error otherwise."""
    if name == INPUT:
        return INPUT
    modules = dict(encoder.named_modules())
    if name in modules and name:
        return name
    aliases = {alias: path for path, names in friendly_names(encoder).items() for alias in names}
    if name in aliases:
        if aliases[name] not in modules:
            raise ArgumentError(f"layer {name!r} does not exist in this {encoder.spec.backbone} encoder")
        return aliases[name]
    listed = [info for path in _candidate_paths(encoder) for info in [path, *friendly_names(encoder).get(path, [])]]
    close = difflib.get_close_matches(name, listed + [p for p in modules if p], n=5, cutoff=0.5)
    hint = f"; did you mean {', '.join(close)}?" if close else f"; for example {', '.join(listed[:6])}"
    raise ArgumentError(
        f"unknown layer {name!r} in {encoder.spec.backbone}{hint} "
        "(`captioner visualize layers` lists them all)"
    )


class _StopForward(Exception):
    """Raised by a hook once every layer the objective needs has been recorded."""


class LayerRecorder:
    """Forward hooks that record the outputs of some layers of the encoder.

    ``recorder(pixels)`` runs the encoder and returns {layer name: output}. The forward
    pass stops as soon as the last layer needed has its output, so looking at early
    layers costs only the early layers.
    """

    def __init__(self, encoder: ImageEncoder, layers: Sequence[str]):
        self.encoder = encoder
        self.paths = {name: resolve_layer(encoder, name) for name in layers if name != INPUT}
        self.acts: dict[str, torch.Tensor] = {}
        self.hooks = []

    def __enter__(self) -> "LayerRecorder":
        for path in set(self.paths.values()):
            self.hooks.append(self.encoder.get_submodule(path).register_forward_hook(self._hook(path)))
        return self

    def __exit__(self, *exc) -> None:
        for hook in self.hooks:
            hook.remove()

    def _hook(self, path: str):
        def record(module, args, output):
            if path in self.acts:  # a module used twice: keep its first output
                return None
            self.acts[path] = output
            if len(self.acts) == len(set(self.paths.values())):
                raise _StopForward
            # a copy goes on, so that an in-place activation next does not change what we keep
            return output.clone()
        return record

    def __call__(self, pixels: torch.Tensor) -> dict[str, torch.Tensor]:
        self.acts = {}
        if not self.paths:
            return {}
        try:
            self.encoder.classify(pixels) if self.encoder.head is not None else self.encoder(pixels)
        except _StopForward:
            pass
        missing = [name for name, path in self.paths.items() if path not in self.acts]
        if missing:
            raise ArgumentError(f"layer {missing[0]} is not used in the forward pass of {self.encoder.spec.backbone}")
        return {name: self.acts[path] for name, path in self.paths.items()}


@torch.no_grad()
def output_shapes(encoder: ImageEncoder, paths: list[str], size: int | None = None) -> dict[str, tuple[int, ...]]:
    """Output shape (without the batch axis) of each layer for one image of ``size``
    pixels (default: the encoder's crop size)."""
    size = size or encoder.preprocessing.crop_size
    with LayerRecorder(encoder, paths) as recorder:
        acts = recorder(torch.full((1, 3, size, size), 0.5, device=encoder.mean.device))
    return {path: tuple(output.shape[1:]) for path, output in acts.items()}


def list_layers(encoder: ImageEncoder) -> list[LayerInfo]:
    """The layers worth visualising, in forward order, with shapes at the crop size."""
    paths = _candidate_paths(encoder)
    shapes = output_shapes(encoder, paths)
    names = friendly_names(encoder)
    return [
        LayerInfo(path, names.get(path, [path])[0], type(encoder.get_submodule(path)).__name__, shapes[path])
        for path in paths if path in shapes
    ]


def check_channels(encoder: ImageEncoder, layer: str, channels: list[int]) -> None:
    """Raise a ValueError naming the layer's channel count if a channel is out of range."""
    path = resolve_layer(encoder, layer)
    count = output_shapes(encoder, [path], size=64)[path][0]  # the channel count does not depend on the size
    bad = [c for c in channels if not 0 <= c < count]
    if bad:
        raise ArgumentError(f"layer {layer} has {count} channels (0..{count - 1}); channel {bad[0]} is outside it")
