"""Pixels in [0, 1] as an 8-bit image stores them: the one place that rounds to 256 levels.

Two roundings with different purposes:

* :func:`round_to_levels`: the nearest of the 256 levels, as a PNG stores the image, so a
  measurement on the result matches what is read back from the file (visualisation);
* :func:`round_within_eps`: the nearest level that stays within ``eps`` of the original
  image, so an adversarial image keeps its size bound after saving (attacks).

:func:`to_uint8`, :func:`to_pil` and :func:`save_png` turn pixels into bytes and files.
"""

from __future__ import annotations

import io
import os

import numpy as np
import torch
from PIL import Image

from ..errors import ArgumentError
from ..fileio import atomic_write

LEVELS = 255  # an 8-bit image has 256 levels per channel: 0 .. 255


def to_uint8(pixels: torch.Tensor) -> torch.Tensor:
    """Pixels in [0, 1] (any shape) as uint8 levels 0..255; values outside [0, 1] are clamped."""
    return pixels.detach().clamp(0, 1).mul(LEVELS).round().to(torch.uint8)


def round_to_levels(pixels: torch.Tensor) -> torch.Tensor:
    """Pixels in [0, 1] rounded to the 256 levels a PNG stores (still floats in [0, 1])."""
    return pixels.detach().clamp(0, 1).mul(LEVELS).round().div(LEVELS)


def round_within_eps(adversarial: torch.Tensor, images: torch.Tensor, eps: float) -> torch.Tensor:
    """Round to 8-bit levels without leaving the L-inf ball of radius ``eps`` around ``images``.

    Each pixel goes to the nearest level that lies within ``eps`` of ``images`` (for
    8-bit inputs the saved image therefore differs from the input by at most ``eps``;
    for other inputs, when no level is that close, by at most 1/255).
    """
    low = torch.ceil((images - eps) * LEVELS - 1e-3).clamp(min=0)
    high = torch.floor((images + eps) * LEVELS + 1e-3).clamp(max=LEVELS)
    return torch.clamp((adversarial * LEVELS).round(), low, high) / LEVELS


def to_pil(pixels: torch.Tensor) -> Image.Image:
    """One (3, H, W) image in [0, 1], on any device, as an 8-bit RGB PIL image."""
    if pixels.ndim != 3 or pixels.shape[0] != 3:
        raise ArgumentError(f"expected one image of shape (3, H, W), got {tuple(pixels.shape)}")
    array = to_uint8(pixels).permute(1, 2, 0).cpu().numpy()
    return Image.fromarray(np.ascontiguousarray(array), mode="RGB")


def save_png(image: Image.Image | torch.Tensor, path: str | os.PathLike) -> None:
    """Write a PIL image, or one (3, H, W) image in [0, 1], as a PNG, atomically
    (temporary file + rename): same image, same bytes."""
    if isinstance(image, torch.Tensor):
        image = to_pil(image)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    atomic_write(path, lambda handle: handle.write(buffer.getvalue()), binary=True)
