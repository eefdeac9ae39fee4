"""Process-group set-up: one GPU per process, and a one-line error when there are too few."""

import pytest
import torch
import yaml

import captioner.distributed as distributed
from captioner.cli import main
from captioner.errors import ArgumentError, UserError
from captioner.distributed import choose_device, setup


def gpus(monkeypatch, count):
    """Pretend PyTorch sees ``count`` CUDA GPUs."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: count > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)


def torchrun_env(monkeypatch, rank, world):
    for name, value in (("RANK", rank), ("LOCAL_RANK", rank), ("WORLD_SIZE", world), ("LOCAL_WORLD_SIZE", world)):
        monkeypatch.setenv(name, str(value))


@pytest.mark.parametrize("preference", ["auto", "cuda"])
def test_each_process_gets_a_gpu_of_its_own(monkeypatch, preference):
    gpus(monkeypatch, 2)
    assert choose_device(preference, 0, 2) == torch.device("cuda", 0)
    assert choose_device(preference, 1, 2) == torch.device("cuda", 1)


@pytest.mark.parametrize("local_rank", [0, 1])
def test_more_processes_than_gpus_fail_on_every_rank_saying_what_to_do(monkeypatch, local_rank):
    gpus(monkeypatch, 1)
    with pytest.raises(ArgumentError) as error:
        choose_device("auto", local_rank, 2)
    message = str(error.value)
    assert "2 processes" in message and "1 CUDA GPU" in message
    assert "--nproc_per_node=1" in message and "train.device=cpu" in message and "\n" not in message


def test_a_rank_beyond_the_gpus_fails_even_without_the_local_world_size(monkeypatch):
    gpus(monkeypatch, 1)
    with pytest.raises(ArgumentError, match="--nproc_per_node=1"):
        choose_device("cuda", 1)


@pytest.mark.parametrize("count", [0, 1])
def test_processes_on_the_cpu_need_no_gpu(monkeypatch, count):
    gpus(monkeypatch, count)
    assert choose_device("cpu", 1, 2) == torch.device("cpu")
    if count == 0:
        assert choose_device("auto", 1, 2) == torch.device("cpu")


def test_setup_refuses_before_joining_the_process_group(monkeypatch):
    gpus(monkeypatch, 1)
    torchrun_env(monkeypatch, rank=1, world=2)

    def must_not_run(*_, **__):
        raise AssertionError("reached the process group / GPU selection")

    monkeypatch.setattr(distributed.dist, "init_process_group", must_not_run)
    monkeypatch.setattr(torch.cuda, "set_device", must_not_run)
    with pytest.raises(UserError, match="--nproc_per_node=1"):
        setup("auto")


@pytest.mark.parametrize("count, backend", [(0, "gloo"), (2, "cpu:gloo,cuda:nccl")])
def test_the_process_group_carries_cpu_tensors_on_gpus_too(monkeypatch, count, backend):
    """The run's own collectives (the early-stopping flag, the RNG states) are on CPU tensors,
    which NCCL alone refuses ("No backend type associated with device type cpu"): on GPUs
    the group must pair NCCL with gloo. (NCCL itself needs GPUs, so here it is not started.)"""
    gpus(monkeypatch, count)
    torchrun_env(monkeypatch, rank=1, world=2)
    joined = []
    monkeypatch.setattr(distributed.dist, "is_initialized", lambda: False)
    monkeypatch.setattr(distributed.dist, "init_process_group", lambda backend: joined.append(backend))
    monkeypatch.setattr(torch.cuda, "set_device", lambda device: None)
    info = setup("auto")
    assert joined == [backend]
    assert info.device == (torch.device("cuda", 1) if count else torch.device("cpu"))


def test_setup_without_torchrun_is_rank_0_of_1(monkeypatch):
    gpus(monkeypatch, 0)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    info = setup("auto")
    assert (info.rank, info.world, info.device, info.is_main, info.enabled) == (0, 1, torch.device("cpu"), True, False)


def test_the_cli_reports_too_many_processes_in_one_line(monkeypatch, tmp_path, capsys):
    gpus(monkeypatch, 1)
    torchrun_env(monkeypatch, rank=0, world=2)
    monkeypatch.delenv("CAPTIONER_DEBUG", raising=False)
    config = {"data": {"name": "x", "format": "karpathy", "path": str(tmp_path / "none.json"),
                       "images": str(tmp_path)},
              "train": {"out_dir": str(tmp_path / "out")}}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    assert main(["train", "--config", str(tmp_path / "c.yaml")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("captioner train: error: torchrun started 2 processes"), err
