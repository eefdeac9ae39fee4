"""Reading images: awkward modes give the right pixels, broken files give clear errors."""

import errno
import io
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bad_images import bomb_png, write_bad_files, write_good_files
from captioner.data.images import ImageLoadError, find_images, load_image

def test_transparent_pixels_become_white_and_opaque_keep_colour(tmp_path):
    rgba = np.zeros((2, 3, 4), dtype=np.uint8)
    rgba[0, 0] = (255, 0, 0, 255)   # opaque red
    rgba[0, 1] = (255, 0, 0, 0)     # fully transparent red
    rgba[0, 2] = (0, 0, 0, 128)     # half-transparent black
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    out = np.asarray(load_image(tmp_path / "a.png"))
    assert tuple(out[0, 0]) == (255, 0, 0)
    assert tuple(out[0, 1]) == (255, 255, 255)
    assert all(abs(int(v) - 127) <= 1 for v in out[0, 2])

def test_palette_transparency_is_composited(tmp_path):
    image = Image.new("P", (2, 1))
    image.putpalette([0, 0, 0, 0, 255, 0] + [0] * 762)
    image.putpixel((0, 0), 0)
    image.putpixel((1, 0), 1)
    image.save(tmp_path / "p.png", transparency=0)
    out = np.asarray(load_image(tmp_path / "p.png"))
    assert tuple(out[0, 0]) == (255, 255, 255)
    assert tuple(out[0, 1]) == (0, 255, 0)

def test_sixteen_bit_grey_is_scaled_not_clipped(tmp_path):
    values = np.array([[0, 128 * 257, 65535]], dtype=np.uint16)
    Image.fromarray(values).save(tmp_path / "g16.png")
    assert Image.open(tmp_path / "g16.png").mode.startswith("I")
    out = np.asarray(load_image(tmp_path / "g16.png"))
    assert out.shape == (1, 3, 3)
    assert [int(v) for v in out[0, :, 0]] == [0, 128, 255]

def test_cmyk_is_converted(tmp_path):
    Image.new("CMYK", (4, 4), (255, 0, 0, 0)).save(tmp_path / "c.tif")
    out = np.asarray(load_image(tmp_path / "c.tif"))
    assert tuple(out[0, 0]) == (0, 255, 255)  # pure cyan

def test_exif_orientation_is_applied(tmp_path):
    array = np.zeros((10, 20, 3), dtype=np.uint8)
    array[:, :10] = (255, 0, 0)  # left half red
    array[:, 10:] = (0, 0, 255)  # right half blue
    image = Image.fromarray(array)
    exif = image.getexif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    image.save(tmp_path / "e.png", exif=exif)
    out = np.asarray(load_image(tmp_path / "e.png"))
    assert out.shape == (20, 10, 3)
    assert tuple(out[0, 5]) == (255, 0, 0)   # the left half is now at the top
    assert tuple(out[-1, 5]) == (0, 0, 255)

@pytest.mark.parametrize("name", ["rgb.jpg", "rgba.png", "palette.png", "gray.png", "sixteen.png",
                                  "cmyk.jpg", "exif.jpg"])
def test_awkward_modes_load_as_rgb(tmp_path, name):
    write_good_files(tmp_path)
    image = load_image(tmp_path / name)
    assert image.mode == "RGB"
    assert image.size == ((40, 60) if name == "exif.jpg" else (60, 40))

def test_every_broken_file_gets_a_one_line_error_naming_it(tmp_path):
    expected = write_bad_files(tmp_path)
    for name, word in expected.items():
        with pytest.raises(ImageLoadError) as info:
            load_image(tmp_path / name, resize_to=256)
        message = str(info.value)
        assert "\n" not in message
        assert message.startswith(str(tmp_path / name) + ": ")
        assert word in message, message

def test_missing_file_and_directory(tmp_path):
    with pytest.raises(ImageLoadError, match="no such file"):
        load_image(tmp_path / "nope.jpg")
    with pytest.raises(ImageLoadError, match="directory"):
        load_image(tmp_path)

def test_pixel_limit_between_limit_and_twice_the_limit(tmp_path):
    Image.new("RGB", (20, 20)).save(tmp_path / "x.png")  # 400 pixels
    with pytest.raises(ImageLoadError, match="too large"):
        load_image(tmp_path / "x.png", max_pixels=300)
    assert load_image(tmp_path / "x.png", max_pixels=400).size == (20, 20)

def test_bomb_header_is_refused_before_decoding(tmp_path):
    (tmp_path / "b.png").write_bytes(bomb_png(100_000, 100_000))
    with pytest.raises(ImageLoadError, match="decompression bomb"):
        load_image(tmp_path / "b.png")
    # the pixel limit is restored afterwards
    assert Image.MAX_IMAGE_PIXELS == 89_478_485

