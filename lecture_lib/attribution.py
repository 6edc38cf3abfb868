r"""Backpropagation-based attribution: why is this image classified as it is?

Every method has the form ``method(model, inputs, target=None, **options)`` (see
``targets``): ``inputs`` a batch ``[N, C, H, W]`` or one image ``[C, H, W]``; the result has
the shape of ``inputs`` (``saliency``: ``[N, H, W]``). The model is left as it came.

=======================  ====================================================================
method                   what it returns
=======================  ====================================================================
``gradient``             :math:`w = \partial S_c / \partial I |_{I_0}` (Simonyan et al.)
``saliency``             :math:`M_{ij} = \max_c |w_{h(i,j,c)}|` (Simonyan et al.)
``input_x_gradient``     :math:`I \odot w`: the contribution :math:`w_i x_i` of a linear model
``deconvnet``            the backward pass with ReLU rule :math:`(R^{l+1} > 0) R^{l+1}`
``guided_backprop``      the backward pass with :math:`(f^l > 0)(R^{l+1} > 0) R^{l+1}`
``integrated_gradients`` :math:`(x - x')\int_0^1 \partial f(x' + \alpha(x - x'))/\partial x\, d\alpha`
``deeplift``             multipliers :math:`\Delta y / \Delta x` backpropagated, times :math:`x - x'`
=======================  ====================================================================

The last two share *summation to delta* (completeness): their attributions add up to
:math:`f(x) - f(x')`. Pass ``return_gap=True`` to get that sum minus the difference as well.

Every method also works inside ``torch.no_grad()`` or ``torch.inference_mode()``; inputs of
another floating dtype than the model (float64 for a float32 model) are converted, and the
result comes back in the inputs' dtype and on their device.
"""

from __future__ import annotations

import torch
from torch import nn
from tqdm.auto import tqdm

from .rules import check_rule, record_references, use_rescale, use_rule
from .targets import (
    Neuron,
    baseline_batch,
    class_indices,
    explaining,
    finish,
    fix_target,
    gradients_on,
    prepare,
    score,
    target_indices,
)


def _backward(
    model: nn.Module, batch: torch.Tensor, target, method: str, rule: str | None = None
) -> torch.Tensor:
    """``d f / d inputs`` for every example, the ReLUs following ``rule`` (None: plain autograd).

    Each example's f depends on that example only, so the gradient of ``f.sum()`` holds every
    example's own gradient. Only the input's gradient is computed (no ``.grad`` on parameters),
    also when the caller runs in ``torch.no_grad()`` or ``torch.inference_mode()``.
    """
    with gradients_on(), explaining(model):
        batch = (batch.clone() if batch.is_inference() else batch).requires_grad_(True)
        if rule is None:
            f, _ = score(model, batch, target, method)
        else:
            with use_rule(rule) as mode:
                f, _ = score(model, batch, target, method)
            if mode.relu_calls == 0 and rule != "gradient":
                raise ValueError(
                    f"{method}: the model has no ReLU, so the {rule!r} rule would equal the plain "
                    "gradient. It explains networks with ReLU activations (nn.ReLU, F.relu, "
                    "x.clamp(min=0), ...)."
                )
        grad = _input_gradient(f, batch, method)
    return grad


def _input_gradient(f: torch.Tensor, batch: torch.Tensor, method: str) -> torch.Tensor:
    """``d f.sum() / d batch``, or a clear error when f does not depend on it differentiably."""
    grad = None
    if f.requires_grad:
        (grad,) = torch.autograd.grad(f.sum(), batch, allow_unused=True)
    if grad is None:
        raise ValueError(
            f"{method}: the model's output does not depend on the inputs through differentiable "
            "operations (its forward detaches a tensor, casts it to an integer type or runs "
            "under torch.no_grad()), so there is no gradient to explain it with. Remove that "
            "from the model's forward."
        )
    return grad


def gradient(model: nn.Module, inputs: torch.Tensor, target=None) -> torch.Tensor:
    r"""The gradient of the target score w.r.t. the input, :math:`w = \partial S_c/\partial I|_{I_0}`:
    the slope of the first-order Taylor expansion :math:`S_c(I) \approx w^T I + b` around the image."""
    batch, single = prepare(model, inputs, "gradient")
    return finish(_backward(model, batch, target, "gradient"), inputs, single)


