r"""The explorer of the network that cheats (lecture part 9): pick the image, the network, the
mark (honest, lying, none: ``data.make_shortcut_shapes``) and the method, and see the map with
the class the network gives, and how much of the map lies on the mark.

Each map is read as part 9 reads it, :math:`M_{ij} = \max_k |a_{k,ij}|`
(``evaluate.importance``), and measured against the mark's place (``data.mark_mask``) and the
object's mask: the share of its mass there (``evaluate.mask_share``) and whether its strongest
pixel lies on the mark, one pixel of tolerance (``evaluate.pointing_game``).

Built like the explorers of ``widgets`` (an ``Explorer``: controls above one persistent figure,
redrawn in place; each setting computed once and kept in ``explorer.cache``, bounded).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import ipywidgets as ipw
import numpy as np
import torch
from matplotlib.patches import Rectangle
from torch import nn

from . import attribution, evaluate, perturbation, plot, threads
from .data import MARKS, make_shortcut_shapes, mark_mask, to_hwc
from .picture import Cache, changing_parts, colorbar, image_and_map, show_map
from .widgets import CACHED_RESULTS, Explorer, _image_slider, _scores

WINDOW = 4
"""Occlusion's square side and stride in pixels, as in part 9 (the mark is 3 x 3)."""


def _mean_colour(x: torch.Tensor) -> torch.Tensor:
    """The image's mean colour, ``[C, H, W]``: the baseline of part 9's methods that compare."""
    return evaluate.make_substrate(x, "mean")[0]


METHODS: dict[str, Callable] = {
    "saliency": attribution.saliency,
    "input × gradient": attribution.input_x_gradient,
    "DeconvNet": attribution.deconvnet,
    "guided backprop": attribution.guided_backprop,
    "IG (mean)": lambda model, x, c: attribution.integrated_gradients(
        model, x, c, baseline=_mean_colour(x), steps=16, progress=False
    ),
    "DeepLIFT (black)": attribution.deeplift,
    "DeepLIFT (mean)": lambda model, x, c: attribution.deeplift(
        model, x, c, baseline=_mean_colour(x)
    ),
    "occlusion": lambda model, x, c: perturbation.occlusion(
        model, x, c, window=WINDOW, stride=WINDOW, baseline=_mean_colour(x), progress=False
    ),
    "HiResCAM": lambda model, x, c: attribution.hires_cam(model, x, c, layer="conv3"),
    "SmoothGrad": lambda model, x, c: attribution.smoothgrad(
        attribution.saliency, model, x, c, samples=16, noise=0.15
    ),
}
"""Part 9's methods with its settings, as ``f(model, image, target) -> map``: integrated
gradients (16 steps) and DeepLIFT against the image's mean colour, occlusion with squares of
``WINDOW`` of the mean colour, HiResCAM at ``conv3``, SmoothGrad of saliency (16 copies, noise
15 % of the range)."""

MARK_NAMES = {"honest": "honest mark", "lying": "lying mark", "none": "no mark"}

MAX_IMAGES = 64


