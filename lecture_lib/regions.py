r"""Where an occlusion window reaches: the region arithmetic of incremental occlusion.

An occlusion window hides a small square of the image, so most of each layer's input is the
same as for the unoccluded image (Krypton, Nakandala et al. 2019; ``incremental`` computes with
what is planned here). Through a convolution or max-pooling of kernel :math:`k`, stride
:math:`s`, padding :math:`p` and dilation :math:`d`, a changed band of input rows
:math:`[r_0, r_1)` changes the output rows

.. math:: o_0 = \left\lceil \frac{r_0 + p - d(k-1)}{s} \right\rceil, \qquad
          o_1 = \left\lfloor \frac{r_1 - 1 + p}{s} \right\rfloor

(clipped to the map), and computing them needs the input rows
:math:`[o_0 s - p,\ o_1 s - p + d(k-1)]`: a *tile* of the unoccluded input with the changed box
pasted in. The same holds for the columns. A pointwise layer (ReLU, an eval-mode batch norm)
changes exactly the box it was given.

The plan follows the layers as the model's forward runs them: the chain of an
``nn.Sequential`` (every entry, a module listed twice runs twice) or of torchvision's VGG and
AlexNet, checked against the order in which the forward actually calls them. A layer is
recomputed on its region only when its computation is known exactly: its class's ``forward``
is torch's own ``Conv2d``, ``MaxPool2d``, batch norm or one of ``POINTWISE``, or the class
that defines its ``forward`` says ``pointwise = True`` (``models.Normalize``). From any other
layer on, the whole occluded input runs through the rest of the network, and the plan says why.

``window_positions`` places the windows; ``plan`` does the arithmetic for every window.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field

import torch
from torch import nn

from . import threads
from .targets import Neuron, model_device, model_dtype

POINTWISE = (
    nn.ReLU,
    nn.LeakyReLU,
    nn.ReLU6,
    nn.ELU,
    nn.Sigmoid,
    nn.Tanh,
    nn.Identity,
    nn.Dropout,
    nn.Dropout2d,
)
"""torch's layers that act on each value alone: they change exactly the box given. Another
layer class says so itself with a class attribute ``pointwise = True`` beside its ``forward``."""

WORTH_IT = 3.0
"""Recomputing the regions costs about one whole forward pass per image more than their
multiply-adds (the unoccluded image's pass, gathering the tiles): ``perturbation.occlusion``
recomputes incrementally when that saves more than this many whole passes per image, and
otherwise runs the whole network (measured on ShapesNet: 32 x 32 windows 16 apart, 9 per
image, were no faster; 48 x 48 windows, 4 per image, were slower)."""


def window_positions(side: int, window: int, stride: int) -> list[int]:
    """Where a window starts along one axis: ``0, stride, 2 stride, ...`` and always
    ``side - window``, so that the last pixels are covered too.

    >>> window_positions(64, 8, 4)[-3:]
    [48, 52, 56]
    >>> window_positions(64, 10, 7)
    [0, 7, 14, 21, 28, 35, 42, 49, 54]
    """
    positions = list(range(0, side - window + 1, stride))
    if positions[-1] != side - window:
        positions.append(side - window)
    return positions


# --- the model as a chain of layers -----------------------------------------------------------


def check_positive_int(value, name: str, method: str) -> int:
    """``value`` if it is a positive int; otherwise an error that names ``name``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{method}: {name} must be a positive int, got {name}={value!r}.")
    return value


def check_windows(batch: torch.Tensor, inputs, window, stride, method: str) -> tuple[int, ...]:
    """``batch.shape`` after checking that it holds images and that window and stride fit (every
    pixel under at least one window)."""
    if batch.ndim != 4:
        raise ValueError(
            f"{method}: expects images [N, C, H, W] or one image [C, H, W], "
            f"got inputs of shape {tuple(inputs.shape)}."
        )
    _, _, height, width = batch.shape
    check_positive_int(window, "window", method)
    check_positive_int(stride, "stride", method)
    if window > min(height, width):
        raise ValueError(
            f"{method}: window={window} is larger than the image ({height} x {width} pixels); "
            f"choose a window of at most {min(height, width)}."
        )
    if stride > window:
        raise ValueError(
            f"{method}: stride={stride} is larger than window={window}, so some pixels would "
            "lie under no window; choose stride <= window."
        )
    return tuple(batch.shape)


def layer_chain(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The layers that ``model``'s forward runs one after the other, with their names.

    An ``nn.Sequential`` (that keeps Sequential's forward) is the chain of its entries, each
    as often as it is listed (Sequential's forward runs a module listed twice twice);
    torchvision's VGG and AlexNet are ``features``, ``avgpool``, a flatten and ``classifier``.
    Any other module is one layer of its own (computed in full, whatever is inside).

    >>> from lecture_lib.models import ShapesNet
    >>> [name for name, _ in layer_chain(ShapesNet())][:4]
    ['conv1', 'relu1', 'pool1', 'conv2']
    """
    return _chain(model, "")


def _chain(module: nn.Module, prefix: str) -> list[tuple[str, nn.Module]]:
    if isinstance(module, nn.Sequential) and type(module).forward is nn.Sequential.forward:
        return [
            layer
            for name, child in module._modules.items()  # named_children() lists a module once
            if child is not None
            for layer in _chain(child, f"{prefix}{name}.")
        ]
    if _is_torchvision_features_net(module):
        return [
            *_chain(module.features, f"{prefix}features."),
            *_chain(module.avgpool, f"{prefix}avgpool."),
            (f"{prefix}flatten", nn.Flatten()),
            *_chain(module.classifier, f"{prefix}classifier."),
        ]
    return [(prefix.rstrip(".") or type(module).__name__, module)]


def _is_torchvision_features_net(module: nn.Module) -> bool:
    """torchvision's VGG or AlexNet, whose forward is features -> avgpool -> flatten -> classifier."""
    models = sys.modules.get("torchvision.models")
    if models is None:
        return False
    return any(
        type(module) is net and type(module).forward is net.forward
        for net in (models.VGG, models.AlexNet)
    )


def _runs_as_chained(model: nn.Module, chain, image_shape) -> bool:
    """Whether ``model``'s forward on a blank image calls the chain's layers exactly in the
    chain's order, each call once (a layer also used inside another one would not be)."""
    owned = {
        id(module) for module in model.modules()
    }  # not the flatten that VGG calls as torch.flatten
    layers = {id(module): module for _, module in chain if id(module) in owned}
    calls: list[int] = []
    handles = [
        module.register_forward_pre_hook(lambda m, _inputs: calls.append(id(m)))
        for module in layers.values()
    ]
    blank = torch.zeros(1, *image_shape, device=model_device(model))
    try:
        with torch.no_grad():
            model(blank.to(model_dtype(model, blank.dtype)))
    finally:
        for handle in handles:
            handle.remove()
    return calls == [id(module) for _, module in chain if id(module) in owned]


def _has_forward_hooks(model: nn.Module) -> bool:
    from torch.nn.modules import module as module_globals

    if module_globals._global_forward_hooks or module_globals._global_forward_pre_hooks:
        return True
    return any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())


# --- the plan: the region arithmetic, once for all windows ------------------------------------


@dataclass
class Band:
    """Along one axis (rows or columns), for every window position, where a band of a map
    starts; ``size`` is the band's common width."""

    start: torch.Tensor  # [positions]
    size: int


@dataclass
class Step:
    """One layer of the plan.

    Attributes:
        name: the layer's name in the model (``"conv3"``, ``"features.8"``).
        kind: ``"window"`` (a convolution or max-pooling, recomputed on tiles), ``"pointwise"``
            (recomputed on the changed region only) or ``"full"`` (the whole occluded input).
        map: the layer's output map ``(height, width)``, ``None`` for a full layer.
        region: the part of the output map that a window changes ``(height, width)``, the same
            for every window (placed inside the map at the borders); ``None`` for a full layer.
    """

    name: str
    kind: str
    map: tuple[int, int] | None
    region: tuple[int, int] | None
    module: nn.Module = field(repr=False)
    boxes: tuple[Band, Band] | None = field(default=None, repr=False)  # changed input, padded
    tiles: tuple[Band, Band] | None = field(default=None, repr=False)  # input read, padded
    padding: tuple[int, int] = field(default=(0, 0), repr=False)
    pad_value: float = field(default=0.0, repr=False)


@dataclass
class Plan:
    """How ``occluded_scores`` computes the occluded images, layer by layer.

    Attributes:
        steps: one ``Step`` per layer of ``layer_chain(model)``.
        full_from: the index of the first layer computed in full (``len(steps)`` if none).
        reason: why the full recomputation starts there (``None`` if it does not); when
            ``full_from`` is 0 the whole network runs for each window, and ``reason`` says why.
        window, stride: the occlusion's window side and stride.
        rows, cols: the windows' first rows and first columns.
        boxes: the changed box of the input of layer ``full_from``, per window.
        share: the multiply-adds of the convolutions recomputed on their regions, as a share
            of theirs in a whole forward pass (``None`` without such convolutions).
    """

    steps: list[Step]
    full_from: int
    reason: str | None
    window: int
    stride: int
    rows: list[int]
    cols: list[int]
    boxes: tuple[Band, Band] | None = field(default=None, repr=False)
    share: float | None = None
    _indices: dict = field(default_factory=dict, repr=False)  # gather indices, per batch

    @property
    def possible(self) -> bool:
        """Whether some layers can be recomputed only where a window reaches."""
        return self.full_from > 0

    @property
    def incremental(self) -> bool:
        """Whether ``perturbation.occlusion`` recomputes incrementally: when it can and when
        that saves more than ``WORTH_IT`` whole forward passes per image."""
        return self.fallback is None

    @property
    def fallback(self) -> str | None:
        """Why every occluded image runs through the whole network (``None`` if not)."""
        if not self.possible:
            return self.reason
        windows = len(self.rows) * len(self.cols)
        if self.share is not None and windows * (1 - self.share) <= WORTH_IT:
            return (
                f"because {self.window}x{self.window} windows leave too little to save: their "
                f"regions take {self.share:.0%} of the multiply-adds of whole passes, for "
                f"{windows} windows per image"
            )
        return None

    def __str__(self) -> str:
        lines = [
            f"occlusion {self.window}x{self.window}, stride {self.stride}: "
            f"{len(self.rows) * len(self.cols)} windows per image",
            f"{'layer':16s} {'computed':>9s} {'map':>9s} {'region':>9s} {'share':>6s}",
        ]
        for step in self.steps:
            size = region = share = ""
            if step.map is not None and step.region is not None:
                size = f"{step.map[0]}x{step.map[1]}"
                region = f"{step.region[0]}x{step.region[1]}"
                share = f"{step.region[0] * step.region[1] / (step.map[0] * step.map[1]):.0%}"
            lines.append(f"{step.name:16s} {step.kind:>9s} {size:>9s} {region:>9s} {share:>6s}")
        if self.reason:
            lines.append(f"full recomputation from layer {self.full_from}, {self.reason}")
        if self.share is not None:
            lines.append(f"the regions take {self.share:.0%} of the multiply-adds of whole passes")
        if self.possible and self.fallback:
            lines.append(f"whole passes instead, {self.fallback}")
        return "\n".join(lines)


@threads.under_policy
def plan(
    model: nn.Module, image_shape: tuple[int, ...], window: int, stride: int, target=None
) -> Plan:
    """The region arithmetic of incremental occlusion for images ``[C, H, W]`` of
    ``image_shape``, with windows where ``window_positions`` places them.

    ``window`` and ``stride`` are taken as valid (``perturbation.occlusion`` checks them), and
    the model as in eval mode (``targets.explaining``). A ``Neuron`` target, a model with
    forward hooks, or one whose forward does not call its layers as chained, gets the full
    recomputation (``full_from`` 0), with the reason.
    """
    height, width = image_shape[-2:]
    rows = window_positions(height, window, stride)
    cols = window_positions(width, window, stride)
    chain = layer_chain(model)

    def full_from(index: int, reason: str, boxes=None) -> Plan:
        steps.extend(Step(name, "full", None, None, module) for name, module in chain[index:])
        return Plan(steps, index, reason, window, stride, rows, cols, boxes)

    steps: list[Step] = []
    if isinstance(target, Neuron):
        return full_from(0, "because a Neuron target is measured inside the network")
    if _has_forward_hooks(model):
        return full_from(0, "because the model has forward hooks (they see whole images only)")
    if len(chain) > 1 and not _runs_as_chained(model, chain, image_shape):
        return full_from(
            0, "because its forward does not call its layers one after the other as listed"
        )
    boxes = (Band(torch.tensor(rows), window), Band(torch.tensor(cols), window))
    size = (height, width)
    for index, (name, module) in enumerate(chain):
        step = _step(name, module, size, boxes)
        if isinstance(step, str):
            route = full_from(index, f"{name}: {step}", boxes)
            route.share = _share(steps)
            return route
        steps.append(step)
        size = step.map
        if step.kind == "window":  # the changed region of the output is the next input's box
            boxes = tuple(
                Band(tile.start // _pair(module.stride)[dim], region)
                for dim, (tile, region) in enumerate(zip(step.tiles, step.region))
            )
    return Plan(steps, len(chain), None, window, stride, rows, cols, boxes, _share(steps))


def _share(steps: list[Step]) -> float | None:
    """The multiply-adds of the convolutions recomputed on their regions, as a share of a whole
    pass's (their output positions times the multiply-adds of one output position)."""
    convolutions = [s for s in steps if s.kind == "window" and isinstance(s.module, nn.Conv2d)]
    if not convolutions:
        return None

    def cost(step: Step, size: tuple[int, int]) -> float:
        m = step.module
        return (
            size[0] * size[1] * m.out_channels * m.in_channels // m.groups * m.weight[0, 0].numel()
        )

    whole = sum(cost(step, step.map) for step in convolutions)
    return sum(cost(step, step.region) for step in convolutions) / whole


def _pair(value) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else tuple(value)


def _step(name: str, module: nn.Module, size: tuple[int, int], boxes: tuple[Band, Band]):
    """The ``Step`` of one layer whose input map has ``size`` and whose changed input is
    ``boxes``, or (a string) why the full recomputation starts at this layer."""
    kind = type(module).__name__
    if _is_pointwise(module, size):
        region = (boxes[0].size, boxes[1].size)
        if isinstance(module, nn.AdaptiveAvgPool2d | nn.AdaptiveMaxPool2d):
            module = nn.Identity()  # it keeps the map as it is, but would resize a box
        return Step(name, "pointwise", size, region, module, boxes)
    params = _window_params(module)
    if isinstance(params, str):
        return f"{kind}, {params}"
    kernel, stride, padding, dilation = params
    maps, regions, padded_boxes, tiles = [], [], [], []
    for dim, box in enumerate(boxes):
        reach = dilation[dim] * (kernel[dim] - 1)  # the kernel spans reach + 1 input rows
        side = (size[dim] + 2 * padding[dim] - reach - 1) // stride[dim] + 1
        if side < 1:
            return f"{kind}, gets a map smaller than its kernel"
        first = -((reach - padding[dim] - box.start) // stride[dim])  # ceil((r0 + p - reach) / s)
        last = (box.start + box.size - 1 + padding[dim]) // stride[dim]
        first, last = first.clamp(min=0), last.clamp(max=side - 1)
        region = max(1, int((last - first + 1).max()))
        origin = torch.minimum(first, torch.tensor(side - region))  # the region inside the map
        maps.append(side)
        regions.append(region)
        padded_boxes.append(Band(box.start + padding[dim], box.size))
        tiles.append(Band(origin * stride[dim], (region - 1) * stride[dim] + reach + 1))
    if regions == maps:
        return (
            f"{kind}, because a window's region of influence is its whole output map "
            f"({maps[0]}x{maps[1]})"
        )
    pad_value = float("-inf") if isinstance(module, nn.MaxPool2d) else 0.0
    return Step(
        name, "window", tuple(maps), tuple(regions), module,
        tuple(padded_boxes), tuple(tiles), padding, pad_value,
    )  # fmt: skip


def _forward_class(module: nn.Module) -> type:
    """The class whose ``forward`` the module runs (a subclass with its own forward is not the
    layer it derives from)."""
    return next(c for c in type(module).__mro__ if "forward" in vars(c))


def _is_pointwise(module: nn.Module, size: tuple[int, int]) -> bool:
    """Layers that map each position (and channel) on its own: ``POINTWISE`` (Dropout only in
    eval mode), a class that says ``pointwise = True`` beside its forward, an eval-mode batch
    norm with running statistics, an adaptive pooling to the size it is given."""
    runs = _forward_class(module)
    if runs in (nn.Dropout, nn.Dropout2d):
        return not module.training
    if runs in POINTWISE or vars(runs).get("pointwise") is True:
        return True
    if runs is nn.modules.batchnorm._BatchNorm and isinstance(module, nn.BatchNorm2d):
        return not module.training and module.running_mean is not None
    if runs in (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d):
        out = _pair(module.output_size)
        return all(o is None or o == s for o, s in zip(out, size))
    return False


def _window_params(module: nn.Module):
    """``(kernel, stride, padding, dilation)`` of a convolution or max-pooling that can be
    recomputed on tiles, or (a string) why it cannot."""
    runs = _forward_class(module)
    if runs is nn.Conv2d and type(module)._conv_forward is nn.Conv2d._conv_forward:
        if module.padding_mode != "zeros":
            return f"pads with {module.padding_mode!r}, not zeros"
        padding = _conv_padding(module)
        if isinstance(padding, str):
            return padding
        return (
            _pair(module.kernel_size),
            _pair(module.stride),
            padding,
            _pair(module.dilation),
        )
    if runs is nn.MaxPool2d:
        if module.ceil_mode or module.return_indices:
            return "a max-pooling with ceil_mode or return_indices"
        return (
            _pair(module.kernel_size),
            _pair(module.stride),
            _pair(module.padding),
            _pair(module.dilation),
        )
    if runs in (nn.Flatten, nn.Linear):
        return "which mixes every position of its input"
    if isinstance(module, (nn.Conv2d, nn.MaxPool2d, nn.BatchNorm2d, *POINTWISE)):
        return "whose class computes in its own way (it overrides forward), so it runs as it says"
    return "which is not a convolution, ReLU or max-pooling layer"


def _conv_padding(conv: nn.Conv2d):
    """A convolution's padding ``(rows, columns)`` on each side, or (a string) why it is not
    the same on both sides (``padding="same"`` with an odd reach pads one side more)."""
    if conv.padding == "valid":
        return (0, 0)
    if conv.padding == "same":
        reach = [d * (k - 1) for d, k in zip(_pair(conv.dilation), _pair(conv.kernel_size))]
        if any(r % 2 for r in reach):
            return "has padding='same' with an even kernel (it pads one side more)"
        return (reach[0] // 2, reach[1] // 2)
    return _pair(conv.padding)
