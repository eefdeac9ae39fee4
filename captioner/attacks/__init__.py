"""Adversarial examples: FGSM, BIM (I-FGSM) and PGD against classifiers and the captioner.

    >>> from captioner.attacks import FGSM, BIM, PixelClassifier
    >>> model = PixelClassifier(build_encoder(EncoderSpec()))     # preprocessing inside
    >>> result = FGSM(model, eps=2/255).run(pixels)               # (3, H, W) uint8 or [0, 1] floats
    >>> result.fooled, result.saved_fooled                        # float result, 8-bit result
    >>> BIM(model, eps=8/255, steps=10).run(pixels, target="gibbon")

Attacks work in [0, 1] pixel space on the user's full-size image (resize and crop are
part of the attacked function). The modules: :mod:`.base` (the loop every attack
shares), :mod:`.fgsm` and :mod:`.iterative` (the attacks), :mod:`.methods` (attacks by
name), :mod:`.victims` (classifiers as victims), :mod:`.captioner` (the captioner as a
victim), :mod:`.report` (robustness over a set of images, and the files an attack
leaves), :mod:`.session` (attacks on image files, as ``captioner attack`` runs them)::

    >>> attack_classifier("coffee.jpg", "out/", target="golden_retriever", eps=8/255, method="bim").lines
"""

from .base import Attack, AttackResult
from .captioner import CaptionVictim
from .fgsm import FGSM
from .iterative import BIM, PGD
from .methods import METHODS, make_attack
from .session import ImageAttack, attack_caption, attack_classifier, robustness
from .victims import ClassifierVictim, PixelClassifier

__all__ = [
    "Attack", "AttackResult", "BIM", "CaptionVictim", "ClassifierVictim", "FGSM", "ImageAttack", "METHODS", "PGD",
    "PixelClassifier", "attack_caption", "attack_classifier", "make_attack", "robustness",
]
