import os
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import settings

# Property tests draw the same examples on every run and machine (derandomize), have no
# per-example deadline (a loaded machine is slow, not wrong) and keep no example database
# between runs. HYPOTHESIS_PROFILE=explore draws new random examples for a local hunt.
settings.register_profile("ci", derandomize=True, deadline=None, database=None)
settings.register_profile("explore", deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

sys.path.insert(0, os.path.dirname(__file__))

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"

# One torch thread, here and in the processes the tests start, unless OMP_NUM_THREADS says otherwise.
# On a 2-core machine with another job on one core, two OpenMP threads wait on each other at every
# step (the README's `visualize class` test: 140 s on two threads, 14 s on one). With one core kept
# busy the whole suite took 4.5 minutes on one thread; idle, on two, 4.1.
os.environ.setdefault("OMP_NUM_THREADS", "1")
torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


@pytest.fixture(scope="session")
def examples_dir() -> Path:
    return EXAMPLES


@pytest.fixture(scope="session")
def lite0():
    from captioner.models import EncoderSpec, build_encoder

    return build_encoder(EncoderSpec())


@pytest.fixture(scope="session")
def tiny_ckpt(tmp_path_factory):
    from helpers import tiny_checkpoint

    return tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.pt")


@pytest.fixture(scope="session")
def fast_ckpt(tmp_path_factory):
    from helpers import fast_checkpoint

    return fast_checkpoint(tmp_path_factory.mktemp("ckpt") / "fast.pt")
