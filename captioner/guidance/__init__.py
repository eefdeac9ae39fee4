"""Guided decoding: turning what the encoder's ImageNet classifier is sure of, and the words a
user asks for, into constraints on the caption (:mod:`.imagenet`, :mod:`.names`,
:mod:`.proxies` for words the decoder never saw)."""

from .imagenet import Forced, GuidanceError, ImageNetGuide, has_imagenet_head
from .names import Concept, ImageNetNames, load_imagenet_names
from .proxies import choose_proxies

__all__ = ["Concept", "Forced", "GuidanceError", "ImageNetGuide", "ImageNetNames", "choose_proxies",
           "has_imagenet_head", "load_imagenet_names"]
