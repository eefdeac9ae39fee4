"""Captioning a long list of images in fixed chunks, split across the processes of a
``torchrun`` run, into one output file, resumably.

The inputs (in the order :func:`captioner.data.images.find_images` gives them) are cut into
chunks of ``chunk`` images: chunk k holds inputs ``k*chunk`` to ``(k+1)*chunk - 1``. Process r
of w takes every w-th chunk that is still to do, decodes it on its own device, and writes it
as one file of JSON records into the parts folder ``OUT.parts/`` beside the output, atomically
(a crash loses at most the chunk in flight). When every process is done, process 0 merges the
parts into ``OUT`` in input order and removes them. A chunk is decoded the same way whichever
process takes it (its batches start at its first image, and sampling draws from a generator
seeded by ``seed`` and the chunk's number), so the output is byte-identical for any number of
processes and machines.

``OUT.parts/run.json`` records what the captions depend on: the checkpoint's SHA-256, the
decoding settings, the forced words, the seed, the pixel limit and the chunk size. A resumed
run (``resume=True``) keeps the captions already in the parts (and in ``OUT``, which records no
settings and is taken as it is) and decodes the rest; with other settings it is refused in one
line. Without ``resume``, an unfinished run's parts are discarded and the run starts over. A
changed input list is reported: captions of inputs no longer given are left out of ``OUT``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from .api import Captioner, CaptionResult, default_reader_processes
from .distributed import Distributed
from .errors import ArgumentError
from .fileio import atomic_write, name_beside, reporting_write_errors, write_json_atomic
from .formats import write_results

DEFAULT_CHUNK = 1024
RUN_FILE = "run.json"


def parts_folder(out: str | os.PathLike) -> Path:
    return name_beside(out, ".parts")


def file_sha256(path: str | os.PathLike) -> str:
    """The SHA-256 of a checkpoint file, or of a folder's files (an ONNX export: names and contents, in order)."""
    digest = hashlib.sha256()
    path = Path(path)
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        if path.is_dir():
            digest.update(file.relative_to(path).as_posix().encode() + b"\0")
        with open(file, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def chunk_seed(seed: int, number: int) -> int:
    """The sampling seed of chunk ``number``: ``seed`` itself for the first chunk."""
    return seed + number * 1_000_003


@dataclass(frozen=True)
class Chunk:
    number: int
    indices: list[int]  # the inputs of the chunk still to caption


def chunks_to_do(inputs: Sequence[str], chunk: int, done=frozenset()) -> list[Chunk]:
    """The chunks of ``inputs`` with images not in ``done``; an input given twice is
    captioned once (its first time)."""
    seen, todo = set(done), []
    for number, start in enumerate(range(0, len(inputs), chunk)):
        indices = []
        for i in range(start, min(start + chunk, len(inputs))):
            if inputs[i] not in seen:
                seen.add(inputs[i])
                indices.append(i)
        if indices:
            todo.append(Chunk(number, indices))
    return todo


class Parts:
    """The parts folder of the output ``out``: what the run recorded and the chunks written."""

    def __init__(self, out: str | os.PathLike, identity: dict):
        self.out = Path(out)
        self.folder = parts_folder(out)
        self.identity = identity

    def prepare(self, resume: bool, inputs: Sequence[str], log) -> None:
        """(Rank 0.) Check or start the parts folder; ``log`` prints a note."""
        run_file = self.folder / RUN_FILE
        if self.folder.exists() and not resume:
            log(f"note: discarding the unfinished run in {self.folder} (--resume would keep its captions)")
            shutil.rmtree(self.folder)
        if resume and run_file.exists():
            recorded = json.loads(run_file.read_text())
            changed = [k for k in self.identity if k != "inputs" and recorded.get(k) != self.identity[k]]
            if changed:
                raise ArgumentError(
                    f"--resume: {self.folder} holds captions made with another {', '.join(changed)} "
                    f"({_difference(recorded, self.identity, changed[0])}); re-run with the same settings, "
                    f"or without --resume to start over")
            if recorded.get("inputs") != self.identity["inputs"]:
                log(f"note: the input list has changed since {self.folder} was started "
                    f"({recorded['inputs']['count']} images then, {len(inputs)} now): captions of images no longer "
                    "given are left out, images not captioned yet are captioned now")
        with reporting_write_errors(self.folder):
            self.folder.mkdir(parents=True, exist_ok=True)
        write_json_atomic(run_file, self.identity, indent=1)

    def chunk_files(self) -> list[Path]:
        return sorted(self.folder.glob("*.jsonl")) if self.folder.is_dir() else []

    def records(self, with_output: bool) -> dict[str, str]:
        """The JSON lines written so far, by path (with ``with_output``, ``OUT``'s too; the
        parts' win). A last line cut short (a crash mid-write of ``OUT``) is ignored."""
        found: dict[str, str] = {}
        sources = ([self.out] if with_output and self.out.is_file() else []) + self.chunk_files()
        for source in sources:
            with open(source, encoding="utf-8") as handle:
                for line in handle:
                    try:
                        found[json.loads(line)["path"]] = line.rstrip("\n")
                    except (ValueError, KeyError, TypeError):
                        continue
        return found

    def write_chunk(self, chunk: Chunk, lines: list[str], inputs: Sequence[str]) -> None:
        """One chunk's records, as one file: complete or absent. Its name says which chunk and
        which images (so a chunk of a changed input list never replaces an earlier one)."""
        names = hashlib.sha256("\0".join(inputs[i] for i in chunk.indices).encode()).hexdigest()[:12]
        atomic_write(self.folder / f"{chunk.number:08d}-{names}.jsonl",
                     lambda handle: handle.write("".join(line + "\n" for line in lines)))


class CaptionJob:
    """Caption ``inputs`` as this process's share of a run (``info``: rank and world) into
    ``out`` (None: no file, nothing kept; then every chunk is this process's)."""

    def __init__(self, captioner: Captioner, inputs: Sequence[str], out: str | None, *, settings, include=(),
                 seed: int = 0, batch_size: int = 16, workers: int | None = None, max_pixels: int,
                 chunk: int = DEFAULT_CHUNK, checkpoint: str | os.PathLike, info: Distributed = Distributed(),
                 fmt: str = "jsonl", image_ids: dict[str, int] | None = None):
        if chunk < 1:
            raise ArgumentError(f"--chunk must be at least 1, got {chunk}")
        self.captioner, self.inputs, self.info = captioner, list(inputs), info
        self.settings, self.include, self.seed = settings, tuple(include), seed
        self.batch_size, self.workers, self.max_pixels, self.chunk = batch_size, workers, max_pixels, chunk
        self.fmt, self.image_ids = fmt, image_ids
        identity = {"checkpoint": file_sha256(checkpoint), "settings": settings.to_dict(),
                    "include": list(self.include), "seed": seed, "max_pixels": max_pixels, "chunk": chunk,
                    "inputs": {"count": len(self.inputs),
                               "sha256": hashlib.sha256("\0".join(self.inputs).encode()).hexdigest()}}
        self.parts = Parts(out, identity) if out else None
        self.todo: list[Chunk] = []
        self.resume = False

    def start(self, resume: bool) -> tuple[int, int]:
        """Prepare the parts (rank 0) and choose this process's chunks; (images done already,
        images this process will caption)."""
        done: dict[str, str] = {}
        self.resume = resume
        if self.parts:
            self.info.agree(lambda: self.parts.prepare(resume, self.inputs, self.info.log))
            done = self.parts.records(with_output=resume) if resume else {}
        todo = chunks_to_do(self.inputs, self.chunk, done)
        self.todo = todo[self.info.rank::self.info.world]
        wanted = set(self.inputs)
        return sum(1 for p in done if p in wanted), sum(len(c.indices) for c in self.todo)

    def run(self) -> Iterator[CaptionResult]:
        """This process's results as they come; each finished chunk is written to the parts."""
        count = sum(len(c.indices) for c in self.todo)
        workers = self.workers if self.workers is not None else default_reader_processes(count, self.batch_size)
        for chunk in self.todo:
            lines = []
            generator = torch.Generator().manual_seed(chunk_seed(self.seed, chunk.number))
            for result in self.captioner.caption_files(
                    [self.inputs[i] for i in chunk.indices], batch_size=self.batch_size, num_workers=workers,
                    max_pixels=self.max_pixels, include=self.include, generator=generator, settings=self.settings):
                lines.append(json.dumps(result.to_dict(), ensure_ascii=False))
                yield result
            if self.parts:
                self.parts.write_chunk(chunk, lines, self.inputs)

    def finish(self) -> int:
        """Wait for every process; process 0 merges the parts into the output and removes them.
        The number of images that could not be read, on every process."""
        self.info.barrier()
        merged = {}
        if self.parts:
            self.info.agree(lambda: merged.update(failed=self._merge()))
        return self.info.all_gather(merged.get("failed"))[0]

    def _merge(self) -> int:
        found = self.parts.records(with_output=self.resume)
        missing = [p for p in dict.fromkeys(self.inputs) if p not in found]
        if missing:  # a part removed by hand while the run went on
            raise ArgumentError(f"{self.parts.folder} lacks the captions of {len(missing)} images "
                                f"(first: {missing[0]}); re-run with --resume")
        records = [json.loads(found[p]) for p in self.inputs]
        write_results(self.parts.out, records, self.fmt, self.image_ids)
        shutil.rmtree(self.parts.folder)
        return sum(1 for p in dict.fromkeys(self.inputs) if "error" in json.loads(found[p]))  # each image once


def _difference(recorded: dict, current: dict, key: str) -> str:
    then, now = recorded.get(key), current[key]
    if isinstance(then, dict) and isinstance(now, dict):
        keys = [k for k in sorted(set(then) | set(now)) if then.get(k) != now.get(k)]
        return "; ".join(f"{k}: {then.get(k)!r} then, {now.get(k)!r} now" for k in keys[:3])
    if key == "checkpoint":
        return f"SHA-256 {str(then)[:12]}... then, {now[:12]}... now"
    return f"{then!r} then, {now!r} now"

