"""Do the saliency maps mean something? The sanity checks of Adebayo et al. (2018), each with
controls that ignore the model (a fixed centre blob, an edge detector of the input), which
the same check must reject."""

import copy

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

from captioner.api import Captioner
from captioner.data.images import load_image
from captioner.explain import SaliencySettings, saliency_maps
from conftest import EXAMPLES
from explain_models import GRID, SIZE, region_captioner, region_image
from helpers import DEVICES

FAST = SaliencySettings(samples=2, steps=8)


def fed_ids(captioner, text):
    lexicon = captioner.lexicon()
    return lexicon.fed_ids(torch.tensor([lexicon.start_id, *lexicon.encode_text(text), lexicon.end_id]))


def share_in(saliency: np.ndarray, rows: slice, cols: slice) -> float:
    """The share of a map's total (>= 0) that lies in a region."""
    return float(saliency[rows, cols].sum() / saliency.sum())


def centre_blob(size: int) -> np.ndarray:
    rows, cols = np.mgrid[:size, :size] - (size - 1) / 2
    return np.exp(-(rows ** 2 + cols ** 2) / (2 * (size / 6) ** 2))


def edges(image: torch.Tensor, size: int) -> np.ndarray:
    """An edge detector of the input: |horizontal| + |vertical| differences of the grey image,
    averaged down to ``size`` x ``size``."""
    grey = image.mean(0)
    magnitude = torch.zeros_like(grey)
    magnitude[:, 1:] += (grey[:, 1:] - grey[:, :-1]).abs()
    magnitude[1:, :] += (grey[1:, :] - grey[:-1, :]).abs()
    return torch.nn.functional.adaptive_avg_pool2d(magnitude[None], size)[0].numpy()


def rank_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rank correlation of two maps; 0 where either is constant (no ranking to share)."""
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return 0.0
    return float(spearmanr(a.ravel(), b.ravel())[0])


# -- a hand-built model whose words each depend on one region ------------------------------------------------------
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("method", ["gradcam", "smoothgrad", "integrated_gradients"])
def test_each_word_s_map_lies_in_the_region_it_is_read_from(method, device):
    captioner, image = region_captioner(device), region_image()
    maps = saliency_maps(captioner, image[None].to(device), fed_ids(captioner, "red green"), [method], FAST)[method]
    size = maps.shape[-1]
    half = size // 2
    top_left, bottom_right = (slice(0, half), slice(0, half)), (slice(half, size), slice(half, size))
    # Outside its region a word's map holds only the gates' leaks (about 1e-8 of its peak).
    assert share_in(maps[0], *top_left) > 0.999
    assert share_in(maps[1], *bottom_right) > 0.999
    # Maps that ignore the model fail the same check.
    for control in (centre_blob(size), edges(image, size)):
        assert share_in(control, *top_left) < 0.9 and share_in(control, *bottom_right) < 0.9


def test_gradcam_of_a_word_the_image_does_not_support_is_empty():
    """No green in the bottom-right quarter: nothing in the feature map raises "green", so its
    Grad-CAM is zero, while "red" (supported) keeps its top-left map."""
    captioner = region_captioner()
    fed = fed_ids(captioner, "red green")
    supported = saliency_maps(captioner, region_image(green=True)[None], fed)["gradcam"]
    unsupported = saliency_maps(captioner, region_image(green=False)[None], fed)["gradcam"]
    assert supported[1].max() > 1e-3
    assert unsupported[1].max() == 0.0
    np.testing.assert_allclose(unsupported[0], supported[0], rtol=1e-5)
    assert unsupported.shape == (2, GRID, GRID) and SIZE // 4 == GRID


# -- the bundled model ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def bundled():
    captioner = Captioner.from_checkpoint(device="cpu")
    return captioner, captioner._pixels(load_image(str(EXAMPLES / "cat.jpg")))[None]


def test_gradcam_differs_between_a_supported_and_an_unsupported_word(bundled):
    """"cat" on the cat photo against "rocket" in its place: the maps of the third word rank the
    feature-map cells differently (an unchanged map would correlate 1; a map of a fixed shape,
    or of the input alone, is the same for both words)."""
    captioner, pixels = bundled
    cat = saliency_maps(captioner, pixels, fed_ids(captioner, "a big cat"))["gradcam"][2]
    rocket = saliency_maps(captioner, pixels, fed_ids(captioner, "a big rocket"))["gradcam"][2]
    assert rank_correlation(cat, rocket) < 0.6


def _randomised(captioner, blocks: int, seed: int):
    """A copy of ``captioner`` whose encoder's top ``blocks`` blocks are re-initialised (the
    cascading randomisation of Adebayo et al.: top layers first)."""
    copied = copy.deepcopy(captioner)
    torch.manual_seed(seed)
    for block in list(copied.model.encoder.body.children())[-blocks:]:
        for module in block.modules():
            if isinstance(module, (torch.nn.Conv2d, torch.nn.BatchNorm2d)):
                module.reset_parameters()
    return copied


def _cascade(bundled, method: str, settings=None) -> list[float]:
    captioner, pixels = bundled
    fed = fed_ids(captioner, "a big cat")
    original = saliency_maps(captioner, pixels, fed, [method], settings)[method]
    correlations = []
    for blocks in (1, len(list(captioner.model.encoder.body.children()))):
        changed = saliency_maps(_randomised(captioner, blocks, seed=blocks), pixels, fed, [method], settings)[method]
        correlations.append(float(np.mean([rank_correlation(a, b) for a, b in zip(original, changed)])))
    return correlations


def test_randomising_the_encoder_changes_gradcam(bundled):
    """The mean rank correlation between the words' maps before and after randomising the top
    block, then every block, is well below 1 (a map that ignores the weights keeps 1; two
    unrelated 7 x 7 maps correlate about 0 +- 0.14)."""
    top, everything = _cascade(bundled, "gradcam")
    assert top < 0.6 and everything < 0.6


@pytest.mark.slow
def test_randomising_the_encoder_changes_smoothgrad(bundled):
    """As for Grad-CAM, on the 224 x 224 pixel maps (the same noise draws before and after).
    SmoothGrad keeps some of the input's edges whatever the weights (as Adebayo et al. found),
    so it correlates more than Grad-CAM, but an edge detector of the input would keep 1."""
    top, everything = _cascade(bundled, "smoothgrad", FAST)
    assert top < 0.6 and everything < 0.6
