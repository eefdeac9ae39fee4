"""Saliency maps for the words of a caption: how much each region of the image drove each
word's log-probability, by Captum's attribution methods.

* Grad-CAM (Selvaraju et al., 2017) on the encoder's last feature map: the map's channels
  weighted by the mean gradient of the word's log-probability, summed, ReLU. The feature map is
  computed once; only the pooling and the decoder are run again, for all the words at once
  (one batch row per word), so it costs about one backward pass of the decoder.
* On pixels: SmoothGrad (Smilkov et al., 2017; Captum's NoiseTunnel over Saliency: |gradient|
  averaged over noisy copies, max over colour channels) or Integrated Gradients (Sundararajan
  et al., 2017; from a black image, |attribution| summed over colour channels). Each needs a
  backward pass through the whole encoder per word and per sample.

Every map here is a gradient story about this model: where a small change of the input would
change the word's score most (or, for Grad-CAM, which feature-map cells carry weight for it).
Show-and-Tell has no attention; these maps are not where the model "looked".

Captum is imported where a map is made (importing it takes seconds), not with this module.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

PIXEL_METHODS = ("smoothgrad", "integrated_gradients")
METHODS = ("gradcam", *PIXEL_METHODS)
MAX_BATCH = 32  # images per forward/backward pass of the pixel methods


@dataclass(frozen=True)
class SaliencySettings:
    """``samples``/``noise``: SmoothGrad's noisy copies per word and their standard deviation
    (pixels are in [0, 1], so 0.15 is 15% of the range, in the paper's recommended 10-20%);
    ``steps``: Integrated Gradients' points on the path from a black image (Gauss-Legendre)."""

    samples: int = 4
    noise: float = 0.15
    steps: int = 16
    seed: int = 0

    def __post_init__(self):
        from ..errors import ArgumentError

        if self.samples < 1:
            raise ArgumentError(f"SmoothGrad needs at least 1 sample per word (--samples), got {self.samples}")
        if not self.noise >= 0:
            raise ArgumentError(f"SmoothGrad's noise (--noise) must be 0 or more, got {self.noise}")
        if self.steps < 2:
            raise ArgumentError(f"Integrated Gradients needs at least 2 steps (--ig-steps), got {self.steps}")

    def to_dict(self) -> dict:
        return asdict(self)


class WordScores(nn.Module):
    """The caption's word log-probabilities (N, words) from the encoder's feature grid
    (N, C, h, w): pooling, then the teacher-forced decoder. ``grid`` is the layer Grad-CAM
    hooks (the encoder's last feature map); ``score`` is :meth:`Captioner.word_log_probs`."""

    def __init__(self, neck: nn.Module, score, fed: torch.Tensor, lengths: torch.Tensor, words: int):
        super().__init__()
        self.grid, self.neck = nn.Identity(), neck
        self.score, self.fed, self.lengths, self.words = score, fed, lengths, words

    def forward(self, grid: torch.Tensor) -> torch.Tensor:
        n = grid.shape[0]
        features = self.neck(self.grid(grid))
        return self.score(features, self.fed.expand(n, -1), self.lengths.expand(n))[:, :self.words]


def gradcam(encoder, scores: WordScores, pixels: torch.Tensor, grid: torch.Tensor | None = None) -> torch.Tensor:
    """Grad-CAM of each word on the encoder's last feature map (``grid``, computed from
    ``pixels`` when not given): (words, h, w), >= 0."""
    from captum.attr import LayerGradCam

    if grid is None:
        with torch.no_grad():
            grid = encoder.grid(pixels)
    grid = grid.expand(scores.words, -1, -1, -1).contiguous()
    with torch.enable_grad():
        maps = LayerGradCam(scores, scores.grid).attribute(grid, target=list(range(scores.words)),
                                                           relu_attributions=True)
    return maps[:, 0].detach()


def pixel_saliency(method: str, encoder, scores: WordScores, pixels: torch.Tensor,
                   settings: SaliencySettings) -> torch.Tensor:
    """A pixel-gradient map of each word: (words, S, S), >= 0 (see the module)."""
    from captum.attr import IntegratedGradients, NoiseTunnel, Saliency

    words = scores.words

    def forward(x: torch.Tensor) -> torch.Tensor:
        return scores(encoder.grid(x))

    inputs = pixels.expand(words, -1, -1, -1).contiguous()
    target = list(range(words))
    with torch.enable_grad():
        if method == "smoothgrad":
            devices = [pixels.device] if pixels.device.type == "cuda" else []
            with torch.random.fork_rng(devices=devices):
                torch.manual_seed(settings.seed)
                maps = NoiseTunnel(Saliency(forward)).attribute(
                    inputs, nt_type="smoothgrad", nt_samples=settings.samples, stdevs=settings.noise, target=target,
                    nt_samples_batch_size=max(1, MAX_BATCH // words), abs=True)
            return maps.amax(1).detach()
        if method == "integrated_gradients":
            maps = IntegratedGradients(forward).attribute(inputs, baselines=0.0, target=target, n_steps=settings.steps,
                                                          internal_batch_size=MAX_BATCH)
            return maps.abs().sum(1).detach()
    raise ValueError(f"unknown pixel saliency method {method!r}; use one of {', '.join(PIXEL_METHODS)}")
