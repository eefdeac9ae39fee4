"""Self-critical training: the CIDEr-D reward, the sampler, and a short run that raises the reward."""

import contextlib
import io

import numpy as np
import pytest
import torch
from pycocoevalcap.cider.cider import Cider

from captioner.data.vocab import Vocabulary
from captioner.training.loop import Progress
from captioner.training.scst import CaptionSampler, CiderReward, scst_one_epoch
from helpers import DEVICES, END, START, random_decoder

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


def test_sampler_runs_the_lstm_without_cudnn_and_restores_the_flag():
    # cuDNN refuses the RNN backward in eval mode ("cudnn RNN backward can only be called in
    # training mode"), which is how SCST differentiates the sampler on CUDA; the sampler
    # therefore runs every LSTM step with cuDNN switched off (a no-op on the CPU).
    decoder = random_decoder(seed=3)
    seen = []
    real_forward = decoder.lstm.forward

    def forward(*args):  # what the flag is while the LSTM computes
        seen.append(torch.backends.cudnn.enabled)
        return real_forward(*args)

    decoder.lstm.forward = forward
    sampler = CaptionSampler(decoder, START, END, banned=(0, START), max_length=5)
    assert torch.backends.cudnn.enabled
    _, log_prob, _ = sampler(torch.randn(2, 8), samples=3)
    assert seen and not any(seen)
    assert torch.backends.cudnn.enabled  # back on for the CNN and the rest of the program
    assert not decoder.lstm._forward_pre_hooks and not decoder.lstm._forward_hooks  # the hooks are gone
    log_prob.sum().backward()  # eval mode + gradients: what cuDNN refuses
    assert decoder.lstm.weight_hh_l0.grad is not None


@pytest.mark.parametrize("device", DEVICES)
def test_one_scst_step_follows_the_reinforce_gradient(device):
    """One SGD step (lr 1) of ``scst_one_epoch`` moves the weights by minus the gradient of
    -sum(advantage * log p(caption)) / (N k), with log p computed independently by the
    teacher-forced decoder on the captions the sampler drew."""
    words = ["a", "red", "blue", "square", "circle", "on", "table", "the"]
    vocab = Vocabulary(["<pad>", "<start>", "<end>", "<unk>", *words])
    decoder = random_decoder(vocab_size=len(vocab), seed=5).to(device)
    before = {k: v.detach().clone() for k, v in decoder.named_parameters()}
    refs = [[["a", "red", "square"]], [["the", "blue", "circle", "on", "the", "table"]]]
    reward = CiderReward(refs)
    features = np.random.default_rng(0).normal(size=(3, 1, 8)).astype(np.float16)
    rows, samples = [2, 0], 4
    drawn = []

    class Recorder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = CaptionSampler(decoder, vocab.start_id, vocab.end_id, vocab.never_generated, 6)

        def forward(self, *args):
            out = self.inner(*args)
            drawn.append(out[0].detach().clone())
            return out

    optimizer = torch.optim.SGD(decoder.parameters(), lr=1.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    torch.manual_seed(0)
    stats = scst_one_epoch(Recorder(), decoder, optimizer, scheduler, [([0, 1], [0, 1])], features, rows, refs,
                           reward, vocab, Progress(), samples=samples, world=1, grad_clip=0.0,
                           device=torch.device(device), show=False)
    sequence = drawn[0].cpu()
    # the expected loss, from the sampled captions alone
    scores = torch.tensor([reward.score(vocab.decode(sequence[j].tolist()), refs[j // samples])
                           for j in range(len(sequence))], dtype=torch.float64).view(2, samples)
    advantage = (scores - (scores.sum(1, keepdim=True) - scores) / (samples - 1)).view(-1).float()
    reference = random_decoder(vocab_size=len(vocab), seed=5)
    lengths = (sequence != vocab.end_id).sum(1)
    captions = torch.full((len(sequence), sequence.shape[1] + 1), vocab.pad_id)
    for j in range(len(sequence)):
        captions[j, :lengths[j] + 2] = torch.tensor([vocab.start_id, *sequence[j, :lengths[j]].tolist(),
                                                     vocab.end_id])
    chosen = torch.from_numpy(features[rows, 0].astype(np.float32)).repeat_interleave(samples, 0)
    logits = reference(chosen, captions, lengths + 2)
    mask = torch.zeros(logits.shape[-1], dtype=torch.bool)
    mask[list(vocab.never_generated)] = True
    log_probs = logits.masked_fill(mask, float("-inf"))
    log_probs[:, 0, vocab.end_id] = float("-inf")  # the first word is never <end>
    targets = captions[:, 1:]
    picked = log_probs.log_softmax(-1).gather(2, targets.clamp(min=0).unsqueeze(2)).squeeze(2)
    log_p = picked.masked_fill(targets == vocab.pad_id, 0.0).sum(1)
    loss = -(advantage * log_p).sum() / (2 * samples)
    loss.backward()
    assert stats["train_loss"] == pytest.approx(loss.item(), abs=1e-5)
    assert stats["train_reward"] == pytest.approx(scores.mean().item(), abs=1e-5)  # float32 scores, each <= 10
    moved = 0.0
    for name, parameter in reference.named_parameters():
        expected = before[name].cpu() - (parameter.grad if parameter.grad is not None else 0.0)
        after = dict(decoder.named_parameters())[name].detach().cpu()
        # float32 sums of a few dozen terms of size ~1: rounding well under 1e-5
        assert torch.allclose(after, expected, atol=1e-5), name
        moved = max(moved, float((after - before[name].cpu()).abs().max()))
    assert moved > 1e-3  # the step did something (the rewards differ between samples)
