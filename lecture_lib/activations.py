r"""Activation visualization (lecture, Part 1): how the layers are activated for a given image.

"Take the intermediate layers and build a new multi-output model": ``feature_maps`` runs the
model once and returns the output of each chosen layer, the maps

.. math:: X_{n+1} = \max(X_n * K_n, 0)

that a ConvNet computes on its way to the class scores. Lower layers respond to elementary
patterns (edges, colours, textures), higher layers to larger parts of the object.
``filters`` shows the kernels :math:`K_n` of a convolution themselves, as small images.

The lecture's drawbacks apply: the maps explain one image at a time, and there are many of
them ("too many filters to inspect"); ``top_channels`` picks the most active ones.
``top_patches`` looks past one image: the crops of a whole data set where one channel
responds most, with their DeconvNet projections (Zeiler & Fergus 2014).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn
from tqdm.auto import tqdm

from . import answer_calls, threads
from .attribution import deconvnet, spatial_layers
from .targets import Neuron, explaining, finish, get_layer, prepare


def relu_layers(model: nn.Module) -> list[str]:
    """The names of the model's ``nn.ReLU`` layers (registration order): its activations."""
    return [name for name, module in model.named_modules() if isinstance(module, nn.ReLU)]


@threads.under_policy
@answer_calls.recorded
def feature_maps(
    model: nn.Module, inputs: torch.Tensor, layers: str | list[str] | None = None
) -> dict[str, torch.Tensor]:
    """The outputs of the named layers for ``inputs``, from one forward pass.

    Args:
        model: the network, left as it came (every hook is removed, also on errors).
        inputs: images ``[N, C, H, W]`` or one image ``[C, H, W]`` (never modified).
        layers: a layer name (``"relu2"``), a list of names, or ``None`` for every ``nn.ReLU``
            layer (the activations). Names are those of ``model.named_modules()``, e.g.
            ``"conv3"`` for ShapesNet or ``"features.8"`` for a torchvision VGG.

    Returns:
        ``{name: map}``, the maps ``[N, channels, h, w]`` (without the batch axis for one image),
        detached copies on the inputs' device. With ``layers=None`` the order is the order in
        which the forward pass ran the layers; otherwise the order of ``layers``. A layer that
        runs more than once in a forward pass (a shared ReLU) gives its last output.
    """
    method = "feature_maps"
    if layers is None:
        names = relu_layers(model)
        if not names:
            raise ValueError(
                f"{method}: the model has no nn.ReLU layer, so layers=None finds nothing to "
                "show; name the layers instead, e.g. layers=['conv1']. Valid layers: "
                + ", ".join(name for name, _ in model.named_modules() if name)
                + "."
            )
    elif isinstance(layers, str):
        names = [layers]
    elif isinstance(layers, (list, tuple)) and layers:
        names = list(dict.fromkeys(layers))
    else:
        raise TypeError(
            f"{method}: layers must be None, a layer name or a non-empty list of names, "
            f"got {layers!r}."
        )
    modules = {name: get_layer(model, name, method) for name in names}
    batch, single = prepare(model, inputs, method)

    captured: dict[str, torch.Tensor] = {}

    def keep(name: str):
        def hook(_module, _inputs, output):
            # a copy: an in-place ReLU that follows would otherwise overwrite this output
            captured.pop(name, None)
            captured[name] = output.detach().clone()

        return hook

    handles = []
    try:
        for name, module in modules.items():
            handles.append(module.register_forward_hook(keep(name)))
        with explaining(model), torch.no_grad():
            model(batch)
    finally:
        for handle in handles:
            handle.remove()

    missing = [name for name in names if name not in captured]
    if missing:
        raise ValueError(
            f"{method}: the layer(s) {', '.join(map(repr, missing))} did not run in the "
            "forward pass, so they have no output to show."
        )
    order = names if layers is not None else list(captured)
    return {name: finish(captured[name], inputs, single) for name in order}


