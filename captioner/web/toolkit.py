"""What the web page does, without the web: thin calls into the Python API, testable on their own.

:class:`Toolkit` holds the models one server shares between requests: the captioner (whose
guide and proxy table are safe under concurrent calls), and, made on first use, the
encoder copy that visualisations optimise through and the victims of the attacks (each its
own model, since an attack switches its model's mode and needs gradients). The page runs
attacks and visualisations one at a time (:mod:`captioner.web.app`), so those are never
shared by two requests at once.
"""

from __future__ import annotations

import copy
import os
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

from ..api import Captioner
from ..data.images import DEFAULT_MAX_PIXELS, load_image
from ..errors import ArgumentError
from ..report_pages import jpeg_thumbnail

#: Bounds of what one request may ask of the page (the CLI's own limits apply beneath them).
MAX_VISUALIZE_STEPS = 256
MAX_VISUALIZE_IMAGES = 16


@dataclass
class AttackOutcome:
    """An attack as the page shows it: the record and the bytes of the three pictures."""

    record: dict
    original: bytes
    adversarial: bytes
    perturbation: bytes


def split_list(text: str | None) -> list[str]:
    """Comma-separated items of a text field, stripped, empties dropped."""
    return [item.strip() for item in (text or "").split(",") if item.strip()]


class Toolkit:
    """The page's actions on one checkpoint; what it needs besides the captioner is made on first use."""

    def __init__(self, checkpoint: str | os.PathLike | None = None, device: str | None = None,
                 max_pixels: int = DEFAULT_MAX_PIXELS):
        self.checkpoint = checkpoint
        self.captioner = Captioner.from_checkpoint(checkpoint, device=device)
        self.device = self.captioner.device
        self.max_pixels = max_pixels
        self._lock = threading.RLock()  # a made thing may need another (layers need the encoder)
        self._made: dict[str, object] = {}

    def _once(self, key: str, make):
        with self._lock:
            if key not in self._made:
                self._made[key] = make()
            return self._made[key]

    # -- Caption -------------------------------------------------------------------------
    def caption(self, path: str, include: list[str] = (), **options) -> dict:
        """The record of one uploaded image (``CaptionResult.to_dict()``: captions, or its error).
        ``options``: decoding settings; bad ones raise the API's one-line error."""
        settings, _ = self.captioner.request(include=include, **options)
        result = next(iter(self.captioner.caption_files([path], num_workers=0, max_pixels=self.max_pixels,
                                                        include=include, settings=settings)))
        return result.to_dict()

    # -- Visualise -----------------------------------------------------------------------
    @property
    def encoder(self):
        """A copy of the captioner's encoder for optimising images through (gradients, eval mode)."""
        return self._once("encoder", lambda: copy.deepcopy(self.captioner.model.encoder))

    def layers(self) -> list[str]:
        from ..visualization import list_layers

        return self._once("layers", lambda: [info.name for info in list_layers(self.encoder)])

    def visualize(self, kind: str, classes: str = "", layer: str = "", channels: str = "", steps: int = 64,
                  size: int = 128, seed: int = 0):
        """Class images (``classes``: comma-separated names or indices) or filter images of a
        layer's ``channels`` (``0:8``, ``3``, ``0,5,9``): a :class:`captioner.visualization.Visualization`."""
        from .. import visualization as viz
        from ..cli.visualize import parse_channels

        steps = int(steps)
        if not 1 <= steps <= MAX_VISUALIZE_STEPS:
            raise ArgumentError(f"steps must be between 1 and {MAX_VISUALIZE_STEPS}, got {steps}")
        options = dict(steps=steps, seed=int(seed), progress=False)
        if kind == "class":
            targets = split_list(classes)
            if not targets:
                raise ArgumentError("name a class (espresso, tabby, 281) to visualise")
            targets = [int(t) if t.isdigit() else t for t in targets]
            self._bounded(targets)
            return viz.visualize_class(self.encoder, targets, **options)
        if kind == "filters":
            if not layer:
                raise ArgumentError("choose a layer to visualise")
            chosen = parse_channels(channels or "0:8")
            self._bounded(chosen)
            return viz.visualize_filters(self.encoder, layer, chosen, size=int(size), **options)
        raise ArgumentError(f"unknown visualisation {kind!r}; choose class or filters")

    @staticmethod
    def _bounded(targets: list) -> None:
        if len(targets) > MAX_VISUALIZE_IMAGES:
            raise ArgumentError(f"{len(targets)} images asked for; at most {MAX_VISUALIZE_IMAGES} per request")

    # -- Explain -------------------------------------------------------------------------
    def explain(self, path: str, include: list[str] = (), saliency: list[str] = ("gradcam",), **options):
        """The :class:`captioner.explain.Explanation` of one upload's caption (``options``: decoding
        settings). On its own captioner: the saliency maps hook into the encoder, which must not
        fire inside a caption request running beside it."""
        from ..explain import explain_images

        captioner = self._once("explained captioner",
                               lambda: Captioner.from_checkpoint(self.checkpoint, device=self.device))
        return explain_images(captioner, [path], include=include, saliency=tuple(saliency),
                              max_pixels=self.max_pixels, **options)[0]

    # -- Attack --------------------------------------------------------------------------
    def attack(self, path: str, victim: str = "classifier", method: str | None = None, eps: str = "2/255",
               steps: int = 10, target: str = "") -> AttackOutcome:
        """Attack the ImageNet classifier or the captioner on one image, as ``captioner attack
        classify|caption`` does (the same session functions, into a temporary folder)."""
        from ..attacks.captioner import CaptionVictim
        from ..attacks.session import attack_caption, attack_classifier, classifier_victim
        from ..cli.attack import parse_eps

        eps_value = parse_eps(eps, "eps")
        original = jpeg_thumbnail(load_image(path, max_pixels=self.max_pixels), 640)  # the page's pixel limit first
        target = (target or "").strip() or None
        options = dict(eps=eps_value, method=method or None, steps=int(steps), device=self.device)
        with tempfile.TemporaryDirectory(prefix="captioner-attack-") as out:
            if victim == "classifier":
                model = self.captioner.model.encoder.spec.backbone
                made = self._once("classifier", lambda: classifier_victim(model, self.device))
                attacked = attack_classifier(path, out, model=model, target=target, victim=made, **options)
            elif victim == "captioner":
                captioner = self._once("attacked captioner",
                                       lambda: Captioner.from_checkpoint(self.checkpoint, device=self.device))
                attacked = attack_caption(path, out, checkpoint=self.checkpoint, target_caption=target,
                                          victim=CaptionVictim(captioner), **options)
            else:
                raise ArgumentError(f"unknown victim {victim!r}; choose classifier or captioner")
            files = attacked.record["files"]
            read = {name: Path(files[name]).read_bytes() for name in ("adversarial", "perturbation")}
        return AttackOutcome(attacked.record, original, read["adversarial"], read["perturbation"])
