"""The bundled default model: it loads, captions the example photos, and the docs quote it truly."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

from captioner import Captioner
from captioner.api import default_checkpoint_path
from captioner.checkpoint import load_checkpoint
from helpers import DEVICES, HANG_GUARD_S

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module", params=DEVICES)
def default_model(request):
    return Captioner.from_checkpoint(device=request.param)


def test_bundled_checkpoint_is_small_documented_and_loads_on_the_cpu():
    path = default_checkpoint_path()
    assert path.is_file() and path.stat().st_size < 25 * 2**20
    checkpoint = load_checkpoint(path)
    assert checkpoint.train_state is None  # a release copy, not a training checkpoint
    assert checkpoint.encoder_spec["backbone"] == "efficientnet_lite0"
    licences = {source["licence"] for source in checkpoint.training["data"]["manifest"]["sources"].values()}
    assert {"GPL-2.0-or-later", "CC-BY-SA-4.0"} <= licences
    card = (ROOT / "checkpoints" / "README.md").read_text()
    for name in ("GPL-2.0-or-later", "CC BY-SA 4.0", "public domain", "captioner train --config configs/offline.yaml"):
        assert name in card, name
    # the card describes this file: its default decoding and its vocabulary
    card_says = {"method": "beam", "beam_size": 5, "length_penalty": 0.25, "max_length": 16, "guide": "imagenet",
                 "guide_threshold": 0.5, "unsure_below": -0.5, "unsure_threshold": 0.2}
    assert {k: checkpoint.decoding[k] for k in card_says} == card_says
    assert "beam size 5, length penalty 0.25, at most 16 words" in card
    assert "guided by the encoder's ImageNet classifier with threshold 0.5" in card
    assert "says less when unsure (log-probability per word below -0.5; concept threshold 0.2;" in card
    words = len(checkpoint.vocab["itos"]) - 4  # without <pad> <start> <end> <unk>
    assert f"{words} words" in card


def test_captions_an_example_photo_with_known_words(default_model, examples_dir):
    result = default_model.caption([examples_dir / "coffee.jpg"])[0]
    words = result.text.split()
    vocabulary = set(default_model.vocab.itos) - {"<pad>", "<start>", "<end>", "<unk>"}
    assert words and set(words) <= vocabulary
    assert {"coffee", "espresso", "cup"} & set(words), result.text


def _fenced_block_after(text: str, marker: str) -> str:
    start = text.index(marker)
    match = re.search(r"```\n(.*?)```", text[start:], re.S)
    return match.group(1)


def test_readme_demo_output_is_what_the_demo_prints(examples_dir):
    readme = (ROOT / "README.md").read_text()
    quoted = _fenced_block_after(readme, "`captioner caption examples/`, which prints:")
    done = subprocess.run([sys.executable, "-m", "captioner", "caption", str(examples_dir)], cwd=ROOT,
                          capture_output=True, text=True, timeout=HANG_GUARD_S)
    assert done.returncode == 0, done.stderr
    printed = done.stdout.replace(str(examples_dir) + "/", "examples/")
    assert printed == quoted


def test_guided_default_names_the_coffee_and_the_cat_and_leaves_the_astronaut_alone(default_model, examples_dir):
    """The classifier is sure of the espresso (0.94) and of a cat (0.93 over three cat classes), and of
    nothing in the astronaut photo (bobsled 0.16 at best): guidance forces coffee and cat, nothing for her."""
    paths = [examples_dir / name for name in ("coffee.jpg", "cat.jpg", "astronaut.jpg")]
    coffee, cat, astronaut = default_model.caption(paths)
    assert "coffee" in coffee.text.split() and [f.words[0] for f in coffee.forced] == ["coffee"]
    assert {"cat", "kitten", "kitty"} & set(cat.text.split()) and cat.forced[0].probability > 0.5
    assert astronaut.forced == []
    unguided = default_model.caption(paths[1], guide="none")[0]
    assert not {"cat", "kitten", "kitty"} & set(unguided.text.split())  # what guidance is for