@threads.under_policy
def shortcut_explorer(
    networks: Mapping[str, nn.Module],
    n: int = 8,
    *,
    seed: int = 2026,
    method: str = "saliency",
    class_names: Sequence[str] | None = None,
) -> Explorer:
    """The methods on the networks of part 9, with the mark and without: choose the image (of
    ``n`` shapes of ``seed``: ``make_shortcut_shapes(n, seed=seed, marks=...)``, whose variants
    differ only in the mark's pixels), the network (a name of ``networks``, e.g. the cheating
    net and ShapesNet), the mark (``data.MARKS``: honest, lying, none) and the method
    (``METHODS``). Each map explains the class the chosen network gives the image.

    The titles give the true class, the mark's class, the network's answer and its
    probability, and the map's share on the mark (next to the mark's share of the image: what a
    map spread evenly would put there), whether its strongest pixel lies on the mark, and its
    share on the object. The dashed square is the mark's place, drawn also where there is no
    mark.
    """
    function = "shortcut_explorer"
    if not isinstance(networks, Mapping) or not networks:
        raise TypeError(
            f"{function}: networks must be a dict of names and networks, e.g. "
            "{'cheating net': load_shortcut_net(), 'ShapesNet': load_shapes_net()}; "
            f"got {type(networks).__name__}."
        )
    for name, net in networks.items():
        if not isinstance(net, nn.Module):
            raise TypeError(
                f"{function}: networks[{name!r}] must be a torch.nn.Module, got "
                f"{type(net).__name__}."
            )
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_IMAGES:
        raise ValueError(f"{function}: n must be an int in 1..{MAX_IMAGES}, got n={n!r}.")
    if method not in METHODS:
        raise ValueError(
            f"{function}: method must be one of {', '.join(map(repr, METHODS))}, "
            f"got method={method!r}."
        )
    # each variant of the shapes, and each network's answers on it, made when first shown
    shapes = {"honest": make_shortcut_shapes(n, seed=seed, marks="honest")}
    probabilities: dict[tuple[str, str], torch.Tensor] = {}

    def variant(marks: str):
        if marks not in shapes:
            shapes[marks] = make_shortcut_shapes(n, seed=seed, marks=marks)
        return shapes[marks]

    def answers(name: str, marks: str) -> torch.Tensor:
        """P_c of every class for every image ``[n, K]``, from one forward pass."""
        if (name, marks) not in probabilities:
            scores = _scores(networks[name], variant(marks).images)
            probabilities[name, marks] = scores.softmax(dim=-1)
        return probabilities[name, marks]

    honest = shapes["honest"]
    size = honest.images.shape[-1]
    place = mark_mask(size)
    names = plot.class_names_for(answers(next(iter(networks)), "honest").shape[-1], class_names)
    controls = {
        "image": _image_slider(n),
        "network": ipw.Dropdown(options=list(networks), description="network"),
        "mark": ipw.Dropdown(
            options=[(MARK_NAMES[m], m) for m in MARKS], value="honest", description="mark"
        ),
        "method": ipw.Dropdown(options=list(METHODS), value=method, description="method"),
    }
    # a picture 364 pixels high: it fits a 1280 x 720 slide with the controls above it
    figure, left, right, scale = image_and_map(image=300, box=(300, 300), gap=60)
    image_artist = plot.draw_image(left, to_hwc(honest.images[0]))
    map_artist = right.imshow(np.zeros((1, 1)), interpolation="nearest")
    colorbar(figure, map_artist, scale, "importance max_k |a_k|")
    rows, cols = np.nonzero(place.numpy())
    corner, side = (cols.min() - 1.5, rows.min() - 1.5), cols.max() - cols.min() + 3  # 1 px out
    squares = [
        Rectangle(corner, side, side, fill=False, color=colour, linestyle="--", linewidth=1.2)
        for colour in ("white", "cyan")
    ]
    left.add_patch(squares[0])
    right.add_patch(squares[1])
    cache = Cache(CACHED_RESULTS)
    even = float(place.float().mean())  # the mark's share of the image: an even map's share

    def draw(values: dict) -> dict:
        i, name, marks, how = values["image"], values["network"], values["mark"], values["method"]
        data = variant(marks)
        p = answers(name, marks)[i]
        c = int(p.argmax())
        key = (name, marks, i, how)
        if key not in cache:
            raw = METHODS[how](networks[name], data.images[i], c)
            cache[key] = evaluate.importance(raw[None].float())[0].numpy()
        importance = torch.from_numpy(cache[key])
        on_mark = float(evaluate.mask_share(importance, place))
        on_object = float(evaluate.mask_share(importance, data.masks[i]))
        peak = float(evaluate.pointing_game(importance, place, tolerance=1))
        mark_label = int(data.mark_labels[i])
        mark = f"mark: {names[mark_label]}" if mark_label >= 0 else "no mark"
        picture = to_hwc(data.images[i])
        image_artist.set_data(picture)
        left.set_title(
            f"image {i}: {names[int(honest.labels[i])]}, {mark}\n"
            f"{name}: {names[c]} (p = {p[c]:.2f})"
        )
        where = "on the mark" if peak >= 0.5 else "off the mark"
        right.set_title(
            f"{how} for {names[c]}: {on_mark:.1%} on the mark\n"
            f"(area {even:.1%}), peak {where}, {on_object:.0%} on the object"
        )
        show_map(map_artist, plot.map_style(cache[key], signed=False, function=function))
        return {
            "image": picture,
            "map": cache[key],
            "predicted": c,
            "probability": float(p[c]),
            "mark_share": on_mark,
            "object_share": on_object,
            "peak_on_mark": peak,
        }

    changing = changing_parts(left, right, scale) + squares
    explorer = Explorer(controls, figure, draw, changing=changing)
    explorer.cache = cache
    return explorer
