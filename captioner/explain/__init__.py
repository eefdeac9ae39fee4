"""Explaining a caption: per word its probability, the alternatives and the beam, saliency
maps over the image (Grad-CAM, SmoothGrad, Integrated Gradients, by Captum) and the LSTM's
gates and cell state. ``captioner explain`` is the command over :func:`explain_images`."""

from .explain import Explanation, Word, explain_images, saliency_maps
from .gates import LayerTrace, lstm_trace
from .saliency import METHODS, PIXEL_METHODS, SaliencySettings

__all__ = ["METHODS", "PIXEL_METHODS", "Explanation", "LayerTrace", "SaliencySettings", "Word", "explain_images",
           "lstm_trace", "saliency_maps"]
