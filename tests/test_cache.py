"""The feature cache under concurrent builds and a full disk."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from captioner.data.cache import FeatureCache
from captioner.fileio import OutputError  # noqa
from captioner.models import EncoderSpec, build_encoder
from helpers import HANG_GUARD_S
from shapes import draw

ROOT = Path(__file__).resolve().parent.parent

# Child "a" pauses halfway through its images until child "b" is about to build, so b's
# build starts while a's is half-written, however long Python and torch take to start.
BUILD = """
import sys, time
from pathlib import Path
import numpy as np, torch
from captioner.data import batches, cache as module
from captioner.models import EncoderSpec, build_encoder
root, images, role, flags, out = sys.argv[1:]
midway, b_ready = Path(flags) / "a.midway", Path(flags) / "b.ready"
wait = lambda flag: [time.sleep(0.01) for _ in iter(lambda: flag.exists(), True)]
torch.set_num_threads(1)
paths = sorted(str(p) for p in Path(images).iterdir())
encoder = build_encoder(EncoderSpec())
if role == "a":
    item = batches.ImagePathDataset.__getitem__  # what a one-view cache reads its images with
    def paused(self, index):
        if index == len(paths) // 2:
            midway.touch()
            wait(b_ready)
        return item(self, index)
    batches.ImagePathDataset.__getitem__ = paused
else:
    wait(midway)
    b_ready.touch()
cache = module.FeatureCache(root, "shapes", encoder, paths)
cache.build(encoder, torch.device("cpu"), batch_size=2, progress=False)
np.save(out, np.asarray(cache.load()[0]))
"""


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    for i, (colour, shape) in enumerate([(c, s) for c in ("red", "green", "blue") for s in ("square", "circle")] * 2):
        draw(colour, shape, i).save(folder / f"{i:02d}.png")
    return folder


def test_two_processes_building_one_cache_both_get_the_complete_features(tmp_path, images):
    encoder = build_encoder(EncoderSpec())
    paths = sorted(str(p) for p in images.iterdir())
    single = FeatureCache(tmp_path / "alone", "shapes", encoder, paths)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the children: the same computation, so the same float16 numbers
    try:
        single.build(encoder, torch.device("cpu"), batch_size=2, progress=False)
    finally:
        torch.set_num_threads(threads)
    expected = np.asarray(single.load()[0])
    assert (np.abs(expected).sum(axis=-1) > 0).all()  # every row written

    shared = tmp_path / "shared"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    children = [
        subprocess.Popen([sys.executable, "-c", BUILD, str(shared), str(images), role, str(tmp_path),
                          str(tmp_path / f"{role}.npy")], env=env, stderr=subprocess.PIPE, text=True)
        for role in "ab"
    ]
    for child in children:
        _, err = child.communicate(timeout=HANG_GUARD_S)
        assert child.returncode == 0, err
    for role in "ab":
        assert np.array_equal(np.load(tmp_path / f"{role}.npy"), expected), role
    assert [p.name for p in shared.iterdir() if p.is_dir()] == [single.dir.name]  # no partial build left


def test_a_full_disk_is_one_error_naming_the_cache_and_leaves_nothing(tmp_path, images, monkeypatch):
    def full(fd, offset, length):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "posix_fallocate", full)
    encoder = build_encoder(EncoderSpec())
    cache = FeatureCache(tmp_path, "shapes", encoder, sorted(str(p) for p in images.iterdir()))
    with pytest.raises(OutputError, match=r"disk full") as caught:
        cache.build(encoder, torch.device("cpu"), progress=False)
    assert "features.npy" in str(caught.value) and "\n" not in str(caught.value)
    assert not cache.complete and sorted(p.name for p in tmp_path.iterdir()) == [cache.dir.name + ".lock"]


def test_a_full_disk_while_writing_the_index_is_one_error(tmp_path, images, monkeypatch):
    import captioner.fileio as fileio

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(fileio.os, "fsync", full)
    encoder = build_encoder(EncoderSpec())
    cache = FeatureCache(tmp_path, "shapes", encoder, sorted(str(p) for p in images.iterdir())[:2])
    with pytest.raises(OutputError, match=r"cannot write .*failed-0\.json: disk full"):
        cache.build(encoder, torch.device("cpu"), progress=False)
    assert not cache.complete


def test_ranks_of_one_run_share_the_build(tmp_path, images):
    """Two ranks (threads here, processes under torchrun) fill alternate rows of one cache."""
    import threading

    encoder = build_encoder(EncoderSpec())
    paths = sorted(str(p) for p in images.iterdir())
    single = FeatureCache(tmp_path / "alone", "shapes", encoder, paths)
    single.build(encoder, torch.device("cpu"), batch_size=1, progress=False)
    barrier = threading.Barrier(2, timeout=HANG_GUARD_S)
    built = {}

    def rank(r):
        cache = FeatureCache(tmp_path / "shared", "shapes", encoder, paths)
        built[r] = cache.build(encoder, torch.device("cpu"), batch_size=1, rank=r, world=2,
                               barrier=barrier.wait, progress=False)

    threads = [threading.Thread(target=rank, args=(r,)) for r in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert built == {0: True, 1: True}
    shared = FeatureCache(tmp_path / "shared", "shapes", encoder, paths)
    assert np.array_equal(np.asarray(shared.load()[0]), np.asarray(single.load()[0]))
    assert shared.build(encoder, torch.device("cpu"), progress=False) is False  # reused
