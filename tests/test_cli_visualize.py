"""``captioner visualize``: round trips through the command line, on the real Lite0 at tiny
sizes and few steps."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from PIL import Image

from captioner.cli import main
from captioner.data.images import load_image
from captioner.data.preprocess import preprocess
from captioner.cli.visualize import parse_channels
from helpers import DEVICES


def run(capsys, *argv):
    code = main(["visualize", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_layers_lists_paths_names_and_shapes(capsys):
    code, out, _ = run(capsys, "layers")
    assert code == 0
    assert "body.4.0  features.4.0  80x14x14" in out
    assert out.rstrip().splitlines()[-1].split()[:3] == ["head", "logits", "1000"]


def test_layers_of_vgg_use_the_literature_names(capsys):
    code, out, _ = run(capsys, "layers", "--model", "vgg16", "--untrained")
    assert code == 0
    assert "conv5_3" in out and "512x14x14" in out and "fc7" in out


def test_layers_of_the_encoder_inside_a_checkpoint(capsys, tiny_ckpt):
    code, out, _ = run(capsys, "layers", "--checkpoint", str(tiny_ckpt))
    assert code == 0 and "features.8" in out


def test_filters_writes_a_grid_and_json_and_is_deterministic(capsys, tmp_path):
    args = ["filters", "--layer", "features.2.0", "--channels", "2:6", "--steps", "3", "--size", "32",
            "--quiet", "--columns", "4"]
    code, out, err = run(capsys, *args, "--out", str(tmp_path / "a.png"))
    assert code == 0, err
    assert [line.split("\t")[0] for line in out.splitlines()] == ["2", "3", "4", "5"]
    record = json.loads((tmp_path / "a.json").read_text())
    assert [t["channel"] for t in record["targets"]] == [2, 3, 4, 5]
    assert record["settings"]["steps"] == 3 and record["settings"]["size"] == 32
    with Image.open(tmp_path / "a.png") as image:
        assert image.width == 4 * (32 + 4) + 4
    run(capsys, *args, "--out", str(tmp_path / "b.png"))
    assert (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes()
    run(capsys, *args, "--seed", "1", "--out", str(tmp_path / "c.png"))
    assert (tmp_path / "a.png").read_bytes() != (tmp_path / "c.png").read_bytes()


FILTER_ARGS = ["filters", "--layer", "features.2.0", "--channels", "0:3", "--steps", "3", "--size", "32", "--quiet"]


def test_device_cpu_is_the_default_without_a_gpu_and_cuda_is_refused(capsys, tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # a machine without a GPU, on any machine
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    run(capsys, *FILTER_ARGS, "--out", str(tmp_path / "default.png"))
    code, _, err = run(capsys, *FILTER_ARGS, "--device", "cpu", "--out", str(tmp_path / "cpu.png"))
    assert code == 0, err
    assert (tmp_path / "default.png").read_bytes() == (tmp_path / "cpu.png").read_bytes()
    code, _, err = run(capsys, *FILTER_ARGS, "--device", "cuda", "--out", str(tmp_path / "cuda.png"))
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "--device cuda was asked for, but PyTorch sees no CUDA GPU here; use --device cpu" in err


if "cuda" in DEVICES:  # generated only where there is a GPU (not a skip elsewhere)
    def test_rendering_on_cuda_matches_the_cpu(capsys, tmp_path):
        for device in ("cpu", "cuda"):
            code, _, err = run(capsys, *FILTER_ARGS, "--device", device, "--out", str(tmp_path / f"{device}.png"))
            assert code == 0, err
        cpu, cuda = (json.loads((tmp_path / f"{d}.json").read_text())["targets"] for d in ("cpu", "cuda"))
        assert [t["activation"] for t in cuda] == pytest.approx([t["activation"] for t in cpu], rel=0.02, abs=1e-3)
        with Image.open(tmp_path / "cpu.png") as a, Image.open(tmp_path / "cuda.png") as b:
            assert a.size == b.size


def test_class_prints_the_probability(capsys, tmp_path):
    code, out, _ = run(capsys, "class", "--class", "Banana", "--steps", "1", "--size", "32", "--quiet",
                       "--out", str(tmp_path / "banana.png"))
    assert code == 0
    assert out.startswith("banana\tp=")
    assert json.loads((tmp_path / "banana.json").read_text())["targets"][0]["index"] == 954
    with Image.open(tmp_path / "banana.png") as image:
        assert image.size == (32, 32)  # a single image is saved as it is, without a label


def test_readme_class_command_prints_the_probability_of_the_png_it_writes(capsys, tmp_path, monkeypatch, lite0):
    """The README's `captioner visualize class --class espresso --out espresso.png --quiet`, as
    quoted (128 steps at 224 px, about 10 s here), on the CPU. The logit (of the float image)
    is left out of the comparison: 128 Adam steps carry float rounding that depends on the CPU
    and its thread count into its digits (README 36.94; here 37.59 with 2 threads, 37.10 with 1).
    The claims are checked: p=1.0000 and top-1 espresso, and the probability is that of the
    PNG on disk as load_image + preprocess read it."""
    command = "captioner visualize class --class espresso --out espresso.png --quiet"
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    quoted = readme.split(f"$ {command}\n", 1)[1].split("\n```", 1)[0].splitlines()
    monkeypatch.chdir(tmp_path)
    code, out, err = run(capsys, *command.split()[2:], "--device", "cpu")
    assert code == 0
    assert [re.sub(r"logit=\S+", "logit=*", line) for line in [*out.splitlines(), *err.splitlines()]] == [
        "espresso\tp=1.0000 logit=* top-1: espresso (1.0000)", "wrote espresso.png, espresso.json and espresso.html"]
    assert [re.sub(r"logit=\S+", "logit=*", line) for line in quoted] == [
        "espresso\tp=1.0000 logit=* top-1: espresso (1.0000)", "wrote espresso.png, espresso.json and espresso.html"]
    image = load_image(tmp_path / "espresso.png", resize_to=lite0.preprocessing.resize_size)
    assert image.size == (224, 224)
    with torch.no_grad():
        probabilities = lite0.classify(preprocess(image, lite0.preprocessing)[None]).softmax(dim=-1)[0]
    record = json.loads((tmp_path / "espresso.json").read_text())["targets"][0]
    assert (record["class"], record["index"], record["top1"]) == ("espresso", 967, "espresso")
    assert int(probabilities.argmax()) == 967
    assert record["probability"] == record["top1_probability"] == round(float(probabilities[967]), 5)
    assert f"p={probabilities[967]:.4f} " in out


def test_neuron_and_deepdream_run(capsys, tmp_path, examples_dir):
    code, out, _ = run(capsys, "neuron", "--layer", "body.1.0", "--channels", "0,7", "--x", "3", "--y", "4",
                       "--steps", "2", "--size", "32", "--quiet", "--out", str(tmp_path / "n.png"))
    assert code == 0 and "x=3 y=4" in out
    code, out, _ = run(capsys, "deepdream", "--layer", "features.2.1", "--image", str(examples_dir / "cat.jpg"),
                       "--steps", "2", "--size", "32", "--quiet", "--out", str(tmp_path / "d.png"))
    assert code == 0 and "mean_square=" in out


def test_first_layer_weights(capsys, tmp_path):
    code, out, _ = run(capsys, "filters", "--weights", "--out", str(tmp_path / "w.png"))
    assert code == 0 and len(out.splitlines()) == 32
    with Image.open(tmp_path / "w.png") as image:
        assert image.width == 6 * (32 + 4) + 4  # 32 kernels in 6 columns of 32-pixel tiles


@pytest.mark.parametrize("argv, message", [
    (["filters", "--layer", "features.4.9"],
     "unknown layer 'features.4.9' in efficientnet_lite0; did you mean features.4.2"),
    (["filters", "--layer", "features.2.0", "--channels", "20:30"], "features.2.0 has 24 channels (0..23)"),
    (["filters", "--layer", "features.2.0", "--channels", "a:b"], "--channels 'a:b'"),
    (["filters"], "needs --layer"),
    (["class", "--class", "bananna"], "closest: banana (954)"),
    (["class", "--class", "1000"], "outside 0..999"),
    (["neuron", "--layer", "features.2.0", "--x", "99"], "outside it"),
    (["deepdream", "--layer", "features.2.0", "--image", "missing.jpg"], "missing.jpg: no such file"),
    (["class", "--class", "banana", "--steps", "0"], "steps must be at least 1"),
    (["class", "--class", "banana", "--lr", "inf"], "learning rate must be in (0, 10], got inf"),
    (["class", "--class", "banana", "--lr", "nan"], "learning rate must be in (0, 10], got nan"),
    (["class", "--class", "banana", "--lr", "1e30"], "learning rate must be in (0, 10], got 1e+30"),
    (["class", "--class", "banana", "--lr", "0"], "learning rate must be in (0, 10], got 0.0"),
])
def test_user_errors_are_one_line_with_exit_code_2(capsys, tmp_path, argv, message):
    code, _, err = run(capsys, *argv, "--size", "32", "--quiet", "--out", str(tmp_path / "x.png"))
    assert code == 2
    assert message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x.png").exists()


def test_deepdream_refuses_a_photo_of_an_extreme_aspect_ratio_in_one_line(capsys, tmp_path):
    # preprocessing resizes the shorter side to 256 (Lite0): a 1 x 20000 strip of a few bytes
    # would become 256 x 5,120,000 pixels, about 16 GB of float32
    strip = tmp_path / "strip.png"
    Image.new("RGB", (1, 20000), (200, 30, 30)).save(strip)
    code, _, err = run(capsys, "deepdream", "--layer", "features.2.1", "--image", str(strip), "--steps", "1",
                       "--size", "32", "--quiet", "--out", str(tmp_path / "d.png"))
    assert code == 2
    assert err.splitlines() == [
        f"captioner visualize: error: {strip}: extreme aspect ratio: 1 x 20000 pixels would become 1,310,720,000 "
        "pixels when the shorter side is resized to 256, more than the limit of 89,478,485"]
    assert not (tmp_path / "d.png").exists()


def test_parse_channels():
    assert parse_channels("0:4") == [0, 1, 2, 3]
    assert parse_channels("0:16:5") == [0, 5, 10, 15]
    assert parse_channels("7") == [7]
    assert parse_channels("3,1") == [3, 1]
    with pytest.raises(ValueError, match="selects no channels"):
        parse_channels("5:5")


def test_an_output_that_cannot_be_written_is_refused_before_rendering(capsys, tmp_path, monkeypatch):
    from captioner import visualization

    def never(*args, **kwargs):
        raise AssertionError("rendered before the output was checked")

    monkeypatch.setattr(visualization, "visualize_class", never)
    long_name = tmp_path / ("x" * 300 + ".png")
    assert main(["visualize", "class", "--class", "banana", "--out", str(long_name)]) == 2
    assert "the name is too long for the file system" in capsys.readouterr().err
    assert main(["visualize", "class", "--class", "banana", "--out", str(tmp_path / "a.png"),
                 "--json", str(tmp_path)]) == 2
    assert "it is a folder" in capsys.readouterr().err
