"""Attribution maps: how a map is coloured (``map_style``, ``MapStyle``; see the package's
docstring), one map (``heatmap``), a map over its image (``overlay``, ``overlay_grid``), and the
colour scales of a grid of maps."""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.cm import ScalarMappable
from matplotlib.figure import Figure

from .. import threads
from .figures import (
    DARK_IMAGE,
    DIVERGING,
    MAX_WIDTH,
    OWN_SCALE,
    REDUCTIONS,
    SCALES,
    SEQUENTIAL,
    _array,
    _axes,
    _check_ncols,
    _check_titles,
    _fit_title,
    _fit_width,
    _grid,
    _one_image,
    _rows,
    image_list,
)


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
