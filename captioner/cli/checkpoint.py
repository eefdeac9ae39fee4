"""``captioner checkpoint``: describe a checkpoint, or export a slim copy for release."""

from __future__ import annotations

import json

from ..checkpoint import load_checkpoint, make_checkpoint, save_checkpoint
from ..decoding.settings import GUIDES
from .options import add_decoding_options, decoding_options


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("checkpoint", help="describe or export checkpoints",
                              description="Describe a checkpoint, or export a slim copy of it.")
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    info = actions.add_parser("info", help="what a checkpoint holds (encoder, decoder, vocabulary, training)")
    info.add_argument("path")
    info.add_argument("--json", action="store_true", help="print the description as JSON")
    info.set_defaults(run=run_info)
    export = actions.add_parser("export", help="copy without the training state, optionally as float16")
    export.add_argument("source")
    export.add_argument("target")
    export.add_argument("--half", action="store_true", help="store the weights as float16 (half the size)")
    add_decoding_options(export, methods=("greedy", "beam"))
    export.add_argument("--guide", choices=GUIDES, help="new default guide")
    export.add_argument("--guide-threshold", type=float, metavar="P", help="new default guide threshold")
    export.set_defaults(run=run_export)


def describe(data: dict) -> dict:
    training = data.get("training", {})
    best = training.get("best", {})
    decoder = data["decoder"]["config"]
    weights = [t for t in data["decoder"]["state_dict"].values()]
    return {
        "format_version": data["format_version"],
        "encoder": {**data["encoder"]["spec"], "fine_tuned_weights_stored": data["encoder"]["state_dict"] is not None},
        "decoder": decoder,
        "decoder_parameters": sum(t.numel() for t in weights),
        "weights_dtype": str(weights[0].dtype).replace("torch.", "") if weights else None,
        "vocabulary": {"words": len(data["vocab"]["itos"]), "min_count": data["vocab"].get("min_count")},
        "decoding": data.get("decoding", {}),
        "training": {
            "epoch": training.get("epoch"), "step": training.get("step"),
            "best": best, "data": {k: v for k, v in training.get("data", {}).items() if k != "manifest"},
            "saved": training.get("saved"),
        },
        "resumable": "train_state" in data,
    }


def run_info(args) -> int:
    description = describe(load_checkpoint(args.path))
    if args.json:
        print(json.dumps(description, indent=2))
        return 0
    enc, dec = description["encoder"], description["decoder"]
    pre = enc["preprocessing"] or {}
    print(f"encoder:    {enc['backbone']} ({enc['weights']}), {pre.get('crop_size')} px"
          + (", fine-tuned weights stored" if enc["fine_tuned_weights_stored"] else ""))
    print(f"decoder:    LSTM {dec['num_layers']}x{dec['hidden_size']}, embedding {dec['embed_dim']}, "
          f"{description['decoder_parameters']:,} parameters ({description['weights_dtype']})")
    print(f"vocabulary: {description['vocabulary']['words']} words")
    print(f"decoding:   {description['decoding']}")
    training = description["training"]
    if training["epoch"] is not None:
        print(f"training:   epoch {training['epoch']}, step {training['step']}, data {training['data'].get('path')}, "
              f"best {training['best']}")
    print(f"resumable:  {'yes' if description['resumable'] else 'no (no optimizer state)'}")
    return 0


def _decoding(stored: dict | None, args) -> dict | None:
    """The stored default decoding with the export options applied."""
    changes = decoding_options(args, guide=args.guide, guide_threshold=args.guide_threshold)
    if not changes:
        return stored
    return {**(stored or {}), **changes}


def run_export(args) -> int:
    data = load_checkpoint(args.source)
    training = {k: v for k, v in data.get("training", {}).items()}
    decoding = _decoding(data.get("decoding"), args)
    slim = make_checkpoint(
        encoder_spec=data["encoder"]["spec"], decoder_config=data["decoder"]["config"],
        decoder_state=data["decoder"]["state_dict"], vocab=data["vocab"], encoder_state=data["encoder"]["state_dict"],
        decoding=decoding, training=training, half=args.half,
    )
    save_checkpoint(slim, args.target)
    print(f"wrote {args.target} (no training state{', float16 weights' if args.half else ''}; decoding {decoding})")
    return 0
