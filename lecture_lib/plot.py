r"""Pictures for the course: images, attribution maps, feature maps, filters, the ReLU tables,
and how explanations are evaluated (deletion and insertion curves, the randomization test).

Every function draws one figure and returns it (a ``matplotlib.figure.Figure``); in a notebook
it shows once, whether the call is the cell's last line or not. Arguments are
tensors or numpy arrays and carry the same names everywhere: ``images``, ``attributions``,
``titles``, ``ncols``, ``cmap``.

Images are a batch ``[N, C, H, W]``, one image ``[C, H, W]`` (C = 3: RGB in [0, 1]; C = 1:
grey) or a grey ``[H, W]``; a ``[N, H, W]`` array with N not 1 or 3 is a batch of grey maps.

How an attribution map is coloured (``map_style``):

- signed (any value below 0, or ``signed=True``): the diverging ``"RdBu_r"`` centred at zero,
  red for positive, blue for negative, limits :math:`\pm v` with v the ``clip``-th percentile
  of :math:`|a|` (so one extreme pixel does not wash out the rest);
- magnitudes (every value :math:`\ge 0`): the sequential ``"magma"`` from 0 to v;
- a 3-channel attribution ``[3, H, W]`` is summed over the colour channels (``reduce="sum"``,
  which keeps the sign), or reduced to :math:`\max_k |a_k|` over the colour channels k
  (``"max"``, Simonyan's saliency), or shown as an RGB image :math:`0.5 + a / (2v)` (``"rgb"``,
  the classic guided backprop look).

Every grid of maps carries a labelled colour scale: either the maps share one limit v
(``scale="column"`` or ``"all"``) and the colorbar gives its values, or each map has its own v
(``scale="own"``) and the colorbar says so, with ticks "-max", "0", "max". Figures are at most
``MAX_WIDTH`` inches wide, so that JupyterLab shows them at full size.
"""

from __future__ import annotations

import io
import math
import numbers
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.cm import ScalarMappable
from matplotlib.figure import Figure

from . import threads
from .data import CLASSES, to_hwc
from .rules import relu_backward
from .targets import as_batch, explaining, model_device

DIVERGING = "RdBu_r"
"""Colormap of signed maps: red positive, white zero, blue negative."""

SEQUENTIAL = "magma"
"""Colormap of magnitudes: black 0, bright large."""

REDUCTIONS: tuple[str, ...] = ("sum", "max", "rgb")
"""How a 3-channel attribution becomes a picture (see the module's docstring)."""

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

RULE_FORMULAS = {
    "gradient": r"$(f^l > 0)\, R^{l+1}$",
    "deconvnet": r"$(R^{l+1} > 0)\, R^{l+1}$",
    "guided": r"$(f^l > 0)(R^{l+1} > 0)\, R^{l+1}$",
}


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


# --- images ---------------------------------------------------------------------------------


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


def _stretch(picture: np.ndarray) -> np.ndarray:
    """Min-max scaled to [0, 1]; a constant picture becomes 0.5."""
    low, high = picture.min(), picture.max()
    return (picture - low) / (high - low) if high > low else np.full_like(picture, 0.5)


# --- attribution maps -----------------------------------------------------------------------


@dataclass(frozen=True)
class MapStyle:
    """How one attribution map is drawn: ``values`` ``[H, W]`` (``[H, W, 3]`` for ``"rgb"``),
    the colormap (None for RGB), the colour limits, and whether the map counts as signed."""

    values: np.ndarray
    cmap: str | None
    vmin: float
    vmax: float
    signed: bool


def _limit(magnitudes: np.ndarray, clip: float) -> float:
    """The ``clip``-th percentile of the magnitudes; their max if that is 0; 1 for a zero map."""
    limit = float(np.percentile(magnitudes, clip))
    if limit <= 0:
        limit = float(magnitudes.max())
    return limit if limit > 0 else 1.0


