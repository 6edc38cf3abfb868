r"""Layer-wise relevance propagation (Bach et al. 2015; Montavon et al. 2019).

The lecture writes every ReLU rule as relevance flowing back, :math:`R^l_i = (f^l_i > 0) \cdot
R^{l+1}_i`. LRP carries that notation through every layer: the output's relevance is the
target's score, :math:`R^{out} = S_c` (0 for the other classes), and each layer
:math:`z_j = \sum_i x_i w_{ij} + b_j` hands its relevance down in proportion to what each input
contributed,

.. math:: R_i = \sum_j \frac{x_i w_{ij}}{z_j} R_j \qquad \text{(LRP-0)}.

- ``zero``: :math:`\sum_j x_i w_{ij} / z_j \cdot R_j` (LRP-0; equals input x gradient);
- ``epsilon``: :math:`\sum_j x_i w_{ij} / (z_j + \epsilon\,\mathrm{sign}(z_j)) \cdot R_j`:
  absorbs the relevance of small, noisy :math:`z_j`;
- ``gamma``: :math:`\sum_j x_i (w_{ij} + \gamma w^+_{ij}) / z^\gamma_j \cdot R_j`: positive
  evidence first;
- ``plus`` (z+): :math:`\sum_j x_i w^+_{ij} / \sum_{i'} x_{i'} w^+_{i'j} \cdot R_j`: only
  positive evidence;
- ``flat`` (first layer): :math:`\sum_j 1 / \sum_{i'} 1 \cdot R_j`: spread over the receptive
  field;
- ``box`` (z^B, first layer): :math:`\sum_j (x_i w_{ij} - l_i w^+_{ij} - h_i w^-_{ij}) / z^B_j
  \cdot R_j`: pixels bounded in :math:`[l, h]`.

The sums over :math:`i'` run over the layer's inputs (:math:`w^+ = \max(w, 0)`,
:math:`w^- = \min(w, 0)`); every denominator but LRP-0's is moved away from 0 by
``STABILIZER`` (``epsilon``'s by :math:`\epsilon`). The rules follow Zennit's generalized forms,
which also accept negative inputs (the ``plus`` and ``gamma`` rules then treat :math:`x^-`
with :math:`w^-`), and a positive bias counts as a positive contribution.

ReLUs pass the relevance on (``rules.use_rule("relevance")``), max-pooling hands it to the
winner (as the gradient does), average pooling in proportion to its inputs, reshaping moves
it. A layer of another kind (batch norm, a sigmoid, the sum of two branches) has no rule here
and raises an error that names it. A *composite* (Zennit's name) picks each layer's rule:

=======================  ==========================  ===============  ================
composite                first layer                 convolutions     dense layers
=======================  ==========================  ===============  ================
``zero``                 LRP-0                       LRP-0            LRP-0
``epsilon``              epsilon                     epsilon          epsilon
``epsilon-plus-flat``    flat                        z+               epsilon
``epsilon-gamma-box``    z^B (a first convolution)   gamma            epsilon
=======================  ==========================  ===============  ================
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from . import answer_calls
from .rules import (
    _MAX_POOL_2D,
    _QUERIES,
    RELEVANCE,
    _argument,
    _functions,
    _is_property,
    _memory,
    _operation_name,
    _tensors,
    use_rule,
)

COMPOSITES: tuple[str, ...] = ("zero", "epsilon", "epsilon-plus-flat", "epsilon-gamma-box")
LAYER_RULES: tuple[str, ...] = ("zero", "epsilon", "gamma", "plus", "flat", "box")
STABILIZER = 1e-6
"""What every rule but LRP-0 and epsilon adds to its denominator's size (as Zennit does)."""


