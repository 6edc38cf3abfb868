"""The explorer of deletion and insertion curves (``evaluate``): pick the image, the map that
orders its pixels, a second map to compare with, the curve, the substrate and the step, and see
the image as the model sees it after that step beside the curves and their areas.

Built like the explorers of ``widgets`` (an ``Explorer``: controls above one persistent figure,
redrawn in place). Each curve is computed once per (image, map, curve, substrate), by
``evaluate.deletion_curve`` or ``evaluate.insertion_curve``, together with the images of its
steps (``evaluate.step_images``), and kept in ``explorer.cache`` (bounded); moving the step only
redraws.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import ipywidgets as widgets
import numpy as np
import torch
from torch import nn

from . import evaluate, plot, threads
from .picture import MARGIN, TITLE_ROOM, WIDTH, Cache, new_figure, place
from .widgets import CACHED_RESULTS, Explorer, _batch, _image_slider, _scores

SUBSTRATES = {"mean colour": "mean", "black": 0.0, "blur": "blur"}
"""What a removed pixel becomes (``evaluate.make_substrate``), by the name the explorer shows."""

CURVES = ("deletion", "insertion")
NONE = "none"
"""The entry of the "against" dropdown that draws no second curve."""

PANEL, BOTTOM_ROOM = 280, 52
"""The side of the image and map panels, and the room under the curve for its axis labels, in
pixels: the picture is ``TITLE_ROOM + PANEL + BOTTOM_ROOM`` = 380 pixels high."""


@dataclass
class _Curve:
    """One curve of one image: the probabilities ``[steps + 1]``, their area, and the images
    ``[steps + 1, H, W, C]`` that the model saw."""

    probabilities: np.ndarray
    area: float
    pictures: np.ndarray

    @property
    def nbytes(self) -> int:
        return self.probabilities.nbytes + self.pictures.nbytes


@threads.under_policy
def deletion_explorer(
    model: nn.Module,
    images,
    maps: Mapping[str, torch.Tensor],
    *,
    steps: int = 10,
    curve: str = "deletion",
    substrate: str = "mean colour",
    against: str | None = None,
    class_names: Sequence[str] | None = None,
) -> Explorer:
    r"""Deletion (or insertion) of each image's pixels in the order of a map, step by step.

    ``maps`` holds, by method name, one map per image (``[N, H, W]`` or ``[N, C, H, W]``, as
    the attribution functions give them); each is read as ``evaluate.importance``,
    :math:`M_{ij} = \max_k |a_{k,ij}|`. The curve is the probability
    :math:`P_c = \operatorname{softmax}(S(I))_c` of the class predicted on the whole image
    after each of ``steps`` equal chunks of pixels went to the ``substrate`` (one of
    ``SUBSTRATES``), or came back from it (``curve="insertion"``). ``against`` names a map
    whose curve is drawn dashed beside it (e.g. a random map), or None.

    The picture: the image after the chosen step, the map (bright: moved first), and both
    curves with the step marked; the titles give :math:`P_c` at the step and each area
    (``evaluate.auc``).
    """
    function = "deletion_explorer"
    batch = _batch(images, function)
    n, _, h, w = batch.shape
    if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= 100:
        raise ValueError(
            f"{function}: steps must be an int in 1..100 (the curve's chunks), got steps={steps!r}."
        )
    if curve not in CURVES:
        raise ValueError(
            f"{function}: curve must be 'deletion' or 'insertion', got curve={curve!r}."
        )
    if substrate not in SUBSTRATES:
        raise ValueError(
            f"{function}: substrate must be one of {', '.join(map(repr, SUBSTRATES))}, "
            f"got substrate={substrate!r}."
        )
    importances = _importances(maps, n, (h, w), function)
    if against is not None and against not in maps:
        raise ValueError(
            f"{function}: against must name one of the maps ({', '.join(map(repr, maps))}) or "
            f"be None, got against={against!r}."
        )
    probabilities = _scores(model, batch).softmax(dim=-1)
    names = plot.class_names_for(probabilities.shape[-1], class_names)
    controls = {
        "image": _image_slider(n),
        "method": widgets.Dropdown(options=list(maps), description="map"),
        "against": widgets.Dropdown(
            options=[NONE, *maps], value=against or NONE, description="against"
        ),
        "curve": widgets.Dropdown(options=list(CURVES), value=curve, description="curve"),
        "substrate": widgets.Dropdown(
            options=list(SUBSTRATES), value=substrate, description="substrate"
        ),
        "step": widgets.IntSlider(
            value=0, min=0, max=steps, description="step", continuous_update=True
        ),  # only redraws: fast
    }

    figure = new_figure(WIDTH, TITLE_ROOM + PANEL + BOTTOM_ROOM)
    left = place(figure, MARGIN, TITLE_ROOM, PANEL, PANEL)
    middle = place(figure, 2 * MARGIN + PANEL, TITLE_ROOM, PANEL, PANEL)
    x = 2 * MARGIN + 2 * PANEL + 74  # room for the probability's tick labels and name
    right = place(figure, x, TITLE_ROOM, WIDTH - x - 2 * MARGIN, PANEL, axis_off=False)
    image_artist = plot.draw_image(left, np.zeros((h, w, 3)))
    map_artist = middle.imshow(np.zeros((h, w)), cmap=plot.SEQUENTIAL, interpolation="nearest")
    share = np.arange(steps + 1) * (h * w) // steps / (h * w)  # of the pixels, after each step
    (line,) = right.plot(share, np.zeros(steps + 1), "o-", color="C0", markersize=3)
    (other,) = right.plot(share, np.zeros(steps + 1), "--", color="0.45")
    marker = right.axvline(0.0, color="0.3", linewidth=0.8)
    (dot,) = right.plot([0.0], [0.0], "o", color="C3", markersize=8)
    right.set_xlim(0, 1)
    right.set_ylim(0, 1.02)
    right.set_xlabel("share of the pixels moved, most important first")
    right.set_ylabel(r"$P_c$, the class predicted on the image")
    right.grid(alpha=0.3)
    cache = Cache(CACHED_RESULTS)

    def computed(i: int, method: str, kind: str, substrate: str) -> _Curve:
        key = (i, method, kind, substrate)
        if key not in cache:
            a, value = maps[method][i], SUBSTRATES[substrate]
            find = evaluate.deletion_curve if kind == "deletion" else evaluate.insertion_curve
            p = find(model, batch[i], a, steps=steps, substrate=value, progress=False)
            shown = evaluate.step_images(batch[i], a, steps, value, kind=kind)
            pictures = shown.permute(0, 2, 3, 1).float().numpy()
            cache[key] = _Curve(p.float().numpy(), evaluate.auc(p), pictures)
        return cache[key]

    def draw(values: dict) -> dict:
        i, method, kind, k = values["image"], values["method"], values["curve"], values["step"]
        substrate, versus = values["substrate"], values["against"]
        mine = computed(i, method, kind, substrate)
        theirs = computed(i, versus, kind, substrate) if versus != NONE else None
        c = int(probabilities[i].argmax())
        moved = "removed" if kind == "deletion" else "put back"
        image_artist.set_data(mine.pictures[k])
        left.set_title(
            f"image {i}, step {k} of {steps}: {share[k]:.0%} {moved}\n"
            f"P({names[c]}) = {mine.probabilities[k]:.2f}"
        )
        style = plot.map_style(importances[method][i], signed=False, function=function)
        map_artist.set_data(style.values)
        map_artist.set_clim(style.vmin, style.vmax)
        middle.set_title(f"{method}: max over RGB of |a|\nbright: {moved} first")
        line.set_ydata(mine.probabilities)
        dot.set_data([share[k]], [mine.probabilities[k]])
        marker.set_xdata([share[k], share[k]])
        arrow = "↓" if kind == "deletion" else "↑"
        title = f"{kind}, {substrate}: AUC {arrow} {mine.area:.2f}"
        other.set_visible(theirs is not None)
        if theirs is not None:
            other.set_ydata(theirs.probabilities)
            title += f"\ndashed: {versus}, AUC {theirs.area:.2f}"
        right.set_title(title)
        return {
            "image": mine.pictures[k],
            "map": style.values,
            "curve": mine.probabilities,
            "against": None if theirs is None else theirs.probabilities,
            "probability": float(mine.probabilities[k]),
            "auc": mine.area,
            "target": c,
            "step": k,
        }

    changing = [image_artist, left.title, map_artist, middle.title]
    changing += [line, other, marker, dot, right.title]
    explorer = Explorer(controls, figure, draw, changing=changing)
    explorer.cache = cache
    return explorer


def _importances(maps, n: int, size: tuple[int, int], function: str) -> dict[str, np.ndarray]:
    """Each method's maps as ``evaluate.importance`` reads them, ``[N, H, W]``, checked."""
    if not isinstance(maps, Mapping) or not maps:
        raise TypeError(
            f"{function}: maps must be a dict {{method name: maps}} with at least one entry, "
            f"e.g. {{'gradient': attribution.gradient(model, images)}}; got {type(maps).__name__}."
        )
    found = {}
    for name, m in maps.items():
        shape = tuple(getattr(m, "shape", ()))
        if len(shape) not in (3, 4) or shape[0] != n or shape[-2:] != size:
            raise ValueError(
                f"{function}: the maps of {name!r} have shape {shape}; expected one map per image, "
                f"[{n}, H, W] or [{n}, C, H, W] with H, W = {size[0]}, {size[1]}."
            )
        found[name] = evaluate.importance(m).float().cpu().numpy()
    return found
