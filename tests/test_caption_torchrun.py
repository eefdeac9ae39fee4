"""``torchrun ... captioner caption``: processes (and simulated machines) on gloo, merged into one file
byte-identical to a one-process run, and resumed after a process is killed. Each torchrun start
costs several seconds here (Python and PyTorch in every process), so these are few and slow."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from captioner.cli import main
from captioner.jobs import parts_folder
from helpers import HANG_GUARD_S, fast_checkpoint, random_images

ENV = {**os.environ, "OMP_NUM_THREADS": "1",
       "PYTHONPATH": os.pathsep.join(filter(None, [str(Path(__file__).resolve().parents[1]),
                                                   os.environ.get("PYTHONPATH")]))}
CHUNK = 4

# Rank RANK dies (SIGKILL) with its chunk number AFTER decoded but not written: a crash mid-chunk.
KILLED_RANK = """
import os, signal, sys
import captioner.jobs as jobs
from captioner.cli import main

rank, after = int(sys.argv[1]), int(sys.argv[2])
write, written = jobs.Parts.write_chunk, []

def write_or_die(self, *args):
    if int(os.environ["RANK"]) == rank and len(written) == after:
        os.kill(os.getpid(), signal.SIGKILL)
    written.append(1)
    write(self, *args)

jobs.Parts.write_chunk = write_or_die
sys.exit(main(sys.argv[3:]))
"""


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """40 images (one unreadable), a checkpoint, and the output of one process."""
    root = tmp_path_factory.mktemp("torchrun")
    random_images(root / "images", 40)
    (root / "images" / "0013.png").write_bytes(b"not a png")
    ckpt = fast_checkpoint(root / "fast.pt")
    args = ["caption", str(root / "images"), "--checkpoint", str(ckpt), "--batch-size", "2", "--chunk", str(CHUNK)]
    assert main([*args, "--quiet", "--jsonl", str(root / "one.jsonl")]) == 1
    return root, args


def torchrun(*args, background=False):
    command = [sys.executable, "-m", "torch.distributed.run", *map(str, args)]
    if background:
        return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    return subprocess.run(command, capture_output=True, text=True, env=ENV, timeout=HANG_GUARD_S)


def captioned(stdout: str) -> set[str]:
    return {line.split("\t")[0] for line in stdout.splitlines()}


class WriteRecorder:
    """A stdout that keeps each write call apart."""

    def __init__(self):
        self.writes = []

    def write(self, text):
        self.writes.append(text)
        return len(text)

    def flush(self):
        pass

    def isatty(self):
        return False


@pytest.mark.parametrize("fmt, records", [([], 39), (["--jsonl", "-"], 40)])  # JSON records the failure too
def test_each_image_is_one_write_of_whole_lines(run, monkeypatch, fmt, records):
    """torchrun sets PYTHONUNBUFFERED, so every write call is a write to the pipe the processes
    share: a line written in two calls (its text, then its newline) can be cut by another's."""
    root, args = run
    stdout = WriteRecorder()
    monkeypatch.setattr(sys, "stdout", stdout)
    assert main([*args[:2], *args[2:4], "--quiet", *fmt]) == 1
    writes = [w for w in stdout.writes if w]
    assert len(writes) == records and all(w.endswith("\n") and w.count("\n") == 1 for w in writes)


@pytest.mark.slow
def test_two_processes_write_what_one_writes(run, tmp_path):
    root, args = run
    out = tmp_path / "two.jsonl"
    done = torchrun("--standalone", "--nproc-per-node", 2, "-m", "captioner", *args, "--jsonl", out)
    assert done.returncode == 1, done.stderr[-3000:]  # one image could not be read
    assert "captioner caption: 1 of 40 images could not be read" in done.stderr
    assert out.read_bytes() == (root / "one.jsonl").read_bytes() and not parts_folder(out).exists()
    assert len(captioned(done.stdout)) == 39  # each image was captioned once, by one of the processes


@pytest.mark.slow
def test_a_killed_process_is_an_error_and_resume_redoes_at_most_a_chunk_per_process(run, tmp_path):
    root, args = run
    out = tmp_path / "two.jsonl"
    (tmp_path / "killed.py").write_text(KILLED_RANK)
    killed = torchrun("--standalone", "--nproc-per-node", 2, tmp_path / "killed.py", 1, 2, *args, "--jsonl", out)
    assert killed.returncode != 0 and not out.exists()
    assert re.search(r"exitcode\s*: -9", killed.stderr), killed.stderr[-3000:]  # torchrun names the one killed
    first = captioned(killed.stdout)
    resumed = subprocess.run([sys.executable, "-m", "captioner", *args, "--jsonl", str(out), "--resume"],
                             capture_output=True, text=True, env=ENV, timeout=HANG_GUARD_S)
    assert resumed.returncode == 1, (resumed.stderr[-3000:], killed.stderr[-3000:])
    assert out.read_bytes() == (root / "one.jsonl").read_bytes() and not parts_folder(out).exists()
    again = first & captioned(resumed.stdout)  # decoded before the kill, lost, and decoded again
    # process 1 lost the chunk it was writing; process 0 at most the one it was in when torchrun stopped it
    assert CHUNK <= len(again) <= 2 * CHUNK, (sorted(again), killed.stderr[-3000:])
    assert len(first | captioned(resumed.stdout)) == 39


@pytest.mark.slow
def test_two_machines_simulated_on_one_write_what_one_process_writes(run, tmp_path):
    root, args = run
    out = tmp_path / "nodes.jsonl"
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    nodes = [torchrun("--nnodes", 2, "--node-rank", rank, "--nproc-per-node", 1, "--rdzv-backend", "c10d",
                      "--rdzv-endpoint", f"127.0.0.1:{port}", "-m", "captioner", *args, "--jsonl", out,
                      background=True) for rank in (0, 1)]
    results = [node.communicate(timeout=HANG_GUARD_S) for node in nodes]
    assert [node.returncode for node in nodes] == [1, 1], [err[-2000:] for _, err in results]
    assert out.read_bytes() == (root / "one.jsonl").read_bytes()
    outputs = [captioned(stdout) for stdout, _ in results]
    assert not outputs[0] & outputs[1] and len(outputs[0] | outputs[1]) == 39  # the work was split, not repeated
