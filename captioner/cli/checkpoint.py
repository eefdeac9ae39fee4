"""``captioner checkpoint``: describe a checkpoint, or export a slim copy for release."""

from __future__ import annotations

import json

from ..api import Captioner
from ..checkpoint import load_checkpoint, save_checkpoint
from ..decoding.settings import DecodingSettings, methods
from ..errors import ArgumentError
from ..models import CaptionModel
from .options import add_decoding_options, decoding_options


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("checkpoint", help="describe or export checkpoints",
                              description="Describe a checkpoint, or export a slim copy of it.")
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    info = actions.add_parser("info", help="what a checkpoint holds (encoder, decoder, vocabulary, training)")
    info.add_argument("path")
    info.add_argument("--json", action="store_true", help="print the description as JSON")
    info.set_defaults(run=run_info)
    export = actions.add_parser("export", help="copy without the training state, optionally as float16; "
                                               "or as ONNX graphs (--onnx DIR)")
    export.add_argument("source")
    export.add_argument("target", nargs="?", help="the checkpoint file to write (not with --onnx)")
    export.add_argument("--onnx", metavar="DIR",
                        help="write the networks as ONNX graphs into folder DIR, with the vocabulary and settings "
                             "(caption with `captioner caption --runtime onnx --checkpoint DIR`)")
    export.add_argument("--half", action="store_true", help="store the weights as float16 (half the size)")
    add_decoding_options(export, methods=methods(deterministic=True), guide_help="new default guide")
    export.set_defaults(run=run_export)


def _checked(path):
    """Load a checkpoint and check that its weights fit the model it describes, as loading
    it for captioning would (without reading pretrained encoder weights)."""
    checkpoint = load_checkpoint(path)
    CaptionModel.from_checkpoint(checkpoint, pretrained_encoder=False)
    try:
        DecodingSettings.from_dict(checkpoint.decoding)
    except (ValueError, TypeError) as error:
        raise checkpoint.error(f"damaged checkpoint: {error}") from None
    return checkpoint


def run_info(args) -> int:
    description = _checked(args.path).describe()
    if args.json:
        print(json.dumps(description, indent=2))
        return 0
    enc, dec = description["encoder"], description["decoder"]
    pre = enc.get("preprocessing") or {}
    print(f"encoder:    {enc.get('backbone')} ({enc.get('weights')}), {pre.get('crop_size')} px"
          + (", fine-tuned weights stored" if enc["fine_tuned_weights_stored"] else ""))
    print(f"decoder:    LSTM {dec.get('num_layers')}x{dec.get('hidden_size')}, embedding {dec.get('embed_dim')}, "
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
    changes = decoding_options(args)
    if not changes:
        return stored
    return {**(stored or {}), **changes}


def run_export(args) -> int:
    if (args.target is None) == (args.onnx is None):
        raise ArgumentError("give either a TARGET checkpoint file or --onnx DIR")
    if args.half and args.onnx:
        raise ArgumentError("--half is for checkpoint files; an ONNX export computes in float32")
    checkpoint = _checked(args.source)
    decoding = _decoding(checkpoint.decoding, args)
    if args.onnx:
        from ..onnx.export import check_target, export_onnx

        check_target(args.onnx)
        captioner = Captioner.from_checkpoint(args.source, device="cpu")
        captioner.decoding = DecodingSettings.from_dict(decoding)
        settings = export_onnx(captioner, args.onnx, source=str(args.source))
        print(f"wrote {args.onnx}: {', '.join(settings['graphs'].values())}, checked (onnx.checker, and ONNX Runtime "
              "against torch); caption with --runtime onnx --checkpoint " + str(args.onnx))
        return 0
    save_checkpoint(checkpoint.slim(half=args.half, decoding=decoding), args.target)
    print(f"wrote {args.target} (no training state{', float16 weights' if args.half else ''}; decoding {decoding})")
    return 0
