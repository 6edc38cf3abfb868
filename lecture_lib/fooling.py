r"""Adversarial examples: the smallest change that makes the network call an image another class.

Szegedy et al. (2014) and Goodfellow et al. (2015) call such changed images *adversarial
examples*; Stanford's CS231n calls them fooling images, the name of the functions here. In
Nguyen et al. (2015) a *fooling image* is something else: an image that shows nothing
recognisable and is still classified with high confidence, as the class models of
``class_model.visualize`` are.

The lecture's Taylor expansion says how. Near an image :math:`I_0` every class score is almost
linear, :math:`S_k(I_0 + \delta) \approx S_k(I_0) + w_k^T \delta` with
:math:`w_k = \partial S_k / \partial I |_{I_0}`. The network calls the image class c; to make it
call it t instead, the margin :math:`m = S_t - S_c` (negative at :math:`I_0`) must pass 0:

.. math:: m(I_0 + \delta) \approx m_0 + g^T \delta, \qquad g = w_t - w_c .

The smallest change that does it, for this linear model, lies along g:

- measured by its length :math:`\|\delta\|_2`: :math:`\delta = -m_0\, g / \|g\|_2^2`, of length
  :math:`|m_0| / \|g\|_2`;
- measured by its largest pixel change :math:`\|\delta\|_\infty`: :math:`\delta = \varepsilon\,
  \operatorname{sign}(g)` with :math:`\varepsilon = |m_0| / \|g\|_1` (a signed step like the fast
  gradient sign method of Goodfellow et al. 2015).

Both put the change where :math:`|g|` is large: the pixels with the largest gradient are where
the least change flips the class, whether or not the object is there (``taylor_estimate``).

``fooling_image`` takes small gradient steps on :math:`S_t` until the network agrees (as in
Stanford's CS231n assignment); ``fast_gradient_sign`` takes one signed step, as small as will
do. Both return a ``Fooling``: the changed image, the change, the steps taken, and the class
read back from the model; ``print(result)`` reports the change's size.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from tqdm.auto import tqdm

from . import answer_calls, precision, threads
from .targets import (
    Neuron,
    as_batch,
    check_channels,
    explaining,
    model_device,
    model_dtype,
    target_indices,
    with_gradients,
)

GREY_LEVEL = 1 / 255
"""One step of an 8-bit image: the unit in which ``fast_gradient_sign`` searches its epsilon."""


@dataclass(frozen=True)
class Fooling:
    """A fooling attempt: ``image = original + change`` and what the model says of it.

    Every tensor has a batch axis ``[N, ...]``, unless the input was one image (then none).
    ``source`` is the class the model gave the original, ``target`` the class asked for,
    ``predicted`` the class the model gives ``image`` (read back from the model).
    """

    original: torch.Tensor
    image: torch.Tensor
    change: torch.Tensor
    steps: torch.Tensor
    source: torch.Tensor
    target: torch.Tensor
    predicted: torch.Tensor
    method: str

    @property
    def fooled(self) -> torch.Tensor:
        """True where the model calls the changed image the target class."""
        return self.predicted == self.target

    def _per_example(self) -> torch.Tensor:
        return self.change.reshape(-1, *self.original.shape[-3:]).flatten(1)

    def _shaped(self, values: torch.Tensor) -> torch.Tensor:
        return values[0] if self.original.ndim == 3 else values

    @property
    def l2(self) -> torch.Tensor:
        r""":math:`\|\delta\|_2`, the length of the change (per example)."""
        return self._shaped(self._per_example().norm(dim=1))

    @property
    def linf(self) -> torch.Tensor:
        r""":math:`\|\delta\|_\infty`, the largest change of one pixel's channel (per example)."""
        return self._shaped(self._per_example().abs().amax(dim=1))

    @property
    def relative_l2(self) -> torch.Tensor:
        r""":math:`\|\delta\|_2 / \|I_0\|_2`: the change's length relative to the image's."""
        images = self.original.reshape(-1, *self.original.shape[-3:]).flatten(1)
        return self._shaped(self._per_example().norm(dim=1) / images.norm(dim=1))

    def __str__(self) -> str:
        columns = (self.source, self.target, self.fooled, self.steps, self.l2, self.linf)
        rows = zip(*(torch.atleast_1d(v).tolist() for v in columns), strict=True)
        relative = torch.atleast_1d(self.relative_l2).tolist()
        lines = [
            f"{self.method}: the change delta = image - original",
            "image  class -> target  fooled  steps  ||delta||_2 (of ||image||_2)  ||delta||_inf",
        ]
        for i, ((source, target, fooled, steps, l2, linf), share) in enumerate(zip(rows, relative)):
            lines.append(
                f"{i:>5}  {source:>5} -> {target:<6}  {'yes' if fooled else 'no':>6}  {steps:>5}  "
                f"{l2:>12.3f} ({share:>6.2%})        {linf:.3f} = {linf * 255:.0f}/255"
            )
        return "\n".join(lines)


