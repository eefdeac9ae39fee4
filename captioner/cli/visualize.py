"""``captioner visualize {layers,filters,neuron,class,deepdream}``: what the encoder sees."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .. import visualization as viz
from ..data.images import ImageLoadError, load_image
from ..errors import ArgumentError
from ..fileio import check_writable
from ..models.encoder import DEFAULT_BACKBONE, EncoderSpec, ImageEncoder, build_encoder
from ..report_pages import write_visualization_page

ACTIONS = {
    "layers": "list the layers that can be visualised, with output shapes and friendly names",
    "filters": "one image per channel of a layer (all channels in one batch), or --weights of the first conv",
    "neuron": "like filters, for one spatial position of each channel",
    "class": "an image that maximises an ImageNet class logit",
    "deepdream": "amplify a whole layer (mean square), from noise or from --image",
}


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "visualize", help="feature visualisation: filters, neurons, classes, DeepDream, layer list",
        description="See what the encoder's filters respond to and what ImageNet classes look like to it, "
                    "by optimising images (Fourier parameterisation, transformation robustness, Adam).",
    )
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    model = argparse.ArgumentParser(add_help=False)
    group = model.add_mutually_exclusive_group()
    group.add_argument("--model", default=DEFAULT_BACKBONE,
                       help=f"encoder backbone (default: {DEFAULT_BACKBONE}, offline); torchvision names need internet")
    group.add_argument("--checkpoint", help="use the encoder inside this captioner checkpoint")
    model.add_argument("--untrained", action="store_true", help="random weights instead of ImageNet weights")
    model.add_argument("--device", help="cpu or cuda (default: cuda when available)")

    render = argparse.ArgumentParser(add_help=False)
    render.add_argument("--out", required=True, help="output PNG (a JSON file with the values goes beside it)")
    render.add_argument("--json", help="where to write the JSON side file (default: OUT with .json)")
    render.add_argument("--steps", type=int, help="optimisation steps (default: 128; deepdream: 64)")
    render.add_argument("--size", type=int, help="image size in pixels (default: 128; class, deepdream: the crop size)")
    render.add_argument("--lr", type=float, help="Adam learning rate (default: 0.05; deepdream: 0.02)")
    render.add_argument("--param", choices=["fourier", "pixel"], help="image parameterisation (default: fourier)")
    render.add_argument("--no-decorrelate", dest="decorrelate", action="store_false", default=None,
                        help="optimise plain RGB instead of decorrelated colours")
    render.add_argument("--no-transforms", dest="transforms", action="store_false", default=None,
                        help="no pad/jitter/scale/rotate robustness transforms")
    render.add_argument("--l2", type=float, help="weight of an L2 penalty on the pixels (default: 0)")
    render.add_argument("--tv", type=float, help="weight of a total-variation penalty (default: 0)")
    render.add_argument("--blur-every", type=int, help="blur the image every K steps (default: never)")
    render.add_argument("--octaves", type=int, help="optimise at N sizes, smallest first (default: 1)")
    render.add_argument("--seed", type=int, default=0, help="random seed (same seed, same PNG)")
    render.add_argument("--columns", type=int, help="grid columns (default: near-square)")
    render.add_argument("--quiet", action="store_true", help="no progress bar")

    layer = argparse.ArgumentParser(add_help=False)
    layer.add_argument("--layer", help="module path (body.4.1) or friendly name (features.4.1, conv4_3, layer3)")
    channels = argparse.ArgumentParser(add_help=False)
    channels.add_argument("--channels", default="0:16", help="channels: 0:16, 3, 0,5,9 or 0:64:4 (default: 0:16)")

    for name, text in ACTIONS.items():
        parents = [model] if name == "layers" else [model, render]
        if name in ("filters", "neuron", "deepdream"):
            parents.append(layer)
        if name in ("filters", "neuron"):
            parents.append(channels)
        sub = actions.add_parser(name, help=text, description=text, parents=parents)
        if name == "filters":
            sub.add_argument("--weights", action="store_true",
                             help="draw the first convolution's kernels as RGB patches instead of optimising")
        if name == "neuron":
            sub.add_argument("--x", type=int, help="column in the layer's grid (default: centre)")
            sub.add_argument("--y", type=int, help="row in the layer's grid (default: centre)")
        if name == "class":
            sub.add_argument("--class", dest="classes", action="append", required=True, metavar="LABEL|INDEX",
                             help="ImageNet class name or index; repeat for a labelled grid")
        if name == "deepdream":
            sub.add_argument("--image", help="start from this photo instead of noise")
    p.set_defaults(run=run)


def parse_channels(text: str) -> list[int]:
    """``0:16`` (a range), ``0:64:4`` (with a step), ``3`` or ``0,5,9``."""
    try:
        if ":" in text:
            parts = [int(part) for part in text.split(":")]
            if len(parts) not in (2, 3):
                raise ValueError
            channels = list(range(*parts))
        else:
            channels = [int(part) for part in text.split(",")]
    except ValueError:
        raise ArgumentError(f"--channels {text!r}: expected START:STOP[:STEP], N or N,M,...") from None
    if not channels:
        raise ArgumentError(f"--channels {text!r} selects no channels")
    return channels


def load_encoder(args) -> ImageEncoder:
    """The encoder to visualise, on ``--device``: rendering runs where the encoder is."""
    from ..api import Captioner
    from ..runtime import resolve_device

    device = resolve_device(args.device)
    if args.checkpoint:
        return Captioner.from_checkpoint(args.checkpoint, device=device).model.encoder
    return build_encoder(EncoderSpec(args.model, weights=None if args.untrained else "DEFAULT")).to(device)


def _settings_options(args) -> dict:
    """The render settings given on the command line (the others keep their defaults)."""
    options = dict(steps=args.steps, size=args.size, lr=args.lr, param=args.param, decorrelate=args.decorrelate,
                   transforms=args.transforms, l2=args.l2, tv=args.tv, blur_every=args.blur_every,
                   octaves=args.octaves, seed=args.seed, progress=not args.quiet)
    return {key: value for key, value in options.items() if value is not None}


def _need_layer(args) -> str:
    if not args.layer:
        raise ArgumentError(f"visualize {args.action} needs --layer (see `captioner visualize layers`)")
    return args.layer


def run(args) -> int:
    encoder = load_encoder(args)
    if args.action == "layers":
        return print_layers(encoder)
    for path in (args.out, args.json or Path(args.out).with_suffix(".json"), Path(args.out).with_suffix(".html")):
        check_writable(path)  # before the rendering, not after it
    options = _settings_options(args)
    weights = args.action == "filters" and args.weights
    if weights:
        result = viz.first_layer_weights(encoder)
    elif args.action == "filters":
        result = viz.visualize_filters(encoder, _need_layer(args), parse_channels(args.channels), **options)
    elif args.action == "neuron":
        result = viz.visualize_neuron(encoder, _need_layer(args), parse_channels(args.channels),
                                      x=args.x, y=args.y, **options)
    elif args.action == "class":
        result = viz.visualize_class(encoder, args.classes, **options)
    else:
        photo = _photo(args.image, encoder.preprocessing.resize_size)
        result = viz.visualize_deepdream(encoder, _need_layer(args), photo, **options)
    path = result.save(args.out, args.json, columns=args.columns, tile=32 if weights else None)
    page = path.with_suffix(".html")
    write_visualization_page(result, page, f"visualize {args.action}")
    for label, record in zip(result.labels, result.records):
        print(f"{label}\t{_describe(record)}")
    print(f"wrote {path}, {Path(args.json) if args.json else path.with_suffix('.json')} and {page}", file=sys.stderr)
    return 0


def _photo(path: str | None, resize_to: int):
    """The --image photo; refused when resizing it to ``resize_to`` (the encoder's preprocessing) would be huge."""
    if path is None:
        return None
    try:
        return load_image(path, resize_to=resize_to)
    except ImageLoadError as error:
        raise ArgumentError(str(error)) from None


def _describe(record: dict) -> str:
    if "probability" in record:
        return (f"p={record['probability']:.4f} logit={record['logit']:.2f} "
                f"top-1: {record['top1']} ({record['top1_probability']:.4f})")
    return " ".join(f"{key}={value}" for key, value in record.items() if key not in ("layer", "channel"))


def print_layers(encoder: ImageEncoder) -> int:
    layers = viz.list_layers(encoder)
    width = max(len(info.path) for info in layers)
    name_width = max(len(info.name) for info in layers)
    print(f"{'path':<{width}}  {'name':<{name_width}}  {'shape':<16}  kind")
    for info in layers:
        shape = "x".join(str(n) for n in info.shape)
        print(f"{info.path:<{width}}  {info.name:<{name_width}}  {shape:<16}  {info.kind}")
    return 0