def test_find_images_expands_folders_globs_and_keeps_named_files(tmp_path):
    (tmp_path / "sub" / "deeper").mkdir(parents=True)
    for rel in ["b.jpg", "a.PNG", "notes.txt", "sub/c.jpeg", "sub/deeper/d.webp"]:
        (tmp_path / rel).write_bytes(b"x")
    assert find_images([str(tmp_path)]) == [
        str(tmp_path / "a.PNG"), str(tmp_path / "b.jpg"),
        str(tmp_path / "sub" / "c.jpeg"), str(tmp_path / "sub" / "deeper" / "d.webp"),
    ]
    assert find_images([str(tmp_path / "**" / "*.jp*g")]) == [str(tmp_path / "b.jpg"), str(tmp_path / "sub" / "c.jpeg")]
    # files named explicitly stay, whatever they are, so a mistake is reported rather than dropped
    assert find_images([str(tmp_path / "notes.txt")]) == [str(tmp_path / "notes.txt")]
    assert find_images([str(tmp_path / "*.gif")]) == [str(tmp_path / "*.gif")]

def test_find_images_keeps_a_folder_it_cannot_list_so_that_it_is_reported(tmp_path, monkeypatch):
    """Root lists any folder, so the refusal is simulated where folders are listed."""
    for rel in ["a.jpg", "locked/b.jpg", "z/c.jpg"]:
        (tmp_path / rel).parent.mkdir(exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    locked = tmp_path / "locked"
    scandir = os.scandir

    def refusing(target="."):
        if Path(target) == locked:
            raise PermissionError(errno.EACCES, "Permission denied", os.fspath(target))
        return scandir(target)

    monkeypatch.setattr(os, "scandir", refusing)
    assert find_images([str(tmp_path)]) == [str(tmp_path / "a.jpg"), str(locked), str(tmp_path / "z" / "c.jpg")]
    with pytest.raises(ImageLoadError) as info:
        load_image(locked)
    assert str(info.value) == f"{locked}: cannot read this folder (permission denied), so the images in it are skipped"


def test_image_bytes_in_memory_roundtrip(tmp_path):
    buffer = io.BytesIO()
    Image.new("RGB", (5, 7), (1, 2, 3)).save(buffer, "PNG")
    (tmp_path / "m.png").write_bytes(buffer.getvalue())
    assert np.asarray(load_image(tmp_path / "m.png"))[3, 2].tolist() == [1, 2, 3]


def test_extreme_aspect_ratio_is_refused_before_resizing(tmp_path):
    """1 x 20000 resized to a short side of 256 would be 256 x 5,120,000 pixels (gigabytes of floats)."""
    Image.new("L", (1, 20000)).save(tmp_path / "strip.png")
    assert (tmp_path / "strip.png").stat().st_size < 1000
    with pytest.raises(ImageLoadError, match=r"1 x 20000 pixels would become 1,310,720,000 pixels .* 256, "
                                             r"more than the limit of 89,478,485"):
        load_image(tmp_path / "strip.png", resize_to=256)
    assert load_image(tmp_path / "strip.png").size == (1, 20000)  # without a resize, 20000 pixels are fine
    # the limit is on the resized pixels: 10 x 40 at short side 20 becomes 20 x 80 = 1600 pixels
    Image.new("RGB", (10, 40)).save(tmp_path / "tall.png")
    assert load_image(tmp_path / "tall.png", max_pixels=1600, resize_to=20).size == (10, 40)
    with pytest.raises(ImageLoadError, match="aspect ratio"):
        load_image(tmp_path / "tall.png", max_pixels=1599, resize_to=20)


def test_bomb_message_quotes_one_limit(tmp_path):
    (tmp_path / "b.png").write_bytes(bomb_png(20000, 20000))
    with pytest.raises(ImageLoadError) as info:
        load_image(tmp_path / "b.png", max_pixels=1000)
    message = str(info.value)
    assert "400,000,000 pixels" in message and "limit of 1,000" in message
    assert "178" not in message and "2000" not in message and "2,000" not in message  # not PIL's 2x limit


def test_special_files_say_what_they_are(tmp_path):
    write_bad_files(tmp_path)
    with pytest.raises(ImageLoadError, match=r"loop\.jpg: symlink loop"):
        load_image(tmp_path / "loop.jpg")
    with pytest.raises(ImageLoadError, match=r"fifo\.jpg: not a regular file \(a FIFO\)"):
        load_image(tmp_path / "fifo.jpg")
    with pytest.raises(ImageLoadError, match=r"not a regular file \(a character device\)"):
        load_image("/dev/null")


def test_a_newline_in_a_file_name_stays_on_one_line(tmp_path):
    path = tmp_path / "two\nlines\\.jpg"
    path.write_bytes(b"not an image")
    with pytest.raises(ImageLoadError) as info:
        load_image(path)
    assert str(info.value).startswith(str(tmp_path) + "/two\\nlines\\\\.jpg: not an image")
    assert info.value.path == str(path)