@dataclass(frozen=True)
class TaylorEstimate:
    r"""What the first-order Taylor expansion predicts for fooling ``source`` into ``target``.

    ``margin`` :math:`m_0 = S_t - S_c` (negative), ``gradient`` :math:`g = w_t - w_c`;
    ``l2`` :math:`|m_0| / \|g\|_2` and ``linf`` :math:`|m_0| / \|g\|_1`, the sizes of the
    smallest changes that flip the class if the scores were linear.
    """

    margin: torch.Tensor
    gradient: torch.Tensor
    l2: torch.Tensor
    linf: torch.Tensor

    @threads.under_policy
    def predicted_margin(self, change: torch.Tensor) -> torch.Tensor:
        r"""The margin that the linear model predicts after the change :math:`\delta`,
        :math:`m_0 + g^T \delta` (per example; ``change`` shaped as the images), to compare with
        the margin the network really gives :math:`I_0 + \delta`."""
        change = torch.as_tensor(change, dtype=self.gradient.dtype)
        if change.shape != self.gradient.shape:
            raise ValueError(
                f"predicted_margin: change must have the images' shape "
                f"{tuple(self.gradient.shape)}, got {tuple(change.shape)}."
            )
        dot = (self.gradient * change).flatten(-3).sum(dim=-1)
        return self.margin + dot


# --- checks ---------------------------------------------------------------------------------


def _images(model: nn.Module, inputs, method: str) -> tuple[torch.Tensor, bool]:
    batch, single = as_batch(inputs, method)
    if batch.ndim != 4:
        raise ValueError(
            f"{method}: expects images [N, C, H, W] or [C, H, W], got shape {tuple(inputs.shape)}."
        )
    check_channels(model, batch, method)
    dtype = model_dtype(model, batch.dtype)  # float64 images for a float32 model: float32
    return batch.detach().to(model_device(model), dtype, copy=True), single


def _classes(model: nn.Module, batch: torch.Tensor, target, method: str):
    """``(source, target)``: the model's class for each image and the class asked for,
    checked to differ."""
    if target is None or isinstance(target, Neuron):
        raise TypeError(
            f"{method}: target must be the class to fool the network into (an int, or one per "
            f"image), got {target!r}."
        )
    with torch.no_grad():
        logits = model(batch)
    source = logits.argmax(dim=1)
    target = target_indices(target, logits, method)
    same = source == target
    if same.any():
        i = int(same.nonzero()[0])
        raise ValueError(
            f"{method}: image {i} is already classified as class {int(source[i])}, the target; "
            "a fooling image needs another class. Choose a target different from the predicted "
            f"class (model(images).argmax(1) gives {source.tolist()})."
        )
    return source, target


def _pixel_mask(pixels, batch: torch.Tensor, method: str) -> torch.Tensor:
    """``pixels`` (bool ``[N, H, W]`` or ``[H, W]``, True where the image may change) as a
    float mask ``[N, 1, H, W]``; ``None``: every pixel."""
    if pixels is None:
        return torch.ones_like(batch[:, :1])
    mask = torch.as_tensor(pixels, device=batch.device)
    if mask.ndim == 2:
        mask = mask.expand(batch.shape[0], -1, -1)
    if mask.dtype != torch.bool or tuple(mask.shape) != (batch.shape[0], *batch.shape[2:]):
        raise ValueError(
            f"{method}: pixels must be a bool mask [N, H, W] or [H, W] (True where the image may "
            f"change) for images {tuple(batch.shape)}; got {mask.dtype} {tuple(mask.shape)}."
        )
    if not mask.flatten(1).any(dim=1).all():
        raise ValueError(f"{method}: pixels leaves some image no pixel to change.")
    return mask[:, None].to(batch.dtype)


def _check_number(value, name: str, method: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"{method}: {name} must be a positive number, got {name}={value!r}.")


def _result(model, batch, image, steps, source, target, single, method) -> Fooling:
    """The ``Fooling``; ``image`` is in the images' dtype, read back in the model's (float64
    inside ``precision.float64``)."""
    with torch.no_grad():
        predicted = model(image.to(model_dtype(model, image.dtype))).argmax(dim=1)

    def out(t: torch.Tensor) -> torch.Tensor:
        t = t.detach().cpu()
        return t[0] if single else t

    return Fooling(
        out(batch),
        out(image),
        out(image - batch),
        out(steps),
        out(source),
        out(target),
        out(predicted),
        method,
    )


