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


def write_corpus(folder: Path) -> tuple[dict[str, str], list[str], dict[str, str]]:
    """Every kind of awkward input for ``captioner caption``, in ``folder``.

    Returns ``(bad, good, named)``: the broken files found by searching ``folder`` (path ->
    a word their error must contain), the readable ones, and inputs that only make sense
    named on the command line (a missing file, a glob matching nothing, a device).
    """
    images = folder / "images"
    bad = {str(images / name): word for name, word in write_bad_files(images).items()}
    rgb = Image.fromarray(np.random.default_rng(3).integers(0, 255, (24, 32, 3), dtype=np.uint8))
    more_bad = {
        "signature.png": (b"\x89PNG\r\n\x1a\n", "not an image"),
        "html.jpg": (b"<html><body>404 not found</body></html>\n", "not an image"),
        "garbage.gif": (b"GIF89a" + bytes(20), "not an image"),
        "wide.png": (_png_bytes(Image.new("L", (20000, 1))), "aspect ratio"),
        "zero-width.png": (bomb_png(0, 1), "not an image"),
        "two\nlines.jpg": (b"not a picture", "not an image"),
        "caf\u00e9 \u5199\u771f.png": (b"\x00" * 64, "not an image"),
        "half.webp": (_encoded(rgb, "WEBP")[:40], "corrupt"),
    }
    for name, (content, word) in more_bad.items():
        (images / name).write_bytes(content)
        bad[str(images / name)] = word
    (images / "dangling.jpg").symlink_to("nowhere.jpg")
    bad[str(images / "dangling.jpg")] = "no such file"
    good = [str(images / "modes" / name) for name in write_good_files(images / "modes")]
    extra_good = {
        "palette-alpha.png": lambda: rgb.convert("P"),
        "la.png": lambda: rgb.convert("LA"),
        "bw.png": lambda: rgb.convert("1"),
        "tiny.png": lambda: Image.new("RGB", (1, 1), (200, 10, 10)),
        "thin.png": lambda: Image.new("RGB", (1, 40), (10, 10, 200)),  # becomes 256 x 10240: allowed
        "rgb.bmp": lambda: rgb, "rgb.tif": lambda: rgb, "rgb.webp": lambda: rgb,
        "\u00fcn\u00efc\u00f6d\u00e9 \u5199\u771f.png": lambda: rgb,
        "good\nname.png": lambda: rgb,
        "tab\tand\\backslash.png": lambda: rgb,
    }
    for name, make in extra_good.items():
        image = make()
        options = {"transparency": 0} if name == "palette-alpha.png" else {}
        image.save(images / name, **options)
        good.append(str(images / name))
    (images / "png-named.jpg").write_bytes(_png_bytes(rgb))  # the content decides, not the extension
    good.append(str(images / "png-named.jpg"))
    frames = [Image.new("RGB", (16, 16), colour) for colour in ((255, 0, 0), (0, 255, 0))]
    frames[0].save(images / "anim.gif", save_all=True, append_images=frames[1:], duration=100, loop=0)
    good.append(str(images / "anim.gif"))
    (images / "album.jpg").mkdir()  # a folder named like an image is searched, not read
    rgb.save(images / "album.jpg" / "inside.png")
    good.append(str(images / "album.jpg" / "inside.png"))
    named = {str(folder / "missing.jpg"): "no such file",
             str(folder / "nothing-*.png"): "no such file", "/dev/null": "not a regular file (a character device)"}
    return bad, good, named


def _encoded(image: Image.Image, format: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=format)
    return buffer.getvalue()
