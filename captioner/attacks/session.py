"""Attacks on image files, as ``captioner attack`` runs them; a notebook can call them too.

* :func:`attack_classifier` and :func:`attack_caption` attack one image file, save the
  adversarial PNG, the amplified perturbation, a side-by-side figure and the record
  (``STEM_attack.json``) in ``out``, and return an :class:`ImageAttack`: the record and
  its text summary;
* :func:`robustness` attacks many images at several eps and writes ``report.json``,
  ``report.png`` and ``report.md`` (see :mod:`captioner.attacks.report`).

The method defaults to FGSM, and to BIM for a target caption (one sign step rarely
makes a captioner write a whole chosen sentence).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from ..data.images import ImageLoadError, find_images, load_image
from ..data.preprocess import pil_to_tensor
from ..distributed import setup, teardown
from ..errors import ArgumentError
from ..fileio import check_writable, write_json_atomic
from .base import Attack, AttackResult
from .captioner import CaptionVictim
from .methods import make_attack
from .report import format_eps, robustness_report, save_attack_files, write_report
from .victims import ClassifierVictim, PixelClassifier


@dataclass
class ImageAttack:
    """What attacking one image gave: ``record`` (as written to ``STEM_attack.json``) and
    ``lines``, the same in words, ending with the files written."""

    record: dict
    lines: list[str]


# -- victims and attacks --------------------------------------------------------------------
def classifier_victim(model: str = "efficientnet_lite0", device: str | torch.device | None = None) -> ClassifierVictim:
    """The ImageNet classifier of an encoder backbone, on the user's full-size pixels."""
    from ..models import EncoderSpec, build_encoder
    from ..runtime import resolve_device

    return ClassifierVictim(PixelClassifier(build_encoder(EncoderSpec(model))).to(resolve_device(device)))


def caption_victim(checkpoint: str | os.PathLike | None = None, device: str | torch.device | None = None,
                   decode: str | None = None, guide: str | None = None) -> CaptionVictim:
    """The captioner of ``checkpoint`` (default: the bundled model); ``decode``: beam or greedy;
    ``guide``: none or imagenet (default: the checkpoint's, as for ``captioner caption``)."""
    from ..api import Captioner

    return CaptionVictim(Captioner.from_checkpoint(checkpoint, device=device), method=decode, guide=guide)


def default_method(victim, targeted: bool) -> str:
    return "bim" if targeted and victim.kind == "captioner" else "fgsm"


def build_attack(victim, eps: float, method: str | None = None, steps: int = 10, alpha: float | None = None,
                 seed: int = 0, targeted: bool = False, **options) -> Attack:
    """``method`` (default: :func:`default_method`) on ``victim``; PGD's random start is drawn
    from ``seed`` on the victim's device. ``options``: ``until_saved``, ``max_extra_steps``."""
    method = method or default_method(victim, targeted)
    if method == "pgd":
        device = next(victim.module.parameters()).device
        options["generator"] = torch.Generator(device=device).manual_seed(seed)
    return make_attack(method, victim, eps, steps, alpha, **options)


def read_pixels(path: str | os.PathLike, resize_to: int | None = None) -> torch.Tensor:
    """An image file as (3, H, W) uint8; unreadable files, and with ``resize_to`` (the victim's
    preprocessing) images whose resize would be huge, raise a ValueError naming the file."""
    try:
        return pil_to_tensor(load_image(path, resize_to=resize_to))
    except ImageLoadError as error:
        raise ArgumentError(str(error)) from None


def top_classes(victim: ClassifierVictim, pixels: torch.Tensor, k: int = 5) -> list[dict]:
    """The ``k`` most probable classes of one image: label, index and probability (rounded)."""
    probabilities = victim.probabilities(pixels)[0]
    values, indices = probabilities.topk(min(k, len(probabilities)))
    return [{"label": name, "index": int(i), "probability": round(float(v), 4)}
            for name, i, v in zip(victim.describe(indices), indices, values)]


