"""Feature visualisation: parameterisations, transforms, objectives, the render loop,
layer and class names, grids; the real Lite0 only at a small size and few steps."""

from __future__ import annotations


import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from captioner.data.eightbit import save_png
from captioner.data.images import load_image
from captioner.data.preprocess import Preprocessing, preprocess
from captioner.models import EncoderSpec, ImageEncoder, build_encoder
from captioner.visualization import (
    RenderSettings, class_probabilities, evaluate, first_layer_weights, image_seed, list_layers, render,
    resolve_class, resolve_layer, visualize_class, visualize_deepdream, visualize_filters, visualize_neuron,
)
from captioner.visualization import objectives as obj
from captioner.visualization.grid import first_conv, kernel_images, labelled_grid
from captioner.visualization.layers import check_channels
from captioner.visualization.param import COLOR_CORRELATION, FourierParam, PixelParam, make_param, spectrum_scale
from captioner.visualization.transform import Compose, Jitter, Pad, RandomRotate, RandomScale, standard_transforms
from helpers import DEVICES

CATEGORIES = ["cat", "dog", "sea lion", "banana", "great white shark", "tiger shark"]
FAST = dict(size=24, progress=False)


def tiny_encoder(seed: int = 0) -> ImageEncoder:
    """A 2-conv encoder with a 6-class head and a 32-pixel crop."""
    torch.manual_seed(seed)
    body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(inplace=True),
                         nn.Conv2d(8, 6, 3, stride=2, padding=1), nn.ReLU(inplace=True))
    neck = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1))
    spec = EncoderSpec("tiny", weights=None, preprocessing=Preprocessing(resize_size=36, crop_size=32))
    return ImageEncoder(spec, body, neck, nn.Linear(6, len(CATEGORIES)), 6, CATEGORIES).eval()


@pytest.fixture(scope="module")
def tiny():
    return tiny_encoder()


# -- parameterisations ---------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["fourier", "pixel"])
@pytest.mark.parametrize("decorrelate", [True, False])
def test_param_shape_and_range_even_for_huge_parameters(kind, decorrelate):
    param = make_param(kind, 3, (20, 27), seeds=[1, 2, 3], decorrelate=decorrelate)
    with torch.no_grad():
        for p in param.parameters():
            p.mul_(1e4)
    images = param()
    assert images.shape == (3, 3, 20, 27)
    assert images.min() >= 0 and images.max() <= 1
    assert images.std() > 0.1  # huge parameters really are far from grey


def test_param_starts_near_grey():
    images = FourierParam(2, 32)()
    assert (images - 0.5).abs().max() < 0.05


@pytest.mark.parametrize("cls", [FourierParam, PixelParam])
@pytest.mark.parametrize("size", [16, (15, 21)])
def test_set_pixels_round_trips(cls, size):
    param = cls(2, size)
    pixels = torch.rand(2, 3, *param.size) * 0.9 + 0.05
    param.set_pixels(pixels)
    torch.testing.assert_close(param(), pixels, atol=1e-4, rtol=0)


def test_images_depend_only_on_their_own_seed():
    pair = FourierParam(2, 16, seeds=[5, 7])()
    alone = FourierParam(1, 16, seeds=[7])()
    torch.testing.assert_close(pair[1:], alone)
    assert not torch.equal(pair[0], pair[1])


def test_spectrum_scale_is_one_over_frequency_capped_at_the_size():
    scale = spectrum_scale(8, 8)
    assert scale.shape == (8, 5)
    assert scale[0, 0] == 8  # the constant term: capped at 1 / max(h, w)
    assert scale[0, 2] == pytest.approx(4.0)  # 0.25 cycles per pixel
    assert scale[2, 2] == pytest.approx(1 / (0.25 * 2 ** 0.5))


def test_color_correlation_largest_column_has_norm_one():
    assert COLOR_CORRELATION.norm(dim=0).max() == pytest.approx(1.0)


def test_unknown_param_kind_is_an_error():
    with pytest.raises(ValueError, match="fourier"):
        make_param("wavelet", 1, 8)


# -- transforms ----------------------------------------------------------------------------

def grid_tensor(height=4, width=5):
    return torch.arange(float(height * width)).view(1, 1, height, width)


def test_jitter_by_one_column_shifts_the_content_left():
    x = grid_tensor()
    out = Jitter(1).apply(x, 1, 0)
    assert out.shape == (1, 1, 3, 4)
    assert out[0, 0, 0].tolist() == [1, 2, 3, 4]
    assert out[0, 0, :, 0].tolist() == [1, 6, 11]


def test_pad_then_central_crop_returns_the_input():
    x = grid_tensor()
    padded = Pad(3, value=0.5).apply(x)
    assert padded.shape == (1, 1, 10, 11)
    assert padded[0, 0, 0, 0] == 0.5
    torch.testing.assert_close(Jitter(6).apply(padded, 3, 3), x)


