"""Interactive explorers for teaching live (ipywidgets 8, JupyterLab 4).

Each function returns an ``Explorer``: controls above a picture, redrawn whenever a control
changes. Show it by making it the last line of a cell. Everything is reachable from code too,
which is how the tests drive it without a browser::

    explorer = feature_map_browser(model, images)
    explorer.controls["channel"].value = 3   # redraws at once
    explorer.shown["map"]                     # the array now on screen
    explorer.figure                           # the matplotlib Figure behind the picture

Why it answers at once (within 100 ms on a 2-core laptop, ``benchmarks/bench_widgets.py``):

- *compute only what changed*: a new image runs the method on that image only; a result is
  kept in a small bounded cache (``picture.Cache``), so going back to an image or a method
  seen before computes nothing; occlusion reuses one incremental plan per window and stride
  (``lecture_lib.incremental``);
- *redraw without rebuilding*: an update changes the data, limits and titles of the artists of
  one persistent figure, and ``picture.Picture`` draws only those on top of the figure's fixed
  parts, drawn once, and encodes one PNG at the size shown;
- *coarse first*: integrated gradients first shows a map of ``COARSE_STEPS`` steps, then
  refines it to ``IG_STEPS`` steps (the title and the line under the picture say
  "refining…" meanwhile); ``class_model_explorer`` shows its ascent as it goes.

The figures are never registered with pyplot, so no figure is left open.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable, Iterator, MutableMapping, Sequence
from contextlib import contextmanager

import ipywidgets as widgets
import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from torch import nn

from . import activations, attribution, class_model, incremental, perturbation, plot, threads
from .data import to_hwc
from .picture import (  # DPI and WIDTH: public names of this module too
    DPI,  # noqa: F401
    MARGIN,
    TITLE_ROOM,
    WIDTH,
    Cache,
    Picture,
    changing_parts,
    colorbar,
    fit_height,
    image_and_map,
    new_figure,
    place,
    show_array,
    show_map,
)
from .targets import as_batch, explaining, model_device

IG_STEPS = 16
"""Integration steps of integrated gradients in ``method_explorer`` (the library's default is
50). On ShapesNet its maps correlate above 0.999 with those of 200 steps, and the completeness
gap stays below 2% of the score, at a third of the cost of 50 steps."""

METHODS: dict[str, Callable] = {
    "gradient": attribution.gradient,
    "saliency": attribution.saliency,
    "input x gradient": attribution.input_x_gradient,
    "deconvnet": attribution.deconvnet,
    "guided backprop": attribution.guided_backprop,
    f"integrated gradients ({IG_STEPS} steps)": lambda model, x, target: (
        attribution.integrated_gradients(model, x, target, steps=IG_STEPS, progress=False)
    ),
    "deeplift": attribution.deeplift,
}
"""The methods of ``method_explorer``: ``f(model, image, target) -> map``."""

COARSE_STEPS = 4
COARSE: dict[str, Callable] = {
    f"integrated gradients ({IG_STEPS} steps)": lambda model, x, target: (
        attribution.integrated_gradients(model, x, target, steps=COARSE_STEPS, progress=False)
    ),
}
"""Methods of ``METHODS`` that take several times one gradient, with a cheaper version of
each: ``method_explorer`` shows the cheap map at once ("refining…"), then the method's own."""

CACHED_RESULTS = 128
"""The most results (maps, ascents) an explorer keeps; ``picture.Cache`` also keeps them under
64 MiB, so ImageNet-sized maps are forgotten sooner."""

MAX_STEPS = 300
"""The most ascent steps ``class_model_explorer`` offers."""

SNAPSHOT_EVERY = 10
"""``class_model_explorer`` keeps the image after every this many steps of an ascent (the steps
slider's step), so fewer steps of a setting already run need no new ascent."""

FIRST_FRAME_S = 0.01
REFRESH_S = 0.3
"""A new ascent of ``class_model_explorer`` is on screen after ``FIRST_FRAME_S`` seconds of
computing (the steps so far, titled "step k of n…"), then every ``REFRESH_S`` seconds (or
twice as long as a frame takes to draw, if that is longer), until the last step's picture
replaces it."""

