"""Part 1, activation visualization: the feature maps of one layer (``feature_map_grid``,
``mosaic``) and the first layer's filters as small images (``filter_grid``)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure

from .. import threads
from .figures import (
    MAX_WIDTH,
    OWN_RANGE,
    _array,
    _check_ncols,
    _check_titles,
    _fit_width,
    _grid,
    _one_image,
    _stretch,
)


def _maps(maps, function: str) -> np.ndarray:
    """One image's feature maps ``[C, H, W]`` (a leading batch axis of 1 is dropped)."""
    array = _array(maps, "maps", function)
    if array.ndim == 4 and array.shape[0] == 1:
        array = array[0]
    if array.ndim != 3:
        raise ValueError(
            f"{function}: maps must be one image's feature maps [C, H, W], got shape "
            f"{tuple(array.shape)}. For a batch, pick one image: maps[i]."
        )
    return array


@threads.under_policy
def feature_map_grid(
    maps,
    ncols: int = 8,
    *,
    titles: Sequence[str] | None = None,
    cmap: str = "viridis",
    shared_scale: bool = False,
    size: float = 1.3,
    max_width: float | None = MAX_WIDTH,
) -> Figure:
    """The feature maps ``[C, H, W]`` of one image and one layer, one small picture per channel.

    Each map is scaled on its own (its min to its max) so every pattern shows, and a line under
    the maps says so; with ``shared_scale=True`` all share one scale and a colorbar with its
    values, so strong and weak (or dead) channels can be told apart. Cells are ``size`` inches,
    less if the figure would be wider than ``max_width``.
    """
    array = _maps(maps, "feature_map_grid")
    titles = _check_titles(titles, len(array), "feature_map_grid")
    titles = titles or [f"channel {k}" for k in range(len(array))]
    low, high = (array.min(), array.max()) if shared_scale else (None, None)
    # "compressed": the maps close up, so a colorbar sits right beside them
    layout = "compressed" if shared_scale else "constrained"
    columns = min(_check_ncols(ncols, "feature_map_grid"), len(array))
    size = _fit_width(size, columns, max_width, margin=0.8 if shared_scale else 0.2)
    fig, axes = _grid(len(array), ncols, size, "feature_map_grid", layout=layout)
    for ax, channel, title in zip(axes, array, titles):
        shown = ax.imshow(channel, cmap=cmap, vmin=low, vmax=high, interpolation="nearest")
        ax.set_title(title, fontsize="small" if size >= 0.9 else "x-small")
    if shared_scale:
        nrows = math.ceil(len(array) / min(ncols, len(array)))
        width = fig.get_figwidth()
        fig.colorbar(  # as high as one row of maps, or most of a taller grid; 0.1 inch away
            shown,
            ax=axes,
            shrink=1.0 if nrows == 1 else 0.7,
            aspect=10 * min(nrows, 2),
            pad=0.1 / width,
            label="activation",
        )
    else:
        fig.supxlabel(OWN_RANGE, fontsize="small")
    return fig


@threads.under_policy
def mosaic(maps, ncols: int = 8, pad: int = 1) -> np.ndarray:
    """The maps ``[C, H, W]`` tiled into one array, ``ncols`` per row, NaN between them
    (drawn as background): a fast picture of a whole layer in a single ``imshow``."""
    array = _maps(maps, "mosaic")
    channels, height, width = array.shape
    ncols = min(_check_ncols(ncols, "mosaic"), channels)
    nrows = math.ceil(channels / ncols)
    tiled = np.full((nrows * (height + pad) - pad, ncols * (width + pad) - pad), np.nan)
    for k, channel in enumerate(array):
        top, left = (k // ncols) * (height + pad), (k % ncols) * (width + pad)
        tiled[top : top + height, left : left + width] = channel
    return tiled


@threads.under_policy
def filter_grid(
    filters,
    ncols: int = 8,
    *,
    titles: Sequence[str] | None = None,
    size: float = 0.9,
) -> Figure:
    """First-layer filters ``[out, 3, k, k]`` as small RGB images (``[out, 1, k, k]``: grey).

    Values in [0, 1] (as ``activations.filters`` gives them) are shown as they are; other
    values are min-max scaled over all filters together first.
    """
    array = _array(filters, "filters", "filter_grid")
    if array.ndim != 4 or array.shape[1] not in (1, 3):
        raise ValueError(
            "filter_grid: filters must be [out, 3, k, k] (first-layer RGB filters) or "
            f"[out, 1, k, k], got shape {tuple(array.shape)}. For a deeper layer show one input "
            "channel at a time: filters[:, i : i + 1]."
        )
    if array.min() < 0 or array.max() > 1:
        array = _stretch(array)
    titles = _check_titles(titles, len(array), "filter_grid")
    titles = titles or [str(k) for k in range(len(array))]
    fig, axes = _grid(len(array), ncols, size, "filter_grid")
    for ax, kernel, title in zip(axes, array, titles):
        ax.imshow(_one_image(kernel, "filter_grid"), cmap="gray", vmin=0, vmax=1)
        ax.set_title(title, fontsize="small")
    return fig
