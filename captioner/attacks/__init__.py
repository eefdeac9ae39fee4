"""Adversarial examples: FGSM, BIM (I-FGSM) and PGD against classifiers and the captioner.

    >>> from captioner.attacks import FGSM, BIM, PixelClassifier
    >>> model = PixelClassifier(build_encoder(EncoderSpec()))     # preprocessing inside
    >>> result = FGSM(model, eps=2/255).run(pixels)               # (3, H, W) uint8 or [0, 1] floats
    >>> result.fooled, result.saved_fooled                        # float result, 8-bit result
    >>> BIM(model, eps=8/255, steps=10).run(pixels, target="gibbon")

Attacks work in [0, 1] pixel space on the user's full-size image (resize and crop are
part of the attacked function); see :mod:`captioner.attacks.base`. Captioners are
attacked through :class:`CaptionVictim`; :mod:`captioner.attacks.report` measures
robustness over a set of images.
"""

from .base import (Attack, AttackResult, ClassifierVictim, PixelClassifier, quantize, rnn_backward_without_cudnn,
                   to_uint8)
from .captioner import CaptionVictim
from .fgsm import FGSM
from .iterative import BIM, PGD

METHODS = {"fgsm": FGSM, "bim": BIM, "pgd": PGD}


def make_attack(method: str, model, eps: float, steps: int = 10, alpha: float | None = None, **options) -> Attack:
    """An attack by name: ``fgsm`` (one step; ``steps`` and ``alpha`` unused), ``bim`` or ``pgd``."""
    if method not in METHODS:
        raise ValueError(f"unknown attack method {method!r}; choose one of {', '.join(METHODS)}")
    if method == "fgsm":
        return FGSM(model, eps, **options)
    return METHODS[method](model, eps, alpha=alpha, steps=steps, **options)


__all__ = [
    "Attack", "AttackResult", "BIM", "CaptionVictim", "ClassifierVictim", "FGSM", "METHODS", "PGD",
    "PixelClassifier", "make_attack", "quantize", "rnn_backward_without_cudnn", "to_uint8",
]
