"""The iterative forms of FGSM: BIM (I-FGSM) and PGD.

BIM, the Basic Iterative Method of Kurakin, Goodfellow and Bengio ("Adversarial
examples in the physical world", 2016), takes ``steps`` sign-gradient steps of size
``alpha``, each projected back into the eps-ball around the input and into [0, 1].
PGD (Madry et al., "Towards deep learning models resistant to adversarial attacks",
ICLR 2018) is the same loop started from a uniformly random point of the ball.

The default step size is ``alpha = 2.5 * eps / steps`` (Madry et al.'s rule): large
enough to reach the edge of the ball from anywhere inside it, small enough to refine.
"""

from __future__ import annotations

import torch

from ..data.eightbit import LEVELS
from ..errors import ArgumentError
from .base import Attack


class BIM(Attack):
    """Iterative FGSM: ``steps`` projected steps of size ``alpha`` (default 2.5 * eps / steps)."""

    name = "bim"

    def __init__(self, model, eps: float, alpha: float | None = None, steps: int = 10, **options):
        super().__init__(model, eps, **options)
        if steps < 1:
            raise ArgumentError(f"steps must be at least 1, got {steps}")
        self.steps = int(steps)
        self.alpha = 2.5 * self.eps / self.steps if alpha is None else float(alpha)
        if self.alpha < 0:
            raise ArgumentError(f"the step size alpha must not be negative, got {alpha}")

    @property
    def step_size(self) -> float:
        return max(self.alpha, 1.0 / LEVELS)

    def start(self, images: torch.Tensor) -> torch.Tensor:
        return images

    def perturb(self, images: torch.Tensor, labels: torch.Tensor, targeted: bool) -> torch.Tensor:
        adversarial = self.start(images)
        for _ in range(self.steps):
            grad = self.gradient(adversarial, labels, targeted)
            adversarial = self.project(adversarial + self.alpha * grad.sign(), images).detach()
        return adversarial


class PGD(BIM):
    """BIM from a uniformly random start in the eps-ball (``random_start=False``: plain BIM).

    The start is drawn with ``generator`` (default: torch's global generator, so
    ``torch.manual_seed`` makes runs repeatable).
    """

    name = "pgd"

    def __init__(self, model, eps: float, alpha: float | None = None, steps: int = 10, random_start: bool = True,
                 generator: torch.Generator | None = None, **options):
        super().__init__(model, eps, alpha, steps, **options)
        self.random_start = random_start
        self.generator = generator

    def start(self, images: torch.Tensor) -> torch.Tensor:
        if not self.random_start:
            return images
        noise = torch.empty_like(images).uniform_(-self.eps, self.eps, generator=self.generator)
        return torch.clamp(images + noise, min=0.0, max=1.0)
