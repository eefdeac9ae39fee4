"""The checkpoint format: round trips, float16 storage, and clear errors for bad files."""

import json
import os
import shutil

import pytest
import torch

from captioner import Captioner
from captioner.checkpoint import (FORMAT_VERSION, CheckpointError, load_checkpoint, make_checkpoint,
                                  save_checkpoint)
from helpers import DEVICES, tiny_checkpoint


def _resave(captioner, path, **extra):
    model = captioner.model
    data = make_checkpoint(
        encoder_spec=model.encoder.spec.to_dict(), decoder_config=model.decoder.config.to_dict(),
        decoder_state=model.decoder.state_dict(), vocab=captioner.vocab.to_dict(),
        encoder_state=model.encoder_state_to_save(), decoding=captioner.decoding, **extra,
    )
    save_checkpoint(data, path)


@pytest.mark.parametrize("device", DEVICES)
def test_roundtrip_gives_identical_weights_and_captions(tiny_ckpt, tmp_path, examples_dir, device):
    first = Captioner.from_checkpoint(tiny_ckpt, device=device)
    _resave(first, tmp_path / "again.pt")
    second = Captioner.from_checkpoint(tmp_path / "again.pt", device=device)
    assert second.device.type == device
    for (k, a), (k2, b) in zip(first.model.state_dict().items(), second.model.state_dict().items()):
        assert k == k2 and torch.equal(a, b), k
    images = [str(examples_dir / n) for n in ("coffee.jpg", "cat.jpg", "rocket.jpg")]
    for method in ("greedy", "beam"):
        a = first.caption(images, method=method, beam_size=3)
        b = second.caption(images, method=method, beam_size=3)
        assert [r.captions for r in a] == [r.captions for r in b]
    assert second.vocab == first.vocab
    assert second.model.encoder.spec == first.model.encoder.spec


def test_pretrained_encoder_weights_are_not_stored(tiny_ckpt):
    data = load_checkpoint(tiny_ckpt)
    assert data["encoder"]["state_dict"] is None
    assert data["format_version"] == FORMAT_VERSION
    assert os.path.getsize(tiny_ckpt) < 2_000_000


@pytest.mark.parametrize("device", DEVICES)
def test_fine_tuned_encoder_weights_are_stored_and_restored(tiny_ckpt, tmp_path, device):
    captioner = Captioner.from_checkpoint(tiny_ckpt, device=device)
    captioner.model.encoder.set_trainable(True)
    with torch.no_grad():
        captioner.model.encoder.body[0][0].weight.add_(0.5)
    _resave(captioner, tmp_path / "tuned.pt")
    data = load_checkpoint(tmp_path / "tuned.pt")
    assert data["encoder"]["state_dict"] is not None
    restored = Captioner.from_checkpoint(tmp_path / "tuned.pt", device=device)
    assert torch.equal(restored.model.encoder.body[0][0].weight, captioner.model.encoder.body[0][0].weight)


@pytest.mark.parametrize("device", DEVICES)
def test_float16_storage_loads_into_float32(tmp_path, device):
    path = tiny_checkpoint(tmp_path / "half.pt", half=True)
    data = load_checkpoint(path)
    assert all(t.dtype == torch.float16 for t in data["decoder"]["state_dict"].values())
    captioner = Captioner.from_checkpoint(path, device=device)
    weight = captioner.model.decoder.out.weight.cpu()
    assert weight.dtype == torch.float32
    assert torch.equal(weight, data["decoder"]["state_dict"]["out.weight"].float())


def test_decoding_defaults_travel_with_the_checkpoint(tmp_path):
    path = tiny_checkpoint(tmp_path / "d.pt", decoding={"beam_size": 5, "length_penalty": 0.3})
    captioner = Captioner.from_checkpoint(path, device="cpu")
    assert captioner.decoding.beam_size == 5 and captioner.decoding.length_penalty == 0.3


class Unpicklable:
    pass


def _one_line(error) -> str:
    text = str(error)
    assert "\n" not in text
    return text


@pytest.mark.parametrize("make,expected", [
    (lambda p: None, "no such checkpoint file"),
    (lambda p: p.write_bytes(b""), "empty file"),
    (lambda p: p.write_text('{"format": "captioner-checkpoint"}'), "cannot be read as a PyTorch file"),
    (lambda p: torch.save({"fc.weight": torch.zeros(2, 2)}, p), "bare PyTorch state_dict"),
    (lambda p: torch.save({"model": {"a": torch.zeros(1)}, "epoch": 3}, p), "not a captioner checkpoint"),
    (lambda p: torch.save([1, 2, 3], p), "not a captioner checkpoint"),
    (lambda p: torch.save({"obj": Unpicklable()}, p), "pickled Python object (test_checkpoint.Unpicklable)"),
])
def test_bad_files_give_one_line_errors_naming_the_file(tmp_path, make, expected):
    path = tmp_path / "bad.pt"
    make(path)
    with pytest.raises(CheckpointError) as info:
        Captioner.from_checkpoint(path)
    message = _one_line(info.value)
    assert message.startswith(str(path) + ": ")
    assert expected in message


