"""Hand-built models and files shared by the tests."""

from __future__ import annotations

import torch

from captioner.checkpoint import make_checkpoint, save_checkpoint
from captioner.data.vocab import Vocabulary
from captioner.models import CaptionModel, DecoderConfig, EncoderSpec, LSTMDecoder, build_encoder

START, END = 1, 2

# Every device present: tests that depend on the device run on each (a CUDA case that
# cannot run on this machine is not generated, rather than skipped).
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])

# The one wall-clock limit a test may put on a child process or a wait: a guard against a hang
# (a deadlocked child would otherwise stop the suite), never a speed limit. Half an hour is far
# beyond what any test takes on a busy machine, so load alone cannot reach it.
HANG_GUARD_S = 30 * 60


class MarkovStepper:
    """A stepper (:class:`captioner.decoding.Stepper`) whose next-token distribution depends
    only on the previous token, for ``rows`` images.

    ``table[prev]`` is the probability of each next token. Known sequence probabilities make
    it a hand-built test case for the searches.
    """

    def __init__(self, table, rows=1, device="cpu"):
        self.log_table = torch.tensor(table, dtype=torch.float64).log().float().to(device)
        self.rows, self.device = rows, torch.device(device)
        self.state = torch.zeros(rows, device=device)

    def step(self, tokens, state):
        return self.log_table[tokens], state

    @staticmethod
    def reorder(state, index):
        return state[index]


def markov_table(transitions: dict[int, dict[int, float]], vocab_size: int) -> list[list[float]]:
    table = [[0.0] * vocab_size for _ in range(vocab_size)]
    for prev, nxt in transitions.items():
        for token, p in nxt.items():
            table[prev][token] = p
    return table


def sequence_log_prob(table, tokens) -> float:
    """Log-probability of <start> tokens <end> under a Markov table."""
    logp, prev = 0.0, START
    for token in [*tokens, END]:
        logp += float(torch.tensor(table[prev][token], dtype=torch.float64).log())
        prev = token
    return logp


def random_decoder(vocab_size=12, feature_dim=8, hidden=16, layers=1, seed=0) -> LSTMDecoder:
    torch.manual_seed(seed)
    config = DecoderConfig(vocab_size=vocab_size, feature_dim=feature_dim, embed_dim=8,
                           hidden_size=hidden, num_layers=layers, dropout=0.0)
    decoder = LSTMDecoder(config).eval()
    with torch.no_grad():  # sharper distributions than the default init, so searches differ
        decoder.out.weight.mul_(8.0)
    return decoder


CAPTIONS = [
    "a cup of coffee on a table", "a cat lying on a blanket", "a red rocket on a launch pad",
    "an astronaut in a space suit", "a clock on the wall", "some old coins", "a dog on the grass",
]


def tiny_checkpoint(path, seed=0, hidden=32, half=False, decoding=None, encoder_spec=None):
    """A small untrained captioner on the real offline Lite0 encoder (or ``encoder_spec``'s), saved to ``path``."""
    torch.manual_seed(seed)
    vocab = Vocabulary.build(CAPTIONS)
    encoder = build_encoder(encoder_spec or EncoderSpec())
    config = DecoderConfig(vocab_size=len(vocab), feature_dim=encoder.feature_dim, embed_dim=16,
                           hidden_size=hidden, num_layers=1, dropout=0.0)
    model = CaptionModel(encoder, LSTMDecoder(config))
    checkpoint = make_checkpoint(
        encoder_spec=encoder.spec.to_dict(), decoder_config=config.to_dict(),
        decoder_state=model.decoder.state_dict(), vocab=vocab.to_dict(),
        encoder_state=model.encoder_state_to_save(), decoding=decoding, half=half,
    )
    save_checkpoint(checkpoint, path)
    return path


def pretend_read_only(monkeypatch) -> None:
    """Make every file system look mounted read-only to ``captioner.fileio.check_writable``
    (tests run as root, and root cannot be kept out of a folder with permissions)."""
    import os

    import captioner.fileio as fileio

    statvfs = os.statvfs

    class ReadOnly:
        def __init__(self, path):
            self.f_flag = statvfs(path).f_flag | os.ST_RDONLY

    monkeypatch.setattr(fileio.os, "statvfs", ReadOnly)


def on_a_full_disk(monkeypatch) -> None:
    """Make the files that ``captioner.fileio`` writes go to /dev/full, where every write
    that reaches the disk (a flush, a close) fails with ENOSPC, as on a full disk. The
    temporary file itself is created as usual, so a test can see whether it is left behind."""
    import os

    import captioner.fileio as fileio

    fdopen = os.fdopen

    def full(fd, *args, **kwargs):
        device = os.open("/dev/full", os.O_WRONLY)
        os.dup2(device, fd)
        os.close(device)
        return fdopen(fd, *args, **kwargs)

    monkeypatch.setattr(fileio.os, "fdopen", full)


def fast_checkpoint(path, seed=0):
    """:func:`tiny_checkpoint` on Lite0 at 32 px, unguided: a captioner fast enough for hundreds of images
    in a test, whose captions still differ from image to image."""
    from captioner.data.preprocess import Preprocessing

    spec = EncoderSpec(preprocessing=Preprocessing(40, 32, mean=(0.5,) * 3, std=(0.5,) * 3))
    return tiny_checkpoint(path, seed=seed, encoder_spec=spec, decoding={"guide": "none", "max_length": 6})


def random_images(folder, count, start=0, seed=0):
    """``count`` small random PNGs ``folder/NNNN.png`` (numbered from ``start``); their paths."""
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(start, start + count):
        paths.append(folder / f"{i:04d}.png")
        Image.fromarray(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)).save(paths[-1])
    return paths
