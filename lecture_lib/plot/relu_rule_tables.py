"""The lecture's tables "Difference in backpropagating through ReLU": f^l, f^{l+1}, R^{l+1}
and R^l by each rule, as coloured matrices with their numbers (``relu_tables``)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from .. import threads
from ..rules import relu_backward
from .figures import (
    DIVERGING,
    MAX_WIDTH,
    _array,
    _fit_width,
    subplots,
)

RULE_FORMULAS = {
    "gradient": r"$(f^l > 0)\, R^{l+1}$",
    "deconvnet": r"$(R^{l+1} > 0)\, R^{l+1}$",
    "guided": r"$(f^l > 0)(R^{l+1} > 0)\, R^{l+1}$",
}


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
