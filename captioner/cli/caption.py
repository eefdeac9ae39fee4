"""``captioner caption PATH...``: caption image files, folders or globs."""

from __future__ import annotations

import json
import sys
from contextlib import nullcontext

import torch
from tqdm import tqdm

from ..api import RUNTIMES, Captioner, default_reader_processes
from ..data.images import DEFAULT_MAX_PIXELS, find_images, printable_path
from ..errors import ArgumentError
from ..fileio import AtomicLineWriter, check_writable
from ..report_pages import CaptionSheet
from .options import add_decoding_options, decoding_options


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "caption", help="caption images (files, folders, globs)",
        description="Caption images. Prints 'path<TAB>caption' lines (best caption first; a backslash, tab or "
                    "newline in a path is written as \\\\, \\t or \\n), or JSON lines.",
    )
    p.add_argument("paths", nargs="+", metavar="PATH", help="image files, folders (searched recursively) or globs")
    p.add_argument("--checkpoint", help="checkpoint file (default: the bundled default model); with --runtime onnx, "
                                        "an ONNX export folder")
    p.add_argument("--runtime", choices=RUNTIMES, default="torch",
                   help="what runs the networks: torch, or onnx (ONNX Runtime over `checkpoint export --onnx`)")
    add_decoding_options(p, sampling=True)
    p.add_argument("--include", action="append", default=[], metavar="WORD[|ALT]",
                   help="every caption must contain this word (or one of the alternatives); repeatable")
    p.add_argument("--seed", type=int, default=0, help="random seed for sampling")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--workers", type=int, default=None,
                   help="image-reading processes (default: half the cores for more than two batches on more than "
                        "2 cores, else 0)")
    p.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    p.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS, help="refuse larger images")
    p.add_argument("--jsonl", metavar="FILE",
                   help="also write JSON lines to FILE, complete or not at all: an interrupted run leaves FILE as it "
                        "was ('-': JSON lines on stdout instead)")
    p.add_argument("--html", metavar="FILE",
                   help="also write a contact sheet (thumbnails, n-best captions with scores, what was forced, "
                        "errors), self-contained, complete or not at all like --jsonl")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=run)


def run(args) -> int:
    if args.batch_size < 1:
        raise ArgumentError(f"--batch-size must be at least 1, got {args.batch_size}")
    options = decoding_options(args)
    paths = find_images(args.paths)
    if not paths:
        raise ArgumentError(f"no image files found in {' '.join(args.paths)}")
    json_to_stdout = args.jsonl == "-"
    if args.jsonl and not json_to_stdout:
        check_writable(args.jsonl)
    if args.html:
        check_writable(args.html)
    captioner = Captioner.from_checkpoint(args.checkpoint, device=args.device, runtime=args.runtime)
    settings, _ = captioner.request(include=args.include, **options)
    workers = args.workers if args.workers is not None else default_reader_processes(len(paths), args.batch_size)
    generator = torch.Generator().manual_seed(args.seed)
    failed = 0
    progress = tqdm(total=len(paths), unit="img", disable=True if args.quiet or len(paths) < 64 else None,
                    file=sys.stderr)
    # The JSON lines file is published only when every image is done (see AtomicLineWriter).
    with progress, (AtomicLineWriter(args.jsonl) if args.jsonl and not json_to_stdout else nullcontext()) as sink, \
            (CaptionSheet(args.html, max_pixels=args.max_pixels) if args.html else nullcontext()) as sheet:
        for result in captioner.caption_files(paths, batch_size=args.batch_size, num_workers=workers,
                                              max_pixels=args.max_pixels, include=args.include,
                                              generator=generator, settings=settings):
            progress.update(1)
            failed += bool(result.error)
            record = result.to_dict()
            line = json.dumps(record, ensure_ascii=False)
            if result.error:
                tqdm.write(f"error: {result.error}", file=sys.stderr)
            elif result.unmet:
                tqdm.write(f"note: {printable_path(result.source)}: the caption misses {result.unmet} of the forced "
                           f"words ({_forced_words(result)}): no caption of at most {settings.max_length} words "
                           "has them all", file=sys.stderr)
            if json_to_stdout:
                print(line, flush=True)
            elif not result.error:
                for c in result.captions:
                    print(f"{printable_path(result.source)}\t{c.text}", flush=True)
            if sink:
                sink.write(line)
            if sheet:
                sheet.add(record)
    if failed:
        print(f"captioner caption: {failed} of {len(paths)} images could not be read", file=sys.stderr)
        return 1
    return 0


def _forced_words(result) -> str:
    return ", ".join("|".join(f.words) for f in result.forced)