@threads.under_policy
def map_style(
    attribution,
    *,
    signed: bool | None = None,
    clip: float = 99.5,
    reduce: str = "sum",
    cmap: str | None = None,
    function: str = "map_style",
    vmax: float | None = None,
) -> MapStyle:
    r"""The values, colormap and limits with which ``attribution`` is drawn.

    ``attribution`` is one map ``[H, W]``, ``[1, H, W]`` or ``[3, H, W]``. ``signed=None``
    decides by the values (any negative: signed); ``signed=False`` on a map with negative values
    shows the magnitudes :math:`|a|`. ``cmap`` replaces the default colormap. ``vmax`` fixes the
    limit v (instead of the ``clip``-th percentile), e.g. to draw several maps on one scale.
    """
    a = _array(attribution, "attribution", function)
    if isinstance(clip, bool) or not isinstance(clip, (int, float)) or not 0 < clip <= 100:
        raise ValueError(f"{function}: clip must be a percentile in (0, 100], got clip={clip!r}.")
    vmax = _check_vmax(vmax, function)
    if reduce not in REDUCTIONS:
        raise ValueError(
            f"{function}: reduce must be one of {', '.join(map(repr, REDUCTIONS))}, "
            f"got reduce={reduce!r}."
        )
    if a.ndim == 3 and a.shape[0] == 1:
        a = a[0]
    if a.ndim == 3 and a.shape[0] == 3:
        if reduce == "rgb":
            v = vmax or _limit(np.abs(a), clip)
            rgb = np.clip(0.5 + a / (2 * v), 0.0, 1.0).transpose(1, 2, 0)
            return MapStyle(rgb, None, 0.0, 1.0, signed=True)
        a = a.sum(axis=0) if reduce == "sum" else np.abs(a).max(axis=0)
    elif a.ndim != 2:
        raise ValueError(
            f"{function}: expected one attribution map [H, W], [1, H, W] or [3, H, W], got shape "
            f"{tuple(a.shape)}. For a batch, pick one map with attributions[i], or use "
            "compare_methods()."
        )
    elif reduce == "rgb":
        raise ValueError(
            f"{function}: reduce='rgb' needs a 3-channel attribution [3, H, W], got shape "
            f"{tuple(a.shape)}."
        )
    if signed is None:
        signed = bool((a < 0).any())
    if signed:
        v = vmax or _limit(np.abs(a), clip)
        return MapStyle(a, cmap or DIVERGING, -v, v, signed=True)
    a = np.abs(a)
    return MapStyle(a, cmap or SEQUENTIAL, 0.0, vmax or _limit(a, clip), signed=False)


def _check_vmax(vmax, function: str) -> float | None:
    """``vmax`` as a positive float (None stays None)."""
    if vmax is None:
        return None
    if isinstance(vmax, bool) or not isinstance(vmax, numbers.Real) or not 0 < vmax < math.inf:
        raise ValueError(
            f"{function}: vmax must be a positive number (the colour limit), got vmax={vmax!r}."
        )
    return float(vmax)


def draw_map(ax: Axes, style: MapStyle, alpha=None):
    """Draw a ``MapStyle`` in ``ax`` (no ticks); returns the AxesImage."""
    shown = ax.imshow(
        style.values,
        cmap=style.cmap,
        vmin=style.vmin,
        vmax=style.vmax,
        alpha=alpha,
        interpolation="nearest",
    )
    ax.set_axis_off()
    return shown


def _colorbar(fig: Figure, ax: Axes, style: MapStyle, label: str | None):
    """A colorbar beside ``ax`` for the style's colormap and limits."""
    scale = ScalarMappable(plt.Normalize(style.vmin, style.vmax), style.cmap)
    return fig.colorbar(scale, ax=ax, shrink=0.85, label=label)


def _scale_bar(ax: Axes, style: MapStyle, label: str | None, own: bool, where: str = "bottom"):
    """A thin colorbar in a strip under (``where="bottom"``), beside (``"right"``) or in the
    upper part of (``"inside"``, for an empty cell) ``ax``.

    The strip belongs to ``ax`` (an inset axes), so the grid's axes stay one per picture and the
    layout makes room for it. For maps that each have their own limits (``own``) the ticks read
    "-max", "0", "max" and the label says so; otherwise they give the shared values.
    """
    bounds = {
        "bottom": [0.06, -0.13, 0.88, 0.065],
        "right": [1.04, 0.04, 0.055, 0.92],
        "inside": [0.06, 0.75, 0.88, 0.065],
    }[where]
    bottom = where != "right"
    cax = ax.inset_axes(bounds)
    scale = ScalarMappable(plt.Normalize(style.vmin, style.vmax), style.cmap)
    bar = ax.get_figure(root=True).colorbar(
        scale, cax=cax, orientation="horizontal" if bottom else "vertical"
    )
    if own:
        if style.signed:
            bar.set_ticks([style.vmin, 0.0, style.vmax], labels=["\N{MINUS SIGN}max", "0", "max"])
        else:
            bar.set_ticks([0.0, style.vmax], labels=["0", "max"])
        label = OWN_SCALE if label is None else label
    else:  # the limits themselves, and zero: few enough labels for a narrow strip
        ticks = [style.vmin, 0.0, style.vmax] if style.signed else [0.0, style.vmax / 2, style.vmax]
        bar.set_ticks(ticks, labels=[_short(t) for t in ticks])
    bar.ax.tick_params(labelsize="small", length=2, pad=1)
    if label:
        bar.set_label(label, size="small", labelpad=1)
    return bar


def _short(value: float) -> str:
    """A tick label with two significant digits: 0.014, 2.5, 120, -0.5."""
    return "0" if value == 0 else f"{value:.2g}".replace("-", "\N{MINUS SIGN}")


def _check_scale(scale, function: str, allowed: tuple[str, ...] = SCALES) -> str:
    if scale not in allowed:
        raise ValueError(
            f"{function}: scale must be one of {', '.join(map(repr, allowed))}, got scale={scale!r}."
        )
    return scale


