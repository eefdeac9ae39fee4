"""The training step (its guards, its order, a Ctrl-C anywhere in it) and the resumable state:
the RNG states a resume restores (CUDA paths via monkeypatching), old checkpoints' layouts."""

import sys
from pathlib import Path

import pytest
import torch

from captioner.training import loop, state
from captioner.distributed import Distributed
from captioner.training.loop import NonFiniteLoss, training_step
from captioner.training.state import Progress, TrainState, rng_states, set_rng_states

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


def _optimiser(parameter):
    optimizer = torch.optim.AdamW([parameter], lr=0.1)
    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)


def test_resume_restores_the_saved_gpu_states_on_a_cuda_run(monkeypatch):
    cuda = FakeCuda(monkeypatch)
    optimizer, scheduler = _optimiser(torch.nn.Parameter(torch.zeros(2)))
    before_step = rng_states(CUDA)
    saved = TrainState(optimizer.state_dict(), scheduler.state_dict(),
                       Progress(epoch=1, step=5, step_in_epoch=1, rng_ranks=[before_step]))
    progress = TrainState.from_dict(saved.to_dict()).restore(optimizer, scheduler, Distributed(device=CUDA))
    assert progress == Progress(epoch=1, step=5, step_in_epoch=1)
    assert [(device, int(state)) for device, state in cuda.set_calls] == [(0, 10), (1, 11)]


def test_resume_gives_each_process_its_own_rng_states_or_with_another_world_process_0s(capsys):
    optimizer, scheduler = _optimiser(torch.nn.Parameter(torch.zeros(2)))
    states = [{"cpu": torch.Generator().manual_seed(seed).get_state(), "cuda": []} for seed in (1, 2)]
    saved = TrainState(optimizer.state_dict(), scheduler.state_dict(), Progress(1, 4, 0, rng_ranks=states))
    progress = saved.restore(optimizer, scheduler, Distributed(rank=1, world=2))
    assert torch.equal(torch.get_rng_state(), states[1]["cpu"]) and progress.step == 4
    assert capsys.readouterr().err == ""
    saved.restore(optimizer, scheduler, Distributed(rank=0, world=3))
    assert torch.equal(torch.get_rng_state(), states[0]["cpu"])
    assert capsys.readouterr().err.startswith("--resume: last.pt holds the random-number states of 2 process(es) "
                                              "and this run has 3: every process continues from process 0's")


def test_the_record_writes_each_process_states_once_and_reads_the_older_layouts():
    optimizer, scheduler = _optimiser(torch.nn.Parameter(torch.zeros(2)))
    states = [{"cpu": torch.Generator().manual_seed(seed).get_state(), "cuda": []} for seed in (1, 2)]
    record = TrainState(optimizer.state_dict(), scheduler.state_dict(), Progress(1, 4, 0, rng_ranks=states),
                        history=[{"epoch": 1}], best={"score": 2.0})
    written = record.to_dict()
    assert set(written) == {"optimizer", "scheduler", "progress", "rng_ranks", "history", "best"}
    assert written["progress"] == {"epoch": 1, "step": 4, "step_in_epoch": 0} and written["rng_ranks"] is states
    # before this record: rank 0's states also in rng_cpu/rng_cuda; and before that, only there
    both = {**written, "rng_cpu": states[0]["cpu"], "rng_cuda": []}
    only_rank_0 = {k: v for k, v in both.items() if k != "rng_ranks"}
    assert TrainState.from_dict(both).to_dict().keys() == written.keys()
    read = TrainState.from_dict(only_rank_0)
    assert len(read.progress.rng_ranks) == 1 and torch.equal(read.progress.rng_ranks[0]["cpu"], states[0]["cpu"])
    assert read.progress == record.progress and read.history == [{"epoch": 1}] and read.best == {"score": 2.0}
    with pytest.raises(ValueError, match="train_state lacks scheduler, rng_ranks"):
        TrainState.from_dict({"optimizer": {}, "progress": {"epoch": 0, "step": 0, "step_in_epoch": 0}})


