"""ONNX export and the ONNX Runtime captioner: the exported graphs compute what the torch modules
compute (to float32 rounding), captions from both runtimes are the same, and wrong folders or
files are one-line errors."""

import json
import shutil

import numpy as np
import onnx
import pytest
import torch

from captioner.api import Captioner
from captioner.checkpoint import CheckpointError
from captioner.cli import main
from captioner.fileio import OutputError
from captioner.models.stepping import LSTMStepper
from captioner.onnx import runtime
from captioner.onnx.export import export_onnx
from captioner.onnx.layout import SETTINGS
from captioner.onnx.runtime import OnnxCaptioner

# float32 rounding: the graphs compute the same sums as torch in another order (a few ulps of
# values of order 1-10, about 1e-6); log-probabilities summed over a caption of up to 20 words.
STEP_TOLERANCE = 1e-5
CAPTION_TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def exported(tiny_ckpt, tmp_path_factory):
    folder = tmp_path_factory.mktemp("onnx") / "export"
    torch_captioner = Captioner.from_checkpoint(tiny_ckpt, device="cpu")
    export_onnx(torch_captioner, folder, source=str(tiny_ckpt))
    return torch_captioner, folder


def test_every_graph_passes_the_checker_and_the_export_leaves_the_model_in_eval_mode(exported):
    torch_captioner, folder = exported
    graphs = json.loads((folder / SETTINGS).read_text())["graphs"]
    assert set(graphs) == {"encoder", "classifier", "decoder_init", "decoder_step"}
    for name in graphs.values():
        onnx.checker.check_model(str(folder / name), full_check=True)
    assert not torch_captioner.model.training and not torch_captioner.model.decoder.training


@pytest.mark.parametrize("rows", [1, 5])
def test_the_onnx_step_is_the_torch_step(exported, rows):
    torch_captioner, folder = exported
    onnx_captioner = OnnxCaptioner(folder, device="cpu")
    features = torch.randn(rows, torch_captioner.model.decoder.config.feature_dim)
    ours = onnx_captioner.stepper(features)
    generator = torch.Generator().manual_seed(rows)
    with torch.no_grad():
        for fast in (True, False):  # the CPU step computed by hand, and nn.LSTM's
            theirs = LSTMStepper(torch_captioner.model.decoder, features, fast=fast)
            for a, b in zip(ours.state, theirs.state):
                assert torch.allclose(a, b, atol=STEP_TOLERANCE, rtol=0)
            state_ours, state_theirs, n = ours.state, theirs.state, rows
            for grown in (rows + 1, rows, 2 * rows + 1, rows):  # beams grow and shrink
                tokens = torch.randint(0, len(torch_captioner.vocab), (n,), generator=generator)
                lp_ours, state_ours = ours.step(tokens, state_ours)
                lp_theirs, state_theirs = theirs.step(tokens, state_theirs)
                assert lp_ours.shape == lp_theirs.shape == (n, len(torch_captioner.vocab))
                assert (lp_ours - lp_theirs).abs().max() <= STEP_TOLERANCE
                index = torch.randint(0, n, (grown,), generator=generator)
                state_ours, state_theirs, n = ours.reorder(state_ours, index), theirs.reorder(state_theirs, index), grown


def test_features_and_class_logits_are_the_torch_encoders(exported, examples_dir):
    torch_captioner, folder = exported
    onnx_captioner = OnnxCaptioner(folder, device="cpu")
    pixels = torch.rand(2, 3, 224, 224)
    features = torch_captioner.encode(pixels)
    ours = onnx_captioner.encode(pixels)
    assert (ours - features).abs().max() <= STEP_TOLERANCE * features.abs().max()
    with torch.no_grad():
        logits = torch_captioner.encoder.head(features)
    assert (onnx_captioner.encoder.head(features) - logits).abs().max() <= STEP_TOLERANCE * logits.abs().max()
    assert torch.equal(onnx_captioner.encoder.head.weight, torch_captioner.encoder.head.weight)


@pytest.mark.parametrize("options", [dict(method="greedy"), dict(method="beam", beam_size=3, num_captions=2),
                                     dict(guide="imagenet"), dict(include=["dog|puppy"])],
                         ids=["greedy", "beam", "guided", "include"])