# -- one image -------------------------------------------------------------------------------
def attack_classifier(image: str | os.PathLike, out: str | os.PathLike, model: str = "efficientnet_lite0",
                      target: str | int | None = None, eps: float = 2 / 255, method: str | None = None,
                      steps: int = 10, alpha: float | None = None, seed: int = 0, until_saved: bool = False,
                      max_extra_steps: int = 20, device: str | torch.device | None = None,
                      victim: ClassifierVictim | None = None) -> ImageAttack:
    """Attack an ImageNet classifier on one image; ``target``: a class name or index (targeted).
    ``victim``: one made before by :func:`classifier_victim` (a server keeps it), else ``model``'s."""
    check_writable(out, folder=True)
    victim = victim or classifier_victim(model, device)
    pixels = read_pixels(image, victim.resize_size)
    target = None if target is None else victim.label_index(target)
    attack = build_attack(victim, eps, method, steps, alpha, seed, targeted=target is not None,
                          until_saved=until_saved, max_extra_steps=max_extra_steps)
    result = attack.run(pixels, target=target)
    before, after = (top_classes(victim, x.to(attack.device)) for x in (result.images, result.saved))
    record = {"image": str(image), "model": model, **_describe_attack(attack, result, eps),
              "target": None if target is None else victim.describe([target])[0],
              "before": before, "after": after}
    goal = f"target {record['target']}" if target is not None else "untargeted"
    summary = f"{attack.name.upper()}, {goal}, eps {format_eps(eps)}: {_outcome(result)} (saved PNG)"
    record["files"] = save_attack_files(
        result, 0, eps, out, Path(image).stem,
        [f"before\n{_column(before)}", f"perturbation (amplified), L-inf {record['linf_255']:.0f}/255",
         f"after (saved PNG)\n{_column(after)}"], [summary])
    lines = [
        f"{image}: {summary}",
        f"before: {_inline(before)}",
        f"after:  {_inline(after)}",
        f"fools the model: {_yes(record['fooled'])} (float image), {_yes(record['saved_fooled'])} (saved 8-bit PNG"
        + (f", {result.extra_steps} extra steps)" if result.extra_steps else ")"),
        f"perturbation: L-inf {record['linf_255']:g}/255, L2 {record['l2']:g}",
    ]
    return _finish(image, out, record, lines + _below_one_level(eps))


def attack_caption(image: str | os.PathLike, out: str | os.PathLike, checkpoint: str | os.PathLike | None = None,
                   target_caption: str | None = None, decode: str | None = None, guide: str | None = None,
                   eps: float = 2 / 255,
                   method: str | None = None, steps: int = 10, alpha: float | None = None, seed: int = 0,
                   until_saved: bool = False, max_extra_steps: int = 20,
                   device: str | torch.device | None = None, victim: CaptionVictim | None = None) -> ImageAttack:
    """Change the caption of one image, or (``target_caption``) make the model write that caption.
    ``victim``: a :class:`CaptionVictim` made before (a server keeps its captioner), else ``checkpoint``'s."""
    check_writable(out, folder=True)
    victim = victim or caption_victim(checkpoint, device, decode, guide)
    pixels = read_pixels(image, victim.resize_size)
    targeted = target_caption is not None
    if targeted:
        victim.labels_from(target_caption, 1)  # unknown words: fail before the attack runs
    attack = build_attack(victim, eps, method, steps, alpha, seed, targeted=targeted,
                          until_saved=until_saved, max_extra_steps=max_extra_steps)
    result = attack.run(pixels, target=target_caption)
    (before,), (after,), (after_float,) = (victim.describe(t) for t in
                                           (result.clean_predictions, result.saved_predictions, result.predictions))
    record = {"image": str(image), "checkpoint": str(checkpoint) if checkpoint else "default",
              **_describe_attack(attack, result, eps),
              "target_caption": victim.describe(result.labels)[0] if targeted else None,
              "before": before, "after": after, "after_float": after_float, "changed": after != before}
    goal = f"target \"{record['target_caption']}\"" if targeted else "untargeted"
    summary = f"{attack.name.upper()}, {goal}, eps {format_eps(eps)}: {_outcome(result, 'caption')} (saved PNG)"
    record["files"] = save_attack_files(
        result, 0, eps, out, Path(image).stem,
        [f"before: {before}", f"perturbation, L-inf {record['linf_255']:.0f}/255", f"after: {after}"], [summary])
    lines = [f"{image}: {summary}", f"before: {before}", f"after:  {after}"]
    if after_float != after:
        lines.append(f"(float image before saving: {after_float})")
    lines.append(f"perturbation: L-inf {record['linf_255']:g}/255, L2 {record['l2']:g}")
    return _finish(image, out, record, lines + _below_one_level(eps))


def _describe_attack(attack: Attack, result: AttackResult, eps: float) -> dict:
    return {
        "method": attack.name, "eps": eps, "eps_text": format_eps(eps),
        "steps": getattr(attack, "steps", None), "alpha": getattr(attack, "alpha", None),
        "targeted": result.targeted, "fooled": bool(result.fooled[0]), "saved_fooled": bool(result.saved_fooled[0]),
        "extra_steps": result.extra_steps, "linf_255": round(float(result.linf()[0]) * 255, 4),
        "l2": round(float(result.l2()[0]), 4),
    }


def _finish(image, out, record: dict, lines: list[str]) -> ImageAttack:
    from ..report_pages import write_attack_page

    record["files"]["page"] = str(Path(out) / f"{Path(image).stem}_attack.html")
    write_attack_page(record, record["files"]["page"])
    write_json_atomic(Path(out) / f"{Path(image).stem}_attack.json", record, indent=2)
    return ImageAttack(record, lines + [f"wrote {path}" for path in record["files"].values()])


