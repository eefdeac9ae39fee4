"""FGSM, the Fast Gradient Sign Method (Goodfellow, Shlens and Szegedy, ICLR 2015)."""

from __future__ import annotations

import torch

from .base import Attack


class FGSM(Attack):
    """One step of size ``eps`` along the sign of the gradient.

    Untargeted: ``x + eps * sign(grad loss(label))``, away from the label (by default the
    model's own prediction). Targeted: ``x - eps * sign(grad loss(target))``, towards the
    target. Clamped to [0, 1].
    """

    name = "fgsm"

    def perturb(self, images: torch.Tensor, labels: torch.Tensor, targeted: bool) -> torch.Tensor:
        grad = self.gradient(images, labels, targeted)
        return torch.clamp(images + self.eps * grad.sign(), min=0.0, max=1.0)
