"""What every figure of the package shares: the colours and sizes (``DIVERGING``,
``SEQUENTIAL``, ``MAX_WIDTH``, ...), the checks of what comes in (images, titles, ``ncols``),
``subplots`` and its ``NotebookFigure`` (shown once in a notebook), grids of axes, and titles
that fit their cell.

The drawing modules of the package import from here; nothing here imports them.
"""

from __future__ import annotations

import io
import math
import re

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from .. import threads
from ..data import to_hwc

DIVERGING = "RdBu_r"
"""Colormap of signed maps: red positive, white zero, blue negative."""

SEQUENTIAL = "magma"
"""Colormap of magnitudes: black 0, bright large."""

REDUCTIONS: tuple[str, ...] = ("sum", "max", "rgb")
"""How a 3-channel attribution becomes a picture (see the package's docstring)."""

SCALES: tuple[str, ...] = ("own", "column", "all")
"""Colour limits of a grid of maps: each map its own, one per method (column), one for all."""

MAX_WIDTH = 9.6
"""The widest figure, in inches, that JupyterLab shows at full size: its output area is about
970 pixels wide in a 1400-pixel window, and figures are drawn at 100 dots per inch."""

OWN_SCALE = "each map: own scale"
"""The colorbar label of a grid whose maps each have their own limits."""

OWN_RANGE = "colours: each map from its own minimum (darkest) to its own maximum (brightest)"
"""The note under a grid of feature maps that are each scaled to their own range."""

DARK_IMAGE = 0.4
"""Under a map of magnitudes an overlay shows the image this bright at most (0: black, 1: as
it is), so that pixels without attribution look dark, like the low end of ``SEQUENTIAL``."""


# --- checking what comes in -----------------------------------------------------------------


def _array(values, name: str, function: str) -> np.ndarray:
    """A float numpy copy of a tensor, array or nested list; empty or non-finite input raises."""
    if isinstance(values, torch.Tensor):
        array = values.detach().cpu().double().numpy()
    else:
        try:
            array = np.asarray(values, dtype=np.float64)
        except (TypeError, ValueError) as error:
            raise TypeError(
                f"{function}: {name} must be a tensor or a numpy array of numbers, "
                f"got {type(values).__name__}."
            ) from error
    if array.size == 0:
        raise ValueError(f"{function}: {name} is empty (shape {array.shape}).")
    if not np.isfinite(array).all():
        raise ValueError(f"{function}: {name} contains NaN or infinite values.")
    return array


def _one_image(array: np.ndarray, function: str) -> np.ndarray:
    """One image as ``[H, W, 3]`` (RGB) or ``[H, W]`` (grey), as ``imshow`` wants it."""
    if array.ndim == 2 or (array.ndim == 3 and array.shape[0] in (1, 3)):
        return to_hwc(array)
    raise ValueError(
        f"{function}: expected one image [3, H, W], [1, H, W] or [H, W], "
        f"got shape {tuple(array.shape)}."
    )


@threads.under_policy
def image_list(images, function: str = "show_images") -> list[np.ndarray]:
    """``images`` (a batch, one image, or a list of images) as a list of ``imshow`` arrays."""
    if isinstance(images, (list, tuple)):
        return [_one_image(_array(image, "images", function), function) for image in images]
    array = _array(images, "images", function)
    if array.ndim == 4:
        if array.shape[1] not in (1, 3):
            raise ValueError(
                f"{function}: a batch of images must be [N, C, H, W] with C = 1 or 3, "
                f"got shape {tuple(array.shape)}."
            )
        return [_one_image(image, function) for image in array]
    if array.ndim == 3 and array.shape[0] not in (1, 3):
        return list(array)  # a batch of grey maps [N, H, W]
    return [_one_image(array, function)]


def _check_ncols(ncols, function: str) -> int:
    if isinstance(ncols, bool) or not isinstance(ncols, int) or ncols < 1:
        raise ValueError(f"{function}: ncols must be a positive int, got ncols={ncols!r}.")
    return ncols


def _check_titles(titles, n: int, function: str) -> list[str] | None:
    if titles is None:
        return None
    if isinstance(titles, str) or len(titles) != n:
        raise ValueError(
            f"{function}: titles must be a list of {n} strings (one per picture), got {titles!r}."
        )
    return [str(title) for title in titles]


def _rows(maps, n: int, name: str, function: str = "compare_methods") -> list[np.ndarray]:
    """Maps as one map per image: ``[N, ...]`` for N images, or one map for one image."""
    array = _array(maps, name, function)
    if array.ndim >= 3 and array.shape[0] == n:
        return list(array)
    if n == 1 and array.ndim in (2, 3):
        return [array]
    raise ValueError(
        f"{function}: {name} has shape {tuple(array.shape)}, but there are {n} images; "
        f"give one map per image, [{n}, H, W] or [{n}, C, H, W]."
    )


# --- figure helpers -------------------------------------------------------------------------