def _below_one_level(eps: float) -> list[str]:
    if 0 < eps < 1 / 255:
        return ["note: eps is below one 8-bit level (1/255): an 8-bit PNG cannot hold the perturbation of an "
                "8-bit image, so the saved file equals the input"]
    return []


def _outcome(result: AttackResult, what: str = "label") -> str:
    if result.targeted:
        return "reached the target" if result.saved_fooled[0] else "did not reach the target"
    return f"{what} changed" if result.saved_fooled[0] else f"{what} unchanged"


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


def _inline(rows: list[dict]) -> str:
    return ", ".join(f"{r['label']} {100 * r['probability']:.1f}%" for r in rows)


def _column(rows: list[dict]) -> str:
    return "\n".join(f"{100 * r['probability']:5.1f}%  {r['label']}" for r in rows)


# -- many images -------------------------------------------------------------------------------
def robustness(out: str | os.PathLike, eps_values: Sequence[float], model: str | None = None,
               checkpoint: str | os.PathLike | None = None, images: str | os.PathLike | None = None,
               config: str | os.PathLike | None = None, labels: str | os.PathLike | None = None,
               split: str = "test", overrides: Sequence[str] = (), limit: int | None = None, batch_size: int = 8,
               decode: str | None = None, method: str | None = None, steps: int = 10, alpha: float | None = None,
               seed: int = 0, device: str | torch.device | None = None, show: bool = True) -> dict | None:
    """Untargeted attacks on every image at every eps; returns the report, with ``files`` (under
    torchrun: process 0 does, the others return None).

    The victim is the classifier of ``model`` or, without it, the captioner of
    ``checkpoint`` (default: the bundled one). The images are the files under ``images``
    or the ``split`` of the dataset of ``config`` (whose captions are the references for
    a captioner). ``labels``: a file of lines ``image,label`` for a classifier on
    ``images``; without it accuracy becomes agreement with the clean predictions.
    """
    check_writable(out, folder=True)
    paths, references = _report_images(images, config, split, overrides, limit)
    info = setup(device, cpu_option="--device cpu")  # under torchrun the processes share the images
    try:
        victim = classifier_victim(model, info.device) if model else caption_victim(checkpoint, info.device, decode)
        truth = None
        if labels:
            if victim.kind != "classifier" or not images:
                raise ArgumentError("--labels goes with --model and --images (captioners get references from "
                                    "--config)")
            truth = read_labels(labels, [images], paths, victim)
        if victim.kind == "classifier":
            references = None  # a dataset's captions are no class labels: report agreement
        report = robustness_report(
            victim, paths, eps_values, method=method or default_method(victim, False), steps=steps, alpha=alpha,
            labels=truth, references=references, batch_size=batch_size, seed=seed,
            name=model or (str(checkpoint) if checkpoint else "default checkpoint"), show=show, info=info)
        if report is None:  # another process of a torchrun run: process 0 reports
            return None
        report["files"] = write_report(report, out)
        return report
    finally:
        teardown(info)


def _report_images(images, config, split: str, overrides: Sequence[str], limit: int | None):
    """The image paths and (from a dataset) their reference captions, at most ``limit``."""
    if config:
        from ..config import load_config
        from ..data.datasets import read_dataset

        records = read_dataset(load_config(config, list(overrides)).data).split(split)
        if not records:
            raise ArgumentError(f"{config}: the {split!r} split has no images")
        records = records[:limit] if limit else records
        return [r.image_path for r in records], [r.raw for r in records]
    paths = find_images([str(images)])
    if not paths:
        raise ArgumentError(f"no image files found in {images}")
    return (paths[:limit] if limit else paths), None


def read_labels(path: str | os.PathLike, roots: list[str], images: list[str], victim: ClassifierVictim) -> list[int]:
    """Labels from lines ``image,label`` (or tab-separated); images match by relative path or file name."""
    wanted: dict[str, int] = {}
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as error:
        raise ArgumentError(f"--labels {path}: {error.strerror or error}") from None
    for number, line in enumerate(lines, 1):
        if not line.strip() or line.startswith("#") or line.strip().lower() in ("image,label", "image\tlabel"):
            continue
        name, sep, label = line.partition("\t") if "\t" in line else line.partition(",")
        if not sep:
            raise ArgumentError(f"{path}:{number}: expected 'image,label', got {line!r}")
        try:
            wanted[name.strip()] = victim.label_index(label.strip())
        except ValueError as error:
            raise ArgumentError(f"{path}:{number}: {error}") from None
    labels, missing = [], []
    for image in images:
        keys = [str(Path(image).relative_to(root)) for root in roots if Path(image).is_relative_to(root)]
        found = next((wanted[k] for k in [*keys, Path(image).name] if k in wanted), None)
        missing += [image] if found is None else []
        labels.append(found)
    if missing:
        raise ArgumentError(f"--labels {path} has no label for {len(missing)} image(s), e.g. {', '.join(missing[:3])}")
    return labels