PREDICTED = -1
"""The value of the target dropdown's "predicted class" entry."""


class Explorer(widgets.VBox):
    """Controls above a picture that is redrawn whenever a control changes.

    Built from ``controls`` (name -> widget), the ``figure``, ``draw(values) -> shown``, which
    updates the figure's artists in place for the controls' ``values`` (``set_data``,
    ``set_clim``, titles' text), and the artists it changes (``changing``, see
    ``picture.Picture``). ``adjust(values)`` runs first and may change other controls (a
    slider's range) without extra redraws.

    Attributes:
        controls: the control widgets by name, e.g. ``controls["layer"]``.
        figure: the matplotlib Figure that ``draw`` updates in place (the same for every update).
        picture: the ``picture.Picture`` that renders it; ``image`` its ``ipywidgets.Image``,
            whose ``value`` is the PNG on screen (CSS class ``picture.PICTURE_CLASS``).
        status: a line under the picture: "refining…" while a coarse result is on screen.
        output: an ``Output`` widget that shows the message of a failed update.
        shown: what is on screen now, as arrays and numbers (``draw``'s return value).
        cache: results already computed, reused by later updates (bounded: ``picture.Cache``).
        error: the message of the last failed update, shown in place of the picture (None).
        updates: how many times the picture was drawn for new control values.
    """

    def __init__(
        self,
        controls: dict[str, widgets.ValueWidget],
        figure: Figure,
        draw: Callable[[dict], dict],
        adjust: Callable[[dict], None] | None = None,
        changing: Sequence = (),
    ) -> None:
        self.controls = controls
        self.figure = figure
        self.picture = Picture(figure, changing)
        self.image = self.picture.widget
        self.status = widgets.Label(value="")
        self.status.add_class("lecture-explorer-status")
        self.output = widgets.Output()
        self.shown: dict = {}
        self.cache: MutableMapping = {}
        self.error: str | None = None
        self.updates = 0
        self._draw, self._adjust, self._held = draw, adjust, False
        bar = widgets.HBox(list(controls.values()), layout=widgets.Layout(flex_flow="row wrap"))
        super().__init__(children=[bar, self.image, self.status, self.output])
        self.add_class("lecture-explorer")
        self.update(raise_errors=True)
        for control in controls.values():
            control.observe(self._changed, names="value")

    def _repr_mimebundle_(self, **kwargs) -> dict:
        """The live widget; for where no live widget can show (a stored notebook opened before
        it runs, slides, a web page of the notebook) the picture now on screen as a PNG and one
        short line of text, instead of the widget's long ``repr``."""
        bundle = super()._repr_mimebundle_(**kwargs)
        bundle["text/plain"] = f"{type(self).__name__} ({', '.join(self.controls)})"
        if self.error is None and self.image.value:
            bundle["image/png"] = base64.b64encode(self.image.value).decode("ascii")
        return bundle

    def values(self) -> dict:
        """The controls' current values by name."""
        return {name: control.value for name, control in self.controls.items()}

    def show(self, status: str = "") -> None:
        """Send the figure as its artists are now (a frame of work still going on says so in
        ``status``)."""
        self.status.value = status
        self.picture.show()

    @threads.under_policy
    def update(self, raise_errors: bool = False) -> None:
        """Draw the picture for the controls' current values and send it (computing with the
        threads that other programs leave free, ``lecture_lib.threads``)."""
        try:
            self.shown = self._draw(self.values())
        except Exception as error:
            if raise_errors:
                raise
            self.error = f"{type(error).__name__}: {error}"
            self.output.outputs = (
                {"output_type": "stream", "name": "stderr", "text": self.error + "\n"},
            )
            self.image.layout.display = "none"
            self.status.value = ""
            return
        if self.error is not None:
            self.error, self.output.outputs, self.image.layout.display = None, (), None
        self.show()
        self.updates += 1

    @contextmanager
    def hold(self) -> Iterator[Explorer]:
        """Change several controls inside ``with explorer.hold():``, then draw once."""
        held, self._held = self._held, True
        try:
            yield self
        finally:
            self._held = held
        if not held:
            self._refresh()

    def _changed(self, change: dict) -> None:
        if not self._held:
            self._refresh()

    def _refresh(self) -> None:
        """Adjust the dependent controls (without redrawing for each), then draw once."""
        if self._adjust is not None:
            self._held = True
            try:
                self._adjust(self.values())
            finally:
                self._held = False
        self.update()


