"""`captioner caption` on real files: good ones captioned, bad ones reported, nothing lost."""

import json
import shutil
import subprocess
import sys

import pytest

from bad_images import write_bad_files, write_good_files
from captioner.checkpoint import load_checkpoint, save_checkpoint
from captioner.cli import main
from captioner.data.vocab import Vocabulary
from helpers import DEVICES


def captions_of(stdout: str) -> dict[str, list[str]]:
    result: dict[str, list[str]] = {}
    for line in stdout.splitlines():
        path, caption = line.split("\t")
        result.setdefault(path, []).append(caption)
    return result


def test_help_lists_the_subcommands():
    out = subprocess.run([sys.executable, "-m", "captioner", "--help"], capture_output=True, text=True, check=True)
    assert "caption" in out.stdout


def test_mixed_folder_captions_good_files_and_reports_each_bad_one(tmp_path, tiny_ckpt, capsys):
    bad = write_bad_files(tmp_path / "imgs" / "bad")
    good = write_good_files(tmp_path / "imgs" / "good")
    code = main(["caption", str(tmp_path / "imgs"), "--checkpoint", str(tiny_ckpt), "--batch-size", "3"])
    out, err = capsys.readouterr()
    assert code == 1
    captioned = captions_of(out)
    assert sorted(captioned) == sorted(str(tmp_path / "imgs" / "good" / n) for n in good)
    assert all(len(c) == 1 and c[0].strip() for c in captioned.values())
    error_lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(error_lines) == len(bad)
    for name, word in bad.items():
        (line,) = [x for x in error_lines if str(tmp_path / "imgs" / "bad" / name) + ":" in x]
        assert word in line
    assert f"{len(bad)} of {len(bad) + len(good)} images could not be read" in err


def test_all_good_exits_zero_and_batching_does_not_change_captions(tmp_path, tiny_ckpt, examples_dir, capsys):
    assert main(["caption", str(examples_dir), "--checkpoint", str(tiny_ckpt), "--batch-size", "16"]) == 0
    together = captions_of(capsys.readouterr().out)
    assert len(together) == 8
    assert main(["caption", str(examples_dir / "coffee.jpg"), "--checkpoint", str(tiny_ckpt)]) == 0
    alone = captions_of(capsys.readouterr().out)
    assert alone[str(examples_dir / "coffee.jpg")] == together[str(examples_dir / "coffee.jpg")]
    assert main(["caption", str(examples_dir), "--checkpoint", str(tiny_ckpt), "--batch-size", "3",
                 "--workers", "1"]) == 0
    assert captions_of(capsys.readouterr().out) == together


def test_jsonl_file_has_captions_scores_and_errors(tmp_path, tiny_ckpt, examples_dir, capsys):
    shutil.copy(examples_dir / "cat.jpg", tmp_path / "cat.jpg")
    (tmp_path / "broken.jpg").write_bytes(b"nope")
    out_file = tmp_path / "out" / "captions.jsonl"
    code = main(["caption", str(tmp_path / "cat.jpg"), str(tmp_path / "broken.jpg"), "--checkpoint",
                 str(tiny_ckpt), "--beam-size", "4", "--num-captions", "3", "--jsonl", str(out_file)])
    out, _ = capsys.readouterr()
    assert code == 1
    assert len(captions_of(out)[str(tmp_path / "cat.jpg")]) == 3
    records = [json.loads(line) for line in out_file.read_text().splitlines()]
    assert [r["path"] for r in records] == [str(tmp_path / "cat.jpg"), str(tmp_path / "broken.jpg")]
    scores = [c["score"] for c in records[0]["captions"]]
    assert len(scores) == 3 and scores == sorted(scores, reverse=True)
    assert all(c["log_prob"] <= 0 for c in records[0]["captions"])
    assert "not an image" in records[1]["error"]
    assert [p.name for p in out_file.parent.iterdir()] == ["captions.jsonl"]  # no temporary files left


def test_jsonl_to_stdout_and_sampling_is_seeded(tmp_path, tiny_ckpt, examples_dir, capsys):
    args = ["caption", str(examples_dir / "rocket.jpg"), "--checkpoint", str(tiny_ckpt), "--method", "sample",
            "--num-captions", "2", "--seed", "3", "--jsonl", "-"]
    assert main(args) == 0
    first = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert main(args) == 0
    second = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert first == second and len(first[0]["captions"]) == 2


