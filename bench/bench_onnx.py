"""The ONNX Runtime path against the torch path: captioning JPEG files end to end on the CPU,
with the same captions from both.

    python bench/bench_onnx.py [--quick | --smoke]

Exports the bundled default checkpoint into a temporary folder first (not timed).
"""

from __future__ import annotations

import tempfile

import torch

from common import alternate, corpus, run_rows
from modes import mode_flag

from captioner import Captioner  # noqa: E402
from captioner.api import default_reader_processes  # noqa: E402
from captioner.onnx.export import export_onnx  # noqa: E402

BATCH = 16  # the CLI's default batch size


def row_onnx_end_to_end(mode: str = "full") -> dict:
    count, repeats = {"full": (256, 3), "quick": (64, 1), "smoke": (4, 1)}[mode]
    paths = [str(p) for p in corpus(count)]
    torch_captioner = Captioner.from_checkpoint(device="cpu")
    workers = default_reader_processes(count, BATCH)
    captions = {}
    with tempfile.TemporaryDirectory() as folder:
        export_onnx(torch_captioner, f"{folder}/export")
        onnx_captioner = Captioner.from_checkpoint(f"{folder}/export", device="cpu", runtime="onnx")

        def run(name, captioner):
            def caption():
                results = list(captioner.caption_files(paths, batch_size=BATCH, num_workers=workers))
                captions[name] = [[c.tokens for c in r.captions] for r in results]
                assert all(r.text for r in results)
            return caption

        t_torch, t_onnx = alternate(run("torch", torch_captioner), run("onnx", onnx_captioner), repeats)
    same = sum(a == b for a, b in zip(captions["torch"], captions["onnx"]))
    settings = torch_captioner.decoding
    ratio = t_torch / t_onnx
    return {
        "row": "13. ONNX Runtime vs torch, captioning end to end on the CPU",
        "baseline": f"captioner caption on {count} JPEG files (640x480), torch runtime",
        "ours": "the same with --runtime onnx (ONNX Runtime, CPU execution provider)",
        "baseline_value": round(count / t_torch, 1), "ours_value": round(count / t_onnx, 1), "unit": "img/s",
        "ratio": round(ratio, 2), "ratio_is": "speed-up", "target": ">= 1.3x", "met": ratio >= 1.3,
        "command": "python bench/bench_onnx.py" + mode_flag(mode),
        "notes": f"default decoding (beam {settings.beam_size}, guide {settings.guide}), batch {BATCH}, {workers} "
                 f"reader process(es), {torch.get_num_threads()} threads on each side; same captions from both for "
                 f"{same} of {count} images; medians of {repeats} alternating runs",
    }


def rows(mode: str = "full") -> list[dict]:
    return [row_onnx_end_to_end(mode)]


if __name__ == "__main__":
    run_rows(rows, __doc__)
