"""A corpus of bad input through the command line: every bad item gets its one line, every
good one its caption, nothing else stops, and no output file is left partial."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest

import captioner.data.images as images_module
from bad_images import write_corpus
from captioner.cli import main
from captioner.data.images import printable_path
from helpers import pretend_read_only


def unreadable(path: Path, monkeypatch) -> None:
    """A file its reader may not open. Root opens anything, so for root the refusal is
    simulated where the file is opened (the message mapping is what is tested either way)."""
    path.chmod(0)
    if os.geteuid() != 0:
        return
    open_image = images_module.Image.open

    def refusing(target, *args, **kwargs):
        if Path(target) == path:
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return open_image(target, *args, **kwargs)

    monkeypatch.setattr(images_module.Image, "open", refusing)


def unlistable(folder: Path, monkeypatch) -> None:
    """A folder its reader may not list; for root (who lists anything) the refusal is simulated
    where folders are listed (os.walk and load_image go through os.scandir)."""
    folder.chmod(0)
    if os.geteuid() != 0:
        return
    scandir = os.scandir

    def refusing(target="."):
        if not isinstance(target, int) and Path(target) == folder:
            raise PermissionError(errno.EACCES, "Permission denied", os.fspath(target))
        return scandir(target)

    monkeypatch.setattr(os, "scandir", refusing)


def test_every_bad_image_gets_its_line_and_every_good_one_its_caption(tmp_path, tiny_ckpt, capsys, monkeypatch):
    bad, good, named = write_corpus(tmp_path / "corpus")
    secret = tmp_path / "corpus" / "images" / "secret.png"
    secret.write_bytes(Path(good[0]).read_bytes())
    unreadable(secret, monkeypatch)
    bad[str(secret)] = "permission denied"
    out = tmp_path / "out" / "captions.jsonl"
    code = main(["caption", str(tmp_path / "corpus" / "images"), *named, "--checkpoint", str(tiny_ckpt),
                 "--batch-size", "5", "--quiet", "--jsonl", str(out)])
    stdout, stderr = capsys.readouterr()
    assert code == 1
    assert len(bad) + len(named) >= 20 and len(good) >= 20

    captioned = [line.split("\t") for line in stdout.splitlines()]
    assert all(len(parts) == 2 and parts[1].strip() for parts in captioned), stdout
    assert sorted(path for path, _ in captioned) == sorted(printable_path(p) for p in good)

    errors = stderr.splitlines()
    summary = f"captioner caption: {len(bad) + len(named)} of {len(bad) + len(named) + len(good)} images could not be read"
    assert errors[-1] == summary
    assert len(errors) == len(bad) + len(named) + 1  # nothing else on stderr: no warnings, no tracebacks
    for path, word in {**bad, **named}.items():
        (line,) = [e for e in errors if e.startswith(f"error: {printable_path(path)}: ")]
        assert word in line, line

    records = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert sorted(r["path"] for r in records) == sorted([*bad, *named, *good])
    assert all(("captions" in r) == (r["path"] in good) for r in records)
    assert [p.name for p in out.parent.iterdir()] == ["captions.jsonl"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file; covered by the simulated refusal above")
def test_a_file_without_read_permission_for_real(tmp_path, tiny_ckpt, examples_dir, capsys):
    secret = tmp_path / "secret.jpg"
    secret.write_bytes((examples_dir / "cat.jpg").read_bytes())
    secret.chmod(0)
    assert main(["caption", str(secret), "--checkpoint", str(tiny_ckpt)]) == 1
    assert f"error: {secret}: permission denied" in capsys.readouterr().err


def test_a_sub_folder_that_cannot_be_read_gets_its_line_and_the_rest_are_captioned(tmp_path, tiny_ckpt, examples_dir,
                                                                                   capsys, monkeypatch):
    photos = tmp_path / "photos"
    for name in ("a.jpg", "locked/b.jpg", "z/c.jpg"):
        write(photos / name, (examples_dir / "cat.jpg").read_bytes())
    locked = photos / "locked"
    try:
        unlistable(locked, monkeypatch)
        code = main(["caption", str(photos), "--checkpoint", str(tiny_ckpt), "--quiet"])
    finally:
        locked.chmod(0o700)
    stdout, stderr = capsys.readouterr()
    assert code == 1
    assert [line.split("\t")[0] for line in stdout.splitlines()] == [str(photos / "a.jpg"), str(photos / "z/c.jpg")]
    assert stderr.splitlines() == [
        f"error: {locked}: cannot read this folder (permission denied), so the images in it are skipped",
        "captioner caption: 1 of 3 images could not be read",
    ]


def write(path: Path, content) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return str(path)


def bomb() -> str:
    levels = ['&a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    levels += [f"&a{n} [{', '.join([f'*a{n - 1}'] * 9)}]" for n in range(1, 9)]
    return f"train:\n  epochs: [{', '.join(levels)}]\n"


# name -> (arguments with {t} for the test folder and {ckpt}/{cat}, files to create, a word of the message)
USAGE = {
    "jsonl is a folder": ("caption {cat} --jsonl {t}/taken", {"taken/x": ""}, "it is a folder"),
    "jsonl under a file": ("caption {cat} --jsonl {t}/file/out.jsonl", {"file": ""}, "is a file, not a folder"),
    "jsonl read-only": ("caption {cat} --jsonl {t}/ro/out.jsonl", {}, "read-only file system"),
    "batch size 0": ("caption {cat} --batch-size 0", {}, "--batch-size must be at least 1"),
    "more captions than beams": ("caption {cat} --num-captions 5 --beam-size 2", {}, "beam size of at least 5"),
    "no images": ("caption {t}/empty", {"empty/notes.txt": "x"}, "no image files found"),
    "missing checkpoint": ("caption {cat} --checkpoint {t}/none.pt", {}, "none.pt"),
    "text checkpoint": ("caption {cat} --checkpoint {t}/text.pt", {"text.pt": "not a checkpoint"}, "text.pt"),
    "folder checkpoint": ("caption {cat} --checkpoint {t}/ckdir", {"ckdir/x": ""}, "ckdir"),
    "config is a list": ("train --config {t}/c.yaml --set train.epochs=1", {"c.yaml": "- a\n- b\n"},
                         "expected a mapping of sections, got list"),
    "evaluate config is a scalar": ("evaluate --config {t}/c.yaml --set train.epochs=1", {"c.yaml": "7\n"},
                                    "expected a mapping of sections, got int"),
    "duplicate key": ("train --config {t}/c.yaml", {"c.yaml": "train:\n  lr: 1\n  lr: 2\n"}, "duplicate key 'lr'"),
    "alias bomb": ("train --config {t}/c.yaml", {"c.yaml": bomb()}, "train.epochs: expected int, got list"),
    "config not UTF-8": ("train --config {t}/c.yaml", {"c.yaml": b"train:\n  out_dir: caf\xe9\n"}, "not UTF-8"),
    "missing config": ("train --config {t}/none.yaml", {}, "does not exist"),
    "unknown key": ("train --config {t}/c.yaml", {"c.yaml": "train:\n  lerning_rate: 1\n"},
                    "unknown config key train.lerning_rate"),
    "unknown backbone": ("train --config {t}/c.yaml", {"c.yaml": "model:\n  encoder: resnet5\n"},
                         "unknown encoder backbone 'resnet5'"),
    "malformed override": ("train --config {t}/c.yaml --set epochs", {"c.yaml": "{}\n"}, "section.key=value"),
    "evaluate json under a file": ("evaluate --json {t}/file/s.json", {"file": ""}, "is a file, not a folder"),
    "attack out under a file": ("attack classify {cat} --out {t}/file/adv", {"file": ""}, "is a file, not a folder"),
    "attack eps": ("attack classify {cat} --eps 2/0 --out {t}/adv", {}, "division by zero"),
}


@pytest.mark.parametrize("name", list(USAGE))
def test_bad_values_and_paths_get_one_line_and_exit_2(name, tmp_path, tiny_ckpt, examples_dir, capsys, monkeypatch):
    template, files, word = USAGE[name]
    for relative, content in files.items():
        write(tmp_path / relative, content)
    if name == "jsonl read-only":
        pretend_read_only(monkeypatch)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    args = template.format(t=tmp_path, cat=examples_dir / "cat.jpg").split()
    if args[0] == "caption" and "--checkpoint" not in args:
        args += ["--checkpoint", str(tiny_ckpt)]
    code = main(args)
    stdout, stderr = capsys.readouterr()
    assert code == 2 and stdout == ""
    assert stderr.count("\n") == 1 and stderr.startswith(f"captioner {args[0]}: error: ") and word in stderr, stderr
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before  # nothing written
