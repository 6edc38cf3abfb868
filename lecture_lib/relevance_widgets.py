"""The explorer of layer-wise relevance propagation (``attribution.lrp``): pick the image, the
class, the composite and its parameters, and watch the relevance map and where the score went.

Built like the explorers of ``widgets`` (an ``Explorer``: controls above one persistent figure,
redrawn in place; each setting computed once and kept in ``explorer.cache``, bounded).
"""

from __future__ import annotations

from collections.abc import Sequence

import ipywidgets as ipw
import numpy as np
from torch import nn

from . import attribution, plot, threads
from .data import to_hwc
from .picture import Cache, changing_parts, colorbar, image_and_map, show_map
from .relevance import COMPOSITES
from .widgets import (
    CACHED_RESULTS,
    PREDICTED,
    Explorer,
    _attribution_label,
    _batch,
    _image_slider,
    _scores,
    _target_dropdown,
)

EPSILONS = (1e-6, 1e-4, 1e-3, 1e-2, 0.1, 0.25, 1.0, 4.0)
GAMMAS = (0.0, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0)


@threads.under_policy
def relevance_explorer(
    model: nn.Module,
    images,
    labels=None,
    *,
    class_names: Sequence[str] | None = None,
    composite: str = "epsilon-plus-flat",
) -> Explorer:
    """LRP with a choice of ``composite`` (``relevance.COMPOSITES``), of epsilon (the epsilon
    rule's, on dense layers; every layer for ``"epsilon"``) and of gamma (the convolutions of
    ``"epsilon-gamma-box"``). The map's title gives the sum of its relevance against the score
    :math:`S_c` that was handed down: what the biases (and epsilon) took is the difference.
    """
    batch = _batch(images, "relevance_explorer")
    scores = _scores(model, batch)
    probabilities = scores.softmax(dim=-1)
    names = plot.class_names_for(probabilities.shape[-1], class_names)
    pictures = [to_hwc(image) for image in batch]
    controls = {
        "image": _image_slider(len(batch)),
        "target": _target_dropdown(names),
        "composite": ipw.Dropdown(options=list(COMPOSITES), value=composite, description="rules"),
        "epsilon": ipw.SelectionSlider(
            options=[(f"{e:g}", e) for e in EPSILONS], value=1e-6, description="epsilon"
        ),
        "gamma": ipw.SelectionSlider(
            options=[(f"{g:g}", g) for g in GAMMAS], value=0.25, description="gamma"
        ),
    }
    figure, left, right, scale = image_and_map()
    image_artist = plot.draw_image(left, pictures[0])
    map_artist = right.imshow(np.zeros((1, 1)), interpolation="nearest")
    bar = colorbar(figure, map_artist, scale)
    cache = Cache(CACHED_RESULTS)

    def adjust(values: dict) -> None:
        # only the parameters that the chosen rules use can be moved
        used = {"epsilon": values["composite"] != "zero"}
        used["gamma"] = values["composite"] == "epsilon-gamma-box"
        for name, active in used.items():
            controls[name].disabled = not active

    def draw(values: dict) -> dict:
        i, composite = values["image"], values["composite"]
        epsilon = values["epsilon"] if composite != "zero" else 0.0
        gamma = values["gamma"] if composite == "epsilon-gamma-box" else 0.0
        p = probabilities[i]
        predicted = int(p.argmax())
        c = predicted if values["target"] == PREDICTED else values["target"]
        key = (i, c, composite, epsilon, gamma)
        if key not in cache:
            relevance_map = attribution.lrp(
                model, batch[i], c, composite=composite, epsilon=epsilon, gamma=gamma
            )
            cache[key] = relevance_map.float().numpy()
        style = plot.map_style(cache[key], function="relevance_explorer")
        total, score = float(cache[key].sum()), float(scores[i, c])
        image_artist.set_data(pictures[i])
        title = f"image {i}: {names[predicted]} (p = {p[predicted]:.2f})"
        if labels is not None:
            title += f"\ntrue: {names[int(labels[i])]}"
        left.set_title(title)
        right.set_title(f"LRP {composite}, {names[c]}\nΣR = {total:.2f} of S_c = {score:.2f}")
        bar.set_label(_attribution_label(cache[key]))
        show_map(map_artist, style)
        return {
            "image": pictures[i],
            "map": style.values,
            "target": c,
            "sum": total,
            "score": score,
        }

    adjust({name: control.value for name, control in controls.items()})
    explorer = Explorer(controls, figure, draw, adjust, changing_parts(left, right, scale))
    explorer.cache = cache
    return explorer