def test_truncated_checkpoint(tiny_ckpt, tmp_path):
    data = tiny_ckpt.read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or damaged"):
        load_checkpoint(tmp_path / "cut.pt")


def test_newer_format_and_damaged_sections(tiny_ckpt, tmp_path):
    data = load_checkpoint(tiny_ckpt)
    newer = {**data, "format_version": FORMAT_VERSION + 1}
    torch.save(newer, tmp_path / "newer.pt")
    with pytest.raises(CheckpointError, match="newer than this captioner"):
        load_checkpoint(tmp_path / "newer.pt")
    no_vocab = {k: v for k, v in data.items() if k != "vocab"}
    torch.save(no_vocab, tmp_path / "novocab.pt")
    with pytest.raises(CheckpointError, match="missing section 'vocab'"):
        load_checkpoint(tmp_path / "novocab.pt")
    wrong_vocab = {**data, "vocab": {**data["vocab"], "itos": data["vocab"]["itos"] + ["extra"]}}
    torch.save(wrong_vocab, tmp_path / "wrongvocab.pt")
    with pytest.raises(CheckpointError, match="vocabulary has"):
        Captioner.from_checkpoint(tmp_path / "wrongvocab.pt")
    state = dict(data["decoder"]["state_dict"])
    state["out.weight"] = state["out.weight"][:, :5]
    bad_shape = {**data, "decoder": {**data["decoder"], "state_dict": state}}
    torch.save(bad_shape, tmp_path / "shape.pt")
    with pytest.raises(CheckpointError, match="out.weight has shape"):
        Captioner.from_checkpoint(tmp_path / "shape.pt")


def test_failed_save_leaves_the_previous_file_intact(tiny_ckpt, tmp_path, monkeypatch):
    target = tmp_path / "model.pt"
    shutil.copy(tiny_ckpt, target)
    before = target.read_bytes()
    data = load_checkpoint(tiny_ckpt)

    def crash(obj, handle, *args, **kwargs):
        handle.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(data, target)
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt"]


def test_missing_default_checkpoint_is_explained(monkeypatch, tmp_path):
    import captioner.api

    monkeypatch.setattr(captioner.api, "default_checkpoint_path", lambda: tmp_path / "default.pt")
    with pytest.raises(CheckpointError, match="bundled default checkpoint is not there"):
        Captioner.from_checkpoint()


def test_cli_info_and_export(tiny_ckpt, tmp_path, capsys):
    from captioner.cli import main

    assert main(["checkpoint", "info", str(tiny_ckpt), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["encoder"]["backbone"] == "efficientnet_lite0" and info["vocabulary"]["words"] > 4
    assert info["weights_dtype"] == "float32"
    target = tmp_path / "slim.pt"
    assert main(["checkpoint", "export", str(tiny_ckpt), str(target), "--half"]) == 0
    capsys.readouterr()
    slim, original = load_checkpoint(target), load_checkpoint(tiny_ckpt)
    assert "train_state" not in slim
    for key, value in original["decoder"]["state_dict"].items():
        assert torch.equal(slim["decoder"]["state_dict"][key], value.half())
    assert main(["checkpoint", "info", str(target)]) == 0
    assert "float16" in capsys.readouterr().out
    assert slim["decoding"] == original["decoding"]


def test_cli_export_sets_the_default_decoding(tiny_ckpt, tmp_path, capsys):
    from captioner.cli import main

    source = tmp_path / "source.pt"
    data = load_checkpoint(tiny_ckpt)
    data["decoding"] = {"method": "beam", "max_length": 12, "beam_size": 4}
    save_checkpoint(data, source)
    target = tmp_path / "beam2.pt"
    assert main(["checkpoint", "export", str(source), str(target), "--beam-size", "2",
                 "--length-penalty", "0.5"]) == 0
    # the options change what they name; the source's other settings are kept
    assert load_checkpoint(target)["decoding"] == {"method": "beam", "max_length": 12, "beam_size": 2,
                                                   "length_penalty": 0.5}
    greedy = tmp_path / "greedy.pt"
    assert main(["checkpoint", "export", str(target), str(greedy), "--method", "greedy", "--max-length", "9"]) == 0
    loaded = Captioner.from_checkpoint(greedy, device="cpu")
    assert loaded.decoding.method == "greedy" and loaded.decoding.max_length == 9
    assert loaded.decoding.beam_size == 2  # kept from the source
    capsys.readouterr()
    for option, value in (("--beam-size", "0"), ("--max-length", "0"), ("--length-penalty", "-0.5")):
        assert main(["checkpoint", "export", str(tiny_ckpt), str(tmp_path / "bad.pt"), option, value]) == 2
        assert option in capsys.readouterr().err and not (tmp_path / "bad.pt").exists()
