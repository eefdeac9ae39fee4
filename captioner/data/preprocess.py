"""The one image preprocessing of captioner: from an RGB image to the encoder's input.

Every encoder carries a :class:`Preprocessing` (resize, centre crop, normalisation).
:func:`preprocess` applies the geometric part (resize the shorter side, centre
crop) and returns pixels in [0, 1]; the normalisation (mean/std) is applied inside
the encoder itself (:class:`captioner.models.encoder.ImageEncoder`). Keeping the
normalisation in the model means that attacks and visualisations work in plain
pixel space, and that training, captioning, visualisation and attacks cannot
drift apart: they all call :func:`preprocess`.

It computes in float32 whatever the input: an 8-bit image and the same levels as floats
(``k / 255``) give exactly the same pixels, so what an attack or a class visualisation
reports for a saved PNG is what reading that PNG back gives. On float tensors the
function is differentiable (antialiased bilinear resize), so an attack can perturb a
user's own full-size pixels.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
from PIL import Image
from torchvision.transforms.v2 import functional as F

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

_INTERPOLATIONS = {
    "bilinear": F.InterpolationMode.BILINEAR,
    "bicubic": F.InterpolationMode.BICUBIC,
    "nearest": F.InterpolationMode.NEAREST,
}


@dataclass(frozen=True)
class Preprocessing:
    """How an encoder wants its images: shorter side resized to ``resize_size``,
    centre-cropped to ``crop_size`` square, normalised with ``mean``/``std``
    (applied to pixels in [0, 1])."""

    resize_size: int = 256
    crop_size: int = 224
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    interpolation: str = "bilinear"

    def __post_init__(self):
        if self.crop_size <= 0 or self.resize_size < self.crop_size:
            raise ValueError(
                f"preprocessing needs 0 < crop_size <= resize_size, got crop_size={self.crop_size}, "
                f"resize_size={self.resize_size}"
            )
        if self.interpolation not in _INTERPOLATIONS:
            raise ValueError(
                f"unknown interpolation {self.interpolation!r}; choose one of {sorted(_INTERPOLATIONS)}"
            )
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ValueError(f"mean and std need three values each (std > 0), got {self.mean}, {self.std}")
        object.__setattr__(self, "mean", tuple(float(v) for v in self.mean))
        object.__setattr__(self, "std", tuple(float(v) for v in self.std))

    def to_dict(self) -> dict:
        return {**asdict(self), "mean": list(self.mean), "std": list(self.std)}

    @classmethod
    def from_dict(cls, data: dict) -> "Preprocessing":
        return cls(**{**data, "mean": tuple(data["mean"]), "std": tuple(data["std"])})


def pil_to_tensor(image: Image.Image) -> torch.Tensor:
    """An RGB PIL image as a uint8 tensor of shape (3, H, W)."""
    if image.mode != "RGB":
        raise ValueError(f"expected an RGB image, got mode {image.mode!r}; read images with load_image()")
    array = np.asarray(image, dtype=np.uint8)
    return torch.from_numpy(array.copy()).permute(2, 0, 1)


def preprocess(image: Image.Image | torch.Tensor, spec: Preprocessing) -> torch.Tensor:
    """Resize and centre-crop one image (or a batch of same-sized images).

    ``image`` is an RGB PIL image, a uint8 tensor (values 0..255) or a float tensor
    (values in [0, 1]) of shape (3, H, W) or (B, 3, H, W). Returns float32 pixels
    in [0, 1] of shape (..., 3, crop_size, crop_size). Float inputs stay
    differentiable.
    """
    if isinstance(image, Image.Image):
        image = pil_to_tensor(image)
    if not isinstance(image, torch.Tensor):
        raise TypeError(f"expected a PIL image or a tensor, got {type(image).__name__}")
    if image.ndim not in (3, 4) or image.shape[-3] != 3:
        raise ValueError(f"expected an image tensor of shape (3, H, W) or (B, 3, H, W), got {tuple(image.shape)}")
    if image.dtype == torch.uint8:
        # in the default layout: an image from pil_to_tensor is a (3, H, W) view of (H, W, 3)
        # pixels, and the resize is faster on contiguous channels (the same values either way)
        image = image.to(torch.float32, memory_format=torch.contiguous_format).div_(255.0)
    elif not image.is_floating_point():
        raise TypeError(f"expected uint8 or float pixels, got {image.dtype}")
    resized = F.resize(
        image.float(),
        [spec.resize_size],
        interpolation=_INTERPOLATIONS[spec.interpolation],
        antialias=True,
    )
    return F.center_crop(resized, [spec.crop_size, spec.crop_size]).clamp(0.0, 1.0)


def normalize(pixels: torch.Tensor, spec: Preprocessing) -> torch.Tensor:
    """Apply the encoder's mean/std normalisation to pixels in [0, 1]."""
    mean = torch.tensor(spec.mean, dtype=pixels.dtype, device=pixels.device).view(3, 1, 1)
    std = torch.tensor(spec.std, dtype=pixels.dtype, device=pixels.device).view(3, 1, 1)
    return (pixels - mean) / std
