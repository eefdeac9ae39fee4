"""Streaming image files through a DataLoader in preprocessed batches.

A file that cannot be read does not stop the stream: its slot in the batch carries
the error instead of pixels, so the caller can report it and carry on.

For a CUDA target the batches come in pinned memory (so the copy to the GPU can overlap)
and JPEG files are decoded on the GPU (:mod:`captioner.data.jpeg`), with PIL as the
fallback for other formats and for files the GPU cannot read.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import torch
from torch.utils.data import DataLoader, Dataset

from .images import DEFAULT_MAX_PIXELS, ImageLoadError, load_image
from .jpeg import decode_on_device, jpeg_bytes, nvjpeg_decoder
from .preprocess import Preprocessing, preprocess


class ImagePathDataset(Dataset):
    """Item ``i``: ``(i, pixels or None, error or None)`` for the i-th path; with ``raw_jpeg``,
    a JPEG the GPU can decode comes as ``(i, its bytes (uint8, 1-D), None)`` instead."""

    def __init__(self, paths: Sequence[str], spec: Preprocessing, max_pixels: int = DEFAULT_MAX_PIXELS,
                 raw_jpeg: bool = False):
        self.paths = list(paths)
        self.spec = spec
        self.max_pixels = max_pixels
        self.raw_jpeg = raw_jpeg

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int):
        data = jpeg_bytes(self.paths[index], self.max_pixels, self.spec.resize_size) if self.raw_jpeg else None
        if data is not None:
            return index, data, None
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
    jpegs: list[tuple[int, torch.Tensor]] = field(default_factory=list)  # not decoded yet: (index, bytes)

    def pin_memory(self) -> "ImageBatch":
        """The same batch in page-locked memory (the DataLoader calls this with ``pin_memory``)."""
        pixels = None if self.pixels is None else self.pixels.pin_memory()
        return ImageBatch(self.indices, pixels, self.errors, [(i, d.pin_memory()) for i, d in self.jpegs])


def collate_images(items) -> ImageBatch:
    good = [(i, x) for i, x, e in items if e is None and x.dtype != torch.uint8]
    jpegs = [(i, x) for i, x, e in items if e is None and x.dtype == torch.uint8]
    errors = [(i, e) for i, x, e in items if e is not None]
    pixels = torch.stack([x for _, x in good]) if good else None
    return ImageBatch([i for i, _ in good], pixels, errors, jpegs)


def _decode_jpegs(batch: ImageBatch, paths: Sequence[str], spec: Preprocessing, device: torch.device,
                  decoder: Callable, max_pixels: int) -> ImageBatch:
    """``batch`` with its JPEG bytes decoded on ``device``: pixels on ``device``, in index order."""
    pixels = {} if batch.pixels is None else {
        i: x for i, x in zip(batch.indices, batch.pixels.to(device, non_blocking=True))}
    decoded, errors = decode_on_device([(i, paths[i], d) for i, d in batch.jpegs], spec, device, decoder,
                                       max_pixels)
    pixels.update(decoded)
    order = sorted(pixels)
    return ImageBatch(order, torch.stack([pixels[i] for i in order]) if order else None,
                      sorted(batch.errors + list(errors.items())))


def image_batches(paths: Sequence[str], spec: Preprocessing, batch_size: int = 16,
                  num_workers: int = 0, max_pixels: int = DEFAULT_MAX_PIXELS, device: torch.device | str | None = None,
                  jpeg_decoder: Callable | None = None) -> Iterator[ImageBatch]:
    """Preprocessed batches of the images at ``paths``, in order.

    With a CUDA ``device`` the batches come pinned and JPEG files are decoded there (their
    pixels are then on ``device``); ``jpeg_decoder`` (list of byte tensors -> list of uint8
    (3, H, W) tensors) replaces nvJPEG, and turns the JPEG path on for any device (tests).
    """
    device = torch.device(device or "cpu")
    if jpeg_decoder is None and device.type == "cuda":
        jpeg_decoder = nvjpeg_decoder(device)
    loader = DataLoader(
        ImagePathDataset(paths, spec, max_pixels, raw_jpeg=jpeg_decoder is not None),
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        collate_fn=collate_images,
        persistent_workers=False,
        pin_memory=device.type == "cuda",
        generator=torch.Generator(),  # leave the global RNG alone
    )
    if jpeg_decoder is None:
        yield from loader
        return
    for batch in loader:
        yield _decode_jpegs(batch, paths, spec, device, jpeg_decoder, max_pixels)
