"""Training-time augmentation applied before the shared preprocessing."""

from __future__ import annotations

import math

import torch


def random_view(image: torch.Tensor, generator: torch.Generator, scale: tuple[float, float] = (0.5, 1.0),
                ratio: tuple[float, float] = (3 / 4, 4 / 3), flip: bool = True) -> torch.Tensor:
    """A random crop (covering ``scale`` of the area, aspect ``ratio``), maybe mirrored.

    ``image`` is (3, H, W); the crop is returned at its own size, and the shared
    preprocessing then resizes it like any other image.
    """
    height, width = image.shape[-2:]
    area = height * width

    def uniform(low: float, high: float) -> float:
        return low + (high - low) * float(torch.rand((), generator=generator))

    for _ in range(10):
        target = area * uniform(*scale)
        aspect = math.exp(uniform(math.log(ratio[0]), math.log(ratio[1])))
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top = int(torch.randint(0, height - h + 1, (), generator=generator))
            left = int(torch.randint(0, width - w + 1, (), generator=generator))
            break
    else:  # fall back to the whole image
        top, left, h, w = 0, 0, height, width
    view = image[..., top:top + h, left:left + w]
    if flip and float(torch.rand((), generator=generator)) < 0.5:
        view = view.flip(-1)
    return view