@pytest.mark.parametrize("args,message", [
    (["--checkpoint", "missing.pt"], "missing.pt: no such checkpoint file"),
    (["--num-captions", "5", "--beam-size", "2"], "needs a beam size of at least 5"),
    (["--batch-size", "0"], "--batch-size must be at least 1"),
    (["--beam-size", "0"], "--beam-size must be at least 1"),
    (["--length-penalty", "-1"], "--length-penalty must be >= 0"),
])
def test_usage_errors_are_one_line_and_exit_2(tmp_path, tiny_ckpt, examples_dir, capsys, args, message):
    if "--checkpoint" not in args:
        args = [*args, "--checkpoint", str(tiny_ckpt)]
    code = main(["caption", str(examples_dir / "cat.jpg"), *args])
    err = capsys.readouterr().err
    assert code == 2
    assert message in err and len(err.strip().splitlines()) == 1


def test_empty_folder_is_an_error(tmp_path, tiny_ckpt, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["caption", str(tmp_path / "empty"), "--checkpoint", str(tiny_ckpt)]) == 2
    assert "no image files found" in capsys.readouterr().err


def test_console_script_runs_end_to_end(tmp_path, tiny_ckpt, examples_dir):
    script = shutil.which("captioner", path=str(__import__("pathlib").Path(sys.executable).parent))
    assert script, "the captioner console script is not installed next to this Python"
    out = subprocess.run([script, "caption", str(examples_dir / "clock.jpg"), "--checkpoint", str(tiny_ckpt)],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    path, caption = out.stdout.strip().split("\t")
    assert path == str(examples_dir / "clock.jpg") and caption


def test_a_bug_keeps_its_traceback_while_bad_input_gets_one_line(tmp_path, capsys, monkeypatch):
    """Only UserErrors become one tidy line: an internal ValueError is not passed off as bad input."""
    from captioner.cli import caption as caption_command

    def broken(args):
        raise ValueError("an internal bug")

    monkeypatch.setattr(caption_command, "run", broken)
    with pytest.raises(ValueError, match="an internal bug"):
        main(["caption", str(tmp_path)])
    monkeypatch.undo()
    assert main(["caption", str(tmp_path), "--batch-size", "0"]) == 2
    err = capsys.readouterr().err
    assert err == "captioner caption: error: --batch-size must be at least 1, got 0\n"


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("method", ["greedy", "beam"])
def test_jsonl_marks_captions_cut_at_max_length_as_truncated(tmp_path, tiny_ckpt, examples_dir, capsys, device,
                                                            method):
    # the same model twice: once <end> can never win (every caption is cut at --max-length),
    # once it always wins as soon as it may (after the one word that --min-length asks for)
    records = {}
    for name, end_bias in (("never_ends", -1e4), ("ends_at_once", 1e4)):
        record = load_checkpoint(tiny_ckpt)
        record.decoder_state["out.bias"][Vocabulary.end_id] = end_bias
        save_checkpoint(record, tmp_path / f"{name}.pt")
        assert main(["caption", str(examples_dir / "cat.jpg"), "--checkpoint", str(tmp_path / f"{name}.pt"),
                     "--method", method, "--max-length", "3", "--jsonl", "-", "--device", device]) == 0
        (records[name],) = [json.loads(line)["captions"][0] for line in capsys.readouterr().out.splitlines()]
    assert records["never_ends"]["truncated"] is True and len(records["never_ends"]["caption"].split()) == 3
    assert "truncated" not in records["ends_at_once"] and len(records["ends_at_once"]["caption"].split()) == 1


@pytest.mark.parametrize("images, options, shown", [(64, [], True), (63, [], False), (64, ["--quiet"], False)])
def test_progress_bar_on_large_folders_only(tmp_path, tiny_ckpt, capsys, monkeypatch, images, options, shown):
    """The bar is left to tqdm (shown on a terminal) from 64 images on, and never with --quiet."""
    from PIL import Image

    import captioner.cli.caption as caption_cli
    from captioner.api import Captioner, CaptionResult

    for i in range(images):
        Image.new("RGB", (4, 4)).save(tmp_path / f"{i}.png")
    bars = []

    class Recording(caption_cli.tqdm):
        def __init__(self, *args, **kwargs):
            bars.append(kwargs)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(caption_cli, "tqdm", Recording)
    # the captions do not matter here: no need to run the network on every image
    monkeypatch.setattr(Captioner, "caption_files",
                        lambda self, paths, **_: (CaptionResult(p, []) for p in paths))
    assert main(["caption", str(tmp_path), "--checkpoint", str(tiny_ckpt), "--device", "cpu", *options]) == 0
    (bar,) = bars
    assert bar["total"] == images and bar["disable"] is (None if shown else True)  # None: on a terminal
