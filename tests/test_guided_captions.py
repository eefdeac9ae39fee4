"""Guided captions through the API and `captioner caption`: forced words appear, records say where they
came from, bad constraints and impossible guidance get one line each."""

import json

import pytest
import torch

from captioner import Captioner
from captioner.checkpoint import make_checkpoint, save_checkpoint
from captioner.cli import main
from captioner.data.vocab import Vocabulary
from captioner.decoding.articles import indefinite_article
from captioner.models import CaptionModel, DecoderConfig, EncoderSpec, LSTMDecoder, build_encoder
from helpers import CAPTIONS, DEVICES


@pytest.fixture(scope="module", params=DEVICES)
def tiny(tiny_ckpt, request):
    return Captioner.from_checkpoint(tiny_ckpt, device=request.param)


def test_included_words_appear_in_every_caption_also_words_the_model_never_saw(tiny, examples_dir):
    paths = [str(examples_dir / n) for n in ("cat.jpg", "coffee.jpg")]
    assert "kangaroo" not in tiny.vocab
    for include in (["dog"], ["kangaroo"], ["table|grass", "red"]):
        for result in tiny.caption(paths, include=include, guide="none", beam_size=3):
            words = result.text.split()
            for constraint in include:
                assert set(constraint.split("|")) & set(words), (include, result.text)
            assert [f.source for f in result.forced] == ["include"] * len(include)
            assert result.captions[0].unmet == 0
    # the new word is written with the right article, wherever an article stands before a word
    for word in ("elephant", "owl", "umbrella", "kangaroo"):
        (result,) = tiny.caption(paths[0], include=[word], guide="none", beam_size=3)
        words = result.text.split()
        assert word in words
        assert all(article == indefinite_article(after) for article, after in zip(words, words[1:])
                   if article in ("a", "an") and after[:1].isalpha()), result.text


def test_guided_and_include_go_through_the_cli_json(tmp_path, tiny_ckpt, examples_dir, capsys):
    code = main(["caption", str(examples_dir / "coffee.jpg"), "--checkpoint", str(tiny_ckpt), "--guide", "imagenet",
                 "--guide-threshold", "0.5", "--include", "table", "--jsonl", "-"])
    record = json.loads(capsys.readouterr().out)
    assert code == 0
    assert record["forced"][0] == {"words": "table", "source": "include"}
    guided = record["forced"][1]
    # the real Lite0 classifier is sure of the espresso (0.94 when measured)
    assert guided["source"] == "imagenet" and guided["words"].split("|")[0] == "coffee"
    assert guided["probability"] >= 0.5 and guided["classes"][0]["label"] == "espresso"
    words = record["captions"][0]["caption"].split()
    assert "table" in words and "coffee" in words


@pytest.mark.parametrize("args, message", [
    (["--include", ""], "--include '' is empty"),
    (["--include", "123"], "'123' has no letters"),
    (["--include", "cat|"], "'' has no letters"),
    (["--guide-threshold", "1.5"], "--guide-threshold must be in [0, 1], got 1.5"),
    (["--guide-threshold", "nan"], "--guide-threshold must be a finite number"),
    (["--method", "sample", "--include", "dog"], "--include needs beam or greedy decoding, not sample"),
])
def test_bad_guidance_arguments_are_one_line_errors(tiny_ckpt, examples_dir, capsys, args, message):
    code = main(["caption", str(examples_dir / "cat.jpg"), "--checkpoint", str(tiny_ckpt), *args])
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err


def test_guide_imagenet_needs_a_trained_classifier(tmp_path, examples_dir, capsys):
    torch.manual_seed(0)
    vocab = Vocabulary.build(CAPTIONS)
    encoder = build_encoder(EncoderSpec(weights=None))  # random weights: its head knows nothing
    config = DecoderConfig(vocab_size=len(vocab), feature_dim=encoder.feature_dim, embed_dim=8, hidden_size=8,
                           dropout=0.0)
    model = CaptionModel(encoder, LSTMDecoder(config))
    path = tmp_path / "untrained.pt"
    save_checkpoint(make_checkpoint(encoder_spec=encoder.spec.to_dict(), decoder_config=config.to_dict(),
                                    decoder_state=model.decoder.state_dict(), vocab=vocab.to_dict(),
                                    encoder_state=model.encoder_state_to_save()), path)
    code = main(["caption", str(examples_dir / "cat.jpg"), "--checkpoint", str(path), "--guide", "imagenet"])
    err = capsys.readouterr().err
    assert code == 2 and "needs an encoder with a trained ImageNet classification head" in err
    assert len(err.strip().splitlines()) == 1
    # --include needs no classifier
    assert main(["caption", str(examples_dir / "cat.jpg"), "--checkpoint", str(path), "--include", "dog"]) == 0
    assert "dog" in capsys.readouterr().out.split()


def test_too_many_constraints_are_refused_before_any_work(tiny_ckpt, examples_dir, capsys):
    words = [f"--include={w}" for w in ("cat", "dog", "cup", "table", "grass", "red", "clock")]
    code = main(["caption", str(examples_dir / "cat.jpg"), "--checkpoint", str(tiny_ckpt), "--guide", "imagenet", *words])
    err = capsys.readouterr().err
    assert code == 2 and "7 --include constraints; at most 6 fit" in err and len(err.strip().splitlines()) == 1
