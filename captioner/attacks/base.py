"""The attack base class: the loop every attack shares.

As in torchattacks, :class:`Attack` does once the parts every attack needs and easily
gets wrong, and an attack writes only :meth:`Attack.perturb`:

* pixels: images are (3, H, W) or (B, 3, H, W) tensors, uint8 or float in [0, 1];
  results are clamped to [0, 1]; the model's normalisation is inside the model, so
  ``eps`` is measured in pixels (``2/255`` is two 8-bit levels);
* device and modes: inputs go to the model's device; the model runs in eval mode (no
  dropout, fixed BatchNorm statistics) and every submodule gets its own mode back;
  gradients are on even inside ``torch.no_grad()``; RNNs run without cuDNN on CUDA
  (:func:`captioner.models.recurrent.rnn_backward_without_cudnn`);
* targeting: untargeted attacks raise the loss of ``labels``, which default to the
  model's own predictions (no label leaking); targeted attacks lower the loss of
  ``target``;
* saving: :meth:`Attack.run` also rounds the result to 8 bits, as a PNG stores it
  (:func:`captioner.data.eightbit.round_within_eps`), reports whether that still
  fools the model, and with ``until_saved=True`` keeps stepping on the 8-bit image
  until it does.

What is attacked is a *victim* (see :mod:`captioner.attacks.victims`); an ``nn.Module``
is wrapped as a classifier.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from ..data.eightbit import LEVELS, round_within_eps
from ..errors import ArgumentError
from ..models.recurrent import rnn_backward_without_cudnn
from .victims import as_victim


@dataclass
class AttackResult:
    """What :meth:`Attack.run` found, per image of the batch (all tensors on the CPU).

    ``labels`` are what was attacked: the clean labels (untargeted) or the targets.
    ``saved`` is ``adversarial`` rounded to 8 bits within the eps-ball
    (:func:`captioner.data.eightbit.round_within_eps`), i.e. what a PNG holds; the
    ``saved_*`` fields describe it. ``fooled`` means "no longer the label"
    (untargeted) or "now the target" (targeted).
    """

    images: torch.Tensor
    adversarial: torch.Tensor
    saved: torch.Tensor
    labels: torch.Tensor
    targeted: bool
    clean_predictions: torch.Tensor
    predictions: torch.Tensor
    saved_predictions: torch.Tensor
    fooled: torch.Tensor
    saved_fooled: torch.Tensor
    extra_steps: int = 0

    def linf(self, saved: bool = True) -> torch.Tensor:
        delta = (self.saved if saved else self.adversarial) - self.images
        return delta.flatten(1).abs().amax(dim=1)

    def l2(self, saved: bool = True) -> torch.Tensor:
        delta = (self.saved if saved else self.adversarial) - self.images
        return delta.flatten(1).norm(dim=1)


class Attack:
    """Base of the L-inf attacks. Subclasses implement :meth:`perturb`.

    ``model`` is an ``nn.Module`` mapping pixels in [0, 1] to logits, or a victim (see
    :mod:`captioner.attacks.victims`). Calling an attack returns the adversarial images like a
    torchattacks attack; :meth:`run` returns an :class:`AttackResult`.
    """

    name = "attack"

    def __init__(self, model, eps: float, *, until_saved: bool = False, max_extra_steps: int = 20):
        if not 0.0 <= eps <= 1.0:
            raise ArgumentError(f"eps must be between 0 and 1 (pixels in [0, 1]; 2/255 = {2 / 255:.5f}), got {eps}")
        if max_extra_steps < 0:
            raise ArgumentError(f"max_extra_steps must be 0 or more, got {max_extra_steps}")
        self.victim = as_victim(model)
        self.eps = float(eps)
        self.until_saved = until_saved
        self.max_extra_steps = max_extra_steps

    # -- what a subclass writes --------------------------------------------------------
    def perturb(self, images: torch.Tensor, labels: torch.Tensor, targeted: bool) -> torch.Tensor:
        """Adversarial versions of ``images`` (B, 3, H, W) within ``eps``, in [0, 1]."""
        raise NotImplementedError

    @property
    def step_size(self) -> float:
        """The step of the extra 8-bit steps of ``until_saved`` (at least one level)."""
        return 1.0 / LEVELS

    # -- helpers for subclasses --------------------------------------------------------
    def gradient(self, pixels: torch.Tensor, labels: torch.Tensor, targeted: bool) -> torch.Tensor:
        """Gradient of what the attacker maximises: the batch-mean loss of ``labels``, or
        minus it when ``labels`` are targets."""
        pixels = pixels.detach().requires_grad_(True)
        loss = self.victim.loss(pixels, labels).mean()
        (grad,) = torch.autograd.grad(-loss if targeted else loss, pixels)
        return grad

    def project(self, candidate: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
        """Back into the L-inf ball of radius eps around ``images``, and into [0, 1]."""
        delta = torch.clamp(candidate - images, min=-self.eps, max=self.eps)
        return torch.clamp(images + delta, min=0.0, max=1.0)

    # -- the public entry points --------------------------------------------------------
    @property
    def device(self) -> torch.device:
        """The model's device: inputs go there."""
        parameter = next(self.victim.module.parameters(), None)
        return parameter.device if parameter is not None else torch.device("cpu")

    def __call__(self, images: torch.Tensor, labels=None, target=None) -> torch.Tensor:
        """Adversarial images, same shape as ``images`` (float in [0, 1])."""
        pixels, batched = self._pixels(images)
        with self._attack_context():
            labels, targeted = self._labels(pixels, labels, target)
            adversarial = self.perturb(pixels, labels, targeted).detach()
        adversarial = adversarial.to(images.device)
        return adversarial if batched else adversarial[0]

    def run(self, images: torch.Tensor, labels=None, target=None) -> AttackResult:
        """Attack, round to 8 bits, and report what fooled the model (see :class:`AttackResult`).

        ``labels``: for untargeted attacks, what to move away from (default: the model's
        own predictions). ``target``: makes the attack targeted (a class index or name for
        classifiers, a caption for captioners; one value applies to the whole batch).
        """
        pixels, _ = self._pixels(images)
        victim = self.victim
        with self._attack_context():
            given = labels
            labels, targeted = self._labels(pixels, labels, target)
            clean = labels if given is None and not targeted else victim.predict(pixels)
            adversarial = self.perturb(pixels, labels, targeted).detach()
            saved, extra = round_within_eps(adversarial, pixels, self.eps), 0
            if self.until_saved:
                saved, extra = self._step_until_saved_fools(pixels, saved, labels, targeted)
            predictions, saved_predictions = victim.predict(adversarial), victim.predict(saved)
        fooled = self._fooled(predictions, labels, targeted)
        saved_fooled = self._fooled(saved_predictions, labels, targeted)
        return AttackResult(
            images=pixels.cpu(), adversarial=adversarial.cpu(), saved=saved.cpu(), labels=labels.cpu(),
            targeted=targeted, clean_predictions=clean.cpu(), predictions=predictions.cpu(),
            saved_predictions=saved_predictions.cpu(), fooled=fooled.cpu(), saved_fooled=saved_fooled.cpu(),
            extra_steps=extra,
        )

    def predict(self, images: torch.Tensor) -> torch.Tensor:
        """The victim's predictions on ``images``, in the same setting as the attack (device, eval mode)."""
        pixels, _ = self._pixels(images)
        with self._attack_context():
            return self.victim.predict(pixels).cpu()

    # -- the boring, error-prone parts -------------------------------------------------
    def _pixels(self, images) -> tuple[torch.Tensor, bool]:
        if not isinstance(images, torch.Tensor):
            raise TypeError(f"attacks take image tensors, got {type(images).__name__}; read files with "
                            "captioner.data.images.load_image and pil_to_tensor")
        batched = images.ndim == 4
        if images.ndim not in (3, 4) or images.shape[-3] != 3:
            raise ArgumentError(f"expected images of shape (3, H, W) or (B, 3, H, W), got {tuple(images.shape)}")
        if images.dtype == torch.uint8:
            pixels = images.float() / LEVELS
        elif images.is_floating_point():
            pixels = images
            low, high = float(images.min()), float(images.max())
            if low < 0.0 or high > 1.0:
                raise ArgumentError(f"pixels must be in [0, 1], got values from {low:.3g} to {high:.3g}; attacks "
                                 "work in pixel space (the normalisation is inside the model)")
        else:
            raise TypeError(f"expected uint8 or float pixels, got {images.dtype}")
        pixels = pixels.detach().to(self.device)
        return (pixels if batched else pixels[None]), batched

    def _labels(self, pixels: torch.Tensor, labels, target) -> tuple[torch.Tensor, bool]:
        batch = len(pixels)
        if target is not None:
            return self.victim.labels_from(target, batch).to(self.device), True
        if labels is None:
            return self.victim.predict(pixels), False
        return self.victim.labels_from(labels, batch).to(self.device), False

    @contextlib.contextmanager
    def _attack_context(self):
        module = self.victim.module
        modes = [(m, m.training) for m in module.modules()]
        module.eval()
        try:
            with torch.enable_grad(), rnn_backward_without_cudnn(module, self.device.type == "cuda"):
                yield
        finally:
            for m, training in modes:
                m.training = training

    def _fooled(self, predictions: torch.Tensor, labels: torch.Tensor, targeted: bool) -> torch.Tensor:
        same = self.victim.matches(predictions, labels)
        return same if targeted else ~same

    def _step_until_saved_fools(self, images, saved, labels, targeted):
        """Sign-gradient steps on the 8-bit image itself (rounded after every step, at least
        one level each) for the images whose saved version does not fool the model yet.
        Stops early when a step changes nothing (e.g. eps below one level: no other level
        lies in the ball)."""
        steps = 0
        fooled = self._fooled(self.victim.predict(saved), labels, targeted)
        while steps < self.max_extra_steps and not bool(fooled.all()):
            grad = self.gradient(saved, labels, targeted)
            moved = round_within_eps(self.project(saved + self.step_size * grad.sign(), images), images, self.eps)
            moved = torch.where(fooled.view(-1, 1, 1, 1), saved, moved)
            if torch.equal(moved, saved):
                break
            saved, steps = moved, steps + 1
            fooled = self._fooled(self.victim.predict(saved), labels, targeted)
        return saved, steps
