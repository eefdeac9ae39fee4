"""``captioner attack {classify,caption,report}``: adversarial examples and robustness reports."""

from __future__ import annotations

import json

from ..decoding.settings import GUIDES, methods
from ..errors import ArgumentError

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
        raise ArgumentError(f"{what} {text!r}: division by zero; write a fraction such as 2/255") from None
    except ValueError:
        raise ArgumentError(f"{what} {text!r} is not a number or a fraction such as 2/255") from None
    if not 0.0 <= eps <= 1.0:
        raise ArgumentError(f"{what} {text!r} = {eps:g} is outside [0, 1]; pixels are in [0, 1], so 2/255 is two "
                         "8-bit levels")
    return eps


def parse_eps_list(text: str) -> list[float]:
    """Comma-separated eps values, e.g. ``0,1/255,2/255``."""
    values = [parse_eps(part, "--eps") for part in str(text).split(",") if part.strip()]
    if not values:
        raise ArgumentError(f"no eps values in {text!r}; write e.g. {DEFAULT_REPORT_EPS}")
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
    k.add_argument("--decode", choices=methods(deterministic=True),
                   help="decoding that judges captions (default: the checkpoint's)")
    k.add_argument("--guide", choices=GUIDES,
                   help="judge the captions guided by the ImageNet classifier or not (default: the checkpoint's)")
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
    r.add_argument("--decode", choices=methods(deterministic=True), help="captioner decoding (default: the checkpoint's)")
    r.add_argument("--eps", default=DEFAULT_REPORT_EPS, help="comma-separated (default %(default)s)")
    r.add_argument("--quiet", action="store_true", help="no progress bar")
    _common(r, eps_default=None)
    r.set_defaults(run=run_report)


# -- the subcommands: options in, the Python API of captioner.attacks.session, its record out ------------
def _attack_options(args) -> dict:
    if args.steps < 1:
        raise ArgumentError(f"--steps must be at least 1, got {args.steps}")
    return dict(method=args.method, steps=args.steps, seed=args.seed, device=args.device,
                alpha=None if args.alpha is None else parse_eps(args.alpha, "--alpha"))


def _print(args, attacked) -> int:
    print(json.dumps(attacked.record, ensure_ascii=False) if args.json else "\n".join(attacked.lines))
    return 0


def run_classify(args) -> int:
    from ..attacks.session import attack_classifier

    eps = parse_eps(args.eps, "--eps")
    return _print(args, attack_classifier(
        args.image, args.out, model=args.model, target=args.target, eps=eps, until_saved=args.until_saved,
        max_extra_steps=args.max_extra_steps, **_attack_options(args)))


def run_caption(args) -> int:
    from ..attacks.session import attack_caption

    eps = parse_eps(args.eps, "--eps")
    return _print(args, attack_caption(
        args.image, args.out, checkpoint=args.checkpoint, target_caption=args.target_caption, decode=args.decode,
        guide=args.guide, eps=eps, until_saved=args.until_saved, max_extra_steps=args.max_extra_steps, **_attack_options(args)))


def run_report(args) -> int:
    from ..attacks.report import format_report_text
    from ..attacks.session import robustness

    eps_values = parse_eps_list(args.eps)
    for option, value in (("--batch-size", args.batch_size), ("--limit", 1 if args.limit is None else args.limit)):
        if value < 1:
            raise ArgumentError(f"{option} must be at least 1, got {value}")
    report = robustness(
        args.out, eps_values, model=args.model, checkpoint=args.checkpoint, images=args.images, config=args.config,
        labels=args.labels, split=args.split, overrides=args.overrides, limit=args.limit,
        batch_size=args.batch_size, decode=args.decode, show=not args.quiet, **_attack_options(args))
    if report is not None:  # under torchrun, process 0 reports
        print(json.dumps(report, ensure_ascii=False) if args.json else format_report_text(report))
    return 0
