"""``captioner explain IMAGE...``: why each word of a caption (probabilities, the beam,
saliency maps, the LSTM's gates)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

from ..api import Captioner
from ..data.images import DEFAULT_MAX_PIXELS, find_images, printable_path
from ..errors import ArgumentError
from ..explain import METHODS, SaliencySettings, explain_images
from ..fileio import check_writable
from .options import add_decoding_options, decoding_options, list_of

DEFAULTS = SaliencySettings()


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "explain", help="explain captions word by word (probabilities, beam, saliency maps, LSTM gates)",
        description="Explain the caption `captioner caption` prints with the same options: per word its probability, "
                    "the alternatives and the beam, saliency maps over the image (Grad-CAM, SmoothGrad or Integrated "
                    "Gradients) and the LSTM's gates. With --out, a self-contained HTML page, PNGs and a JSON record "
                    "per image; without, a text summary.",
    )
    p.add_argument("paths", nargs="+", metavar="IMAGE", help="image files, folders (searched recursively) or globs")
    p.add_argument("--out", metavar="DIR", help="write DIR/<image name>/page.html, PNGs, explanation.json and .npy maps")
    p.add_argument("--checkpoint", help="checkpoint file (default: the bundled default model)")
    add_decoding_options(p, sampling=True)
    p.add_argument("--include", action="append", default=[], metavar="WORD[|ALT]",
                   help="the caption must contain this word (or one of the alternatives); repeatable")
    p.add_argument("--seed", type=int, default=0, help="random seed for sampling")
    p.add_argument("--saliency", type=list_of(METHODS), default=["gradcam", "smoothgrad"],
                   help=f"saliency maps to make, comma-separated, of {','.join(METHODS)} (default: gradcam,smoothgrad)")
    p.add_argument("--samples", type=int, default=DEFAULTS.samples,
                   help=f"SmoothGrad: noisy copies per word (default {DEFAULTS.samples})")
    p.add_argument("--noise", type=float, default=DEFAULTS.noise,
                   help=f"SmoothGrad: noise standard deviation, pixels in [0, 1] (default {DEFAULTS.noise})")
    p.add_argument("--ig-steps", type=int, default=DEFAULTS.steps,
                   help=f"Integrated Gradients: steps from a black image (default {DEFAULTS.steps})")
    p.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    p.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS, help="refuse larger images")
    p.set_defaults(run=run)


def run(args) -> int:
    saliency = SaliencySettings(samples=args.samples, noise=args.noise, steps=args.ig_steps, seed=args.seed)
    options = decoding_options(args)
    paths = find_images(args.paths)
    if not paths:
        raise ArgumentError(f"no image files found in {' '.join(args.paths)}")
    if args.out:
        check_writable(args.out, folder=True)
    captioner = Captioner.from_checkpoint(args.checkpoint, device=args.device)
    settings, _ = captioner.request(include=args.include, **options)
    generator = torch.Generator().manual_seed(args.seed)
    names: set[str] = set()
    failed = 0
    for path in paths:
        explanation = explain_images(captioner, [path], settings, args.include, saliency=args.saliency,
                                     saliency_settings=saliency, generator=generator, max_pixels=args.max_pixels)[0]
        if explanation.error:
            failed += 1
            print(f"error: {explanation.error}", file=sys.stderr)
            continue
        if args.out:
            folder = Path(args.out) / _unique_name(Path(path).stem, names)
            written = explanation.write(folder)
            print(f"{printable_path(path)}\t{explanation.caption}\t{printable_path(written['page'])}", flush=True)
        else:
            print(summary(explanation), flush=True)
    if failed:
        print(f"captioner explain: {failed} of {len(paths)} images could not be read", file=sys.stderr)
        return 1
    return 0


def _unique_name(stem: str, taken: set[str]) -> str:
    """``stem``, or ``stem-2``, ``stem-3``... when an earlier image had the same name."""
    name, n = stem or "image", 1
    while name in taken:
        n += 1
        name = f"{stem}-{n}"
    taken.add(name)
    return name


def summary(explanation) -> str:
    """The text summary of one explanation: the caption, then a line per word."""
    lines = [f"{printable_path(explanation.source)}\t{explanation.caption}\t(log-probability "
             f"{explanation.log_prob:.3f}, then <end> with p = {explanation.end_probability:.3f})"]
    for w in explanation.words:
        others = ", ".join(f"{word} {p:.3f}" for word, p in w.alternatives if word != w.word)
        line = f"  {w.index + 1:2d} {w.word:<12} p = {w.probability:.3f}   others: {others}"
        ranks = [i for i, (_, _, chosen) in enumerate(w.beam) if chosen]
        if ranks:
            line += f"   beam: {ranks[0] + 1} of {len(w.beam)}"
        if w.read_as != w.word:
            line += f"   read as {w.read_as}"
        if w.forced:
            line += f"   forced by {w.forced['source']} ({w.forced['words']}"
            line += f", p = {w.forced['probability']:.3f})" if "probability" in w.forced else ")"
        for method, maps in explanation.maps.items():
            row, column = np.unravel_index(int(maps[w.index].argmax()), maps[w.index].shape)
            line += f"   {method} peak: row {row + 1}/{maps.shape[1]}, column {column + 1}/{maps.shape[2]}"
        lines.append(line)
    return "\n".join(lines)
