"""Captioning into one output file in chunks: resumable, checked, and the same whatever the chunks'
order (one process here; tests/test_caption_torchrun.py runs several)."""

from __future__ import annotations

import json

import pytest

from captioner.api import Captioner
from captioner.cli import main
from captioner.jobs import Chunk, chunks_to_do, parts_folder
from helpers import fast_checkpoint, random_images


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    random_images(folder, 12)
    (folder / "0005.png").write_bytes(b"not a png")
    return folder


def caption(fast_ckpt, *args):
    return main(["caption", "--checkpoint", str(fast_ckpt), "--batch-size", "2", "--chunk", "4", "--quiet",
                 *map(str, args)])  # later options win


def printed(capsys) -> list[str]:
    return [line.split("\t")[0] for line in capsys.readouterr().out.splitlines()]


def stop_after_chunks(monkeypatch, count: int):
    """Make the run stop (Ctrl-C) while captioning chunk ``count`` (counting from 0), with its first
    image done: the chunks before it are written, it is not."""
    caption_files = Captioner.caption_files
    calls = []

    def stopping(self, *args, **kwargs):
        calls.append(1)
        for n, result in enumerate(caption_files(self, *args, **kwargs)):
            yield result
            if len(calls) > count:
                raise KeyboardInterrupt

    monkeypatch.setattr(Captioner, "caption_files", stopping)


def test_chunks_are_fixed_slices_of_the_inputs_with_what_is_done_left_out():
    inputs = ["a", "b", "c", "a", "d", "e"]
    assert chunks_to_do(inputs, 2) == [Chunk(0, [0, 1]), Chunk(1, [2]), Chunk(2, [4, 5])]  # "a" again: once
    assert chunks_to_do(inputs, 2, done={"b", "d", "e"}) == [Chunk(0, [0]), Chunk(1, [2])]
    assert chunks_to_do(inputs, 4, done=set(inputs)) == []


def test_an_interrupted_run_resumes_where_it_stopped_and_ends_as_an_uninterrupted_one(
        tmp_path, fast_ckpt, images, monkeypatch, capsys):
    whole = tmp_path / "whole.jsonl"
    assert caption(fast_ckpt, images, "--jsonl", whole) == 1  # 0005.png cannot be read
    capsys.readouterr()
    out = tmp_path / "out.jsonl"
    with monkeypatch.context() as patch:
        stop_after_chunks(patch, 2)
        assert caption(fast_ckpt, images, "--jsonl", out) == 130
    first = printed(capsys)
    # chunks 0 and 1 (7 captions: 0005.png has none) and the first image of chunk 2
    assert len(first) == 8 and not out.exists()
    assert len(list(parts_folder(out).glob("*.jsonl"))) == 2
    assert caption(fast_ckpt, images, "--jsonl", out, "--resume") == 1
    resumed = printed(capsys)
    assert len(resumed) == 4 and set(resumed) & set(first) == {first[-1]}  # chunk 2, whose first was lost
    assert out.read_bytes() == whole.read_bytes() and not parts_folder(out).exists()
    assert caption(fast_ckpt, images, "--jsonl", out, "--resume") == 1  # all done: nothing is decoded again
    assert printed(capsys) == [] and out.read_bytes() == whole.read_bytes()


def test_a_resumed_run_with_other_settings_or_checkpoint_is_refused_in_one_line(
        tmp_path, fast_ckpt, images, monkeypatch, capsys):
    out = tmp_path / "out.jsonl"
    with monkeypatch.context() as patch:
        stop_after_chunks(patch, 1)
        assert caption(fast_ckpt, images, "--jsonl", out) == 130
    capsys.readouterr()
    assert caption(fast_ckpt, images, "--jsonl", out, "--resume", "--max-length", "3") == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and "another settings" in err[0] and "max_length: 6 then, 3 now" in err[0], err
    other = fast_checkpoint(tmp_path / "other.pt", seed=1)
    assert main(["caption", str(images), "--checkpoint", str(other), "--batch-size", "2", "--chunk", "4",
                 "--jsonl", str(out), "--resume"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and "another checkpoint" in err[0]
    assert len(list(parts_folder(out).glob("*.jsonl"))) == 1  # the refused runs changed nothing


def test_a_changed_input_list_is_reported_and_the_output_is_that_of_the_new_list(tmp_path, fast_ckpt,
                                                                                 monkeypatch, capsys):
    folder = tmp_path / "images"
    random_images(folder, 10)
    out = tmp_path / "out.jsonl"
    with monkeypatch.context() as patch:
        stop_after_chunks(patch, 2)
        assert caption(fast_ckpt, folder, "--jsonl", out) == 130
    (folder / "0001.png").unlink()
    random_images(folder, 2, start=10, seed=1)
    capsys.readouterr()
    assert caption(fast_ckpt, folder, "--jsonl", out, "--resume") == 0
    err = capsys.readouterr().err
    assert "the input list has changed" in err and "(10 images then, 11 now)" in err
    fresh = tmp_path / "fresh.jsonl"
    assert caption(fast_ckpt, folder, "--jsonl", fresh) == 0
    assert [json.loads(line)["path"] for line in out.read_text().splitlines()] == \
        [str(p) for p in sorted(folder.iterdir())]
    assert out.read_text() == fresh.read_text()


def test_a_run_without_resume_starts_over(tmp_path, fast_ckpt, images, monkeypatch, capsys):
    out = tmp_path / "out.jsonl"
    with monkeypatch.context() as patch:
        stop_after_chunks(patch, 1)
        assert caption(fast_ckpt, images, "--jsonl", out) == 130
    capsys.readouterr()
    assert caption(fast_ckpt, images, "--jsonl", out) == 1
    captured = capsys.readouterr()
    assert len(captured.out.splitlines()) == 11 and "discarding the unfinished run" in captured.err


def test_sampling_draws_the_same_captions_in_any_chunk_order(tmp_path, fast_ckpt, images, monkeypatch,
                                                             capsys):
    """Each chunk samples from its own seeded generator, so a chunk decoded after a resume
    (or by another process) gets the captions it would have got in one go."""
    options = ("--method", "sample", "--seed", "7")
    whole, out = tmp_path / "whole.jsonl", tmp_path / "out.jsonl"
    assert caption(fast_ckpt, images, "--jsonl", whole, *options) == 1
    with monkeypatch.context() as patch:
        stop_after_chunks(patch, 1)
        assert caption(fast_ckpt, images, "--jsonl", out, *options) == 130
    assert caption(fast_ckpt, images, "--jsonl", out, *options, "--resume") == 1
    assert out.read_bytes() == whole.read_bytes()


@pytest.mark.parametrize("args, message", [
    (["--format", "tsv"], "--format tsv is the format of --output FILE"),
    (["--resume"], "--resume continues a run into --jsonl FILE or --output FILE"),
    (["--jsonl", "A", "--output", "B"], "either --jsonl FILE or --output FILE"),
    (["--output", "B", "--coco-ids", "C"], "--coco-ids gives the image ids of --format coco"),
    (["--output", "B", "--chunk", "0"], "--chunk must be at least 1"),
])
def test_output_options_that_do_not_fit_together_are_one_line(tmp_path, fast_ckpt, images, capsys, args, message):
    args = [str(tmp_path / a) if a in "ABC" else a for a in args]
    assert caption(fast_ckpt, images, *args) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and message in err[0], err


def test_under_torchrun_an_output_file_is_required(fast_ckpt, images, monkeypatch, capsys):
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert caption(fast_ckpt, images) == 2
    assert "under torchrun, give --jsonl FILE or --output FILE" in capsys.readouterr().err
