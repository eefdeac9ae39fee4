"""From files to RGB images: finding image files and reading them safely.

Every image that enters captioner (captioning, training, visualisation, attacks)
is read by :func:`load_image`, so every path through the package handles the same
awkward inputs the same way: EXIF orientation, transparency, palettes, 16-bit and
CMYK files, truncated or corrupt files and decompression bombs.
"""

from __future__ import annotations

import errno
import glob
import io
import os
import re
import stat
import typing
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import UserError
from .shards import TarMember, expand_braces, is_shard, shard_members

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm"}
)

#: Images with more pixels than this are refused (PIL's own default, about 89 megapixels).
DEFAULT_MAX_PIXELS = 89_478_485

#: Transparent pixels are composited onto this colour.
BACKGROUND = (255, 255, 255)


def printable_path(path: str | os.PathLike) -> str:
    """``path`` on one line: backslash, newline, carriage return and tab written as
    ``\\``, ``\\n``, ``\\r`` and ``\\t`` (file names may contain them)."""
    return str(path).translate({ord("\\"): "\\\\", ord("\n"): "\\n", ord("\r"): "\\r", ord("\t"): "\\t"})


class ImageLoadError(UserError):
    """An image file could not be read. ``str(error)`` names the file (on one line, see
    :func:`printable_path`) and the reason."""

    def __init__(self, path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{printable_path(self.path)}: {reason}")


def load_image(path: str | os.PathLike, max_pixels: int = DEFAULT_MAX_PIXELS,
               resize_to: int | None = None) -> Image.Image:
    """Read an image file as an upright 8-bit RGB PIL image.

    Raises :class:`ImageLoadError` with a one-line reason for anything that is not
    a readable image of at most ``max_pixels`` pixels. With ``resize_to`` (the
    preprocessing's resize size), an image is also refused when resizing its shorter
    side to ``resize_to`` would give more than ``max_pixels`` pixels: a 1 x 20000 strip
    of a few bytes would otherwise become 256 x 5,120,000 pixels (gigabytes) in
    :func:`captioner.data.preprocess.preprocess`.
    """
    if isinstance(path, TarMember):
        return _load_member(path, max_pixels, resize_to)
    path = Path(path)
    try:
        kind = path.stat().st_mode
        if stat.S_ISDIR(kind):
            _check_listable(path)
            raise ImageLoadError(path, "is a directory, not an image file")
        if not stat.S_ISREG(kind):
            raise ImageLoadError(path, f"not a regular file (a {_file_kind(kind)})")
        if path.stat().st_size == 0:
            raise ImageLoadError(path, "empty file (0 bytes)")
        return _decode(path, path, max_pixels, resize_to)
    except ImageLoadError:
        raise
    except FileNotFoundError:
        raise ImageLoadError(path, "no such file") from None
    except PermissionError:
        raise ImageLoadError(path, "permission denied") from None
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise ImageLoadError(path, "symlink loop (a symbolic link that points back to itself)") from None
        if error.errno is not None:  # the file system's error, not the decoder's
            raise ImageLoadError(path, f"cannot read the file ({error.strerror or error})") from None
        raise


def _load_member(member: TarMember, max_pixels: int, resize_to: int | None) -> Image.Image:
    """:func:`load_image` for an image inside a tar shard: its bytes, read in place."""
    if member.error:
        raise ImageLoadError(member, member.error)
    if member.size == 0:
        raise ImageLoadError(member, "empty member (0 bytes)")
    try:
        data = member.read()
    except FileNotFoundError:
        raise ImageLoadError(member, f"no such shard ({member.shard})") from None
    except (OSError, EOFError) as error:
        raise ImageLoadError(member, f"cannot read the shard ({getattr(error, 'strerror', None) or error})") from None
    return _decode(io.BytesIO(data), member, max_pixels, resize_to)


def _decode(source, path, max_pixels: int, resize_to: int | None) -> Image.Image:
    """Decode ``source`` (a path or a file object) named ``path`` in errors, within the limits."""
    try:
        with warnings.catch_warnings():
            # PIL only warns between max_pixels and 2 * max_pixels; refuse both.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            previous = Image.MAX_IMAGE_PIXELS
            Image.MAX_IMAGE_PIXELS = max_pixels
            try:
                with Image.open(source) as image:
                    if resize_to is not None:
                        check_resized_size(path, image.size, resize_to, max_pixels)
                    image.load()
                    return to_rgb(image)
            finally:
                Image.MAX_IMAGE_PIXELS = previous
    except UnidentifiedImageError:
        raise ImageLoadError(path, "not an image file (unknown or corrupt format)") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        found = re.search(r"Image size \((\d+) pixels\)", str(error))
        size = f"{int(found.group(1)):,} pixels, " if found else ""
        raise ImageLoadError(
            path, f"image too large ({size}more than the limit of {max_pixels:,}; possible decompression bomb)"
        ) from None
    except OSError as error:
        if error.errno is not None:  # the file system's error, not the decoder's
            raise
        _decode_error(path, error)
    except (SyntaxError, ValueError) as error:
        _decode_error(path, error)


def _check_listable(folder: Path) -> None:
    """A folder that cannot be listed is in the list of images only because
    :func:`find_images` could not look into it: say so."""
    try:
        with os.scandir(folder):
            pass
    except OSError as error:
        reason = "permission denied" if isinstance(error, PermissionError) else (error.strerror or str(error)).lower()
        raise ImageLoadError(folder, f"cannot read this folder ({reason}), so the images in it are skipped") from None


def _file_kind(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "FIFO"), (stat.S_ISCHR, "character device"),
                       (stat.S_ISBLK, "block device"), (stat.S_ISSOCK, "socket")):
        if test(mode):
            return name
    return "special file"


