"""Attacks against known answers (hand-built linear models), properties, torchattacks and the offline Lite0."""

import pytest
import torch
import torchattacks
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from captioner.attacks import BIM, FGSM, PGD, AttackResult, ClassifierVictim, PixelClassifier, make_attack
from captioner.data.images import load_image
from captioner.data.preprocess import pil_to_tensor
from helpers import DEVICES


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One intra-op thread: on tensors this small (tiny models, one or two images) a second thread mostly adds
    overhead, and when the cores are busy with other work a two-thread region can stall for seconds."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# -- a hand-built model whose gradient signs are known ------------------------------------------------
# Three classes on the 9 pixels of a (3, 1, 3) image; each class looks at its own pixels, pixel 8 at none.
W = torch.zeros(3, 9)
W[0, 0:3] = torch.tensor([2.0, -1.0, 3.0])
W[1, 3:6] = torch.tensor([1.0, -3.0, 2.0])
W[2, 6:8] = torch.tensor([-2.0, 1.0])
X = torch.tensor([0.5, 0.95, 0.05, 0.2, 0.97, 0.3, 0.5, 0.6, 0.7]).view(1, 3, 1, 3)


class Linear(nn.Module):
    def __init__(self, weight, bias=None):
        super().__init__()
        self.weight = nn.Parameter(weight.clone(), requires_grad=False)
        self.bias = nn.Parameter(torch.zeros(len(weight)) if bias is None else bias, requires_grad=False)

    def forward(self, x):
        return x.flatten(1) @ self.weight.T.to(x.dtype) + self.bias.to(x.dtype)


def expected(*values):
    return torch.tensor(values).view(1, 3, 1, 3)


@pytest.mark.parametrize("device", DEVICES)
def test_fgsm_known_answers_untargeted_and_targeted(device):
    model = Linear(W).to(device)  # the attack moves the inputs to the model and the results back
    assert model(X.to(device)).argmax().item() == 0  # logits 0.2, -2.11, -0.4
    # d CE(0)/dx = -(1-p0) W0 + p1 W1 + p2 W2: moves against W0's signs and along W1's and W2's;
    # pixel 1 clamps at 1, pixel 2 at 0, pixel 8 has no gradient.
    untargeted = FGSM(model, eps=0.1)(X)
    assert torch.allclose(untargeted, expected(0.4, 1.0, 0.0, 0.3, 0.87, 0.4, 0.4, 0.7, 0.7), atol=1e-6)
    # towards class 1: lower CE(1), whose gradient is p0 W0 - (1-p1) W1 + p2 W2 (pixels 6, 7 now go the other way)
    targeted = FGSM(model, eps=0.1)(X, target=1)
    assert torch.allclose(targeted, expected(0.4, 1.0, 0.0, 0.3, 0.87, 0.4, 0.6, 0.5, 0.7), atol=1e-6)


@pytest.mark.parametrize("device", DEVICES)
def test_bim_and_pgd_known_answers(device):
    model = Linear(W).to(device)
    # the gradient's signs are constant here, so each step moves every pixel by alpha until the ball's edge
    two_steps = BIM(model, eps=0.1, alpha=0.04, steps=2)(X, target=1)
    assert torch.allclose(two_steps, expected(0.42, 1.0, 0.0, 0.28, 0.89, 0.38, 0.58, 0.52, 0.7), atol=1e-6)
    to_the_edge = BIM(model, eps=0.1, alpha=0.04, steps=4)(X, target=1)
    assert torch.allclose(to_the_edge, FGSM(model, eps=0.1)(X, target=1), atol=1e-6)
    torch.manual_seed(0)
    pgd = PGD(model, eps=0.1, alpha=0.05, steps=10)(X, target=1)
    corner = expected(0.4, 1.0, 0.0, 0.3, 0.87, 0.4, 0.6, 0.5, 0.7)
    assert torch.allclose(pgd.flatten()[:8], corner.flatten()[:8], atol=1e-6)
    assert 0.6 <= pgd.flatten()[8] <= 0.8 and pgd.flatten()[8] != 0.7  # no gradient: stays at its random start


