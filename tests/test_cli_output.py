"""Output files of the command line: complete or untouched, and bad output paths in one line."""

from __future__ import annotations

import errno
import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import captioner.fileio as fileio
from captioner.api import Captioner
from captioner.cli import main
from captioner.jobs import parts_folder
from helpers import on_a_full_disk, pretend_read_only


def leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def stop_after(monkeypatch, count: int, error: BaseException):
    """Make captioning raise ``error`` after ``count`` results."""
    caption_files = Captioner.caption_files

    def stopping(self, *args, **kwargs):
        for n, result in enumerate(caption_files(self, *args, **kwargs)):
            if n == count:
                raise error
            yield result

    monkeypatch.setattr(Captioner, "caption_files", stopping)


@pytest.mark.parametrize("error, code", [(KeyboardInterrupt(), 130), (RuntimeError("a crash"), None)])
def test_an_interrupted_run_leaves_the_jsonl_file_as_it_was(tmp_path, tiny_ckpt, examples_dir, monkeypatch,
                                                            capsys, error, code):
    out = tmp_path / "captions.jsonl"
    out.write_text("the previous run\n")
    stop_after(monkeypatch, 3, error)
    args = ["caption", str(examples_dir), "--checkpoint", str(tiny_ckpt), "--batch-size", "2", "--jsonl", str(out)]
    if code is None:
        with pytest.raises(RuntimeError, match="a crash"):
            main(args)
    else:
        assert main(args) == code
    assert len(capsys.readouterr().out.splitlines()) == 3  # three images were done and printed
    assert out.read_text() == "the previous run\n" and leftovers(tmp_path) == []
    out.unlink()
    if code is not None:
        assert main(args) == code
        assert not out.exists() and leftovers(tmp_path) == []


