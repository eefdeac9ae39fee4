"""Saying less when the decoder is unsure (``DecodingSettings.unsure_below``): a guided caption
with nothing forced and a low log-probability per word is redone in at most SAY_LESS_WORDS
words, naming the guide's surest concept when it reaches ``unsure_threshold``."""

import json
import math

import pytest

from captioner import Captioner
from captioner.cli import main
from captioner.decoding import DecodingError, DecodingSettings
from captioner.decoding.settings import SAY_LESS_WORDS
from helpers import DEVICES


@pytest.fixture(scope="module", params=DEVICES)
def tiny(tiny_ckpt, request):
    return Captioner.from_checkpoint(tiny_ckpt, device=request.param)


@pytest.fixture(scope="module")
def coffee(examples_dir):
    return str(examples_dir / "coffee.jpg")


def per_word(caption) -> float:
    return caption.log_prob / (len(caption.tokens) + 1)


def test_an_unsure_caption_names_the_surest_concept_in_few_words(tiny, coffee):
    # The classifier is 0.94 sure of the espresso (measured): below a main threshold of 0.99, above 0.5.
    # Every caption's log-probability per word is below 0, so with unsure_below=0 the decoder is unsure.
    settings = tiny.settings(guide="imagenet", guide_threshold=0.99, max_length=12)
    (plain,) = tiny.caption(coffee, settings=settings)
    assert plain.forced == [] and not plain.unsure
    (short,) = tiny.caption(coffee, settings=settings, unsure_below=0.0, unsure_threshold=0.5)
    assert short.unsure and short.to_dict()["unsure"] is True
    assert [f.source for f in short.forced] == ["imagenet"] and 0.5 <= short.forced[0].probability < 0.99
    assert "coffee" in short.text.split() and len(short.text.split()) <= SAY_LESS_WORDS


def test_a_sure_enough_decoder_keeps_its_caption(tiny, coffee):
    settings = tiny.settings(guide="imagenet", guide_threshold=0.99, max_length=12)
    (plain,) = tiny.caption(coffee, settings=settings)
    bar = per_word(plain.captions[0]) - 1e-3  # just below its own log-probability per word
    (kept,) = tiny.caption(coffee, settings=settings, unsure_below=bar, unsure_threshold=0.5)
    assert not kept.unsure and kept.to_dict() == plain.to_dict()
    (unsure,) = tiny.caption(coffee, settings=settings, unsure_below=bar + 2e-3, unsure_threshold=0.5)
    assert unsure.unsure


def test_a_forced_concept_means_the_guide_was_sure(tiny, coffee):
    settings = tiny.settings(guide="imagenet", guide_threshold=0.5)
    (plain,) = tiny.caption(coffee, settings=settings)
    (same,) = tiny.caption(coffee, settings=settings, unsure_below=0.0)
    assert plain.forced and not same.unsure and same.to_dict() == plain.to_dict()


def test_with_no_likely_concept_the_caption_is_only_shorter(tiny, coffee):
    settings = tiny.settings(guide="imagenet", guide_threshold=0.99, max_length=12)
    (short,) = tiny.caption(coffee, settings=settings, unsure_below=0.0, unsure_threshold=1.0)
    (unguided,) = tiny.caption(coffee, settings=settings, guide="none", max_length=SAY_LESS_WORDS)
    assert short.unsure and short.forced == [] and short.text == unguided.text


def test_unguided_captions_are_never_redone(tiny, coffee):
    (plain,) = tiny.caption(coffee, guide="none")
    (same,) = tiny.caption(coffee, guide="none", unsure_below=0.0)
    assert not same.unsure and same.to_dict() == plain.to_dict()


def test_settings_check_the_rule():
    assert DecodingSettings(unsure_below=-math.inf).unsure_below is None  # "off"
    with pytest.raises(DecodingError, match="unsure_below is a log-probability per word, at most 0"):
        DecodingSettings(unsure_below=0.5)
    with pytest.raises(DecodingError, match=r"unsure_threshold must be in \[0, 1\]"):
        DecodingSettings(unsure_threshold=1.5)


@pytest.mark.parametrize("args, message", [
    (["--unsure-below", "0.5"], "--unsure-below is a log-probability per word, at most 0, got 0.5"),
    (["--unsure-threshold", "2"], r"--unsure-threshold must be in [0, 1], got 2.0"),
])
def test_bad_values_are_one_line_errors(tiny_ckpt, coffee, capsys, args, message):
    assert main(["caption", coffee, "--checkpoint", str(tiny_ckpt), *args]) == 2
    assert message in capsys.readouterr().err


def test_a_value_that_is_not_a_number_is_a_usage_error(tiny_ckpt, coffee, capsys):
    with pytest.raises(SystemExit) as stop:
        main(["caption", coffee, "--checkpoint", str(tiny_ckpt), "--unsure-below", "often"])
    assert stop.value.code == 2
    assert "argument --unsure-below: 'often' is not a number or 'off'" in capsys.readouterr().err


def test_the_cli_says_less_and_off_turns_it_off(tiny_ckpt, coffee, capsys):
    base = ["caption", coffee, "--checkpoint", str(tiny_ckpt), "--guide", "imagenet", "--guide-threshold", "0.99",
            "--jsonl", "-"]
    assert main([*base, "--unsure-below", "0", "--unsure-threshold", "0.5"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["unsure"] is True and "coffee" in record["captions"][0]["caption"].split()
    assert main([*base, "--unsure-below", "off"]) == 0
    assert "unsure" not in json.loads(capsys.readouterr().out)
