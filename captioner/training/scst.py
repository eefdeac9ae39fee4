"""Self-critical sequence training (SCST): fine-tuning a captioner on its CIDEr-D score.

Teacher forcing trains the decoder to predict the next reference word; decoding then
chains its own predictions, and the captions it ranks highest are not the ones the
metrics reward most (beam search, in particular, favours safe, frequent phrases).
SCST (Rennie et al., CVPR 2017) closes the gap with REINFORCE: for every image the
decoder samples ``k`` captions, each is scored with CIDEr-D against the image's
references, and the log-probability of a caption is pushed up or down by how much
better or worse it scored than the mean of the other ``k - 1`` samples (the baseline of
Luo, 2020, which needs no extra greedy decode). It runs as a second phase, started
from a teacher-forced checkpoint with ``train.init_from``.

The CIDEr-D reward is coco-caption's (n = 1..4, Gaussian length penalty with sigma 6,
clipped counts, x10), with document frequencies from the *training* references, as the
reward must not depend on which images share a batch.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict

import numpy as np
import torch
from pycocoevalcap.cider.cider_scorer import precook
from torch import nn
from tqdm import tqdm

from ..models.recurrent import rnn_backward_without_cudnn
from .loop import training_step


class CiderReward:
    """CIDEr-D of token lists against references, with a fixed document frequency."""

    def __init__(self, corpus: list[list[list[str]]], n: int = 4, sigma: float = 6.0):
        """``corpus``: for every training image, its references as token lists."""
        self.n, self.sigma = n, sigma
        self.document_frequency: dict[tuple, float] = defaultdict(float)
        for refs in corpus:
            for ngram in {g for ref in refs for g in precook(" ".join(ref), n)}:
                self.document_frequency[ngram] += 1
        self.log_images = math.log(float(max(1, len(corpus))))

    def _vector(self, tokens: list[str]):
        vec = [defaultdict(float) for _ in range(self.n)]
        norm = [0.0] * self.n
        length = 0
        for ngram, term_freq in precook(" ".join(tokens), self.n).items():
            k = len(ngram) - 1
            idf = self.log_images - math.log(max(1.0, self.document_frequency.get(ngram, 0.0)))
            vec[k][ngram] = float(term_freq) * idf
            norm[k] += vec[k][ngram] ** 2
            if k == 1:  # coco-caption measures length in bigrams
                length += term_freq
        return vec, [math.sqrt(v) for v in norm], length

    def score(self, candidate: list[str], references: list[list[str]]) -> float:
        vec_c, norm_c, len_c = self._vector(candidate)
        total = np.zeros(self.n)
        for ref in references:
            vec_r, norm_r, len_r = self._vector(ref)
            penalty = math.exp(-((len_c - len_r) ** 2) / (2 * self.sigma ** 2))
            for k in range(self.n):
                value = sum(min(w, vec_r[k][g]) * vec_r[k][g] for g, w in vec_c[k].items())
                if norm_c[k] and norm_r[k]:
                    value /= norm_c[k] * norm_r[k]
                total[k] += value * penalty
        return float(total.mean() / max(1, len(references)) * 10.0)


class CaptionSampler(nn.Module):
    """Samples ``k`` captions per image from the decoder, keeping the graph of their log-probabilities.

    A module (rather than a function) so that DistributedDataParallel can wrap it and
    average the gradients of several processes. The decoder runs in eval mode (no
    dropout) and is differentiated, which cuDNN's RNN backward refuses; so the LSTM
    always runs without cuDNN here (:func:`rnn_backward_without_cudnn`; on the CPU,
    where cuDNN is never used, switching it off changes nothing).
    """

    def __init__(self, decoder, start_id: int, end_id: int, banned: tuple[int, ...], max_length: int):
        super().__init__()
        self.decoder = decoder
        self.start_id, self.end_id, self.banned, self.max_length = start_id, end_id, banned, max_length

    def forward(self, features: torch.Tensor, samples: int, generator: torch.Generator | None = None):
        """Returns tokens (N*k, T) padded with <end>, their summed log-probabilities (N*k,)
        and the number of words of each caption."""
        with rnn_backward_without_cudnn(self.decoder):
            return self._sample(features, samples, generator)

    def _sample(self, features: torch.Tensor, samples: int, generator: torch.Generator | None):
        state = self.decoder.init_state(features.repeat_interleave(samples, dim=0))
        rows = state[0].shape[1]
        tokens = torch.full((rows,), self.start_id, dtype=torch.long, device=features.device)
        done = torch.zeros(rows, dtype=torch.bool, device=features.device)
        total = torch.zeros(rows, device=features.device)
        words = []
        for t in range(self.max_length + 1):
            log_probs, state = self.decoder.step(tokens, state)
            forbidden = list(self.banned) + ([self.end_id] if t == 0 else [])
            masked = log_probs.index_fill(1, torch.tensor(forbidden, device=log_probs.device), float("-inf"))
            masked = masked.log_softmax(dim=-1)  # the distribution actually sampled from
            if t == self.max_length:
                choice = torch.full_like(tokens, self.end_id)
            else:
                choice = torch.multinomial(masked.detach().exp().cpu(), 1, generator=generator).squeeze(1)
                choice = choice.to(features.device)
            choice = torch.where(done, torch.full_like(choice, self.end_id), choice)
            step_lp = masked.gather(1, choice.unsqueeze(1)).squeeze(1)
            total = total + torch.where(done, torch.zeros_like(step_lp), step_lp)
            words.append(choice)
            done = done | (choice == self.end_id)
            tokens = choice
            if bool(done.all()):
                break
        sequence = torch.stack(words, dim=1)
        lengths = (sequence != self.end_id).sum(dim=1)
        return sequence, total, lengths


def scst_one_epoch(sampler, decoder, optimizer, scheduler, batches: list[tuple[list[int], list[int]]],
                   features: np.ndarray,
                   rows: list[int], references: list[list[list[str]]], reward: CiderReward, vocab, progress, *,
                   samples: int, world: int, grad_clip: float, device: torch.device, show: bool,
                   description: str = "", after_step=None, gather=None) -> dict:
    """One pass over the training images.

    ``batches`` are (global batch, this process's share) pairs of indices into
    ``rows`` (feature-cache rows) and ``references`` (token lists per image). Every
    process samples its share; the loss is normalised by the global number of sampled
    captions, so the averaged gradients equal those of one process. ``sampler`` may be
    ``decoder``'s CaptionSampler or its DistributedDataParallel wrapper. Dropout is off:
    captions are sampled from, and differentiated under, the same distribution.
    ``after_step`` and ``gather`` are :func:`~captioner.training.loop.training_step`'s.
    """
    decoder.eval()
    total_reward, total_captions, total_loss, steps = 0.0, 0, 0.0, 0
    start = time.perf_counter()
    bar = tqdm(total=len(batches), desc=description, unit="batch", disable=not show, leave=False)
    for global_batch, share in batches:
        chosen = np.asarray(features[[rows[i] for i in share], 0], dtype=np.float32)
        sequence, log_prob, _ = sampler(torch.from_numpy(chosen).to(device), samples)
        scores = torch.tensor([
            reward.score(vocab.decode(sequence[j].tolist()), references[share[j // samples]])
            for j in range(sequence.shape[0])
        ], device=device).view(len(share), samples)
        baseline = (scores.sum(dim=1, keepdim=True) - scores) / max(1, samples - 1)
        advantage = (scores - baseline).view(-1)
        loss = -(advantage * log_prob).sum() / (len(global_batch) * samples / world)
        training_step(loss, optimizer, scheduler, progress, grad_clip=grad_clip, device=device, gather=gather,
                      after_step=after_step)
        total_loss += loss.item()
        steps += 1
        total_reward += float(scores.sum())
        total_captions += scores.numel()
        bar.set_postfix(cider=f"{total_reward / total_captions:.3f}")
        bar.update(1)
    bar.close()
    seconds = time.perf_counter() - start
    return {"train_loss": total_loss / max(1, steps), "train_reward": total_reward / max(1, total_captions),
            "samples": total_captions, "seconds": seconds,
            "samples_per_s": total_captions / seconds if seconds else math.nan}