def test_default_step_size_and_bad_settings():
    assert BIM(Linear(W), eps=8 / 255, steps=10).alpha == pytest.approx(2.5 * 8 / 255 / 10)
    with pytest.raises(ValueError, match="eps must be between 0 and 1"):
        FGSM(Linear(W), eps=2)
    with pytest.raises(ValueError, match="steps must be at least 1"):
        PGD(Linear(W), eps=0.1, steps=0)
    with pytest.raises(ValueError, match=r"pixels must be in \[0, 1\]"):
        FGSM(Linear(W), eps=0.1)(X * 255)
    with pytest.raises(ValueError, match="unknown attack method 'cw'"):
        make_attack("cw", Linear(W), 0.1)


# -- properties on random inputs ----------------------------------------------------------------------
torch.manual_seed(0)
SMALL_CNN = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 6, 3, stride=2), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 4)).eval()


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**16), eps=st.floats(0.0, 0.3), method=st.sampled_from(["fgsm", "bim", "pgd"]),
       targeted=st.booleans())
def test_result_stays_in_the_ball_and_in_range(seed, eps, method, targeted):
    images = torch.rand(2, 3, 9, 7, generator=torch.Generator().manual_seed(seed))
    attack = make_attack(method, SMALL_CNN, eps, steps=3)
    adversarial = attack(images, target=2 if targeted else None)
    assert adversarial.shape == images.shape
    assert (adversarial - images).abs().max() <= eps + 1e-6
    assert adversarial.min() >= 0 and adversarial.max() <= 1
    if eps == 0:
        assert torch.equal(adversarial, images)


def test_eps_zero_returns_the_input_for_every_method():
    images = torch.rand(3, 3, 8, 8)
    for method in ("fgsm", "bim", "pgd"):
        assert torch.equal(make_attack(method, SMALL_CNN, 0.0, steps=3)(images), images)


# CE of a linear model is convex in x, so a step along sign(grad) raises it (f(x+d) >= f(x) + g.d > 0); for
# small eps the targeted step lowers the target's loss (its curvature term is second order in eps).
torch.manual_seed(1)
LINEAR_64 = Linear(0.05 * torch.randn(3, 3 * 8 * 8)).double()


def _ce(images, labels):
    return nn.functional.cross_entropy(LINEAR_64(images), labels, reduction="none")


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**16), eps=st.floats(1e-3, 0.3))
def test_untargeted_fgsm_raises_the_loss(seed, eps):
    images = 0.05 + 0.9 * torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    labels = LINEAR_64(images).argmax(1)
    assert (_ce(FGSM(LINEAR_64, eps)(images), labels) > _ce(images, labels)).all()


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**16), eps=st.floats(1e-4, 0.02), target=st.integers(0, 2))
def test_targeted_fgsm_lowers_the_target_loss(seed, eps, target):
    images = 0.05 + 0.9 * torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    targets = torch.full((2,), target)
    assert (_ce(FGSM(LINEAR_64, eps)(images, target=target), targets) < _ce(images, targets)).all()


# -- the base: labels, modes, devices ---------------------------------------------------------------------
def test_labels_default_to_the_model_predictions():
    images = torch.rand(4, 3, 8, 8)
    predicted = SMALL_CNN(images).argmax(1)
    attack = FGSM(SMALL_CNN, eps=0.05)
    assert torch.equal(attack(images), attack(images, labels=predicted))
    assert not torch.equal(attack(images), attack(images, labels=(predicted + 1) % 4))
    result = attack.run(images)
    assert torch.equal(result.labels, predicted) and torch.equal(result.clean_predictions, predicted)


