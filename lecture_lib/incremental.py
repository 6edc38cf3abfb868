r"""Incremental occlusion: recompute only what an occlusion window changes (Krypton).

An occlusion window hides a small square of the image, so most of each layer's input is the
same as for the unoccluded image. Nakandala, Kumar & Papakonstantinou (Krypton, SIGMOD 2019)
recompute each layer only where the window's *region of influence* reaches and copy the rest
from the unoccluded image's activations. The arithmetic is the receptive field's, backwards:
through a convolution or max-pooling of kernel :math:`k`, stride :math:`s`, padding :math:`p`
and dilation :math:`d`, a changed band of input rows :math:`[r_0, r_1)` changes the output rows

.. math:: o_0 = \left\lceil \frac{r_0 + p - d(k-1)}{s} \right\rceil, \qquad
          o_1 = \left\lfloor \frac{r_1 - 1 + p}{s} \right\rfloor

(clipped to the map), and computing them needs the input rows
:math:`[o_0 s - p,\ o_1 s - p + d(k-1)]`: a *tile* of the unoccluded input with the changed box
pasted in. The same holds for the columns. A ReLU (or another elementwise layer) changes exactly
the box it was given. Every window of a layer gets a box of the same size (placed inside the
map at the borders), so all windows go through each layer as one batch of tiles.

A layer whose output depends on its whole input (flatten and linear layers, adaptive pooling
that resizes, any layer not listed below), or whose changed box would cover its whole output
map, is where the *full* recomputation starts: the occluded input of that layer is assembled
from the unoccluded map and the changed box, and the rest of the network runs as usual.
The result is the same as running every occluded image through the whole network, up to
rounding (tests/test_incremental.py compares them).

``plan(model, image_shape, window, stride)`` does the arithmetic for every window and says,
layer by layer, how large the changed region is and where and why the full recomputation
starts; ``print(plan(...))`` shows it as a table. ``occluded_scores`` computes the target's
score of every occluded image of one image.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from . import threads
from .models import Normalize

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
    Normalize,
)
"""Layers that act on each value (or each channel) alone: they change exactly the box given."""

WORTH_IT = 3.0
"""Recomputing the regions costs about one whole forward pass per image more than their
multiply-adds (the unoccluded image's pass, gathering the tiles): ``perturbation.occlusion``
recomputes incrementally when that saves more than this many whole passes per image, and
otherwise runs the whole network (measured on ShapesNet: 32 x 32 windows 16 apart, 9 per
image, were no faster; 48 x 48 windows, 4 per image, were slower)."""


# --- the model as a chain of layers -----------------------------------------------------------


def layer_chain(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The layers that ``model``'s forward runs one after the other, with their names.

    An ``nn.Sequential`` (that keeps Sequential's forward) is the chain of its children;
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
            for name, child in module.named_children()
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
    ``image_shape``, with windows where ``perturbation.window_positions`` places them.

    ``window`` and ``stride`` are taken as valid (``perturbation.occlusion`` checks them), and
    the model as in eval mode (``targets.explaining``). A ``Neuron`` target or a model with
    forward hooks gets the full recomputation (``full_from`` 0), with the reason.
    """
    from .perturbation import window_positions
    from .targets import Neuron

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


def _is_pointwise(module: nn.Module, size: tuple[int, int]) -> bool:
    """Layers that map each position (and channel) on its own: ``POINTWISE`` (Dropout only in
    eval mode), an eval-mode batch norm with running statistics, an adaptive pooling to the
    size it is given."""
    if isinstance(module, nn.Dropout | nn.Dropout2d):
        return not module.training
    if isinstance(module, POINTWISE):
        return True
    if isinstance(module, nn.BatchNorm2d):
        return not module.training and module.running_mean is not None
    if isinstance(module, nn.AdaptiveAvgPool2d | nn.AdaptiveMaxPool2d):
        out = _pair(module.output_size)
        return all(o is None or o == s for o, s in zip(out, size))
    return False


def _window_params(module: nn.Module):
    """``(kernel, stride, padding, dilation)`` of a convolution or max-pooling that can be
    recomputed on tiles, or (a string) why it cannot."""
    if isinstance(module, nn.Conv2d):
        if module.padding_mode != "zeros":
            return f"pads with {module.padding_mode!r}, not zeros"
        padding = (0, 0) if module.padding == "valid" else module.padding
        if isinstance(padding, str):
            return f"has padding={padding!r}"
        return (
            _pair(module.kernel_size),
            _pair(module.stride),
            _pair(padding),
            _pair(module.dilation),
        )
    if isinstance(module, nn.MaxPool2d):
        if module.ceil_mode or module.return_indices:
            return "a max-pooling with ceil_mode or return_indices"
        return (
            _pair(module.kernel_size),
            _pair(module.stride),
            _pair(module.padding),
            _pair(module.dilation),
        )
    if isinstance(module, nn.Flatten | nn.Linear):
        return "which mixes every position of its input"
    return "which is not a convolution, ReLU or max-pooling layer"


# --- the computation --------------------------------------------------------------------------


@threads.under_policy
def occluded_scores(
    plan: Plan,
    image: torch.Tensor,
    reference: torch.Tensor,
    target: int,
    batch_size: int = 256,
    bar=None,
) -> torch.Tensor:
    r"""The target's score :math:`f(x_{\setminus w})` of ``image`` ``[C, H, W]`` with window
    :math:`w` replaced by ``reference`` (an image of the same shape), for every window of
    ``plan``: ``[len(plan.rows) * len(plan.cols)]``, window ``(r, s)`` at ``r * len(plan.cols) + s``.

    ``batch_size`` windows go through the layers together; ``bar`` (a tqdm bar) advances by
    one per batch. The model (the one ``plan`` was made for) must be in eval mode; call this
    under ``torch.no_grad()``.
    """
    if not plan.possible:
        raise ValueError(f"occluded_scores: nothing can be computed incrementally {plan.reason}.")
    inputs = unoccluded_inputs(plan, image)
    reference = _channels_last(reference)
    windows = torch.arange(len(plan.rows) * len(plan.cols), device=image.device)
    scores = [
        _occluded_scores(plan, inputs, reference, target, chunk, bar)
        for chunk in windows.split(batch_size)
    ]
    return torch.cat(scores)


def _occluded_scores(plan, inputs, reference, target, windows, bar) -> torch.Tensor:
    """``occluded_scores`` for one batch of ``windows``."""
    row, col = windows // len(plan.cols), windows % len(plan.cols)
    indices = plan._indices.setdefault((int(windows[0]), len(windows)), {})
    # the occluded input inside each window: the reference's pixels
    window = tuple(Band(torch.tensor(p), plan.window) for p in (plan.rows, plan.cols))
    changed = _tiles(indices, "window", reference, None, None, window, row, col)
    x = _logits(plan, inputs, changed, row, col, indices)
    if bar is not None:
        bar.update()
    return x[:, target]


def replaced_logits(
    plan: Plan, inputs: list[torch.Tensor], patches: torch.Tensor, windows: torch.Tensor
) -> torch.Tensor:
    """The class scores ``[P, K]`` of the image whose layer inputs are ``inputs``
    (``unoccluded_inputs``) with window ``windows[p]`` (numbered as in ``occluded_scores``)
    replaced by ``patches[p]`` ``[C, window, window]``: prediction difference analysis draws
    different values for every window. Call under ``torch.no_grad()``, model in eval mode."""
    windows = windows.cpu()
    row, col = windows // len(plan.cols), windows % len(plan.cols)
    indices = plan._indices.setdefault(("replaced", *windows.tolist()), {})
    return _logits(plan, inputs, patches, row, col, indices)


def _tiles(indices, key, source, changed, boxes, tiles, row, col):
    """The tiles a layer reads, with the gather's index computed once per plan."""
    if key not in indices:
        box = None if changed is None else changed.shape[-2:]
        index = _tile_index(source.shape, box, boxes, tiles, row.cpu(), col.cpu())
        indices[key] = index.to(source.device)
    return _gather(source, changed, indices[key])


def _logits(plan, inputs, changed, row, col, indices) -> torch.Tensor:
    """The model's output for the windows at ``row``, ``col`` whose input is ``changed``."""
    for index, (step, source) in enumerate(zip(plan.steps[: plan.full_from], inputs)):
        if step.kind == "pointwise":
            changed = step.module(changed)
        else:
            tiles = _tiles(indices, index, source, changed, step.boxes, step.tiles, row, col)
            changed = _window(step, tiles)
    # the occluded input of the first full layer: the unoccluded map with the changed box in it
    source = inputs[-1]
    whole = tuple(
        Band(torch.zeros(len(p), dtype=torch.long), n)
        for p, n in zip((plan.rows, plan.cols), source.shape)
    )
    x = _tiles(indices, "full", source, changed, plan.boxes, whole, row, col)
    for step in plan.steps[plan.full_from :]:
        x = step.module(x)
    if x.ndim != 2:
        raise ValueError(
            f"occlusion: the model must return class scores of shape [N, K], got {tuple(x.shape)}."
        )
    return x


def _channels_last(x: torch.Tensor) -> torch.Tensor:
    """``[C, H, W]`` as a contiguous ``[H, W, C]``: each position's channels side by side."""
    return x.permute(1, 2, 0).contiguous()


def unoccluded_inputs(plan: Plan, image: torch.Tensor) -> list[torch.Tensor]:
    """The input of every layer up to the first full one, for the unoccluded ``image``, as
    ``[H, W, C]`` maps; a window layer's input padded as the layer pads it."""
    inputs = []
    x = image[None].clone()  # an in-place first layer must not change the image
    for index, step in enumerate(plan.steps[: plan.full_from + 1]):
        if step.kind == "window":
            (ph, pw), value = step.padding, step.pad_value
            inputs.append(_channels_last(F.pad(x, (pw, pw, ph, ph), value=value)[0]))
        elif step.kind == "full":
            inputs.append(_channels_last(x[0]))
        else:
            inputs.append(None)
        if index < plan.full_from:
            x = step.module(x)
    if plan.full_from == len(plan.steps):
        inputs.append(_channels_last(x[0]))
    return inputs


def _tile_index(
    source: torch.Size,
    box: torch.Size | None,
    boxes: tuple[Band, Band] | None,
    tiles: tuple[Band, Band],
    row: torch.Tensor,
    col: torch.Tensor,
) -> torch.Tensor:
    """Where each value of each tile comes from ``[P, T, U]``, for ``_gather``.

    The occluded map is the unoccluded map (``source`` ``[H, W, C]``) with a changed box of
    ``box`` ``(h, w)`` at ``boxes``; the tile of window ``p`` starts at
    ``tiles[0].start[row[p]]``, ``tiles[1].start[col[p]]``. An index below ``H * W`` is a
    position of the unoccluded map, the others count through the changed boxes, window by
    window.
    """
    height, width, _ = source
    y = tiles[0].start[row, None] + torch.arange(tiles[0].size)  # [P, T]
    x = tiles[1].start[col, None] + torch.arange(tiles[1].size)  # [P, U]
    index = y[:, :, None] * width + x[:, None, :]
    if box is not None:
        h, w = box
        dy = y - boxes[0].start[row, None]  # the row inside the changed box
        dx = x - boxes[1].start[col, None]
        inside = ((dy >= 0) & (dy < h))[:, :, None] & ((dx >= 0) & (dx < w))[:, None, :]
        boxed = height * width + (torch.arange(len(row)) * h * w)[:, None, None]
        index = torch.where(inside, boxed + dy[:, :, None] * w + dx[:, None, :], index)
    return index


def _gather(source: torch.Tensor, changed: torch.Tensor | None, index: torch.Tensor):
    """The tiles ``[P, C, T, U]`` (a channels-last view, which convolutions take as it is) of
    the unoccluded map ``source`` ``[H, W, C]`` with the changed boxes ``[P, C, h, w]`` in it."""
    channels = source.shape[-1]
    flat = source.reshape(-1, channels)
    if changed is not None:
        flat = torch.cat([flat, changed.permute(0, 2, 3, 1).reshape(-1, channels)])
    gathered = flat.index_select(0, index.reshape(-1))
    return gathered.view(*index.shape, channels).permute(0, 3, 1, 2)


def _window(step: Step, tiles: torch.Tensor) -> torch.Tensor:
    """A convolution or max-pooling on tiles that already hold its padding."""
    m = step.module
    if isinstance(m, nn.Conv2d):
        return F.conv2d(tiles, m.weight, m.bias, m.stride, 0, m.dilation, m.groups)
    return F.max_pool2d(tiles, m.kernel_size, m.stride, 0, m.dilation)
