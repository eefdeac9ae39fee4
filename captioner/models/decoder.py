"""The caption decoder: word embedding + LSTM, initialised from the image features.

The image's feature vector is projected (one linear map each) to the initial hidden
and cell states h0 and c0 of every LSTM layer. Training uses teacher forcing on
packed variable-length sequences; decoding (:mod:`captioner.decoding`) drives the
same network one step at a time through :meth:`LSTMDecoder.step`.

On a CPU, oneDNN's LSTM kernel is slow on a handful of rows. One step of a 256 -> 512 LSTM
on 2 cores (medians of 200 alternating calls): 0.68 ms with oneDNN and 0.24 ms with
PyTorch's own kernel at 1 row, 0.55 / 0.30 ms at 4 rows, 0.57 / 0.39 ms at 8; at 16 and 64
rows oneDNN was as fast or a little faster (0.67 / 0.69 ms, 1.21 / 1.28 ms). So where
:meth:`LSTMDecoder.step` runs ``nn.LSTM`` (with gradients, as self-critical training samples,
or in training mode), steps of at most ``OWN_KERNEL_MAX_ROWS`` rows on the CPU run without
oneDNN. The two kernels agree to float rounding (about 5e-7 on these sizes), not bit for bit.

Decoding on a CPU (no gradients, eval mode) goes further and computes the LSTM step itself:
the first layer's input is always a word embedding, so its input-gate contribution
``W_ih e + b_ih + b_hh`` is a fixed row per word, computed once for the whole vocabulary
(:meth:`LSTMDecoder.input_gate_table`, recomputed when the weights change) and gathered per
step; only ``W_hh h`` is a matrix product, and the gate arithmetic is PyTorch's documented
LSTM cell. One LSTM step on 2 cores (256 -> 512, vocabulary 3,221; ``nn.LSTM`` as above ->
this; means of 200 calls): 1 row 0.47 -> 0.20 ms, 16 rows 1.78 -> 0.57 ms, 48 rows 2.81 -> 1.27 ms, 64 rows 3.47 ->
2.25 ms; it agrees with ``nn.LSTM`` to float rounding (about 2e-7 on these sizes).
"""

from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass, fields

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

LSTMState = tuple[torch.Tensor, torch.Tensor]

OWN_KERNEL_MAX_ROWS = 8  # CPU decoding steps of at most this many rows run without oneDNN
# The largest word -> input-gate table kept for CPU decoding (vocabulary x 4 hidden values);
# beyond it each step multiplies the embeddings instead.
INPUT_GATE_TABLE_MAX_BYTES = 256 * 2**20
_GATE_CACHE = "_input_gate_cache"  # (key, table or None, copies of the weights it came from)


def _version(tensor: torch.Tensor) -> int | None:
    """The tensor's version counter (None for an inference tensor, which has none)."""
    return None if tensor.is_inference() else tensor._version