class ModeRecorder(nn.Module):
    """Dropout and BatchNorm in training mode, one submodule deliberately in eval mode."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Dropout(0.5),
                                 nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))
        self.seen = []

    def forward(self, x):
        self.seen.append([m.training for m in self.modules()])
        return self.net(x)


def test_model_runs_in_eval_mode_and_gets_every_mode_back():
    model = ModeRecorder().train()
    model.net[1].eval()
    before = [m.training for m in model.modules()]
    images = torch.rand(2, 3, 8, 8)
    with torch.no_grad():  # attacks need gradients: they switch them on themselves
        first = PGD(model, eps=0.1, steps=2, random_start=False).run(images)
    second = PGD(model, eps=0.1, steps=2, random_start=False).run(images)
    assert model.seen and not any(any(flags) for flags in model.seen)
    assert [m.training for m in model.modules()] == before
    assert torch.equal(first.adversarial, second.adversarial)  # no dropout noise, no BatchNorm updates


def test_uint8_and_unbatched_inputs():
    images = (torch.rand(3, 8, 8) * 255).round().to(torch.uint8)
    adversarial = FGSM(SMALL_CNN, eps=2 / 255)(images)
    assert adversarial.shape == (3, 8, 8) and adversarial.dtype == torch.float32
    assert (adversarial * 255 - images.float()).abs().max() <= 2 + 1e-4


# -- 8-bit output -------------------------------------------------------------------------------------------
def test_saved_png_is_checked_and_until_saved_keeps_stepping():
    # z = w.x + b is class 0's logit (class 1's is 0). The float BIM result moves every pixel 1.2 levels against
    # sign(w), which is enough; rounded to 8 bits that is 1 level, which is not; 2 levels are.
    w = torch.tensor([1.0, -2.0, 0.5, 3.0, -1.0, 2.0, -0.5, 1.0, 1.5, -1.0, 2.0, -2.5])
    images = torch.tensor([30, 200, 128, 90, 17, 240, 60, 128, 99, 180, 45, 150]).float().view(1, 3, 2, 2) / 255
    margin = 1.1 / 255 * w.abs().sum()
    bias = margin - (w * images.flatten()).sum()
    model = Linear(torch.stack([w, torch.zeros(12)]), torch.tensor([float(bias), 0.0]))
    plain = BIM(model, eps=3 / 255, alpha=0.3 / 255, steps=4).run(images)
    assert plain.fooled.item() and not plain.saved_fooled.item()
    assert torch.allclose(plain.saved, images - w.sign().view(1, 3, 2, 2) / 255, atol=1e-6)
    persistent = BIM(model, eps=3 / 255, alpha=0.3 / 255, steps=4, until_saved=True).run(images)
    assert persistent.saved_fooled.item() and persistent.extra_steps == 1
    assert torch.allclose(persistent.saved, images - 2 * w.sign().view(1, 3, 2, 2) / 255, atol=1e-6)
    assert persistent.linf().item() * 255 == pytest.approx(2.0, abs=1e-4)
    # below one level no other level lies in the ball: nothing to step to, so it stops at once
    stuck = BIM(model, eps=0.6 / 255, steps=4, until_saved=True).run(images)
    assert stuck.fooled.item() is False and stuck.extra_steps == 0 and torch.equal(stuck.saved, images)


# -- the same results as torchattacks -------------------------------------------------------------------------
def _max_diff(ours, theirs, images, labels, target=None):
    if target is not None:
        theirs.set_mode_targeted_by_label(quiet=True)
    torch.manual_seed(7)
    a = ours(images, labels=labels, target=target)
    torch.manual_seed(7)
    b = theirs(images, torch.full_like(labels, target) if target is not None else labels)
    return float((a - b).abs().max())


@pytest.mark.parametrize("target", [None, 3])
def test_same_as_torchattacks_on_a_cnn(target):
    images = torch.rand(8, 3, 16, 16, generator=torch.Generator().manual_seed(3))
    labels = SMALL_CNN(images).argmax(1)
    eps, alpha = 8 / 255, 2 / 255
    pairs = {
        "fgsm": (FGSM(SMALL_CNN, eps), torchattacks.FGSM(SMALL_CNN, eps)),
        "bim": (BIM(SMALL_CNN, eps, alpha, 5), torchattacks.BIM(SMALL_CNN, eps, alpha, 5)),
        "pgd": (PGD(SMALL_CNN, eps, alpha, 5), torchattacks.PGD(SMALL_CNN, eps, alpha, 5, random_start=True)),
        "pgd-no-start": (PGD(SMALL_CNN, eps, alpha, 5, random_start=False),
                         torchattacks.PGD(SMALL_CNN, eps, alpha, 5, random_start=False)),
    }
    diffs = {name: _max_diff(ours, theirs, images, labels, target) for name, (ours, theirs) in pairs.items()}
    assert all(d <= 1e-6 for d in diffs.values()), diffs


def test_same_as_torchattacks_on_lite0_with_preprocessing(lite0, examples_dir):
    model = PixelClassifier(lite0)
    images = torch.stack([pil_to_tensor(load_image(examples_dir / name)).float()[:, :300, :300] / 255
                          for name in ("coffee.jpg", "rocket.jpg")])
    labels = model(images).argmax(1)
    assert _max_diff(FGSM(model, 2 / 255), torchattacks.FGSM(model, 2 / 255), images, labels) <= 1e-6
    pgd_diff = _max_diff(PGD(model, 4 / 255, 1 / 255, 2), torchattacks.PGD(model, 4 / 255, 1 / 255, 2), images, labels)
    assert pgd_diff <= 1e-6


# -- the offline Lite0 on a committed photo -----------------------------------------------------------------
def test_lite0_fgsm_2_255_changes_the_espresso_and_bim_reaches_a_chosen_label(lite0, examples_dir):
    model = PixelClassifier(lite0)
    coffee = pil_to_tensor(load_image(examples_dir / "coffee.jpg"))
    espresso, gibbon = lite0.categories.index("espresso"), lite0.categories.index("gibbon")
    fgsm = FGSM(model, eps=2 / 255).run(coffee)
    assert fgsm.clean_predictions.item() == espresso
    assert fgsm.fooled.item() and fgsm.saved_fooled.item() and fgsm.saved_predictions.item() != espresso
    assert fgsm.linf().item() * 255 == pytest.approx(2.0, abs=1e-4)
    bim = BIM(model, eps=8 / 255, steps=5).run(coffee, target="gibbon")
    assert bim.saved_predictions.item() == gibbon and bim.saved_fooled.item()
    assert bim.linf().item() * 255 <= 8 + 1e-4
    assert isinstance(bim, AttackResult) and bim.saved.shape == (1, 3, 341, 512)


def test_unknown_label_names_the_closest_ones(lite0):
    victim = ClassifierVictim(PixelClassifier(lite0))
    with pytest.raises(ValueError, match=r"unknown label 'gibbbon'; closest: gibbon \(368\)"):
        victim.label_index("gibbbon")
    assert victim.label_index("Tabby") == victim.label_index("281") == victim.label_index(281) == 281
    with pytest.raises(ValueError, match=r"class index 1000 is outside 0\.\.999"):
        victim.label_index(1000)
    with pytest.raises(ValueError, match=r"several classes \(0, 1\)"):
        ClassifierVictim(SMALL_CNN, categories=["cat", "Cat", "dog", "emu"]).label_index("CAT")


# -- the captioner ------------------------------------------------------------------------------------------------
def _brightness_captioner(device="cpu"):
    """A tiny captioner, trained in a second: "a black cat sits" for dark images, "a white dog runs" for bright ones."""
    from captioner.api import Captioner
    from captioner.data.preprocess import Preprocessing
    from captioner.data.vocab import Vocabulary
    from captioner.models import CaptionModel, DecoderConfig, EncoderSpec, ImageEncoder, LSTMDecoder

    torch.manual_seed(0)
    spec = EncoderSpec("tiny", weights=None, preprocessing=Preprocessing(16, 16, (0.5,) * 3, (0.5,) * 3))
    encoder = ImageEncoder(spec, nn.Conv2d(3, 4, 3, padding=1), nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten()),
                           None, feature_dim=4)
    vocab = Vocabulary.build(["a black cat sits", "a white dog runs"])
    decoder = LSTMDecoder(DecoderConfig(len(vocab), 4, embed_dim=8, hidden_size=16, dropout=0.3))
    model = CaptionModel(encoder, decoder)
    captions = torch.tensor([vocab.encode("a black cat sits"), vocab.encode("a white dog runs")])
    optimizer = torch.optim.Adam(decoder.parameters(), lr=0.03)
    for _ in range(60):
        bright = torch.randint(0, 2, (32,))
        images = torch.rand(32, 3, 16, 16) * 0.3 + 0.05 + 0.6 * bright.view(-1, 1, 1, 1)
        logits = model(images, captions[bright], torch.full((32,), 6))
        loss = nn.functional.cross_entropy(logits.transpose(1, 2), captions[bright][:, 1:])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return Captioner(model, vocab, device=device, decoding={"method": "greedy", "max_length": 6})


@pytest.fixture(scope="module")
def brightness():
    from captioner.attacks import CaptionVictim

    return CaptionVictim(_brightness_captioner())


@pytest.fixture(scope="module", params=DEVICES)
def brightness_on(request):
    """The brightness captioner (trained on the CPU) on each device present."""
    from captioner.attacks import CaptionVictim

    return CaptionVictim(_brightness_captioner(request.param)), torch.device(request.param)


DARK = torch.full((2, 3, 21, 30), 0.2)


def test_untargeted_attack_changes_the_caption(brightness_on):
    brightness, device = brightness_on
    dark = DARK.to(device)
    assert brightness.describe(brightness.predict(dark)) == ["a black cat sits"] * 2
    result = FGSM(brightness, eps=0.5).run(DARK)
    assert brightness.describe(result.clean_predictions) == ["a black cat sits"] * 2
    assert result.saved_fooled.all() and "a black cat sits" not in brightness.describe(result.saved_predictions)
    clean_caption = result.labels.to(device)
    assert (brightness.loss(result.saved.to(device), clean_caption) > brightness.loss(dark, clean_caption)).all()


def test_targeted_caption_is_reached_and_its_loss_falls(brightness_on):
    brightness, device = brightness_on
    dark = DARK.to(device)
    result = BIM(brightness, eps=0.6, steps=10).run(DARK, target="A white dog runs")
    assert result.saved_fooled.all() and brightness.describe(result.saved_predictions) == ["a white dog runs"] * 2
    target = brightness.labels_from("a white dog runs", 2).to(device)
    assert (brightness.loss(result.saved.to(device), target) < brightness.loss(dark, target)).all()
    assert float((result.saved - DARK).abs().max()) <= 0.6 + 1e-6
    with pytest.raises(ValueError, match="'zebra' not in the model's vocabulary"):
        brightness.labels_from("a white zebra runs", 1)


def test_caption_attack_restores_modes_and_turns_cudnn_off_for_the_lstm_on_cuda(brightness, monkeypatch):
    model = brightness.module
    model.train()
    before = [m.training for m in model.modules()]
    first = PGD(brightness, eps=0.1, steps=2, random_start=False)(DARK)
    assert torch.equal(first, PGD(brightness, eps=0.1, steps=2, random_start=False)(DARK))  # dropout was off
    assert [m.training for m in model.modules()] == before
    model.eval()
    # the decision is made from the device: pretend the model is on a GPU (the tensors stay on the CPU)
    seen, target = [], brightness.labels_from("a white dog runs", 2)
    attack, grads = FGSM(brightness, eps=0.1), []
    for device in ("cpu", "cuda"):
        monkeypatch.setattr(FGSM, "device", property(lambda self: torch.device(device)))
        with attack._attack_context():
            # registered after the context's own hook, so it sees what the LSTM's forward sees
            handle = model.decoder.lstm.register_forward_pre_hook(lambda *_: seen.append(torch.backends.cudnn.enabled))
            grads.append(attack.gradient(DARK, target, targeted=True))
            handle.remove()
    assert seen == [True, False] and torch.backends.cudnn.enabled
    assert torch.equal(*grads)


# -- robustness reports -----------------------------------------------------------------------------------------
class MeanBrightness(nn.Module):
    """Class 0 ("bright") when the mean pixel is over 0.5, else class 1 ("dark"); any image size."""

    categories = ["bright", "dark"]

    def forward(self, x):
        z = x.mean(dim=(1, 2, 3)) - 0.5
        return torch.stack([z, torch.zeros_like(z)], dim=1) * 10


def _png(path, level, size):
    from PIL import Image

    Image.new("RGB", size, (level,) * 3).save(path)
    return str(path)


def test_classifier_report_known_answers_and_files(tmp_path):
    from captioner.attacks.report import robustness_report, write_report

    paths = [_png(tmp_path / "a.png", 180, (9, 7)), _png(tmp_path / "b.png", 76, (9, 7)),
             _png(tmp_path / "c.png", 180, (5, 6)), str(tmp_path / "broken.png")]
    (tmp_path / "broken.png").write_bytes(b"not a png")
    # FGSM moves every pixel by eps: 0.1 leaves all three on their side of 0.5, 0.3 flips all three
    report = robustness_report(ClassifierVictim(MeanBrightness()), paths, [0.3, 0, 0.1], labels=[0, 1, 1, 0],
                               name="brightness")
    rows = {row["eps_text"]: row for row in report["rows"]}
    assert list(rows) == ["0", "25.5/255", "76.5/255"] and report["metric"] == "accuracy" and report["images"] == 3
    assert [rows[e]["accuracy"] for e in rows] == pytest.approx([200 / 3, 200 / 3, 100 / 3])
    assert [rows[e]["success_rate"] for e in rows] == [0, 0, 100]
    assert [rows[e]["saved_success_rate"] for e in rows] == [0, 0, 100]
    assert [rows[e]["linf_255"] for e in rows] == pytest.approx([0, 25.5, 76.5], abs=1e-3)
    assert report["per_image"][1] == {"path": paths[1], "clean": "dark", "0": "dark", "25.5/255": "dark",
                                      "76.5/255": "bright"}
    assert report["skipped"][0]["path"] == paths[3] and "not an image file" in report["skipped"][0]["error"]
    files = write_report(report, tmp_path / "out")
    markdown = (tmp_path / "out" / "report.md").read_text()
    assert "| 76.5/255 | 33.33 | 100.00 | 100.00 | 76.50 |" in markdown and "skipped" in markdown
    assert open(files["plot"], "rb").read(8) == b"\x89PNG\r\n\x1a\n"


def test_caption_report_scores_against_references(tmp_path, brightness):
    from captioner.attacks.report import robustness_report

    paths = [_png(tmp_path / "dark.png", 40, (20, 16)), _png(tmp_path / "darker.png", 20, (15, 17)),
             _png(tmp_path / "bright.png", 220, (20, 16))]
    references = [["a black cat sits"], ["a black cat sits", "a dark cat"], ["a white dog runs"]]
    report = robustness_report(brightness, paths, [0, 0.6], method="bim", steps=5, references=references)
    clean, attacked = report["rows"]
    assert clean["BLEU-4"] == pytest.approx(100) and clean["change_rate"] == 0
    assert attacked["CIDEr-D"] < clean["CIDEr-D"] and attacked["BLEU-4"] < clean["BLEU-4"]
    assert attacked["linf_255"] <= 0.6 * 255 + 1e-3
    assert [entry["153/255"] for entry in report["per_image"][:2]] == ["a white dog runs"] * 2
    assert attacked["change_rate"] >= 200 / 3 - 1e-6


def test_a_report_shared_out_between_processes_is_the_report_of_one(tmp_path):
    """Under torchrun each process attacks every other batch (here two ranks run as threads, with
    all_gather through shared memory): process 0's report is one process's, PGD's random starts
    included (each batch draws its own), and the other process returns None."""
    import threading

    from captioner.attacks.report import robustness_report
    from captioner.distributed import Distributed

    paths = [_png(tmp_path / f"{i}.png", level, (9, 7)) for i, level in enumerate([200, 90, 140, 60, 120])]
    (tmp_path / "3.png").write_bytes(b"broken")
    victim = ClassifierVictim(MeanBrightness())

    def report(info):
        return robustness_report(victim, paths, [0, 0.1, 0.3], method="pgd", steps=1, alpha=0.001, batch_size=2,
                                 seed=5, info=info)  # one tiny step: the random start shows in the norms

    slots, barrier = [None, None], threading.Barrier(2)

    class ThreadRank(Distributed):
        def all_gather(self, value):
            slots[self.rank] = value
            barrier.wait()
            values = list(slots)
            barrier.wait()
            return values

    shared = [None, None]
    threads = [threading.Thread(target=lambda r=r: shared.__setitem__(r, report(ThreadRank(rank=r, world=2))))
               for r in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    alone = report(Distributed())
    assert shared[1] is None and shared[0] == alone
    assert alone["skipped"][0]["path"] == paths[3] and alone["images"] == 4
