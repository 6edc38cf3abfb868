"""Part 6, evaluating explanations: deletion and insertion curves (``deletion_insertion``) and
the randomization test, as curves of the rank correlation (``randomization_curves``) and as
maps (``randomization_maps``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from .. import threads
from .attribution_maps import MapStyle, _scale_bar, draw_map, map_style
from .figures import (
    MAX_WIDTH,
    _array,
    _fit_width,
    _one_image,
    draw_image,
    subplots,
)

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
