"""The checkpoint format: round trips, float16 storage, and clear errors for bad files."""

import json
import os
import shutil

import pytest
import torch

from captioner import Captioner
from captioner.checkpoint import (FORMAT_VERSION, Checkpoint, CheckpointError, load_checkpoint,
                                  make_checkpoint, save_checkpoint)
from captioner.training.state import Progress, TrainState
from helpers import DEVICES, tiny_checkpoint


def _resave(captioner, path, **extra):
    model = captioner.model
    checkpoint = make_checkpoint(
        encoder_spec=model.encoder.spec.to_dict(), decoder_config=model.decoder.config.to_dict(),
        decoder_state=model.decoder.state_dict(), vocab=captioner.vocab.to_dict(),
        encoder_state=model.encoder_state_to_save(), decoding=captioner.decoding, **extra,
    )
    save_checkpoint(checkpoint, path)


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
    checkpoint = load_checkpoint(tiny_ckpt)
    assert checkpoint.encoder_state is None
    assert torch.load(tiny_ckpt, weights_only=True)["format_version"] == FORMAT_VERSION
    assert os.path.getsize(tiny_ckpt) < 2_000_000


@pytest.mark.parametrize("device", DEVICES)
def test_fine_tuned_encoder_weights_are_stored_and_restored(tiny_ckpt, tmp_path, device):
    captioner = Captioner.from_checkpoint(tiny_ckpt, device=device)
    captioner.model.encoder.set_trainable(True)
    with torch.no_grad():
        captioner.model.encoder.body[0][0].weight.add_(0.5)
    _resave(captioner, tmp_path / "tuned.pt")
    assert load_checkpoint(tmp_path / "tuned.pt").encoder_state is not None
    restored = Captioner.from_checkpoint(tmp_path / "tuned.pt", device=device)
    assert torch.equal(restored.model.encoder.body[0][0].weight, captioner.model.encoder.body[0][0].weight)


@pytest.mark.parametrize("device", DEVICES)
def test_float16_storage_loads_into_float32(tmp_path, device):
    path = tiny_checkpoint(tmp_path / "half.pt", half=True)
    checkpoint = load_checkpoint(path)
    assert all(t.dtype == torch.float16 for t in checkpoint.decoder_state.values())
    captioner = Captioner.from_checkpoint(path, device=device)
    weight = captioner.model.decoder.out.weight
    assert weight.dtype == torch.float32 and weight.device.type == device
    assert torch.equal(weight.cpu(), checkpoint.decoder_state["out.weight"].float())


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
    data = load_checkpoint(tiny_ckpt).to_dict()
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
    checkpoint = load_checkpoint(tiny_ckpt)

    def crash(obj, handle, *args, **kwargs):
        handle.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(checkpoint, target)
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
    assert slim.train_state is None
    for key, value in original.decoder_state.items():
        assert torch.equal(slim.decoder_state[key], value.half())
    assert main(["checkpoint", "info", str(target)]) == 0
    assert "float16" in capsys.readouterr().out
    assert slim.decoding == original.decoding


