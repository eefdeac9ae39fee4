"""Training: loss falls, resume is bit-exact, the cache is reused and rebuilt, 2 processes = 1."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from captioner.checkpoint import load_checkpoint
from captioner.cli import main
from captioner.config import config_from_dict
from captioner.data.cache import FeatureCache
from captioner.models import EncoderSpec, build_encoder
from captioner.training import state as training_state
from captioner.training.run import TrainingError, train
from helpers import DEVICES, HANG_GUARD_S
from shapes import make_shapes, write_karpathy


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    root = tmp_path_factory.mktemp("shapes")
    entries = make_shapes(root)
    return root, write_karpathy(root, entries)


def settings(shapes, out, **train):
    root, dataset = shapes
    return {
        "data": {"name": "shapes", "format": "karpathy", "path": str(dataset), "images": str(root / "images"),
                 "min_word_count": 1},
        "model": {"embed_dim": 16, "hidden_size": 32, "dropout": 0.2},
        "train": {"out_dir": str(out), "cache_dir": str(root / "cache"), "epochs": 4, "batch_size": 16,
                  "lr": 3e-3, "early_stopping": 0, "label_smoothing": 0.1, **train},
        "decode": {"beam_size": 2},
    }


def run(shapes, out, resume=False, **train_options):
    return train(config_from_dict(settings(shapes, out, **train_options)), resume=resume)


def weights(path):
    return load_checkpoint(path).decoder_state


def test_loss_falls_and_checkpoints_and_log_are_written(shapes, tmp_path):
    # lr 1e-2 for 8 epochs learns the shapes (CIDEr-D goes from ~60-130 to ~400 over seeds 0-2);
    # 5 epochs at 3e-3 was too short for the captions to improve reliably.
    result = run(shapes, tmp_path / "run", epochs=8, lr=1e-2)
    losses = [row["train_loss"] for row in result["history"]]
    assert losses[0] > losses[1] > losses[2] and losses[-1] < 0.75 * losses[0]
    scores = [row["CIDEr-D"] for row in result["history"]]
    assert scores[-1] > max(200.0, 2 * scores[0]), scores
    assert {p.name for p in (tmp_path / "run").iterdir()} >= {"best.pt", "last.pt", "log.csv", "config.yaml"}
    rows = (tmp_path / "run" / "log.csv").read_text().splitlines()
    assert rows[0].startswith("epoch,step,lr,train_loss") and len(rows) == 9
    best = load_checkpoint(tmp_path / "run" / "best.pt")
    assert best.training["epoch"] == result["best_epoch"]
    assert best.decoding["beam_size"] == 2
    assert best.training["config"]["data"]["name"] == "shapes"


@pytest.mark.parametrize("device", DEVICES)
def test_resume_continues_bit_exactly(shapes, tmp_path, device):
    # (a constant learning rate, because a cosine schedule's length depends on train.epochs)
    options = dict(lr_schedule="constant", device=device)
    run(shapes, tmp_path / "straight", epochs=4, **options)
    run(shapes, tmp_path / "split", epochs=2, **options)
    run(shapes, tmp_path / "split", resume=True, epochs=4, **options)
    a, b = weights(tmp_path / "straight" / "last.pt"), weights(tmp_path / "split" / "last.pt")
    for key in a:
        assert torch.equal(a[key], b[key]), key
    sa = load_checkpoint(tmp_path / "straight" / "last.pt").train_state
    sb = load_checkpoint(tmp_path / "split" / "last.pt").train_state
    assert sa.progress.counters() == sb.progress.counters()
    assert sa.history[-1]["train_loss"] == sb.history[-1]["train_loss"]


def test_interrupted_run_saves_and_resumes_mid_epoch_bit_exactly(shapes, tmp_path, monkeypatch):
    run(shapes, tmp_path / "straight", epochs=2)
    calls = {"n": 0}
    real_step = torch.optim.AdamW.step
    before_steps = []

    def states_with_a_gpu(device):  # what a CUDA run takes before each step: the CPU's and the GPUs' states
        before_steps.append({"cpu": torch.get_rng_state(), "cuda": [torch.tensor([len(before_steps) + 1])]})
        return before_steps[-1]

    monkeypatch.setattr(training_state, "rng_states", states_with_a_gpu)

    def step_then_interrupt(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 6:  # the second step of the second epoch
            raise KeyboardInterrupt
        return real_step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.AdamW, "step", step_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        run(shapes, tmp_path / "broken", epochs=2)
    monkeypatch.undo()  # the real optimizer step and RNG states again
    saved = load_checkpoint(tmp_path / "broken" / "last.pt").train_state
    assert saved.progress.counters() == {"epoch": 1, "step": 5, "step_in_epoch": 1}
    # the states from before the step in progress (the 6th), not those at saving time: taken at
    # the start and in each step after its backward pass, the 7th (in the 6th step, before its
    # interrupted optimizer step) is not saved
    (rank_0,) = saved.progress.rng_ranks
    assert len(before_steps) == 7 and [int(s) for s in rank_0["cuda"]] == [6]
    assert torch.equal(rank_0["cpu"], before_steps[5]["cpu"])
    assert_rng_states_written_once(tmp_path / "broken" / "last.pt", processes=1)
    run(shapes, tmp_path / "broken", resume=True, epochs=2)
    a, b = weights(tmp_path / "straight" / "last.pt"), weights(tmp_path / "broken" / "last.pt")
    assert all(torch.equal(a[k], b[k]) for k in a)


def assert_rng_states_written_once(path, processes):
    """The file holds every process's RNG states once, in rank order (rank 0's not also in rng_cpu/rng_cuda)."""
    section = torch.load(path, weights_only=True)["train_state"]
    assert "rng_cpu" not in section and "rng_cuda" not in section
    assert len(section["rng_ranks"]) == processes


def test_half_checkpoints_resume_bit_exactly(shapes, tmp_path):
    options = dict(lr_schedule="constant", half_checkpoint=True)
    run(shapes, tmp_path / "straight", epochs=2, **options)
    run(shapes, tmp_path / "split", epochs=1, **options)
    run(shapes, tmp_path / "split", resume=True, epochs=2, **options)
    a, b = load_checkpoint(tmp_path / "straight" / "last.pt"), load_checkpoint(tmp_path / "split" / "last.pt")
    exact_a, exact_b = a.resume_weights().decoder_state, b.resume_weights().decoder_state
    for key, published in a.decoder_state.items():
        assert published.dtype == torch.float16 and exact_a[key].dtype == torch.float32
        assert torch.equal(published, b.decoder_state[key]), key
        assert torch.equal(exact_a[key], exact_b[key]), key


def test_a_diverging_run_stops_and_keeps_the_last_good_checkpoint(shapes, tmp_path):
    # lr 3e37 is finite, but one AdamW step takes the weights to about 3e38 (the float32 limit):
    # the second epoch's loss is NaN. A config refuses an lr above 10 (see the test below), so
    # the lr is set after validation: the guard in the loop is for runs that diverge anyway.
    config = config_from_dict(settings(shapes, tmp_path / "wild", epochs=3, batch_size=1000, lr_schedule="constant"))
    config.train.lr = 3e37
    with pytest.raises(TrainingError, match=r"training diverged: epoch 2: the training loss became nan at step 2"):
        train(config)
    last = load_checkpoint(tmp_path / "wild" / "last.pt")
    assert last.training["epoch"] == 1 and last.train_state.progress.step == 1
    assert all(bool(torch.isfinite(t).all()) for t in last.decoder_state.values())


def test_weights_that_become_infinite_stop_the_run_before_saving(shapes, tmp_path, monkeypatch):
    real_step = torch.optim.AdamW.step

    def step_to_infinity(self, *args, **kwargs):  # a finite loss, but an update that overflows
        result = real_step(self, *args, **kwargs)
        self.param_groups[0]["params"][0].data.view(-1)[0] = float("inf")
        return result

    monkeypatch.setattr(torch.optim.AdamW, "step", step_to_infinity)
    with pytest.raises(TrainingError, match="training diverged: epoch 1: the weights became NaN or infinite"):
        run(shapes, tmp_path / "inf", epochs=2, batch_size=1000)
    assert not (tmp_path / "inf" / "last.pt").exists() and not (tmp_path / "inf" / "best.pt").exists()


def test_meteor_without_java_is_refused_before_training(shapes, tmp_path, monkeypatch):
    from captioner.training import run as training_run

    monkeypatch.setattr(training_run, "java_available", lambda: False)
    with pytest.raises(TrainingError, match="train.val_metric METEOR needs Java"):
        run(shapes, tmp_path / "meteor", val_metric="METEOR")
    assert not (tmp_path / "meteor").exists()


def test_resume_refuses_a_changed_config_and_a_missing_run(shapes, tmp_path):
    run(shapes, tmp_path / "r", epochs=1)
    with pytest.raises(TrainingError, match="train.lr: 0.003 -> 0.01"):
        run(shapes, tmp_path / "r", resume=True, epochs=2, lr=1e-2)
    with pytest.raises(TrainingError, match="nothing to resume"):
        run(shapes, tmp_path / "never", resume=True)


def test_early_stopping(shapes, tmp_path):
    result = run(shapes, tmp_path / "flat", epochs=6, lr=0.0, early_stopping=2, warmup_steps=0)
    assert result["stopped_early"] and result["epochs_run"] == 3


def test_feature_cache_hit_rebuild_and_recovery(shapes, tmp_path):
    root, _ = shapes
    paths = sorted(str(p) for p in (root / "images").glob("red_*"))
    encoder = build_encoder(EncoderSpec())
    cache = FeatureCache(tmp_path, "red", encoder, paths)
    assert cache.build(encoder, torch.device("cpu"), progress=False) is True
    assert cache.build(encoder, torch.device("cpu"), progress=False) is False  # hit
    features, failed = cache.load()
    assert features.shape == (len(paths), 1, 1280) and features.dtype == np.float16 and failed == {}
    from captioner.data.images import load_image
    from captioner.data.preprocess import preprocess

    with torch.no_grad():
        direct = encoder(preprocess(load_image(paths[3]), encoder.preprocessing).unsqueeze(0))[0]
    assert np.allclose(features[3, 0], direct.numpy(), atol=2e-2, rtol=1e-2)
    # another preprocessing (or other weights, views or images) is another cache
    other = build_encoder(EncoderSpec(preprocessing=encoder.preprocessing.__class__(
        resize_size=240, crop_size=224, mean=encoder.preprocessing.mean, std=encoder.preprocessing.std)))
    assert FeatureCache(tmp_path, "red", other, paths).key != cache.key
    assert FeatureCache(tmp_path, "red", encoder, paths, views=3).key != cache.key
    assert FeatureCache(tmp_path, "red", encoder, paths[:-1]).key != cache.key
    # a half-written cache (no index: the run died mid-way) is detected and rebuilt
    (cache.dir / "index.json").unlink()
    assert not cache.complete
    assert cache.build(encoder, torch.device("cpu"), progress=False) is True
    assert cache.complete
    # so is a corrupt index
    (cache.dir / "index.json").write_text("{")
    assert not cache.complete


def test_unreadable_image_in_the_cache_is_reported(shapes, tmp_path):
    root, _ = shapes
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png")
    encoder = build_encoder(EncoderSpec())
    paths = [str(root / "images" / "red_square_0.png"), str(bad)]
    cache = FeatureCache(tmp_path, "mixed", encoder, paths, views=2)
    cache.build(encoder, torch.device("cpu"), progress=False)
    features, failed = cache.load()
    assert list(failed) == [1] and "bad.png" in failed[1]
    assert features.shape == (2, 2, 1280)
    assert not np.allclose(features[0, 0], features[0, 1])  # the augmented view differs


def test_fine_tuning_from_images_stores_the_encoder(shapes, tmp_path):
    run(shapes, tmp_path / "phase1", epochs=1)
    run(shapes, tmp_path / "phase2", epochs=1, fine_tune_encoder=True, batch_size=32,
        init_from=str(tmp_path / "phase1" / "last.pt"))
    stored = load_checkpoint(tmp_path / "phase2" / "last.pt").encoder_state
    assert stored is not None
    before = build_encoder(EncoderSpec()).state_dict()
    changed = [k for k, v in stored.items()
               if v.is_floating_point() and not torch.equal(v, before[k])]
    assert changed  # the encoder's weights moved


def test_cli_train_reports_config_mistakes(shapes, tmp_path, capsys):
    config = settings(shapes, tmp_path / "cli")
    config["train"]["epoch"] = 3
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["train", "--config", str(path)]) == 2
    assert "unknown config key train.epoch (did you mean train.epochs?)" in capsys.readouterr().err


def test_an_out_dir_that_cannot_be_written_is_one_line_before_any_work(shapes, tmp_path, capsys):
    (tmp_path / "a file").write_text("in the way")
    for out, message in ((tmp_path / ("x" * 300), "the name is too long for the file system"),
                         (tmp_path / "a file", "it is a file, not a folder")):
        path = tmp_path / "c.yaml"
        path.write_text(yaml.safe_dump(settings(shapes, out)))
        assert main(["train", "--config", str(path)]) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err


@pytest.mark.parametrize("key", ["lr", "encoder_lr"])
def test_cli_train_refuses_a_huge_finite_learning_rate_in_one_line(shapes, tmp_path, capsys, key):
    # 1e39 is a finite double but overflows float32: AdamW's update raised a RuntimeError
    # (a traceback) after the feature cache was built; now the config refuses it up front.
    path = tmp_path / "c.yaml"
    config = settings(shapes, tmp_path / "huge", epochs=1, fine_tune_encoder=key == "encoder_lr")
    path.write_text(yaml.safe_dump(config))
    assert main(["train", "--config", str(path), "--set", f"train.{key}=1e39"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err == [f"captioner train: error: {path}: train.{key} must be in [0, 10] (AdamW moves each weight by about "
                   "lr per step), got 1e+39"]
    assert not (tmp_path / "huge").exists()


# Child processes run this checkout's captioner (a script's folder, not the working directory,
# starts sys.path, and an installed captioner may be another checkout's), on one thread each.
SUBPROCESS_ENV = {**os.environ, "OMP_NUM_THREADS": "1",
                  "PYTHONPATH": os.pathsep.join(filter(None, [str(Path(__file__).resolve().parents[1]),
                                                              os.environ.get("PYTHONPATH")]))}


def float16_steps_apart(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """How many float16 steps separate ``a`` and ``b`` (float16 arrays), measured in the
    step of the larger magnitude."""
    a32, b32 = a.astype(np.float32), b.astype(np.float32)
    step = np.spacing(np.maximum(np.abs(a), np.abs(b))).astype(np.float32)
    return np.abs(a32 - b32) / step


@pytest.mark.slow
def test_two_processes_train_the_same_model_as_one(shapes, tmp_path):
    # Both runs read the same feature cache, built by the two processes (sharded): the
    # claim is about training. Separate caches made it flaky, since the extraction's
    # float32 rounding may depend on how the images are batched (one process: batches of
    # 32; two: each its own shard), and a feature one float16 step away moves AdamW's
    # updates by more than float32 summation order does. The sharded extraction is
    # compared with a single-process one below, within that one float16 step.
    one = settings(shapes, tmp_path / "one", epochs=2)
    one["model"]["dropout"] = 0.0
    one["train"]["cache_dir"] = str(tmp_path / "cache")
    two = json.loads(json.dumps(one))
    two["train"]["out_dir"] = str(tmp_path / "two")
    for name, config in (("one", one), ("two", two)):
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(config))
    env = SUBPROCESS_ENV
    double = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                             "-m", "captioner", "train", "--config", str(tmp_path / "two.yaml")],
                            capture_output=True, text=True, env=env, timeout=HANG_GUARD_S)
    assert double.returncode == 0, double.stderr[-3000:]
    assert "(built)" in double.stderr
    single = subprocess.run([sys.executable, "-m", "captioner", "train", "--config", str(tmp_path / "one.yaml")],
                            capture_output=True, text=True, env=env, timeout=HANG_GUARD_S)
    assert single.returncode == 0, single.stderr[-2000:]
    assert "(reused)" in single.stderr
    a, b = weights(tmp_path / "one" / "last.pt"), weights(tmp_path / "two" / "last.pt")
    for key in a:
        assert torch.allclose(a[key], b[key], atol=1e-5, rtol=1e-4), key
    # the sharded feature extraction filled every row as one process does, up to the
    # float16 rounding of float32 values that may differ in their last bits
    (sharded_dir,) = (p for p in (tmp_path / "cache").iterdir() if p.is_dir())  # beside it: the build lock
    index = json.loads((sharded_dir / "index.json").read_text())
    encoder = build_encoder(EncoderSpec())
    whole = FeatureCache(tmp_path / "whole", "shapes", encoder, index["paths"])
    assert whole.key == index["key"]  # the same images, encoder and views
    whole.build(encoder, torch.device("cpu"), batch_size=32, progress=False)
    f1, f2 = whole.load()[0], np.load(sharded_dir / "features.npy")
    assert f1.shape == f2.shape == (len(index["paths"]), 1, 1280)
    assert float16_steps_apart(f1, f2).max() <= 1


# Runs `captioner train ARGS...` (argv[2:]) but raises KeyboardInterrupt, as Ctrl-C would, in
# every process's argv[1]-th optimizer step of this run.
INTERRUPTED_TRAIN = """
import sys
import torch
from captioner.cli import main

