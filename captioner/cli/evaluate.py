"""``captioner evaluate``: score a checkpoint (and baselines) on a split with the COCO caption metrics."""

from __future__ import annotations

from ..config import load_config
from .options import check_decoding_options


def _list(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "evaluate", help="score a checkpoint and baselines with BLEU, METEOR, ROUGE-L, CIDEr-D",
        description="Decode a split and score it (x100) with pycocoevalcap, beside the nn/frequent baselines.",
    )
    p.add_argument("--checkpoint", help="checkpoint to evaluate (default: the bundled default model)")
    p.add_argument("--config", required=True, help="the YAML config naming the data (and feature cache)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--split", default="test", choices=["train", "val", "test"])
    p.add_argument("--method", default="beam", type=_list, help="greedy, beam, or both: greedy,beam")
    p.add_argument("--beam-size", type=int)
    p.add_argument("--length-penalty", type=float)
    p.add_argument("--max-length", type=int)
    p.add_argument("--baseline", default=[], type=_list, help="nn, frequent, or both: nn,frequent")
    p.add_argument("--device", help="cpu or cuda")
    p.add_argument("--json", dest="json_out", metavar="OUT", help="write the scores as JSON")
    p.add_argument("--predictions", metavar="DIR", help="write per-image predictions as JSONL files here")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(run=run)


def run(args) -> int:
    from ..training.evaluate import evaluate, format_table

    config = load_config(args.config, args.overrides)
    for method in args.method:
        if method not in ("greedy", "beam"):
            raise ValueError(f"--method {method!r}: evaluation decodes with greedy or beam")
    check_decoding_options(args.beam_size, args.length_penalty, args.max_length)
    for baseline in args.baseline:
        if baseline not in ("nn", "frequent"):
            raise ValueError(f"--baseline {baseline!r}: the baselines are nn and frequent")
    summary = evaluate(
        config, args.checkpoint, split=args.split, methods=args.method, baselines=args.baseline,
        beam_size=args.beam_size, length_penalty=args.length_penalty, max_length=args.max_length,
        device=args.device, json_out=args.json_out, predictions=args.predictions, show=not args.quiet,
    )
    print(format_table(summary))
    return 0
