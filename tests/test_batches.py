"""Reading image files in batches: the GPU JPEG path and its PIL fallback (with a fake decoder on
the CPU, so no GPU is needed), pinning, and the default number of reader processes."""

import shutil
import warnings

import pytest
import torch
from torchvision.io import ImageReadMode, decode_jpeg

from bad_images import write_bad_files, write_good_files
from captioner.api import default_reader_processes
from captioner.data import batches, jpeg
from captioner.data.batches import ImageBatch, image_batches
from captioner.data.preprocess import Preprocessing

SPEC = Preprocessing(resize_size=40, crop_size=32)


class FakeDecoder:
    """torchvision's CPU decoder that refuses, like a GPU decoder might, any call with a file
    whose bytes contain ``refuse``; records the batches it was given."""

    def __init__(self, refuse: bytes | None = None):
        self.refuse = refuse
        self.calls: list[int] = []

    def __call__(self, data):
        self.calls.append(len(data))
        if self.refuse is not None and any(self.refuse in bytes(d.numpy()) for d in data):
            raise RuntimeError("nvjpeg: unsupported")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torchvision's deprecation notice
            return decode_jpeg(data, mode=ImageReadMode.RGB)


@pytest.fixture
def files(tmp_path, examples_dir):
    bad = write_bad_files(tmp_path)
    # a 1 x 20000 strip is refused only where its resized size passes the pixel limit: at 40 px
    # it becomes 40 x 800,000, within it, so here it is read like any other image
    bad.pop("strip.png")
    good = write_good_files(tmp_path)
    for photo in sorted(examples_dir.glob("*.jpg"))[:3]:
        shutil.copy(photo, tmp_path / photo.name)
    names = sorted(bad) + good + sorted(p.name for p in examples_dir.glob("*.jpg"))[:3]
    return [str(tmp_path / name) for name in names], bad


def _all(paths, **kwargs):
    indices, pixels, errors = [], [], []
    for batch in image_batches(paths, SPEC, batch_size=5, **kwargs):
        indices += batch.indices
        errors += batch.errors
        if batch.pixels is not None:
            pixels.append(batch.pixels)
    return indices, torch.cat(pixels), errors


@pytest.mark.parametrize("refuse", [None, b"Exif", b"JFIF"])
def test_jpeg_path_reads_what_pil_reads_and_keeps_every_error(files, refuse):
    paths, bad = files
    decoder = FakeDecoder(refuse)
    indices, pixels, errors = _all(paths, jpeg_decoder=decoder)
    plain_indices, plain_pixels, plain_errors = _all(paths)
    assert indices == plain_indices
    assert errors == plain_errors  # the same one-line errors, whichever path read the file
    assert len(errors) == len(bad)
    # libjpeg-turbo in torchvision's CPU decoder and in PIL: the same pixels, bit for bit
    assert torch.equal(pixels, plain_pixels)
    assert decoder.calls, "no file went through the JPEG decoder"


def test_only_plain_jpegs_go_to_the_decoder(files):
    paths, _ = files
    sent = {p.rsplit("/", 1)[1] for p in paths if jpeg.jpeg_bytes(p, 10**8) is not None}
    assert {"rgb.jpg", "cat.jpg"} <= sent
    # CMYK, EXIF-rotated, truncated, empty and non-JPEG files are read by PIL
    assert not sent & {"cmyk.jpg", "exif.jpg", "truncated.jpg", "zero.jpg", "text.jpg", "rgba.png"}
    assert jpeg.jpeg_bytes(paths[0].rsplit("/", 1)[0] + "/rgb.jpg", 100) is None  # over the pixel limit


def test_a_failing_batch_is_retried_file_by_file(files):
    paths, _ = files
    decoder = FakeDecoder(b"JFIF")  # PIL writes a JFIF header into every JPEG it saves
    _all(paths, jpeg_decoder=decoder)
    assert any(n > 1 for n in decoder.calls) and 1 in decoder.calls


def test_batches_are_pinned_for_cuda(monkeypatch):
    pinned = []
    monkeypatch.setattr(torch.Tensor, "pin_memory", lambda self: pinned.append(self.shape) or self)
    batch = ImageBatch([0], torch.zeros(1, 3, 2, 2), [], [(1, torch.zeros(10, dtype=torch.uint8))])
    same = batch.pin_memory()
    assert pinned == [(1, 3, 2, 2), (10,)] and same.indices == [0] and same.jpegs[0][0] == 1


def test_a_cuda_target_pins_and_decodes_with_nvjpeg(monkeypatch, tmp_path):
    seen = {}

    class Stop(Exception):
        pass

    def loader(dataset, **kwargs):
        seen.update(kwargs, raw_jpeg=dataset.raw_jpeg)
        raise Stop

    monkeypatch.setattr(batches, "DataLoader", loader)
    monkeypatch.setattr(batches, "nvjpeg_decoder", lambda device: seen.setdefault("decoder_device", device))
    with pytest.raises(Stop):
        next(image_batches(["a.jpg"], SPEC, device="cuda"))
    assert seen["pin_memory"] is True and seen["raw_jpeg"] is True and seen["decoder_device"].type == "cuda"
    with pytest.raises(Stop):
        next(image_batches(["a.jpg"], SPEC, device="cpu"))
    assert seen["pin_memory"] is False and seen["raw_jpeg"] is False


def test_nvjpeg_decoder_asks_torchvision_for_rgb_on_the_device(monkeypatch):
    import torchvision.io

    calls = []
    monkeypatch.setattr(torchvision.io, "decode_jpeg", lambda data, mode, device: calls.append((mode, device)))
    jpeg.nvjpeg_decoder(torch.device("cuda:1"))([torch.zeros(3, dtype=torch.uint8)])
    assert calls == [(ImageReadMode.RGB, torch.device("cuda:1"))]


@pytest.mark.parametrize("images, batch, cores, expected", [
    (256, 16, 2, 0),     # two cores: a reader takes CPU from torch
    (32, 16, 16, 0),     # two batches: not worth a process
    (256, 16, 16, 8),    # half the cores
    (1000, 16, 4, 2),
    (40, 16, 16, 3),     # at most one reader per batch
])
def test_default_reader_processes(images, batch, cores, expected):
    assert default_reader_processes(images, batch, cores) == expected


def test_an_extreme_aspect_jpeg_never_takes_the_gpu_path(tmp_path):
    """A 1 x 20000 JPEG is small on disk but huge once its short side is resized: the GPU path
    leaves it to load_image, which refuses it in one line."""
    from PIL import Image

    from captioner.data.images import ImageLoadError, load_image
    from captioner.data.jpeg import jpeg_bytes

    path = tmp_path / "strip.jpg"
    Image.new("RGB", (1, 20000), (200, 10, 10)).save(path)
    assert jpeg_bytes(str(path), 89_478_485) is not None  # within the plain pixel limit
    assert jpeg_bytes(str(path), 89_478_485, resize_to=256) is None
    with pytest.raises(ImageLoadError, match="extreme aspect ratio"):
        load_image(path, 89_478_485, resize_to=256)