# --- shared pieces --------------------------------------------------------------------------


def _batch(images, function: str) -> torch.Tensor:
    """The images as a CPU batch ``[N, C, H, W]``."""
    batch, _ = as_batch(images, function)
    if batch.ndim != 4:
        raise ValueError(
            f"{function}: images must be a batch [N, C, H, W] or one image [C, H, W], "
            f"got shape {tuple(images.shape)}."
        )
    return batch.detach().cpu()


def _image_slider(n: int, continuous_update: bool = False) -> widgets.IntSlider:
    """Picks one of ``n`` images; ``continuous_update``: redraw while it is being dragged."""
    return widgets.IntSlider(
        value=0,
        min=0,
        max=n - 1,
        description="image",
        disabled=n == 1,
        continuous_update=continuous_update,
    )


def _target_dropdown(names: Sequence[str]) -> widgets.Dropdown:
    options = [("predicted class", PREDICTED)] + [(name, k) for k, name in enumerate(names)]
    return widgets.Dropdown(options=options, value=PREDICTED, description="target")


def _scores(model: nn.Module, batch: torch.Tensor) -> torch.Tensor:
    """The class scores S_c of every image ``[N, K]`` (their softmax: the posteriors P_c), from
    one forward pass."""
    with explaining(model), torch.no_grad():
        return model(batch.to(model_device(model))).cpu()


def _attribution_label(attribution: np.ndarray) -> str:
    """What the method explorer's colour scale measures: a map ``[3, H, W]`` is summed over the
    colour channels before it is drawn (``plot.map_style``)."""
    return "attribution, summed over RGB" if attribution.ndim == 3 else "attribution"


# --- Part 1: feature maps -------------------------------------------------------------------


@threads.under_policy
def feature_map_browser(
    model: nn.Module, images, layers: str | list[str] | None = None, *, ncols: int = 8
) -> Explorer:
    """Browse the feature maps of ``images``: choose the image, the layer, and one channel or
    all of them (``ncols`` per row). ``layers=None`` offers every ReLU layer.

    The maps of every image and layer come from one forward pass when the browser is built
    (``activations.feature_maps``); an update only draws. ``explorer.cache`` holds them.
    """
    batch = _batch(images, "feature_map_browser")
    maps = activations.feature_maps(model, batch, layers)
    maps = {name: m.float().numpy() for name, m in maps.items() if m.ndim == 4}
    if not maps:
        raise ValueError(
            "feature_map_browser: none of the chosen layers gives feature maps [N, C, h, w]; "
            "choose convolution, ReLU or pooling layers, e.g. layers=['conv1', 'relu2']."
        )
    pictures = [to_hwc(image) for image in batch]
    first = next(iter(maps))
    controls = {
        "image": _image_slider(len(batch), continuous_update=True),  # only draws: fast
        "layer": widgets.Dropdown(options=list(maps), value=first, description="layer"),
        "channel": widgets.IntSlider(
            value=0, min=0, max=maps[first].shape[1] - 1, description="channel"
        ),
        "view": widgets.ToggleButtons(options=["one channel", "all channels"]),
    }
    # the map's box is the larger: a layer of 64 maps shows each at about 55 x 55 pixels
    figure, left, right, scale = image_and_map(image=300, box=(486, 460), gap=40)
    image_artist = plot.draw_image(left, pictures[0])
    map_artist = right.imshow(np.zeros((1, 1)), cmap="viridis", interpolation="nearest")
    colorbar(figure, map_artist, scale, "activation")
    full_scale = scale.get_position()

    def adjust(values: dict) -> None:
        channel = controls["channel"]
        channel.max = maps[values["layer"]].shape[1] - 1  # ipywidgets clamps the value
        channel.disabled = values["view"] == "all channels"

    def draw(values: dict) -> dict:
        i, layer, c = values["image"], values["layer"], values["channel"]
        layer_maps = maps[layer][i]
        image_artist.set_data(pictures[i])
        left.set_title(f"image {i}")
        if values["view"] == "one channel":
            shown = layer_maps[c]
            right.set_title(f"{layer}, channel {c} of {len(layer_maps)}")
        else:
            shown = plot.mosaic(layer_maps, ncols)
            right.set_title(f"{layer}: all {len(layer_maps)} channels")
        show_array(map_artist, shown)
        map_artist.set_clim(np.nanmin(shown), np.nanmax(shown))
        fit_height(scale, full_scale, min(1.0, 486 / 460 * shown.shape[0] / shown.shape[1]))
        return {"image": pictures[i], "map": shown, "layer": layer, "channel": c}

    explorer = Explorer(controls, figure, draw, adjust, changing_parts(left, right, scale))
    explorer.cache = maps
    return explorer