def test_both_runtimes_write_the_same_captions(exported, examples_dir, options):
    torch_captioner, folder = exported
    onnx_captioner = OnnxCaptioner(folder, device="cpu")
    images = [str(examples_dir / name) for name in ("cat.jpg", "coffee.jpg", "rocket.jpg")]
    theirs = torch_captioner.caption(images, **options)
    ours = onnx_captioner.caption(images, **options)
    for a, b in zip(ours, theirs):
        assert [c.tokens for c in a.captions] == [c.tokens for c in b.captions]
        assert [f.words for f in a.forced] == [f.words for f in b.forced]
        for x, y in zip(a.captions, b.captions):
            assert abs(x.log_prob - y.log_prob) <= CAPTION_TOLERANCE
    if options.get("guide") == "imagenet":
        assert any(f.words[0] == "cat" for f in ours[0].forced)  # the guide ran on the ONNX classifier


def test_cli_exports_again_over_an_earlier_export_and_captions(tiny_ckpt, tmp_path, examples_dir, capsys):
    folder = tmp_path / "export"
    for _ in range(2):
        assert main(["checkpoint", "export", str(tiny_ckpt), "--onnx", str(folder), "--beam-size", "2"]) == 0
    assert json.loads((folder / SETTINGS).read_text())["decoding"]["beam_size"] == 2
    assert [p.name for p in tmp_path.iterdir()] == ["export"]  # nothing left beside it
    capsys.readouterr()
    image = str(examples_dir / "cat.jpg")
    assert main(["caption", image, "--runtime", "onnx", "--checkpoint", str(folder)]) == 0
    onnx_out = capsys.readouterr().out
    assert main(["caption", image, "--checkpoint", str(tiny_ckpt), "--beam-size", "2"]) == 0
    assert onnx_out == capsys.readouterr().out


def test_the_export_refuses_a_folder_of_other_files_and_a_file(tiny_ckpt, tmp_path, capsys):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    (tmp_path / "file").write_text("x")
    for target, problem in [("mine", "holds other files"), ("file", "is a file, not a folder")]:
        assert main(["checkpoint", "export", str(tiny_ckpt), "--onnx", str(tmp_path / target)]) == 2
        err = capsys.readouterr().err
        assert problem in err and str(tmp_path / target) in err and len(err.strip().splitlines()) == 1
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"
    with pytest.raises(OutputError):
        export_onnx(None, tmp_path / "mine")


def test_export_takes_a_target_file_or_onnx_folder_not_both(tiny_ckpt, tmp_path, capsys):
    for args, problem in [([str(tmp_path / "a.pt"), "--onnx", str(tmp_path / "b")], "either a TARGET"),
                          ([], "either a TARGET"), (["--onnx", str(tmp_path / "b"), "--half"], "float32")]:
        assert main(["checkpoint", "export", str(tiny_ckpt), *args]) == 2
        err = capsys.readouterr().err
        assert problem in err and len(err.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


def test_the_wrong_runtime_for_a_file_or_folder_is_one_line(exported, tiny_ckpt, examples_dir, capsys):
    _, folder = exported
    image = str(examples_dir / "cat.jpg")
    cases = [(["--runtime", "onnx", "--checkpoint", str(tiny_ckpt)], "not an ONNX export folder"),
             (["--checkpoint", str(folder)], "caption it with --runtime onnx"),
             (["--runtime", "onnx"], "needs --checkpoint DIR")]
    for args, problem in cases:
        assert main(["caption", image, *args]) == 2
        err = capsys.readouterr().err
        assert problem in err and len(err.strip().splitlines()) == 1


def test_a_damaged_export_names_the_missing_file(exported, tmp_path):
    _, folder = exported
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    (copy / "decoder_step.onnx").unlink()
    with pytest.raises(CheckpointError, match="decoder_step.onnx: missing"):
        OnnxCaptioner(copy)
    (copy / "decoder_step.onnx").write_bytes(b"not a graph")
    with pytest.raises(CheckpointError, match="decoder_step.onnx: ONNX Runtime cannot load it"):
        OnnxCaptioner(copy)


def test_the_cuda_provider_is_chosen_when_onnxruntime_has_it(monkeypatch):
    import onnxruntime

    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: ["CPUExecutionProvider"])
    assert runtime.providers(None) == runtime.providers("cpu") == ["CPUExecutionProvider"]
    with pytest.raises(Exception, match="no CUDA execution provider"):
        runtime.providers("cuda")
    monkeypatch.setattr(onnxruntime, "get_available_providers",
                        lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    assert runtime.providers(None) == runtime.providers("cuda") == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert runtime.providers("cpu") == ["CPUExecutionProvider"]
