"""Stepping an :class:`LSTMDecoder` one word at a time for a search: the fast CPU step beside
the model, not inside it.

A search (:mod:`captioner.decoding.search`) drives a *stepper* made for it from the decoder
and the image features (:class:`LSTMStepper`): its ``state`` holds h0 and c0, ``step(tokens,
state)`` gives the next word's log-probabilities, ``reorder(state, index)`` selects rows.

Decoding on a CPU (no gradients, no autocast, the LSTM in eval mode) computes the LSTM step
itself: the first layer's input is always a word embedding, so its input-gate contribution
``W_ih e + b_ih + b_hh`` is a fixed row per word, computed once for the whole vocabulary and
gathered per step; only ``W_hh h`` is a matrix product, and the gate arithmetic is PyTorch's
documented LSTM cell. One LSTM step on 2 cores (256 -> 512, vocabulary 3,221; ``nn.LSTM`` ->
this; means of 200 calls): 1 row 0.47 -> 0.20 ms, 16 rows 1.78 -> 0.57 ms, 48 rows 2.81 ->
1.27 ms, 64 rows 3.47 -> 2.25 ms; it agrees with ``nn.LSTM`` to float rounding (about 2e-7).

The word -> input-gate table is kept between searches by :data:`TABLES`, outside the
module (so it is never pickled, copied or moved with it). Each stepper asks for it when it
is made, and the table is rebuilt whenever the weights it came from are not the ones the
decoder holds now: other tensors (a ``.to``, a cast, ``load_state_dict``), a version counter
that moved (optimizers, ``torch.no_grad()`` edits) or other values (writes through ``.data``,
fused optimizers: compared with copies, about 0.3 ms per search). Elsewhere (CUDA, gradients,
autocast, training mode) the stepper runs the decoder's own ``nn.LSTM`` step.
"""

from __future__ import annotations

import functools
import threading
import weakref

import torch

from .decoder import LSTMDecoder, LSTMState

# The largest word -> input-gate table kept (vocabulary x 4 hidden values); beyond it each
# step multiplies the embeddings instead.
INPUT_GATE_TABLE_MAX_BYTES = 256 * 2**20


def _version(tensor: torch.Tensor) -> int | None:
    """The tensor's version counter (None for an inference tensor, which has none)."""
    return None if tensor.is_inference() else tensor._version


def _cpu_autocast() -> bool:
    try:
        return torch.is_autocast_enabled("cpu")
    except TypeError:  # torch < 2.4
        return torch.is_autocast_cpu_enabled()


def steps_itself(decoder: LSTMDecoder, device: torch.device) -> bool:
    """Whether a stepper computes the LSTM cell itself: on a CPU, without gradients or
    autocast, with the LSTM in eval mode (no dropout between layers)."""
    return (device.type == "cpu" and not decoder.lstm.training and not torch.is_grad_enabled()
            and not _cpu_autocast())


def _table_sources(decoder: LSTMDecoder) -> tuple[torch.Tensor, ...]:
    lstm = decoder.lstm
    return tuple(w.detach() for w in (decoder.embed.weight, lstm.weight_ih_l0, lstm.bias_ih_l0, lstm.bias_hh_l0))


class InputGateTables:
    """``W_ih e_w + b_ih + b_hh`` of the first LSTM layer for every word w, per decoder, kept
    while the decoder lives and its weights are the ones the table came from."""

    def __init__(self, max_bytes: int | None = None):
        self.max_bytes = max_bytes
        self._kept: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()

    def table(self, decoder: LSTMDecoder) -> torch.Tensor | None:
        """The table for ``decoder``'s current weights: (vocab, 4 hidden), or None when it would
        exceed the size limit."""
        sources = _table_sources(decoder)
        key = tuple((w.data_ptr(), _version(w), w.dtype, w.device, w.shape) for w in sources)
        with self._lock:
            kept = self._kept.get(decoder)
            if kept is not None and kept[0] == key and all(torch.equal(a, b) for a, b in zip(kept[2], sources)):
                return kept[1]
            embedding, weight_ih, bias_ih, bias_hh = sources
            limit = INPUT_GATE_TABLE_MAX_BYTES if self.max_bytes is None else self.max_bytes
            table, copies = None, ()
            if embedding.shape[0] * weight_ih.shape[0] * embedding.element_size() <= limit:
                with torch.no_grad():
                    table = torch.addmm(bias_ih + bias_hh, embedding, weight_ih.t())
                copies = tuple(w.clone() for w in sources)
            self._kept[decoder] = (key, table, copies)
            return table