def rule_for(composite: str, kind: str, first: bool) -> str:
    """The rule that ``composite`` gives a layer of ``kind`` (``"conv"`` or ``"dense"``),
    ``first``: the first convolution or linear layer of the forward pass."""
    if composite in ("zero", "epsilon"):
        return composite
    if composite == "epsilon-plus-flat":
        return "flat" if first else ("plus" if kind == "conv" else "epsilon")
    return ("box" if first else "gamma") if kind == "conv" else "epsilon"


def check_options(composite, epsilon, gamma, method: str = "lrp") -> None:
    if composite not in COMPOSITES:
        raise ValueError(
            f"{method}: unknown composite {composite!r}; expected one of "
            f"{', '.join(map(repr, COMPOSITES))}."
        )
    for name, value in (("epsilon", epsilon), ("gamma", gamma)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
            raise ValueError(
                f"{method}: {name} must be a number >= 0 ({name}=0 gives LRP-0), got "
                f"{name}={value!r}."
            )


# --- one layer's rule -----------------------------------------------------------------------


def _stabilize(z: torch.Tensor, eps: float) -> torch.Tensor:
    """:math:`z + \\epsilon\\, \\mathrm{sign}(z)`, with sign(0) = +1 (Zennit's stabilizer)."""
    return torch.where(z >= 0, z + eps, z - eps)


class Layer:
    """A convolution or linear layer as the rules see it: ``forward(x, w, b)`` is the layer with
    other weights, ``transpose(s, w)`` sends :math:`s_j` back, :math:`c_i = \\sum_j w_{ij} s_j`."""

    def __init__(self, kind: str, weight, bias, input_shape, conv: dict | None = None) -> None:
        self.kind, self.weight, self.bias = kind, weight, bias
        self.input_shape, self.conv = tuple(input_shape), conv or {}

    def forward(self, x, w, b=None):
        if self.kind == "dense":
            return F.linear(x, w, b)
        return F.conv2d(x, w, b, **self.conv)

    def transpose(self, s, w):
        if self.kind == "dense":
            return s @ w
        if isinstance(self.conv.get("padding"), str):  # "same" / "valid": let autograd do it
            x = torch.zeros(self.input_shape, dtype=s.dtype, device=s.device, requires_grad=True)
            with torch.enable_grad():
                return torch.autograd.grad(F.conv2d(x, w, None, **self.conv), x, s)[0]
        return torch.nn.grad.conv2d_input(self.input_shape, w, s, **self.conv)

    def transpose_pair(self, s, w, t, v):
        """``transpose(s, w) + transpose(t, v)`` in one call (the outputs side by side)."""
        if self.kind == "dense":
            return torch.cat([s, t], dim=-1) @ torch.cat([w, v])
        if self.conv.get("groups", 1) != 1 or isinstance(self.conv.get("padding"), str):
            return self.transpose(s, w) + self.transpose(t, v)
        return self.transpose(torch.cat([s, t], dim=1), torch.cat([w, v]))


@answer_calls.recorded
def layer_relevance(
    rule: str, layer: Layer, x, relevance, z=None, epsilon=1e-6, gamma=0.25, low=0.0, high=1.0
) -> torch.Tensor:
    r"""The relevance of the layer's inputs :math:`R_i` from its outputs' :math:`R_j` by ``rule``
    (the module's table). ``z`` is the layer's output on ``x`` (computed when not given)."""
    w, b = layer.weight, layer.bias
    forward, transpose = layer.forward, layer.transpose
    if rule in ("zero", "epsilon"):
        z = forward(x, w, b) if z is None else z
        if rule == "zero":
            s = torch.where(z != 0, relevance / torch.where(z != 0, z, 1.0), 0.0)
        else:
            s = relevance / _stabilize(z, epsilon)
        return x * transpose(s, w)
    if rule == "flat":
        ones = torch.ones_like(w)
        s = relevance / _stabilize(forward(torch.ones_like(x), ones), STABILIZER)
        return transpose(s, ones)
    wp, wn = w.clamp(min=0), w.clamp(max=0)
    if rule == "box":
        lo, hi = (torch.as_tensor(v).to(x).expand_as(x) for v in (low, high))
        zb = forward(x, w) - forward(lo, wp) - forward(hi, wn)
        s = relevance / _stabilize(zb, STABILIZER)
        return x * transpose(s, w) - lo * transpose(s, wp) - hi * transpose(s, wn)
    xp, xn = x.clamp(min=0), x.clamp(max=0)
    negative = bool((x < 0).any())
    if rule == "plus":
        bp = None if b is None else b.clamp(min=0)
        zp = forward(xp, wp, bp)
        if negative:
            zp = zp + forward(xn, wn)
        s = relevance / _stabilize(zp, STABILIZER)
        r = xp * transpose(s, wp)
        return r + xn * transpose(s, wn) if negative else r
    if rule == "gamma":
        z = forward(x, w, b) if z is None else z
        up, down = w + gamma * wp, w + gamma * wn  # positive outputs lean on up, negative on down
        bp = None if b is None else b.clamp(min=0)
        if negative:
            b_down = None if b is None else b + gamma * b.clamp(max=0)
            z_up = forward(xp, up, None if b is None else b + gamma * bp) + forward(xn, down)
            z_down = forward(xp, down, b_down) + forward(xn, up)
        else:  # x >= 0 (after a ReLU): one extra convolution, since x w- = (z - b) - x w+
            q = forward(x, wp, bp)
            z_up, z_down = z + gamma * q, z + gamma * (z - q)
        s_up = relevance * (z > 0) / _stabilize(z_up, STABILIZER)
        s_down = relevance * (z < 0) / _stabilize(z_down, STABILIZER)
        r = xp * layer.transpose_pair(s_up, up, s_down, down)
        if negative:
            r = r + xn * layer.transpose_pair(s_up, down, s_down, up)
        return r
    raise ValueError(f"Unknown LRP rule {rule!r}: expected one of {', '.join(LAYER_RULES)}.")


class _RuleLayer(torch.autograd.Function):
    """The layer forward; its rule backward (relevance in, relevance out)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, layer: Layer, rule: str, options: dict) -> torch.Tensor:
        z = layer.forward(x, layer.weight, layer.bias)
        ctx.layer, ctx.rule, ctx.options = layer, rule, options
        ctx.save_for_backward(x, z if rule in ("zero", "epsilon", "gamma") else None)
        return z

    @staticmethod
    def backward(ctx, relevance: torch.Tensor):
        x, z = ctx.saved_tensors
        r = layer_relevance(ctx.rule, ctx.layer, x, relevance, z, **ctx.options)
        return r, None, None, None


class _Proportional(torch.autograd.Function):
    """Average pooling: relevance in proportion to each input's share, :math:`R_i = x_i
    \\sum_j (\\partial z_j / \\partial x_i) R_j / z_j` (Zennit's ``Norm``)."""

    @staticmethod
    def forward(ctx, x, func, args, kwargs):
        ctx.func, ctx.args, ctx.kwargs = func, args, kwargs
        ctx.save_for_backward(x)
        return func(x, *args, **kwargs)

    @staticmethod
    def backward(ctx, relevance):
        (x,) = ctx.saved_tensors
        with torch.enable_grad():
            leaf = x.detach().requires_grad_(True)
            z = ctx.func(leaf, *ctx.args, **ctx.kwargs)
            (c,) = torch.autograd.grad(z, leaf, relevance / _stabilize(z.detach(), STABILIZER))
        return x * c, None, None, None


class _PassOn(torch.autograd.Function):
    """An elementwise shift or scale by a constant ((x - mean) / std): relevance passes on."""

    @staticmethod
    def forward(ctx, x, compute):
        return compute(x)

    @staticmethod
    def backward(ctx, relevance):
        return relevance, None


# --- the composite: every operation of the forward pass gets its rule -----------------------

_CONV = _functions("conv2d")
_DENSE = _functions("linear")
_AVERAGES = _functions("avg_pool2d", "adaptive_avg_pool2d")
_WINNERS = frozenset(_MAX_POOL_2D) | _functions("adaptive_max_pool2d")
_ROUTES = _functions(
    *("view", "view_as", "reshape", "reshape_as", "flatten", "unflatten", "ravel", "squeeze"),
    *("unsqueeze", "permute", "transpose", "t", "contiguous", "clone", "__getitem__", "narrow"),
    *("select", "cat", "concat", "stack", "split", "chunk", "unbind", "pad", "to", "type"),
    *("type_as", "float", "double", "cpu", "cuda", "movedim", "swapaxes", "flip", "gather"),
    *("index_select", "take_along_dim", "expand", "expand_as", "broadcast_to"),
)
_DROPOUTS = _functions("dropout", "dropout1d", "dropout2d", "dropout3d", "alpha_dropout")
_AFFINE = _functions(
    *("add", "sub", "subtract", "mul", "multiply", "div", "divide", "true_divide", "__add__"),
    *("__radd__", "__sub__", "__rsub__", "__mul__", "__rmul__", "__truediv__"),
)
KNOWN = (
    "2-D convolution and linear layers (the composite's rules), ReLU (passes relevance on), "
    "max-pooling (to the winner), average pooling (in proportion), dropout in eval mode, "
    "reshaping and indexing, and shifting or scaling the input by constants"
)


class LayerRules:
    """The ``layers`` handler of ``rules.use_rule("relevance", ...)`` for one forward pass: each
    convolution or linear layer gets the composite's rule; operations without a rule raise.
    ``used`` lists ``(layer, rule)`` in forward order."""

    def __init__(self, composite, inputs, model=None, epsilon=1e-6, gamma=0.25, low=0.0, high=1.0):
        self.composite, self.model = composite, model
        self.options = dict(epsilon=float(epsilon), gamma=float(gamma))
        self.bounds = (torch.as_tensor(low).to(inputs), torch.as_tensor(high).to(inputs))
        self.used: list[tuple[str, str]] = []
        self.convs = 0
        self.dependent: dict[int, torch.Tensor] = {}
        self.passed(inputs, inputs)

    def passed(self, _x, result) -> None:
        """Mark ``result`` as depending on the input (its relevance must be propagated)."""
        for tensor in _tensors(result):
            address = _memory(tensor)
            if address is not None:
                self.dependent[address] = tensor

    def _depends(self, value) -> int:
        return sum(t.requires_grad and _memory(t) in self.dependent for t in _tensors(value))

    def __call__(self, func, args, kwargs):
        if func in _QUERIES or _is_property(func) or not self._depends((args, kwargs)):
            return func(*args, **kwargs)
        if func in _CONV or func in _DENSE:
            result = self._layer(func, args, kwargs)
        elif func in _AVERAGES:
            x = args[0]
            result = _Proportional.apply(x, func, tuple(args[1:]), kwargs)
        elif func in _WINNERS or func in _ROUTES or self._eval_dropout(func, args, kwargs):
            result = func(*args, **kwargs)
        elif func in _AFFINE and self._depends((args, kwargs)) == 1:
            result = self._pass_on(func, args, kwargs)
        else:
            raise self._refusal(f"uses {_operation_name(func)}{self._where()}, which")
        self.passed(None, result)
        return result

    def _eval_dropout(self, func, args, kwargs) -> bool:
        return func in _DROPOUTS and not _argument(args, kwargs, 2, "training", True)

    def _layer(self, func, args, kwargs):
        x = _argument(args, kwargs, 0, "input")
        weight = _argument(args, kwargs, 1, "weight")
        bias = _argument(args, kwargs, 2, "bias")
        if self._depends((weight, bias)) or not self._depends(x):
            raise self._refusal(
                f"computes the weights of {_operation_name(func)}{self._where()} from the "
                "input, which"
            )
        kind = "dense" if func in _DENSE else "conv"
        conv = {}
        if kind == "conv":
            names = ("stride", "padding", "dilation", "groups")
            conv = {
                n: _argument(args, kwargs, k, n, d)
                for k, n, d in zip(range(3, 7), names, (1, 0, 1, 1))
            }
        # Zennit's first layer: the first of any kind for flat, the first convolution for z^B
        first = self.convs == 0 if self.composite == "epsilon-gamma-box" else not self.used
        rule = rule_for(self.composite, kind, first)
        self.convs += kind == "conv"
        running = self._running()
        self.used.append((running[0] if running else _operation_name(func), rule))
        b = None if bias is None else bias.detach()
        layer = Layer(kind, weight.detach(), b, x.shape, conv)
        options = dict(self.options)
        if rule == "box":
            low, high = (bound.expand_as(x) if bound.ndim else bound for bound in self.bounds)
            options.update(low=low, high=high)
        return _RuleLayer.apply(x, layer, rule, options)

    def _pass_on(self, func, args, kwargs):
        (x,) = [t for t in _tensors((args, kwargs)) if self._depends(t)]

        def compute(value):
            swap = [value if a is x else a for a in args]
            return func(*swap, **kwargs)

        if func in _functions("div", "divide", "true_divide", "__truediv__") and args[0] is not x:
            raise self._refusal(f"divides by the input with {_operation_name(func)}, which")
        result = _PassOn.apply(x, compute)
        if result.shape != x.shape:
            raise self._refusal(f"broadcasts the input with {_operation_name(func)}, which")
        if not self.used:  # before the first layer: the input's bounds move along (for z^B)
            low, high = (compute(bound.expand_as(x)) for bound in self.bounds)
            self.bounds = (torch.minimum(low, high), torch.maximum(low, high))
        return result

    def _refusal(self, what: str) -> NotImplementedError:
        return NotImplementedError(
            f"lrp: the model {what} has no LRP rule here. This course's LRP knows {KNOWN}. "
            "Fold a batch norm into the convolution before it, or explain the model with "
            "input_x_gradient or integrated_gradients, which need only gradients."
        )

    def _where(self) -> str:
        """`` in layer 'name' (Type)`` for the innermost layer of the model now running."""
        running = self._running()
        if running is None:
            return ""
        name, kind = running
        return f" in layer {name!r} ({kind})" if name else f" in the forward of {kind}"

    def _running(self) -> tuple[str, str] | None:
        """The name and type of the innermost layer of ``model`` now running, if any."""
        if self.model is None:
            return None
        names = {id(module): name for name, module in self.model.named_modules()}
        frame = inspect.currentframe()
        try:
            while frame is not None:
                owner = frame.f_locals.get("self")
                if isinstance(owner, nn.Module) and id(owner) in names:
                    return names[id(owner)], type(owner).__name__
                frame = frame.f_back
            return None
        finally:
            del frame


@contextmanager
def use_composite(
    composite: str,
    inputs: torch.Tensor,
    model: nn.Module | None = None,
    epsilon: float = 1e-6,
    gamma: float = 0.25,
    low=0.0,
    high=1.0,
) -> Iterator[LayerRules]:
    """Inside, a forward pass on ``inputs`` (which must require grad) records LRP by
    ``composite``: the gradient of a score w.r.t. ``inputs``, with the score itself as the
    output's gradient, is the relevance of the inputs. ``model`` only names layers in errors.

    >>> x = images.clone().requires_grad_(True)
    >>> with use_composite("epsilon-plus-flat", x) as rules:
    ...     score = model(x)[:, c]
    >>> (relevance,) = torch.autograd.grad(score, x, score.detach())
    >>> rules.used  # [('conv1', 'flat'), ('conv2', 'plus'), ...]
    """
    check_options(composite, epsilon, gamma)
    handler = LayerRules(composite, inputs, model, epsilon, gamma, low, high)
    try:
        with use_rule(RELEVANCE, handler):
            yield handler
    finally:
        handler.dependent.clear()