def test_sigterm_while_captioning_leaves_the_jsonl_file_as_it_was(tmp_path, tiny_ckpt, examples_dir):
    """A real `kill` while the images are captioned: the process ends with one line and code 143,
    leaves no temporary file, and keeps its parts folder for a resumed run (captioner.jobs)."""
    images = tmp_path / "images"
    images.mkdir()
    for n in range(400):  # far more than can be captioned before the signal comes
        (images / f"{n:03d}.jpg").symlink_to(examples_dir / "cat.jpg")
    out = tmp_path / "captions.jsonl"
    out.write_text("the previous run\n")
    run = subprocess.Popen([sys.executable, "-m", "captioner", "caption", str(images), "--checkpoint", str(tiny_ckpt),
                            "--batch-size", "1", "--workers", "0", "--quiet", "--jsonl", str(out)],
                           cwd=Path(__file__).resolve().parent.parent, stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        started = parts_folder(out) / "run.json"  # written before the first image is read
        while not started.exists() and run.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert started.exists(), "the run never started"
        run.send_signal(signal.SIGTERM)
        _, err = run.communicate(timeout=60)
    finally:
        run.kill()
    assert run.returncode == 143 and err == "captioner: terminated\n", err
    assert out.read_text() == "the previous run\n" and leftovers(tmp_path) == []
    assert leftovers(parts_folder(out)) == [] and started.exists()


class ClosedPipe(io.StringIO):
    """Standard output read by `head -1`: one line goes through, then the pipe is closed."""

    def __init__(self, fd: int):
        super().__init__()
        self.fd = fd

    def write(self, text):
        if self.getvalue().count("\n") >= 1:
            raise BrokenPipeError(errno.EPIPE, "Broken pipe")
        return super().write(text)

    def fileno(self):
        return self.fd


def test_a_closed_pipe_leaves_no_partial_jsonl_file(tmp_path, tiny_ckpt, examples_dir, monkeypatch):
    out = tmp_path / "captions.jsonl"
    fd = os.open(tmp_path / "stdout", os.O_WRONLY | os.O_CREAT)
    try:
        monkeypatch.setattr(sys, "stdout", ClosedPipe(fd))
        code = main(["caption", str(examples_dir), "--checkpoint", str(tiny_ckpt), "--batch-size", "2",
                     "--jsonl", str(out)])
        first = sys.stdout.getvalue()
    finally:
        monkeypatch.undo()
        os.close(fd)
    assert code == 0 and first.count("\n") == 1  # like `| head -1`: the reader got what it asked for
    assert not out.exists() and leftovers(tmp_path) == []


def one_line_error(capsys, code: int) -> str:
    captured = capsys.readouterr()
    assert code == 2 and captured.out == ""
    assert len(captured.err.splitlines()) == 1, captured.err
    return captured.err


@pytest.mark.parametrize("make, target, message", [
    (lambda tmp: (tmp / "taken").mkdir(), "taken", "it is a folder"),
    (lambda tmp: (tmp / "file").write_text("x"), "file/out.jsonl", "is a file, not a folder"),
])
def test_bad_jsonl_paths_are_refused_before_any_work(tmp_path, examples_dir, capsys, make, target, message):
    make(tmp_path)
    # the checkpoint does not exist either: the output path is checked first, before loading anything
    code = main(["caption", str(examples_dir / "cat.jpg"), "--checkpoint", str(tmp_path / "missing.pt"),
                 "--jsonl", str(tmp_path / target)])
    assert message in one_line_error(capsys, code)
    assert leftovers(tmp_path) == []


def test_jsonl_on_a_read_only_file_system(tmp_path, examples_dir, capsys, monkeypatch):
    pretend_read_only(monkeypatch)
    code = main(["caption", str(examples_dir / "cat.jpg"), "--jsonl", str(tmp_path / "out.jsonl")])
    assert "read-only file system" in one_line_error(capsys, code)


def test_a_full_disk_while_writing_jsonl_is_one_line_and_keeps_the_old_file(tmp_path, tiny_ckpt, examples_dir,
                                                                            capsys, monkeypatch):
    out = tmp_path / "captions.jsonl"
    out.write_text("old\n")

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(fileio.os, "fsync", full)
    code = main(["caption", str(examples_dir / "cat.jpg"), "--checkpoint", str(tiny_ckpt), "--jsonl", str(out)])
    err = capsys.readouterr().err
    # the first file written is the record of the run in the parts folder (captioner.jobs)
    assert code == 2 and err == f"captioner caption: error: cannot write {out}.parts/run.json: disk full (no space " \
                                "left on device)\n"
    assert out.read_text() == "old\n" and leftovers(tmp_path) == []


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_a_disk_full_before_the_jsonl_lines_reach_it_is_one_line_and_leaves_nothing(tmp_path, tiny_ckpt,
                                                                                    examples_dir, capsys,
                                                                                    monkeypatch):
    """The lines are still buffered when the file is closed: both the close and the discard fail."""
    out = tmp_path / "captions.jsonl"
    out.write_text("old\n")
    on_a_full_disk(monkeypatch)
    code = main(["caption", str(examples_dir / "cat.jpg"), "--checkpoint", str(tiny_ckpt), "--jsonl", str(out)])
    err = capsys.readouterr().err
    # the first file written is the record of the run in the parts folder (captioner.jobs)
    assert code == 2 and err == f"captioner caption: error: cannot write {out}.parts/run.json: disk full (no space " \
                                "left on device)\n"
    assert out.read_text() == "old\n" and leftovers(tmp_path) == []


def test_outputs_with_a_long_legal_name_are_written(tmp_path, tiny_ckpt, examples_dir, capsys):
    """250 characters is a legal name; the temporary file beside it must be one too."""
    jsonl, exported = tmp_path / ("j" * 244 + ".jsonl"), tmp_path / ("e" * 247 + ".pt")
    assert main(["caption", str(examples_dir / "cat.jpg"), "--checkpoint", str(tiny_ckpt), "--jsonl", str(jsonl)]) == 0
    assert main(["checkpoint", "export", str(tiny_ckpt), str(exported)]) == 0
    assert jsonl.read_text().count("\n") == 1 and exported.stat().st_size > 0 and leftovers(tmp_path) == []


@pytest.mark.parametrize("command", [["caption", "CAT", "--checkpoint", "CKPT", "--jsonl"],
                                     ["checkpoint", "export", "CKPT"]])
def test_an_output_name_too_long_for_the_file_system_is_one_line(tmp_path, tiny_ckpt, examples_dir, capsys, command):
    out = tmp_path / ("x" * 300)
    args = [{"CAT": str(examples_dir / "cat.jpg"), "CKPT": str(tiny_ckpt)}.get(a, a) for a in command]
    err = one_line_error(capsys, main([*args, str(out)]))
    assert err.startswith(f"captioner {command[0]}: error: cannot write {out}: ") and "choose a shorter one" in err
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("command", [["classify"], ["caption"]])
def test_attack_out_that_cannot_be_written_is_one_line(tmp_path, examples_dir, capsys, monkeypatch, command):
    (tmp_path / "file").write_text("x")
    image = str(examples_dir / "cat.jpg")
    code = main(["attack", *command, image, "--out", str(tmp_path / "file" / "attacks")])
    assert "is a file, not a folder" in one_line_error(capsys, code)
    pretend_read_only(monkeypatch)
    code = main(["attack", *command, image, "--out", str(tmp_path / "attacks")])
    assert "read-only file system" in one_line_error(capsys, code)
    assert not (tmp_path / "attacks").exists()


def test_attack_report_out_on_a_read_only_file_system(tmp_path, examples_dir, capsys, monkeypatch):
    pretend_read_only(monkeypatch)
    code = main(["attack", "report", "--images", str(examples_dir), "--model", "efficientnet_lite0",
                 "--out", str(tmp_path / "report")])
    assert "read-only file system" in one_line_error(capsys, code)
