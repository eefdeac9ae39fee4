"""``captioner caption PATH...``: caption image files, folders or globs."""

from __future__ import annotations

import json
import sys
from contextlib import nullcontext

from tqdm import tqdm

from ..api import RUNTIMES, Captioner, default_checkpoint_path
from ..data.images import DEFAULT_MAX_PIXELS, find_images, printable_path
from ..distributed import setup, teardown
from ..errors import ArgumentError
from ..fileio import check_writable
from ..formats import tsv_lines
from ..jobs import CaptionJob
from ..report_pages import CaptionSheet
from .options import add_decoding_options, decoding_options
from .output import add_output_options, output_of


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
    add_output_options(p)
    p.add_argument("--html", metavar="FILE",
                   help="also write a contact sheet of the images captioned in this run (thumbnails, n-best captions "
                        "with scores, what was forced, errors), self-contained, complete or not at all like --jsonl; "
                        "one process only")
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
    out, fmt, image_ids = output_of(args, paths)
    if args.html:
        check_writable(args.html)
    info = setup(args.device, cpu_option="--device cpu")
    if args.html and info.world > 1:
        teardown(info)
        raise ArgumentError("--html writes one page from one process; under torchrun write --jsonl, then make the page "
                            "with one process")
    try:
        return _caption(args, options, paths, json_to_stdout, out, fmt, image_ids, info)
    finally:
        teardown(info)


def _caption(args, options, paths, json_to_stdout, out, fmt, image_ids, info) -> int:
    captioner = Captioner.from_checkpoint(args.checkpoint, device=info.device, runtime=args.runtime)
    settings, _ = captioner.request(include=args.include, **options)
    job = CaptionJob(captioner, paths, out, settings=settings, include=args.include, seed=args.seed,
                     batch_size=args.batch_size, workers=args.workers, max_pixels=args.max_pixels, chunk=args.chunk,
                     checkpoint=args.checkpoint or default_checkpoint_path(), info=info, fmt=fmt, image_ids=image_ids)
    done, count = job.start(args.resume)
    if done:
        info.log(f"resuming: {done} of {len(set(paths))} images were captioned before")
    failed = 0
    progress = tqdm(total=count, unit="img", disable=True if args.quiet or count < 64 or not info.is_main else None,
                    file=sys.stderr)
    with progress, (CaptionSheet(args.html, max_pixels=args.max_pixels) if args.html else nullcontext()) as sheet:
        for result in job.run():
            progress.update(1)
            failed += bool(result.error)
            record = result.to_dict()
            if result.error:
                tqdm.write(f"error: {result.error}", file=sys.stderr)
            elif result.unmet:
                tqdm.write(f"note: {printable_path(result.source)}: the caption misses {result.unmet} of the forced "
                           f"words ({_forced_words(result)}): no caption of at most {settings.max_length} words "
                           "has them all", file=sys.stderr)
            lines = [json.dumps(record, ensure_ascii=False)] if json_to_stdout else tsv_lines(record)
            if lines:  # one write per image: under torchrun the processes share stdout
                sys.stdout.write("".join(line + "\n" for line in lines))
                sys.stdout.flush()
            if sheet:
                sheet.add(record)
    merged = job.finish()  # the output file, from every process's parts
    failed = failed if merged is None else merged
    if failed:
        if info.is_main:
            print(f"captioner caption: {failed} of {len(set(paths))} images could not be read", file=sys.stderr)
        return 1
    return 0


def _forced_words(result) -> str:
    return ", ".join("|".join(f.words) for f in result.forced)
