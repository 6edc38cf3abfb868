"""The explorer of prediction difference analysis (``prediction_difference``): window size,
sampler and number of samples, beside the grey occlusion of the same windows."""

from __future__ import annotations

from collections.abc import Sequence

import ipywidgets as widgets
import numpy as np
import torch
from torch import nn

from . import perturbation, plot, threads
from .data import to_hwc
from .picture import Cache, changing_parts, colorbar, image_and_map, show_map
from .prediction_difference import SAMPLERS, patch_gaussian, prediction_difference
from .widgets import (
    CACHED_RESULTS,
    PREDICTED,
    Explorer,
    _batch,
    _image_slider,
    _scores,
    _target_dropdown,
)

WINDOWS = (4, 8, 16)
"""The window sides the explorer offers (stride: half the window)."""

GREY = "grey occlusion"

COARSE_SAMPLES = 1
"""A new map of more samples per window is shown first from this many ("refining…"), then
from all of them: the first picture comes as fast as the forward passes of one sample allow."""


@threads.under_policy
def prediction_difference_explorer(
    model: nn.Module,
    images,
    data: torch.Tensor,
    *,
    window: int = 8,
    sampler: str = "conditional",
    samples: int = 4,
    padding: int = 2,
    class_names: Sequence[str] | None = None,
) -> Explorer:
    """Prediction difference analysis of one image at a time, in bits of evidence for (red) and
    against (blue) the chosen class, with a dropdown for the sampler (or grey occlusion, for
    comparison), and sliders for the window (stride: half of it) and the samples per window.

    ``data`` are the images the window's values are drawn from; the Gaussian of the conditional
    sampler is fitted on them once per window size. Maps are computed when first shown and kept
    in ``explorer.cache`` (bounded, as every explorer's). A new map of more than
    ``COARSE_SAMPLES`` samples per window shows its ``COARSE_SAMPLES``-sample estimate first,
    titled "refining…", then the map of all its samples.
    """
    function = "prediction_difference_explorer"
    batch = _batch(images, function)
    if window not in WINDOWS:
        raise ValueError(f"{function}: window must be one of {WINDOWS}, got window={window!r}.")
    if sampler not in (*SAMPLERS, GREY):
        raise ValueError(
            f"{function}: sampler must be 'marginal', 'conditional' or {GREY!r}, "
            f"got sampler={sampler!r}."
        )
    probabilities = _scores(model, batch).softmax(dim=-1)
    names = plot.class_names_for(probabilities.shape[-1], class_names)
    pictures = [to_hwc(image) for image in batch]
    controls = {
        "image": _image_slider(len(batch)),
        "target": _target_dropdown(names),
        "sampler": widgets.Dropdown(
            options=[*SAMPLERS, GREY], value=sampler, description="sampler"
        ),
        "window": widgets.SelectionSlider(
            options=list(WINDOWS), value=window, description="window", continuous_update=False
        ),
        "samples": widgets.IntSlider(
            value=samples, min=1, max=16, description="samples", continuous_update=False
        ),
    }
    figure, left, right, scale = image_and_map()
    image_artist = plot.draw_image(left, pictures[0])
    map_artist = right.imshow(np.zeros((1, 1)), interpolation="nearest")
    colorbar(figure, map_artist, scale, "bits for the class (occlusion: drop of the score)")
    gaussians: dict[int, object] = {}
    cache = Cache(CACHED_RESULTS)
    built: dict = {}  # the explorer, once built: a coarse map goes to its picture at once

    def compute(i: int, c: int, kind: str, w: int, n: int) -> np.ndarray:
        stride = max(1, w // 2)
        if kind == GREY:
            return perturbation.occlusion(
                model, batch[i], c, window=w, stride=stride, baseline=0.5, progress=False
            )
        source = data
        if kind == "conditional":
            if w not in gaussians:
                gaussians[w] = patch_gaussian(data, w + 2 * padding)
            source = gaussians[w]
        return prediction_difference(
            model, batch[i], c, window=w, stride=stride, sampler=kind, data=source,
            samples=n, padding=padding, progress=False,
        )  # fmt: skip

    def paint(i: int, c: int, kind: str, w: int, n: int, values: np.ndarray, note="") -> dict:
        p = probabilities[i]
        style = plot.map_style(values, signed=True, function=function)
        image_artist.set_data(pictures[i])
        left.set_title(f"image {i}: {names[int(p.argmax())]} (p = {p.max():.2f})")
        detail = "" if kind == GREY else f", {n} sample{'s' if n > 1 else ''}{note}"
        right.set_title(f"{kind}, window {w}, stride {max(1, w // 2)}{detail}\nfor {names[c]}")
        show_map(map_artist, style)
        return {"image": pictures[i], "map": style.values, "target": c}

    def draw(values: dict) -> dict:
        i, kind, w, n = values["image"], values["sampler"], values["window"], values["samples"]
        p = probabilities[i]
        c = int(p.argmax()) if values["target"] == PREDICTED else values["target"]
        key = (i, c, kind, w, 0 if kind == GREY else n)
        if key not in cache:
            if kind != GREY and n > COARSE_SAMPLES and "explorer" in built:
                # a map of fewer samples per window first (n / COARSE_SAMPLES times cheaper)
                coarse = compute(i, c, kind, w, COARSE_SAMPLES).float().numpy()
                paint(i, c, kind, w, COARSE_SAMPLES, coarse, note=", refining…")
                built["explorer"].show(status=f"refining: {n} samples per window…")
            cache[key] = compute(i, c, kind, w, n).float().numpy()
        return {**paint(i, c, kind, w, n, cache[key]), "key": key}

    explorer = Explorer(controls, figure, draw, changing=changing_parts(left, right, scale))
    explorer.cache = cache
    built["explorer"] = explorer
    return explorer
