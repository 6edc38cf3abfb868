r"""The explorer of adversarial examples (``fooling``): pick the image, the class to fool the
network into, the attack and its size, and see the original, the change :math:`\delta`
(amplified, with its scale), the changed image with the class the network now gives it, and
what the Taylor expansion predicted: the margin :math:`m_0 + g^T \delta` against the network's.

Built like the explorers of ``widgets`` (an ``Explorer``: controls above one persistent figure,
redrawn in place; each setting computed once and kept in ``explorer.cache``, bounded).
"""

from __future__ import annotations

from collections.abc import Sequence

import ipywidgets as ipw
import matplotlib.cm
import numpy as np
import torch
from torch import nn

from . import fooling, plot, threads
from .data import to_hwc
from .picture import MARGIN, SCALE_ROOM, TITLE_ROOM, WIDTH, Cache, colorbar, new_figure, place
from .widgets import CACHED_RESULTS, Explorer, _batch, _image_slider, _scores

ATTACKS = ("signed step", "gradient steps")
r"""``"signed step"``: :math:`I_0 + \varepsilon \operatorname{sign}(g)`
(``fooling.fast_gradient_sign``); ``"gradient steps"``: steps of length 0.1 along
:math:`w_t / \|w_t\|_2` until the network agrees, at most ``steps`` (``fooling.fooling_image``)."""

GREY_LEVELS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64)
r"""The epsilons the explorer offers, in grey levels of an 8-bit image (:math:`\varepsilon =`
levels / 255)."""

MAX_STEPS = 100
"""The most gradient steps the explorer offers (``fooling_image``'s default)."""

RUNNER_UP = -1
"""The value of the target dropdown's "runner-up" entry: the class with the second-highest
score, the closest other class."""

PANEL = 256
"""Side of each of the three pictures in pixels (4 screen pixels per pixel of a 64 x 64 image)."""