def _cpu_autocast() -> bool:
    try:
        return torch.is_autocast_enabled("cpu")
    except TypeError:  # torch < 2.4
        return torch.is_autocast_cpu_enabled()


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
        if self._steps_itself(features.device):  # a search starts: are the table's weights unchanged?
            self._check_input_gate_table()
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
        if self._steps_itself(tokens.device):
            output, state = self._cpu_step(tokens, state)
            return torch.log_softmax(self.out(output), dim=-1), state
        embedded = self.embed(tokens).unsqueeze(1)
        with lstm_kernel_for(embedded):
            output, state = self.lstm(embedded, state)
        return torch.log_softmax(self.out(output.squeeze(1)), dim=-1), state

    @staticmethod
    def reorder_state(state: LSTMState, index: torch.Tensor) -> LSTMState:
        """Select (and repeat) sequences of the state along the batch dimension."""
        h, c = state
        return h.index_select(1, index), c.index_select(1, index)

    def input_gate_table(self) -> torch.Tensor | None:
        """``W_ih e_w + b_ih + b_hh`` of the first LSTM layer for every word w: (vocab, 4 hidden),
        or None when it would exceed ``INPUT_GATE_TABLE_MAX_BYTES``.

        Cached. It is recomputed when the embedding or those weights are replaced or changed
        in place the way autograd sees (their version counters: optimizers, ``load_state_dict``,
        ``torch.no_grad()`` edits), and :meth:`init_state`, which starts every search, also
        compares them with copies of the values the table came from, which catches changes
        that bypass the counters (writes through ``.data``, fused optimizers). Moving or
        casting the module (``.to``, ``.half``) drops it, and it is never pickled or copied.
        """
        sources = self._table_sources()
        key = tuple((w.data_ptr(), _version(w), w.dtype, w.device, w.shape) for w in sources)
        cached = self.__dict__.get(_GATE_CACHE)
        if cached is not None and cached[0] == key:
            return cached[1]
        embedding, weight_ih, bias_ih, bias_hh = (w.detach() for w in sources)
        size = embedding.shape[0] * weight_ih.shape[0] * embedding.element_size()
        table, copies = None, ()
        if size <= INPUT_GATE_TABLE_MAX_BYTES:
            with torch.no_grad():
                table = torch.addmm(bias_ih + bias_hh, embedding, weight_ih.t())
                copies = tuple(w.clone() for w in (embedding, weight_ih, bias_ih, bias_hh))
        self.__dict__[_GATE_CACHE] = (key, table, copies)
        return table

    def _table_sources(self) -> tuple[torch.Tensor, ...]:
        lstm = self.lstm
        return self.embed.weight, lstm.weight_ih_l0, lstm.bias_ih_l0, lstm.bias_hh_l0

    def _check_input_gate_table(self) -> None:
        """Drop the cached table if its weights no longer hold the values it was computed from."""
        cached = self.__dict__.get(_GATE_CACHE)
        if cached is None or cached[1] is None:
            return
        for copy, weight in zip(cached[2], self._table_sources()):
            weight = weight.detach()
            if (copy.shape != weight.shape or copy.dtype != weight.dtype or copy.device != weight.device
                    or not torch.equal(copy, weight)):
                del self.__dict__[_GATE_CACHE]
                return

    def _steps_itself(self, device: torch.device) -> bool:
        """Whether :meth:`step` computes the LSTM cell itself: on a CPU, without gradients or
        autocast, with the LSTM in eval mode (no dropout between layers)."""
        return (device.type == "cpu" and not self.lstm.training and not torch.is_grad_enabled()
                and not _cpu_autocast())

    def _apply(self, fn, *args, **kwargs):
        self.__dict__.pop(_GATE_CACHE, None)
        return super()._apply(fn, *args, **kwargs)

    def __getstate__(self):
        state = dict(super().__getstate__())
        state.pop(_GATE_CACHE, None)
        return state

    def _cpu_step(self, tokens: torch.Tensor, state: LSTMState) -> tuple[torch.Tensor, LSTMState]:
        """The LSTM step of :meth:`step` computed directly (no gradients, eval mode): the cell
        of ``torch.nn.LSTM``'s documentation, gates in its order (input, forget, cell, output)."""
        h_all, c_all = state
        table = self.input_gate_table()
        lstm, hs, cs = self.lstm, [], []
        for layer in range(self.config.num_layers):
            weight_hh = getattr(lstm, f"weight_hh_l{layer}")
            if layer > 0:
                gates = torch.addmm(getattr(lstm, f"bias_ih_l{layer}"), hs[-1], getattr(lstm, f"weight_ih_l{layer}").t())
                gates.add_(getattr(lstm, f"bias_hh_l{layer}"))
            elif table is not None:
                gates = table.index_select(0, tokens)
            else:
                gates = torch.addmm(lstm.bias_ih_l0, self.embed(tokens), lstm.weight_ih_l0.t()).add_(lstm.bias_hh_l0)
            gates = gates.addmm_(h_all[layer], weight_hh.t())
            in_gate, forget_gate, cell_gate, out_gate = gates.chunk(4, 1)
            c = torch.sigmoid(forget_gate) * c_all[layer] + torch.sigmoid(in_gate) * torch.tanh(cell_gate)
            hs.append(torch.sigmoid(out_gate) * torch.tanh(c))
            cs.append(c)
        return hs[-1], (torch.stack(hs), torch.stack(cs))
