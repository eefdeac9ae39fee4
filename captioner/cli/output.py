"""``caption``'s output file options: where, in which format, resumed or not, and in what chunks."""

from __future__ import annotations

import os

from ..errors import ArgumentError
from ..fileio import check_writable
from ..formats import FORMATS, coco_image_ids
from ..jobs import DEFAULT_CHUNK


def add_output_options(p) -> None:
    p.add_argument("--output", metavar="FILE",
                   help="write every image's result to FILE in --format, complete or not at all (also the file that "
                        "the processes of a torchrun run merge into)")
    p.add_argument("--format", choices=FORMATS, default=None,
                   help="of --output: jsonl (the JSON records, the default), tsv (path<TAB>caption) or coco (the "
                        "results JSON of the COCO caption evaluation: [{image_id, caption}])")
    p.add_argument("--coco-ids", metavar="ANNOTATIONS",
                   help="--format coco: take image ids from this COCO annotation file (images[].id by file_name); "
                        "default: the number in each file's name")
    p.add_argument("--resume", action="store_true",
                   help="keep the captions of an unfinished (or finished) run into the same output, made with the "
                        "same checkpoint and settings, and caption only the rest")
    p.add_argument("--chunk", type=int, default=DEFAULT_CHUNK, metavar="N",
                   help=f"images per part file (default {DEFAULT_CHUNK}): an interrupted run loses at most the chunk "
                        "each process was captioning")


def output_of(args, paths) -> tuple[str | None, str, dict | None]:
    """The output file, its format and (for coco) the image ids, checked before any image is read."""
    if args.jsonl and args.jsonl != "-" and args.output:
        raise ArgumentError("give either --jsonl FILE or --output FILE, not both")
    out = args.output or (args.jsonl if args.jsonl != "-" else None)
    fmt = args.format or "jsonl"
    if args.jsonl and args.format not in (None, "jsonl"):
        raise ArgumentError(f"--jsonl writes JSON lines; for --format {args.format} use --output FILE")
    if args.format and not out:
        raise ArgumentError(f"--format {args.format} is the format of --output FILE; give one")
    if args.coco_ids and fmt != "coco":
        raise ArgumentError("--coco-ids gives the image ids of --format coco")
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not out:
        raise ArgumentError("under torchrun, give --jsonl FILE or --output FILE: the processes' captions are "
                            "merged into it")
    if args.resume and not out:
        raise ArgumentError("--resume continues a run into --jsonl FILE or --output FILE; give one")
    if out:
        check_writable(out)
    return out, fmt, coco_image_ids(paths, args.coco_ids) if fmt == "coco" else None