def _shared_limit(maps, clip: float, reduce: str, function: str) -> float:
    """One limit v for several maps: the ``clip``-th percentile of all their magnitudes (as
    ``reduce`` makes them; signed or not does not change a magnitude)."""
    if reduce == "rgb":
        values = [np.abs(_array(m, "attribution", function)) for m in maps]
    else:
        values = [
            np.abs(map_style(m, clip=clip, reduce=reduce, function=function).values) for m in maps
        ]
    return _limit(np.concatenate([v.ravel() for v in values]), clip)


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


@threads.under_policy
def heatmap(
    attribution,
    ax: Axes | None = None,
    *,
    signed: bool | None = None,
    clip: float = 99.5,
    reduce: str = "sum",
    cmap: str | None = None,
    title: str | None = None,
    colorbar: bool = True,
    label: str | None = None,
) -> Figure:
    """One attribution map, coloured as the module's docstring says, with a colorbar.

    ``attribution`` is ``[H, W]``, ``[1, H, W]`` or ``[3, H, W]``; ``reduce`` says what becomes
    of three channels (``"sum"``, ``"max"`` or ``"rgb"``). ``label`` names the colorbar.
    """
    style = map_style(
        attribution, signed=signed, clip=clip, reduce=reduce, cmap=cmap, function="heatmap"
    )
    fig, ax = _axes(ax, (4.0, 3.4))
    draw_map(ax, style)
    if title is not None:
        ax.set_title(title)
    if colorbar and style.cmap is not None:
        _colorbar(fig, ax, style, label)
    return fig


@threads.under_policy
def overlay(
    image,
    attribution,
    alpha: float = 0.8,
    ax: Axes | None = None,
    *,
    signed: bool | None = None,
    clip: float = 99.5,
    reduce: str = "sum",
    cmap: str | None = None,
    title: str | None = None,
    colorbar: bool = True,
    vmax: float | None = None,
    label: str | None = None,
) -> Figure:
    """The attribution over the greyed image: each pixel's colour is the attribution's, its
    opacity ``alpha`` times :math:`|a| / v`, so pixels without attribution show the image.

    Under a signed map the image is light (zero is white in ``"RdBu_r"``), under magnitudes it
    is dark (zero is black in ``"magma"``), so a pixel without attribution never looks like a
    strong one. ``vmax`` fixes the limit v (e.g. one scale for several overlays); ``label``
    names the colorbar.
    """
    picture = _one_image(_array(image, "image", "overlay"), "overlay")
    style = map_style(
        attribution,
        signed=signed,
        clip=clip,
        reduce=reduce,
        cmap=cmap,
        function="overlay",
        vmax=vmax,
    )
    fig, ax = _axes(ax, (4.0, 3.4))
    draw_overlay(ax, picture, style, alpha, "overlay")
    if title is not None:
        ax.set_title(title)
    if colorbar:
        _colorbar(fig, ax, style, label)
    return fig


def draw_overlay(
    ax: Axes, picture: np.ndarray, style: MapStyle, alpha: float = 0.8, function: str = "overlay"
) -> None:
    """Draw ``style`` over the ``[H, W, 3]`` (or grey ``[H, W]``) picture, greyed, in ``ax``."""
    if style.cmap is None:
        raise ValueError(
            f"{function}: reduce='rgb' cannot be overlaid; use heatmap(..., reduce='rgb')."
        )
    if style.values.shape != picture.shape[:2]:
        raise ValueError(
            f"{function}: the attribution is {style.values.shape[0]} x {style.values.shape[1]} "
            f"pixels but the image {picture.shape[0]} x {picture.shape[1]}; they must match."
        )
    grey = picture @ np.array([0.299, 0.587, 0.114]) if picture.ndim == 3 else picture
    if style.signed:  # light: zero attribution reads as the white middle of the colormap
        ax.imshow(grey, cmap="gray", alpha=0.6, interpolation="nearest")
    else:  # dark: zero attribution reads as the black bottom of the colormap
        low, high = float(grey.min()), float(grey.max())
        top = low + (high - low) / DARK_IMAGE if high > low else low + 1.0
        ax.imshow(grey, cmap="gray", vmin=low, vmax=top, interpolation="nearest")
    v = max(abs(style.vmin), abs(style.vmax))
    draw_map(ax, style, alpha=alpha * np.clip(np.abs(style.values) / v, 0.0, 1.0))


