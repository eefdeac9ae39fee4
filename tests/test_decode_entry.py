"""The one decode entry and the one home of the decoding methods' rules: guided decoding is one
call from features, every command and the API follow the same table of methods, the user's
include constraints are parsed once, and the JSON record belongs to the result."""

import json

import pytest

from captioner import Captioner
from captioner.api import Caption, CaptionResult
from captioner.cli import main
from captioner.config import ConfigError, load_config
from captioner.data.images import load_image
from captioner.data.preprocess import preprocess
from captioner.decoding import METHODS, DecodingError, DecodingSettings, methods
from captioner.errors import UserError
from captioner.guidance import Forced
from helpers import DEVICES


@pytest.fixture(scope="module", params=DEVICES)
def tiny(tiny_ckpt, request):
    return Captioner.from_checkpoint(tiny_ckpt, device=request.param)


def test_guided_decoding_is_one_call_from_features(tiny, examples_dir):
    """Decoding features with guided settings forces the guide's words, exactly as captioning the
    file does (the real Lite0 classifier is sure of the espresso: 0.94 when measured)."""
    path = examples_dir / "coffee.jpg"
    settings = tiny.settings(method="beam", guide="imagenet", guide_threshold=0.5)
    (from_file,) = tiny.caption(str(path), settings=settings)
    pixels = preprocess(load_image(path), tiny.preprocessing)[None]
    (from_features,) = tiny.decode(tiny.encode(pixels), settings)
    assert [f.source for f in from_features.forced] == ["imagenet"]
    assert from_features.forced[0].words[0] == "coffee" and "coffee" in from_features.text.split()
    assert from_features.to_dict() == {**from_file.to_dict(), "path": ""}
    (unguided,) = tiny.decode(tiny.encode(pixels), settings, guide="none")
    assert unguided.forced == []


def test_the_method_table_answers_every_rule():
    assert methods() == tuple(METHODS) == ("beam", "greedy", "sample")
    assert methods(constrained=True) == methods(deterministic=True) == ("beam", "greedy")
    assert methods(several=True) == ("beam", "sample")
    with pytest.raises(DecodingError, match="^guide imagenet needs beam or greedy decoding, not sample$"):
        DecodingSettings(method="sample", guide="imagenet")
    with pytest.raises(DecodingError, match="greedy decoding gives one caption per image"):
        DecodingSettings(method="greedy", num_captions=2)
    guided = DecodingSettings(guide="imagenet")
    assert guided.with_options(method="sample").guide == "none"  # a default guide applies where it can
    assert guided.with_options(method="greedy").guide == "imagenet"
    with pytest.raises(DecodingError, match="not sample"):
        guided.with_options(method="sample", guide="imagenet")  # asked for together: refused


def test_the_api_and_the_cli_sample_alike(tiny, tiny_ckpt, examples_dir, capsys):
    path = str(examples_dir / "cat.jpg")
    guided = tiny.settings(guide="imagenet")
    (result,) = tiny.caption(path, settings=guided, method="sample")
    assert result.forced == [] and result.text
    with pytest.raises(DecodingError, match="not sample"):
        tiny.caption(path, method="sample", guide="imagenet")
    code = main(["caption", path, "--checkpoint", str(tiny_ckpt), "--method", "sample", "--guide", "imagenet"])
    err = capsys.readouterr().err
    assert code == 2 and "guide imagenet needs beam or greedy decoding, not sample" in err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("argv, message", [
    (["evaluate", "--method", "sample"], "argument --method: 'sample' is not one of beam, greedy"),
    (["evaluate", "--method", ","], "argument --method: ',' names nothing"),
    (["evaluate", "--guide", ","], "argument --guide: ',' names nothing"),
    (["evaluate", "--baseline", "nn,best"], "argument --baseline: 'best' is not one of nn, frequent"),
    (["attack", "caption", "x.png", "--decode", "sample"], "argument --decode: invalid choice: 'sample'"),
    (["checkpoint", "export", "a.pt", "b.pt", "--method", "sample"], "argument --method: invalid choice: 'sample'"),
])
def test_every_command_takes_its_methods_from_the_table(argv, message, capsys):
    with pytest.raises(SystemExit) as stop:
        main(argv)
    assert stop.value.code == 2 and message in capsys.readouterr().err


def test_the_config_takes_its_validation_methods_from_the_table():
    with pytest.raises(ConfigError, match="train.val_method: 'sample' is not one of beam, greedy"):
        load_config(None, ["train.val_method=sample"])


