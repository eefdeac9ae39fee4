"""Atomic writes: complete or untouched, and write failures as one line naming the path."""

from __future__ import annotations

import errno
import os

import pytest
import torch

import captioner.fileio as fileio
from captioner.checkpoint import atomic_torch_save
from captioner.fileio import AtomicLineWriter, OutputError, check_writable, write_json_atomic, write_text_atomic
from helpers import on_a_full_disk, pretend_read_only


def leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


class FullDisk:
    """A file handle that takes ``room`` bytes, then fails as a full disk does."""

    def __init__(self, handle, room: int):
        self.handle, self.room = handle, room

    def write(self, data):
        if len(data) > self.room:
            raise OSError(errno.ENOSPC, "No space left on device")
        self.room -= len(data)
        return self.handle.write(data)

    def __getattr__(self, name):
        return getattr(self.handle, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.handle.close()


def test_a_full_disk_while_saving_a_checkpoint_keeps_the_old_file_and_is_one_error(tmp_path, monkeypatch):
    """torch.save turns the OSError into a RuntimeError ("unexpected pos"); the user sees the disk."""
    path = tmp_path / "last.pt"
    atomic_torch_save({"step": 1}, path)
    old = path.read_bytes()
    fdopen = os.fdopen
    monkeypatch.setattr(fileio.os, "fdopen", lambda *a, **k: FullDisk(fdopen(*a, **k), 100))
    with pytest.raises(OutputError) as info:
        atomic_torch_save({"step": 2, "weights": torch.zeros(10_000)}, path)
    assert str(info.value) == f"cannot write {path}: disk full (no space left on device)"
    assert path.read_bytes() == old and leftovers(tmp_path) == []


def test_line_writer_publishes_only_on_normal_exit(tmp_path):
    path = tmp_path / "out.jsonl"
    path.write_text("old\n")
    with pytest.raises(KeyboardInterrupt):
        with AtomicLineWriter(path) as writer:
            writer.write("new")
            raise KeyboardInterrupt
    assert path.read_text() == "old\n" and leftovers(tmp_path) == []
    with AtomicLineWriter(path) as writer:
        writer.write("new")
    assert path.read_text() == "new\n" and leftovers(tmp_path) == []


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
@pytest.mark.parametrize("lines", [1, 1000])  # the disk is found full when closing, or by a write's flush
def test_a_full_disk_under_the_line_writer_is_one_error_and_leaves_nothing(tmp_path, monkeypatch, lines):
    """Discarding flushes the buffered lines once more; that second failure must not hide the
    first error nor keep the temporary file."""
    path = tmp_path / "out.jsonl"
    path.write_text("old\n")
    on_a_full_disk(monkeypatch)
    with pytest.raises(OutputError) as info:
        with AtomicLineWriter(path) as writer:
            for _ in range(lines):
                writer.write("x" * 40)
    assert str(info.value) == f"cannot write {path}: disk full (no space left on device)"
    assert path.read_text() == "old\n" and leftovers(tmp_path) == []


@pytest.mark.parametrize("name", ["n" * 245 + ".json", "\u00e9" * 122 + ".json"])  # 250 and 249 bytes
def test_a_long_legal_name_gets_a_temporary_name_that_fits(tmp_path, name):
    """The temporary name (hidden, with a random part and .tmp) is cut to the file system's limit."""
    write_json_atomic(tmp_path / name, {"a": 1})
    with AtomicLineWriter(tmp_path / (name + "l")) as writer:
        writer.write("line")
    assert (tmp_path / name).read_text() == '{"a": 1}' and (tmp_path / (name + "l")).read_text() == "line\n"
    assert leftovers(tmp_path) == []


def test_a_name_longer_than_the_file_system_allows_is_one_error_naming_it(tmp_path):
    path = tmp_path / ("x" * 300)
    for check in (check_writable, lambda p: check_writable(p / "out.json"), lambda p: write_text_atomic(p, "x")):
        with pytest.raises(OutputError, match=f"^cannot write {path}.*: (a name of 300 bytes is longer than the 255 "
                                              "its file system allows|the name is too long for the file system); "
                                              "choose a shorter one$"):
            check(path)
    deeper = tmp_path / "new" / ("y" * 300) / "out.json"
    with pytest.raises(OutputError, match="a name of 300 bytes is longer than the 255"):
        check_writable(deeper)
    assert leftovers(tmp_path) == [] and [p.name for p in tmp_path.iterdir()] == []


def test_line_writer_onto_a_folder_leaves_no_temporary_file(tmp_path):
    (tmp_path / "taken").mkdir()
    with pytest.raises(OutputError, match="is a folder"):
        with AtomicLineWriter(tmp_path / "taken") as writer:
            writer.write("x")
    assert leftovers(tmp_path) == [] and (tmp_path / "taken").is_dir()


def test_check_writable_names_what_is_wrong(tmp_path, monkeypatch):
    (tmp_path / "file").write_text("x")
    (tmp_path / "folder").mkdir()
    check_writable(tmp_path / "new" / "deeper" / "out.jsonl")  # missing folders are created later
    check_writable(tmp_path / "folder", folder=True)
    cases = [
        (tmp_path / "folder", False, "it is a folder"),
        (tmp_path / "file", True, "it is a file, not a folder"),
        (tmp_path / "file" / "out.jsonl", False, f"{tmp_path / 'file'} is a file, not a folder"),
        (tmp_path / "file" / "a" / "b", True, f"{tmp_path / 'file'} is a file, not a folder"),
    ]
    for path, folder, message in cases:
        with pytest.raises(OutputError, match=message):
            check_writable(path, folder=folder)


def test_check_writable_read_only_and_permissions(tmp_path, monkeypatch):
    """Root may write anywhere, so the file system's answers are simulated here (and for real below)."""
    pretend_read_only(monkeypatch)
    with pytest.raises(OutputError, match=f"cannot write {tmp_path}/out.jsonl: {tmp_path} is on a read-only file system"):
        check_writable(tmp_path / "out.jsonl")
    monkeypatch.undo()
    monkeypatch.setattr(fileio.os, "access", lambda path, mode: False)
    with pytest.raises(OutputError, match=f"permission denied for {tmp_path}"):
        check_writable(tmp_path / "attack", folder=True)


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores folder permissions; simulated in the test above")
def test_check_writable_on_a_real_read_only_folder(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    try:
        with pytest.raises(OutputError, match="permission denied"):
            check_writable(locked / "out.jsonl")
    finally:
        locked.chmod(0o700)