def test_a_step_counts_itself_with_every_process_rng_states_from_after_its_random_numbers():
    """After its backward pass (all random numbers drawn) a step gathers every process's
    states, the states before the next step, and keeps them with its count; a step
    interrupted in the optimizer leaves the count and states from before it."""
    parameter = torch.nn.Parameter(torch.ones(3))
    optimizer = torch.optim.SGD([parameter], lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    progress = Progress(rng_ranks=["before"])
    gathered = []

    def gather(states):
        gathered.append(states)
        return [states, "process 1"]

    real_step = optimizer.step

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    optimizer.step = interrupted
    torch.manual_seed(0)
    with pytest.raises(KeyboardInterrupt):
        training_step(torch.nn.functional.dropout(parameter, 0.5).sum(), optimizer, scheduler, progress,
                      grad_clip=0.0, device=CPU, gather=gather)
    assert progress.rng_ranks == ["before"] and progress.step == 0 and len(gathered) == 1
    optimizer.step = real_step
    loss = torch.nn.functional.dropout(parameter, 0.5).sum()  # the step's random numbers
    drawn = torch.get_rng_state()
    training_step(loss, optimizer, scheduler, progress, grad_clip=0.0, device=CPU, gather=gather)
    assert (progress.step, progress.step_in_epoch) == (1, 1) and torch.equal(progress.rng_ranks[0]["cpu"], drawn)
    assert progress.rng_ranks[1] == "process 1"


STEP_CODE = {str(Path(module.__file__)) for module in (loop, state)}


def _interrupt_at(opcode: int):
    """A tracer raising KeyboardInterrupt, as a Ctrl-C would, before the ``opcode``-th bytecode
    run in the step's own code (loop.py and state.py); ``count[0]``: how many ran."""
    count = [0]

    def local(frame, event, arg):
        if event == "opcode":
            count[0] += 1
            if count[0] == opcode:
                raise KeyboardInterrupt
        return local

    def trace(frame, event, arg):
        if frame.f_code.co_filename not in STEP_CODE:
            return None
        frame.f_trace_opcodes = True
        return local

    return trace, count


def test_a_ctrl_c_anywhere_in_a_step_leaves_the_count_and_the_rng_states_of_one_point():
    """Interrupted before each bytecode of the step in turn, ``progress`` (what last.pt saves)
    holds the count before the step with the states before it, or the count after it with
    the states after it: never one with the other (with the step counted and process 1's
    states from before it, a resumed run would give the next step that step's dropout masks)."""
    opcode, outcomes = 0, set()
    while True:
        opcode += 1
        parameter = torch.nn.Parameter(torch.ones(4))
        optimizer, scheduler = _optimiser(parameter)
        torch.manual_seed(opcode)
        before = [torch.get_rng_state(), "process 1 before"]
        progress = Progress(epoch=2, step=7, step_in_epoch=3, rng_ranks=[{"cpu": before[0]}, before[1]])
        loss = torch.nn.functional.dropout(parameter, 0.5).sum()
        after = [torch.get_rng_state(), "process 1 after"]
        trace, count = _interrupt_at(opcode)
        sys.settrace(trace)
        try:
            training_step(loss, optimizer, scheduler, progress, grad_clip=1.0, device=CPU,
                          gather=lambda states: [states, "process 1 after"])
            outcome = "finished"
        except KeyboardInterrupt:
            outcome = "interrupted"
        finally:
            sys.settrace(None)
        saved = [progress.rng_ranks[0]["cpu"], progress.rng_ranks[1]]
        point = {(7, 3): before, (8, 4): after}.get((progress.step, progress.step_in_epoch))
        assert point is not None and torch.equal(saved[0], point[0]) and saved[1] == point[1], opcode
        outcomes.add((outcome, progress.step))
        if count[0] < opcode:  # the step ran to its end before the opcode-th bytecode
            break
    # interrupted before the update of the count, and after it (on the way out of the step)
    assert outcomes == {("interrupted", 7), ("interrupted", 8), ("finished", 8)} and opcode > 50, opcode


def test_a_non_finite_loss_stops_before_the_weights_change():
    parameter = torch.nn.Parameter(torch.ones(3))
    optimizer = torch.optim.SGD([parameter], lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    progress = Progress(step=4)
    training_step((parameter * 2).sum(), optimizer, scheduler, progress, grad_clip=0.0, device=CPU)
    assert torch.allclose(parameter.detach(), torch.full((3,), 0.8)) and progress.step == 5
    for bad in (float("nan"), float("inf")):
        with pytest.raises(NonFiniteLoss, match=f"became {bad} at step 6"):
            training_step((parameter * bad).sum(), optimizer, scheduler, progress, grad_clip=0.0, device=CPU)
    assert torch.allclose(parameter.detach(), torch.full((3,), 0.8)) and progress.step == 5
