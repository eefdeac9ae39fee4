"""Hand-built models for the explanation tests, where the right saliency map is known."""

from __future__ import annotations

import torch
from torch import nn

from captioner.api import Captioner
from captioner.data.preprocess import Preprocessing
from captioner.data.vocab import Vocabulary
from captioner.models import CaptionModel, DecoderConfig, EncoderSpec, ImageEncoder, LSTMDecoder

SIZE = 32  # pixels; the feature grid is 8 x 8 (one cell per 4 x 4 patch)
GRID = SIZE // 4
OPEN, SHUT = 20.0, -20.0  # gate pre-activations: sigmoid(20) = 1 - 2e-9, sigmoid(-20) = 2e-9


class RegionMask(nn.Module):
    """Feature channel 0 kept in the grid's top-left quarter only, channel 1 in its bottom-right."""

    def __init__(self):
        super().__init__()
        mask = torch.zeros(2, GRID, GRID)
        mask[0, :GRID // 2, :GRID // 2] = 1.0
        mask[1, GRID // 2:, GRID // 2:] = 1.0
        self.register_buffer("mask", mask)

    def forward(self, grid: torch.Tensor) -> torch.Tensor:
        return grid * self.mask


def region_captioner(device: str = "cpu") -> Captioner:
    """A captioner that reads "red" from the redness of the image's top-left quarter only and
    "green" from the greenness of its bottom-right quarter only.

    Encoder: a 4 x 4 stride-4 convolution (channel 0: mean red, channel 1: mean green of each
    patch), then :class:`RegionMask`, then average pooling, so feature 0 is the top-left
    quarter's redness and feature 1 the bottom-right quarter's greenness. Decoder (one LSTM
    layer, two units): c0 = 4 x features, the input gates shut and the forget gates open, so
    every step's cell state is c0; unit 0's output gate opens only after <start> and unit 1's
    only after "red"; the logit of "red" is 5 h[0], that of "green" 5 h[1], every other logit
    0. So at step 1 log p(red) depends on feature 0 alone, at step 2 log p(green) on feature 1
    alone (to about 1e-8: the gates' leaks)."""
    vocab = Vocabulary.build(["red green"])
    red, green = vocab.stoi["red"], vocab.stoi["green"]
    body = nn.Sequential(nn.Conv2d(3, 2, 4, stride=4, bias=False), RegionMask())
    neck = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1))
    spec = EncoderSpec("region", weights=None, preprocessing=Preprocessing(SIZE, SIZE, (0.0,) * 3, (1.0,) * 3))
    encoder = ImageEncoder(spec, body, neck, None, feature_dim=2)
    decoder = LSTMDecoder(DecoderConfig(len(vocab), 2, embed_dim=2, hidden_size=2, num_layers=1, dropout=0.0))
    with torch.no_grad():
        for p in [*body.parameters(), *decoder.parameters()]:
            p.zero_()
        body[0].weight[0, 0] = 1 / 16
        body[0].weight[1, 1] = 1 / 16
        decoder.init_c.weight.copy_(4.0 * torch.eye(2))
        decoder.embed.weight[vocab.start_id, 0] = 1.0
        decoder.embed.weight[red, 1] = 1.0
        lstm = decoder.lstm  # gate rows: input 0-1, forget 2-3, cell 4-5, output 6-7
        lstm.bias_ih_l0[0:2] = SHUT
        lstm.bias_ih_l0[2:4] = OPEN
        lstm.bias_ih_l0[6:8] = SHUT
        lstm.weight_ih_l0[6, 0] = lstm.weight_ih_l0[7, 1] = OPEN - SHUT
        decoder.out.weight[red, 0] = decoder.out.weight[green, 1] = 5.0
    return Captioner(CaptionModel(encoder, decoder), vocab, device=device, decoding={"guide": "none"})


def region_image(green: bool = True, seed: int = 0) -> torch.Tensor:
    """(3, 32, 32): a textured red top-left quarter, a textured green bottom-right quarter (or a
    black one) and a black-and-white checkerboard in the other two quarters (where an edge
    detector peaks)."""
    generator = torch.Generator().manual_seed(seed)
    image = torch.zeros(3, SIZE, SIZE)
    half = SIZE // 2
    image[0, :half, :half] = 0.6 + 0.4 * torch.rand(half, half, generator=generator)
    if green:
        image[1, half:, half:] = 0.6 + 0.4 * torch.rand(half, half, generator=generator)
    rows, cols = torch.meshgrid(torch.arange(SIZE), torch.arange(SIZE), indexing="ij")
    checker = ((rows // 2 + cols // 2) % 2).float()
    image[:, :half, half:] = checker[:half, half:]
    image[:, half:, :half] = checker[half:, :half]
    return image