def saliency(
    model: nn.Module, inputs: torch.Tensor, target=None, reduce: str = "max"
) -> torch.Tensor:
    r"""The image-specific class saliency map :math:`M_{ij} = \max_c |w_{h(i,j,c)}|` ``[N, H, W]``.

    ``reduce="max"`` is Simonyan et al.'s max over colour channels; ``"sum"`` and ``"l2"`` are
    other common choices, only on request.
    """
    if reduce not in ("max", "sum", "l2"):
        raise ValueError(f"saliency: reduce must be 'max', 'sum' or 'l2', got reduce={reduce!r}.")
    batch, single = prepare(model, inputs, "saliency")
    if batch.ndim != 4:
        raise ValueError(
            f"saliency: expects images [N, C, H, W] or [C, H, W], got shape {tuple(inputs.shape)}."
        )
    w = _backward(model, batch, target, "saliency").abs()
    if reduce == "max":
        m = w.amax(dim=1)
    elif reduce == "sum":
        m = w.sum(dim=1)
    else:
        m = w.pow(2).sum(dim=1).sqrt()
    return finish(m, inputs, min(single, 1))  # the map has no channel axis to drop


def input_x_gradient(model: nn.Module, inputs: torch.Tensor, target=None) -> torch.Tensor:
    r"""Input times gradient, :math:`x_i\, \partial S_c/\partial x_i`: for a linear model
    :math:`y = w^T x` exactly the contribution :math:`w_i x_i` of each input. (A pixel whose value
    is 0 never shows up.)"""
    batch, single = prepare(model, inputs, "input_x_gradient")
    return finish(batch * _backward(model, batch, target, "input_x_gradient"), inputs, single)


def deconvnet(model: nn.Module, inputs: torch.Tensor, target=None) -> torch.Tensor:
    r"""Zeiler & Fergus's DeconvNet: backpropagate with the ReLU rule
    :math:`R^l = (R^{l+1} > 0)\, R^{l+1}` (conv: flipped kernel; max-pool: unpool to the switches)."""
    batch, single = prepare(model, inputs, "deconvnet")
    return finish(_backward(model, batch, target, "deconvnet", rule="deconvnet"), inputs, single)


def guided_backprop(model: nn.Module, inputs: torch.Tensor, target=None) -> torch.Tensor:
    r"""Springenberg et al.'s guided backpropagation: the ReLU rule
    :math:`R^l = (f^l > 0)(R^{l+1} > 0)\, R^{l+1}`, both masks of gradient and DeconvNet at once."""
    batch, single = prepare(model, inputs, "guided_backprop")
    return finish(_backward(model, batch, target, "guided_backprop", rule="guided"), inputs, single)


def backprop(
    model: nn.Module, inputs: torch.Tensor, target=None, rule: str = "gradient"
) -> torch.Tensor:
    """The backward pass with any of the three ReLU rules, by name (``rules.RULES``)."""
    check_rule(rule)
    batch, single = prepare(model, inputs, "backprop")
    return finish(_backward(model, batch, target, "backprop", rule=rule), inputs, single)


# --- methods with a baseline: summation to delta ----------------------------------------------


def _with_gap(model, attributions, batch, reference, target, inputs, single, return_gap):
    r"""The attributions, and with ``return_gap`` the completeness gap
    :math:`\sum_i C_i - (f(x) - f(x'))` per example."""
    result = finish(attributions, inputs, single)
    if not return_gap:
        return result
    with explaining(model), torch.no_grad():
        f_x = score(model, batch, target, "completeness")[0]
        f_ref = score(model, reference.expand_as(batch), target, "completeness")[0]
    gap = attributions.flatten(1).sum(dim=1) - (f_x - f_ref)
    return result, finish(gap, inputs, single)


# Path points per pass of integrated gradients: about this many input values. A pass of a
# whole batch costs one forward + backward; far larger passes cost more per image on a CPU
# (their activations no longer fit the memory allocator's reuse: 1.7x per image at 256 shapes).
PASS_VALUES = 2**20