def test_scale_two_interpolates_between_pixel_centres():
    out = RandomScale([2]).apply(torch.tensor([[[[0.0, 1.0]]]]), 2)
    torch.testing.assert_close(out[0, 0, 0], torch.tensor([0.0, 0.25, 0.75, 1.0]))
    assert RandomScale([1]).apply(grid_tensor(), 1).equal(grid_tensor())


def test_rotate_quarter_turn_matches_rot90():
    x = grid_tensor(4, 4)
    torch.testing.assert_close(RandomRotate([90]).apply(x, 90), torch.rot90(x, 1, dims=(-2, -1)))
    assert RandomRotate([0]).apply(x, 0).equal(x)


def test_transforms_are_reproducible_and_cover_their_range():
    def draws(seed):
        g = torch.Generator().manual_seed(seed)
        return [Jitter(3).sample(g) for _ in range(200)]

    assert draws(1) == draws(1) != draws(2)
    values = {dx for dx, _ in draws(1)}
    assert values == {0, 1, 2, 3}
    x = torch.rand(2, 3, 20, 20)
    a = standard_transforms()(x, torch.Generator().manual_seed(4))
    b = standard_transforms()(x, torch.Generator().manual_seed(4))
    assert a.equal(b)
    assert Compose([])(x, torch.Generator()).equal(x)


# -- objectives ----------------------------------------------------------------------------

@pytest.fixture
def acts():
    layer = torch.arange(2 * 3 * 3 * 3, dtype=torch.float32).view(2, 3, 3, 3)  # (B, C, H, W)
    return {"L": layer, "logits": torch.tensor([[1.0, 5.0], [7.0, 3.0]]),
            "input": torch.tensor([[[[0.0, 1.0], [1.0, 1.0]]]]).expand(2, 3, 2, 2)}


def test_channel_neuron_deepdream_and_logit_values(acts):
    L = acts["L"]
    assert obj.channel("L", 1)(acts).tolist() == [L[0, 1].mean().item(), L[1, 1].mean().item()]
    assert obj.channel("L", [2, 0])(acts).tolist() == [L[0, 2].mean().item(), L[1, 0].mean().item()]
    assert obj.neuron("L", 0)(acts).tolist() == [4.0, 31.0]  # centre (1, 1)
    assert obj.neuron("L", [1, 2], x=2, y=0)(acts).tolist() == [11.0, 47.0]
    assert obj.deepdream("L")(acts).tolist() == [L[0].pow(2).mean().item(), L[1].pow(2).mean().item()]
    assert obj.class_logit([1, 0])(acts).tolist() == [5.0, 7.0]


def test_regularisers_on_known_images(acts):
    assert obj.l2()(acts).tolist() == [0.25, 0.25]
    # rows [0, 1] and [1, 1]: |dx| mean 0.5, |dy| mean 0.5
    assert obj.total_variation()(acts).tolist() == [1.0, 1.0]


def test_objectives_compose_like_lucid(acts):
    a, b = obj.class_logit(0), obj.class_logit(1)
    assert (2 * a - b + 1)(acts).tolist() == [-2.0, 12.0]
    assert (-a / 2 + 3 - b * 0.5)(acts).tolist() == [0.0, -2.0]
    assert (1 - a)(acts).tolist() == [0.0, -6.0]
    assert (a * b)(acts).tolist() == [5.0, 21.0]
    combined = obj.channel("L", 0) + obj.deepdream("M") - obj.l2()
    assert combined.layers == ("L", "M", "input")
    assert "channel(L, 0)" in combined.name


def test_objective_errors_name_the_problem(acts):
    with pytest.raises(ValueError, match="3 channels for a batch of 2"):
        obj.channel("L", [0, 1, 2])(acts)
    with pytest.raises(ValueError, match="needs a layer with a spatial grid"):
        obj.neuron("logits", 0)(acts)


def test_neuron_past_the_edge_of_a_smaller_grid_is_taken_at_the_edge(acts):
    assert obj.neuron("L", 0, x=5, y=1)(acts).tolist() == [5.0, 32.0]


# -- the render loop on a tiny model ---------------------------------------------------------

@pytest.mark.parametrize("make", [
    lambda: obj.channel("body.2", 1), lambda: obj.neuron("body.0", 3), lambda: obj.deepdream("body.2"),
    lambda: obj.class_logit(4), lambda: obj.channel("body.2", 0) - 0.1 * obj.total_variation(),
])
@pytest.mark.parametrize("param", ["fourier", "pixel"])
def test_each_objective_rises_within_a_few_steps(tiny, make, param):
    objective = make()
    before = render(tiny, objective, 2, RenderSettings(steps=1, param=param, lr=1e-9, **FAST)).values
    after = render(tiny, objective, 2, RenderSettings(steps=8, param=param, **FAST)).values
    assert all(a > b + 1e-4 for a, b in zip(after, before)), (before, after)