@threads.under_policy
def overlay_grid(
    images,
    attributions,
    titles: Sequence[str] | None = None,
    ncols: int | None = None,
    *,
    signed: bool | None = None,
    clip: float = 99.5,
    reduce: str = "sum",
    alpha: float = 0.8,
    title: str | None = None,
    size: float = 2.0,
    scale: str = "own",
    colorbar: bool = True,
    label: str | None = None,
    max_width: float | None = MAX_WIDTH,
) -> Figure:
    """One ``overlay`` per image, ``ncols`` per row (default: one row of up to 8), ``size``
    inches wide each (less if the row would be wider than ``max_width``); ``title`` goes above
    the whole figure.

    ``attributions`` holds one map per image (``[N, H, W]`` or ``[N, C, H, W]``). With
    ``scale="own"`` each map has its own colour scale, so compare *where* they point; with
    ``scale="all"`` they share one, so their strengths compare too. ``colorbar`` adds one
    colorbar beside the last map, named ``label`` (for ``"own"``: that each map has its own
    scale). The maps count as signed when any of them has a negative value (``signed=None``),
    so all use the same colormap.
    """
    pictures = image_list(images, "overlay_grid")
    n = len(pictures)
    titles = _check_titles(titles, n, "overlay_grid")
    maps = _rows(attributions, n, "attributions", "overlay_grid")
    scale = _check_scale(scale, "overlay_grid", ("own", "all"))
    if signed is None:
        signed = reduce != "max" and any((m < 0).any() for m in maps)
    vmax = None
    if scale == "all":
        vmax = _shared_limit(maps, clip, reduce, "overlay_grid")
    lines = max(t.count("\n") + 1 for t in titles) if titles else 0  # title lines
    ncols = min(n, 8) if ncols is None else ncols
    size = _fit_width(size, min(_check_ncols(ncols, "overlay_grid"), n), max_width)
    fig, axes = _grid(n, ncols, size, "overlay_grid", height=size + 0.25 * lines)
    for k, (ax, picture, m) in enumerate(zip(axes, pictures, maps)):
        style = map_style(
            m, signed=signed, clip=clip, reduce=reduce, function="overlay_grid", vmax=vmax
        )
        draw_overlay(ax, picture, style, alpha, "overlay_grid")
        if titles is not None:
            _fit_title(ax, titles[k], width=size)
    if colorbar:
        _scale_bar(axes[-1], style, label, own=scale == "own", where="right")
    if title is not None:
        fig.suptitle(title)
    return fig


# --- feature maps and filters ---------------------------------------------------------------


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


# --- comparing methods ----------------------------------------------------------------------


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


@threads.under_policy
def compare_methods(
    images,
    attributions: Mapping[str, object],
    titles: Sequence[str] | None = None,
    *,
    signed: bool | None = None,
    clip: float = 99.5,
    reduce: str = "sum",
    size: float = 2.0,
    scale: str = "own",
    colorbar: bool = True,
    label: str | Mapping[str, str] | None = None,
    overlay: bool = False,
    alpha: float = 0.8,
    max_width: float | None = MAX_WIDTH,
) -> Figure:
    """Rows are images, columns the image and then one attribution map per method.

    ``attributions`` maps a method's name (the column's title) to its maps for all images, e.g.
    ``{"gradient": gradient(model, x), "saliency": saliency(model, x)}``; ``titles`` (one per
    image, e.g. from ``prediction_titles``) go above the images. A method counts as signed when
    any of its maps has a negative value (``signed=None``).

    ``scale`` sets the colour limits: ``"own"`` (each map its own: compare *where* each method
    points, not magnitudes), ``"column"`` (one per method, so its maps of different images
    compare) or ``"all"`` (one for every map). ``colorbar`` puts a colorbar under each column,
    named by ``label`` (one string, or one per method); with ``"own"`` the first one says
    that each map has its own scale. ``overlay=True`` draws each map over its greyed image (``overlay``).
    Cells are ``size`` inches, less if the figure would be wider than ``max_width``; long
    column titles are broken into lines.
    """
    pictures = image_list(images, "compare_methods")
    n = len(pictures)
    titles = _check_titles(titles, n, "compare_methods")
    if not isinstance(attributions, Mapping) or not attributions:
        raise TypeError(
            "compare_methods: attributions must be a non-empty dict {method name: maps}, "
            f"got {type(attributions).__name__}."
        )
    scale = _check_scale(scale, "compare_methods")
    columns = {
        str(method): _rows(maps, n, f"attributions[{method!r}]")
        for method, maps in attributions.items()
    }
    labels = _column_labels(label, list(columns), "compare_methods")
    signs = {}
    for method, maps in columns.items():
        signs[method] = signed
        if signed is None:  # magnitudes (reduce="max") are never signed
            signs[method] = reduce != "max" and any((m < 0).any() for m in maps)
    limits = dict.fromkeys(columns)  # None: each map its own limit
    if scale == "column":
        for method, maps in columns.items():
            limits[method] = _shared_limit(maps, clip, reduce, "compare_methods")
    elif scale == "all":
        every_map = [m for maps in columns.values() for m in maps]
        limits = dict.fromkeys(columns, _shared_limit(every_map, clip, reduce, "compare_methods"))
    size = _fit_width(size, 1 + len(columns), max_width, margin=0.2)  # 0.2: what sticks out
    fig, axes = subplots(
        n, 1 + len(columns), figsize=(size * (1 + len(columns)), size * n), squeeze=False
    )
    for i, picture in enumerate(pictures):
        draw_image(axes[i, 0], picture)
        _fit_title(axes[i, 0], titles[i] if titles else f"image {i}", width=size)
    for j, (method, maps) in enumerate(columns.items(), start=1):
        for i, (picture, m) in enumerate(zip(pictures, maps)):
            style = map_style(
                m,
                signed=signs[method],
                clip=clip,
                reduce=reduce,
                function="compare_methods",
                vmax=limits[method],
            )
            if style.values.shape[:2] != picture.shape[:2]:
                raise ValueError(
                    f"compare_methods: the {method!r} map of image {i} is "
                    f"{style.values.shape[:2]} pixels but the image is {picture.shape[:2]}."
                )
            if overlay:
                draw_overlay(axes[i, j], picture, style, alpha, "compare_methods")
            else:
                draw_map(axes[i, j], style)
            if i == 0:
                _fit_title(axes[i, j], method, width=size)
        if colorbar and style.cmap is not None:
            own = scale == "own"
            named = labels[method] if labels[method] is not None or j == 1 or not own else ""
            _scale_bar(axes[-1, j], style, named, own=own)  # "own": said once, under column 1
    _make_room_for_titles(fig, axes, size, bars=colorbar)
    return fig