def test_an_include_string_is_one_constraint_and_any_iterable_works(tiny, examples_dir):
    path = str(examples_dir / "cat.jpg")
    (as_string,) = tiny.caption(path, include="dog", guide="none")
    (as_list,) = tiny.caption(path, include=["dog"], guide="none")
    (as_generator,) = tiny.caption(path, include=(w for w in ["dog"]), guide="none")
    assert as_string.text == as_list.text == as_generator.text and "dog" in as_list.text.split()
    assert [f.words for f in as_string.forced] == [f.words for f in as_generator.forced] == [("dog",)]
    with pytest.raises(UserError, match="not a string"):
        tiny.caption(path, include=[3], guide="none")


def test_a_refused_include_leaves_the_captioner_as_it_was(tiny_ckpt, examples_dir):
    used, fresh = Captioner.from_checkpoint(tiny_ckpt), Captioner.from_checkpoint(tiny_ckpt)
    path = str(examples_dir / "cat.jpg")
    for bad in (["<unk>"], ["cat|<end>"], ["\x1b[31mred"], ["a\u202eb"], [" ".join(["cat"] * 9)]):
        with pytest.raises(UserError):
            used.caption(path, include=bad, guide="none")
    for include in (["kangaroo"], ["elephant", "grass"]):
        assert (used.caption(path, include=include, guide="none")[0].to_dict()
                == fresh.caption(path, include=include, guide="none")[0].to_dict())


def test_the_json_record_belongs_to_the_result():
    forced = [Forced(("cup", "mug"), "include"), Forced(("coffee",), "imagenet", 0.93871, (("espresso", 0.91234),))]
    result = CaptionResult("a.jpg", [Caption("a cup", -1.234567, -0.61728, unmet=1),
                                     Caption("a cup of coffee", -2.0, -1.0, truncated=True)], forced=forced)
    assert result.to_dict() == {
        "path": "a.jpg",
        "captions": [{"caption": "a cup", "log_prob": -1.2346, "score": -0.6173, "unmet": 1},
                     {"caption": "a cup of coffee", "log_prob": -2.0, "score": -1.0, "truncated": True}],
        "forced": [{"words": "cup|mug", "source": "include"},
                   {"words": "coffee", "source": "imagenet", "probability": 0.9387,
                    "classes": [{"label": "espresso", "probability": 0.9123}]}],
        "note": "no caption within the maximum length meets 1 of the forced words",
    }
    assert CaptionResult("b.jpg", error="b.jpg: not an image").to_dict() == {"path": "b.jpg",
                                                                            "error": "b.jpg: not an image"}


def test_an_unmet_constraint_is_said_on_stderr(tiny_ckpt, examples_dir, capsys):
    paths = [str(examples_dir / n) for n in ("rocket.jpg", "cat.jpg")]
    code = main(["caption", *paths, "--checkpoint", str(tiny_ckpt), "--guide", "none", "--max-length", "1",
                 "--include", "a cup of"])
    out, err = capsys.readouterr()
    assert code == 0 and len(out.strip().splitlines()) == 2
    notes = err.strip().splitlines()
    assert notes == [f"note: {p}: the caption misses 1 of the forced words (a cup of): no caption of at most 1 "
                     "words has them all" for p in paths]
    code = main(["caption", paths[0], "--checkpoint", str(tiny_ckpt), "--guide", "none", "--include", "red",
                 "--jsonl", "-"])
    out, err = capsys.readouterr()
    assert code == 0 and "note" not in err and "unmet" not in json.loads(out)["captions"][0]


@pytest.mark.parametrize("include, message", [
    ([" ".join(["red cat"] * 700)], "has a phrase of 1400 words; at most 8"),
    (["a a b c d", "a b c d e", "b c d e f", "c d e f g", "d e f g h"], "cover 25 words together; at most"),
])
def test_includes_that_would_cost_too_much_are_refused_before_any_image_is_read(tiny, include, message):
    with pytest.raises(UserError, match=message):
        next(tiny.caption_files(["/nonexistent/photo.jpg"], include=include, guide="none"))


@pytest.mark.parametrize("option, value", [("--beam-size", "100000"), ("--num-captions", "100000"),
                                           ("--max-length", "100000")])
def test_a_request_too_large_is_one_line(tiny_ckpt, examples_dir, capsys, option, value):
    code = main(["caption", str(examples_dir / "cat.jpg"), "--checkpoint", str(tiny_ckpt), option, value])
    err = capsys.readouterr().err
    assert code == 2 and f"{option} must be at least 1 and at most" in err and len(err.strip().splitlines()) == 1