real_step, calls = torch.optim.AdamW.step, [0]

def step_then_interrupt(self, *args, **kwargs):
    calls[0] += 1
    if calls[0] == int(sys.argv[1]):
        raise KeyboardInterrupt
    return real_step(self, *args, **kwargs)

torch.optim.AdamW.step = step_then_interrupt
sys.exit(main(sys.argv[2:]))
"""


@pytest.mark.slow
def test_two_processes_resume_bit_exactly_each_from_its_own_random_numbers(shapes, tmp_path):
    """A 2-process run interrupted (Ctrl-C) in epoch 2 and resumed ends with the weights of an
    uninterrupted one. Dropout is on, and batches of 15 give the processes shares of 8 and 7
    captions, so they draw different amounts of random numbers and their RNG states part:
    restoring process 0's states in both (as before) changed process 1's dropout masks.
    (Three torchrun launches, about 15 s each here, mostly starting Python and PyTorch.)"""
    config = settings(shapes, tmp_path / "straight", epochs=2, batch_size=15, lr_schedule="constant")
    config["train"]["cache_dir"] = str(tmp_path / "cache")
    (tmp_path / "straight.yaml").write_text(yaml.safe_dump(config))
    config["train"]["out_dir"] = str(tmp_path / "split")
    (tmp_path / "split.yaml").write_text(yaml.safe_dump(config))
    (tmp_path / "interrupted.py").write_text(INTERRUPTED_TRAIN)
    env = SUBPROCESS_ENV

    def torchrun(*args):
        return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                               *args], capture_output=True, text=True, env=env, timeout=HANG_GUARD_S)

    done = torchrun("-m", "captioner", "train", "--config", str(tmp_path / "straight.yaml"))
    assert done.returncode == 0, done.stderr[-3000:]
    split = ["train", "--config", str(tmp_path / "split.yaml")]
    # 4 steps per epoch (72 captions, batches of 15): the 6th step is the 2nd of epoch 2
    stopped = torchrun(str(tmp_path / "interrupted.py"), "6", *split)
    assert stopped.returncode != 0 and "interrupted at epoch 2, step 5" in stopped.stderr, stopped.stderr[-3000:]
    saved = load_checkpoint(tmp_path / "split" / "last.pt").train_state
    assert saved.progress.counters() == {"epoch": 1, "step": 5, "step_in_epoch": 1}
    assert_rng_states_written_once(tmp_path / "split" / "last.pt", processes=2)
    done = torchrun("-m", "captioner", *split, "--resume")
    assert done.returncode == 0, done.stderr[-3000:]
    a, b = weights(tmp_path / "straight" / "last.pt"), weights(tmp_path / "split" / "last.pt")
    for key in a:
        assert torch.equal(a[key], b[key]), key
    # each process's states were saved, and they differ (so the test can tell them apart)
    first, second = saved.progress.rng_ranks
    assert not torch.equal(first["cpu"], second["cpu"])


def test_float16_steps_apart_known_answers():
    a = np.array([1.0, 1.0, 2.0, -0.5, 0.0], dtype=np.float16)
    b = np.array([1.0, 1.0 + 2.0 ** -10, 2.0 - 2.0 ** -10, -0.5 - 2.0 ** -11, 2.0 ** -24], dtype=np.float16)
    assert float16_steps_apart(a, b).tolist() == [0.0, 1.0, 0.5, 1.0, 1.0]


def test_weight_average_is_saved_and_resumes_bit_exactly(shapes, tmp_path):
    options = dict(lr_schedule="constant", ema_decay=0.9)
    run(shapes, tmp_path / "straight", epochs=3, **options)
    run(shapes, tmp_path / "split", epochs=1, **options)
    run(shapes, tmp_path / "split", resume=True, epochs=3, **options)
    a, b = load_checkpoint(tmp_path / "straight" / "last.pt"), load_checkpoint(tmp_path / "split" / "last.pt")
    for key in a.decoder_state:
        assert torch.equal(a.decoder_state[key], b.decoder_state[key]), key
        assert torch.equal(a.train_state.raw_weights["decoder"][key], b.train_state.raw_weights["decoder"][key]), key
    raw, averaged = a.train_state.raw_weights["decoder"], a.decoder_state
    assert any(not torch.equal(raw[k], averaged[k]) for k in raw)  # the saved weights are the average
    assert a.train_state.ema_n_averaged == a.training["step"]


def test_building_the_feature_cache_does_not_change_the_training_run(shapes, tmp_path):
    # the same run, once building a fresh cache and once reusing it, trains the same weights
    run(shapes, tmp_path / "fresh", epochs=1, cache_dir=str(tmp_path / "new-cache"))
    run(shapes, tmp_path / "reused", epochs=1, cache_dir=str(tmp_path / "new-cache"))
    a, b = weights(tmp_path / "fresh" / "last.pt"), weights(tmp_path / "reused" / "last.pt")
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("device", DEVICES)
def test_self_critical_phase_raises_the_reward(shapes, tmp_path, device):
    run(shapes, tmp_path / "xe", epochs=2, device=device)
    result = run(shapes, tmp_path / "scst", epochs=3, objective="scst", scst_samples=4, lr=1e-3, batch_size=12,
                 label_smoothing=0.0, lr_schedule="constant", init_from=str(tmp_path / "xe" / "last.pt"),
                 device=device)
    rewards = [row["train_reward"] for row in result["history"]]
    assert rewards[-1] > rewards[0]
    assert load_checkpoint(tmp_path / "scst" / "last.pt").training["config"]["train"]["objective"] == "scst"
    with pytest.raises(TrainingError, match="set train.init_from"):
        run(shapes, tmp_path / "cold", epochs=1, objective="scst")


def test_a_full_disk_while_saving_a_checkpoint_is_one_line(shapes, tmp_path, monkeypatch, capsys):
    import captioner.fileio as fileio
    from test_fileio import FullDisk

    fdopen = os.fdopen

    def checkpoints_fail(fd, mode="r", **kwargs):
        handle = fdopen(fd, mode, **kwargs)
        return FullDisk(handle, 1000) if "b" in mode else handle  # checkpoints are the binary writes

    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(settings(shapes, tmp_path / "run", epochs=1)))
    monkeypatch.setattr(fileio.os, "fdopen", checkpoints_fail)
    assert main(["train", "--config", str(config)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[-1].startswith(f"captioner train: error: cannot write {tmp_path / 'run'}/")
    assert err[-1].endswith(".pt: disk full (no space left on device)")
    assert not any(p.name.endswith(".tmp") for p in (tmp_path / "run").iterdir())


# -- the pieces of a step: schedules and gradient clipping -----------------------------------------------------
def schedule(steps_per_epoch=3, **train):
    from captioner.training.run import _schedule

    config = config_from_dict(settings((Path("/data"), Path("/data/d.json")), "/out", **train))
    return _schedule(config, steps_per_epoch)


def test_warm_up_then_constant():
    factor = schedule(lr_schedule="constant", warmup_steps=4)
    assert [factor(s) for s in range(7)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0, 1.0]


def test_step_schedule_multiplies_by_gamma_every_step_epochs():
    factor = schedule(steps_per_epoch=3, lr_schedule="step", step_epochs=2, step_gamma=0.1, warmup_steps=0)
    # epochs 0-1 (steps 0-5) at 1, epochs 2-3 at 0.1, epochs 4-5 at 0.01
    assert [factor(s) for s in (0, 5, 6, 11, 12, 17)] == pytest.approx([1, 1, 0.1, 0.1, 0.01, 0.01], abs=1e-15)


def test_cosine_after_warm_up_goes_from_one_to_zero():
    factor = schedule(steps_per_epoch=5, epochs=2, lr_schedule="cosine", warmup_steps=2)
    # 10 steps in all: 2 of warm-up, then half a cosine over the remaining 8
    assert [factor(s) for s in (0, 1, 2, 4, 6, 8, 10)] == pytest.approx(
        [0.5, 1.0, 1.0, 0.5 * (1 + np.cos(np.pi / 4)), 0.5, 0.5 * (1 + np.cos(3 * np.pi / 4)), 0.0], abs=1e-12)


@pytest.mark.parametrize("clip, expected", [(0.0, [-3.0, -4.0]), (1.0, [-0.6, -0.8]), (10.0, [-3.0, -4.0])])
def test_gradient_clipping_scales_the_gradient_to_the_maximum_norm(clip, expected):
    from captioner.training.loop import training_step
    from captioner.training.state import Progress

    weight = torch.nn.Parameter(torch.zeros(2))
    optimizer = torch.optim.SGD([weight], lr=1.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    progress = Progress()
    # the gradient (3, 4) has norm 5: clipped to norm 1 it is (0.6, 0.8); a limit of 10 leaves it
    training_step((weight * torch.tensor([3.0, 4.0])).sum(), optimizer, scheduler, progress, grad_clip=clip,
                  device=torch.device("cpu"))
    # (torch divides by the norm + 1e-6: a relative 2e-7 short, plus float32 rounding of values <= 4)
    assert weight.detach().tolist() == pytest.approx(expected, abs=1e-6)
    assert (progress.step, progress.step_in_epoch) == (1, 1)


# -- bad records: reported in data_problems.txt, or a stop with data.strict --------------------------------------
@pytest.fixture
def shapes_with_a_ghost(shapes, tmp_path):
    """The shapes dataset plus a record whose image does not exist."""
    root, dataset = shapes
    data = json.loads(dataset.read_text())
    data["images"].append({"imgid": 999, "filepath": "", "filename": "ghost.png", "split": "train",
                           "sentences": [{"raw": "a ghost", "tokens": ["a", "ghost"], "imgid": 999, "sentid": 9999}]})
    path = tmp_path / "with_ghost.json"
    path.write_text(json.dumps(data))
    return root, path


def test_bad_records_are_written_to_data_problems_and_skipped(shapes_with_a_ghost, tmp_path):
    result = train(config_from_dict(settings(shapes_with_a_ghost, tmp_path / "run", epochs=1)))
    problems = (tmp_path / "run" / "data_problems.txt").read_text().splitlines()
    assert len(problems) == 1 and "ghost.png" in problems[0], problems
    assert result["history"]  # the run went on without it
    assert "ghost" not in load_checkpoint(tmp_path / "run" / "last.pt").vocab["itos"]


def test_strict_data_stops_at_the_first_bad_record(shapes_with_a_ghost, tmp_path):
    config = settings(shapes_with_a_ghost, tmp_path / "strict", epochs=1)
    config["data"]["strict"] = True
    with pytest.raises(TrainingError, match=r"1 bad records in the data \(data.strict is on\); first: .*ghost.png"):
        train(config_from_dict(config))
    assert not (tmp_path / "strict" / "last.pt").exists()


def test_feature_views_train_on_every_view(shapes, tmp_path, monkeypatch):
    import captioner.training.run as run_module
    from captioner.training.batches import CachedPairs

    served = []

    class Recording(CachedPairs):
        def __getitem__(self, index):
            features, ids = super().__getitem__(index)
            row = self.pairs[index][0]
            served.append([v for v in range(self.views)
                           if np.array_equal(self.features[row, v].astype(np.float32), features.numpy())])
            return features, ids

    monkeypatch.setattr(run_module, "CachedPairs", Recording)
    run(shapes, tmp_path / "views", epochs=1, feature_views=2, cache_dir=str(tmp_path / "cache"))
    (cache,) = (p for p in (tmp_path / "cache").iterdir() if p.is_dir())  # beside it: the build lock
    assert json.loads((cache / "index.json").read_text())["views"] == 2
    assert np.load(cache / "features.npy", mmap_mode="r").shape[1] == 2
    # every sample is one of its image's two (different) views, and both are used: the view is
    # a seeded fair draw per sample, so with 72 samples fewer than 30% of either is out of reach
    assert served and all(len(views) == 1 for views in served)
    counts = np.bincount([views[0] for views in served], minlength=2)
    assert counts.min() > 0.3 * len(served), counts


def test_a_training_image_that_became_unreadable_stops_in_one_line_naming_it(tmp_path):
    """Fine-tuning reads the images every epoch: one that was readable when the run started
    but is not now is a user's problem, said in one line, also from a DataLoader worker
    (which sends an error back as its traceback); it was a RuntimeError with a traceback."""
    from PIL import Image
    from torch.utils.data import DataLoader

    from captioner.data.preprocess import Preprocessing
    from captioner.errors import UserError
    from captioner.training.batches import ImagePairs, TrainingImageError, collate

    Image.new("RGB", (8, 8), "red").save(tmp_path / "good.png")
    (tmp_path / "broken.png").write_bytes(b"not a png any more")
    pairs = [(0, [1, 5, 2], 0), (1, [1, 6, 2], 1)]
    dataset = ImagePairs(pairs, [str(tmp_path / "good.png"), str(tmp_path / "broken.png")],
                         Preprocessing(resize_size=8, crop_size=8), seed=0)
    assert dataset[0][0].shape == (3, 8, 8)
    with pytest.raises(TrainingImageError) as info:
        dataset[1]
    message = str(info.value)
    assert isinstance(info.value, UserError) and "\n" not in message
    assert message.startswith(f"{tmp_path / 'broken.png'}: ") and message.endswith("continue with --resume")
    with pytest.raises(TrainingImageError) as info:
        list(DataLoader(dataset, batch_sampler=[[0], [1]], collate_fn=collate, num_workers=1))
    assert str(info.value) == message
