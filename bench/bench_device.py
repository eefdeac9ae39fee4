"""The throughput table of one device (``bench/run.py --device cuda`` on a GPU machine; it runs
on the CPU too): the encoder, captioning end to end, greedy and beam search from features,
and building the feature cache, each against a baseline measured in the same run.

    python bench/bench_device.py [--quick | --smoke] [--device cuda]

Sizes are those of the GPU table (encoder batch 128, decoding batch 256); on a CPU the
image counts are smaller; ``--quick`` makes everything small, ``--smoke`` tiny.
"""

from __future__ import annotations

import argparse
import copy
import json
import tempfile

import torch

import bench_greedy
from common import alternate, corpus
from modes import add_mode_flags, mode_flag

from captioner import Captioner  # noqa: E402
from captioner.api import default_reader_processes  # noqa: E402
from captioner.data.cache import FeatureCache  # noqa: E402
from captioner.data.images import load_image  # noqa: E402
from captioner.data.preprocess import preprocess  # noqa: E402
from captioner.decoding import beam_search, greedy  # noqa: E402
from captioner.models.stepping import LSTMStepper  # noqa: E402
from captioner.runtime import resolve_device  # noqa: E402


def _sizes(device: torch.device, mode: str) -> dict:
    if mode == "smoke":
        return {"encoder_batch": 2, "images": 4, "caption_batch": 2, "decode_batch": 4, "repeats": 1}
    if mode == "quick":
        return {"encoder_batch": 8, "images": 32, "caption_batch": 16, "decode_batch": 16, "repeats": 1}
    if device.type == "cuda":
        return {"encoder_batch": 128, "images": 2048, "caption_batch": 128, "decode_batch": 256, "repeats": 3}
    return {"encoder_batch": 128, "images": 256, "caption_batch": 16, "decode_batch": 256, "repeats": 3}


def _timed(device: torch.device):
    """``alternate`` with the device's queue drained after each run."""
    def sync(fn):
        def run():
            fn()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
        return run
    return lambda baseline, ours, repeats: alternate(sync(baseline), sync(ours), repeats)


def _row(number: str, name: str, baseline: str, ours: str, count: int, t_base: float, t_ours: float,
         notes: str, mode: str, device: torch.device, target: str = "report only", met=None) -> dict:
    return {
        "row": f"{number}. {name}", "baseline": baseline, "ours": ours,
        "baseline_value": round(count / t_base, 1), "ours_value": round(count / t_ours, 1), "unit": "img/s",
        "ratio": round(t_base / t_ours, 2), "ratio_is": "throughput ours / baseline", "target": target, "met": met,
        "command": f"python bench/run.py --device {device.type}" + mode_flag(mode), "notes": notes,
    }


def rows(mode: str = "full", device: str | None = None) -> list[dict]:
    device = resolve_device(device)
    size = _sizes(device, mode)
    timed = _timed(device)
    repeats = size["repeats"]
    captioner = Captioner.from_checkpoint(device=device)
    encoder = captioner.model.encoder
    paths = [str(p) for p in corpus(size["images"])]
    out = []

    # D1: the encoder, channels-last (as it runs) against the default layout
    n = size["encoder_batch"]
    pixels = torch.stack([preprocess(load_image(p), captioner.preprocessing) for p in paths[:n]]).to(device)
    default = copy.deepcopy(encoder).to(memory_format=torch.contiguous_format)
    with torch.no_grad():
        t_default, t_ours = timed(lambda: default.neck(default.body(default.normalize(pixels))),
                                  lambda: encoder(pixels), repeats)
    out.append(_row("D1", f"Encoder alone, batch {n}", "Lite0 in the default memory layout",
                    "Lite0 channels-last (as captioner runs it)", n, t_default, t_ours,
                    f"pixels already on {device.type}; medians of {repeats} alternating runs", mode, device))
    encoder_rate = n / t_ours

    # D2: captioning files end to end against the encoder alone on pixels in memory
    workers = default_reader_processes(len(paths), size["caption_batch"])
    batch = size["caption_batch"]
    all_pixels = torch.stack([preprocess(load_image(p), captioner.preprocessing) for p in paths])

    def encoder_only():
        with torch.no_grad():
            for chunk in all_pixels.split(batch):
                encoder(chunk.to(device))

    def end_to_end():
        assert all(r.text for r in captioner.caption_files(paths, batch_size=batch, guide="none", method="beam",
                                                           beam_size=3))

    t_enc, t_e2e = timed(encoder_only, end_to_end, repeats)
    out.append(_row("D2", "caption_files end to end vs the encoder alone",
                    f"encoder on {len(paths)} preprocessed images in host memory, batch {batch}",
                    f"caption {len(paths)} JPEG files (640x480), beam 3, {workers} reader process(es)",
                    len(paths), t_enc, t_e2e, f"medians of {repeats} alternating runs; JPEG decoding on the "
                    f"{'GPU (nvJPEG)' if device.type == 'cuda' else 'CPU (PIL)'}", mode, device))

    # D3, D4: decoding from features
    m = size["decode_batch"]
    with torch.no_grad():
        features = torch.cat([encoder(c) for c in all_pixels.to(device).split(size["caption_batch"])])
    features = features.repeat(-(-m // len(features)), 1)[:m]
    t_tutorial, t_greedy = bench_greedy.compare(m, max(repeats, 5), device)
    out.append(_row("D3", f"Greedy from features, batch {m}, vs the pytorch-tutorial loop",
                    "yunjey/pytorch-tutorial DecoderRNN.sample (16 steps)", "captioner.decoding.greedy, same sizes",
                    m, t_tutorial, t_greedy, "embedding 256, LSTM 512, vocabulary 3,221, random weights, <end> "
                    "impossible (bench/bench_greedy.py)", mode, device, ">= 1.0x", t_tutorial / t_greedy >= 1.0))
    vocab, decoder = captioner.vocab, captioner.model.decoder
    options = dict(start_id=vocab.start_id, end_id=vocab.end_id, max_length=16, banned=vocab.never_generated)
    t_g, t_beam = timed(lambda: greedy(LSTMStepper(decoder, features), **options),
                        lambda: beam_search(LSTMStepper(decoder, features), beam_size=5, **options), max(repeats, 5))
    out.append(_row("D4", f"Beam 5 from features, batch {m}, vs greedy", f"greedy, batch {m}, bundled model",
                    f"beam 5, batch {m} ({5 * m} rows per step)", m, t_g, t_beam,
                    "the bundled checkpoint's decoder; max 16 words", mode, device))

    # D5: building the feature cache against the encoder alone
    def build():
        with tempfile.TemporaryDirectory() as root:
            FeatureCache(root, "bench", encoder, paths).build(encoder, device, batch_size=batch,
                                                               num_workers=workers, progress=False)

    t_enc, t_build = timed(encoder_only, build, repeats)
    out.append(_row("D5", "FeatureCache.build vs the encoder alone", f"encoder on {len(paths)} preprocessed images",
                    f"FeatureCache.build on the {len(paths)} JPEG files, {workers} reader process(es)",
                    len(paths), t_enc, t_build, f"medians of {repeats} alternating runs; encoder alone in D1: "
                    f"{encoder_rate:.1f} img/s", mode, device))
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_mode_flags(parser)
    parser.add_argument("--device")
    args = parser.parse_args()
    for row in rows(args.mode, args.device):
        print(json.dumps(row))
