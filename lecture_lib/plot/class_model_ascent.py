"""Part 2, class model visualization: the target score at each step of the gradient ascent
(``score_curve``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from .. import threads
from .figures import (
    _array,
    _axes,
)


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
