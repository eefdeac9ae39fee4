import os
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, os.path.dirname(__file__))

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"

torch.set_num_threads(min(2, torch.get_num_threads()))


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
