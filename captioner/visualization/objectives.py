"""Objectives: what the optimisation maximises, composable as in Lucid.

An :class:`Objective` maps the recorded activations (a dict from layer name to tensor;
``"input"`` is the batch of images before the robustness transforms) to one value per
image, shape (B,). The render loop maximises their sum, so each image follows only its
own value. Objectives combine with ``+``, ``-``, ``*`` and ``/`` with numbers or other
objectives::

    channel("body.4", 7) + 0.5 * deepdream("body.3") - 0.1 * total_variation()

Wherever an objective takes a channel index, a sequence of indices gives each image of
the batch its own channel (the batched filter grid).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from ..errors import ArgumentError

Activations = dict[str, torch.Tensor]

INPUT = "input"
LOGITS = "logits"


class Objective:
    """A function of the activations, one value per image, to be maximised."""

    def __init__(self, fn: Callable[[Activations], torch.Tensor], layers: Sequence[str], name: str):
        self.fn = fn
        self.layers = tuple(dict.fromkeys(layers))
        self.name = name

    def __call__(self, acts: Activations) -> torch.Tensor:
        return self.fn(acts)

    def __repr__(self) -> str:
        return f"Objective({self.name})"

    def _combine(self, other, op: Callable, symbol: str, reflected: bool = False) -> "Objective":
        if isinstance(other, Objective):
            left, right = (other, self) if reflected else (self, other)
            return Objective(lambda acts: op(left(acts), right(acts)), left.layers + right.layers,
                             f"({left.name} {symbol} {right.name})")
        if not isinstance(other, (int, float)):
            return NotImplemented
        number = float(other)
        if reflected:
            return Objective(lambda acts: op(number, self(acts)), self.layers, f"({number:g} {symbol} {self.name})")
        return Objective(lambda acts: op(self(acts), number), self.layers, f"({self.name} {symbol} {number:g})")

    def __add__(self, other):
        return self._combine(other, lambda a, b: a + b, "+")

    def __radd__(self, other):
        return self._combine(other, lambda a, b: a + b, "+", reflected=True)

    def __sub__(self, other):
        return self._combine(other, lambda a, b: a - b, "-")

    def __rsub__(self, other):
        return self._combine(other, lambda a, b: a - b, "-", reflected=True)

    def __mul__(self, other):
        return self._combine(other, lambda a, b: a * b, "*")

    def __rmul__(self, other):
        return self._combine(other, lambda a, b: a * b, "*", reflected=True)

    def __truediv__(self, other):
        return self._combine(other, lambda a, b: a / b, "/")

    def __neg__(self) -> "Objective":
        return Objective(lambda acts: -self(acts), self.layers, f"-{self.name}")


def _pick(acts: torch.Tensor, index: int | Sequence[int]) -> torch.Tensor:
    """Channel ``index`` of each image: (B, C, ...) -> (B, ...). A sequence gives image b
    channel index[b]."""
    if isinstance(index, int):
        return acts[:, index]
    if len(index) != acts.shape[0]:
        raise ArgumentError(f"{len(index)} channels for a batch of {acts.shape[0]} images")
    return acts[torch.arange(acts.shape[0], device=acts.device), torch.as_tensor(list(index), device=acts.device)]


def _describe(index: int | Sequence[int]) -> str:
    return str(index) if isinstance(index, int) else "[" + ",".join(str(i) for i in index) + "]"


def _per_image_mean(values: torch.Tensor) -> torch.Tensor:
    return values.reshape(values.shape[0], -1).mean(dim=1)


def channel(layer: str, index: int | Sequence[int]) -> Objective:
    """Mean activation of a channel over all positions (for a (B, C) layer: the unit)."""
    return Objective(lambda acts: _per_image_mean(_pick(acts[layer], index)), [layer],
                     f"channel({layer}, {_describe(index)})")


def neuron(layer: str, index: int | Sequence[int], x: int | None = None, y: int | None = None) -> Objective:
    """Activation of a channel at one spatial position (default: the centre of the
    layer's output). The grid's size changes with the random scale of each step; a
    position past its edge is taken at the edge."""

    def fn(acts: Activations) -> torch.Tensor:
        picked = _pick(acts[layer], index)
        if picked.ndim != 3:
            raise ArgumentError(f"neuron objective needs a layer with a spatial grid; {layer} has shape "
                             f"{tuple(acts[layer].shape[1:])}")
        height, width = picked.shape[-2:]
        row = height // 2 if y is None else min(y, height - 1)
        col = width // 2 if x is None else min(x, width - 1)
        return picked[:, row, col]

    where = "" if x is None and y is None else f", x={x}, y={y}"
    return Objective(fn, [layer], f"neuron({layer}, {_describe(index)}{where})")


def class_logit(index: int | Sequence[int]) -> Objective:
    """The pre-softmax score of an ImageNet class: maximising it, rather than the
    probability, asks for more of the class instead of less of the other 999."""
    return Objective(lambda acts: _pick(acts[LOGITS], index), [LOGITS], f"class_logit({_describe(index)})")


def deepdream(layer: str) -> Objective:
    """Mean square of a whole layer: amplifies whatever the layer already sees."""
    return Objective(lambda acts: _per_image_mean(acts[layer].pow(2)), [layer], f"deepdream({layer})")


def l2(center: float = 0.5) -> Objective:
    """Mean squared distance of the input pixels from grey; subtract it to keep colours tame."""
    return Objective(lambda acts: _per_image_mean((acts[INPUT] - center).pow(2)), [INPUT], "l2(input)")


def total_variation() -> Objective:
    """Mean absolute difference between neighbouring input pixels; subtract it for
    smoother images."""

    def fn(acts: Activations) -> torch.Tensor:
        images = acts[INPUT]
        dx = (images[..., :, 1:] - images[..., :, :-1]).abs()
        dy = (images[..., 1:, :] - images[..., :-1, :]).abs()
        return _per_image_mean(dx) + _per_image_mean(dy)

    return Objective(fn, [INPUT], "total_variation(input)")