# --- Part 2: attribution methods ------------------------------------------------------------


@threads.under_policy
def method_explorer(
    model: nn.Module,
    images,
    labels=None,
    *,
    class_names: Sequence[str] | None = None,
) -> Explorer:
    """Compare the attribution methods: choose the image, the class to explain ("predicted
    class" or any class) and the method (``METHODS``). The titles give the predicted class,
    its probability P_c, and the explained class with its probability.

    Each (image, class, method) is computed the first time it is shown, for that image alone,
    and kept (``explorer.cache``, the ``CACHED_RESULTS`` most recent). A method of ``COARSE``
    shows its cheap version first, titled "refining…", then its own map.
    """
    batch = _batch(images, "method_explorer")
    probabilities = _scores(model, batch).softmax(dim=-1)
    names = plot.class_names_for(probabilities.shape[-1], class_names)
    pictures = [to_hwc(image) for image in batch]
    controls = {
        "image": _image_slider(len(batch)),
        "target": _target_dropdown(names),
        "method": widgets.Dropdown(options=list(METHODS), description="method"),
    }
    figure, left, right, scale = image_and_map()
    image_artist = plot.draw_image(left, pictures[0])
    map_artist = right.imshow(np.zeros((1, 1)), interpolation="nearest")
    bar = colorbar(figure, map_artist, scale)
    cache = Cache(CACHED_RESULTS)
    built: dict = {}  # the explorer, once built: a coarse map goes to its picture at once

    def paint(i: int, c: int, method: str, attribution: np.ndarray, note: str = "") -> dict:
        p = probabilities[i]
        predicted = int(p.argmax())
        style = plot.map_style(attribution, function="method_explorer")
        image_artist.set_data(pictures[i])
        title = f"image {i}: {names[predicted]} (p = {p[predicted]:.2f})"
        if labels is not None:
            title += f"\ntrue: {names[int(labels[i])]}"
        left.set_title(title)
        right.set_title(f"{method} for {names[c]}{note}\n(p = {p[c]:.2f})")
        bar.set_label(_attribution_label(attribution))
        show_map(map_artist, style)
        return {"image": pictures[i], "map": style.values, "target": c, "method": method}

    def draw(values: dict) -> dict:
        i, method = values["image"], values["method"]
        predicted = int(probabilities[i].argmax())
        c = predicted if values["target"] == PREDICTED else values["target"]
        if (i, c, method) not in cache:
            if method in COARSE and "explorer" in built:
                coarse = COARSE[method](model, batch[i], c).float().numpy()
                paint(i, c, method, coarse, note=f" ({COARSE_STEPS} steps, refining…)")
                built["explorer"].show(status=f"refining {method}…")
            cache[i, c, method] = METHODS[method](model, batch[i], c).float().numpy()
        return paint(i, c, method, cache[i, c, method])

    explorer = Explorer(controls, figure, draw, changing=changing_parts(left, right, scale))
    explorer.cache = cache
    built["explorer"] = explorer
    return explorer