def test_batched_filters_equal_one_run_per_channel(tiny):
    options = dict(steps=6, seed=3, **FAST)
    batched = visualize_filters(tiny, "body.2", [4, 1, 5], **options)
    for row, channel in enumerate([4, 1, 5]):
        alone = visualize_filters(tiny, "body.2", [channel], **options)
        torch.testing.assert_close(batched.images[row], alone.images[0], atol=2e-5, rtol=0)
        assert batched.records[row]["activation"] == pytest.approx(alone.records[0]["activation"], abs=1e-3)


def test_render_keeps_in_place_activations(tiny):
    visualize_filters(tiny, "body.2", [0, 3, 5], steps=4, seed=2, **FAST)
    # the activations run out of place only during the render
    assert [m.inplace for m in tiny.modules() if isinstance(m, nn.ReLU)] == [True, True]


def test_same_seed_same_images_other_seed_other_images(tiny):
    settings = RenderSettings(steps=4, octaves=2, blur_every=2, l2=0.1, **FAST)
    a = render(tiny, obj.channel("body.2", 0), 2, settings).images
    b = render(tiny, obj.channel("body.2", 0), 2, settings).images
    c = render(tiny, obj.channel("body.2", 0), 2, settings.with_options(seed=1)).images
    assert a.equal(b) and not a.equal(c)
    assert a.shape == (2, 3, 24, 24)


def test_forward_stops_at_the_last_needed_layer_and_weights_get_no_gradients():
    encoder = tiny_encoder().set_trainable(True)
    calls = []
    hook = encoder.head.register_forward_hook(lambda *args: calls.append(1))
    render(encoder, obj.channel("body.0", 0), 1, RenderSettings(steps=2, **FAST))
    assert calls == []
    render(encoder, obj.class_logit(0), 1, RenderSettings(steps=2, **FAST))
    assert calls  # the head ran for the class objective
    hook.remove()
    assert all(p.grad is None for p in encoder.parameters())


def test_octaves_end_at_the_requested_size_and_start_from_an_image(tiny):
    ramp = torch.linspace(0.2, 0.8, 24)
    photo = torch.stack([ramp.view(1, -1).expand(24, 24), ramp.view(-1, 1).expand(24, 24),
                         torch.full((24, 24), 0.5)]).unsqueeze(0)  # smooth, so small octaves can hold it
    result = render(tiny, obj.deepdream("body.0"), 1, RenderSettings(steps=3, octaves=3, **FAST), init=photo)
    assert result.images.shape == (1, 3, 24, 24)
    # three small steps from a photo stay close to it
    assert (result.images - photo).abs().mean() < 0.1


@pytest.mark.parametrize("device", DEVICES)
def test_reported_values_are_those_of_the_saved_png(tmp_path, device):
    tiny = tiny_encoder().to(device)
    result = render(tiny, obj.channel("body.2", 2), 1, RenderSettings(steps=3, **FAST))
    assert result.images.device.type == device  # the images come back on the encoder's device
    save_png(result.images[0], tmp_path / "channel.png")
    # read the file back and compute the channel's mean activation by hand:
    # normalise, conv, ReLU, conv (body.0 .. body.2), channel 2, mean over positions
    saved = torch.from_numpy(np.asarray(Image.open(tmp_path / "channel.png"), dtype=np.float32) / 255.0)
    pixels = saved.permute(2, 0, 1).unsqueeze(0).to(device)
    with torch.no_grad():
        hidden = torch.relu(tiny.body[0]((pixels - tiny.mean) / tiny.std))
        expected = tiny.body[2](hidden)[0, 2].mean().item()
    # float32 activations of size ~1, sums of 72 terms: rounding under 1e-5
    assert result.values[0] == pytest.approx(expected, abs=1e-5)


def test_neuron_position_outside_the_grid_is_reported(tiny):
    with pytest.raises(ValueError, match="12x12 grid"):
        visualize_neuron(tiny, "body.2", [0], x=12, y=0, **FAST)


# -- names: layers -----------------------------------------------------------------------

def test_tiny_layers_listed_with_shapes(tiny):
    layers = list_layers(tiny)
    assert [(info.path, info.shape) for info in layers] == [
        ("body.0", (8, 32, 32)), ("body.1", (8, 32, 32)), ("body.2", (6, 16, 16)), ("body.3", (6, 16, 16)),
        ("head", (6,)),
    ]
    assert layers[-1].name == "logits"


@pytest.fixture(scope="module")
def vgg16():
    return build_encoder(EncoderSpec("vgg16", weights=None))


