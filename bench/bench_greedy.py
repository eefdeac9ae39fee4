"""Greedy decoding against the simplest anchor: the sampling loop of yunjey/pytorch-tutorial.

    python bench/bench_greedy.py [--quick | --smoke]

Both sides run the same weights (embedding 256, LSTM 512, vocabulary 3,221; random, with
``<end>`` made impossible so that both run every step): the tutorial's ``DecoderRNN.sample``
written out below (image features as the first input, then embed -> LSTM step -> linear ->
argmax, 16 steps), against :func:`captioner.decoding.greedy` on an :class:`LSTMDecoder` of
the same sizes with ``max_length=15`` (15 words and the forced ``<end>``: 16 LSTM steps, plus
the projection of the features to h0 and c0, log-probabilities and the banned words). The
tutorial's loop runs ``nn.LSTM``; greedy runs an ``LSTMStepper``, which on a CPU computes
the LSTM cell from a word -> input-gate table (see :mod:`captioner.models.stepping`).
"""

from __future__ import annotations

import torch

from common import alternate, run_rows
from modes import mode_flag

from captioner.decoding import greedy  # noqa: E402
from captioner.models.stepping import LSTMStepper  # noqa: E402
from captioner.models import DecoderConfig, LSTMDecoder  # noqa: E402

VOCAB, EMBED, HIDDEN, STEPS = 3221, 256, 512, 16
PAD, START, END, UNK = 0, 1, 2, 3


def make_decoder(device) -> LSTMDecoder:
    torch.manual_seed(0)
    config = DecoderConfig(vocab_size=VOCAB, feature_dim=EMBED, embed_dim=EMBED, hidden_size=HIDDEN, dropout=0.0)
    decoder = LSTMDecoder(config).eval().to(device)
    with torch.no_grad():
        decoder.out.bias[END] = float("-inf")  # never chosen: both sides run all their steps
    return decoder


@torch.no_grad()
def tutorial_sample(decoder: LSTMDecoder, features: torch.Tensor, steps: int = STEPS) -> list[list[int]]:
    """yunjey/pytorch-tutorial, image_captioning/model.py, ``DecoderRNN.sample``, on our modules."""
    sampled_ids = []
    inputs = features.unsqueeze(1)
    states = None
    for _ in range(steps):
        hiddens, states = decoder.lstm(inputs, states)
        outputs = decoder.out(hiddens.squeeze(1))
        _, predicted = outputs.max(1)
        sampled_ids.append(predicted)
        inputs = decoder.embed(predicted)
        inputs = inputs.unsqueeze(1)
    return torch.stack(sampled_ids, 1).cpu().tolist()


def ours(decoder: LSTMDecoder, features: torch.Tensor):
    return greedy(LSTMStepper(decoder, features), START, END, max_length=STEPS - 1, banned=(PAD, START, UNK))


def compare(batch: int, repeats: int, device="cpu") -> tuple[float, float]:
    """Median seconds of the tutorial loop and of greedy on ``batch`` images."""
    decoder = make_decoder(device)
    features = torch.randn(batch, EMBED, generator=torch.Generator().manual_seed(1)).to(device)
    hyps = ours(decoder, features)
    assert all(len(h.tokens) == STEPS - 1 and h.truncated for h in hyps)
    return alternate(lambda: tutorial_sample(decoder, features), lambda: ours(decoder, features), repeats)


def row(batch: int, mode: str) -> dict:
    repeats = {"full": 41, "quick": 5, "smoke": 1}[mode]
    t_tutorial, t_ours = compare(batch, repeats)
    notes = (f"{STEPS} LSTM steps on each side, same weights, CPU; medians of {repeats} alternating runs; "
             "the tutorial's nn.LSTM with its default kernel, greedy's step from the input-gate table "
             "(captioner.models.stepping)")
    ratio = t_tutorial / t_ours
    return {
        "row": f"10. Greedy vs the pytorch-tutorial sampling loop, batch {batch}",
        "baseline": f"yunjey/pytorch-tutorial DecoderRNN.sample, {STEPS} steps, batch {batch}",
        "ours": f"captioner.decoding.greedy, same sizes, batch {batch}",
        "baseline_value": round(batch / t_tutorial, 1), "ours_value": round(batch / t_ours, 1), "unit": "img/s",
        "ratio": round(ratio, 2), "ratio_is": "speed-up", "target": ">= 1.0x", "met": ratio >= 1.0,
        "command": "python bench/bench_greedy.py" + mode_flag(mode),
        "notes": notes,
    }


def rows(mode: str = "full") -> list[dict]:
    return [row(1, mode), row(64, mode)]


if __name__ == "__main__":
    run_rows(rows, __doc__)