# --- the methods ----------------------------------------------------------------------------


@threads.under_policy
@with_gradients  # also under torch.no_grad() or torch.inference_mode()
def fooling_image(
    model: nn.Module,
    inputs: torch.Tensor,
    target,
    *,
    step_size: float = 0.1,
    max_steps: int = 100,
    pixels=None,
    clamp: bool = True,
    progress: bool | None = None,
) -> Fooling:
    r"""Small gradient steps on the target score until the network calls the image the target
    class (as in CS231n's fooling images):

    .. math:: I \leftarrow I + \eta\, \frac{w_t}{\|w_t\|_2}, \qquad
              w_t = \frac{\partial S_t}{\partial I}

    Before each step the model classifies the image; an image stops as soon as its class is
    the target, so each image's change is about as small as steps of length :math:`\eta`
    allow. The images of a batch go on together, each stopping on its own.

    Args:
        model: the classifier, left as it came.
        inputs: images ``[N, C, H, W]`` or ``[C, H, W]``.
        target: the class to fool the network into, an int or one per image; it must differ
            from the class the model gives each image.
        step_size: :math:`\eta`, the L2 length of one step.
        max_steps: give up after this many steps (``result.fooled`` says which images made it).
        pixels: bool ``[N, H, W]`` or ``[H, W]``: only these pixels may change (None: all).
        clamp: keep the image in [0, 1] after every step.
        progress: show a progress bar (default: for more than 200 steps).
    """
    method = "fooling_image"
    _check_number(step_size, "step_size", method)
    if isinstance(max_steps, bool) or not isinstance(max_steps, int) or max_steps < 1:
        raise ValueError(f"{method}: max_steps must be an int >= 1, got max_steps={max_steps!r}.")
    batch, single = _images(model, inputs, method)
    allowed = _pixel_mask(pixels, batch, method)
    steps = torch.zeros(len(batch), dtype=torch.long, device=batch.device)
    # one thread on a busy machine (lecture_lib.threads); the steps in float64 (precision)
    with explaining(model), precision.float64(model) as exact:
        image = batch.to(exact)
        source, target = _classes(model, image, target, method)
        show = progress if progress is not None else max_steps > 200
        for _ in tqdm(range(max_steps), desc=method, disable=not show, leave=False):
            x = image.clone().requires_grad_(True)
            logits = model(x.clone())  # a copy: an in-place first layer may change it
            active = logits.argmax(dim=1) != target
            if not active.any():
                break
            (w,) = torch.autograd.grad(logits.gather(1, target[:, None]).sum(), x)
            w = w * allowed
            length = w.flatten(1).norm(dim=1).clamp(min=torch.finfo(w.dtype).tiny)
            step = step_size * w / length.view(-1, 1, 1, 1)
            image = image + step * active.view(-1, 1, 1, 1)
            if clamp:
                image = image.clamp(0, 1)
            steps += active.long()
        image = image.to(batch.dtype)
        return _result(model, batch, image, steps, source, target, single, method)


@threads.under_policy
@with_gradients  # also under torch.no_grad() or torch.inference_mode()
@answer_calls.recorded
def fast_gradient_sign(
    model: nn.Module,
    inputs: torch.Tensor,
    target,
    epsilon: float | None = None,
    *,
    max_epsilon: float = 64 * GREY_LEVEL,
    pixels=None,
    clamp: bool = True,
) -> Fooling:
    r"""One signed gradient step towards class t, a targeted variant of the fast gradient sign
    method (Goodfellow et al. 2015, who step along the sign of the training loss's gradient with
    a fixed epsilon):

    .. math:: I = I_0 + \varepsilon\, \operatorname{sign}(g), \qquad
              g = \frac{\partial (S_t - S_c)}{\partial I}\Big|_{I_0}

    with c the class the model gives :math:`I_0`. Each pixel's channel changes by exactly
    :math:`\pm\varepsilon`: for a linear model the step that raises the margin
    :math:`S_t - S_c` the most for a largest pixel change of :math:`\varepsilon`.

    ``epsilon=None`` finds, per image, the smallest whole number of grey levels (1/255) for
    which the step fools the network, up to ``max_epsilon`` (forward passes only, one
    gradient). Images that no such epsilon fools keep the step of ``max_epsilon``
    (``result.fooled`` is False there). ``pixels`` and ``clamp`` are ``fooling_image``'s;
    ``steps`` is 1 (one gradient step).
    """
    method = "fast_gradient_sign"
    if epsilon is not None:
        _check_number(epsilon, "epsilon", method)
    _check_number(max_epsilon, "max_epsilon", method)
    batch, single = _images(model, inputs, method)
    allowed = _pixel_mask(pixels, batch, method)
    # one thread on a busy machine (lecture_lib.threads); g in float64 (lecture_lib.precision)
    with explaining(model), precision.float64(model) as exact:
        start = batch.to(exact)
        source, target = _classes(model, start, target, method)
        direction = _margin_gradient(model, start, source, target).sign() * allowed
        if epsilon is None:
            epsilon = _smallest_epsilon(model, start, direction, target, max_epsilon, clamp)
        else:
            epsilon = torch.full((len(batch),), float(epsilon), dtype=batch.dtype)
        epsilon = epsilon.to(batch)  # held in the images' own dtype
        image = batch + epsilon.view(-1, 1, 1, 1) * direction.to(batch.dtype)
        if clamp:
            image = image.clamp(0, 1)
        steps = torch.ones(len(batch), dtype=torch.long)
        return _result(model, batch, image, steps, source, target, single, method)


