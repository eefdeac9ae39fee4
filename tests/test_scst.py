"""Self-critical training: the CIDEr-D reward, the sampler, and a short run that raises the reward."""

import contextlib
import io

import numpy as np
import pytest
import torch
from pycocoevalcap.cider.cider import Cider

from captioner.training.scst import CaptionSampler, CiderReward
from helpers import END, START, random_decoder

REFS = {
    "1": ["a red square", "a square that is red"],
    "2": ["a blue circle on a table", "the blue circle"],
    "3": ["two cats on a sofa", "a pair of cats sleeping on a couch"],
    "4": ["a clock on the wall"],
}
CANDIDATES = {"1": "a red square", "2": "a blue square", "3": "cats on a couch", "4": "a wall clock"}


def test_reward_equals_coco_caption_cider_d_when_the_document_frequencies_match():
    with contextlib.redirect_stdout(io.StringIO()):
        _, expected = Cider().compute_score({k: v for k, v in REFS.items()},
                                            {k: [v] for k, v in CANDIDATES.items()})
    reward = CiderReward([[r.split() for r in REFS[k]] for k in REFS])
    ours = [reward.score(CANDIDATES[k].split(), [r.split() for r in REFS[k]]) for k in REFS]
    assert np.allclose(ours, expected, atol=1e-9)


def test_reward_known_cases():
    reward = CiderReward([[["a", "red", "square"]], [["a", "blue", "circle"]], [["green", "grass"]]])
    perfect = reward.score(["a", "red", "square"], [["a", "red", "square"]])
    partial = reward.score(["a", "red", "circle"], [["a", "red", "square"]])
    assert perfect > partial > 0
    assert reward.score(["green", "grass"], [["a", "red", "square"]]) == 0.0


def test_sampler_log_probs_are_those_of_the_sampled_captions():
    torch.manual_seed(0)
    decoder = random_decoder(seed=2)
    sampler = CaptionSampler(decoder, START, END, banned=(0, START), max_length=6)
    features = torch.randn(3, 8)
    sequence, log_prob, lengths = sampler(features, samples=4)
    assert sequence.shape[0] == 12 and log_prob.requires_grad
    expanded = features.repeat_interleave(4, dim=0)
    with torch.no_grad():
        for row in range(12):
            words = sequence[row, :lengths[row]].tolist()
            assert END not in words and len(words) >= 1
            captions = torch.tensor([[START, *words, END]])
            logits = decoder(expanded[row:row + 1], captions, torch.tensor([captions.shape[1]]))[0]
            mask = torch.zeros_like(logits, dtype=torch.bool)
            mask[:, [0, START]] = True
            mask[0, END] = True  # no empty captions
            expected = logits.masked_fill(mask, float("-inf")).log_softmax(-1).gather(1, captions[0, 1:, None]).sum()
            assert log_prob[row].item() == pytest.approx(expected.item(), abs=1e-4)
    log_prob.sum().backward()
    assert decoder.out.weight.grad is not None
