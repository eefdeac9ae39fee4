"""The 8-bit codec: rounding to the levels a PNG stores, within an eps-ball or not, and writing PNGs."""

import numpy as np
import torch
from PIL import Image

from captioner.data.eightbit import round_to_levels, round_within_eps, save_png, to_pil, to_uint8


def test_round_within_eps_stays_in_the_ball():
    images = torch.tensor([10, 100, 200, 255]).float().view(1, 1, 1, 4).expand(1, 3, 1, 4) / 255
    adversarial = images + torch.tensor([1.4, -1.6, 0.4, -0.6]).view(1, 1, 1, 4) / 255
    rounded = round_within_eps(adversarial, images, eps=1.5 / 255) * 255
    # nearest levels would be +1, -2, 0, -1; -2 is outside eps = 1.5 levels, so -1
    assert torch.equal(rounded[0, 0, 0], torch.tensor([11.0, 99.0, 200.0, 254.0]))


def test_round_to_levels_and_to_uint8_agree_and_clamp():
    pixels = torch.tensor([-0.2, 0.0, 1.4 / 255, 1.6 / 255, 127.5 / 255, 1.0, 1.3])
    assert torch.equal(to_uint8(pixels), torch.tensor([0, 0, 1, 2, 128, 255, 255], dtype=torch.uint8))
    assert torch.equal(round_to_levels(pixels), to_uint8(pixels).float() / 255)


def test_png_holds_exactly_the_rounded_levels(tmp_path):
    pixels = torch.rand(3, 5, 7, generator=torch.Generator().manual_seed(0))
    pixels[0, 0, 0] = 1.2  # out of range: clamped, not wrapped
    save_png(pixels, tmp_path / "tensor.png")
    read = torch.from_numpy(np.array(Image.open(tmp_path / "tensor.png"))).permute(2, 0, 1)
    assert read.shape == (3, 5, 7) and torch.equal(read, to_uint8(pixels)) and read[0, 0, 0] == 255
    assert torch.equal(read.float() / 255, round_to_levels(pixels))
    # a tensor and its PIL image give the same file
    save_png(to_pil(pixels), tmp_path / "pil.png")
    assert (tmp_path / "pil.png").read_bytes() == (tmp_path / "tensor.png").read_bytes()
    assert not list(tmp_path.glob(".*.tmp"))  # written atomically: no temporary file left behind
