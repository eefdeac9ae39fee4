"""Transformation robustness: small random changes applied to the image at every step.

An image that excites a unit only at one exact position, scale and angle is mostly
high-frequency noise; asking it to work under random padding, shifts, scales and
rotations makes the optimisation find patterns the network really responds to.

Each transform splits into :meth:`Transform.sample` (draw the random parameters from a
``torch.Generator``, so a seed fixes the whole run) and :meth:`Transform.apply` (a
deterministic, differentiable function of the images and those parameters). All images
of a batch get the same parameters, so an image does not depend on its batch mates.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F


class Transform:
    def sample(self, generator: torch.Generator) -> tuple:
        return ()

    def apply(self, images: torch.Tensor, *params) -> torch.Tensor:
        raise NotImplementedError

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return self.apply(images, *self.sample(generator))


class _OneOf(Transform):
    """A transform whose one parameter is drawn uniformly from a list of options."""

    def __init__(self, options: Sequence[float]):
        self.options = list(options)

    def sample(self, generator: torch.Generator) -> tuple:
        return (self.options[int(torch.randint(len(self.options), (1,), generator=generator))],)


class Pad(Transform):
    """Pad every side by ``width`` pixels of a constant grey, so that jitter and rotation
    do not always cut off the image's border."""

    def __init__(self, width: int, value: float = 0.5):
        self.width, self.value = width, value

    def apply(self, images: torch.Tensor) -> torch.Tensor:
        return F.pad(images, [self.width] * 4, value=self.value)


class Jitter(Transform):
    """A random crop that is ``d`` pixels smaller in each direction: a shift of the
    content by up to ``d`` pixels. ``apply(x, dx, dy)`` keeps columns dx .. W-d+dx-1
    and rows dy .. H-d+dy-1."""

    def __init__(self, d: int):
        self.d = d

    def sample(self, generator: torch.Generator) -> tuple:
        dx, dy = torch.randint(self.d + 1, (2,), generator=generator).tolist()
        return dx, dy

    def apply(self, images: torch.Tensor, dx: int, dy: int) -> torch.Tensor:
        if not (0 <= dx <= self.d and 0 <= dy <= self.d):
            raise ValueError(f"jitter offsets must be in 0..{self.d}, got ({dx}, {dy})")
        height, width = images.shape[-2:]
        return images[..., dy:dy + height - self.d, dx:dx + width - self.d]


class RandomScale(_OneOf):
    """Resize by a factor drawn from the options (bilinear, pixel centres aligned as in
    ``F.interpolate(align_corners=False)``)."""

    def apply(self, images: torch.Tensor, scale: float) -> torch.Tensor:
        if scale == 1:
            return images
        height, width = images.shape[-2:]
        size = (max(1, round(height * scale)), max(1, round(width * scale)))
        return F.interpolate(images, size=size, mode="bilinear", align_corners=False)


class RandomRotate(_OneOf):
    """Rotate about the image centre by an angle drawn from the options (degrees,
    counter-clockwise as seen on screen); pixels from outside repeat the border."""

    def apply(self, images: torch.Tensor, angle: float) -> torch.Tensor:
        if angle == 0:
            return images
        radians = math.radians(angle)
        cos, sin = math.cos(radians), math.sin(radians)
        height, width = images.shape[-2:]
        # affine_grid works in [-1, 1] coordinates per axis; the aspect factors keep the
        # rotation a rotation on non-square images. Output pixel p samples input R(-angle) p
        # in screen coordinates (y down), which turns the content counter-clockwise.
        theta = torch.tensor([[cos, -sin * height / width, 0.0], [sin * width / height, cos, 0.0]],
                             dtype=images.dtype, device=images.device)
        grid = F.affine_grid(theta.expand(images.shape[0], 2, 3), list(images.shape), align_corners=False)
        return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


class Compose(Transform):
    """Apply transforms in order, each drawing its own parameters."""

    def __init__(self, transforms: Sequence[Transform]):
        self.transforms = list(transforms)

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        for transform in self.transforms:
            images = transform(images, generator)
        return images


def standard_transforms() -> Compose:
    """The robustness transforms of Lucid's ``standard_transforms``: pad 12, jitter 8,
    scale 0.9..1.1, rotate -10..10 degrees (0 more often), jitter 4."""
    return Compose([
        Pad(12),
        Jitter(8),
        RandomScale([1 + (i - 5) / 50 for i in range(11)]),
        RandomRotate(list(range(-10, 11)) + [0] * 5),
        Jitter(4),
    ])