@threads.under_policy
def filters(model: nn.Module, layer: str = "conv1") -> torch.Tensor:
    r"""The kernels :math:`K` of a convolution ``[out, in, k, k]``, each scaled to [0, 1] for display.

    Every filter is scaled on its own (per-filter min-max over its ``in x k x k`` weights),
    :math:`(K - \min K) / (\max K - \min K)`, so 0.5 is not necessarily a zero weight; a
    constant filter becomes 0.5 everywhere. A first layer with 3 input channels shows as
    ``out`` small RGB images (``data.to_hwc(filters(model)[i])``).
    """
    module = get_layer(model, layer, "filters")
    if not isinstance(module, nn.Conv2d):
        raise ValueError(
            f"filters: layer {layer!r} is a {type(module).__name__}, not a Conv2d; give the name "
            "of a convolution layer, e.g. 'conv1' for ShapesNet."
        )
    kernels = module.weight.detach().clone()
    low = kernels.amin(dim=(1, 2, 3), keepdim=True)
    high = kernels.amax(dim=(1, 2, 3), keepdim=True)
    spread = high - low
    scaled = (kernels - low) / torch.where(spread > 0, spread, 1.0)
    return torch.where(spread > 0, scaled, torch.full_like(kernels, 0.5))


@threads.under_policy
def top_channels(feature_map: torch.Tensor, k: int = 8) -> torch.Tensor:
    """The indices of the ``k`` channels with the strongest mean activation, strongest first.

    ``feature_map`` is one map ``[channels, h, w]`` or a batch ``[N, channels, h, w]`` (then
    the mean runs over the images as well).
    """
    if not isinstance(feature_map, torch.Tensor) or feature_map.ndim not in (3, 4):
        shape = tuple(feature_map.shape) if isinstance(feature_map, torch.Tensor) else None
        raise ValueError(
            f"top_channels: expects a feature map [channels, h, w] or [N, channels, h, w], "
            f"got {shape if shape is not None else type(feature_map).__name__}."
        )
    maps = feature_map if feature_map.ndim == 4 else feature_map.unsqueeze(0)
    channels = maps.shape[1]
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= channels:
        raise ValueError(
            f"top_channels: k must be an int in 1..{channels} (the map has {channels} channels), "
            f"got k={k!r}."
        )
    strength = maps.float().mean(dim=(0, 2, 3))
    return strength.argsort(descending=True, stable=True)[:k]


# --- beyond one image: the strongest activations over a data set -----------------------------


@dataclass(frozen=True)
class ReceptiveField:
    """The input pixels that one unit of a layer sees, for rows and for columns.

    The unit at position o of the layer's map sees the input indices
    ``start + o * jump`` up to ``start + o * jump + size - 1`` (inclusive); indices below 0 or
    past the image are the convolutions' zero padding.
    """

    size: tuple[int, int]
    jump: tuple[int, int]
    start: tuple[int, int]

    def box(self, row: int, col: int) -> tuple[int, int, int, int]:
        """``(top, left, bottom, right)`` of the unit at ``(row, col)``, bottom and right
        exclusive, in input pixels (possibly outside the image)."""
        top = self.start[0] + row * self.jump[0]
        left = self.start[1] + col * self.jump[1]
        return top, left, top + self.size[0], left + self.size[1]


SPATIAL = (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)
"""The layers whose window the receptive field grows by."""


def _pair(value) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else (int(value[0]), int(value[1]))


def _window(module: nn.Module) -> tuple[tuple[int, int], ...]:
    """``(kernel, stride, padding, dilation)`` of a conv or pooling layer, each per axis."""
    kernel = _pair(module.kernel_size)
    stride = _pair(module.stride if module.stride is not None else module.kernel_size)
    dilation = _pair(getattr(module, "dilation", 1))
    padding = module.padding
    if isinstance(padding, str):  # Conv2d's "valid" or "same"
        padding = tuple(
            0 if padding == "valid" else d * (k - 1) // 2 for k, d in zip(kernel, dilation)
        )
    return kernel, stride, _pair(padding), dilation