@threads.under_policy
def fooling_explorer(
    model: nn.Module,
    images,
    *,
    class_names: Sequence[str] | None = None,
    attack: str = "signed step",
    grey_levels: int = 8,
    steps: int = 20,
) -> Explorer:
    r"""Fool the network, one image at a time: choose the image, the target class (the
    runner-up, or any class but the predicted one), the attack (``ATTACKS``) and its size, the
    signed step's :math:`\varepsilon` in grey levels (``GREY_LEVELS``) or the most gradient
    steps.

    The picture: the original with its class and probability, the change
    :math:`\delta = I - I_0` drawn as :math:`0.5 + a\,\delta` (grey: no change; the scale gives
    :math:`\delta` per colour channel), and the changed image with the class the network now
    gives it and its probability. The line below compares the margin :math:`S_t - S_c` before,
    as the Taylor expansion predicts it after (:math:`m_0 + g^T \delta`,
    ``fooling.TaylorEstimate.predicted_margin``), and as the network gives it.
    """
    function = "fooling_explorer"
    batch = _batch(images, function)
    if attack not in ATTACKS:
        raise ValueError(f"{function}: attack must be one of {ATTACKS}, got attack={attack!r}.")
    if grey_levels not in GREY_LEVELS or isinstance(grey_levels, bool):
        raise ValueError(
            f"{function}: grey_levels must be one of {GREY_LEVELS} (epsilon = grey_levels / 255), "
            f"got grey_levels={grey_levels!r}."
        )
    if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= MAX_STEPS:
        raise ValueError(
            f"{function}: steps must be an int in 1..{MAX_STEPS}, got steps={steps!r}."
        )
    scores = _scores(model, batch)
    probabilities = scores.softmax(dim=-1)
    names = plot.class_names_for(probabilities.shape[-1], class_names)
    if len(names) < 2:
        raise ValueError(f"{function}: fooling needs a model of at least two classes.")
    pictures = [to_hwc(image) for image in batch]
    targets = [("runner-up", RUNNER_UP)] + [(name, k) for k, name in enumerate(names)]
    controls = {
        "image": _image_slider(len(batch)),
        "attack": ipw.Dropdown(options=list(ATTACKS), value=attack, description="attack"),
        "epsilon": ipw.SelectionSlider(
            options=[(f"{g}/255", g) for g in GREY_LEVELS], value=grey_levels, description="ε"
        ),
        "steps": ipw.IntSlider(
            value=steps, min=1, max=MAX_STEPS, description="max steps", continuous_update=False
        ),
        "target": ipw.Dropdown(options=targets, value=RUNNER_UP, description="fool into"),
    }
    figure, panels, scale, line = _figure()
    original, change, changed = panels
    original_artist = plot.draw_image(original, pictures[0])
    change_artist = plot.draw_image(change, np.full_like(pictures[0], 0.5))
    changed_artist = plot.draw_image(changed, pictures[0])
    shades = matplotlib.cm.ScalarMappable(cmap="gray")  # what a grey level of one channel means
    shades.set_clim(-1, 1)
    colorbar(figure, shades, scale, "δ of a colour channel")
    cache = Cache(CACHED_RESULTS, size=_nbytes)
    fooled_at: dict[tuple[int, int], int] = {}  # gradient steps that stopped early: fooled

    def adjust(values: dict) -> None:
        controls["epsilon"].disabled = values["attack"] != "signed step"
        controls["steps"].disabled = values["attack"] != "gradient steps"

    def target_of(i: int, choice: int) -> tuple[int, int]:
        """The predicted class c of image i and the class t to fool it into."""
        ranked = scores[i].argsort(descending=True)
        c = int(ranked[0])
        t = int(ranked[1]) if choice == RUNNER_UP else choice
        if t == c:
            raise ValueError(
                f"image {i} is already classified as {names[c]!r}; choose another class to fool "
                "it into (or 'runner-up', the closest other class)."
            )
        return c, t

    def attempt(i: int, t: int, attack: str, size: int) -> dict:
        """The fooling attempt and what the network says of it, computed once."""
        if attack == "gradient steps" and fooled_at.get((i, t), MAX_STEPS + 1) <= size:
            size = fooled_at[i, t]  # a longer run would stop at the same step
        key = (i, t, attack, size)
        if key not in cache:
            if attack == "signed step":
                result = fooling.fast_gradient_sign(model, batch[i], t, size * fooling.GREY_LEVEL)
            else:
                result = fooling.fooling_image(model, batch[i], t, max_steps=size)
                taken = int(result.steps)
                if bool(result.fooled) and taken < size:
                    fooled_at[i, t] = taken
                    key = (i, t, attack, taken)
            after = _scores(model, result.image[None])[0]
            cache[key] = {
                "image": result.image.numpy(),
                "change": result.change.numpy(),
                "scores": after.numpy(),
                "steps": int(result.steps),
                "linf": float(result.linf),
                "l2": float(result.l2),
            }
        return cache[key]

    def taylor(i: int, t: int) -> fooling.TaylorEstimate:
        if (i, t, "taylor") not in cache:
            cache[i, t, "taylor"] = fooling.taylor_estimate(model, batch[i], t)
        return cache[i, t, "taylor"]

    def draw(values: dict) -> dict:
        i, attack = values["image"], values["attack"]
        c, t = target_of(i, values["target"])
        size = values["epsilon"] if attack == "signed step" else values["steps"]
        result = attempt(i, t, attack, size)
        estimate = taylor(i, t)
        after = torch.from_numpy(result["scores"])
        p_after = after.softmax(dim=-1)
        k = int(after.argmax())
        margin_after = float(after[t] - after[c])
        predicted = float(estimate.predicted_margin(torch.from_numpy(result["change"])))
        largest = max(result["linf"], 1e-12)
        amplify = 0.5 / largest
        p = probabilities[i]
        original_artist.set_data(pictures[i])
        original.set_title(f"image {i}: {names[c]} (p = {p[c]:.2f})\nfool into: {names[t]}")
        change_artist.set_data(np.clip(0.5 + amplify * to_hwc(result["change"]), 0, 1))
        shades.set_clim(-largest, largest)
        if attack == "signed step":
            how = f"δ = ε sign(g), ε = {size}/255"
        else:
            how = f"{result['steps']} gradient step{'s' if result['steps'] != 1 else ''} of 0.1"
        change.set_title(f"{how}\nshown as 0.5 + {amplify:.3g} δ")
        changed_artist.set_data(to_hwc(result["image"]))
        verdict = "fooled" if k == t else "not fooled"
        changed.set_title(f"now: {names[k]} (p = {p_after[k]:.2f})\n{verdict}")
        line.set_text(
            f"margin S_t - S_c: before {float(estimate.margin):.2f}, after: Taylor m0 + gᵀδ "
            f"{predicted:.2f}, network {margin_after:.2f}   (||δ||_2 = {result['l2']:.2f})"
        )
        return {
            "image": pictures[i],
            "change": result["change"],
            "perturbed": result["image"],
            "source": c,
            "target": t,
            "predicted": k,
            "probability": float(p_after[k]),
            "fooled": k == t,
            "steps": result["steps"],
            "margin": float(estimate.margin),
            "taylor_margin": predicted,
            "margin_after": margin_after,
            "amplification": amplify,
        }

    changing = [original_artist, original.title, change_artist, change.title, scale]
    changing += [changed_artist, changed.title, line]
    adjust({name: control.value for name, control in controls.items()})
    explorer = Explorer(controls, figure, draw, adjust, changing)
    explorer.cache = cache
    return explorer


def _figure():
    """Three pictures side by side (original, change with its colour scale, changed image) and
    a line of text under them: ``TITLE_ROOM + PANEL + 40 + MARGIN`` = 360 pixels high."""
    figure = new_figure(WIDTH, TITLE_ROOM + PANEL + 40 + MARGIN)
    original = place(figure, MARGIN, TITLE_ROOM, PANEL, PANEL)
    x = MARGIN + PANEL + 28
    change = place(figure, x, TITLE_ROOM, PANEL, PANEL)
    scale = place(figure, x + PANEL + 10, TITLE_ROOM, 14, PANEL, axis_off=False)
    x += PANEL + 10 + 14 + SCALE_ROOM
    changed = place(figure, x, TITLE_ROOM, PANEL, PANEL)
    assert x + PANEL + MARGIN <= WIDTH, "three pictures and a colour scale need the room"
    line = figure.text(MARGIN / WIDTH, 14 / figure.bbox.height, "", fontsize=10.5)
    return figure, (original, change, changed), scale, line


def _nbytes(value) -> int:
    """What a cached result holds: arrays (an attempt) or tensors (a Taylor estimate)."""
    if isinstance(value, fooling.TaylorEstimate):
        return 4 * value.gradient.nelement()
    return sum(getattr(v, "nbytes", 0) for v in value.values())
