"""``captioner evaluate``: score a checkpoint (and baselines) on a split with the COCO caption
metrics, guided and unguided, and its object naming rate on labelled photos."""

from __future__ import annotations

from ..config import load_config
from ..decoding.settings import methods
from ..evaluation import BASELINES
from ..errors import ArgumentError
from ..fileio import check_writable, write_json_atomic
from .options import add_decoding_options, decoding_options, list_of


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "evaluate", help="score a checkpoint and baselines with BLEU, METEOR, ROUGE-L, CIDEr-D; object naming",
        description="Decode a split and score it (x100) with pycocoevalcap, beside the nn/frequent baselines; "
                    "with --naming, the share of labelled photos whose caption names their object.",
    )
    p.add_argument("--checkpoint", help="checkpoint to evaluate (default: the bundled default model)")
    p.add_argument("--config", help="the YAML config naming the data (and feature cache)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--split", default="test", choices=["train", "val", "test"])
    add_decoding_options(p, methods=methods(deterministic=True), several=True)
    p.add_argument("--naming", metavar="LABELS", help="labels.jsonl of labelled photos: report the object naming rate")
    p.add_argument("--baseline", default=[], type=list_of(BASELINES),
                   help=f"{' or '.join(BASELINES)}, or both: {','.join(BASELINES)}")
    p.add_argument("--device", help="cpu or cuda")
    p.add_argument("--json", dest="json_out", metavar="OUT", help="write the scores as JSON")
    p.add_argument("--predictions", metavar="DIR", help="write per-image predictions as JSONL files here")
    p.add_argument("--predictions-format", choices=("jsonl", "coco"), default="jsonl",
                   help="coco: each system's predictions as a COCO results file (SPLIT-SYSTEM.json), as "
                        "`caption --format coco` writes and --results reads")
    p.add_argument("--html", metavar="FILE", help="write a page: the scores, and the best and worst 50 images by "
                                                  "CIDEr-D with each system's caption beside the references")
    p.add_argument("--results", metavar="RESULTS",
                   help="score this COCO results file ([{image_id, caption}], as `caption --format coco` writes it) "
                        "against --annotations instead of decoding")
    p.add_argument("--annotations", metavar="FILE", help="the COCO annotation file whose captions --results is "
                                                         "scored against")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(run=run)


def run(args) -> int:
    from ..evaluation import evaluate, format_table, score_results

    if args.json_out:
        check_writable(args.json_out)
    if args.predictions:
        check_writable(args.predictions, folder=True)
    if args.html:
        check_writable(args.html)
    if args.results or args.annotations:
        if not (args.results and args.annotations):
            raise ArgumentError("--results and --annotations go together: a COCO results file and the COCO "
                                "annotation file it is scored against")
        summary = score_results(args.results, args.annotations)
        if args.json_out:
            write_json_atomic(args.json_out, summary, indent=2)
        print(format_table(summary))
        return 0
    config = load_config(args.config, args.overrides) if args.config else None
    options = decoding_options(args)
    summary = evaluate(
        config, args.checkpoint, split=args.split, methods=args.method or [None], guides=args.guide or [None],
        baselines=args.baseline, options=options, device=args.device, json_out=args.json_out,
        predictions=args.predictions, naming=args.naming, show=not args.quiet, html=args.html,
        predictions_format=args.predictions_format,
    )
    if summary is not None:  # under torchrun, process 0 reports
        print(format_table(summary))
    return 0
