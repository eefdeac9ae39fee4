"""Inside the LSTM: its gates and cell state at every step of a teacher-forced caption.

The cell is ``torch.nn.LSTM``'s documented one, gates in its order (input, forget, cell,
output), computed here from the decoder's own weights so that every gate can be shown; the
tests check that h and c equal what ``nn.LSTM`` computes, to float rounding.

How much of the image survives: the image enters only as the initial state (h0, c0). Along
the cell's own path c0 reaches step t multiplied by the forget gates of the steps so far,
``c_t = (f_t * ... * f_1) * c0 + (what the words wrote)``. So the forget-gate product
per unit is the fraction of c0 carried straight through, and ``||prod f * c0|| / ||c_t||``
the share of the cell state that is still the image's c0 on that path (it leaves out what
c0 and h0 influence through the gates, which is not a simple product).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..models.decoder import LSTMDecoder

GATES = ("input", "forget", "cell", "output")


@dataclass
class LayerTrace:
    """One LSTM layer over T steps: each gate (T, H) after its nonlinearity (``cell`` is the
    candidate g = tanh(...)), the cell and hidden states (T, H), and the initial state (H,)."""

    input: torch.Tensor
    forget: torch.Tensor
    cell: torch.Tensor
    output: torch.Tensor
    c: torch.Tensor
    h: torch.Tensor
    c0: torch.Tensor
    h0: torch.Tensor

    @property
    def forget_product(self) -> torch.Tensor:
        """(T, H): the fraction of each unit of c0 carried straight through to step t."""
        return self.forget.cumprod(0)

    @property
    def c0_share(self) -> torch.Tensor:
        """(T,): ``||prod f * c0|| / ||c_t||``, the share of the cell state that is c0's direct carry."""
        carried = (self.forget_product * self.c0).norm(dim=1)
        return carried / self.c.norm(dim=1).clamp_min(1e-12)

    def top_units(self, count: int) -> torch.Tensor:
        """The ``count`` most active units (largest mean |h| over the steps), most active first."""
        return self.h.abs().mean(0).argsort(descending=True)[:count]


@torch.no_grad()
def lstm_trace(decoder: LSTMDecoder, features: torch.Tensor, fed: torch.Tensor) -> list[LayerTrace]:
    """Every layer's gates and states for one image: ``features`` (D,) and the tokens the
    network reads ``fed`` (T,) (``<start> w1 .. wn``), in eval mode (no dropout)."""
    h0, c0 = decoder.init_state(features[None].float())
    lstm = decoder.lstm
    inputs = decoder.embed(fed)  # (T, E)
    traces = []
    for layer in range(decoder.config.num_layers):
        weight_ih, weight_hh = getattr(lstm, f"weight_ih_l{layer}"), getattr(lstm, f"weight_hh_l{layer}")
        bias = getattr(lstm, f"bias_ih_l{layer}") + getattr(lstm, f"bias_hh_l{layer}")
        from_inputs = inputs @ weight_ih.t() + bias  # (T, 4H)
        h, c = h0[layer, 0], c0[layer, 0]
        steps = {name: [] for name in (*GATES, "c", "h")}
        for t in range(len(fed)):
            i, f, g, o = (from_inputs[t] + weight_hh @ h).chunk(4)
            i, f, g, o = torch.sigmoid(i), torch.sigmoid(f), torch.tanh(g), torch.sigmoid(o)
            c = f * c + i * g
            h = o * torch.tanh(c)
            for name, value in zip((*GATES, "c", "h"), (i, f, g, o, c, h)):
                steps[name].append(value)
        trace = LayerTrace(**{name: torch.stack(values) for name, values in steps.items()},
                           c0=c0[layer, 0], h0=h0[layer, 0])
        traces.append(trace)
        inputs = trace.h
    return traces
