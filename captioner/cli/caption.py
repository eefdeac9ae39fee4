"""``captioner caption PATH...``: caption image files, folders or globs."""

from __future__ import annotations

import json
import sys

import torch
from tqdm import tqdm

from ..api import Captioner, default_reader_processes
from ..data.images import DEFAULT_MAX_PIXELS, find_images
from ..fileio import AtomicLineWriter
from .options import check_decoding_options


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "caption", help="caption images (files, folders, globs)",
        description="Caption images. Prints 'path<TAB>caption' lines (best caption first), or JSON lines.",
    )
    p.add_argument("paths", nargs="+", metavar="PATH", help="image files, folders (searched recursively) or globs")
    p.add_argument("--checkpoint", help="checkpoint file (default: the bundled default model)")
    p.add_argument("--method", choices=["beam", "greedy", "sample"], help="decoding method (default: the checkpoint's, beam)")
    p.add_argument("--beam-size", type=int, help="beam width (default: the checkpoint's)")
    p.add_argument("--num-captions", type=int, default=1, help="captions per image (at most the beam size)")
    p.add_argument("--max-length", type=int, help="maximum words per caption")
    p.add_argument("--length-penalty", type=float, help="beam ranking: log-prob / (words+1)**penalty")
    p.add_argument("--temperature", type=float, default=1.0, help="sampling temperature")
    p.add_argument("--top-k", type=int, help="sample only from the k most likely words")
    p.add_argument("--seed", type=int, default=0, help="random seed for sampling")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--workers", type=int, default=None, help="image-reading processes (default: 1 for many images on more than 2 cores, else 0)")
    p.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    p.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS, help="refuse larger images")
    p.add_argument("--jsonl", metavar="FILE", help="also write JSON lines to FILE ('-': JSON lines on stdout instead)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=run)


def run(args) -> int:
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be at least 1, got {args.batch_size}")
    check_decoding_options(args.beam_size, args.length_penalty, args.max_length)
    paths = find_images(args.paths)
    if not paths:
        raise FileNotFoundError(f"no image files found in {' '.join(args.paths)}")
    captioner = Captioner.from_checkpoint(args.checkpoint, device=args.device)
    workers = args.workers if args.workers is not None else default_reader_processes(len(paths), args.batch_size)
    generator = torch.Generator().manual_seed(args.seed)
    options = dict(
        method=args.method, beam_size=args.beam_size, num_captions=args.num_captions,
        max_length=args.max_length, length_penalty=args.length_penalty,
        temperature=args.temperature, top_k=args.top_k, generator=generator,
    )
    json_to_stdout = args.jsonl == "-"
    sink = AtomicLineWriter(args.jsonl) if args.jsonl and not json_to_stdout else None
    failed = 0
    progress = tqdm(total=len(paths), unit="img", disable=True if args.quiet or len(paths) < 64 else None,
                    file=sys.stderr)
    try:
        for result in captioner.caption_files(paths, batch_size=args.batch_size, num_workers=workers,
                                              max_pixels=args.max_pixels, **options):
            progress.update(1)
            if result.error:
                failed += 1
                tqdm.write(f"error: {result.error}", file=sys.stderr)
                record = {"path": result.source, "error": result.error}
            else:
                record = {"path": result.source, "captions": [
                    {"caption": c.text, "log_prob": round(c.log_prob, 4), "score": round(c.score, 4),
                     **({"truncated": True} if c.truncated else {})}
                    for c in result.captions
                ]}
            line = json.dumps(record, ensure_ascii=False)
            if json_to_stdout:
                print(line, flush=True)
            elif not result.error:
                for c in result.captions:
                    print(f"{result.source}\t{c.text}", flush=True)
            if sink:
                sink.write(line)
    finally:
        progress.close()
        if sink:
            sink.close()
    if failed:
        print(f"captioner caption: {failed} of {len(paths)} images could not be read", file=sys.stderr)
        return 1
    return 0