TITLE_LINE = 0.22
"""Inches of figure height per line of an axes title (the default title size, with spacing)."""


def _make_room_for_titles(fig: Figure, axes: np.ndarray, size: float, bars: bool) -> None:
    """Make a grid ``size`` inches per row plus the height of each row's titles (and of the
    colour scales under the last row), so that wrapped titles never squeeze the maps."""
    lines = [
        max(ax.get_title().count("\n") + 1 if ax.get_title() else 0 for ax in row) for row in axes
    ]
    height = len(axes) * size + TITLE_LINE * sum(lines) + (0.45 if bars else 0.0)
    fig.set_size_inches(fig.get_figwidth(), height)


def _column_labels(label, methods: list[str], function: str) -> dict[str, str | None]:
    """The colorbar label of each method: one string for all, or a dict by method name."""
    if label is None or isinstance(label, str):
        return dict.fromkeys(methods, label)
    if not isinstance(label, Mapping):
        raise TypeError(
            f"{function}: label must be a string or a dict {{method name: label}}, "
            f"got {type(label).__name__}."
        )
    unknown = [name for name in label if str(name) not in methods]
    if unknown:
        raise ValueError(f"{function}: label names {unknown}, which are not among {methods}.")
    return {method: label.get(method) for method in methods}


def class_names_for(model_outputs: int, class_names: Sequence[str] | None = None) -> list[str]:
    """The names of the model's classes: ``class_names``, else ``data.CLASSES`` when the counts
    agree, else ``"class 0"``, ``"class 1"``, ..."""
    if class_names is not None:
        if len(class_names) != model_outputs:
            raise ValueError(
                f"class_names has {len(class_names)} names but the model has {model_outputs} "
                "classes."
            )
        return list(class_names)
    if model_outputs == len(CLASSES):
        return list(CLASSES)
    return [f"class {k}" for k in range(model_outputs)]


@threads.under_policy
def prediction_titles(
    model: torch.nn.Module,
    images,
    labels=None,
    class_names: Sequence[str] | None = None,
) -> list[str]:
    """One title per image: the predicted class and its probability P_c, and the true class
    when ``labels`` are given (on a second line), e.g. ``"circle (p = 0.98)"`` or
    ``"star (p = 0.61)\ntrue: cross"``."""
    batch, _ = as_batch(images, "prediction_titles")
    with explaining(model), torch.no_grad():
        probabilities = model(batch.to(model_device(model))).softmax(dim=-1).cpu()
    names = class_names_for(probabilities.shape[-1], class_names)
    titles = []
    for i, p in enumerate(probabilities):
        k = int(p.argmax())
        title = f"{names[k]} (p = {p[k]:.2f})"
        if labels is not None:
            title += f"\ntrue: {names[int(labels[i])]}"
        titles.append(title)
    return titles


# --- class model ascent ---------------------------------------------------------------------


def _curves(scores, labels) -> list[tuple[str | None, np.ndarray]]:
    """``scores`` as ``(label, 1-D values)`` pairs."""
    if isinstance(scores, Mapping):
        if labels is not None:
            raise ValueError("score_curve: give labels either as the dict's keys or as labels=.")
        labels, series = [str(key) for key in scores], list(scores.values())
    elif isinstance(scores, (list, tuple)) and scores and np.ndim(scores[0]) > 0:
        series = list(scores)
    else:
        array = _array(scores, "scores", "score_curve")
        if array.ndim not in (1, 2):
            raise ValueError(
                "score_curve: scores must be one curve [steps], several [K, steps], a list of "
                f"curves or a dict {{label: curve}}, got shape {tuple(array.shape)}."
            )
        series = [array] if array.ndim == 1 else list(array)
    curves = [_array(s, "scores", "score_curve").reshape(-1) for s in series]
    if labels is not None and len(labels) != len(curves):
        raise ValueError(
            f"score_curve: {len(labels)} labels for {len(curves)} curves; give one label each."
        )
    return list(zip(labels if labels is not None else [None] * len(curves), curves))