@threads.under_policy
def occlusion_explorer(
    model: nn.Module,
    images,
    *,
    window: int = 16,
    stride: int = 8,
    min_stride: int = 4,
    baseline: float = 0.0,
    class_names: Sequence[str] | None = None,
) -> Explorer:
    """Occlusion (``perturbation.occlusion``) with sliders for the window's side and the stride
    (at most the window, and at least ``min_stride``: smaller strides mean many more forward
    passes). The dashed square on the image shows the window's size.

    Each (image, class, window, stride) is computed the first time it is shown, for that image
    alone, and kept (``explorer.cache``, the ``CACHED_RESULTS`` most recent). The region
    arithmetic of incremental occlusion (``perturbation.occlusion_plan``) is made once per
    window and stride and reused for every image and class.
    """
    batch = _batch(images, "occlusion_explorer")
    side = min(batch.shape[-2:])
    if not 1 <= min_stride <= stride <= window <= side:
        raise ValueError(
            f"occlusion_explorer: need 1 <= min_stride <= stride <= window <= {side} (the "
            f"image's side), got min_stride={min_stride}, stride={stride}, window={window}."
        )
    scores = _scores(model, batch)
    probabilities = scores.softmax(dim=-1)
    names = plot.class_names_for(probabilities.shape[-1], class_names)
    pictures = [to_hwc(image) for image in batch]
    controls = {
        "image": _image_slider(len(batch)),
        "target": _target_dropdown(names),
        "window": widgets.IntSlider(
            value=window, min=min_stride, max=side, description="window", continuous_update=False
        ),
        "stride": widgets.IntSlider(
            value=stride, min=min_stride, max=window, description="stride", continuous_update=False
        ),
    }
    figure, left, right, scale = image_and_map()
    image_artist = plot.draw_image(left, pictures[0])
    square = Rectangle((-0.5, -0.5), window, window, fill=False, color="white", linestyle="--")
    left.add_patch(square)
    map_artist = right.imshow(np.zeros((1, 1)), interpolation="nearest")
    colorbar(figure, map_artist, scale, "mean drop of the score")
    cache = Cache(CACHED_RESULTS)
    plans = Cache(8)  # (window, stride) -> the region arithmetic, with its gather indices

    def occlusion_map(i: int, c: int, w: int, s: int) -> np.ndarray:
        """The occlusion map of image i for class c: f(x) - f(x without window), spread."""
        if (w, s) not in plans:
            plans[w, s] = perturbation.occlusion_plan(model, batch[i], c, window=w, stride=s)
        plan = plans[w, s]
        if not plan.incremental:
            occluded = perturbation.occlusion(
                model, batch[i], c, window=w, stride=s, baseline=baseline, progress=False
            )
            return occluded.float().numpy()
        image = batch[i].to(model_device(model))
        with explaining(model), torch.no_grad():
            f_occluded = incremental.occluded_scores(
                plan, image, torch.full_like(image, baseline), c
            )
        drops = (scores[i, c] - f_occluded.cpu()).view(1, len(plan.rows), len(plan.cols))
        return perturbation.spread_drops(drops, plan, *batch.shape[-2:])[0].float().numpy()

    def adjust(values: dict) -> None:
        controls["stride"].max = values["window"]  # occlusion needs stride <= window

    def draw(values: dict) -> dict:
        i, w, s = values["image"], values["window"], values["stride"]
        p = probabilities[i]
        c = int(p.argmax()) if values["target"] == PREDICTED else values["target"]
        if (i, c, w, s) not in cache:
            cache[i, c, w, s] = occlusion_map(i, c, w, s)
        style = plot.map_style(cache[i, c, w, s], signed=True, function="occlusion_explorer")
        image_artist.set_data(pictures[i])
        square.set_width(w)
        square.set_height(w)
        left.set_title(f"image {i}: {names[int(p.argmax())]} (p = {p.max():.2f})")
        right.set_title(f"occlusion {w} x {w}, stride {s}\nscore of {names[c]}")
        show_map(map_artist, style)
        return {"image": pictures[i], "map": style.values, "target": c, "window": w, "stride": s}

    changing = changing_parts(left, right, scale) + [square]
    explorer = Explorer(controls, figure, draw, adjust, changing)
    explorer.cache = cache
    return explorer


