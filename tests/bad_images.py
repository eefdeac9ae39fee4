"""A corpus of awkward and broken image files, generated on the fly."""

from __future__ import annotations

import io
import os
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image


def _png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def bomb_png(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims ``width`` x ``height`` pixels (a decompression bomb)."""
    data = bytearray(_png_bytes(Image.new("L", (1, 1))))
    # IHDR chunk: 8-byte signature, 4-byte length, b"IHDR", 13 bytes of data, 4-byte CRC.
    start = 8 + 4
    assert data[start:start + 4] == b"IHDR"
    data[start + 4:start + 12] = struct.pack(">II", width, height)
    crc = zlib.crc32(bytes(data[start:start + 17])) & 0xFFFFFFFF
    data[start + 17:start + 21] = struct.pack(">I", crc)
    return bytes(data)


def write_bad_files(folder: Path) -> dict[str, str]:
    """Broken files in ``folder``: name -> a word the error message must contain."""
    folder.mkdir(parents=True, exist_ok=True)
    jpeg = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(jpeg, "JPEG")
    png = _png_bytes(Image.fromarray(np.random.default_rng(1).integers(0, 255, (64, 64, 3), dtype=np.uint8)))
    files = {
        "zero.jpg": (b"", "empty"),
        "text.jpg": (b"this is not an image, just some text\n" * 10, "not an image"),
        "truncated.jpg": (jpeg.getvalue()[: len(jpeg.getvalue()) // 2], "truncated"),
        "truncated.png": (png[: len(png) // 2], "truncated"),
        "corrupt.png": (png[:40] + bytes(200) + png[240:], "corrupt"),
        "bomb.png": (bomb_png(20000, 20000), "too large"),
        "strip.png": (_png_bytes(Image.new("L", (1, 20000))), "aspect ratio"),  # 166 bytes, 1 x 20000
    }
    for name, (content, _) in files.items():
        (folder / name).write_bytes(content)
    (folder / "loop.jpg").symlink_to("loop.jpg")
    os.mkfifo(folder / "fifo.jpg")  # opening it for reading would wait for a writer forever
    return {name: word for name, (_, word) in files.items()} | {"loop.jpg": "symlink loop",
                                                               "fifo.jpg": "not a regular file (a FIFO)"}


def write_good_files(folder: Path) -> list[str]:
    """Readable images in awkward modes; returns their names."""
    folder.mkdir(parents=True, exist_ok=True)
    rgb = Image.fromarray(np.random.default_rng(2).integers(0, 255, (40, 60, 3), dtype=np.uint8))
    rgb.save(folder / "rgb.jpg")
    rgb.convert("RGBA").save(folder / "rgba.png")
    rgb.convert("P").save(folder / "palette.png")
    rgb.convert("L").save(folder / "gray.png")
    Image.fromarray((np.arange(40 * 60).reshape(40, 60) * 20).astype(np.uint16)).save(folder / "sixteen.png")
    rgb.convert("CMYK").save(folder / "cmyk.jpg")
    rotated = rgb.copy()
    exif = rotated.getexif()
    exif[0x0112] = 6
    rotated.save(folder / "exif.jpg", exif=exif)
    return ["rgb.jpg", "rgba.png", "palette.png", "gray.png", "sixteen.png", "cmyk.jpg", "exif.jpg"]
