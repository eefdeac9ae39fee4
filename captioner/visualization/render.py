"""The optimisation loop: make images that maximise an objective.

Every step: the parameterisation makes the batch of images, the robustness transforms
change them at random, the encoder's preprocessing (optionally) and normalisation turn
them into network input, forward hooks record the layers the objective reads, and Adam
takes one step up the objective's gradient. The forward pass stops at the last layer
the objective needs, so early layers are cheap.

Images of a batch never interact (the network is in eval mode, the objective is a sum
of per-image values, the transforms are shared and each image has its own initial seed),
so a batch of 16 channels gives the same 16 images as 16 separate runs, in one
forward/backward per step. On a CPU, rendering first tunes the allocator
(:func:`captioner.runtime.tune_allocator`): a batch's activations are tens of megabytes,
which glibc would otherwise map and zero afresh at every step, making a batch of 16
slower than 16 separate runs.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, fields, replace

import torch
from torchvision.transforms.v2 import functional as TF
from tqdm import tqdm

from ..data.eightbit import round_to_levels
from ..data.preprocess import preprocess
from ..errors import ArgumentError
from ..models.encoder import ImageEncoder
from ..runtime import tune_allocator
from .layers import LayerRecorder
from .objectives import INPUT, Objective, l2, total_variation
from .param import ImageParam, make_param
from .transform import Compose, Transform, standard_transforms

# The largest Adam learning rate: Adam moves every optimised value by about lr per step, and
# the pixels (or their spectrum) are of size about 1, so larger steps only throw them about.
MAX_LR = 10.0


@dataclass(frozen=True)
class RenderSettings:
    """How to render. ``size`` None means the encoder's crop size. ``preprocess`` passes
    each transformed image through the encoder's own resize + centre crop (as a saved
    PNG would be read for classification). ``octaves`` > 1 optimises first at smaller
    sizes (each ``octave_scale`` times smaller), splitting ``steps`` evenly."""

    steps: int = 128
    size: int | None = 128
    lr: float = 0.05
    param: str = "fourier"
    decorrelate: bool = True
    transforms: bool = True
    preprocess: bool = False
    l2: float = 0.0
    tv: float = 0.0
    blur_every: int = 0
    blur_sigma: float = 0.5
    octaves: int = 1
    octave_scale: float = 1.4
    seed: int = 0
    progress: bool = True

    def __post_init__(self):
        if self.steps < 1:
            raise ArgumentError(f"steps must be at least 1, got {self.steps}")
        if self.size is not None and self.size < 16:
            raise ArgumentError(f"image size must be at least 16 pixels, got {self.size}")
        if not 0 < self.lr <= MAX_LR:  # Adam moves each value by about lr per step; pixels lie in [0, 1]
            raise ArgumentError(f"learning rate must be in (0, {MAX_LR:g}], got {self.lr}")
        if self.octaves < 1 or self.blur_every < 0:
            raise ArgumentError("octaves must be at least 1 and blur_every at least 0")

    def with_options(self, **options) -> "RenderSettings":
        """A copy with some settings changed."""
        known = {f.name for f in fields(self)}
        unknown = set(options) - known
        if unknown:
            raise TypeError(f"unknown render settings: {sorted(unknown)}; known: {sorted(known)}")
        return replace(self, **options)

    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "progress"}


@dataclass
class RenderResult:
    images: torch.Tensor  # (B, 3, H, W) in [0, 1], on the encoder's device
    values: list[float]  # the objective of each image, evaluated once more without transforms


def _full_objective(objective: Objective, settings: RenderSettings) -> Objective:
    if settings.l2:
        objective = objective - settings.l2 * l2()
    if settings.tv:
        objective = objective - settings.tv * total_variation()
    return objective


def _octave_sizes(settings: RenderSettings, size: int) -> list[int]:
    """Image sizes from the smallest octave up to ``size``."""
    return [max(16, round(size / settings.octave_scale ** i)) for i in reversed(range(settings.octaves))]


def render(encoder: ImageEncoder, objective: Objective, batch: int = 1, settings: RenderSettings | None = None,
           seeds: Sequence[int] | None = None, init: torch.Tensor | None = None,
           transforms: Transform | None = None) -> RenderResult:
    """Optimise a batch of images for ``objective``.

    ``seeds`` gives each image its initial noise (default: ``settings.seed + i``);
    ``init`` (B, 3, H, W in [0, 1]) starts from given pixels instead, e.g. a photo for
    DeepDream; ``transforms`` replaces the standard robustness transforms.

    The loop runs on the encoder's device and the images come back there. The random
    draws (initial noise, transform parameters) come from CPU generators, so a seed
    gives the same start on every device.
    """
    settings = settings or RenderSettings()
    size = settings.size or encoder.preprocessing.crop_size
    seeds = list(seeds) if seeds is not None else [settings.seed + i for i in range(batch)]
    if len(seeds) != batch:
        raise ArgumentError(f"{len(seeds)} seeds for a batch of {batch} images")
    if transforms is None:
        transforms = standard_transforms() if settings.transforms else Compose([])
    full = _full_objective(objective, settings)
    generator = torch.Generator().manual_seed(settings.seed)
    sizes = _octave_sizes(settings, size)
    step_counts = [settings.steps // len(sizes) + (i < settings.steps % len(sizes)) for i in range(len(sizes))]
    device = encoder.mean.device
    if device.type == "cpu":
        tune_allocator()
    was_training = encoder.training
    encoder.eval()
    images = None
    try:
        with _out_of_place(encoder), LayerRecorder(encoder, full.layers) as recorder, \
                tqdm(total=settings.steps, unit="step", disable=not settings.progress, file=sys.stderr,
                     desc=objective.name[:40], leave=False) as progress:
            for octave_size, count in zip(sizes, step_counts):
                param = make_param(settings.param, batch, octave_size, seeds, settings.decorrelate).to(device)
                start = init if images is None else images
                if start is not None:
                    param.set_pixels(TF.resize(start.to(device), [octave_size, octave_size], antialias=True))
                _optimise(param, full, recorder, transforms, generator, encoder, settings, count, progress)
                images = param().detach()
        values = evaluate(encoder, objective, images, settings.preprocess)
    finally:
        encoder.train(was_training)
    return RenderResult(images=images, values=values.tolist())


@contextmanager
def _out_of_place(encoder: ImageEncoder) -> Iterator[None]:
    """Run the encoder's in-place activations (``ReLU6(inplace=True)``...) out of place
    for a while. Same values, but under autograd an in-place activation first clones
    its input for the backward pass: one more copy of every activation at every step."""
    modules = [m for m in encoder.modules() if getattr(m, "inplace", None) is True]
    for module in modules:
        module.inplace = False
    try:
        yield
    finally:
        for module in modules:
            module.inplace = True


def _optimise(param: ImageParam, objective: Objective, recorder: LayerRecorder, transforms: Transform,
              generator: torch.Generator, encoder: ImageEncoder, settings: RenderSettings, steps: int,
              progress: tqdm) -> None:
    parameters = list(param.parameters())
    optimizer = torch.optim.Adam(parameters, lr=settings.lr)
    for step in range(steps):
        images = param()
        pixels = transforms(images, generator)
        if settings.preprocess:
            pixels = preprocess(pixels, encoder.preprocessing)
        acts = recorder(pixels)
        acts[INPUT] = images
        values = objective(acts)
        # autograd.grad, not backward: a fine-tunable encoder's weights get no gradients
        grads = torch.autograd.grad(-values.sum(), parameters)
        for p, g in zip(parameters, grads):
            p.grad = g
        optimizer.step()
        if settings.blur_every and (step + 1) % settings.blur_every == 0:
            with torch.no_grad():
                param.set_pixels(TF.gaussian_blur(param(), kernel_size=[3, 3], sigma=settings.blur_sigma))
        progress.update(1)
        if step % 16 == 0 or step == steps - 1:
            progress.set_postfix(value=f"{values.mean().item():.3g}")


@torch.no_grad()
def evaluate(encoder: ImageEncoder, objective: Objective, images: torch.Tensor,
             through_preprocess: bool = False) -> torch.Tensor:
    """The objective of each image as saved (8-bit), without transforms, on the encoder's device."""
    pixels = round_to_levels(images).to(encoder.mean.device)
    if through_preprocess:
        pixels = preprocess(pixels, encoder.preprocessing)
    with LayerRecorder(encoder, objective.layers) as recorder:
        acts = recorder(pixels)
    acts[INPUT] = pixels
    return objective(acts)
