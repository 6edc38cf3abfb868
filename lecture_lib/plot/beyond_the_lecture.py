"""Beyond the lecture: the image patches that excite a channel most, with their DeconvNet
projections (``top_patches``, Zeiler & Fergus's figure 2), and fooling images
(``fooling_images``)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure

from .. import threads
from ..data import to_hwc
from .attribution_maps import draw_map, map_style
from .figures import (
    _array,
    _check_ncols,
    _one_image,
    draw_image,
    subplots,
)
from .method_grids import class_names_for


@threads.under_policy
def top_patches(
    result,
    ncols: int = 3,
    *,
    title: str | None = None,
    clip: float = 99.5,
    size: float = 1.1,
) -> Figure:
    r"""Zeiler & Fergus's figure 2 for one channel: left, the DeconvNet projections of its
    strongest activations over a data set; right, the image patches they come from (each the
    receptive field of the unit), strongest first, ``ncols`` per row.

    ``result`` is what ``activations.top_patches`` returns. Each projection is drawn as an RGB
    image :math:`0.5 + a / (2v)` on its own scale (grey: 0); the box's part outside the image is
    black (the convolutions' zero padding).
    """
    function = "plot.top_patches"
    patches = _array(result.patches, "result.patches", function)
    projections = _array(result.projections, "result.projections", function)
    if patches.ndim != 4 or projections.shape != patches.shape:
        raise ValueError(
            f"{function}: expects patches and projections [k, C, h, w] of one shape, got "
            f"{tuple(patches.shape)} and {tuple(projections.shape)}."
        )
    k = len(patches)
    ncols = min(_check_ncols(ncols, function), k)
    nrows = math.ceil(k / ncols)
    fig, axes = subplots(
        nrows,
        2 * ncols + 1,
        figsize=(size * (2 * ncols + 0.4), size * nrows + 0.5),
        squeeze=False,
        gridspec_kw={"width_ratios": [1] * ncols + [0.4] + [1] * ncols},
    )
    for ax in axes.ravel():
        ax.set_axis_off()
    for i in range(k):
        row, col = divmod(i, ncols)
        style = map_style(projections[i], clip=clip, reduce="rgb", function=function)
        draw_map(axes[row, col], style)
        draw_image(axes[row, ncols + 1 + col], _one_image(patches[i], function))
    axes[0, (ncols - 1) // 2].set_title("DeconvNet projections", loc="left" if ncols > 1 else None)
    axes[0, ncols + 1 + (ncols - 1) // 2].set_title(
        "image patches", loc="left" if ncols > 1 else None
    )
    if title is not None:
        fig.suptitle(title)
    return fig


@threads.under_policy
def fooling_images(
    result,
    class_names: Sequence[str] | None = None,
    *,
    size: float = 2.0,
) -> Figure:
    r"""A fooling attempt, one row per image: the original with its class, the change
    :math:`\delta` (RGB, :math:`0.5 + \delta / (2 \|\delta\|_\infty)`: grey is no change, the
    scale written above), and the changed image with the class the model now gives it.

    ``result`` is what ``fooling.fooling_image`` or ``fooling.fast_gradient_sign`` returns.
    """
    function = "fooling_images"
    originals = _array(result.original, "result.original", function)
    images = _array(result.image, "result.image", function)
    changes = _array(result.change, "result.change", function)
    if originals.ndim == 3:
        originals, images, changes = originals[None], images[None], changes[None]
    source = np.atleast_1d(np.asarray(result.source))
    predicted = np.atleast_1d(np.asarray(result.predicted))
    target = np.atleast_1d(np.asarray(result.target))
    names = class_names_for(
        max(int(source.max()), int(target.max()), int(predicted.max())) + 1
        if class_names is None
        else len(class_names),
        class_names,
    )
    n = len(originals)
    fig, axes = subplots(n, 3, figsize=(3 * size, (size + 0.35) * n), squeeze=False)
    for i in range(n):
        draw_image(axes[i, 0], to_hwc(originals[i]), f"{names[int(source[i])]}")
        largest = float(np.abs(changes[i]).max())
        limit = largest if largest > 0 else 1.0
        draw_image(
            axes[i, 1],
            to_hwc(np.clip(0.5 + changes[i] / (2 * limit), 0, 1)),
            f"change, ±{largest * 255:.0f}/255",
        )
        verdict = "" if predicted[i] == target[i] else f"\n(target {names[int(target[i])]})"
        draw_image(
            axes[i, 2], np.clip(to_hwc(images[i]), 0, 1), f"→ {names[int(predicted[i])]}{verdict}"
        )
    return fig
