"""A disk cache of encoder features, so a frozen encoder runs once per image, not once per epoch.

The features of a dataset's images live in ``ROOT/NAME-KEY/``:

* ``features.npy``: float16, shape (images, views, feature_dim), memory-mapped;
* ``index.json``: the image paths (row order), the encoder spec, failed images, and
  ``"complete": true``. It is written last and atomically, so a cache without it (a
  crash, an interrupted run) is detected and rebuilt.

KEY hashes everything the features depend on: the resolved encoder spec (backbone,
weights, preprocessing), the encoder's weights when they are not the pretrained ones,
the number of views and the augmentation seed, and every image's path, size and
modification time. Change any of them and a new cache is built.

View 0 is the plain preprocessing; views 1.. are random crops and flips (fixed by the
seed), a cheap augmentation for decoder training on frozen features.

Extraction can be split across processes (``rank``/``world``): each fills its own rows
of the shared file and rank 0 writes the index. With one view the images are read as
captioning reads them (:func:`captioner.data.batches.image_batches`: JPEG decoding on the GPU
for a CUDA device); every batch comes to a CUDA device from pinned memory.

Two runs that need the same cache (two ``train`` commands sharing a ``cache_dir``) must
not build it together: rank 0 of each run takes an exclusive lock (``NAME-KEY.lock``
beside the cache) before it looks at the cache, so the second run waits and then reuses
the complete cache. The build happens in ``NAME-KEY.partial/`` and is renamed to
``NAME-KEY/`` when complete, so a reader never sees a partly written file. The lock
file stays (removing it would let a third run lock a different file).
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import shutil
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from ..fileio import OutputError, reporting_write_errors, write_json_atomic
from .augment import random_view
from .batches import image_batches
from .images import ImageLoadError, load_image
from .preprocess import Preprocessing, pil_to_tensor, preprocess

INDEX = "index.json"
FEATURES = "features.npy"


def encoder_fingerprint(encoder) -> str:
    """'pretrained' for an untouched pretrained encoder, else a hash of its weights."""
    if not encoder.fine_tuned and encoder.spec.weights is not None:
        return "pretrained"
    digest = hashlib.sha256()
    for name, tensor in encoder.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def images_fingerprint(paths: list[str]) -> str:
    digest = hashlib.sha256()
    for path in paths:
        try:
            stat = os.stat(path)
            digest.update(f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
        except OSError:
            digest.update(f"{path}\0missing\n".encode())
    return digest.hexdigest()


class ImageViewsDataset(Dataset):
    """Item ``i``: ``(i, pixels of shape (views, 3, S, S) or None, error or None)``."""

    def __init__(self, paths: list[str], spec: Preprocessing, views: int, seed: int):
        self.paths, self.spec, self.views, self.seed = paths, spec, views, seed

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int):
        try:
            image = pil_to_tensor(load_image(self.paths[index], resize_to=self.spec.resize_size))
        except ImageLoadError as error:
            return index, None, str(error)
        pixels = [preprocess(image, self.spec)]
        for view in range(1, self.views):
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + index * 101 + view)
            pixels.append(preprocess(random_view(image, generator), self.spec))
        return index, torch.stack(pixels), None


def _collate(items):
    return items


class FeatureCache:
    def __init__(self, root: str | Path, name: str, encoder, paths: list[str], views: int = 1, seed: int = 0):
        self.paths = list(paths)
        self.views = views
        self.seed = seed
        self.spec = encoder.spec
        self.dim = encoder.feature_dim
        identity = {
            "spec": encoder.spec.to_dict(), "encoder_weights": encoder_fingerprint(encoder),
            "views": views, "seed": seed if views > 1 else None, "images": images_fingerprint(self.paths),
        }
        self.key = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]
        self.identity = identity
        self.dir = Path(root) / f"{name}-{self.key}"

    @property
    def complete(self) -> bool:
        index_path = self.dir / INDEX
        if not index_path.is_file() or not (self.dir / FEATURES).is_file():
            return False
        try:
            index = json.loads(index_path.read_text())
        except (OSError, json.JSONDecodeError):
            return False
        return bool(index.get("complete")) and index.get("key") == self.key and index.get("count") == len(self.paths)

    def load(self) -> tuple[np.ndarray, dict[int, str]]:
        """The features (read-only memory map) and the failed rows with their errors."""
        if not self.complete:
            raise RuntimeError(f"feature cache {self.dir} is not complete; build it first")
        index = json.loads((self.dir / INDEX).read_text())
        features = np.load(self.dir / FEATURES, mmap_mode="r")
        expected = (len(self.paths), self.views, self.dim)
        if features.shape != expected:
            raise RuntimeError(f"feature cache {self.dir} has shape {features.shape}, expected {expected}")
        return features, {int(k): v for k, v in index["failed"].items()}

    def build(self, encoder, device: torch.device, batch_size: int = 32, num_workers: int = 0,
              rank: int = 0, world: int = 1, barrier=lambda: None, progress: bool = True) -> bool:
        """Compute the features unless a complete cache exists. Returns True if it computed.

        All ``world`` ranks of one run call it together; ``barrier`` synchronises them.
        """
        if world == 1 and self.complete:  # no lock needed to reuse (the cache may be read-only)
            return False
        with self._exclusive(rank == 0):
            if rank == 0 and not self.complete:
                self._start()
            barrier()
            if self.complete:  # decided by rank 0 under the lock: only a lock holder creates the cache
                return False
            partial = self._partial
            failed = self._extract(encoder, device, batch_size, num_workers, rank, world, progress, partial)
            write_json_atomic(partial / f"failed-{rank}.json", failed)
            barrier()
            if rank == 0:
                self._finish(partial, world)
            barrier()
        return True

    @property
    def _partial(self) -> Path:
        return self.dir.with_name(self.dir.name + ".partial")

    @contextmanager
    def _exclusive(self, lock: bool):
        """Hold the cache's lock file while building (rank 0 only: the other ranks follow it)."""
        if not lock:
            yield
            return
        path = self.dir.with_name(self.dir.name + ".lock")
        with reporting_write_errors(path):
            path.parent.mkdir(parents=True, exist_ok=True)
            handle = open(path, "a")
        with handle:
            fcntl.flock(handle, fcntl.LOCK_EX)  # released when the handle closes, or the process dies
            yield

    def _start(self) -> None:
        """Create an empty features file in a fresh partial folder (the lock is held)."""
        for stale in (self._partial, self.dir):  # left by a run that died; no live process owns them
            if stale.exists():
                shutil.rmtree(stale)
        path = self._partial / FEATURES
        shape = (len(self.paths), self.views, self.dim)
        try:
            with reporting_write_errors(path):
                self._partial.mkdir(parents=True)
                np.lib.format.open_memmap(path, mode="w+", dtype=np.float16, shape=shape).flush()
                _reserve(path)
        except BaseException:
            shutil.rmtree(self._partial, ignore_errors=True)
            raise

    def _extract(self, encoder, device, batch_size, num_workers, rank, world, progress, partial) -> dict[int, str]:
        features = np.load(partial / FEATURES, mmap_mode="r+")
        rows = list(range(rank, len(self.paths), world))
        failed: dict[int, str] = {}
        bar = tqdm(total=len(rows), desc=f"features ({self.spec.backbone})", unit="img",
                   disable=not progress or rank != 0)
        encoder = encoder.to(device).eval()
        with torch.no_grad():
            for good, pixels, errors in self._batches(rows, device, batch_size, num_workers):
                failed.update(errors)
                if good:
                    out = encoder(pixels.to(device, non_blocking=True)).view(len(good), self.views, self.dim)
                    features[good] = out.cpu().numpy().astype(np.float16)
                bar.update(len(good) + len(errors))
        bar.close()
        features.flush()
        del features
        return failed

    def _finish(self, partial: Path, world: int) -> None:
        """Merge the ranks' failures, write the index and move the cache into place."""
        failed: dict[int, str] = {}
        for other in range(world):
            part = partial / f"failed-{other}.json"
            failed.update({int(k): v for k, v in json.loads(part.read_text()).items()})
            part.unlink()
        write_json_atomic(partial / INDEX, {
            "key": self.key, "complete": True, "count": len(self.paths), "views": self.views,
            "dim": self.dim, "identity": self.identity, "paths": self.paths,
            "failed": {str(k): v for k, v in sorted(failed.items())},
        })
        os.rename(partial, self.dir)


    def _batches(self, rows: list[int], device: torch.device, batch_size: int, num_workers: int):
        """``(rows read, their pixels (n * views, 3, S, S), {row: error})`` for batches of ``rows``."""
        device = torch.device(device)
        if self.views == 1:
            for batch in image_batches([self.paths[r] for r in rows], self.spec.preprocessing, batch_size,
                                       num_workers, device=device):
                yield [rows[i] for i in batch.indices], batch.pixels, {rows[i]: e for i, e in batch.errors}
            return
        dataset = torch.utils.data.Subset(
            ImageViewsDataset(self.paths, self.spec.preprocessing, self.views, self.seed), rows)
        # Its own generator: building the cache must not move the global RNG that training draws from.
        loader = DataLoader(dataset, batch_size=batch_size, num_workers=num_workers, collate_fn=_collate,
                            generator=torch.Generator(), pin_memory=device.type == "cuda")
        for items in loader:
            good = [(i, x) for i, x, e in items if e is None]
            pixels = torch.cat([x for _, x in good]) if good else None
            yield [i for i, _ in good], pixels, {i: e for i, x, e in items if e is not None}


def _reserve(path: Path) -> None:
    """Allocate the file's blocks now: a full disk is then an error here, not a SIGBUS when a
    memory-mapped write finds no block to fill."""
    size = path.stat().st_size
    fd = os.open(path, os.O_RDWR)
    try:
        os.posix_fallocate(fd, 0, size)
    except OSError as error:
        if error.errno in (errno.EINVAL, errno.EOPNOTSUPP):  # a file system without fallocate
            return
        if error.errno == errno.ENOSPC:
            raise OutputError(f"cannot write the feature cache {path}: disk full "
                              f"({size / 2**20:,.1f} MiB needed)") from error
        raise
    finally:
        os.close(fd)
