"""JPEG files decoded in batches on the GPU (nvJPEG), with PIL as the fallback.

The reader processes only read a JPEG file's bytes (:func:`jpeg_bytes`, which looks at its
header to decide), and the main process decodes a whole batch at once on the GPU
(:func:`decode_on_device`). Only plain files go this way: 8-bit RGB or greyscale baseline or
progressive JPEGs, upright (no EXIF rotation), within the pixel limit and ending in the
end-of-image marker (so a truncated file is not half-decoded on the GPU). Everything
else, and every file the GPU decoder refuses, is read by :func:`load_image` as on the CPU,
so it gets the same pixels or the same one-line error. The decoded pixels go through the
one :func:`preprocess`, on the GPU.

torchvision's CPU decoder gives PIL's pixels bit for bit (tests/test_batches.py); nvJPEG
may differ from libjpeg-turbo by a level here and there (its chroma upsampling and IDCT
rounding), so captions from the GPU path are expected to agree with the CPU's to resize
rounding, not bit for bit (not yet measured on a GPU). A cache of features records no
device, so one built on the GPU may differ from a CPU build by as much.
"""

from __future__ import annotations

import os
import stat
import warnings
from collections.abc import Callable, Sequence

import torch
from PIL import Image

from .images import ImageLoadError, check_resized_size, load_image
from .preprocess import Preprocessing, preprocess

EXIF_ORIENTATION = 0x0112


def jpeg_bytes(path: str, max_pixels: int, resize_to: int | None = None) -> torch.Tensor | None:
    """The raw bytes of ``path`` as a uint8 tensor when it is a JPEG the GPU can decode as
    PIL would (see the module's docstring), else None (read it with :func:`load_image`, which
    also refuses what would be too large once resized to ``resize_to``)."""
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):  # a FIFO would block the open: load_image reports it
            return None
        with Image.open(path) as image:
            plain = (image.format == "JPEG" and image.mode in ("RGB", "L")
                     and image.width * image.height <= max_pixels
                     and image.getexif().get(EXIF_ORIENTATION, 1) == 1)
            if plain and resize_to is not None:
                check_resized_size(path, image.size, resize_to, max_pixels)
        if not plain:
            return None
        with open(path, "rb") as file:
            data = file.read()
    except Exception:  # anything odd: load_image reads it and reports it
        return None
    if not data.endswith(b"\xff\xd9"):
        return None
    return torch.frombuffer(bytearray(data), dtype=torch.uint8)


def nvjpeg_decoder(device: torch.device) -> Callable[[list[torch.Tensor]], list[torch.Tensor]]:
    """torchvision's batched JPEG decoder on ``device``: a list of byte tensors in, a list of
    uint8 RGB (3, H, W) tensors on ``device`` out."""
    from torchvision.io import ImageReadMode, decode_jpeg

    def decode(data: list[torch.Tensor]) -> list[torch.Tensor]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torchvision's deprecation notice, once per batch
            return decode_jpeg(data, mode=ImageReadMode.RGB, device=device)

    return decode


def decode_on_device(items: Sequence[tuple[int, str, torch.Tensor]], spec: Preprocessing, device: torch.device,
                     decoder: Callable, max_pixels: int) -> tuple[dict[int, torch.Tensor], dict[int, str]]:
    """Decode and preprocess ``(index, path, bytes)`` items with ``decoder``, all in one call
    when it can; when that call fails, each file on its own, and a file it cannot decode
    through :func:`load_image` on the CPU. Returns pixels by index and errors by index."""
    pixels: dict[int, torch.Tensor] = {}
    errors: dict[int, str] = {}
    if not items:
        return pixels, errors
    try:
        decoded = list(zip(items, decoder([data for _, _, data in items])))
    except Exception:  # one bad file fails the whole call: find it
        decoded = []
        for item in items:
            try:
                decoded.append((item, decoder([item[2]])[0]))
            except Exception:
                try:
                    image = preprocess(load_image(item[1], max_pixels, resize_to=spec.resize_size), spec)
                    pixels[item[0]] = image.to(device, non_blocking=True)
                except ImageLoadError as error:
                    errors[item[0]] = str(error)
    for (index, _, _), image in decoded:
        pixels[index] = preprocess(image, spec)
    return pixels, errors