def integrated_gradients(
    model: nn.Module,
    inputs: torch.Tensor,
    target=None,
    baseline=None,
    steps: int = 50,
    batch_size: int | None = None,
    return_gap: bool = False,
    progress: bool | None = None,
):
    r"""Integrated gradients (Sundararajan et al. 2017) along the straight path from ``baseline`` x':

    .. math:: IG_i(x) = (x_i - x'_i) \int_0^1 \frac{\partial f(x' + \alpha (x - x'))}{\partial x_i}\, d\alpha

    computed with the midpoint rule, :math:`\alpha_k = (k + 1/2) / m` for ``steps`` m, with up to
    ``batch_size`` path points per forward pass, and at least one step of the whole batch (a
    progress bar when there are many passes). By default (``None``) a pass holds as many steps
    as fit in about ``PASS_VALUES`` input values: one step of a batch of 64 shapes or of
    photos, all 50 steps of one shape.
    The attributions add up to f(x) - f(x') up to the quadrature error; ``return_gap=True``
    also returns, per example, :math:`\sum_i IG_i - (f(x) - f(x'))`.
    """
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(
            f"integrated_gradients: steps must be a positive int, got steps={steps!r}."
        )
    if batch_size is not None and (
        isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1
    ):
        raise ValueError(
            "integrated_gradients: batch_size must be a positive int (path points per pass) or "
            f"None, got batch_size={batch_size!r}."
        )
    batch, single = prepare(model, inputs, "integrated_gradients")
    with gradients_on(), explaining(model):
        reference = baseline_batch(baseline, batch, "integrated_gradients").expand_as(batch)
        n = batch.shape[0]
        if target is None:  # the predicted class of x itself, not of the points on the path
            _, target = fix_target(model, batch, target, "integrated_gradients")
        elif not isinstance(target, Neuron):  # checked against the classes by the first pass
            target = class_indices(target, n, "integrated_gradients")
        points_per_pass = batch_size or max(n, PASS_VALUES // batch[0].numel())
        alphas = (torch.arange(steps, dtype=batch.dtype, device=batch.device) + 0.5) / steps
        chunks = alphas.split(max(1, points_per_pass // n))
        show = progress if progress is not None else len(chunks) > 20
        difference = batch - reference
        total = torch.zeros_like(batch)
        for chunk in tqdm(chunks, desc="integrated gradients", disable=not show, leave=False):
            alpha = chunk.view(-1, *[1] * batch.ndim)
            points = (reference + alpha * difference).flatten(0, 1)
            repeated = target if isinstance(target, Neuron) else target.repeat(len(chunk))
            grads = _backward(model, points, repeated, "integrated_gradients")
            grads = grads.view(len(chunk), *batch.shape)
            total += grads[0] if len(chunk) == 1 else grads.sum(dim=0)
        attributions = difference * total / steps
    return _with_gap(model, attributions, batch, reference, target, inputs, single, return_gap)


def deeplift(
    model: nn.Module,
    inputs: torch.Tensor,
    target=None,
    baseline=None,
    return_gap: bool = False,
):
    r"""DeepLIFT with the rescale rule (Shrikumar et al. 2017), against ``baseline`` x'.

    Two forward passes: the baseline's records every ReLU's and max-pool's input; the input's
    replaces each one's backward by the multiplier :math:`m = \Delta y / \Delta x`
    (``rules.use_rescale``). Then :math:`C_i = m_i (x_i - x'_i)` and, for any network of conv,
    linear, ReLU and max-pool layers, :math:`\sum_i C_i = f(x) - f(x')` (summation to delta)
    up to rounding. ``return_gap=True`` also returns that sum minus the difference.
    Every other operation on the input's path must be linear (its multiplier is its gradient:
    sums, scaling by constants, average pooling, batch norm in eval mode, reshaping...);
    anything else (sigmoid, softmax, LayerNorm, ``x * x``, a global max) raises
    NotImplementedError naming the operation and its layer, rather than a wrong map.
    A baseline shared by all examples (None, a number, one image) is run once.
    """
    if isinstance(target, Neuron) and target.reduce != "sum":
        raise ValueError(
            "deeplift: a Neuron target must use reduce='sum' here (the maximum over positions is "
            "a nonlinearity without a rescale rule); pass Neuron(layer, channel, reduce='sum')."
        )
    batch, single = prepare(model, inputs, "deeplift")
    with gradients_on(), explaining(model):
        reference = baseline_batch(baseline, batch, "deeplift")
        with record_references() as recorded:
            model(reference)
        x = batch.clone().requires_grad_(True)
        with use_rescale(recorded.records, x, model):
            f, logits = score(model, x, target, "deeplift")
        multipliers = _input_gradient(f, x, "deeplift")
        attributions = multipliers * (batch - reference)
    if not isinstance(target, Neuron):
        target = target_indices(target, logits, "deeplift")
    return _with_gap(model, attributions, batch, reference, target, inputs, single, return_gap)
