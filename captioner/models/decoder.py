"""The caption decoder: word embedding + LSTM, initialised from the image features.

The image's feature vector is projected (one linear map each) to the initial hidden
and cell states h0 and c0 of every LSTM layer. Training uses teacher forcing on
packed variable-length sequences; decoding (:mod:`captioner.decoding`) drives the
same network one step at a time through a stepper (:mod:`captioner.models.stepping`), which
on a CPU computes the step itself and elsewhere calls :meth:`LSTMDecoder.step`.

On a CPU, oneDNN's LSTM kernel is slow on a handful of rows. One step of a 256 -> 512 LSTM
on 2 cores (medians of 200 alternating calls): 0.68 ms with oneDNN and 0.24 ms with
PyTorch's own kernel at 1 row, 0.55 / 0.30 ms at 4 rows, 0.57 / 0.39 ms at 8; at 16 and 64
rows oneDNN was as fast or a little faster (0.67 / 0.69 ms, 1.21 / 1.28 ms). So where
:meth:`LSTMDecoder.step` runs ``nn.LSTM`` (with gradients, as self-critical training samples,
or in training mode), steps of at most ``OWN_KERNEL_MAX_ROWS`` rows on the CPU run without
oneDNN. The two kernels agree to float rounding (about 5e-7 on these sizes), not bit for bit.
"""

from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass, fields

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

LSTMState = tuple[torch.Tensor, torch.Tensor]

OWN_KERNEL_MAX_ROWS = 8  # CPU decoding steps of at most this many rows run without oneDNN


@contextlib.contextmanager
def lstm_kernel_for(inputs: torch.Tensor):
    """Turn oneDNN off while open when ``inputs`` are a small CPU batch (see the module's
    docstring); restore the previous setting on exit."""
    if inputs.device.type != "cpu" or inputs.shape[0] > OWN_KERNEL_MAX_ROWS or not torch.backends.mkldnn.enabled:
        yield
        return
    torch.backends.mkldnn.enabled = False
    try:
        yield
    finally:
        torch.backends.mkldnn.enabled = True


@dataclass(frozen=True)
class DecoderConfig:
    """The decoder's shape. ``feature_dim`` is the encoder's output size."""

    vocab_size: int
    feature_dim: int
    embed_dim: int = 512
    hidden_size: int = 512
    num_layers: int = 1
    dropout: float = 0.5
    # "layernorm" normalises the image features before they are projected to h0 and c0;
    # "none" uses them as the encoder gives them.
    feature_norm: str = "none"

    def __post_init__(self):
        """Check each value's type, then its range: a config read from a checkpoint or a file
        may hold anything (``"512"`` for 512)."""
        for name in ("vocab_size", "feature_dim", "embed_dim", "hidden_size", "num_layers"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"decoder {name} must be a whole number, got {value!r} (a {type(value).__name__})")
            if value <= 0:
                raise ValueError(f"decoder {name} must be positive, got {value}")
        if isinstance(self.dropout, bool) or not isinstance(self.dropout, (int, float)):
            raise ValueError(f"decoder dropout must be a number, got {self.dropout!r} (a {type(self.dropout).__name__})")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"decoder dropout must be in [0, 1), got {self.dropout}")
        if self.feature_norm not in ("none", "layernorm"):
            raise ValueError(f"decoder feature_norm must be none or layernorm, got {self.feature_norm!r}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "DecoderConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown decoder config keys: {sorted(unknown)}")
        return cls(**data)


class LSTMDecoder(nn.Module):
    def __init__(self, config: DecoderConfig, pad_id: int = 0):
        super().__init__()
        self.config = config
        layers, hidden = config.num_layers, config.hidden_size
        self.embed = nn.Embedding(config.vocab_size, config.embed_dim, padding_idx=pad_id)
        self.feature_norm = nn.LayerNorm(config.feature_dim) if config.feature_norm == "layernorm" else nn.Identity()
        self.init_h = nn.Linear(config.feature_dim, layers * hidden)
        self.init_c = nn.Linear(config.feature_dim, layers * hidden)
        self.lstm = nn.LSTM(
            config.embed_dim, hidden, num_layers=layers, batch_first=True,
            dropout=config.dropout if layers > 1 else 0.0,
        )
        self.dropout = nn.Dropout(config.dropout)
        self.out = nn.Linear(hidden, config.vocab_size)

    def init_state(self, features: torch.Tensor) -> LSTMState:
        """h0 and c0 of every layer from the image features: each (layers, B, hidden)."""
        if features.ndim != 2 or features.shape[1] != self.config.feature_dim:
            raise ValueError(
                f"decoder expects features of shape (B, {self.config.feature_dim}), got {tuple(features.shape)}"
            )
        features = self.dropout(self.feature_norm(features))
        batch, layers, hidden = features.shape[0], self.config.num_layers, self.config.hidden_size
        h0 = self.init_h(features).view(batch, layers, hidden).transpose(0, 1).contiguous()
        c0 = self.init_c(features).view(batch, layers, hidden).transpose(0, 1).contiguous()
        return h0, c0

    def forward(self, features: torch.Tensor, captions: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Teacher-forced logits.

        ``captions`` (B, T) hold ``<start> w1 .. wn <end>`` padded with ``<pad>``;
        ``lengths`` (B,) count the tokens including both specials. The network reads
        ``captions[:, :-1]`` and the returned logits (B, T-1, vocab) predict
        ``captions[:, 1:]``; positions past each caption's end are zero.
        """
        inputs = captions[:, :-1]
        steps = (lengths - 1).clamp(min=1).cpu()
        embedded = self.dropout(self.embed(inputs))
        packed = pack_padded_sequence(embedded, steps, batch_first=True, enforce_sorted=False)
        output, _ = self.lstm(packed, self.init_state(features))
        output, _ = pad_packed_sequence(output, batch_first=True, total_length=inputs.shape[1])
        return self.out(self.dropout(output))

    def step(self, tokens: torch.Tensor, state: LSTMState) -> tuple[torch.Tensor, LSTMState]:
        """One decoding step: log-probabilities (N, vocab) of the next token after ``tokens`` (N,)."""
        embedded = self.embed(tokens).unsqueeze(1)
        with lstm_kernel_for(embedded):
            output, state = self.lstm(embedded, state)
        return torch.log_softmax(self.out(output.squeeze(1)), dim=-1), state

    @staticmethod
    def reorder_state(state: LSTMState, index: torch.Tensor) -> LSTMState:
        """Select (and repeat) sequences of the state along the batch dimension."""
        h, c = state
        return h.index_select(1, index), c.index_select(1, index)
