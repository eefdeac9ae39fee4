"""The attacks by name, as the CLI and the robustness report choose them."""

from __future__ import annotations

from ..errors import ArgumentError
from .base import Attack
from .fgsm import FGSM
from .iterative import BIM, PGD

METHODS = {"fgsm": FGSM, "bim": BIM, "pgd": PGD}


def make_attack(method: str, model, eps: float, steps: int = 10, alpha: float | None = None, **options) -> Attack:
    """An attack by name: ``fgsm`` (one step; ``steps`` and ``alpha`` unused), ``bim`` or ``pgd``."""
    if method not in METHODS:
        raise ArgumentError(f"unknown attack method {method!r}; choose one of {', '.join(METHODS)}")
    if method == "fgsm":
        return FGSM(model, eps, **options)
    return METHODS[method](model, eps, alpha=alpha, steps=steps, **options)