TABLES = InputGateTables()


class LSTMStepper:
    """One search's stepper over an :class:`LSTMDecoder` (see the module's docstring).

    ``fast``: compute the CPU step with the word -> input-gate table; False runs the decoder's
    ``nn.LSTM`` step; None decides where the search first steps (:func:`steps_itself`: searches
    run without gradients, whatever the caller's mode when it made the stepper). The initial
    state is likewise computed where the search first reads it.
    """

    def __init__(self, decoder: LSTMDecoder, features: torch.Tensor, fast: bool | None = None,
                 tables: InputGateTables = TABLES):
        self.decoder, self.features, self.tables = decoder, features, tables
        self.rows, self.device = features.shape[0], features.device
        self._fast, self.table, self._fetched = fast, None, False

    @functools.cached_property
    def state(self) -> LSTMState:
        return self.decoder.init_state(self.features)

    @property
    def fast(self) -> bool:
        """Whether the steps are computed by hand (decided, and the table fetched, on first use)."""
        if self._fast is None:
            self._fast = steps_itself(self.decoder, self.device)
        if self._fast and not self._fetched:
            self.table, self._fetched = self.tables.table(self.decoder), True
        return self._fast

    def step(self, tokens: torch.Tensor, state: LSTMState) -> tuple[torch.Tensor, LSTMState]:
        """Log-probabilities (N, vocab) of the next token after ``tokens`` (N,), and the new state."""
        if not self.fast:
            return self.decoder.step(tokens, state)
        output, state = self._cell(tokens, state)
        return torch.log_softmax(self.decoder.out(output), dim=-1), state

    reorder = staticmethod(LSTMDecoder.reorder_state)

    def _cell(self, tokens: torch.Tensor, state: LSTMState) -> tuple[torch.Tensor, LSTMState]:
        """The LSTM step computed directly: the cell of ``torch.nn.LSTM``'s documentation, gates
        in its order (input, forget, cell, output)."""
        h_all, c_all = state
        decoder, table = self.decoder, self.table
        lstm, hs, cs = decoder.lstm, [], []
        for layer in range(decoder.config.num_layers):
            weight_hh = getattr(lstm, f"weight_hh_l{layer}")
            if layer > 0:
                weight_ih = getattr(lstm, f"weight_ih_l{layer}")
                gates = torch.addmm(getattr(lstm, f"bias_ih_l{layer}"), hs[-1], weight_ih.t())
                gates.add_(getattr(lstm, f"bias_hh_l{layer}"))
            elif table is not None:
                gates = table.index_select(0, tokens)
            else:
                gates = torch.addmm(lstm.bias_ih_l0, decoder.embed(tokens), lstm.weight_ih_l0.t())
                gates.add_(lstm.bias_hh_l0)
            gates = gates.addmm_(h_all[layer], weight_hh.t())
            in_gate, forget_gate, cell_gate, out_gate = gates.chunk(4, 1)
            c = torch.sigmoid(forget_gate) * c_all[layer] + torch.sigmoid(in_gate) * torch.tanh(cell_gate)
            hs.append(torch.sigmoid(out_gate) * torch.tanh(c))
            cs.append(c)
        return hs[-1], (torch.stack(hs), torch.stack(cs))

