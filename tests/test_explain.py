"""`captioner explain`: the caption is `caption`'s, the words' numbers add up, the beam the
observer shows is the search's, the LSTM's gates are nn.LSTM's, and the files are written."""

import json
import math

import pytest
import torch

from captioner.api import Captioner
from captioner.cli import main
from captioner.decoding import Stepping, beam_search
from captioner.explain import SaliencySettings, explain_images, lstm_trace
from captioner.explain.explain import BeamRecorder
from captioner.models import CaptionModel, DecoderConfig, EncoderSpec, LSTMDecoder, build_encoder
from captioner.data.preprocess import Preprocessing
from captioner.data.vocab import Vocabulary
from conftest import EXAMPLES
from helpers import CAPTIONS, DEVICES, END, START, MarkovStepper, markov_table, random_decoder

CAT = str(EXAMPLES / "cat.jpg")
A, B, X, Y, Z = 3, 4, 5, 6, 7
# Beam 2 keeps A (0.6) and B (0.4), then B z (0.36) and A x (0.33) of the four extensions.
TRAP = markov_table({START: {A: 0.6, B: 0.4}, A: {X: 0.55, Y: 0.45}, B: {Z: 0.9, END: 0.1},
                     X: {END: 1.0}, Y: {END: 1.0}, Z: {END: 1.0}}, vocab_size=9)


@pytest.mark.parametrize("stepping", [Stepping(live_rows=True), Stepping(live_rows=False, check_every=4)])
def test_the_observer_sees_the_beam_of_every_step(stepping):
    recorder = BeamRecorder()
    (hyps,) = beam_search(MarkovStepper(TRAP), START, END, beam_size=2, stepping=stepping, observer=recorder)
    assert hyps[0].tokens == (B, Z)
    first, second = recorder.alive(0), recorder.alive(1)
    assert [p for p, _ in first] == [(A,), (B,)] and [p for p, _ in second] == [(B, Z), (A, X)]
    assert [s for _, s in first] == pytest.approx([math.log(0.6), math.log(0.4)], abs=1e-5)
    assert [s for _, s in second] == pytest.approx([math.log(0.36), math.log(0.33)], abs=1e-5)


# -- the LSTM's gates --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("layers", [1, 2])
def test_gates_give_the_states_nn_lstm_computes(layers):
    """h and c of every layer at every step equal nn.LSTM's, stepped one token at a time (float32
    rounding of a few dozen multiply-adds on values of order 1: about 1e-7; 1e-5 allowed)."""
    decoder = random_decoder(layers=layers, seed=layers)
    features = torch.randn(8, generator=torch.Generator().manual_seed(0))
    fed = torch.tensor([START, 5, 7, 9, 4])
    traces = lstm_trace(decoder, features, fed)
    assert len(traces) == layers
    with torch.no_grad():
        state = decoder.init_state(features[None])
        for t, token in enumerate(fed):
            _, state = decoder.lstm(decoder.embed(token.view(1, 1)), state)
            for layer, trace in enumerate(traces):
                torch.testing.assert_close(trace.h[t], state[0][layer, 0], atol=1e-5, rtol=0)
                torch.testing.assert_close(trace.c[t], state[1][layer, 0], atol=1e-5, rtol=0)
    for trace in traces:
        for gate in (trace.input, trace.forget, trace.output):
            assert bool(((gate > 0) & (gate < 1)).all())


def test_c0_share_is_one_when_nothing_is_written_and_zero_when_everything_is_forgotten():
    decoder = random_decoder(seed=3)
    features, fed = torch.randn(8), torch.tensor([START, 5, 6])
    hidden = decoder.config.hidden_size
    with torch.no_grad():  # input gates shut (sigmoid(-60) ~ 1e-26): c_t = prod f * c0 exactly
        decoder.lstm.bias_ih_l0[:hidden] = -60.0
    assert lstm_trace(decoder, features, fed)[0].c0_share.tolist() == pytest.approx([1.0] * 3, abs=1e-6)
    with torch.no_grad():  # forget gates shut too: nothing of c0 is carried
        decoder.lstm.bias_ih_l0[:2 * hidden] = -60.0
        decoder.lstm.bias_ih_l0[:hidden] = 0.0
    trace = lstm_trace(decoder, features, fed)[0]
    assert trace.forget_product.max() < 1e-20 and trace.c0_share.max() < 1e-10


# -- the bundled model, as `caption` runs it ---------------------------------------------------------------------
@pytest.fixture(scope="module", params=DEVICES)
def bundled(request):
    return Captioner.from_checkpoint(device=request.param)


