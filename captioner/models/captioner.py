"""The captioning network: an image encoder feeding an LSTM decoder."""

from __future__ import annotations

import torch
from torch import nn

from ..checkpoint import Checkpoint
from .decoder import DecoderConfig, LSTMDecoder
from .encoder import EncoderSpec, ImageEncoder, build_encoder


class CaptionModel(nn.Module):
    """``encoder`` (pixels -> feature vector) and ``decoder`` (features -> words)."""

    def __init__(self, encoder: ImageEncoder, decoder: LSTMDecoder):
        super().__init__()
        if encoder.feature_dim != decoder.config.feature_dim:
            raise ValueError(
                f"encoder {encoder.spec.backbone} gives {encoder.feature_dim}-d features but the decoder "
                f"expects {decoder.config.feature_dim}"
            )
        self.encoder = encoder
        self.decoder = decoder

    def forward(self, pixels: torch.Tensor, captions: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Teacher-forced logits for images given as pixels (see ``LSTMDecoder.forward``)."""
        return self.decoder(self.encoder(pixels), captions, lengths)

    def encoder_state_to_save(self) -> dict | None:
        """The encoder's weights if they cannot be rebuilt from its spec, else None."""
        if self.encoder.fine_tuned or self.encoder.spec.weights is None:
            return self.encoder.state_dict()
        return None

    @classmethod
    def from_checkpoint(cls, checkpoint: Checkpoint, pretrained_encoder: bool = True) -> "CaptionModel":
        """Rebuild the model a checkpoint describes; a mismatch raises CheckpointError naming its file.

        ``pretrained_encoder=False`` skips loading the encoder's pretrained weights when the
        checkpoint does not store them (enough to check that everything fits)."""
        try:
            return cls._build(checkpoint, pretrained_encoder)
        except (ValueError, TypeError, KeyError) as error:
            raise checkpoint.error(f"damaged checkpoint: {error}") from None

    @classmethod
    def _build(cls, checkpoint: Checkpoint, pretrained_encoder: bool) -> "CaptionModel":
        spec = EncoderSpec.from_dict(checkpoint.encoder_spec)
        stored = checkpoint.encoder_state
        encoder = build_encoder(spec, load_weights=stored is None and pretrained_encoder)
        if stored is not None:
            _load(encoder, stored, "encoder")
            encoder.fine_tuned = True
        config = DecoderConfig.from_dict(checkpoint.decoder_config)
        words = len(checkpoint.vocab["itos"])
        if config.vocab_size != words:
            raise ValueError(f"decoder has {config.vocab_size} output words but the vocabulary has {words}")
        decoder = LSTMDecoder(config)
        _load(decoder, checkpoint.decoder_state, "decoder")
        return cls(encoder, decoder)


def _load(module: nn.Module, state: dict, what: str) -> None:
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise ValueError(f"{what} weights do not fit: missing {missing[:3]}, unexpected {unexpected[:3]}")
    for key, value in state.items():
        if tuple(value.shape) != tuple(expected[key].shape):
            raise ValueError(
                f"{what} weight {key} has shape {tuple(value.shape)}, the model expects {tuple(expected[key].shape)}"
            )
    module.load_state_dict({k: v.to(expected[k].dtype) for k, v in state.items()})
