"""Feature visualisation by activation maximisation: what a layer's filters respond to and
what an ImageNet class looks like to the network.

The package follows Lucid's seams: :mod:`.param` (how the image is represented),
:mod:`.objectives` (what is maximised), :mod:`.transform` (robustness transforms),
:mod:`.render` (the loop); :mod:`.layers` names layers, :mod:`.grid` lays images out
in labelled grids, and :mod:`.visualize` holds the entry points a notebook or the CLI
uses (class names are resolved by :mod:`captioner.models.labels`)::

    from captioner.models import build_encoder
    from captioner.visualization import visualize_filters, visualize_class

    encoder = build_encoder()                        # offline EfficientNet-Lite0
    visualize_filters(encoder, "features.4.0", range(16)).save("filters.png")
    visualize_class(encoder, "banana").save("banana.png")
"""

from ..models.labels import resolve_class
from . import objectives
from .layers import list_layers, resolve_layer
from .objectives import Objective
from .render import RenderResult, RenderSettings, evaluate, render
from .visualize import (CLASS_SETTINGS, DEEPDREAM_SETTINGS, FILTER_SETTINGS, Visualization, class_probabilities,
                        first_layer_weights, image_seed, visualize_class, visualize_deepdream, visualize_filters,
                        visualize_neuron)

__all__ = [
    "CLASS_SETTINGS", "DEEPDREAM_SETTINGS", "FILTER_SETTINGS", "Objective", "RenderResult", "RenderSettings",
    "Visualization", "class_probabilities", "evaluate", "first_layer_weights", "image_seed", "list_layers",
    "objectives", "render", "resolve_class", "resolve_layer", "visualize_class", "visualize_deepdream",
    "visualize_filters", "visualize_neuron",
]
