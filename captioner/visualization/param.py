"""Image parameterisations: how the optimised image is represented.

An :class:`ImageParam` is a module whose parameters are what the optimiser changes and
whose ``forward()`` returns a batch of RGB images in [0, 1], shape (B, 3, H, W). The
representation matters as much as the objective (Olah et al., "Feature Visualization",
Distill 2017): gradient steps on plain pixels are dominated by high frequencies, while
a spectrum scaled by 1/frequency gives every frequency a comparable step, and
decorrelated colour channels keep colours natural. Both end in a sigmoid, so any
parameter value is a valid image.

Each image of a batch is initialised from its own seed, so an image does not depend
on which other images share its batch.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

# Square root of the colour covariance of ImageNet images (RGB), as published with Lucid,
# scaled so that its largest column has norm 1: a parameter step of size 1 in any
# "decorrelated" channel moves the RGB values by at most 1.
_COLOR_SQRT = torch.tensor([[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]])
COLOR_CORRELATION = _COLOR_SQRT / _COLOR_SQRT.norm(dim=0).max()

# Logit of pixels is clamped here, so that setting pixels of exactly 0 or 1 stays finite.
_EPS = 1e-4


def _mix_colors(images: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
    """Apply a 3x3 colour matrix to every pixel of (B, 3, H, W) images."""
    return torch.einsum("dc,bchw->bdhw", matrix.to(images), images)


def _initial(shape: Sequence[int], seeds: Sequence[int], sd: float) -> torch.Tensor:
    """Normal noise of std ``sd``, one independent generator per image (first axis)."""
    return torch.stack([
        torch.randn(tuple(shape[1:]), generator=torch.Generator().manual_seed(int(seed))) * sd
        for seed in seeds
    ])


class ImageParam(nn.Module):
    """Base class: a batch of images in [0, 1] made from learnable parameters.

    Subclasses define :meth:`raw` (parameters -> unbounded, possibly decorrelated colour
    values) and :meth:`set_raw` (its inverse); the colour mixing and sigmoid are shared.
    """

    def __init__(self, batch: int, size: int | tuple[int, int], decorrelate: bool = True):
        super().__init__()
        self.batch = batch
        self.size = (size, size) if isinstance(size, int) else tuple(size)
        self.decorrelate = decorrelate

    def forward(self) -> torch.Tensor:
        raw = self.raw()
        if self.decorrelate:
            raw = _mix_colors(raw, COLOR_CORRELATION)
        return torch.sigmoid(raw)

    @torch.no_grad()
    def set_pixels(self, pixels: torch.Tensor) -> None:
        """Make the parameterisation produce ``pixels`` (B, 3, H, W in [0, 1]).

        Used to start from a photo, to carry an image from one octave to the next and
        to blur it during the optimisation.
        """
        if tuple(pixels.shape) != (self.batch, 3, *self.size):
            raise ValueError(f"expected pixels of shape {(self.batch, 3, *self.size)}, got {tuple(pixels.shape)}")
        raw = torch.logit(pixels.clamp(_EPS, 1 - _EPS))
        if self.decorrelate:
            raw = _mix_colors(raw, torch.linalg.inv(COLOR_CORRELATION))
        self.set_raw(raw)

    def raw(self) -> torch.Tensor:
        raise NotImplementedError

    def set_raw(self, raw: torch.Tensor) -> None:
        raise NotImplementedError


class PixelParam(ImageParam):
    """One parameter per pixel and channel."""

    def __init__(self, batch: int, size: int | tuple[int, int], seeds: Sequence[int] | None = None,
                 sd: float = 0.01, decorrelate: bool = True):
        super().__init__(batch, size, decorrelate)
        seeds = range(batch) if seeds is None else seeds
        self.pixels = nn.Parameter(_initial((batch, 3, *self.size), seeds, sd))

    def raw(self) -> torch.Tensor:
        return self.pixels

    def set_raw(self, raw: torch.Tensor) -> None:
        self.pixels.copy_(raw)


def spectrum_scale(height: int, width: int, decay_power: float = 1.0) -> torch.Tensor:
    """1 / frequency ** decay_power for the (height, width // 2 + 1) real-FFT grid.

    Frequencies are in cycles per pixel; the lowest (and the constant term) are capped
    at 1 / max(height, width), so the scale is at most the image's longer side.
    """
    fy = torch.fft.fftfreq(height).view(-1, 1)
    fx = torch.fft.rfftfreq(width).view(1, -1)
    frequency = torch.sqrt(fx * fx + fy * fy).clamp(min=1.0 / max(height, width))
    return frequency.pow(-decay_power)


class FourierParam(ImageParam):
    """Parameters are the real and imaginary parts of each image's 2-D spectrum, scaled by
    1/frequency, so that low and high frequencies change at similar rates."""

    # Lucid divides the inverse FFT by 4 so that a spectrum of std 0.01 gives a gentle start.
    _DAMPING = 4.0

    def __init__(self, batch: int, size: int | tuple[int, int], seeds: Sequence[int] | None = None,
                 sd: float = 0.01, decay_power: float = 1.0, decorrelate: bool = True):
        super().__init__(batch, size, decorrelate)
        height, width = self.size
        self.register_buffer("scale", spectrum_scale(height, width, decay_power), persistent=False)
        seeds = range(batch) if seeds is None else seeds
        self.spectrum = nn.Parameter(_initial((batch, 3, height, width // 2 + 1, 2), seeds, sd))

    def raw(self) -> torch.Tensor:
        spectrum = torch.view_as_complex(self.spectrum) * self.scale
        return torch.fft.irfft2(spectrum, s=self.size, norm="ortho") / self._DAMPING

    def set_raw(self, raw: torch.Tensor) -> None:
        spectrum = torch.fft.rfft2(raw * self._DAMPING, norm="ortho") / self.scale
        self.spectrum.copy_(torch.view_as_real(spectrum))


PARAMETERISATIONS = {"fourier": FourierParam, "pixel": PixelParam}


def make_param(kind: str, batch: int, size: int | tuple[int, int], seeds: Sequence[int] | None = None,
               decorrelate: bool = True) -> ImageParam:
    """``fourier`` (the default of Lucid and lucent) or ``pixel``."""
    if kind not in PARAMETERISATIONS:
        raise ValueError(f"unknown image parameterisation {kind!r}; choose one of {sorted(PARAMETERISATIONS)}")
    return PARAMETERISATIONS[kind](batch, size, seeds=seeds, decorrelate=decorrelate)
