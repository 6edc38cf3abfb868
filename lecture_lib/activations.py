r"""Activation visualization (lecture, Part 1): how the layers are activated for a given image.

"Take the intermediate layers and build a new multi-output model": ``feature_maps`` runs the
model once and returns the output of each chosen layer, the maps

.. math:: X_{n+1} = \max(X_n * K_n, 0)

that a ConvNet computes on its way to the class scores. Lower layers respond to elementary
patterns (edges, colours, textures), higher layers to larger parts of the object.
``filters`` shows the kernels :math:`K_n` of a convolution themselves, as small images.

The lecture's drawbacks apply: the maps explain one image at a time, and there are many of
them ("too many filters to inspect"); ``top_channels`` picks the most active ones.
"""

from __future__ import annotations

import torch
from torch import nn

from .targets import explaining, finish, get_layer, prepare


def relu_layers(model: nn.Module) -> list[str]:
    """The names of the model's ``nn.ReLU`` layers (registration order): its activations."""
    return [name for name, module in model.named_modules() if isinstance(module, nn.ReLU)]


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