def test_cli_export_sets_the_default_decoding(tiny_ckpt, tmp_path, capsys):
    from captioner.cli import main

    source = tmp_path / "source.pt"
    record = load_checkpoint(tiny_ckpt)
    record.decoding = {"method": "beam", "max_length": 12, "beam_size": 4}
    save_checkpoint(record, source)
    target = tmp_path / "beam2.pt"
    assert main(["checkpoint", "export", str(source), str(target), "--beam-size", "2",
                 "--length-penalty", "0.5"]) == 0
    # the options change what they name; the source's other settings are kept
    assert load_checkpoint(target).decoding == {"method": "beam", "max_length": 12, "beam_size": 2,
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


def _tiny_record(**changes):
    """A hand-built record: a 3-word vocabulary and a 2-tensor decoder state."""
    fields = dict(
        encoder_spec={"backbone": "efficientnet_lite0", "weights": "DEFAULT", "preprocessing": None},
        encoder_state=None, decoder_config={"vocab_size": 3, "feature_dim": 4},
        decoder_state={"a": torch.ones(2, 3), "b": torch.zeros(5)}, vocab={"itos": ["<pad>", "x", "y"]},
        decoding={"beam_size": 4}, training={"epoch": 2, "step": 7, "data": {"path": "d.json", "manifest": {}}},
        train_state=_train_state(),
    )
    return Checkpoint(**{**fields, **changes})


def _train_state():
    """A hand-built resumable state: epoch 2, step 7, one process's RNG states."""
    return TrainState(optimizer={"state": {}, "param_groups": []}, scheduler={"last_epoch": 7},
                      progress=Progress(2, 7, 1, rng_ranks=[{"cpu": torch.ones(3, dtype=torch.uint8), "cuda": []}]))


def test_record_round_trips_through_the_file_layout(tmp_path):
    record = _tiny_record()
    save_checkpoint(record, tmp_path / "r.pt")
    on_disk = torch.load(tmp_path / "r.pt", weights_only=True)
    assert on_disk["format"] == "captioner-checkpoint" and on_disk["format_version"] == 1
    assert on_disk["decoder"]["config"] == {"vocab_size": 3, "feature_dim": 4}
    assert on_disk["encoder"] == {"spec": record.encoder_spec, "state_dict": None}
    loaded = load_checkpoint(tmp_path / "r.pt")
    assert loaded.path == str(tmp_path / "r.pt")
    assert loaded.train_state.progress == Progress(2, 7, 1) and loaded.train_state.scheduler == {"last_epoch": 7}
    assert torch.equal(loaded.train_state.progress.rng_ranks[0]["cpu"], torch.ones(3, dtype=torch.uint8))
    assert on_disk["train_state"]["progress"] == {"epoch": 2, "step": 7, "step_in_epoch": 1}
    assert loaded.decoding == {"beam_size": 4}
    assert torch.equal(loaded.decoder_state["a"], torch.ones(2, 3)) and set(loaded.decoder_state) == {"a", "b"}
    assert Checkpoint.from_dict(loaded.to_dict()).to_dict().keys() == on_disk.keys()


def test_record_describe_and_slim():
    record = _tiny_record()
    info = record.describe()
    assert info["decoder_parameters"] == 11 and info["weights_dtype"] == "float32"
    assert info["vocabulary"] == {"words": 3, "min_count": None}
    assert info["training"]["epoch"] == 2 and info["training"]["data"] == {"path": "d.json"}
    assert info["resumable"] is True and info["encoder"]["fine_tuned_weights_stored"] is False
    slim = record.slim(half=True, decoding={"beam_size": 2})
    assert slim.train_state is None and slim.decoding == {"beam_size": 2}
    assert slim.decoder_state["a"].dtype == torch.float16 and record.decoder_state["a"].dtype == torch.float32
    assert record.slim().decoding == {"beam_size": 4} and record.slim().describe()["resumable"] is False


def test_half_training_checkpoint_keeps_float32_weights_for_resuming():
    weight = torch.tensor([1 / 3, 1e-5])  # neither is a float16 number
    record = make_checkpoint(encoder_spec={}, decoder_config={"vocab_size": 1}, decoder_state={"w": weight},
                             vocab={"itos": ["x"]}, train_state=_train_state(), half=True)
    assert record.decoder_state["w"].dtype == torch.float16
    assert not torch.equal(record.decoder_state["w"].float(), weight)
    exact = record.resume_weights()
    assert torch.equal(exact.decoder_state["w"], weight) and exact.encoder_state is None
    assert record.slim().train_state is None  # a release copy drops them with the rest of the training state
    published = make_checkpoint(encoder_spec={}, decoder_config={"vocab_size": 1}, decoder_state={"w": weight},
                                vocab={"itos": ["x"]}, half=True)
    assert published.train_state is None and published.resume_weights() is published


@pytest.mark.parametrize("part", ["decoder", "encoder"])
def test_non_finite_weights_are_refused_naming_file_and_tensor(tiny_ckpt, lite0, tmp_path, part, examples_dir,
                                                                capsys):
    from captioner.cli import main

    record = load_checkpoint(tiny_ckpt)
    if part == "decoder":
        state = dict(record.decoder_state)
        state["out.weight"] = state["out.weight"].clone()
        state["out.weight"][3, 1] = float("nan")
        record.decoder_state, name = state, "decoder weight out.weight"
    else:
        state = {k: v.clone(memory_format=torch.contiguous_format) for k, v in lite0.state_dict().items()}
        key = next(k for k, v in state.items() if v.is_floating_point())
        state[key].view(-1)[0] = float("inf")
        record.encoder_state, name = state, f"encoder weight {key}"
    path = tmp_path / "nan.pt"
    torch.save(record.to_dict(), path)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    message = _one_line(info.value)
    assert message.startswith(f"{path}: {name} holds 1 non-finite value")
    assert main(["caption", str(examples_dir / "cat.jpg"), "--checkpoint", str(path), "--method", "greedy"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and name in err
    with pytest.raises(CheckpointError, match=f"{tmp_path / 'again.pt'}: {name}"):
        save_checkpoint(record, tmp_path / "again.pt")
    assert not (tmp_path / "again.pt").exists()


def _damage(data, what):
    if what == "encoder spec a string":
        data["encoder"]["spec"] = "efficientnet_lite0"
    elif what == "decoder config empty":
        data["decoder"]["config"] = {}
    elif what == "decoder config a string":
        data["decoder"]["config"] = "lstm"
    elif what == "decoder config unknown key":
        data["decoder"]["config"] = {**data["decoder"]["config"], "layers": 2}
    elif what == "decoder hidden size a string":
        data["decoder"]["config"] = {**data["decoder"]["config"], "hidden_size": "512"}
    elif what == "encoder spec of another backbone":  # the weights named are Lite0's, the backbone is not
        data["encoder"]["spec"] = {**data["encoder"]["spec"], "backbone": "resnet18"}
    elif what == "weight shape":
        state = dict(data["decoder"]["state_dict"])
        state["out.weight"] = state["out.weight"][:, :5]
        data["decoder"]["state_dict"] = state
    elif what == "vocabulary size":
        data["vocab"] = {**data["vocab"], "itos": data["vocab"]["itos"] + ["extra"]}
    elif what == "decoding a list":
        data["decoding"] = ["beam"]
    elif what == "train_state without counters":
        data["train_state"] = {k: v for k, v in _train_state().to_dict().items() if k != "progress"}


@pytest.mark.parametrize("what,expected", [
    ("encoder spec a string", "encoder spec is a str, not a mapping"),
    ("decoder config empty", "decoder config is empty"),
    ("decoder config a string", "decoder config is a str, not a mapping"),
    ("decoder config unknown key", "unknown decoder config keys: ['layers']"),
    ("decoder hidden size a string", "decoder hidden_size must be a whole number, got '512' (a str)"),
    ("encoder spec of another backbone", "the encoder spec names resnet18 but the weights of efficientnet_lite0"),
    ("weight shape", "out.weight has shape"),
    ("vocabulary size", "vocabulary has"),
    ("decoding a list", "decoding is a list, not a mapping"),
    ("train_state without counters", "damaged checkpoint: train_state lacks progress"),
])
def test_cli_info_and_export_refuse_damaged_checkpoints_in_one_line(tiny_ckpt, tmp_path, capsys, what, expected):
    from captioner.cli import main

    data = load_checkpoint(tiny_ckpt).to_dict()
    _damage(data, what)
    path = tmp_path / "damaged.pt"
    torch.save(data, path)
    for argv in (["checkpoint", "info", str(path)], ["checkpoint", "info", str(path), "--json"],
                 ["checkpoint", "export", str(path), str(tmp_path / "out.pt")]):
        assert main(argv) == 2, argv
        captured = capsys.readouterr()
        assert captured.out == "" and captured.err.count("\n") == 1, captured.err
        assert f"{path}: " in captured.err and expected in captured.err
    assert not (tmp_path / "out.pt").exists()
