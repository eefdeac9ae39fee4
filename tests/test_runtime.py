"""The allocator tuning: applied once on Linux with glibc, switched off by CAPTIONER_MALLOC=default."""

import os
import subprocess
import sys

from helpers import HANG_GUARD_S

SCRIPT = "from captioner.runtime import tune_allocator as t; print(t(), t())"


def _run(**env) -> str:
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=HANG_GUARD_S)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def _glibc() -> bool:
    try:
        return sys.platform.startswith("linux") and bool(os.confstr("CS_GNU_LIBC_VERSION"))
    except (ValueError, OSError):
        return False


def test_tuned_where_there_is_glibc_and_the_answer_is_remembered():
    assert _run(CAPTIONER_MALLOC="") == ("True True" if _glibc() else "False False")


def test_switched_off_by_the_environment():
    assert _run(CAPTIONER_MALLOC="default") == "False False"


def test_resolve_device_known_answers(monkeypatch):
    import pytest
    import torch

    from captioner.errors import ArgumentError
    from captioner.runtime import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device(None).type == "cpu" and resolve_device("auto").type == "cpu"
    with pytest.raises(ArgumentError, match="--device cuda was asked for.*use --device cpu"):
        resolve_device("cuda")
    with pytest.raises(ArgumentError, match="unknown --device"):
        resolve_device("gpu0")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert resolve_device("auto") == torch.device("cuda") and resolve_device("cuda:0") == torch.device("cuda:0")
    with pytest.raises(ArgumentError, match="sees 1 CUDA"):
        resolve_device("cuda:1")


def test_every_subcommand_but_checkpoint_takes_device(monkeypatch, tmp_path):
    from captioner.cli import SUBCOMMANDS, build_parser

    def commands(parser, prefix=()):
        """Every leaf command (``("attack", "caption")``, ...) and whether it has ``--device``."""
        nested = [a for a in parser._actions if a.choices and hasattr(a.choices, "items") and a.dest != "help"]
        if not nested:
            yield prefix, any("--device" in a.option_strings for a in parser._actions)
        for action in nested:
            for name, sub in action.choices.items():
                yield from commands(sub, prefix + (name,))

    leaves = dict(commands(build_parser()))
    assert {c[0] for c in leaves} == {m.__name__.rsplit(".", 1)[1] for m in SUBCOMMANDS}
    assert all(has for c, has in leaves.items() if c[0] != "checkpoint"), leaves

    import captioner.training.run as training

    seen = {}
    monkeypatch.setattr(training, "train", lambda config, resume: seen.setdefault("device", config.train.device)
                        and {"history": []})
    from captioner.cli import main

    config = os.path.join(os.path.dirname(__file__), "..", "configs", "offline.yaml")
    assert main(["train", "--config", config, "--device", "cpu"]) == 0
    assert seen["device"] == "cpu"
