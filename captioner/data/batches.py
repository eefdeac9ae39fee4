"""Streaming image files through a DataLoader in preprocessed batches.

A file that cannot be read does not stop the stream: its slot in the batch carries
the error instead of pixels, so the caller can report it and carry on.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader, Dataset

from .images import DEFAULT_MAX_PIXELS, ImageLoadError, load_image
from .preprocess import Preprocessing, preprocess


class ImagePathDataset(Dataset):
    """Item ``i``: ``(i, pixels or None, error or None)`` for the i-th path."""

    def __init__(self, paths: Sequence[str], spec: Preprocessing, max_pixels: int = DEFAULT_MAX_PIXELS):
        self.paths = list(paths)
        self.spec = spec
        self.max_pixels = max_pixels

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int):
        try:
            image = load_image(self.paths[index], self.max_pixels, resize_to=self.spec.resize_size)
            return index, preprocess(image, self.spec), None
        except ImageLoadError as error:
            return index, None, str(error)


@dataclass
class ImageBatch:
    """Readable images stacked as ``pixels`` (their dataset indices in ``indices``), and
    the unreadable ones as ``(index, message)`` pairs in ``errors``."""

    indices: list[int]
    pixels: torch.Tensor | None
    errors: list[tuple[int, str]]


def collate_images(items) -> ImageBatch:
    good = [(i, x) for i, x, e in items if e is None]
    errors = [(i, e) for i, x, e in items if e is not None]
    pixels = torch.stack([x for _, x in good]) if good else None
    return ImageBatch([i for i, _ in good], pixels, errors)


def image_batches(paths: Sequence[str], spec: Preprocessing, batch_size: int = 16,
                  num_workers: int = 0, max_pixels: int = DEFAULT_MAX_PIXELS) -> Iterator[ImageBatch]:
    """Preprocessed batches of the images at ``paths``, in order."""
    loader = DataLoader(
        ImagePathDataset(paths, spec, max_pixels),
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        collate_fn=collate_images,
        persistent_workers=False,
        generator=torch.Generator(),  # leave the global RNG alone
    )
    yield from loader