@threads.under_policy
def class_model_explorer(
    model: nn.Module,
    *,
    steps: int = 100,
    l2: float = 1e-3,
    objective: str = "score",
    class_names: Sequence[str] | None = None,
    size: int = 64,
) -> Explorer:
    r"""The class model :math:`\arg\max_I S_c(I) - \lambda \|I\|_2^2` (``class_model.visualize``):
    choose the class, :math:`\lambda` (``l2``, a log slider), the number of steps and the
    objective (the score :math:`S_c`, or the posterior; ``class_model.OBJECTIVES``); shows the
    optimized image (as it is, not contrast-stretched, so a larger :math:`\lambda` shows as a
    greyer image) and its score :math:`S_c` after each step.

    A new setting runs the ascent (``steps`` forward and backward passes, longer than the other
    explorers' updates) and shows it as it goes: the steps computed so far after
    ``FIRST_FRAME_S`` seconds, titled "step k of n…", again every ``REFRESH_S`` seconds, and
    the last step's picture when it is done, which is ``class_model.visualize``'s result. Each
    (class, lambda, objective) keeps its images every ``SNAPSHOT_EVERY`` steps
    (``explorer.cache``), so fewer steps of a setting already run are drawn at once, and more
    steps start from the longest run kept on screen.
    """
    if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= MAX_STEPS:
        raise ValueError(
            f"class_model_explorer: steps must be an int in 1..{MAX_STEPS}, got steps={steps!r}."
        )
    if not isinstance(l2, (int, float)) or not 1e-6 <= l2 <= 1:
        raise ValueError(
            f"class_model_explorer: l2 must lie in [1e-6, 1] (the slider's range), got l2={l2!r}."
        )
    if objective not in class_model.OBJECTIVES:
        raise ValueError(
            f"class_model_explorer: objective must be one of {class_model.OBJECTIVES}, "
            f"got objective={objective!r}."
        )
    with explaining(model), torch.no_grad():
        outputs = model(torch.full((1, 3, size, size), 0.5, device=model_device(model)))
    names = plot.class_names_for(outputs.shape[-1], class_names)
    controls = {
        "target": widgets.Dropdown(
            options=[(n, k) for k, n in enumerate(names)], description="class"
        ),
        "l2": widgets.FloatLogSlider(
            value=l2,
            base=10,
            min=-6,
            max=0,
            step=0.5,
            description="λ (l2)",
            readout_format=".0e",
            continuous_update=False,
        ),
        "steps": widgets.IntSlider(
            value=steps,
            min=min(10, steps),
            max=MAX_STEPS,
            step=10,
            description="steps",
            continuous_update=False,
        ),
        "objective": widgets.Dropdown(
            options=list(class_model.OBJECTIVES), value=objective, description="objective"
        ),
    }
    figure = new_figure(WIDTH, TITLE_ROOM + 380 + MARGIN)
    left = place(figure, MARGIN, TITLE_ROOM, 380, 380)
    x = MARGIN + 380 + 90  # room left of the curve for the score's tick labels and name
    right = place(figure, x, TITLE_ROOM, WIDTH - x - 2 * MARGIN, 380 - 40, axis_off=False)
    image_artist = plot.draw_image(left, np.full((size, size, 3), 0.5))
    (curve,) = right.plot([], [])
    right.set_xlabel("step")
    right.set_ylabel(r"class score $S_c(I)$")
    right.grid(alpha=0.3)
    cache = Cache(CACHED_RESULTS, size=lambda ascent: ascent.nbytes)
    shown: dict = {}  # the explorer, once built: frames of a running ascent go to its picture

    def show(image: torch.Tensor, scores: torch.Tensor, title: str, score_title: str) -> None:
        image_artist.set_data(to_hwc(image))
        left.set_title(title)
        curve.set_data(np.arange(1, len(scores) + 1), scores.numpy())
        right.relim()
        right.autoscale_view()
        right.set_title(score_title)

    def frame(c: int, lam: float, n: int, step: int, image, scores) -> None:
        """An unfinished ascent on screen, at once."""
        title = f"class model of {names[c]}\nλ = {lam:.0e}, step {step} of {n}…"
        show(image, scores, title, f"score after {step} steps: {scores[-1]:.2f}")
        shown["explorer"].show(status=f"ascent: step {step} of {n}…")

    def run(c: int, lam: float, n: int, objective: str, done: _Ascent | None) -> _Ascent:
        """The ascent of ``n`` steps, its snapshots kept; frames while it runs."""
        ascent = done or _Ascent()
        start = ascent.longest_up_to(n)  # on screen at once, then the steps after it
        watching = "explorer" in shown
        if watching and start:
            frame(c, lam, n, start, ascent.images[start], ascent.scores[:start])
        clock = {"last": time.perf_counter(), "wait": FIRST_FRAME_S}

        def watch(step: int, image: torch.Tensor, scores: torch.Tensor) -> None:
            ascent.keep(step, image, scores, last=step == n)
            now = time.perf_counter()
            if watching and start < step < n and now - clock["last"] >= clock["wait"]:
                frame(c, lam, n, step, image.cpu(), scores)
                clock["last"] = time.perf_counter()
                # frames take at most a third of the time, even on a slow machine
                clock["wait"] = max(REFRESH_S, 2 * (clock["last"] - now))

        class_model.visualize(
            model, c, steps=n, l2=lam, objective=objective, size=size, callback=watch
        )
        return ascent

    def draw(values: dict) -> dict:
        c, lam, n, objective = (values[k] for k in ("target", "l2", "steps", "objective"))
        key = (c, lam, objective)
        if key not in cache or n not in cache[key].images:
            cache[key] = run(c, lam, n, objective, cache.get(key))
        ascent = cache[key]
        image, scores = ascent.images[n], ascent.scores[:n]
        p = ascent.probability(n, lambda: float(_scores(model, image[None]).softmax(dim=-1)[0, c]))
        show(image, scores, f"class model of {names[c]}\nλ = {lam:.0e}, p = {p:.2f}",
             f"score after {n} steps: {scores[-1]:.2f}")  # fmt: skip
        return {"image": to_hwc(image), "scores": scores.numpy(), "probability": p}

    changing = [image_artist, left.title, right]  # the curve's axes: its ticks follow the scores
    explorer = Explorer(controls, figure, draw, changing=changing)
    explorer.cache = cache
    shown["explorer"] = explorer
    return explorer


