"""Caption pairs, their epoch order, and the batches training reads.

Every (image, caption) pair is one training sample. The order of an epoch is a
permutation seeded by (seed, epoch), cut into *global* batches of ``batch_size``;
with several processes, each takes an interleaved share of every global batch. So
one process and N processes see exactly the same samples at the same steps, and a
resumed run sees the same order as an uninterrupted one.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from ..data.augment import random_view
from ..data.images import ImageLoadError, load_image
from ..data.preprocess import pil_to_tensor, preprocess
from ..errors import UserError


class TrainingImageError(UserError):
    """A training image, readable when the run started, cannot be read any more."""

    def __init__(self, message: str):
        # From a DataLoader worker this comes back as ``TrainingImageError(the worker's
        # traceback)``, whose last line ends with the message: keep that one line.
        last = message.strip().splitlines()[-1] if message.strip() else message
        super().__init__(last.split(f"{type(self).__name__}: ", 1)[-1])


def caption_pairs(records, rows: list[int], vocab, max_words: int) -> list[tuple[int, list[int], int]]:
    """(cache row, token ids with <start>/<end>, record index) for every training caption."""
    pairs = []
    for index, (record, row) in enumerate(zip(records, rows)):
        for tokens in record.tokens:
            pairs.append((row, vocab.encode(tokens[:max_words]), index))
    return pairs


def epoch_batches(num_pairs: int, batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    """Global batches of pair indices for one epoch (the last incomplete batch is dropped
    when there is more than one batch)."""
    generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
    order = torch.randperm(num_pairs, generator=generator).tolist()
    if num_pairs <= batch_size:
        return [order]
    return [order[i:i + batch_size] for i in range(0, num_pairs - batch_size + 1, batch_size)]


def pad_captions(sequences: list[list[int]], pad_id: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    lengths = torch.tensor([len(s) for s in sequences])
    captions = torch.full((len(sequences), int(lengths.max())), pad_id, dtype=torch.long)
    for i, seq in enumerate(sequences):
        captions[i, :len(seq)] = torch.tensor(seq)
    return captions, lengths


class CachedPairs(Dataset):
    """Pairs served from the feature cache; the view of each sample is fixed by (seed, epoch, index)."""

    def __init__(self, pairs, features: np.ndarray, seed: int):
        self.pairs, self.features, self.seed = pairs, features, seed
        self.views = features.shape[1]
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int):
        row, ids, _ = self.pairs[index]
        view = 0
        if self.views > 1:
            g = torch.Generator().manual_seed(self.seed * 7_919 + self.epoch * 104_729 + index)
            view = int(torch.randint(0, self.views, (), generator=g))
        return torch.from_numpy(self.features[row, view].astype(np.float32)), ids


class ImagePairs(Dataset):
    """Pairs served from image files, for fine-tuning the encoder (random crops and flips)."""

    def __init__(self, pairs, paths: list[str], spec, seed: int, augment: bool = True):
        self.pairs, self.paths, self.spec, self.seed, self.augment = pairs, paths, spec, seed, augment
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int):
        row, ids, _ = self.pairs[index]
        try:
            image = pil_to_tensor(load_image(self.paths[row], resize_to=self.spec.resize_size))
        except ImageLoadError as error:
            raise TrainingImageError(f"{error}; the training image became unreadable during training: restore it, "
                                     "or take it out of the dataset, and continue with --resume") from None
        if self.augment:
            g = torch.Generator().manual_seed(self.seed * 7_919 + self.epoch * 104_729 + index)
            image = random_view(image, g)
        return preprocess(image, self.spec), ids


def collate(items) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    inputs = torch.stack([x for x, _ in items])
    captions, lengths = pad_captions([ids for _, ids in items])
    return inputs, captions, lengths