class NotebookFigure(Figure):
    """A Figure that Jupyter shows once.

    Jupyter's inline backend shows every open pyplot figure at the end of a cell, and would show
    a Figure that is the cell's last value a second time, as its result. This one, when Jupyter
    displays it, shows itself and lets go of pyplot, so the end of the cell does not repeat it.
    """

    def _ipython_display_(self) -> None:
        from IPython.display import Image, display

        plt.close(self)
        buffer = io.BytesIO()
        self.savefig(buffer, format="png", bbox_inches="tight")
        display(Image(buffer.getvalue()))


def subplots(*args, **kwargs):
    """``plt.subplots`` for a notebook's own figures: a ``NotebookFigure`` (shown once) with
    constrained layout (unless ``layout=`` says otherwise); the arguments are
    ``plt.subplots``'s."""
    kwargs.setdefault("layout", "constrained")
    return plt.subplots(*args, FigureClass=NotebookFigure, **kwargs)


def _grid(
    n: int,
    ncols: int,
    size: float,
    function: str,
    height: float | None = None,
    layout: str = "constrained",
) -> tuple[Figure, list[Axes]]:
    """A figure with ``n`` axes in rows of ``ncols``, ticks off, unused axes removed; each cell
    ``size`` inches wide and ``height`` (default ``size``) high."""
    ncols = min(_check_ncols(ncols, function), n)
    nrows = math.ceil(n / ncols)
    figsize = (size * ncols, (size if height is None else height) * nrows)
    fig, axes = subplots(nrows, ncols, figsize=figsize, squeeze=False, layout=layout)
    axes = list(axes.ravel())
    for ax in axes[n:]:
        fig.delaxes(ax)
    for ax in axes[:n]:
        ax.set_axis_off()
    return fig, axes[:n]


def _axes(ax: Axes | None, figsize: tuple[float, float]) -> tuple[Figure, Axes]:
    """The given axes and its figure, or a new figure with one axes."""
    if ax is None:
        fig, ax = subplots(figsize=figsize)
        return fig, ax
    return ax.get_figure(root=True), ax


def draw_image(ax: Axes, image: np.ndarray, title: str | None = None, cmap: str = "gray"):
    """One ``[H, W, 3]`` or ``[H, W]`` picture in ``ax``, without ticks; returns the AxesImage."""
    shown = ax.imshow(image, cmap=None if image.ndim == 3 else cmap, interpolation="nearest")
    ax.set_axis_off()
    if title is not None:
        ax.set_title(title)
    return shown


def _stretch(picture: np.ndarray) -> np.ndarray:
    """Min-max scaled to [0, 1]; a constant picture becomes 0.5."""
    low, high = picture.min(), picture.max()
    return (picture - low) / (high - low) if high > low else np.full_like(picture, 0.5)


def _fit_width(size: float, columns: float, max_width: float | None, margin: float = 0.0) -> float:
    """The cell size that keeps ``columns`` cells (plus ``margin`` inches) within ``max_width``."""
    if max_width is None:
        return size
    return min(size, (max_width - margin) / columns)


_WORDS = re.compile(r"(?:\$[^$]*\$|[^\s$])+")


MIN_TITLE_POINTS = 7.0
"""The smallest font a title is shrunk to when one of its words is wider than its cell."""


def _fit_title(ax: Axes, text: str, width: float, **kwargs) -> None:
    """``ax.set_title(text)``, with lines broken between words (never inside $...$) so that each
    line fits ``width`` inches (the width of the axes' cell in the grid), and the lines of a
    broken title about equally long; a word wider than the cell gets a smaller font."""
    fig = ax.get_figure(root=True)
    renderer = fig.canvas.get_renderer()
    title = ax.set_title(text, **kwargs)

    def measure(line: str) -> float:
        title.set_text(line)
        return title.get_window_extent(renderer).width

    def wrap(words: list[str], limit: float) -> list[str]:
        lines, current = [], ""
        for word in words:
            candidate = f"{current} {word}" if current else word
            if current and measure(candidate) > limit:
                lines.append(current)
                current = word
            else:
                current = candidate
        return [*lines, current]

    lines = []
    for given in text.split("\n"):
        words = _WORDS.findall(given)
        limit = 0.95 * width * fig.dpi
        wrapped = wrap(words, limit)
        low = max(measure(word) for word in words) if words else 0.0
        while len(wrapped) > 1 and limit - low > 1.0:  # the narrowest limit, same line count
            middle = (low + limit) / 2
            if len(wrap(words, middle)) == len(wrapped):
                limit = middle
            else:
                low = middle
        lines += wrap(words, limit) if len(wrapped) > 1 else wrapped
    title.set_text("\n".join(lines))
    widest = max((measure(line) for line in lines), default=0.0)
    if widest > 0.95 * width * fig.dpi:  # a single word wider than the cell: a smaller font
        smaller = title.get_fontsize() * 0.95 * width * fig.dpi / widest
        title.set_fontsize(max(MIN_TITLE_POINTS, smaller))
    title.set_text("\n".join(lines))