@threads.under_policy
def receptive_field(model: nn.Module, layer: str, inputs: torch.Tensor) -> ReceptiveField:
    r"""The receptive field of the units of ``layer``: which input pixels each unit sees.

    Runs the model once on one image of ``inputs`` and follows the layers called before the
    layer's output. Each convolution or pooling layer (kernel k, stride s, padding p,
    dilation d) grows it, per axis:

    .. math:: r_l = r_{l-1} + d_l (k_l - 1)\, j_{l-1}, \qquad j_l = s_l\, j_{l-1}, \qquad
              a_l = a_{l-1} - p_l\, j_{l-1}, \qquad r_0 = j_0 = 1,\ a_0 = 0

    (r: the side in pixels, j: the jump between neighbouring units, a: where unit 0 starts).
    Elementwise layers (ReLU, normalisation) leave it as it is. For a chain of layers only: a
    layer that changes the map's size otherwise, or maps that do not follow each other
    (branches), raise an error.
    """
    method = "receptive_field"
    get_layer(model, layer, method)
    batch, _ = prepare(model, inputs, method)
    calls: list[tuple[nn.Module, tuple, tuple]] = []
    ends: list[int] = []

    def record(module, args, output):
        if args and isinstance(args[0], torch.Tensor) and isinstance(output, torch.Tensor):
            calls.append((module, tuple(args[0].shape), tuple(output.shape)))

    leaves = [m for m in model.modules() if not any(True for _ in m.children())]
    handles = [m.register_forward_hook(record) for m in leaves]
    handles.append(
        get_layer(model, layer, method).register_forward_hook(lambda *_: ends.append(len(calls)))
    )
    try:
        with explaining(model), torch.no_grad():
            model(batch[:1])
    finally:
        for handle in handles:
            handle.remove()
    if not ends:
        raise ValueError(f"{method}: the layer {layer!r} did not run in the forward pass.")
    size, jump, start = [1, 1], [1, 1], [0, 0]
    current = tuple(batch.shape[-2:])
    for module, shape_in, shape_out in calls[: ends[-1]]:
        spatial_in, spatial_out = shape_in[-2:], shape_out[-2:]
        if isinstance(module, SPATIAL):
            if len(shape_in) != 4 or spatial_in != current:
                raise ValueError(
                    f"{method}: {type(module).__name__} gets maps of {spatial_in} where the layer "
                    f"before gave {current}; only a chain of layers (no branches) is supported."
                )
            kernel, stride, padding, dilation = _window(module)
            for axis in (0, 1):
                start[axis] -= padding[axis] * jump[axis]
                size[axis] += dilation[axis] * (kernel[axis] - 1) * jump[axis]
                jump[axis] *= stride[axis]
            current = spatial_out
        elif len(shape_in) == 4 and (len(shape_out) != 4 or spatial_out != spatial_in):
            raise ValueError(
                f"{method}: cannot follow the receptive field through {type(module).__name__}, "
                "which changes the maps' size; only convolution and pooling layers may."
            )
    return ReceptiveField(tuple(size), tuple(jump), tuple(start))


@dataclass(frozen=True)
class TopPatches:
    """The ``k`` strongest activations of one channel over a data set (``top_patches``).

    ``indices`` ``[k]``: which image; ``positions`` ``[k, 2]``: the unit's (row, column) in the
    layer's map; ``activations`` ``[k]``: its value, strongest first; ``boxes`` ``[k, 4]``: its
    receptive field ``(top, left, bottom, right)`` in the image (bottom, right exclusive);
    ``patches`` and ``projections`` ``[k, C, size, size]``: the image and the unit's DeconvNet
    projection inside that box (zero where the box leaves the image).
    """

    layer: str
    channel: int
    indices: torch.Tensor
    positions: torch.Tensor
    activations: torch.Tensor
    boxes: torch.Tensor
    patches: torch.Tensor
    projections: torch.Tensor
    field: ReceptiveField