def check_resized_size(path, size: tuple[int, int], resize_to: int, max_pixels: int) -> None:
    short, long = sorted(size)
    if short < 1:
        raise ImageLoadError(path, f"image has no pixels ({size[0]} x {size[1]})")
    resized = resize_to * (long * resize_to // short)
    if resized > max_pixels:
        raise ImageLoadError(
            path, f"extreme aspect ratio: {size[0]} x {size[1]} pixels would become {resized:,} pixels when the "
                  f"shorter side is resized to {resize_to}, more than the limit of {max_pixels:,}")


def _decode_error(path, error: Exception) -> typing.NoReturn:
    reason = str(error) or type(error).__name__
    if "truncated" in reason.lower():
        raise ImageLoadError(path, f"truncated image file ({reason})") from None
    raise ImageLoadError(path, f"corrupt image file ({reason})") from None


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any PIL image to upright 8-bit RGB.

    Transparency is composited onto a white background (dropping alpha would turn
    transparent pixels into whatever colour they happen to store, often black), and
    16-bit or 32-bit grey levels are scaled rather than clipped.
    """
    image = ImageOps.exif_transpose(image)
    if image.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        image = _high_depth_to_l(image)
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, BACKGROUND + (255,))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if image.mode != "RGB":
        return image.convert("RGB")
    return image


def _high_depth_to_l(image: Image.Image) -> Image.Image:
    """Map a 16/32-bit integer or float grey image to 8-bit grey ("L")."""
    array = np.asarray(image, dtype=np.float64)
    if image.mode == "F":
        low, high = float(array.min()), float(array.max())
        scaled = (array - low) / (high - low) * 255.0 if high > low else np.zeros_like(array)
    elif image.mode.startswith("I;16") or array.max() > 255:
        scaled = array / 257.0  # 65535 -> 255
    else:
        scaled = array
    return Image.fromarray(np.clip(np.rint(scaled), 0, 255).astype(np.uint8), mode="L")


def find_images(inputs: list[str]) -> list[str]:
    """Expand files, folders (recursively) and glob patterns into a list of paths.

    Folders contribute only files with an image extension, in sorted order. Files
    named explicitly are kept whatever their extension, so that a mistake (a text
    file, a missing file) is reported by :func:`load_image` instead of vanishing; so
    is a folder (or sub-folder) that cannot be listed, whose images would vanish.
    A tar shard (``.tar``) named explicitly, or matched by a glob or a brace pattern
    (``shards/{00000..00999}.tar``), contributes its image members
    (:class:`captioner.data.shards.TarMember`), sorted by name.
    """
    paths: list[str] = []
    for item in [name for given in inputs for name in expand_braces(given)]:
        if is_shard(item):
            paths.extend(shard_members(item, IMAGE_EXTENSIONS))
        elif os.path.isdir(item):
            unlisted: list[OSError] = []
            found = []
            for root, dirs, files in os.walk(item, onerror=unlisted.append):
                dirs.sort()
                found.extend(
                    os.path.join(root, name)
                    for name in files
                    if os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS
                )
            paths.extend(sorted(found + [os.fspath(error.filename) for error in unlisted]))
        elif not os.path.exists(item) and glob.has_magic(item):
            matches = [m for m in sorted(glob.glob(item, recursive=True)) if os.path.isfile(m)]
            # A pattern that matches nothing stays in the list, so it is reported as missing.
            for match in matches or [item]:
                paths.extend(shard_members(match, IMAGE_EXTENSIONS) if is_shard(match) else [match])
        else:
            paths.append(item)
    return paths
