"""``captioner train``: train a captioner from a YAML config."""

from __future__ import annotations

import sys

from ..config import load_config


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "train", help="train a captioner from a config file",
        description="Train a captioner. Also runs multi-process: torchrun --nproc_per_node=N -m captioner train ...",
    )
    p.add_argument("--config", required=True, help="YAML config (see configs/)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set train.lr=3e-4 (repeatable)")
    p.add_argument("--resume", action="store_true", help="continue the run in train.out_dir from its last.pt")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"],
                   help="where to train (default: the config's train.device; short for --set train.device=...)")
    p.set_defaults(run=run)


def run(args) -> int:
    from ..training.run import train

    overrides = args.overrides + ([f"train.device={args.device}"] if args.device else [])
    config = load_config(args.config, overrides)
    result = train(config, resume=args.resume)
    if result["history"]:
        print(f"best {config.train.val_metric} {result['best_score']:.1f} at epoch {result['best_epoch']}; "
              f"checkpoints in {result['out_dir']} (best.pt, last.pt), log in {result['out_dir']}/log.csv",
              file=sys.stderr)
    return 0
