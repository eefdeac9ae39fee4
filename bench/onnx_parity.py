"""Do the torch and ONNX Runtime paths write the same captions? Exact-match rate and the largest
log-probability difference, per decoding mode, on the example photos and (with ``--data``) the
first images of a dataset's test split. Both in float32 on the CPU.

    python bench/onnx_parity.py [--checkpoint CKPT] [--data offline_data/dataset_offline.json
                                 --images offline_data/images --count 200] [--out bench/ONNX-PARITY.md]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from captioner import Captioner  # noqa: E402
from captioner.data.datasets import read_karpathy  # noqa: E402
from captioner.fileio import write_text_atomic  # noqa: E402
from captioner.onnx.export import export_onnx  # noqa: E402

MODES = {"greedy": dict(method="greedy", guide="none"), "beam 3": dict(method="beam", beam_size=3, guide="none"),
         "default (guided beam)": {}, "constrained (--include dog|cat)": dict(include=["dog|cat"], guide="none")}


def compare(torch_captioner, onnx_captioner, paths: list[str], modes=tuple(MODES)) -> list[dict]:
    rows = []
    for name in modes:
        options = MODES[name]
        theirs = list(torch_captioner.caption_files(paths, **options))
        ours = list(onnx_captioner.caption_files(paths, **options))
        same = sum(a.text == b.text for a, b in zip(ours, theirs))
        worst = max(abs(x.log_prob - y.log_prob) for a, b in zip(ours, theirs)
                    for x, y in zip(a.captions, b.captions) if a.text == b.text)
        rows.append({"mode": name, "images": len(paths), "same": same, "max_log_prob_diff": worst})
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", help="default: the bundled model")
    parser.add_argument("--data", help="a Karpathy-format dataset JSON (its test split)")
    parser.add_argument("--images", help="the dataset's image folder")
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--modes", default=",".join(MODES), help=f"comma-separated, of: {', '.join(MODES)}")
    parser.add_argument("--out", default=str(ROOT / "bench" / "ONNX-PARITY.md"))
    args = parser.parse_args()
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = set(modes) - set(MODES)
    if unknown:
        parser.error(f"unknown modes {sorted(unknown)}; choose from {', '.join(MODES)}")
    sets = {"examples/": [str(p) for p in sorted((ROOT / "examples").glob("*.jpg"))]}
    if args.data:
        records = read_karpathy(args.data, args.images).split("test")
        paths = list(dict.fromkeys(r.image_path for r in records))[:args.count]
        sets[f"first {len(paths)} test images of {args.data}"] = paths
    torch_captioner = Captioner.from_checkpoint(args.checkpoint, device="cpu")
    lines = ["# ONNX Runtime vs torch: the same captions?", "",
             f"Measured {time.strftime('%Y-%m-%d %H:%M')} with `python bench/onnx_parity.py"
             + (f" --data {args.data} --images {args.images} --count {args.count}" if args.data else "")
             + ("" if args.modes == parser.get_default("modes") else f" --modes '{args.modes}'") + "`: "
             "the checkpoint exported with `captioner checkpoint export --onnx`, both runtimes in float32 on the "
             "CPU. The log-probability difference is over the captions that are the same.", "",
             "| images | decoding | same best caption | largest log-probability difference |", "|---|---|---|---|"]
    with tempfile.TemporaryDirectory() as folder:
        export_onnx(torch_captioner, f"{folder}/export")
        onnx_captioner = Captioner.from_checkpoint(f"{folder}/export", device="cpu", runtime="onnx")
        for label, paths in sets.items():
            for row in compare(torch_captioner, onnx_captioner, paths, modes):
                lines.append(f"| {label} | {row['mode']} | {row['same']} of {row['images']} "
                             f"({100 * row['same'] / row['images']:.1f}%) | {row['max_log_prob_diff']:.2e} |")
                print(lines[-1], flush=True)
    write_text_atomic(args.out, "\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
