"""The training step's guards and the RNG states a resume restores (CUDA paths via monkeypatching)."""

import pytest
import torch

from captioner.checkpoint import Checkpoint
from captioner.training import run as training_run
from captioner.training.distributed import Distributed
from captioner.training.loop import NonFiniteLoss, Progress, optimizer_step, rng_states, set_rng_states

CPU, CUDA = torch.device("cpu"), torch.device("cuda")


class FakeCuda:
    """Two GPUs whose generator states are recorded instead of set."""

    def __init__(self, monkeypatch, devices=2):
        self.states = [torch.tensor([10 + i], dtype=torch.uint8) for i in range(devices)]
        self.set_calls = []
        monkeypatch.setattr(torch.cuda, "device_count", lambda: devices)
        monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: [s.clone() for s in self.states])
        monkeypatch.setattr(torch.cuda, "set_rng_state", lambda state, device: self.set_calls.append((device, state)))
        monkeypatch.setattr(torch.cuda, "set_rng_state_all", self._refuse)

    @staticmethod
    def _refuse(*args):
        raise AssertionError("set_rng_state_all would fail for states of more GPUs than are present")


def test_rng_states_include_every_gpu_only_when_training_on_cuda(monkeypatch):
    cuda = FakeCuda(monkeypatch)
    on_gpu = rng_states(CUDA)
    assert [int(s) for s in on_gpu["cuda"]] == [10, 11]
    assert torch.equal(on_gpu["cpu"], torch.get_rng_state())
    assert rng_states(CPU)["cuda"] == []
    assert cuda.set_calls == []


def test_restoring_sets_the_cpu_and_each_present_gpu(monkeypatch):
    cuda = FakeCuda(monkeypatch)
    torch.manual_seed(3)
    saved = rng_states(CUDA)
    expected = torch.rand(4)
    torch.manual_seed(4)
    gpu_states = [torch.tensor([7], dtype=torch.uint8), torch.tensor([8], dtype=torch.uint8),
                  torch.tensor([9], dtype=torch.uint8)]  # saved on three GPUs, two here
    set_rng_states({"cpu": saved["cpu"], "cuda": gpu_states}, CUDA)
    assert torch.equal(torch.rand(4), expected)
    assert [(device, int(state)) for device, state in cuda.set_calls] == [(0, 7), (1, 8)]
    cuda.set_calls.clear()
    set_rng_states({"cpu": saved["cpu"], "cuda": gpu_states}, CPU)  # a CPU run leaves the GPUs alone
    assert cuda.set_calls == []


def test_resume_restores_the_saved_gpu_states_on_a_cuda_run(monkeypatch):
    cuda = FakeCuda(monkeypatch)
    parameter = torch.nn.Parameter(torch.zeros(2))
    optimizer = torch.optim.AdamW([parameter], lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    before_step = rng_states(CUDA)
    train_state = {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                   "rng_cpu": before_step["cpu"], "rng_cuda": before_step["cuda"],
                   "progress": {"epoch": 1, "step": 5, "step_in_epoch": 1}, "history": [], "best": {}}
    checkpoint = Checkpoint(encoder_spec={}, encoder_state=None, decoder_config={}, decoder_state={},
                            vocab={"itos": []}, train_state=train_state)
    progress, _, _ = training_run._restore(checkpoint, optimizer, scheduler, Distributed(device=CUDA))
    assert progress == Progress(epoch=1, step=5, step_in_epoch=1)
    assert [(device, int(state)) for device, state in cuda.set_calls] == [(0, 10), (1, 11)]


def test_resume_gives_each_process_its_own_rng_states_or_with_another_world_process_0s(capsys):
    parameter = torch.nn.Parameter(torch.zeros(2))
    optimizer = torch.optim.AdamW([parameter], lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    states = [{"cpu": torch.Generator().manual_seed(seed).get_state(), "cuda": []} for seed in (1, 2)]
    train_state = {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                   "rng_cpu": states[0]["cpu"], "rng_cuda": [], "rng_ranks": states,
                   "progress": {"epoch": 1, "step": 4, "step_in_epoch": 0}, "history": [], "best": {}}
    checkpoint = Checkpoint(encoder_spec={}, encoder_state=None, decoder_config={}, decoder_state={},
                            vocab={"itos": []}, train_state=train_state)
    progress, _, _ = training_run._restore(checkpoint, optimizer, scheduler, Distributed(rank=1, world=2))
    assert torch.equal(torch.get_rng_state(), states[1]["cpu"]) and progress.step == 4
    assert capsys.readouterr().err == ""
    training_run._restore(checkpoint, optimizer, scheduler, Distributed(rank=0, world=3))
    assert torch.equal(torch.get_rng_state(), states[0]["cpu"])
    assert capsys.readouterr().err.startswith("--resume: last.pt holds the random-number states of 2 process(es) "
                                              "and this run has 3: every process continues from process 0's")


def test_a_step_gathers_every_process_rng_states_for_the_next_step_once_it_counts():
    """Multi-process runs: after its backward pass (all random numbers drawn) a step gathers
    every process's states, the states before the next step, and keeps them once it has
    counted; a step interrupted in the optimizer leaves those from before it."""
    parameter = torch.nn.Parameter(torch.ones(3))
    optimizer = torch.optim.SGD([parameter], lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    progress = Progress(rng_of_ranks=["before"], gather_rng=lambda: [torch.get_rng_state(), "process 1"])
    real_step = optimizer.step

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    optimizer.step = interrupted
    torch.manual_seed(0)
    with pytest.raises(KeyboardInterrupt):
        optimizer_step(torch.nn.functional.dropout(parameter, 0.5).sum(), optimizer, scheduler, progress, 0.0)
    assert progress.rng_of_ranks == ["before"] and progress.step == 0
    optimizer.step = real_step
    loss = torch.nn.functional.dropout(parameter, 0.5).sum()  # the step's random numbers
    drawn = torch.get_rng_state()
    optimizer_step(loss, optimizer, scheduler, progress, 0.0)
    assert progress.step == 1 and torch.equal(progress.rng_of_ranks[0], drawn)
    assert progress.rng_of_ranks[1] == "process 1"


def test_a_non_finite_loss_stops_before_the_weights_change():
    parameter = torch.nn.Parameter(torch.ones(3))
    optimizer = torch.optim.SGD([parameter], lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    progress = Progress(step=4)
    optimizer_step((parameter * 2).sum(), optimizer, scheduler, progress, grad_clip=0.0)
    assert torch.allclose(parameter.detach(), torch.full((3,), 0.8)) and progress.step == 5
    for bad in (float("nan"), float("inf")):
        with pytest.raises(NonFiniteLoss, match=f"became {bad} at step 6"):
            optimizer_step((parameter * bad).sum(), optimizer, scheduler, progress, grad_clip=0.0)
    assert torch.allclose(parameter.detach(), torch.full((3,), 0.8)) and progress.step == 5
