"""The entry points of feature visualisation, as a notebook or the CLI uses them.

Each ``visualize_*`` function picks the objective, the settings (the ``*_SETTINGS``
defaults below, overridable per call) and a seed per image, renders with
:func:`captioner.visualization.render.render`, and returns a :class:`Visualization`:
the images with a label and a record for each, ready to save as a labelled PNG grid
with a JSON side file.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from PIL import Image

from ..data.eightbit import round_to_levels, save_png
from ..data.preprocess import preprocess
from ..errors import ArgumentError
from ..fileio import write_json_atomic
from ..models.encoder import ImageEncoder
from ..models.labels import resolve_class
from . import objectives
from .grid import first_conv, kernel_images, labelled_grid
from .layers import check_channels, output_shapes, resolve_layer
from .render import RenderSettings, render

FILTER_SETTINGS = RenderSettings(steps=128, size=128)
# Class images are seen the way a saved PNG is classified: through the encoder's resize + crop.
CLASS_SETTINGS = RenderSettings(steps=128, size=None, preprocess=True)
# DeepDream usually starts from a photo: full crop size, and a smaller step that keeps the photo visible.
DEEPDREAM_SETTINGS = RenderSettings(steps=64, size=None, lr=0.02)


@dataclass
class Visualization:
    """Rendered images with a label and a record (target, final value) for each."""

    images: torch.Tensor  # (B, 3, H, W) in [0, 1]
    labels: list[str]
    records: list[dict]
    objective: str
    settings: dict = field(default_factory=dict)

    def image(self, columns: int | None = None, tile: int | None = None) -> Image.Image:
        """One image as it is, several as a labelled grid."""
        if len(self.labels) == 1 and not tile:
            return labelled_grid(self.images, None, columns=1, gap=0)
        return labelled_grid(self.images, self.labels, columns=columns, tile=tile)

    def to_dict(self) -> dict:
        return {"objective": self.objective, "settings": self.settings, "targets": self.records}

    def save(self, path: str | os.PathLike, json_path: str | os.PathLike | None = None,
             columns: int | None = None, tile: int | None = None) -> Path:
        """Write the PNG and, beside it (``NAME.json`` unless given), the records as JSON."""
        path = Path(path)
        save_png(self.image(columns, tile), path)
        write_json_atomic(json_path or path.with_suffix(".json"), self.to_dict(), indent=2)
        return path


def image_seed(seed: int, key: int) -> int:
    """The initial-noise seed of the image for target ``key`` (a channel or class index):
    the same target gets the same image whatever else is rendered in its batch."""
    return seed * 1_000_003 + key


def _settings(encoder: ImageEncoder, base: RenderSettings, settings: RenderSettings | None,
              options: dict) -> RenderSettings:
    """``settings`` (default ``base``) with ``options`` applied and the size made concrete."""
    settings = (settings or base).with_options(**options)
    return settings.with_options(size=settings.size or encoder.preprocessing.crop_size)


def visualize_filters(encoder: ImageEncoder, layer: str, channels: Sequence[int] = range(16),
                      settings: RenderSettings | None = None, **options) -> Visualization:
    """One image per channel of ``layer`` maximising the channel's mean activation, all
    channels optimised together in one batch. ``options`` override fields of
    :class:`RenderSettings` (``steps=128, size=96, seed=1``...)."""
    settings = _settings(encoder, FILTER_SETTINGS, settings, options)
    return _render_channels(encoder, layer, channels, lambda cs: objectives.channel(layer, cs), settings)


def visualize_neuron(encoder: ImageEncoder, layer: str, channels: Sequence[int] = range(16),
                     x: int | None = None, y: int | None = None, settings: RenderSettings | None = None,
                     **options) -> Visualization:
    """Like :func:`visualize_filters`, for one position of the layer's grid (default: the
    centre); ``x``, ``y`` count in the grid of an image of ``settings.size`` pixels."""
    settings = _settings(encoder, FILTER_SETTINGS, settings, options)
    path = resolve_layer(encoder, layer)
    shape = output_shapes(encoder, [path], settings.size)[path]
    if len(shape) != 3:
        raise ArgumentError(f"layer {layer} has no spatial grid (output shape {shape}); use `filters`")
    if (x is not None and not 0 <= x < shape[2]) or (y is not None and not 0 <= y < shape[1]):
        raise ArgumentError(f"layer {layer} is a {shape[2]}x{shape[1]} grid at {settings.size} px; "
                         f"x={x}, y={y} is outside it")
    return _render_channels(encoder, layer, channels, lambda cs: objectives.neuron(layer, cs, x, y), settings,
                            x=x, y=y)


def _render_channels(encoder: ImageEncoder, layer: str, channels: Sequence[int], make_objective,
                     settings: RenderSettings, **record) -> Visualization:
    channels = [int(c) for c in channels]
    if not channels:
        raise ArgumentError("no channels to visualise")
    check_channels(encoder, layer, channels)
    objective = make_objective(channels)
    result = render(encoder, objective, len(channels), settings, [image_seed(settings.seed, c) for c in channels])
    records = [{"layer": layer, "channel": c, **record, "activation": round(v, 5)}
               for c, v in zip(channels, result.values)]
    return Visualization(result.images, [str(c) for c in channels], records, objective.name, settings.to_dict())


def visualize_class(encoder: ImageEncoder, classes: str | int | Sequence[str | int],
                    settings: RenderSettings | None = None, **options) -> Visualization:
    """One image per class maximising its logit. Classes are names ("starfish") or
    indices; the records give each image's logit, probability and top-1 class as the
    encoder sees the saved 8-bit image through its preprocessing."""
    settings = _settings(encoder, CLASS_SETTINGS, settings, options)
    if encoder.head is None:
        raise ArgumentError(f"the {encoder.spec.backbone} encoder has no classification head")
    labels = [classes] if isinstance(classes, (str, int)) else list(classes)
    indices = [resolve_class(encoder.categories, label) for label in labels]
    objective = objectives.class_logit(indices)
    result = render(encoder, objective, len(indices), settings, [image_seed(settings.seed, i) for i in indices])
    probabilities = class_probabilities(encoder, result.images)
    names = encoder.categories
    records = []
    for row, (index, logit) in enumerate(zip(indices, result.values)):
        top = int(probabilities[row].argmax())
        records.append({
            "class": names[index], "index": index, "logit": round(logit, 4),
            "probability": round(float(probabilities[row, index]), 5),
            "top1": names[top], "top1_probability": round(float(probabilities[row, top]), 5),
        })
    return Visualization(result.images, [names[i] for i in indices], records, objective.name, settings.to_dict())


@torch.no_grad()
def class_probabilities(encoder: ImageEncoder, images: torch.Tensor) -> torch.Tensor:
    """Softmax of the logits of 8-bit versions of ``images`` through the encoder's
    preprocessing: what classifying the saved PNG gives."""
    pixels = round_to_levels(images).to(encoder.mean.device)
    return encoder.classify(preprocess(pixels, encoder.preprocessing)).softmax(dim=-1)


def visualize_deepdream(encoder: ImageEncoder, layer: str, image: Image.Image | torch.Tensor | None = None,
                        settings: RenderSettings | None = None, **options) -> Visualization:
    """Maximise the mean square of a whole layer, from noise or from a photo (which goes
    through the encoder's preprocessing first)."""
    settings = _settings(encoder, DEEPDREAM_SETTINGS, settings, options)
    resolve_layer(encoder, layer)
    init = None
    if image is not None:
        init = preprocess(image, encoder.preprocessing)
        init = init.unsqueeze(0) if init.ndim == 3 else init[:1]
    objective = objectives.deepdream(layer)
    result = render(encoder, objective, 1, settings, [image_seed(settings.seed, 0)], init=init)
    records = [{"layer": layer, "mean_square": round(result.values[0], 5)}]
    return Visualization(result.images, [layer], records, objective.name, settings.to_dict())


def first_layer_weights(encoder: ImageEncoder) -> Visualization:
    """The kernels of the first convolution, drawn directly as RGB patches."""
    path, conv = first_conv(encoder)
    patches = kernel_images(conv.weight)
    labels = [str(i) for i in range(patches.shape[0])]
    records = [{"layer": path, "kernel": i, "norm": round(float(w.norm()), 5)} for i, w in enumerate(conv.weight)]
    return Visualization(patches, labels, records, f"weights({path})")
