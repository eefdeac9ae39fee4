"""Beam search against a common anchor: the one-image beam search of
sgrvinod/a-PyTorch-Tutorial-to-Image-Captioning (``caption.py``, ``caption_image_beam_search``).

    python bench/bench_beam.py [--quick | --smoke]

Both sides run the bundled model's decoder on the features of the same JPEG photos, on one
torch thread. The anchor, written out below on our weights without its attention (this
decoder has none), decodes one image at a time: its k beams are the batch; every step runs
embedding -> ``nn.LSTMCell`` (the decoder's LSTM weights) -> linear -> log-softmax, adds the
beams' scores, takes the top k of the flattened (k x vocabulary) scores, moves beams that
chose ``<end>`` to the finished list and shrinks k, until k is 0 or the step limit. Where the
original would fail (no beam finished within the limit) it returns the best unfinished beam,
and at the limit it drops the unfinished beams where ours forces ``<end>``. Ours is
:func:`captioner.decoding.beam_search` on batches of 16 images (the CLI's default) and of 256
(the batch of the GPU table). Both rank
by plain log-probability (length penalty 0) with the same step limit, so their captions
can be compared; ours also bans ``<pad>``, ``<start>`` and ``<unk>``, which the anchor does not.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from common import alternate, corpus, run_rows
from modes import mode_flag

from captioner import Captioner  # noqa: E402
from captioner.data.images import load_image  # noqa: E402
from captioner.data.preprocess import preprocess  # noqa: E402
from captioner.decoding import beam_search  # noqa: E402
from captioner.models.stepping import LSTMStepper  # noqa: E402

BATCH = 16


def lstm_cell_of(decoder) -> torch.nn.LSTMCell:
    """An ``nn.LSTMCell`` holding the (one-layer) decoder's LSTM weights, as the anchor steps one."""
    lstm = decoder.lstm
    if lstm.num_layers != 1:
        raise ValueError("the anchor steps a one-layer LSTM")
    cell = torch.nn.LSTMCell(lstm.input_size, lstm.hidden_size)
    with torch.no_grad():
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            getattr(cell, name).copy_(getattr(lstm, f"{name}_l0"))
    return cell.eval()


@torch.no_grad()
def anchor_beam_search(decoder, cell, features: torch.Tensor, start_id: int, end_id: int, beam_size: int,
                       max_steps: int) -> list[int]:
    """One image's caption by the anchor's loop (see the module docstring)."""
    k = beam_size
    vocab_size = decoder.config.vocab_size
    prev_words = torch.full((k,), start_id, dtype=torch.long)
    seqs = prev_words.unsqueeze(1)
    top_scores = torch.zeros(k, 1)
    h, c = (s[0] for s in decoder.init_state(features.expand(k, -1)))
    complete, complete_scores = [], []
    for step in range(1, max_steps + 1):
        h, c = cell(decoder.embed(prev_words), (h, c))
        scores = F.log_softmax(decoder.out(h), dim=1)
        scores = top_scores.expand_as(scores) + scores
        if step == 1:  # all beams are the same <start>: take the top k of one row
            top_scores_flat, top_words = scores[0].topk(k, 0, True, True)
        else:
            top_scores_flat, top_words = scores.view(-1).topk(k, 0, True, True)
        prev_inds = torch.div(top_words, vocab_size, rounding_mode="floor")
        next_words = top_words % vocab_size
        seqs = torch.cat([seqs[prev_inds], next_words.unsqueeze(1)], dim=1)
        incomplete = [i for i, word in enumerate(next_words.tolist()) if word != end_id]
        finished = sorted(set(range(len(next_words))) - set(incomplete))
        if finished:
            complete.extend(seqs[finished].tolist())
            complete_scores.extend(top_scores_flat[finished].tolist())
        k -= len(finished)
        if k == 0:
            break
        seqs = seqs[incomplete]
        h, c = h[prev_inds[incomplete]], c[prev_inds[incomplete]]
        top_scores = top_scores_flat[incomplete].unsqueeze(1)
        prev_words = next_words[incomplete]
    if not complete:  # nothing finished within the step limit: the best unfinished beam
        complete, complete_scores = seqs.tolist(), top_scores.squeeze(1).tolist()
    best = complete[complete_scores.index(max(complete_scores))]
    return [w for w in best[1:] if w != end_id]


def row(beam: int, batch: int, mode: str) -> dict:
    if mode != "full":
        batch = min(batch, 16)
    count, repeats = {"full": (max(64, batch), 3), "quick": (16, 1), "smoke": (4, 1)}[mode]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        captioner = Captioner.from_checkpoint(device="cpu")
        paths = corpus(count)
        pixels = torch.stack([preprocess(load_image(p), captioner.preprocessing) for p in paths])
        with torch.no_grad():
            features = torch.cat([captioner.encode(chunk) for chunk in pixels.split(BATCH)])
        decoder, vocab = captioner.model.decoder, captioner.vocab
        cell = lstm_cell_of(decoder)
        max_length = captioner.decoding.max_length
        banned = sorted(vocab.never_generated)
        out = {}

        def anchor():
            out["anchor"] = [anchor_beam_search(decoder, cell, features[i:i + 1], vocab.start_id, vocab.end_id, beam,
                                                max_length + 1) for i in range(count)]

        def ours():
            out["ours"] = [list(hyps[0].tokens) for chunk in features.split(batch)
                           for hyps in beam_search(LSTMStepper(decoder, chunk), vocab.start_id, vocab.end_id,
                                                   beam_size=beam, max_length=max_length, length_penalty=0.0,
                                                   banned=banned)]

        t_anchor, t_ours = alternate(anchor, ours, repeats)
    finally:
        torch.set_num_threads(threads)
    same = sum(a == b for a, b in zip(out["anchor"], out["ours"]))
    ratio = t_anchor / t_ours
    return {
        "row": f"11. Beam search vs sgrvinod's one-image beam search, beam {beam}, batches of {batch}",
        "baseline": f"sgrvinod caption_image_beam_search loop (LSTMCell), one image at a time, beam {beam}",
        "ours": f"captioner.decoding.beam_search, batches of {batch}, beam {beam}",
        "baseline_value": round(count / t_anchor, 1), "ours_value": round(count / t_ours, 1), "unit": "img/s",
        "ratio": round(ratio, 2), "ratio_is": "speed-up",
        "target": "report only (17-28x was measured on the 16-core GPU machine's CPU)", "met": None,
        "command": "python bench/bench_beam.py" + mode_flag(mode),
        "notes": f"{count} photos of the bench corpus, bundled model, 1 torch thread, length penalty 0, step limit "
                 f"{max_length + 1}; same caption from both for {same} of {count}; medians of {repeats} "
                 "alternating runs",
    }


def rows(mode: str = "full") -> list[dict]:
    return [row(3, BATCH, mode), row(5, BATCH, mode), row(5, 256, mode)]


if __name__ == "__main__":
    run_rows(rows, __doc__)