def test_vgg_literature_names(vgg16):
    names = {info.name: info for info in list_layers(vgg16)}
    assert names["conv1_1"].path == "body.0" and names["conv1_1"].shape == (64, 224, 224)
    assert names["conv5_3"].path == "body.28" and names["conv5_3"].shape == (512, 14, 14)
    assert names["pool4"].shape == (512, 14, 14)
    assert names["fc7"].path == "neck.5"
    assert resolve_layer(vgg16, "conv4_2") == "body.19"
    assert resolve_layer(vgg16, "features.19") == "body.19"
    assert resolve_layer(vgg16, "logits") == "head"


def test_resnet_uses_torchvision_names():
    encoder = build_encoder(EncoderSpec("resnet18", weights=None))
    assert resolve_layer(encoder, "layer3.1") == "body.6.1"
    assert resolve_layer(encoder, "layer4") == "body.7"
    assert resolve_layer(encoder, "body.7.1.conv2") == "body.7.1.conv2"


def test_bad_layer_name_suggests_the_closest(vgg16, tiny):
    with pytest.raises(ValueError, match=r"unknown layer 'conv5_4'.*did you mean conv5_3"):
        resolve_layer(vgg16, "conv5_4")
    with pytest.raises(ValueError, match="visualize layers"):
        visualize_filters(tiny, "blah", [0], **FAST)


def test_channels_outside_the_layer_name_its_channel_count(tiny):
    with pytest.raises(ValueError, match=r"body.2 has 6 channels \(0..5\); channel 6"):
        check_channels(tiny, "body.2", [0, 6])


# -- grids and weights ---------------------------------------------------------------------

def test_labelled_grid_places_tiles():
    images = torch.zeros(3, 3, 8, 8)
    images[1] = 1.0
    sheet = labelled_grid(images, None, columns=2, gap=4)
    assert sheet.size == (2 * 12 + 4, 2 * 12 + 4)
    assert sheet.getpixel((4, 4)) == (0, 0, 0) and sheet.getpixel((16, 4)) == (255, 255, 255)
    labelled = labelled_grid(images, ["a", "b", "c"], columns=2, gap=4)
    assert labelled.height > sheet.height and labelled.width == sheet.width


def test_kernel_images_map_zero_to_grey_and_the_peak_to_the_ends():
    weight = torch.tensor([[[[1.0, -2.0]], [[0.0, 0.5]], [[2.0, 0.0]]]])
    patches = kernel_images(weight)
    torch.testing.assert_close(patches[0, :, 0], torch.tensor([[0.75, 0.0], [0.5, 0.625], [1.0, 0.5]]))


def test_first_layer_weights_of_lite0(lite0):
    assert first_conv(lite0)[0] == "body.0.0"
    result = first_layer_weights(lite0)
    assert result.images.shape == (32, 3, 3, 3)
    assert result.images.min() >= 0 and result.images.max() <= 1


# -- the real Lite0, small and short -------------------------------------------------------

@pytest.fixture(scope="module")
def small_lite0():
    """The real Lite0 weights, classifying 96-pixel crops, so that a few steps are cheap."""
    lite = EncoderSpec().resolved().preprocessing
    return build_encoder(EncoderSpec(preprocessing=Preprocessing(110, 96, mean=lite.mean, std=lite.std)))


def test_class_visualisation_raises_the_target_probability_and_survives_the_png(small_lite0, tmp_path):
    encoder = small_lite0
    index = resolve_class(encoder.categories, "starfish")
    start = FourierParam(1, 64, seeds=[image_seed(0, index)])()
    before = float(class_probabilities(encoder, start)[0, index])
    result = visualize_class(encoder, "starfish", steps=4, size=64, progress=False)
    after = result.records[0]["probability"]
    assert before < 0.01 and after > 0.9, (before, after)
    assert result.records[0]["top1"] == "starfish"
    path = result.save(tmp_path / "starfish.png")
    pixels = preprocess(load_image(path), encoder.preprocessing).unsqueeze(0)
    with torch.no_grad():
        read_back = float(encoder.classify(pixels).softmax(-1)[0, index])
    assert read_back == pytest.approx(after, abs=1e-4)


def test_deepdream_from_a_photo_on_lite0(small_lite0, examples_dir):
    photo = load_image(examples_dir / "cat.jpg")
    start = preprocess(photo, small_lite0.preprocessing).unsqueeze(0)
    before = float(evaluate(small_lite0, obj.deepdream("features.3.1"), start)[0])
    result = visualize_deepdream(small_lite0, "features.3.1", photo, steps=3, size=None, progress=False)
    assert result.images.shape == (1, 3, 96, 96)
    assert result.records[0]["mean_square"] > 1.1 * before
