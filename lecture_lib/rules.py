r"""The backward pass through ReLU, three ways (lecture, "Difference in backpropagating through ReLU").

Forward, every method is the same: :math:`f^{l+1}_i = \max(f^l_i, 0)`. Backward, with
:math:`R^{l+1}_i = \partial f^{out} / \partial f^{l+1}_i` arriving from above:

==============  ===========================================================  ==========================
rule            :math:`R^l_i`                                                source
==============  ===========================================================  ==========================
``gradient``    :math:`(f^l_i > 0) \cdot R^{l+1}_i`                          Simonyan et al. 2013
``deconvnet``   :math:`(R^{l+1}_i > 0) \cdot R^{l+1}_i`                      Zeiler & Fergus 2014
``guided``      :math:`(f^l_i > 0) \cdot (R^{l+1}_i > 0) \cdot R^{l+1}_i`    Springenberg et al. 2014
==============  ===========================================================  ==========================

Convolution and max-pooling backpropagate as usual in all three (flipped kernel; the gradient
goes to the switch, the position of each pooling region's maximum).

Layer-wise relevance propagation (``lecture_lib.relevance``) uses the same mechanism with a
fourth ReLU rule, ``"relevance"``: :math:`R^l_i = R^{l+1}_i`, the relevance passes on unchanged
(it is already 0 where :math:`f^l_i \le 0`), and a ``layers`` handler that gives every other
operation of the forward pass its own rule (convolution, linear layers, pooling).

``relu_backward`` applies one rule to arrays, as on the slides. ``use_rule`` makes every ReLU
of any model follow a rule inside a ``with`` block: it watches the torch functions that compute
a ReLU (``nn.ReLU`` in-place or not, ``F.relu``, ``torch.relu``, ``Tensor.relu``, and
:math:`\max(x, 0)` written as ``x.clamp(min=0)``, ``torch.maximum(x, zero)`` or
``F.threshold(x, 0, 0)``) with a ``TorchFunctionMode``, so a ReLU is caught however the model's
code calls it, and the model itself is never touched.

This module also holds DeepLIFT's *rescale* rule (``use_rescale``), the backward rule that
``attribution.deeplift`` needs for ReLU and max-pooling, and its allow-list: every other
operation that a tensor depending on the input goes through must be linear (its multiplier is
its gradient), or DeepLIFT refuses the model and names the operation.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from . import answer_calls

RULES: tuple[str, ...] = ("gradient", "deconvnet", "guided")
RELEVANCE = "relevance"
"""The ReLU rule of layer-wise relevance propagation: the relevance passes on unchanged."""


def check_rule(rule: str) -> str:
    if rule not in RULES:
        raise ValueError(f"Unknown rule {rule!r}: expected one of {', '.join(map(repr, RULES))}.")
    return rule


@answer_calls.recorded
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


def _argument(args, kwargs, index: int, name: str, default=None):
    """The argument at position ``index`` or called ``name``, however it was passed."""
    return args[index] if len(args) > index else kwargs.get(name, default)


def _is_zero(value, x: torch.Tensor) -> bool:
    """Whether ``value`` is the constant 0 next to ``x``: a number, or a tensor of zeros that
    needs no gradient and broadcasts to ``x`` without changing its shape or dtype."""
    if isinstance(value, bool) or not isinstance(x, torch.Tensor):
        return False
    if isinstance(value, (int, float)):
        return value == 0
    return (
        isinstance(value, torch.Tensor)
        and not value.requires_grad
        and value.numel() > 0
        and torch.broadcast_shapes(value.shape, x.shape) == x.shape
        and torch.result_type(x, value) == x.dtype
        and bool((value == 0).all())
    )


_CLAMPS = (torch.clamp, torch.Tensor.clamp, torch.clip, torch.Tensor.clip)
_CLAMPS_INPLACE = (torch.clamp_, torch.Tensor.clamp_, torch.clip_, torch.Tensor.clip_)
_CLAMP_MINS = (torch.clamp_min, torch.Tensor.clamp_min)
_CLAMP_MINS_INPLACE = (torch.clamp_min_, torch.Tensor.clamp_min_)
_MAXIMUMS = (torch.maximum, torch.Tensor.maximum, torch.max, torch.Tensor.max)
_THRESHOLDS = (F.threshold, torch.threshold)
_THRESHOLDS_INPLACE = (F.threshold_, torch.threshold_)


def _relu_call(func, args, kwargs) -> tuple[torch.Tensor, bool] | None:
    """``(x, inplace)`` when ``func(*args, **kwargs)`` computes a ReLU :math:`\\max(x, 0)`
    (``relu``, ``clamp(min=0)``, ``maximum(x, zero)``, ``threshold(x, 0, 0)``), else None."""
    if "out" in kwargs:
        return None
    x = _argument(args, kwargs, 0, "input")
    if func is F.relu:
        return x, bool(_argument(args, kwargs, 1, "inplace", False))
    if func in (torch.relu, torch.Tensor.relu):
        return x, False
    if func in (torch.relu_, torch.Tensor.relu_, F.relu_):
        return x, True
    if func in _CLAMPS or func in _CLAMPS_INPLACE:
        low, high = _argument(args, kwargs, 1, "min"), _argument(args, kwargs, 2, "max")
        if high is None and _is_zero(low, x):
            return x, func in _CLAMPS_INPLACE
    if func in _CLAMP_MINS or func in _CLAMP_MINS_INPLACE:
        if _is_zero(_argument(args, kwargs, 1, "min"), x):
            return x, func in _CLAMP_MINS_INPLACE
    if func in _MAXIMUMS:
        other = _argument(args, kwargs, 1, "other")
        if isinstance(x, torch.Tensor) and isinstance(other, torch.Tensor):
            if _is_zero(other, x):
                return x, False
            if _is_zero(x, other):
                return other, False
    if func in _THRESHOLDS or func in _THRESHOLDS_INPLACE:
        threshold = _argument(args, kwargs, 1, "threshold")
        if _is_zero(threshold, x) and _is_zero(_argument(args, kwargs, 2, "value"), x):
            inplace = _argument(args, kwargs, 3, "inplace", False)
            return x, func in _THRESHOLDS_INPLACE or bool(inplace)
    return None


def _mask_backward(rule: str, grad: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
    """R^l from R^{l+1}; ``output = max(f^l, 0)``, so ``output > 0`` exactly when ``f^l > 0``."""
    if rule == "gradient":
        return torch.ops.aten.threshold_backward(grad, output, 0)
    if rule == RELEVANCE:
        return grad
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
        ctx.save_for_backward(None if rule == RELEVANCE else output)
        return output

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (output,) = ctx.saved_tensors
        return _mask_backward(ctx.rule, grad, output), None, None


class ReLURuleMode(TorchFunctionMode):
    """Inside this mode every ReLU backpropagates by ``rule``; ``relu_calls`` counts them.
    Every other call goes to ``layers(func, args, kwargs)`` when given (LRP's layer rules)."""

    def __init__(self, rule: str, layers=None) -> None:
        super().__init__()
        self.rule = rule if rule == RELEVANCE else check_rule(rule)
        self.layers = layers
        self.relu_calls = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        call = _relu_call(func, args, kwargs)
        if call is None:
            return func(*args, **kwargs) if self.layers is None else self.layers(func, args, kwargs)
        self.relu_calls += 1
        x, inplace = call
        if not (torch.is_grad_enabled() and x.requires_grad):
            return func(*args, **kwargs)
        # relevance: out of place, so that the layer below keeps the output it saved
        result = _RuleReLU.apply(x, self.rule, inplace and self.rule != RELEVANCE)
        if self.layers is not None:
            self.layers.passed(x, result)
        return result


@contextmanager
@answer_calls.recorded
def use_rule(rule: str, layers=None) -> Iterator[ReLURuleMode]:
    """Inside ``with use_rule(rule):`` every ReLU of every model backpropagates by ``rule``
    (``"gradient"``, ``"deconvnet"`` or ``"guided"``). Leaves nothing behind, also on errors.
    ``use_rule("relevance", layers)`` is layer-wise relevance propagation
    (``relevance.use_composite``): ReLUs pass the relevance on, ``layers`` rules the rest.

    >>> with use_rule("guided") as mode:
    ...     score = model(x)[0, c]
    ...     (r,) = torch.autograd.grad(score, x)
    >>> mode.relu_calls  # how many ReLUs the forward pass went through
    """
    with ReLURuleMode(rule, layers) as mode:
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


class _RecordMode(TorchFunctionMode):
    """The reference pass of DeepLIFT: records each ReLU's and max-pool's input, in call order."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[torch.Tensor] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        relu = _relu_call(func, args, kwargs)
        if relu is not None:
            self.records.append(relu[0].detach().clone())
        elif func in _MAX_POOL_2D:
            self.records.append(_pool_arguments(*args, **kwargs)[0].detach().clone())
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


# --- DeepLIFT's allow-list -------------------------------------------------------------------
#
# A tensor *depends on the input* when the input pass computed it from the input. Only those
# tensors need a DeepLIFT rule; parameters, buffers, indices and fresh tensors are constants.
# An operation on them is allowed when it is linear, because then its multiplier
# Delta y / Delta x is its gradient and autograd backpropagates it exactly. Anything else is
# refused by name: a wrong rule would silently break summation to delta.


def _functions(*names: str) -> frozenset:
    """The functions of these names in ``torch``, ``torch.Tensor`` and ``torch.nn.functional``."""
    found = set()
    for name in names:
        for owner in (torch, torch.Tensor, F):
            function = getattr(owner, name, None)
            if callable(function) and not isinstance(function, torch.dtype):
                found.add(function)
    return frozenset(found)


# Linear in all their tensor arguments together: sums, averages, reshaping, indexing, copies.
_LINEAR = _functions(
    *("add", "add_", "__add__", "__radd__", "__iadd__", "sub", "sub_", "subtract", "rsub"),
    *("__sub__", "__rsub__", "__isub__", "neg", "neg_", "negative", "positive", "__neg__"),
    *("sum", "mean", "cumsum", "avg_pool1d", "avg_pool2d", "avg_pool3d", "adaptive_avg_pool1d"),
    *("adaptive_avg_pool2d", "adaptive_avg_pool3d", "interpolate", "upsample", "unfold", "fold"),
    *("view", "view_as", "reshape", "reshape_as", "flatten", "unflatten", "ravel", "squeeze"),
    *("squeeze_", "unsqueeze", "unsqueeze_", "permute", "transpose", "transpose_", "t"),
    *("swapaxes", "swapdims", "movedim", "moveaxis", "contiguous", "expand", "expand_as"),
    *("broadcast_to", "clone", "repeat", "repeat_interleave", "tile", "flip", "fliplr", "flipud"),
    *("roll", "rot90", "narrow", "select", "index_select", "gather", "take_along_dim"),
    *("__getitem__", "__setitem__", "__iter__", "split", "chunk", "unbind", "tensor_split"),
    *("diagonal", "cat", "concat", "concatenate", "stack", "hstack", "vstack", "dstack"),
    *("pad", "constant_pad_nd", "pixel_shuffle", "pixel_unshuffle", "channel_shuffle"),
    *("copy_", "masked_fill", "masked_fill_", "where", "index_add", "index_add_", "index_copy"),
    *("index_put", "index_put_", "scatter", "scatter_", "scatter_add", "scatter_add_"),
    *("to", "type", "type_as", "float", "double", "half", "bfloat16", "cpu", "cuda"),
)
# Linear in each tensor argument: allowed when only one of them depends on the input (w * x,
# W @ x, a convolution of x with a kernel); x * x is not linear.
_PRODUCTS = _functions(
    *("mul", "mul_", "multiply", "__mul__", "__rmul__", "__imul__", "matmul", "__matmul__"),
    *("__rmatmul__", "mm", "bmm", "mv", "dot", "inner", "outer", "einsum", "tensordot", "addmm"),
    *("linear", "bilinear", "conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d"),
    "conv_transpose3d",
)
# x / c: allowed when only the numerator depends on the input.
_DIVISIONS = _functions(
    "div", "div_", "divide", "true_divide", "true_divide_", "__truediv__", "__itruediv__"
)
# Linear in eval mode only: (position, default) of their ``training`` / ``train`` flag.
_EVAL_ONLY = {
    **dict.fromkeys(_functions("dropout", "dropout1d", "dropout2d", "dropout3d"), (2, True)),
    **dict.fromkeys(
        _functions("alpha_dropout", "feature_alpha_dropout", "feature_dropout"), (2, True)
    ),
    **dict.fromkeys(_functions("batch_norm"), (5, False)),
}
# Queries and fresh tensors: no difference flows through them (``detach`` gives a constant).
_QUERIES = _functions(
    *("detach", "dim", "size", "numel", "nelement", "element_size", "is_floating_point"),
    *("is_complex", "is_contiguous", "stride", "storage_offset", "data_ptr", "__len__"),
    *("get_device", "__repr__", "__format__", "is_inference", "requires_grad_", "untyped_storage"),
    *("zeros_like", "ones_like", "empty_like", "full_like", "rand_like", "randn_like"),
    *("new_zeros", "new_ones", "new_empty", "new_full", "is_same_size"),
)


def _operation_name(func) -> str:
    """How a student finds ``func`` in the model's code: ``torch.amax``, ``Tensor.softmax``..."""
    name = getattr(func, "__name__", repr(func))
    if name == "__get__":  # reading a tensor's property, such as x.T
        return f"Tensor.{func.__self__.__name__}"
    qualname = getattr(func, "__qualname__", name)
    if getattr(torch.Tensor, name, None) is func or qualname.startswith(("TensorBase.", "Tensor.")):
        return f"Tensor.{name}"
    for prefix, owner in (("torch.nn.functional", F), ("torch", torch)):
        if getattr(owner, name, None) is func:
            return f"{prefix}.{name}"
    return f"{getattr(func, '__module__', None) or 'torch'}.{qualname}"


def _tensors(value) -> Iterator[torch.Tensor]:
    """Every tensor in an argument list, also inside lists, tuples and dicts (torch.cat([a, b]))."""
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _tensors(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _tensors(item)


def _memory(tensor: torch.Tensor) -> int | None:
    """The address of the memory that ``tensor`` views (None for an empty tensor)."""
    try:
        address = tensor.untyped_storage().data_ptr()
    except (RuntimeError, NotImplementedError):  # tensors without storage
        address = id(tensor)
    return address or None


_RESCALE_KNOWS = (
    "ReLU (the rescale rule), 2-D max-pooling and linear operations (convolution, linear layers, "
    "sums and differences, scaling by a constant or a parameter, average pooling, batch norm and "
    "dropout in eval mode, reshaping, concatenation, padding, indexing)"
)
_RESCALE_ELSE = (
    "Explain this model with integrated_gradients (it needs only gradients and also sums to "
    "f(x) - f(x')), or build the model from the operations above."
)


class _RescaleMode(TorchFunctionMode):
    """The input pass of DeepLIFT: each ReLU and max-pool meets its recorded reference; every
    other operation on a tensor that depends on the input must be on the allow-list."""

    def __init__(
        self, records: list[torch.Tensor], inputs: torch.Tensor, model: torch.nn.Module | None
    ) -> None:
        super().__init__()
        self.records = list(records)
        self.calls = 0
        self.model = model
        self.dependent: dict[int, torch.Tensor] = {}  # kept alive, so no address is reused
        self._mark(inputs)

    def __exit__(self, *exc_info):
        self.dependent.clear()
        return super().__exit__(*exc_info)

    def _mark(self, result) -> None:
        for tensor in _tensors(result):
            address = _memory(tensor)
            if address is not None:
                self.dependent[address] = tensor

    def _depends(self, value) -> int:
        """How many of the tensors in ``value`` depend on the input."""
        return sum(
            tensor.requires_grad and _memory(tensor) in self.dependent for tensor in _tensors(value)
        )

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
        relu = _relu_call(func, args, kwargs)
        if relu is not None:
            x, inplace = relu
            result = _RescaleReLU.apply(x, self._reference(x), inplace)
        elif func in _MAX_POOL_2D:
            x, pool, return_indices = _pool_arguments(*args, **kwargs)
            if return_indices:
                raise NotImplementedError(
                    "deeplift: max-pooling that returns its indices (return_indices=True"
                    f"{self._where()}) is not supported; pool without indices."
                )
            result = _RescaleMaxPool2d.apply(x, self._reference(x), pool)
        elif not self._depends((args, kwargs)):
            return func(*args, **kwargs)  # a constant for DeepLIFT: parameters, indices...
        else:
            self._check(func, args, kwargs)
            result = func(*args, **kwargs)
            if func not in _QUERIES and not _is_property(func):
                self._check_result(func, result)
        if func not in _QUERIES and self._depends((args, kwargs)):
            self._mark(args[0] if result is None else result)  # None: x[i] = y wrote into x
        return result

    def _check(self, func, args, kwargs) -> None:
        """Raise unless ``func`` is linear in the arguments that depend on the input."""
        if func in _QUERIES or func in _LINEAR:
            return
        if _is_property(func):
            return
        if func in _PRODUCTS:
            if self._depends((args, kwargs)) > 1:
                raise self._refusal(
                    "multiplies two tensors that both depend on the input with "
                    f"{_operation_name(func)}{self._where()}, as x * x does; such a product"
                )
            return
        if func in _DIVISIONS:
            if kwargs.get("rounding_mode") is not None:
                raise self._refusal(
                    f"uses {_operation_name(func)} with rounding{self._where()}, which"
                )
            if self._depends((args[1:], kwargs)):
                raise self._refusal(
                    "divides by a tensor that depends on the input with "
                    f"{_operation_name(func)}{self._where()}; such a division"
                )
            return
        if func in _EVAL_ONLY:
            index, default = _EVAL_ONLY[func]
            training = _argument(args, kwargs, index, "training", kwargs.get("train", default))
            if training:
                raise NotImplementedError(
                    f"deeplift: the model runs {_operation_name(func)}{self._where()} in "
                    "training mode, with batch statistics or random dropout, which is not linear. "
                    "DeepLIFT needs it in eval mode: BatchNorm with track_running_stats=True, "
                    "and functional calls with training=self.training. Or explain the model with "
                    "integrated_gradients, which needs only gradients."
                )
            return
        raise self._refusal(f"uses {_operation_name(func)}{self._where()}, which")

    def _check_result(self, func, result) -> None:
        for tensor in _tensors(result):
            if not (tensor.is_floating_point() or tensor.is_complex()):
                raise self._refusal(
                    f"turns a tensor that depends on the input into {tensor.dtype} with "
                    f"{_operation_name(func)}{self._where()}; such a rounding"
                )

    def _refusal(self, what: str) -> NotImplementedError:
        return NotImplementedError(
            f"deeplift: the model {what} has no DeepLIFT rule here. This course's DeepLIFT "
            f"knows {_RESCALE_KNOWS}. {_RESCALE_ELSE}"
        )

    def _where(self) -> str:
        """`` in layer 'name' (Type)`` for the innermost layer of the model now running."""
        if self.model is None:
            return ""
        names = {id(module): name for name, module in self.model.named_modules()}
        frame = inspect.currentframe()
        try:
            while frame is not None:
                owner = frame.f_locals.get("self")
                if id(owner) in names and isinstance(owner, torch.nn.Module):
                    name = names[id(owner)]
                    kind = type(owner).__name__
                    return f" in layer {name!r} ({kind})" if name else f" in the forward of {kind}"
                frame = frame.f_back
            return ""
        finally:
            del frame


def _is_property(func) -> bool:
    """Reading a tensor's property: x.shape, x.T (linear), x.data (a constant, like detach)."""
    return getattr(func, "__name__", None) == "__get__"


@contextmanager
def record_references() -> Iterator[_RecordMode]:
    """DeepLIFT's first pass: ``with record_references() as rec: model(baseline)``."""
    with torch.no_grad(), _RecordMode() as mode:
        yield mode


@contextmanager
def use_rescale(
    records: list[torch.Tensor], inputs: torch.Tensor, model: torch.nn.Module | None = None
) -> Iterator[_RescaleMode]:
    """DeepLIFT's second pass, on ``inputs``: inside, ReLU and max-pool backpropagate multipliers
    :math:`\\Delta y / \\Delta x` against the references of ``record_references``, and any
    operation without a rule on a tensor that depends on ``inputs`` raises NotImplementedError,
    naming the operation (and the layer of ``model`` that ran it)."""
    with _RescaleMode(records, inputs, model) as mode:
        yield mode