@answer_calls.recorded
def _margin_gradient(model, batch, source, target) -> torch.Tensor:
    r""":math:`g = \partial (S_t - S_c) / \partial I` for each image (one forward, one backward)."""
    x = batch.clone().requires_grad_(True)
    logits = model(x.clone())  # a copy: an in-place first layer may change it
    margin = logits.gather(1, target[:, None]) - logits.gather(1, source[:, None])
    (g,) = torch.autograd.grad(margin.sum(), x)
    return g


def _smallest_epsilon(model, batch, direction, target, max_epsilon, clamp) -> torch.Tensor:
    """Per image, the smallest multiple of one grey level up to ``max_epsilon`` whose signed
    step makes the model predict the target (``max_epsilon`` where none does)."""
    levels = max(1, int(max_epsilon / GREY_LEVEL + 1e-9))
    epsilons = torch.arange(1, levels + 1, dtype=batch.dtype, device=batch.device) * GREY_LEVEL
    found = torch.full((len(batch),), max_epsilon, dtype=batch.dtype, device=batch.device)
    per_pass = max(1, 256 // len(batch))
    with torch.no_grad():
        for chunk in epsilons.split(per_pass):
            tried = batch[None] + chunk.view(-1, 1, 1, 1, 1) * direction[None]
            if clamp:
                tried = tried.clamp(0, 1)
            hit = model(tried.flatten(0, 1)).argmax(dim=1).view(len(chunk), -1) == target
            first = torch.where(hit, chunk[:, None], torch.inf).amin(dim=0)
            found = torch.minimum(found, first)
            if torch.isfinite(first).all():
                break
    return found


@threads.under_policy
@with_gradients  # also under torch.no_grad() or torch.inference_mode()
@answer_calls.recorded
def taylor_estimate(model: nn.Module, inputs: torch.Tensor, target) -> TaylorEstimate:
    r"""The linear model's answer: how large must a change be to make class ``target`` win?

    With :math:`m_0 = S_t(I_0) - S_c(I_0) < 0` and :math:`g = \partial (S_t - S_c)/\partial I`,
    the first-order Taylor expansion :math:`m(I_0 + \delta) \approx m_0 + g^T \delta` reaches 0
    at the smallest change :math:`\|\delta\|_2 = |m_0| / \|g\|_2` (along g) or
    :math:`\|\delta\|_\infty = |m_0| / \|g\|_1` (the signed step). Compare with what
    ``fooling_image`` and ``fast_gradient_sign`` actually need: the scores bend.
    """
    method = "taylor_estimate"
    batch, single = _images(model, inputs, method)
    with explaining(model), precision.float64(model) as exact:  # lecture_lib.precision
        start = batch.to(exact)
        source, target = _classes(model, start, target, method)
        g = _margin_gradient(model, start, source, target)
        with torch.no_grad():
            logits = model(start)
    margin = (logits.gather(1, target[:, None]) - logits.gather(1, source[:, None]))[:, 0]
    flat = g.flatten(1)
    l2 = margin.abs() / flat.norm(dim=1)
    linf = margin.abs() / flat.abs().sum(dim=1)

    def out(t: torch.Tensor) -> torch.Tensor:
        t = t.detach().to("cpu", batch.dtype)
        return t[0] if single else t

    return TaylorEstimate(out(margin), out(g), out(l2), out(linf))