@pytest.mark.parametrize("options", [{}, {"guide": "none", "beam_size": 2}, {"include": "dog", "guide": "none"}])
def test_the_caption_is_caption_s_and_its_words_add_up(bundled, options):
    """The explained caption is the one `caption` gives; the words' log-probabilities and <end>'s
    add up to the caption's (float32 sums over a dozen words, rounded to 4 decimals: 1e-3)."""
    (explanation,) = explain_images(bundled, [CAT], saliency=("gradcam",), **options)
    (result,) = bundled.caption([CAT], **options)
    assert explanation.caption == result.text
    total = sum(w.log_prob for w in explanation.words) + math.log(explanation.end_probability)
    assert total == pytest.approx(result.captions[0].log_prob, abs=1e-3)
    assert explanation.maps["gradcam"].shape[0] == len(explanation.words)
    for word in explanation.words:
        assert word.alternatives[0][1] >= word.probability - 1e-6 and len(word.alternatives) == 5
    forced = [w for w in explanation.words if w.forced]
    if "include" in options:
        assert [(w.word, w.forced["source"]) for w in forced] == [("dog", "include")]
    elif options.get("guide") != "none":  # the bundled model's default guide forces the cat
        assert forced and all(w.forced["source"] == "imagenet" for w in forced)
    record = json.loads(json.dumps(explanation.to_dict()))
    assert record["captions"][0]["caption"] == result.text and len(record["words"]) == len(explanation.words)


def test_a_resnet_and_two_lstm_layers(tmp_path, backbone="resnet18", layers=2):
    """Every map, the gates of both layers and the page, for a ResNet and two LSTM layers (the
    command's test covers Lite0 and one layer)."""
    torch.manual_seed(0)
    spec = EncoderSpec(backbone, weights=None, preprocessing=Preprocessing(72, 64))
    encoder = build_encoder(spec, load_weights=False)
    vocab = Vocabulary.build(CAPTIONS)
    decoder = LSTMDecoder(DecoderConfig(len(vocab), encoder.feature_dim, embed_dim=8, hidden_size=16,
                                        num_layers=layers, dropout=0.0))
    captioner = Captioner(CaptionModel(encoder, decoder), vocab, device="cpu",
                          decoding={"guide": "none", "max_length": 4, "beam_size": 2})
    image = torch.rand(3, 80, 90, generator=torch.Generator().manual_seed(1))
    from captioner.data.eightbit import to_pil

    (explanation,) = explain_images(captioner, [to_pil(image)], saliency=("gradcam", "smoothgrad", "integrated_gradients"),
                                    saliency_settings=SaliencySettings(samples=1, steps=2))
    n = len(explanation.words)
    assert n >= 1 and explanation.caption == captioner.caption([to_pil(image)])[0].text
    assert explanation.maps["smoothgrad"].shape == explanation.maps["integrated_gradients"].shape == (n, 64, 64)
    assert len(explanation.layers) == layers and explanation.layers[1].h.shape == (n + 1, 16)
    paths = explanation.write(tmp_path / "out")
    assert (tmp_path / "out" / "lstm_layer1.png").exists() and "page" in paths


# -- the command ---------------------------------------------------------------------------------------------------
def test_explain_writes_a_self_contained_page_pngs_and_json(tmp_path, capsys):
    assert main(["caption", CAT]) == 0
    captioned = capsys.readouterr().out.strip().split("\t")[1]
    assert main(["explain", CAT, "--out", str(tmp_path), "--samples", "1"]) == 0
    path, caption, page = capsys.readouterr().out.strip().split("\t")
    assert caption == captioned and path == CAT
    folder = tmp_path / "cat"
    html = (folder / "page.html").read_text()
    assert captioned in html and "<img" in html
    assert "http:" not in html and "https:" not in html and 'src="data:image/png;base64,' in html
    assert html.count("<img") == html.count('src="data:')
    record = json.loads((folder / "explanation.json").read_text())
    words = record["words"]
    assert " ".join(w["word"] for w in words) == captioned
    assert all(len(w["gradcam"]) == 7 and len(w["gradcam"][0]) == 7 for w in words)
    import numpy as np

    assert np.load(folder / record["saliency"]["smoothgrad"]["file"]).shape == (len(words), 224, 224)
    assert record["saliency"]["smoothgrad"]["samples"] == 1
    for i in range(len(words)):
        assert (folder / f"word{i:02d}_gradcam.png").exists() and (folder / f"word{i:02d}_smoothgrad.png").exists()
    assert (folder / "lstm_layer0.png").exists() and (folder / "c0.png").exists()


def test_explain_without_out_prints_a_line_per_word_and_goes_on_past_a_bad_file(tmp_path, capsys):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not an image")
    assert main(["explain", str(bad), CAT, "--saliency", "gradcam", "--guide", "none"]) == 1
    out, err = capsys.readouterr()
    lines = out.strip().splitlines()
    caption = lines[0].split("\t")[1]
    assert lines[0].startswith(CAT) and len(lines) == 1 + len(caption.split())
    assert "gradcam peak" in lines[1] and "broken.jpg" in err


def test_an_unknown_saliency_method_is_one_clear_error(bundled):
    from captioner.errors import ArgumentError

    with pytest.raises(ArgumentError, match="saliency method 'lime'"):
        explain_images(bundled, [CAT], saliency=("lime",))


@pytest.mark.parametrize("flag,value,message", [("--samples", "0", "at least 1 sample"), ("--noise", "-1", "0 or more"),
                                                ("--ig-steps", "1", "at least 2 steps")])
def test_impossible_saliency_settings_are_refused_before_any_image_is_read(flag, value, message, capsys):
    assert main(["explain", "no-such-file.jpg", flag, value]) == 2
    err = capsys.readouterr().err
    assert message in err and flag in err and err.count("\n") == 1