class _Ascent:
    """What ``class_model_explorer`` keeps of the ascents of one (class, lambda, objective):
    the image after every ``SNAPSHOT_EVERY`` steps and after the last step of each run, and the
    scores of the longest run. The first k steps of a longer run are a run of k steps, so each
    image kept answers a request for that many steps."""

    def __init__(self) -> None:
        self.images: dict[int, torch.Tensor] = {}
        self.scores = torch.empty(0)
        self._probabilities: dict[int, float] = {}

    def keep(self, step: int, image: torch.Tensor, scores: torch.Tensor, last: bool) -> None:
        if last or step % SNAPSHOT_EVERY == 0:
            self.images[step] = image.detach().cpu().clone()
        if len(scores) > len(self.scores):
            self.scores = scores.clone()

    @property
    def nbytes(self) -> int:
        """The memory its images and scores take."""
        tensors = [*self.images.values(), self.scores]
        return sum(t.element_size() * t.nelement() for t in tensors)

    def longest_up_to(self, steps: int) -> int:
        """The most steps kept that are at most ``steps`` (0 if none)."""
        return max((k for k in self.images if k <= steps), default=0)

    def probability(self, steps: int, compute: Callable[[], float]) -> float:
        if steps not in self._probabilities:
            self._probabilities[steps] = compute()
        return self._probabilities[steps]
