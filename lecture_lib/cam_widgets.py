"""The explorer of Grad-CAM (``attribution.grad_cam``) and its relatives: pick the image, the
layer whose maps are weighted, the class and the method, and see the map over the image.

Built like the explorers of ``widgets`` (an ``Explorer``: controls above one persistent figure,
redrawn in place; each (image, class, layer, method) computed once, for that image alone, and
kept in ``explorer.cache``, bounded).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial

import ipywidgets as widgets
import matplotlib
import numpy as np
import torch
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from torch import nn

from . import activations, attribution, plot, threads
from .data import to_hwc
from .picture import Cache, changing_parts, colorbar, image_and_map
from .targets import get_layer
from .widgets import (
    CACHED_RESULTS,
    PREDICTED,
    Explorer,
    _batch,
    _image_slider,
    _scores,
    _target_dropdown,
)

METHODS: dict[str, Callable] = {
    "Grad-CAM": attribution.grad_cam,
    "HiResCAM": attribution.hires_cam,
    "guided Grad-CAM": attribution.guided_grad_cam,
    "guided HiResCAM": partial(attribution.guided_grad_cam, elementwise=True),
}
"""The methods of ``grad_cam_explorer``: ``f(model, image, target, layer=...) -> map``."""

LABELS = {
    "Grad-CAM": r"$L^c = \mathrm{ReLU}(\Sigma_k \alpha^c_k A^k)$",
    "HiResCAM": r"$\mathrm{ReLU}(\Sigma_k \partial S_c / \partial A^k \odot A^k)$",
    "guided Grad-CAM": "|guided backprop × Grad-CAM|, max over RGB",
    "guided HiResCAM": "|guided backprop × HiResCAM|, max over RGB",
}
"""What each method's colour scale measures."""

ALPHA = 0.8
"""The map's opacity where it is strongest (``plot.overlay``'s default)."""


@threads.under_policy
def grad_cam_explorer(
    model: nn.Module,
    images,
    labels=None,
    *,
    layers: Sequence[str] | None = None,
    method: str = "Grad-CAM",
    class_names: Sequence[str] | None = None,
) -> Explorer:
    r"""Grad-CAM, :math:`L^c = \operatorname{ReLU}(\Sigma_k \alpha^c_k A^k)`, of the chosen
    ``layer`` and class ("predicted class" or any class), drawn over the image (as
    ``plot.overlay``: the image greyed and darkened, the map's colour the more opaque the
    stronger it is), or one of the other ``METHODS``: HiResCAM (the gradient at each position
    instead of its average) and the guided variants (guided backpropagation times the map).

    ``layers`` are the layers offered (default: every convolution and ReLU whose output is a
    stack of maps ``[N, K, h, w]``, in the order the forward pass runs them); the last one is
    chosen first (ShapesNet: ``relu4``, Grad-CAM's default layer). The map's title gives the
    layer's resolution: the map is computed there and enlarged to the image.
    """
    function = "grad_cam_explorer"
    batch = _batch(images, function)
    if method not in METHODS:
        raise ValueError(
            f"{function}: method must be one of {', '.join(map(repr, METHODS))}, "
            f"got method={method!r}."
        )
    sizes = _layer_sizes(model, batch[:1], layers, function)
    probabilities = _scores(model, batch).softmax(dim=-1)
    names = plot.class_names_for(probabilities.shape[-1], class_names)
    pictures = [to_hwc(image) for image in batch]
    last = list(sizes)[-1]
    controls = {
        "image": _image_slider(len(batch)),
        "target": _target_dropdown(names),
        "layer": widgets.Dropdown(options=list(sizes), value=last, description="layer"),
        "method": widgets.Dropdown(options=list(METHODS), value=method, description="method"),
    }
    figure, left, right, scale = image_and_map(image=300, box=(300, 300))
    image_artist = plot.draw_image(left, pictures[0])
    map_artist = right.imshow(pictures[0], interpolation="nearest")
    mappable = ScalarMappable(Normalize(0.0, 1.0), plot.SEQUENTIAL)
    bar = colorbar(figure, mappable, scale)
    cache = Cache(CACHED_RESULTS)

    def draw(values: dict) -> dict:
        i, layer, method = values["image"], values["layer"], values["method"]
        p = probabilities[i]
        predicted = int(p.argmax())
        c = predicted if values["target"] == PREDICTED else values["target"]
        key = (i, c, layer, method)
        if key not in cache:
            cam = METHODS[method](model, batch[i], c, layer=layer)
            cache[key] = cam.detach().float().cpu().numpy()
        style = plot.map_style(cache[key], signed=False, reduce="max", function=function)
        shown = overlay_pixels(pictures[i], style.values, style.vmax)
        image_artist.set_data(pictures[i])
        title = f"image {i}: {names[predicted]} (p = {p[predicted]:.2f})"
        if labels is not None:
            title += f"\ntrue: {names[int(labels[i])]}"
        left.set_title(title)
        map_artist.set_data(shown)
        h, w = sizes[layer]
        nothing = " (zero everywhere)" if not style.values.any() else ""
        right.set_title(
            f"{method} at {layer} ({h} × {w}){nothing}\nfor {names[c]} (p = {p[c]:.2f})"
        )
        mappable.set_clim(0.0, style.vmax)
        bar.set_label(LABELS[method])
        return {
            "image": pictures[i],
            "map": cache[key],
            "overlay": shown,
            "target": c,
            "layer": layer,
            "method": method,
        }

    explorer = Explorer(controls, figure, draw, changing=changing_parts(left, right, scale))
    explorer.cache = cache
    return explorer


