"""Models: image encoders, the LSTM decoder and the captioning network that joins them."""

from .captioner import CaptionModel
from .decoder import DecoderConfig, LSTMDecoder
from .encoder import EncoderSpec, EncoderUnavailable, ImageEncoder, build_encoder

__all__ = [
    "CaptionModel", "DecoderConfig", "EncoderSpec", "EncoderUnavailable", "ImageEncoder", "LSTMDecoder",
    "build_encoder",
]