@threads.under_policy
def score_curve(
    scores,
    labels: Sequence[str] | None = None,
    ax: Axes | None = None,
    *,
    title: str | None = None,
    ylabel: str = r"class score $S_c(I)$",
    xlabel: str = "step",
) -> Figure:
    r"""The target score after each step of the class model ascent,
    :math:`\arg\max_I S_c(I) - \lambda \|I - \bar I\|_2^2` (:math:`\bar I` the mean image, mid-grey
    for ShapesNet): one curve, several (``[K, steps]``, a list), or a dict ``{label: scores}``;
    labelled curves get a legend."""
    curves = _curves(scores, labels)
    fig, ax = _axes(ax, (5.0, 3.2))
    for label, values in curves:
        ax.plot(np.arange(1, len(values) + 1), values, label=label)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    if title is not None:
        ax.set_title(title)
    if any(label is not None for label, _ in curves):
        ax.legend()
    return fig


# --- evaluating explanations -----------------------------------------------------------------

PALETTE = tuple(colour for k, colour in enumerate(plt.cm.tab10.colors) if k != 7)
"""Line colours of methods: matplotlib's tab10 without its grey (grey is for references)."""

REFERENCE_STYLES = (
    {"color": "black", "linestyle": "--", "linewidth": 2.2},
    {"color": "0.55", "linestyle": ":", "linewidth": 2.2},
    {"color": "0.3", "linestyle": "-.", "linewidth": 2.0},
)
"""Line styles of the reference curves (e.g. the ideal map, a random map), in the order given."""


def _curve_dict(curves, name: str, function: str) -> dict[str, np.ndarray]:
    """``{label: [N, steps + 1] or [steps + 1]}`` as ``{label: mean curve}``, checked."""
    if not isinstance(curves, Mapping) or not curves:
        raise TypeError(
            f"{function}: {name} must be a non-empty dict {{method name: curves [N, steps + 1]}}, "
            f"got {type(curves).__name__}."
        )
    means = {}
    for label, values in curves.items():
        array = _array(values, f"{name}[{label!r}]", function)
        if array.ndim not in (1, 2) or array.shape[-1] < 2:
            raise ValueError(
                f"{function}: {name}[{label!r}] must be curves [N, steps + 1] (one per image) or "
                f"one curve [steps + 1], with at least 2 points; got shape {tuple(array.shape)}."
            )
        if array.min() < -1e-6 or array.max() > 1 + 1e-6:
            raise ValueError(
                f"{function}: {name}[{label!r}] has values in [{array.min():.3g}, "
                f"{array.max():.3g}]; the curves must be probabilities in [0, 1], as "
                "evaluate.deletion_curve and insertion_curve give them."
            )
        means[str(label)] = array.mean(axis=0) if array.ndim == 2 else array
    return means


def _line_styles(names: list[str], references: list[str]) -> dict[str, dict]:
    """A colour for each method (in order), a ``REFERENCE_STYLES`` entry for each reference."""
    methods = [name for name in names if name not in references]
    styles = {
        name: {"color": PALETTE[k % len(PALETTE)], "linewidth": 1.6}
        for k, name in enumerate(methods)
    }
    for k, name in enumerate(references):
        styles[name] = REFERENCE_STYLES[k % len(REFERENCE_STYLES)]
    return styles


@threads.under_policy
def deletion_insertion(
    deletion: Mapping[str, object],
    insertion: Mapping[str, object],
    chance: float | None = None,
    *,
    references: Sequence[str] = (),
    ylabel: str = "mean $P_c$ of the predicted class",
    figsize: tuple[float, float] = (MAX_WIDTH, 4.0),
) -> Figure:
    r"""Deletion (left) and insertion (right) curves, each method's mean over the images
    plotted against the share of pixels removed or put back, :math:`x_k = k / \text{steps}`.

    ``deletion`` and ``insertion`` map a method's name to its curves ``[N, steps + 1]`` (as
    ``evaluate.deletion_curve`` gives them). A method has the same colour in both panels. The
    names in ``references`` (e.g. ``["mask (ideal)", "random"]``) are drawn in the
    ``REFERENCE_STYLES``, in that order: dashed black, dotted grey, ... ``chance`` (e.g.
    ``1 / number of classes``) adds a horizontal line.
    """
    panels = {
        "deletion": _curve_dict(deletion, "deletion", "deletion_insertion"),
        "insertion": _curve_dict(insertion, "insertion", "deletion_insertion"),
    }
    names = list(dict.fromkeys([*panels["deletion"], *panels["insertion"]]))
    references = [references] if isinstance(references, str) else list(references)
    unknown = [name for name in references if name not in names]
    if unknown:
        raise ValueError(
            f"deletion_insertion: references {unknown} are not among the curves; the curves are "
            f"{names}."
        )
    if chance is not None and (isinstance(chance, bool) or not 0 <= chance <= 1):
        raise ValueError(
            f"deletion_insertion: chance must be a probability in [0, 1] (e.g. 1 / number of "
            f"classes), got chance={chance!r}."
        )
    styles = _line_styles(names, references)
    fig, axes = subplots(1, 2, figsize=figsize, sharey=True)
    lines = {}
    for ax, (kind, curves) in zip(axes, panels.items()):
        for name, curve in curves.items():
            (lines[name],) = ax.plot(np.linspace(0, 1, len(curve)), curve, **styles[name])
        if chance is not None:
            ax.axhline(chance, color="0.5", linewidth=0.8)
        moved, better = ("removed", "lower") if kind == "deletion" else ("put back", "higher")
        ax.set_xlabel(f"share of pixels {moved}, most important first")
        ax.set_title(f"{kind}: {better} area is better")
        ax.set_xlim(0, 1)
        ax.grid(alpha=0.3)
    if chance is not None:
        axes[1].text(0.98, chance - 0.015, "chance", color="0.4", ha="right", va="top")
    axes[0].set_ylabel(ylabel)
    axes[0].set_ylim(0, 1.02)
    fig.legend(
        [lines[name] for name in styles], list(styles), loc="outside right center", frameon=False
    )
    return fig