def overlay_pixels(picture: np.ndarray, values: np.ndarray, vmax: float) -> np.ndarray:
    r"""The ``[H, W]`` map ``values`` (magnitudes, limit ``vmax``) over the ``[H, W, 3]``
    picture as ``plot.overlay`` draws it, ``[H, W, 3]``: the picture greyed and darkened (the
    lowest ``DARK_IMAGE`` of its grey range spread over black to white, the rest white), the
    map's colour on top with opacity :math:`\alpha = 0.8 \min(1, v / v_{max})`."""
    grey = picture @ np.array([0.299, 0.587, 0.114])
    low, high = float(grey.min()), float(grey.max())
    top = low + (high - low) / plot.DARK_IMAGE if high > low else low + 1.0
    under = np.clip((grey - low) / (top - low), 0.0, 1.0)[..., None]
    colours = matplotlib.colormaps[plot.SEQUENTIAL](np.clip(values / vmax, 0.0, 1.0))[..., :3]
    alpha = ALPHA * np.clip(values / vmax, 0.0, 1.0)[..., None]
    return alpha * colours + (1 - alpha) * under


def _layer_sizes(model, image: torch.Tensor, layers, function: str) -> dict[str, tuple[int, int]]:
    """The offered layers and the size ``(h, w)`` of their maps, from two forward passes of
    one image; checked."""
    found = attribution.spatial_layers(model, image)
    eligible = [
        name for name in found if isinstance(get_layer(model, name, function), (nn.Conv2d, nn.ReLU))
    ]
    if layers is None:
        layers = eligible
        if not layers:
            raise ValueError(
                f"{function}: the model has no convolution or ReLU layer with spatial maps "
                f"[N, K, h, w]; Grad-CAM needs one. Layers with spatial maps: {found or 'none'}."
            )
    else:
        layers = [layers] if isinstance(layers, str) else list(layers)
        if not layers or len(set(layers)) != len(layers):
            raise ValueError(
                f"{function}: layers must name distinct layers, at least one, got {layers}."
            )
        for name in layers:
            if name not in found:
                raise ValueError(
                    f"{function}: layer {name!r} gives no spatial maps [N, K, h, w] to weight "
                    f"(or is not a layer of the model). Layers with spatial maps: "
                    f"{', '.join(found)}."
                )
    maps = activations.feature_maps(model, image, list(layers))
    return {name: tuple(maps[name].shape[-2:]) for name in layers}
