"""captioner: CNN + LSTM image captioning, with network visualisation and adversarial tools."""

__version__ = "0.1.0"

from .api import Caption, Captioner, CaptionResult  # noqa: E402

__all__ = ["Caption", "CaptionResult", "Captioner", "__version__"]
