"""Methods side by side: one row per image, one column per method (``compare_methods``), and
titles that give the model's prediction (``prediction_titles``, ``class_names_for``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from matplotlib.figure import Figure

from .. import threads
from ..data import CLASSES
from ..targets import as_batch, explaining, model_device
from .attribution_maps import (
    _check_scale,
    _scale_bar,
    _shared_limit,
    draw_map,
    draw_overlay,
    map_style,
)
from .figures import (
    MAX_WIDTH,
    _check_titles,
    _fit_title,
    _fit_width,
    _rows,
    draw_image,
    image_list,
    subplots,
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
