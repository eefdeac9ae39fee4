"""The shared preprocessing: known answers for resize, crop and normalisation."""

import numpy as np
import pytest
import torch
from PIL import Image

from captioner.data.preprocess import Preprocessing, normalize, preprocess


def test_constant_image_stays_constant_at_crop_size():
    spec = Preprocessing(resize_size=40, crop_size=32)
    image = Image.new("RGB", (100, 50), (255, 128, 0))
    out = preprocess(image, spec)
    assert out.shape == (3, 32, 32)
    assert out.dtype == torch.float32
    expected = torch.tensor([1.0, 128 / 255, 0.0]).view(3, 1, 1).expand(3, 32, 32)
    assert torch.allclose(out, expected, atol=1e-6)


def test_shorter_side_is_resized_then_centre_cropped():
    # A 200x100 image whose middle 100x100 square is white and the sides black:
    # resizing the shorter side to 50 gives 100x50, the centre 50x50 crop is all white.
    array = np.zeros((100, 200, 3), dtype=np.uint8)
    array[:, 50:150] = 255
    out = preprocess(Image.fromarray(array), Preprocessing(resize_size=50, crop_size=50))
    assert out.shape == (3, 50, 50)
    assert out[:, :, 1:-1].min().item() > 0.99
    # A narrower white band (60 of 200 columns) becomes 30 of 100 after the resize;
    # the centre crop of 50 keeps it in the middle with 10 black columns on each side.
    array = np.zeros((100, 200, 3), dtype=np.uint8)
    array[:, 70:130] = 255
    band = preprocess(Image.fromarray(array), Preprocessing(resize_size=50, crop_size=50))
    column = band[0, 25]
    assert column[:9].max().item() < 0.01 and column[-9:].max().item() < 0.01
    assert column[11:39].min().item() > 0.99
    assert torch.allclose(band, band.flip(-1), atol=1e-6)


def test_uint8_and_float_inputs_agree():
    rng = np.random.default_rng(0)
    array = rng.integers(0, 256, (3, 90, 70), dtype=np.uint8)
    spec = Preprocessing(resize_size=48, crop_size=40)
    from_uint8 = preprocess(torch.from_numpy(array), spec)
    from_float = preprocess(torch.from_numpy(array).float() / 255, spec)
    assert (from_uint8 - from_float).abs().max().item() <= 1.5 / 255  # uint8 path rounds once


def test_pil_and_tensor_inputs_give_identical_pixels():
    rng = np.random.default_rng(1)
    array = rng.integers(0, 256, (61, 83, 3), dtype=np.uint8)
    spec = Preprocessing(resize_size=36, crop_size=32)
    assert torch.equal(preprocess(Image.fromarray(array), spec),
                       preprocess(torch.from_numpy(array).permute(2, 0, 1).contiguous(), spec))


def test_batches_are_processed_like_single_images():
    x = torch.rand(4, 3, 50, 60)
    spec = Preprocessing(resize_size=30, crop_size=24)
    batch = preprocess(x, spec)
    assert batch.shape == (4, 3, 24, 24)
    for i in range(4):
        assert torch.allclose(batch[i], preprocess(x[i], spec), atol=1e-6)


def test_float_path_is_differentiable():
    x = torch.rand(3, 50, 60, requires_grad=True)
    preprocess(x, Preprocessing(resize_size=30, crop_size=24)).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert x.grad.shape == x.shape


def test_normalize_known_values():
    spec = Preprocessing(mean=(0.5, 0.25, 0.0), std=(0.5, 0.25, 2.0))
    pixels = torch.tensor([1.0, 0.5, 1.0]).view(3, 1, 1)
    assert normalize(pixels, spec).flatten().tolist() == [1.0, 1.0, 0.5]


def test_spec_roundtrip_and_validation():
    spec = Preprocessing(resize_size=272, crop_size=240, mean=(0.1, 0.2, 0.3), std=(1, 2, 3), interpolation="bicubic")
    assert Preprocessing.from_dict(spec.to_dict()) == spec
    with pytest.raises(ValueError, match="crop_size"):
        Preprocessing(resize_size=100, crop_size=200)
    with pytest.raises(ValueError, match="interpolation"):
        Preprocessing(interpolation="lanczos9")


def test_rejects_wrong_shapes():
    with pytest.raises(ValueError, match="shape"):
        preprocess(torch.rand(1, 50, 50), Preprocessing())
    with pytest.raises(TypeError):
        preprocess(np.zeros((3, 4, 4)), Preprocessing())


def test_an_8_bit_image_and_its_levels_as_floats_give_the_same_pixels():
    """What is measured on a float image rounded to 8 bits must be what its PNG gives when read back
    (before, uint8 input was resized in uint8 and rounded again: up to 0.5/255 apart)."""
    from captioner.data.preprocess import Preprocessing, preprocess

    levels = torch.randint(0, 256, (3, 97, 131), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    spec = Preprocessing(resize_size=80, crop_size=64)
    as_uint8 = preprocess(levels, spec)
    as_float = preprocess(levels.float() / 255, spec)
    assert torch.equal(as_uint8, as_float)
