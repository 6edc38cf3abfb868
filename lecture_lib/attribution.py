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
``grad_cam``             :math:`\mathrm{ReLU}(\sum_k \alpha_k A^k)`, :math:`\alpha_k` the spatial mean
                         of :math:`\partial S_c / \partial A^k`, upsampled to ``[N, H, W]``
``hires_cam``            :math:`\mathrm{ReLU}(\sum_k \partial S_c / \partial A^k \odot A^k)`
``guided_grad_cam``      guided backprop times the upsampled Grad-CAM
``smoothgrad``           :math:`\frac1n \sum_k \mathrm{method}(x + \epsilon_k)`, around any method
``lrp``                  layer-wise relevance propagation: :math:`R^{out} = S_c` handed down layer by
                         layer by the rules of a composite (``relevance``)
=======================  ====================================================================

``integrated_gradients`` and ``deeplift`` share *summation to delta* (completeness): their
attributions add up to :math:`f(x) - f(x')`. Pass ``return_gap=True`` to get that sum minus the difference as well.

Every method also works inside ``torch.no_grad()`` or ``torch.inference_mode()``; inputs of
another floating dtype than the model (float64 for a float32 model) are converted, and the
result comes back in the inputs' dtype and on their device.
"""

from __future__ import annotations

import torch
from torch import nn
from tqdm.auto import tqdm

from . import answer_calls, relevance, threads
from .rules import check_rule, record_references, use_rescale, use_rule
from .targets import (
    Neuron,
    baseline_batch,
    class_indices,
    explaining,
    finish,
    fix_target,
    gradients_on,
    pass_size,
    passes,
    prepare,
    score,
    select,
    target_indices,
)


def _backward(
    model: nn.Module, batch: torch.Tensor, target, method: str, rule: str | None = None
) -> torch.Tensor:
    """``d f / d inputs`` for every example, the ReLUs following ``rule`` (None: plain autograd),
    ``targets.pass_size`` examples at a time.

    Each example's f depends on that example only, so the gradient of ``f.sum()`` holds every
    example's own gradient. Only the input's gradient is computed (no ``.grad`` on parameters),
    also when the caller runs in ``torch.no_grad()`` or ``torch.inference_mode()``.
    """
    with gradients_on(), explaining(model):
        if target is not None and not isinstance(target, Neuron):
            target = class_indices(target, len(batch), method)
        parts = passes(len(batch), pass_size(batch))
        grads = [_one_pass(model, batch[p], select(target, p), method, rule) for p in parts]
    return grads[0] if len(grads) == 1 else torch.cat(grads)


def _one_pass(model, batch, target, method, rule):
    """``_backward`` on examples that go through the model together (inside ``explaining``)."""
    leaf = batch.detach().clone().requires_grad_(True)
    batch = leaf.clone()  # what the model gets: an in-place first layer may change it
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
    return _input_gradient(f, leaf, method)


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


@threads.under_policy
@answer_calls.recorded
def gradient(model: nn.Module, inputs: torch.Tensor, target=None) -> torch.Tensor:
    r"""The gradient of the target score w.r.t. the input, :math:`w = \partial S_c/\partial I|_{I_0}`:
    the slope of the first-order Taylor expansion :math:`S_c(I) \approx w^T I + b` around the image."""
    batch, single = prepare(model, inputs, "gradient")
    return finish(_backward(model, batch, target, "gradient"), inputs, single)


@threads.under_policy
@answer_calls.recorded
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


@threads.under_policy
@answer_calls.recorded
def input_x_gradient(model: nn.Module, inputs: torch.Tensor, target=None) -> torch.Tensor:
    r"""Input times gradient, :math:`x_i\, \partial S_c/\partial x_i`: for a linear model
    :math:`y = w^T x` exactly the contribution :math:`w_i x_i` of each input. (A pixel whose value
    is 0 never shows up.)"""
    batch, single = prepare(model, inputs, "input_x_gradient")
    return finish(batch * _backward(model, batch, target, "input_x_gradient"), inputs, single)


@threads.under_policy
@answer_calls.recorded
def deconvnet(model: nn.Module, inputs: torch.Tensor, target=None) -> torch.Tensor:
    r"""Zeiler & Fergus's DeconvNet: backpropagate with the ReLU rule
    :math:`R^l = (R^{l+1} > 0)\, R^{l+1}` (conv: flipped kernel; max-pool: unpool to the switches)."""
    batch, single = prepare(model, inputs, "deconvnet")
    return finish(_backward(model, batch, target, "deconvnet", rule="deconvnet"), inputs, single)


@threads.under_policy
@answer_calls.recorded
def guided_backprop(model: nn.Module, inputs: torch.Tensor, target=None) -> torch.Tensor:
    r"""Springenberg et al.'s guided backpropagation: the ReLU rule
    :math:`R^l = (f^l > 0)(R^{l+1} > 0)\, R^{l+1}`, both masks of gradient and DeconvNet at once."""
    batch, single = prepare(model, inputs, "guided_backprop")
    return finish(_backward(model, batch, target, "guided_backprop", rule="guided"), inputs, single)


@threads.under_policy
@answer_calls.recorded
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


@threads.under_policy
@answer_calls.recorded
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
    as fit in a pass of ``targets.PASS_VALUES`` input values (one step of a batch of 64 shapes
    or of photos, up to 42 steps of one shape).
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
        points_per_pass = batch_size or max(n, pass_size(batch))
        alphas = (torch.arange(steps, dtype=batch.dtype, device=batch.device) + 0.5) / steps
        chunks = [alphas[part] for part in passes(steps, max(1, points_per_pass // n))]
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


@threads.under_policy
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
            model(reference.clone())  # copies: an in-place first layer may change what it gets
        leaf = batch.clone().requires_grad_(True)
        x = leaf.clone()
        with use_rescale(recorded.records, x, model):
            f, logits = score(model, x, target, "deeplift")
        multipliers = _input_gradient(f, leaf, "deeplift")
        attributions = multipliers * (batch - reference)
    if not isinstance(target, Neuron):
        target = target_indices(target, logits, "deeplift")
    return _with_gap(model, attributions, batch, reference, target, inputs, single, return_gap)


# --- beyond the lecture: class-discriminative maps (Grad-CAM) and SmoothGrad -------------------

from .targets import get_layer, keep_output, layer_names  # noqa: E402


@threads.under_policy
@answer_calls.recorded
def grad_cam(
    model: nn.Module,
    inputs: torch.Tensor,
    target=None,
    layer: str | None = None,
    upsample: bool = True,
    elementwise: bool = False,
) -> torch.Tensor:
    r"""Grad-CAM (Selvaraju et al. 2017): the feature maps :math:`A^k` of a layer, weighted by
    their spatially averaged gradients, through a ReLU, ``[N, H, W]``:

    .. math:: \alpha^c_k = \frac{1}{Z} \sum_{i,j} \frac{\partial S_c}{\partial A^k_{ij}},
              \qquad L^c_{\text{Grad-CAM}} = \operatorname{ReLU}\Big(\sum_k \alpha^c_k A^k\Big)

    The map has the layer's resolution (8 x 8 for ShapesNet's ``relu4``) and is upsampled
    bilinearly to the input size (``upsample=False`` keeps it as it is, ``[N, h, w]``). Unlike
    the maps of the gradient family it changes with the class: the weights :math:`\alpha^c_k`
    ask which channels speak *for class c*.

    Grad-CAM generalises CAM (Zhou et al. 2016), which needs a head that averages the last maps
    over positions (global average pooling), to any head, fully connected ones included (VGG-16's
    in the paper). With global average pooling the average gradient is exact; with a head that
    flattens the maps into a linear layer, as ShapesNet's does, it mixes the positions (Draelos &
    Carin 2020). ``elementwise=True`` keeps the gradient at each position,
    :math:`\operatorname{ReLU}(\sum_k \partial S_c / \partial A^k \odot A^k)`: that is a
    different method, HiResCAM (Draelos & Carin 2020), also callable as ``hires_cam``.

    Args:
        layer: the layer's name as in ``activations.feature_maps`` (``"relu4"``,
            ``"features.29"``); it must give spatial maps ``[N, K, h, w]``. Default: the maps of
            the last ``nn.Conv2d`` after their rectification, as in the authors' code: the
            ``nn.ReLU`` that follows that convolution in ``model.named_modules()`` (ShapesNet:
            ``relu4``; VGG-16: ``features.29``), or the convolution itself where no ReLU follows
            it. A layer that runs more than once in a forward pass explains its last call.
        upsample: resize the map to the input's height and width (bilinear).
        elementwise: weight each position by its own gradient instead of the average (HiResCAM).
    """
    method = "grad_cam"
    _check_flag(upsample, "upsample", method)
    _check_flag(elementwise, "elementwise", method)
    batch, single = prepare(model, inputs, method)
    _check_images(batch, inputs, method)
    with gradients_on():
        cam = _grad_cam(model, batch, target, layer, upsample, elementwise, method)
    return finish(cam, inputs, single)


def hires_cam(
    model: nn.Module,
    inputs: torch.Tensor,
    target=None,
    layer: str | None = None,
    upsample: bool = True,
) -> torch.Tensor:
    r"""HiResCAM (Draelos & Carin 2020), Grad-CAM with the gradient kept at each position,
    ``[N, H, W]``: :math:`\operatorname{ReLU}(\sum_k \partial S_c / \partial A^k \odot A^k)`.

    Not Grad-CAM: it gives different numbers wherever the head does not average the maps over
    positions. For a head that flattens the last maps into a linear layer it is exactly that
    layer's contribution of each position. ``grad_cam(..., elementwise=True)``; ``layer`` and
    ``upsample`` are ``grad_cam``'s.
    """
    return grad_cam(model, inputs, target, layer=layer, upsample=upsample, elementwise=True)


@threads.under_policy
@answer_calls.recorded
def guided_grad_cam(
    model: nn.Module,
    inputs: torch.Tensor,
    target=None,
    layer: str | None = None,
    elementwise: bool = False,
) -> torch.Tensor:
    r"""Guided Grad-CAM (Selvaraju et al. 2017): guided backpropagation times the upsampled
    Grad-CAM, :math:`R_{\text{guided}} \odot L^c_{\text{Grad-CAM}}`, the shape of ``inputs``.

    Guided backprop draws fine detail but hardly depends on the class; Grad-CAM is coarse but
    class-discriminative. Their product keeps the detail where the class is. ``target=None``
    is resolved once (the predicted class), so both factors explain the same class.
    ``layer`` and ``elementwise`` are ``grad_cam``'s (default layer: the rectified maps of the
    last convolution, ``relu4`` for ShapesNet).
    """
    method = "guided_grad_cam"
    _check_flag(elementwise, "elementwise", method)
    batch, single = prepare(model, inputs, method)
    _check_images(batch, inputs, method)
    with gradients_on():
        with explaining(model):
            _, target = fix_target(model, batch, target, method)
        cam = _grad_cam(model, batch, target, layer, True, elementwise, method)
        guided = _backward(model, batch, target, method, rule="guided")
    return finish(guided * cam[:, None], inputs, single)


@answer_calls.recorded
def _grad_cam(model, batch, target, layer, upsample, elementwise, method) -> torch.Tensor:
    maps, grads = _maps_and_gradients(model, batch.clone(), target, layer, method)
    weights = grads if elementwise else grads.mean(dim=(2, 3), keepdim=True)  # alpha_k^c
    cam = (weights * maps).sum(dim=1).clamp(min=0)
    return _upsample(cam, batch.shape[-2:]) if upsample else cam


def _check_flag(value, name: str, method: str) -> None:
    if not isinstance(value, bool):
        raise TypeError(f"{method}: {name} must be True or False, got {name}={value!r}.")


def _check_images(batch: torch.Tensor, inputs: torch.Tensor, method: str) -> None:
    if batch.ndim != 4:
        raise ValueError(
            f"{method}: expects images [N, C, H, W] or [C, H, W], got shape {tuple(inputs.shape)}."
        )


def _upsample(maps: torch.Tensor, size) -> torch.Tensor:
    """``[N, h, w]`` maps resized bilinearly to ``size`` (H, W)."""
    return nn.functional.interpolate(
        maps[:, None], size=tuple(size), mode="bilinear", align_corners=False
    )[:, 0]


def _last_conv(model: nn.Module, method: str) -> str:
    """Grad-CAM's default layer: the last ``nn.Conv2d``, or the ``nn.ReLU`` right after it in
    ``named_modules()`` (the rectified maps, as in Selvaraju et al.'s code)."""
    modules = list(model.named_modules())
    convs = [i for i, (_, module) in enumerate(modules) if isinstance(module, nn.Conv2d)]
    if not convs:
        raise ValueError(
            f"{method}: the model has no nn.Conv2d, so there is no default layer; name a layer "
            f"with spatial maps, layer=... Valid layers: {', '.join(layer_names(model))}."
        )
    last = convs[-1]
    if last + 1 < len(modules) and isinstance(modules[last + 1][1], nn.ReLU):
        return modules[last + 1][0]
    return modules[last][0]


@threads.under_policy
def spatial_layers(model: nn.Module, inputs: torch.Tensor) -> list[str]:
    """The layers whose output on ``inputs`` is a stack of maps ``[N, K, h, w]`` (forward order)."""
    found: list[str] = []

    def record(name: str):
        def hook(_module, _inputs, output):
            if isinstance(output, torch.Tensor) and output.ndim == 4:
                found.append(name)

        return hook

    batch, _ = prepare(model, inputs, "spatial_layers")  # the model's dtype, a batch
    handles = [
        module.register_forward_hook(record(name)) for name, module in model.named_modules() if name
    ]
    try:
        with explaining(model), torch.no_grad():
            model(batch)
    finally:
        for handle in handles:
            handle.remove()
    return list(dict.fromkeys(found))


@answer_calls.recorded
def _maps_and_gradients(model, batch, target, layer, method):
    r"""The layer's output :math:`A` ``[N, K, h, w]`` and :math:`\partial f / \partial A`, from
    one forward and one backward pass that stops at the layer."""
    name = _last_conv(model, method) if layer is None else layer
    module = get_layer(model, name, method)
    captured: list[torch.Tensor] = []

    # the rest of the model works on a copy of A: an in-place ReLU after the layer would
    # otherwise overwrite A with ReLU(A)
    handle = module.register_forward_hook(lambda _m, _i, output: keep_output(output, captured))
    try:
        with explaining(model):
            leaf = batch.detach().requires_grad_(True)  # maps need a graph, even of a frozen model
            f, _ = score(model, leaf.clone(), target, method)
    finally:
        handle.remove()
    if not captured:
        raise ValueError(
            f"{method}: the layer {name!r} did not run in the forward pass (or gave no tensor), "
            "so it has no maps to weight."
        )
    maps = captured[-1]
    if maps.ndim != 4:
        valid = ", ".join(spatial_layers(model, batch.detach()))
        raise ValueError(
            f"{method}: the layer {name!r} gives outputs of shape {tuple(maps.shape)}, no spatial "
            f"maps [N, K, h, w] to weight. Layers with spatial maps: {valid}."
        )
    (grads,) = torch.autograd.grad(f.sum(), maps, allow_unused=True)
    if grads is None:
        raise ValueError(
            f"{method}: the explained quantity does not depend on layer {name!r}; for a Neuron "
            "target, choose a layer below the neuron's layer."
        )
    return maps.detach(), grads


@threads.under_policy
@answer_calls.recorded
def smoothgrad(
    method,
    model: nn.Module,
    inputs: torch.Tensor,
    target=None,
    samples: int = 50,
    noise: float = 0.15,
    seed: int = 0,
    squared: bool = False,
    batch_size: int | None = None,
    progress: bool | None = None,
) -> torch.Tensor:
    r"""SmoothGrad (Smilkov et al. 2017): the average of a method's maps over noisy copies,

    .. math:: \hat M(x) = \frac{1}{n} \sum_{k=1}^{n} M(x + \varepsilon_k), \qquad
              \varepsilon_k \sim \mathcal N(0, \sigma^2), \quad
              \sigma = \text{noise} \cdot (\max x - \min x)

    and with ``squared=True`` the average of :math:`M(x + \varepsilon_k)^2` (SmoothGrad-Squared,
    Hooker et al. 2019). :math:`\sigma` is a fraction of each example's own value range
    (Smilkov et al. find 10-20 % best). The noise is drawn sample after sample, each
    :math:`\varepsilon_k` of the shape of the batch, from a generator seeded with ``seed``: the
    same seed gives the same result, whatever ``batch_size``, and the global random state is
    not used.

    Args:
        method: any attribution function ``method(model, inputs, target)`` of the library
            (``gradient``, ``saliency``, ``guided_backprop``, ``grad_cam``, ...; options with
            ``functools.partial`` or a lambda).
        target: ``None`` is the class predicted on the clean input, kept for every noisy copy;
            an int, one int per example, or a ``Neuron``.
        samples: n, the number of noisy copies (>= 1).
        noise: :math:`\sigma` as a fraction of the input's range (>= 0; 0 gives the method).
        batch_size: up to this many noisy examples go through ``method`` at once (at least one
            noisy copy of the whole batch); ``None``: a pass of ``targets.PASS_VALUES`` values.
        progress: show a progress bar (default: when there are more than 20 batches).

    Returns:
        The averaged map, of the shape that ``method`` returns for ``inputs``.
    """
    name = "smoothgrad"
    if not callable(method):
        raise TypeError(
            f"{name}: method must be an attribution function method(model, inputs, target), "
            f"e.g. attribution.gradient; got {type(method).__name__}."
        )
    for value, label in (
        (samples, "samples"),
        (1 if batch_size is None else batch_size, "batch_size"),
        (seed, "seed"),
    ):
        low = 0 if label == "seed" else 1
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{name}: {label} must be an int >= {low}, got {label}={value!r}.")
    if (
        isinstance(noise, bool)
        or not isinstance(noise, (int, float))
        or not 0 <= noise < float("inf")
    ):
        raise ValueError(
            f"{name}: noise is the noise's standard deviation as a fraction of the input range, "
            f"a finite number >= 0 (0.1-0.2 is typical); got noise={noise!r}."
        )
    batch, single = prepare(model, inputs, name)
    with gradients_on():  # no inference tensors reach the method, also in inference mode
        return finish(
            _smoothgrad(
                method, model, batch, target, samples, noise, seed, squared, batch_size, progress
            ),
            inputs,
            single,
        )


def _smoothgrad(method, model, batch, target, samples, noise, seed, squared, batch_size, progress):
    """``smoothgrad``'s average over the noisy copies of ``batch``."""
    name = "smoothgrad"
    with explaining(model):
        _, target = fix_target(model, batch, target, name)
    n = batch.shape[0]
    spread = batch.flatten(1).amax(dim=1) - batch.flatten(1).amin(dim=1)
    sigma = (noise * spread).view(n, *[1] * (batch.ndim - 1))
    generator = torch.Generator().manual_seed(seed)
    per_call = max(1, (batch_size or pass_size(batch)) // n)
    chunks = [range(k, min(k + per_call, samples)) for k in range(0, samples, per_call)]
    show = progress if progress is not None else len(chunks) > 20
    total = None
    for chunk in tqdm(chunks, desc=name, disable=not show, leave=False):
        draws = [torch.randn(batch.shape, generator=generator) for _ in chunk]
        noisy = torch.cat([batch + sigma * d.to(batch.device) for d in draws])
        repeated = target if isinstance(target, Neuron) else target.repeat(len(chunk))
        maps = method(model, noisy, repeated)
        if not isinstance(maps, torch.Tensor) or maps.ndim == 0 or maps.shape[0] != len(noisy):
            shape = tuple(maps.shape) if isinstance(maps, torch.Tensor) else type(maps).__name__
            raise ValueError(
                f"{name}: the method must return one map per example, a tensor [N, ...]; on "
                f"{len(noisy)} noisy examples it returned {shape}."
            )
        maps = maps.detach().to(batch.device)
        maps = maps.square() if squared else maps
        part = maps.view(len(chunk), n, *maps.shape[1:]).sum(dim=0)
        total = part if total is None else total + part
    return total / samples


# --- layer-wise relevance propagation --------------------------------------------------------


@threads.under_policy
@answer_calls.recorded
def lrp(
    model: nn.Module,
    inputs: torch.Tensor,
    target=None,
    composite: str = "epsilon-plus-flat",
    epsilon: float = 1e-6,
    gamma: float = 0.25,
    low=0.0,
    high=1.0,
) -> torch.Tensor:
    r"""Layer-wise relevance propagation (Bach et al. 2015; Montavon et al. 2019), the shape of
    ``inputs``: the target's score :math:`R^{out} = S_c` handed down layer by layer,

    .. math:: R_i = \sum_j \frac{x_i w_{ij}}{z_j} R_j \quad \text{(LRP-0; the other rules
              change the weights or the denominator, see ``relevance``)}

    with one forward and one modified backward pass. ``composite`` picks each layer's rule
    (Zennit's names): ``"zero"`` (LRP-0 everywhere: input x gradient on ReLU networks),
    ``"epsilon"``, ``"epsilon-plus-flat"`` (flat first layer, z+ convolutions, epsilon dense
    layers), ``"epsilon-gamma-box"`` (z^B first convolution with the input's bounds ``low`` and
    ``high``, gamma convolutions, epsilon dense layers). ReLUs pass relevance on, max-pooling
    to the winner. Relevance that a layer's bias takes is lost, so the map sums to the score
    minus what the biases absorbed. A layer without a rule raises NotImplementedError naming it.

    Args:
        epsilon: the epsilon rule's :math:`\epsilon` (dense layers; every layer for
            ``"epsilon"``), in units of the pre-activations.
        gamma: the gamma rule's :math:`\gamma` (``"epsilon-gamma-box"``'s convolutions).
        low, high: the lowest and highest pixel value (numbers, or tensors that broadcast to
            the inputs, e.g. ``[1, 3, 1, 1]``), for the z^B rule.
    """
    relevance.check_options(composite, epsilon, gamma)
    if isinstance(target, Neuron):
        raise ValueError(
            "lrp: explains class scores; a Neuron target has no relevance at the output here. "
            "Pass target=None (the predicted class), a class index or one per example."
        )
    batch, single = prepare(model, inputs, "lrp")
    with gradients_on(), explaining(model):
        if target is not None:
            target = class_indices(target, len(batch), "lrp")
        options = dict(epsilon=epsilon, gamma=gamma, low=low, high=high)
        maps = [
            _relevance_pass(model, batch[p], select(target, p), composite, options)
            for p in passes(len(batch), pass_size(batch))
        ]
    return finish(maps[0] if len(maps) == 1 else torch.cat(maps), inputs, single)


def _relevance_pass(model, batch, target, composite, options) -> torch.Tensor:
    """``lrp`` on examples that go through the model together (inside ``explaining``)."""
    x = (batch.clone() if batch.is_inference() else batch).requires_grad_(True)
    with relevance.use_composite(composite, x, model, **options) as rules:
        f, _ = score(model, x, target, "lrp")
    if not rules.used:
        raise ValueError(
            "lrp: the model has no convolution or linear layer (F.conv2d, F.linear) on the "
            "input's path, so there is no layer whose rule could hand relevance down."
        )
    if not f.requires_grad:
        _input_gradient(f, x, "lrp")  # the error that says why
    (r,) = torch.autograd.grad(f, x, grad_outputs=f.detach(), allow_unused=True)
    if r is None:
        _input_gradient(f, x, "lrp")
    return r
