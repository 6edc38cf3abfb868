"""A grid of images (``show_images``): the shapes, a class model image, any batch."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure

from .. import threads
from .figures import (
    MAX_WIDTH,
    _check_ncols,
    _check_titles,
    _fit_title,
    _fit_width,
    _grid,
    _stretch,
    draw_image,
    image_list,
)


@threads.under_policy
def show_images(
    images,
    titles: Sequence[str] | None = None,
    ncols: int = 8,
    *,
    cmap: str = "gray",
    rescale: bool = False,
    size: float = 2.0,
    max_width: float | None = MAX_WIDTH,
) -> Figure:
    """A grid of images, ``ncols`` per row, ``size`` inches each (less if a row would be wider
    than ``max_width``).

    RGB images must lie in [0, 1]; ``rescale=True`` stretches each image to [0, 1] first
    (min-max), e.g. for a class model image. Grey images use ``cmap`` on their own range.
    """
    pictures = image_list(images, "show_images")
    titles = _check_titles(titles, len(pictures), "show_images")
    if rescale:
        pictures = [_stretch(picture) for picture in pictures]
    for k, picture in enumerate(pictures):
        if picture.ndim == 3 and (picture.min() < -1e-6 or picture.max() > 1 + 1e-6):
            raise ValueError(
                f"show_images: RGB image {k} has values in [{picture.min():.3g}, "
                f"{picture.max():.3g}], outside [0, 1]. Pass rescale=True to stretch each image "
                "to [0, 1], or draw an attribution with heatmap()."
            )
    size = _fit_width(size, min(_check_ncols(ncols, "show_images"), len(pictures)), max_width)
    fig, axes = _grid(len(pictures), ncols, size, "show_images")
    for k, (ax, picture) in enumerate(zip(axes, pictures)):
        draw_image(ax, np.clip(picture, 0, 1) if picture.ndim == 3 else picture, cmap=cmap)
        if titles is not None:
            _fit_title(ax, titles[k], width=size)
    return fig
