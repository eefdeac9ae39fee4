"""Turning rendered images into pictures: labelled grids and first-layer kernels.

The 8-bit conversions and PNG writing are :mod:`captioner.data.eightbit`'s."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from PIL import Image, ImageDraw, ImageFont
from torch import nn

from ..data.eightbit import to_pil
from ..models.encoder import ImageEncoder

BACKGROUND = (255, 255, 255)
LABEL_COLOUR = (0, 0, 0)


def labelled_grid(images: torch.Tensor, labels: Sequence[str] | None = None, columns: int | None = None,
                  tile: int | None = None, gap: int = 4) -> Image.Image:
    """Images (B, 3, H, W) side by side in rows, each with its label underneath.

    ``columns`` defaults to a near-square grid; ``tile`` resizes each image to that many
    pixels wide (nearest neighbour, so small kernels stay crisp).
    """
    count = images.shape[0]
    if labels is not None and len(labels) != count:
        raise ValueError(f"{len(labels)} labels for {count} images")
    columns = columns or math.ceil(math.sqrt(count))
    rows = math.ceil(count / columns)
    tiles = [to_pil(image) for image in images]
    if tile:
        tiles = [t.resize((tile, round(tile * t.height / t.width)), Image.NEAREST) for t in tiles]
    width, height = tiles[0].size
    font = ImageFont.load_default()
    label_height = 0
    if labels:
        label_height = max(font.getbbox(text)[3] for text in labels) + 4
    sheet = Image.new("RGB", (columns * (width + gap) + gap, rows * (height + label_height + gap) + gap), BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    for i, image in enumerate(tiles):
        row, col = divmod(i, columns)
        x, y = gap + col * (width + gap), gap + row * (height + label_height + gap)
        sheet.paste(image, (x, y))
        if labels:
            text = _fit(labels[i], font, width)
            draw.text((x, y + height + 1), text, fill=LABEL_COLOUR, font=font)
    return sheet


def _fit(text: str, font, width: int) -> str:
    """The label, shortened with an ellipsis until it fits under its tile."""
    if font.getlength(text) <= width:
        return text
    while text and font.getlength(text + "…") > width:
        text = text[:-1]
    return text + "…"


def first_conv(encoder: ImageEncoder) -> tuple[str, nn.Conv2d]:
    """The first convolution of the encoder's body that sees the RGB image."""
    for path, module in encoder.body.named_modules():
        if isinstance(module, nn.Conv2d):
            if module.in_channels != 3:
                break
            return f"body.{path}", module
    raise ValueError(f"the {encoder.spec.backbone} encoder does not start with a convolution on RGB pixels")


def kernel_images(weight: torch.Tensor) -> torch.Tensor:
    """First-layer kernels (out, 3, k, k) as RGB patches in [0, 1]: each kernel scaled on
    its own so that 0 is mid-grey and its largest absolute weight reaches 0 or 1."""
    weight = weight.detach().float()
    peak = weight.abs().flatten(1).amax(dim=1).clamp(min=1e-12).view(-1, 1, 1, 1)
    return 0.5 + 0.5 * weight / peak