def _randomization_layers(results, function: str) -> list[str]:
    """The layers that every result of the randomization test randomized (the same for all)."""
    if not isinstance(results, Mapping) or not results:
        raise TypeError(
            f"{function}: results must be a non-empty dict {{method name: the result of "
            f"evaluate.randomization_test}}, got {type(results).__name__}."
        )
    for name, result in results.items():
        if not all(hasattr(result, a) for a in ("layers", "mean", "spearman", "original")):
            raise TypeError(
                f"{function}: results[{name!r}] must be what evaluate.randomization_test returns "
                f"(a RandomizationResult), got {type(result).__name__}."
            )
    (first, result), *others = results.items()
    for name, other in others:
        if list(other.layers) != list(result.layers):
            raise ValueError(
                f"{function}: every result must randomize the same layers; {first!r} has "
                f"{list(result.layers)} but {name!r} has {list(other.layers)}."
            )
    return list(result.layers)


def _stage_axis(ax: Axes, stages: list[str]) -> None:
    """Tick labels ``stages`` at 0, 1, ..., slanted when they would crowd."""
    ax.set_xticks(range(len(stages)))
    crowded = len(stages) > 8 or max(len(stage) for stage in stages) > 8
    ax.set_xticklabels(stages, rotation=40 if crowded else 0, ha="right" if crowded else "center")


@threads.under_policy
def randomization_curves(
    results: Mapping[str, object], *, figsize: tuple[float, float] = (7.5, 4.0)
) -> Figure:
    r"""The randomization test (Adebayo et al. 2018) as one curve per method: the mean Spearman
    rank correlation :math:`\rho` of the maps with the trained model's map, first ``"trained"``
    (:math:`\rho = 1`), then after each randomized layer.

    ``results`` maps a method's name to what ``evaluate.randomization_test`` returned for it
    (anything with ``.layers``, ``.mean`` and ``.cascade``); all must randomize the same layers.
    """
    layers = _randomization_layers(results, "randomization_curves")
    stages = ["trained", *layers]
    fig, ax = subplots(figsize=figsize)
    for k, (name, result) in enumerate(results.items()):
        rho = [1.0, *result.mean]
        ax.plot(range(len(stages)), rho, marker="o", color=PALETTE[k % len(PALETTE)], label=name)
    _stage_axis(ax, stages)
    ax.axhline(0, color="0.5", linewidth=0.8)
    cascade = all(getattr(result, "cascade", True) for result in results.values())
    if cascade:
        ax.set_xlabel("layers randomized, from the logits down to ...")
    else:
        ax.set_xlabel("the one layer randomized (the others trained)")
    ax.set_ylabel("mean Spearman $\\rho$ with the trained map")
    lowest = min(min(result.mean, default=0.0) for result in results.values())
    ax.set_ylim(min(-0.1, float(lowest) - 0.05), 1.05)  # a curve below zero stays on the chart
    ax.grid(alpha=0.3)
    ax.legend(frameon=False)
    return fig


def _rho_panel(ax: Axes, m, rho: float, pixels: tuple[int, int]) -> MapStyle:
    """One importance map on its own scale, with its rank correlation written under it."""
    style = map_style(m, signed=False, function="randomization_maps")
    if style.values.shape != pixels:
        raise ValueError(
            f"randomization_maps: the maps are {style.values.shape} pixels but the image is "
            f"{pixels}; give the image that the test explained."
        )
    draw_map(ax, style)
    ax.text(0.5, -0.03, f"ρ = {rho:.2f}", transform=ax.transAxes, ha="center", va="top")
    return style


