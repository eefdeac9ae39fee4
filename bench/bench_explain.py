"""``captioner explain`` against what it has to do at least: caption the image, then one
backward pass per word.

    python bench/bench_explain.py [--quick | --smoke]

Both sides run the bundled model on one 224-pixel photo (examples/cat.jpg) with beam 5. The
baseline is ``Captioner.caption`` of the file plus, for each word of its caption, one forward
and backward pass of the whole model (encoder and teacher-forced decoder) from that word's
log-probability to the pixels: the least a per-word pixel map costs. Ours is
:func:`captioner.explain.explain_images` with the command's defaults (Grad-CAM, SmoothGrad
with its default samples, the beam's view, the LSTM's gates), without writing the page. The
target is at most 3x the baseline.
"""

from __future__ import annotations

import time

import torch

from common import ROOT, alternate, run_rows
from modes import mode_flag

from captioner import Captioner  # noqa: E402
from captioner.data.images import load_image  # noqa: E402
from captioner.explain import SaliencySettings, explain_images  # noqa: E402

IMAGE = ROOT / "examples" / "cat.jpg"
BEAM = 5


def backward_per_word(captioner: Captioner, pixels: torch.Tensor, caption: str) -> None:
    """One forward and backward pass to the pixels per word of ``caption``."""
    lexicon = captioner.lexicon()
    ids = torch.tensor([[lexicon.start_id, *lexicon.encode_text(caption), lexicon.end_id]])
    fed, lengths = lexicon.fed_ids(ids), torch.tensor([ids.shape[1]])
    for word in range(ids.shape[1] - 2):
        x = pixels.clone().requires_grad_(True)
        with torch.enable_grad():
            captioner.word_log_probs(captioner.model.encoder(x), fed, lengths)[0, word].backward()


def rows(mode: str = "full") -> list[dict]:
    repeats = {"full": 5, "quick": 1, "smoke": 1}[mode]
    settings = SaliencySettings() if mode == "full" else SaliencySettings(samples=1)
    captioner = Captioner.from_checkpoint(device="cpu")
    pixels = captioner._pixels(load_image(str(IMAGE)))[None]
    caption = captioner.caption([str(IMAGE)], beam_size=BEAM)[0].text
    words = len(caption.split())

    def baseline():
        captioner.caption([str(IMAGE)], beam_size=BEAM)
        backward_per_word(captioner, pixels, caption)

    def ours():
        explain_images(captioner, [str(IMAGE)], beam_size=BEAM, saliency_settings=settings)

    t_base, t_ours = alternate(baseline, ours, repeats)
    start = time.perf_counter()
    captioner.caption([str(IMAGE)], beam_size=BEAM)
    t_caption = time.perf_counter() - start
    start = time.perf_counter()
    explain_images(captioner, [str(IMAGE)], beam_size=BEAM, saliency=("gradcam",))
    t_gradcam = time.perf_counter() - start
    ratio = t_ours / t_base
    return [{
        "row": f"12. explain of one 224-px image, beam {BEAM}, vs caption + one backward pass per word",
        "baseline": f"caption + {words} forward/backward passes to the pixels",
        "ours": f"explain_images (Grad-CAM, SmoothGrad {settings.samples} samples, beam view, gates)",
        "baseline_value": round(t_base, 3), "ours_value": round(t_ours, 3), "unit": "s",
        "ratio": round(ratio, 2), "ratio_is": "time ours / baseline",
        "target": "at most 3x", "met": ratio <= 3.0,
        "command": "python bench/bench_explain.py" + mode_flag(mode),
        "notes": f"examples/cat.jpg, bundled model, caption {caption!r} ({words} words), torch threads "
                 f"{torch.get_num_threads()}; medians of {repeats} alternating runs; once each after them: caption "
                 f"alone {t_caption:.3f} s, explain with Grad-CAM only {t_gradcam:.3f} s. Writing the page (PNGs, "
                 "matplotlib heat maps) is not timed",
    }]


if __name__ == "__main__":
    run_rows(rows, __doc__)
