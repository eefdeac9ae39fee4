"""``captioner attack {classify,caption,report}``: adversarial examples and robustness reports."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ..data.images import ImageLoadError, find_images, load_image
from ..data.preprocess import pil_to_tensor
from ..fileio import write_json_atomic

DEFAULT_REPORT_EPS = "0,1/255,2/255,4/255,8/255"


def parse_eps(text: str, what: str = "eps") -> float:
    """A perturbation size in pixels: ``0.01``, ``2/255``. Raises ValueError saying what is wrong."""
    value = str(text).strip()
    try:
        if "/" in value:
            numerator, denominator = value.split("/")
            eps = float(numerator) / float(denominator)
        else:
            eps = float(value)
    except ZeroDivisionError:
        raise ValueError(f"{what} {text!r}: division by zero; write a fraction such as 2/255") from None
    except ValueError:
        raise ValueError(f"{what} {text!r} is not a number or a fraction such as 2/255") from None
    if not 0.0 <= eps <= 1.0:
        raise ValueError(f"{what} {text!r} = {eps:g} is outside [0, 1]; pixels are in [0, 1], so 2/255 is two "
                         "8-bit levels")
    return eps


def parse_eps_list(text: str) -> list[float]:
    """Comma-separated eps values, e.g. ``0,1/255,2/255``."""
    values = [parse_eps(part, "--eps") for part in str(text).split(",") if part.strip()]
    if not values:
        raise ValueError(f"no eps values in {text!r}; write e.g. {DEFAULT_REPORT_EPS}")
    return values


def _common(p, eps_default: str | None = "2/255") -> None:
    if eps_default is not None:
        p.add_argument("--eps", default=eps_default,
                       help="L-inf size in pixels, e.g. 2/255 or 0.01 (default %(default)s)")
    p.add_argument("--method", choices=["fgsm", "bim", "pgd"], help="attack (default: fgsm; bim for --target-caption)")
    p.add_argument("--steps", type=int, default=10, help="iterations of bim/pgd (default %(default)s)")
    p.add_argument("--alpha", help="step size of bim/pgd, e.g. 1/255 (default 2.5*eps/steps)")
    p.add_argument("--seed", type=int, default=0, help="random start of pgd")
    p.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    p.add_argument("--out", required=True, metavar="DIR", help="folder for the output files")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")


def _single(p) -> None:
    p.add_argument("image", metavar="IMAGE", help="image file")
    p.add_argument("--until-saved", action="store_true",
                   help="keep stepping on the 8-bit image until the saved PNG fools the model too")
    p.add_argument("--max-extra-steps", type=int, default=20, help="limit for --until-saved (default %(default)s)")


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "attack", help="adversarial examples (FGSM, BIM, PGD) and robustness reports",
        description="Adversarial examples against ImageNet classifiers and the captioner, in [0, 1] pixel space "
                    "on the image's own pixels.",
    )
    sub = p.add_subparsers(dest="attack_command", metavar="ATTACK", required=True)
    c = sub.add_parser("classify", help="attack an ImageNet classifier on one image",
                       description="Saves the adversarial PNG, the amplified perturbation and a side-by-side "
                                   "figure with the top-5 labels before and after.")
    _single(c)
    c.add_argument("--model", default="efficientnet_lite0", help="encoder backbone with ImageNet head")
    c.add_argument("--target", metavar="LABEL", help="targeted attack: ImageNet class name or index")
    _common(c)
    c.set_defaults(run=run_classify)

    k = sub.add_parser("caption", help="change the caption of one image, or make it a chosen one")
    _single(k)
    k.add_argument("--checkpoint", help="checkpoint (default: the bundled default model)")
    k.add_argument("--target-caption", metavar="TEXT", help="targeted attack: the caption to make the model write")
    k.add_argument("--decode", choices=["beam", "greedy"],
                   help="decoding that judges captions (default: the checkpoint's)")
    _common(k)
    k.set_defaults(run=run_caption)

    r = sub.add_parser("report", help="accuracy or caption quality against eps over many images",
                       description="Attack every image at every eps (untargeted); writes report.json, report.png "
                                   "and report.md, and prints the table.")
    victim = r.add_mutually_exclusive_group(required=True)
    victim.add_argument("--model", help="ImageNet classifier (encoder backbone), e.g. efficientnet_lite0")
    victim.add_argument("--checkpoint", help="captioning checkpoint")
    data = r.add_mutually_exclusive_group(required=True)
    data.add_argument("--images", metavar="DIR", help="image files or folders")
    data.add_argument("--config", help="config whose data section names a captioning dataset")
    r.add_argument("--labels", metavar="FILE", help="classifier: lines 'image,label' (file name or path relative "
                                                    "to --images; ImageNet class name or index)")
    r.add_argument("--split", default="test", choices=["train", "val", "test"], help="--config split")
    r.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    r.add_argument("--limit", type=int, help="use at most this many images")
    r.add_argument("--batch-size", type=int, default=8)
    r.add_argument("--decode", choices=["beam", "greedy"], help="captioner decoding (default: the checkpoint's)")
    r.add_argument("--eps", default=DEFAULT_REPORT_EPS, help="comma-separated (default %(default)s)")
    r.add_argument("--quiet", action="store_true", help="no progress bar")
    _common(r, eps_default=None)
    r.set_defaults(run=run_report)


# -- shared pieces ------------------------------------------------------------------------------
def _read(path: str) -> torch.Tensor:
    try:
        return pil_to_tensor(load_image(path))
    except ImageLoadError as error:
        raise ValueError(str(error)) from None


def _method(args, victim, targeted: bool) -> str:
    return args.method or ("bim" if targeted and victim.kind == "captioner" else "fgsm")


def _alpha(args) -> float | None:
    if args.steps < 1:
        raise ValueError(f"--steps must be at least 1, got {args.steps}")
    return None if args.alpha is None else parse_eps(args.alpha, "--alpha")


def _attack(args, victim, eps: float, targeted: bool):
    from ..attacks import make_attack

    method = _method(args, victim, targeted)
    options = {"until_saved": args.until_saved, "max_extra_steps": args.max_extra_steps}
    if method == "pgd":
        device = next(victim.module.parameters()).device
        options["generator"] = torch.Generator(device=device).manual_seed(args.seed)
    return make_attack(method, victim, eps, args.steps, _alpha(args), **options)


def _classifier(name: str, device):
    from ..api import resolve_device
    from ..attacks import ClassifierVictim, PixelClassifier
    from ..models import EncoderSpec, build_encoder

    return ClassifierVictim(PixelClassifier(build_encoder(EncoderSpec(name))).to(resolve_device(device)))


def _caption_victim(args):
    from ..api import Captioner
    from ..attacks import CaptionVictim

    return CaptionVictim(Captioner.from_checkpoint(args.checkpoint, device=args.device), method=args.decode)


def _describe_attack(attack, result, eps: float) -> dict:
    return {
        "method": attack.name, "eps": eps, "eps_text": _eps_text(eps),
        "steps": getattr(attack, "steps", None), "alpha": getattr(attack, "alpha", None),
        "targeted": result.targeted, "fooled": bool(result.fooled[0]), "saved_fooled": bool(result.saved_fooled[0]),
        "extra_steps": result.extra_steps, "linf_255": round(float(result.linf()[0]) * 255, 4),
        "l2": round(float(result.l2()[0]), 4),
    }


def _eps_text(eps: float) -> str:
    from ..attacks.report import format_eps

    return format_eps(eps)


def _finish(args, record: dict, lines: list[str]) -> int:
    write_json_atomic(Path(args.out) / f"{Path(args.image).stem}_attack.json", record, indent=2)
    if args.json:
        print(json.dumps(record, ensure_ascii=False))
    else:
        print("\n".join(lines + [f"wrote {path}" for path in record["files"].values()]))
    return 0


def _below_one_level(eps: float) -> list[str]:
    if 0 < eps < 1 / 255:
        return ["note: eps is below one 8-bit level (1/255): an 8-bit PNG cannot hold the perturbation of an "
                "8-bit image, so the saved file equals the input"]
    return []


def _outcome(result, what: str = "label") -> str:
    if result.targeted:
        return "reached the target" if result.saved_fooled[0] else "did not reach the target"
    return f"{what} changed" if result.saved_fooled[0] else f"{what} unchanged"


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


# -- the subcommands --------------------------------------------------------------------------------
def run_classify(args) -> int:
    from ..attacks.report import save_attack_files

    eps = parse_eps(args.eps, "--eps")
    pixels = _read(args.image)
    victim = _classifier(args.model, args.device)
    target = None if args.target is None else victim.label_index(args.target)
    attack = _attack(args, victim, eps, targeted=target is not None)
    result = attack.run(pixels, target=target)
    before, after = (_top(victim, x.to(attack.device)) for x in (result.images, result.saved))
    record = {"image": args.image, "model": args.model, **_describe_attack(attack, result, eps),
              "target": None if target is None else victim.describe([target])[0],
              "before": before, "after": after}
    goal = f"target {record['target']}" if target is not None else "untargeted"
    summary = f"{attack.name.upper()}, {goal}, eps {_eps_text(eps)}: {_outcome(result)} (saved PNG)"
    record["files"] = save_attack_files(
        result, 0, eps, args.out, Path(args.image).stem,
        [f"before\n{_column(before)}", f"perturbation (amplified), L-inf {record['linf_255']:.0f}/255",
         f"after (saved PNG)\n{_column(after)}"], [summary])
    lines = [
        f"{args.image}: {summary}",
        f"before: {_inline(before)}",
        f"after:  {_inline(after)}",
        f"fools the model: {_yes(record['fooled'])} (float image), {_yes(record['saved_fooled'])} (saved 8-bit PNG"
        + (f", {result.extra_steps} extra steps)" if result.extra_steps else ")"),
        f"perturbation: L-inf {record['linf_255']:g}/255, L2 {record['l2']:g}",
    ]
    return _finish(args, record, lines + _below_one_level(eps))


def _inline(rows: list[dict]) -> str:
    return ", ".join(f"{r['label']} {100 * r['probability']:.1f}%" for r in rows)


def _column(rows: list[dict]) -> str:
    return "\n".join(f"{100 * r['probability']:5.1f}%  {r['label']}" for r in rows)


def _top(victim, pixels: torch.Tensor, k: int = 5) -> list[dict]:
    probabilities = victim.probabilities(pixels)[0]
    values, indices = probabilities.topk(min(k, len(probabilities)))
    return [{"label": name, "index": int(i), "probability": round(float(v), 4)}
            for name, i, v in zip(victim.describe(indices), indices, values)]


def run_caption(args) -> int:
    from ..attacks.report import save_attack_files

    eps = parse_eps(args.eps, "--eps")
    pixels = _read(args.image)
    victim = _caption_victim(args)
    targeted = args.target_caption is not None
    if targeted:
        victim.labels_from(args.target_caption, 1)  # unknown words: fail before the attack runs
    attack = _attack(args, victim, eps, targeted)
    result = attack.run(pixels, target=args.target_caption)
    (before,), (after,), (after_float,) = (victim.describe(t) for t in
                                           (result.clean_predictions, result.saved_predictions, result.predictions))
    record = {"image": args.image, "checkpoint": args.checkpoint or "default", **_describe_attack(attack, result, eps),
              "target_caption": victim.describe(result.labels)[0] if targeted else None,
              "before": before, "after": after, "after_float": after_float, "changed": after != before}
    goal = f"target \"{record['target_caption']}\"" if targeted else "untargeted"
    summary = f"{attack.name.upper()}, {goal}, eps {_eps_text(eps)}: {_outcome(result, 'caption')} (saved PNG)"
    record["files"] = save_attack_files(
        result, 0, eps, args.out, Path(args.image).stem,
        [f"before: {before}", f"perturbation, L-inf {record['linf_255']:.0f}/255", f"after: {after}"], [summary])
    lines = [f"{args.image}: {summary}", f"before: {before}", f"after:  {after}"]
    if after_float != after:
        lines.append(f"(float image before saving: {after_float})")
    lines.append(f"perturbation: L-inf {record['linf_255']:g}/255, L2 {record['l2']:g}")
    return _finish(args, record, lines + _below_one_level(eps))


def _read_labels(path: str, roots: list[str], images: list[str], victim) -> list[int]:
    """Labels from lines ``image,label`` (or tab-separated); images match by relative path or file name."""
    wanted: dict[str, int] = {}
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as error:
        raise ValueError(f"--labels {path}: {error.strerror or error}") from None
    for number, line in enumerate(lines, 1):
        if not line.strip() or line.startswith("#") or line.strip().lower() in ("image,label", "image\tlabel"):
            continue
        name, sep, label = line.partition("\t") if "\t" in line else line.partition(",")
        if not sep:
            raise ValueError(f"{path}:{number}: expected 'image,label', got {line!r}")
        try:
            wanted[name.strip()] = victim.label_index(label.strip())
        except ValueError as error:
            raise ValueError(f"{path}:{number}: {error}") from None
    labels, missing = [], []
    for image in images:
        keys = [str(Path(image).relative_to(root)) for root in roots if Path(image).is_relative_to(root)]
        found = next((wanted[k] for k in [*keys, Path(image).name] if k in wanted), None)
        missing += [image] if found is None else []
        labels.append(found)
    if missing:
        raise ValueError(f"--labels {path} has no label for {len(missing)} image(s), e.g. {', '.join(missing[:3])}")
    return labels


def run_report(args) -> int:
    from ..attacks.report import format_table, robustness_report, write_report

    eps_values = parse_eps_list(args.eps)
    for option, value in (("--batch-size", args.batch_size), ("--limit", 1 if args.limit is None else args.limit)):
        if value < 1:
            raise ValueError(f"{option} must be at least 1, got {value}")
    references = None
    if args.config:
        from ..config import load_config
        from ..data.datasets import read_dataset

        records = read_dataset(load_config(args.config, args.overrides).data).split(args.split)
        if not records:
            raise ValueError(f"{args.config}: the {args.split!r} split has no images")
        records = records[:args.limit] if args.limit else records
        paths, references = [r.image_path for r in records], [r.raw for r in records]
    else:
        paths = find_images([args.images])
        if not paths:
            raise FileNotFoundError(f"no image files found in {args.images}")
        paths = paths[:args.limit] if args.limit else paths
    victim = _classifier(args.model, args.device) if args.model else _caption_victim(args)
    labels = None
    if args.labels:
        if victim.kind != "classifier" or not args.images:
            raise ValueError("--labels goes with --model and --images (captioners get references from --config)")
        labels = _read_labels(args.labels, [args.images], paths, victim)
    if victim.kind == "classifier":
        references = None  # a dataset's captions are no class labels: report agreement
    report = robustness_report(
        victim, paths, eps_values, method=_method(args, victim, False), steps=args.steps, alpha=_alpha(args),
        labels=labels, references=references, batch_size=args.batch_size, seed=args.seed,
        name=args.model or args.checkpoint or "default checkpoint", show=not args.quiet)
    report["files"] = write_report(report, args.out)
    if args.json:
        print(json.dumps(report, ensure_ascii=False))
    else:
        print(format_table(report))
        for note in report["notes"]:
            print(f"note: {note}")
        for skipped in report["skipped"]:
            print(f"skipped {skipped['path']}: {skipped['error']}")
        print("\n".join(f"wrote {path}" for path in report["files"].values()))
    return 0
