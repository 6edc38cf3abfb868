r"""The backward pass through ReLU, three ways (lecture, "Difference in backpropagating through ReLU").

Forward, every method is the same: :math:`f^{l+1}_i = \max(f^l_i, 0)`. Backward, with
:math:`R^{l+1}_i = \partial f^{out} / \partial f^{l+1}_i` arriving from above:

==============  ===========================================================  ==========================
rule            :math:`R^l_i`                                                source
==============  ===========================================================  ==========================
``gradient``    :math:`(f^l_i > 0) \cdot R^{l+1}_i`                          Simonyan et al. 2013
``deconvnet``   :math:`(R^{l+1}_i > 0) \cdot R^{l+1}_i`                      Zeiler & Fergus 2013
``guided``      :math:`(f^l_i > 0) \cdot (R^{l+1}_i > 0) \cdot R^{l+1}_i`    Springenberg et al. 2014
==============  ===========================================================  ==========================

Convolution and max-pooling backpropagate as usual in all three (flipped kernel; the gradient
goes to the switch, the position of each pooling region's maximum).

``relu_backward`` applies one rule to arrays, as on the slides. ``use_rule`` makes every ReLU
of any model follow a rule inside a ``with`` block: it watches the torch functions that compute
a ReLU (``nn.ReLU`` in-place or not, ``F.relu``, ``torch.relu``, ``Tensor.relu``) with a
``TorchFunctionMode``, so a ReLU is caught however the model's code calls it, and the model
itself is never touched.

This module also holds DeepLIFT's *rescale* rule (``use_rescale``), the backward rule that
``attribution.deeplift`` needs for ReLU and max-pooling.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

RULES: tuple[str, ...] = ("gradient", "deconvnet", "guided")


def check_rule(rule: str) -> str:
    if rule not in RULES:
        raise ValueError(f"Unknown rule {rule!r}: expected one of {', '.join(map(repr, RULES))}.")
    return rule


def relu_backward(forward_input, grad_output, rule: str):
    r"""One ReLU's backward pass by ``rule``, elementwise, for numpy arrays or tensors.

    ``forward_input`` is :math:`f^l` (the ReLU's input in the forward pass), ``grad_output`` is
    :math:`R^{l+1}`; returns :math:`R^l` (see the module's table). Masked entries are exactly 0.

    >>> x = np.array([[1, -1, 5], [2, -5, -7], [-3, 2, 4]])
    >>> r = np.array([[-2, 3, -1], [6, -3, 1], [2, -1, 3]])
    >>> relu_backward(x, r, "guided")
    array([[0, 0, 0],
           [6, 0, 0],
           [0, 0, 3]])
    """
    check_rule(rule)
    is_tensor = isinstance(forward_input, torch.Tensor) or isinstance(grad_output, torch.Tensor)
    lib = torch if is_tensor else np
    x = torch.as_tensor(forward_input) if is_tensor else np.asarray(forward_input)
    r = torch.as_tensor(grad_output) if is_tensor else np.asarray(grad_output)
    if tuple(x.shape) != tuple(r.shape):
        raise ValueError(
            f"relu_backward: forward_input has shape {tuple(x.shape)} but grad_output has shape "
            f"{tuple(r.shape)}; they must match (one gradient per ReLU input)."
        )
    if rule == "gradient":
        keep = x > 0
    elif rule == "deconvnet":
        keep = r > 0
    else:
        keep = (x > 0) & (r > 0)
    return lib.where(keep, r, lib.zeros_like(r))


# --- every ReLU of a model, by one rule -----------------------------------------------------


def _relu_call(func, args, kwargs) -> tuple[torch.Tensor, bool] | None:
    """``(x, inplace)`` when ``func(*args, **kwargs)`` computes a ReLU, else None."""
    if func in (F.relu,):
        inplace = kwargs.get("inplace", args[1] if len(args) > 1 else False)
        return args[0], bool(inplace)
    if func in (torch.relu, torch.Tensor.relu):
        return args[0], False
    if func in (torch.relu_, torch.Tensor.relu_, F.relu_):
        return args[0], True
    return None


def _mask_backward(rule: str, grad: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
    """R^l from R^{l+1}; ``output = max(f^l, 0)``, so ``output > 0`` exactly when ``f^l > 0``."""
    if rule == "gradient":
        return torch.ops.aten.threshold_backward(grad, output, 0)
    if rule == "deconvnet":
        return grad.clamp(min=0)
    return torch.ops.aten.threshold_backward(grad.clamp(min=0), output, 0)


class _RuleReLU(torch.autograd.Function):
    """max(x, 0) forward; the chosen rule backward. Saves only the output."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, rule: str, inplace: bool) -> torch.Tensor:
        if inplace:
            ctx.mark_dirty(x)
            output = x.clamp_(min=0)
        else:
            output = x.clamp(min=0)
        ctx.rule = rule
        ctx.save_for_backward(output)
        return output

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (output,) = ctx.saved_tensors
        return _mask_backward(ctx.rule, grad, output), None, None


class ReLURuleMode(TorchFunctionMode):
    """Inside this mode every ReLU backpropagates by ``rule``; ``relu_calls`` counts them."""

    def __init__(self, rule: str) -> None:
        super().__init__()
        self.rule = check_rule(rule)
        self.relu_calls = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        call = _relu_call(func, args, kwargs)
        if call is None:
            return func(*args, **kwargs)
        self.relu_calls += 1
        x, inplace = call
        if not (torch.is_grad_enabled() and x.requires_grad):
            return func(*args, **kwargs)
        return _RuleReLU.apply(x, self.rule, inplace)


@contextmanager
def use_rule(rule: str) -> Iterator[ReLURuleMode]:
    """Inside ``with use_rule(rule):`` every ReLU of every model backpropagates by ``rule``
    (``"gradient"``, ``"deconvnet"`` or ``"guided"``). Leaves nothing behind, also on errors.

    >>> with use_rule("guided") as mode:
    ...     score = model(x)[0, c]
    ...     (r,) = torch.autograd.grad(score, x)
    >>> mode.relu_calls  # how many ReLUs the forward pass went through
    """
    with ReLURuleMode(rule) as mode:
        yield mode


# --- DeepLIFT's rescale rule ----------------------------------------------------------------


def _pool_arguments(
    input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False
):
    """The arguments of F.max_pool2d by name, whichever way they were passed."""
    stride = kernel_size if stride is None or stride == [] else stride
    return (
        input,
        dict(
            kernel_size=kernel_size,
            stride=stride,
            padding=padding,
            dilation=dilation,
            ceil_mode=ceil_mode,
        ),
        return_indices,
    )


_MAX_POOL_2D = (F.max_pool2d, F.max_pool2d_with_indices, F._max_pool2d, torch.max_pool2d)

_NO_RESCALE_RULE = {
    torch.sigmoid: "sigmoid",
    torch.Tensor.sigmoid: "sigmoid",
    F.sigmoid: "sigmoid",
    torch.tanh: "tanh",
    torch.Tensor.tanh: "tanh",
    F.tanh: "tanh",
    F.gelu: "GELU",
    F.silu: "SiLU",
    F.elu: "ELU",
    F.leaky_relu: "leaky ReLU",
    F.softmax: "softmax",
    torch.softmax: "softmax",
    F.log_softmax: "log-softmax",
    F.max_pool1d: "1-D max-pooling",
    F.max_pool3d: "3-D max-pooling",
    F.adaptive_max_pool2d: "adaptive max-pooling",
    F.hardtanh: "hardtanh",
}


class _RecordMode(TorchFunctionMode):
    """The reference pass of DeepLIFT: records each ReLU's and max-pool's input, in call order."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[torch.Tensor] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if _relu_call(func, args, kwargs) is not None or func in _MAX_POOL_2D:
            self.records.append(args[0].detach().clone())
        return func(*args, **kwargs)


class _RescaleReLU(torch.autograd.Function):
    r"""ReLU forward; backward the multiplier :math:`m = \Delta y / \Delta x` (DeepLIFT's
    rescale rule). Where :math:`\Delta x = 0` the unit carries no difference, whatever its
    multiplier (:math:`m \Delta x = \Delta y = 0`), and m is set to 0."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, reference: torch.Tensor, inplace: bool) -> torch.Tensor:
        delta_x = x - reference
        if inplace:
            ctx.mark_dirty(x)
            output = x.clamp_(min=0)
        else:
            output = x.clamp(min=0)
        multiplier = (output - reference.clamp(min=0)).div_(delta_x).nan_to_num_(nan=0.0)
        ctx.save_for_backward(multiplier)
        return output

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (multiplier,) = ctx.saved_tensors
        return grad * multiplier, None, None


class _RescaleMaxPool2d(torch.autograd.Function):
    r"""2-D max-pooling forward; backward a rule that keeps summation-to-delta.

    In a pooling region, let ``s`` be the switch of the input (where x is largest) and ``s0``
    the switch of the reference. Then :math:`\Delta x_{s_0} \le \Delta y \le \Delta x_s`, so
    :math:`\Delta y = t\,\Delta x_s + (1 - t)\,\Delta x_{s_0}` for one :math:`t \in [0, 1]`:
    the region's multiplier goes a share ``t`` to ``s`` and ``1 - t`` to ``s0``. (Sending it
    all to ``s``, as the gradient does, breaks summation-to-delta whenever the two switches
    differ.) With :math:`y = x_s` and :math:`y_0 = x'_{s_0}`,

    .. math:: t = \frac{y - x_{s_0}}{(y - x_{s_0}) + (y_0 - x'_s)},

    both terms of the denominator being :math:`\ge 0`; when it is 0, :math:`\Delta x_s =
    \Delta x_{s_0}` and all of it goes to ``s``.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, reference: torch.Tensor, pool: dict) -> torch.Tensor:
        y, switch = F.max_pool2d_with_indices(x, **pool)
        y0, switch0 = F.max_pool2d_with_indices(reference, **pool)
        switch0 = switch0.expand_as(switch)
        x_at_s0 = x.flatten(2).gather(2, switch0.flatten(2)).view_as(y)
        reference_at_s = reference.expand_as(x).flatten(2).gather(2, switch.flatten(2)).view_as(y)
        above = y - x_at_s0  # >= 0: y is the largest value of x in the region
        spread = above + (y0 - reference_at_s)  # >= above: y0 is the reference's largest
        share = torch.where(spread > 0, above / spread, 1.0)
        ctx.save_for_backward(switch.flatten(2), switch0.flatten(2), share.flatten(2))
        ctx.input_shape = x.shape
        return y

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        switch, switch0, share = ctx.saved_tensors
        g = grad.flatten(2)
        to_s = g * share
        n, c, h, w = ctx.input_shape
        result = g.new_zeros(n, c, h * w)
        result.scatter_add_(2, switch, to_s)
        result.scatter_add_(2, switch0, g - to_s)
        return result.view(n, c, h, w), None, None


class _RescaleMode(TorchFunctionMode):
    """The input pass of DeepLIFT: each ReLU and max-pool meets its recorded reference."""

    def __init__(self, records: list[torch.Tensor]) -> None:
        super().__init__()
        self.records = list(records)
        self.calls = 0

    def _reference(self, x: torch.Tensor) -> torch.Tensor:
        if self.calls >= len(self.records):
            raise RuntimeError(
                "deeplift: the model ran more ReLU / max-pool layers on the input than on the "
                "baseline; DeepLIFT needs the same path through the network for both."
            )
        reference = self.records[self.calls]
        self.calls += 1
        if reference.shape[1:] != x.shape[1:]:
            raise RuntimeError(
                "deeplift: a layer's input on the baseline has shape "
                f"{tuple(reference.shape)}, on the input {tuple(x.shape)}; they must match."
            )
        return reference

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _NO_RESCALE_RULE:
            raise NotImplementedError(
                f"deeplift: the model uses {_NO_RESCALE_RULE[func]}, which has no DeepLIFT rule "
                "here; this course's DeepLIFT handles conv, linear, ReLU and 2-D max-pooling "
                "(and any linear operation)."
            )
        relu = _relu_call(func, args, kwargs)
        if relu is not None:
            x, inplace = relu
            return _RescaleReLU.apply(x, self._reference(x), inplace)
        if func in _MAX_POOL_2D:
            x, pool, return_indices = _pool_arguments(*args, **kwargs)
            if return_indices:
                raise NotImplementedError(
                    "deeplift: max-pooling that returns its indices is not supported."
                )
            return _RescaleMaxPool2d.apply(x, self._reference(x), pool)
        return func(*args, **kwargs)


@contextmanager
def record_references() -> Iterator[_RecordMode]:
    """DeepLIFT's first pass: ``with record_references() as rec: model(baseline)``."""
    with torch.no_grad(), _RecordMode() as mode:
        yield mode


@contextmanager
def use_rescale(records: list[torch.Tensor]) -> Iterator[_RescaleMode]:
    """DeepLIFT's second pass: inside, ReLU and max-pool backpropagate multipliers
    :math:`\\Delta y / \\Delta x` against the references of ``record_references``."""
    with _RescaleMode(records) as mode:
        yield mode