@threads.under_policy
def randomization_maps(
    results: Mapping[str, object],
    image,
    index: int,
    title: str | None = None,
    *,
    size: float = 1.6,
    max_width: float | None = MAX_WIDTH,
) -> Figure:
    r"""The maps of one image in the randomization test: rows are the methods, columns the
    image, the trained model's map, then the map after each randomized layer, with its Spearman
    :math:`\rho` (against the trained map) written under it.

    ``results`` maps a method's name to what ``evaluate.randomization_test`` returned for it;
    ``image`` is the image that stands at ``index`` in the batch the test explained. The maps
    are importance maps (:math:`\max_k |a_k|` over the colour channels k), each on its own
    scale, as the colorbar under the image says. Cells are ``size`` inches, less if the figure
    would be wider than ``max_width``.
    """
    layers = _randomization_layers(results, "randomization_maps")
    count = len(next(iter(results.values())).original)
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < count:
        raise ValueError(
            f"randomization_maps: index must be the image's position in the tested batch, an int "
            f"in 0..{count - 1}, got index={index!r}."
        )
    picture = _one_image(_array(image, "image", "randomization_maps"), "randomization_maps")
    stages = ["trained", *layers]
    size = _fit_width(size, 1 + len(stages), max_width, margin=0.3)  # 0.3: the row names
    fig, axes = subplots(
        len(results),
        1 + len(stages),
        figsize=(size * (1 + len(stages)), (size + 0.2) * len(results)),
        squeeze=False,
    )
    draw_image(axes[0, 0], picture, "image")
    for ax in axes[1:, 0]:
        ax.set_axis_off()
    for ax, stage in zip(axes[0, 1:], stages):
        ax.set_title(stage if stage == "trained" else f"… {stage}")
    for row, (name, result) in zip(axes[:, 1:], results.items()):
        maps = [result.original[index], *(m[index] for m in result.randomized)]
        rhos = [1.0, *(float(rho) for rho in result.spearman[:, index])]
        for ax, m, rho in zip(row, maps, rhos):
            style = _rho_panel(ax, m, rho, picture.shape[:2])
        row[0].text(
            -0.08, 0.5, name, transform=row[0].transAxes, rotation=90, ha="right", va="center"
        )
    if len(results) > 1:  # the empty cell under the image explains the colours
        _scale_bar(axes[1, 0], style, "each map on\nits own scale", own=True, where="inside")
    else:
        _scale_bar(axes[0, 0], style, None, own=True, where="bottom")
    if title is not None:
        fig.suptitle(title)
    return fig


# --- the lecture's ReLU tables --------------------------------------------------------------


def _table(ax: Axes, values: np.ndarray, limit: float, cmap: str) -> None:
    """A small matrix as coloured cells with its numbers written in them."""
    ax.imshow(values, cmap=cmap, vmin=-limit, vmax=limit)
    rows, cols = values.shape
    for i in range(rows):
        for j in range(cols):
            v = values[i, j]
            text = str(int(v)) if float(v).is_integer() else f"{v:.2f}"
            colour = "white" if abs(v) > 0.6 * limit else "black"
            ax.text(j, i, text, ha="center", va="center", color=colour, fontsize="large")
    ax.set_xticks(np.arange(-0.5, cols, 1), minor=True)
    ax.set_yticks(np.arange(-0.5, rows, 1), minor=True)
    ax.grid(which="minor", color="white", linewidth=2)
    ax.tick_params(which="both", length=0, labelbottom=False, labelleft=False)
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)


@threads.under_policy
def relu_tables(
    forward_input,
    grad_output,
    rule: str | Sequence[str] = "gradient",
    *,
    cmap: str = DIVERGING,
    size: float = 2.0,
    max_width: float | None = MAX_WIDTH,
) -> Figure:
    r"""The lecture's ReLU example as annotated tables: :math:`f^l` (the ReLU's input),
    :math:`f^{l+1} = \max(f^l, 0)`, :math:`R^{l+1}` (arriving from above) and
    :math:`R^l` by ``rule`` (``rules.relu_backward``); a list of rules adds one table each.
    Tables are ``size`` inches, less if the figure would be wider than ``max_width``; all share
    one colour scale, centred at zero.
    """
    rule_list = [rule] if isinstance(rule, str) else list(rule)
    f_l = _array(forward_input, "forward_input", "relu_tables")
    r_above = _array(grad_output, "grad_output", "relu_tables")
    if f_l.ndim != 2 or r_above.ndim != 2:
        raise ValueError(
            "relu_tables: forward_input and grad_output must be 2-D tables, e.g. 3 x 3, "
            f"got shapes {tuple(f_l.shape)} and {tuple(r_above.shape)}."
        )
    tables = [
        ("$f^l$\nforward input", f_l),
        ("$f^{l+1} = \\max(f^l, 0)$\nforward output", np.maximum(f_l, 0.0)),
        ("$R^{l+1}$\nfrom above", r_above),
    ]
    for name in rule_list:
        r_l = relu_backward(f_l, r_above, name)
        tables.append((f"$R^l$, {name}\n{RULE_FORMULAS[name]}", r_l))
    limit = max(float(np.abs(t).max()) for _, t in tables) or 1.0
    size = _fit_width(size, len(tables), max_width, margin=0.2)
    fig, axes = subplots(1, len(tables), figsize=(size * len(tables), size + 0.6))
    for ax, (title, values) in zip(axes, tables):
        _table(ax, values + 0.0, limit, cmap)  # + 0.0 turns -0 into 0
        ax.set_title(title, fontsize="medium" if size >= 1.8 else "small")
    return fig


# --- beyond the lecture: top patches and fooling images ----------------------------------------


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