@threads.under_policy
def top_patches(
    model: nn.Module,
    layer: str,
    channel: int | Sequence[int],
    images: torch.Tensor,
    k: int = 9,
    batch_size: int = 256,
    progress: bool | None = None,
) -> TopPatches | list[TopPatches]:
    """What does one channel respond to, over a whole data set? (Zeiler & Fergus 2014, fig. 2)

    For every image, the channel's strongest unit (its maximum over positions); the ``k``
    images where it is strongest, each with the crop of the image that the unit sees (its
    receptive field, ``receptive_field``) and the unit's DeconvNet projection into that crop
    (``attribution.deconvnet`` of ``Neuron(layer, channel)``: the single strongest activation
    projected down to the pixels, every other activation of the layer set to zero). One unit
    per image, so the k patches show k different images.

    Where one explains one image, this is a *global* view: the patches answer "what does this
    channel look for?" from the data, without optimisation. ``channel`` may be a list: then
    the data set runs through the model once and the result is one ``TopPatches`` per channel.
    """
    method = "top_patches"
    get_layer(model, layer, method)
    many = isinstance(channel, (list, tuple))
    wanted = list(channel) if many else [channel]
    for c in wanted:
        if isinstance(c, bool) or not isinstance(c, int):
            raise TypeError(f"{method}: channel must be an int or a list of ints, got {c!r}.")
    batch, single = prepare(model, images, method)
    if batch.ndim != 4 or single:
        raise ValueError(
            f"{method}: images must be a data set [N, C, H, W], got shape {tuple(images.shape)}."
        )
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= len(batch):
        raise ValueError(
            f"{method}: k must be an int in 1..{len(batch)} (one patch per image), got k={k!r}."
        )
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"{method}: batch_size must be an int >= 1, got {batch_size!r}.")
    chunks = batch.split(batch_size)
    show = progress if progress is not None else len(chunks) > 20
    strongest, where = [], []
    for chunk in tqdm(chunks, desc=method, disable=not show, leave=False):
        maps = feature_maps(model, chunk, layer)[layer]
        if maps.ndim != 4:
            valid = ", ".join(spatial_layers(model, chunk[:1]))
            raise ValueError(
                f"{method}: the layer {layer!r} gives outputs of shape {tuple(maps.shape)}, no "
                f"spatial maps to crop. Layers with spatial maps: {valid}."
            )
        bad = [c for c in wanted if not 0 <= c < maps.shape[1]]
        if bad:
            raise ValueError(
                f"{method}: layer {layer!r} has {maps.shape[1]} channels, so channel must lie in "
                f"0..{maps.shape[1] - 1}; got channel={bad[0]}."
            )
        values, flat = maps[:, wanted].flatten(2).max(dim=2)  # [n, channels]
        strongest.append(values)
        where.append(torch.stack([flat // maps.shape[-1], flat % maps.shape[-1]], dim=2))
    strongest, where = torch.cat(strongest), torch.cat(where)
    field = receptive_field(model, layer, batch[:1])
    results = [
        _patches(model, layer, c, batch, strongest[:, j], where[:, j], k, field)
        for j, c in enumerate(wanted)
    ]
    return results if many else results[0]


def _patches(model, layer, channel, batch, strongest, where, k, field) -> TopPatches:
    """One channel's ``TopPatches`` from each image's strongest value and its position."""
    order = strongest.argsort(descending=True, stable=True)[:k]
    chosen = batch[order]
    projections = deconvnet(model, chosen, target=Neuron(layer, channel))
    boxes = torch.tensor([field.box(int(r), int(c)) for r, c in where[order]])
    return TopPatches(
        layer,
        channel,
        order.cpu(),
        where[order].cpu(),
        strongest[order].cpu(),
        boxes,
        _crop(chosen, boxes).cpu(),
        _crop(projections, boxes).cpu(),
        field,
    )


def _crop(images: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """``images[i]`` inside ``boxes[i]`` (all of one size), zero where a box leaves the image."""
    height, width = images.shape[-2:]
    side_h, side_w = int(boxes[0, 2] - boxes[0, 0]), int(boxes[0, 3] - boxes[0, 1])
    out = images.new_zeros(len(images), images.shape[1], side_h, side_w)
    for i, (top, left, bottom, right) in enumerate(boxes.tolist()):
        y0, x0, y1, x1 = max(top, 0), max(left, 0), min(bottom, height), min(right, width)
        if y0 < y1 and x0 < x1:
            out[i, :, y0 - top : y1 - top, x0 - left : x1 - left] = images[i, :, y0:y1, x0:x1]
    return out
