"""Interactive explorers for teaching live (ipywidgets 8, JupyterLab 4).

Each function returns an ``Explorer``: controls above a picture, redrawn whenever a control
changes. Show it by making it the last line of a cell. Everything is reachable from code too,
which is how the tests drive it without a browser::

    explorer = feature_map_browser(model, images)
    explorer.controls["channel"].value = 3   # redraws at once
    explorer.shown["map"]                     # the array now on screen
    explorer.figure                           # the matplotlib Figure behind the picture

Why it is fast: what the model computes is cached (feature maps of every image at once when
the explorer is built; attributions and occlusion maps the first time they are asked for), and
an update changes the data of one persistent figure in place and sends it as one PNG. The
figure is never registered with pyplot, so no figure is left open.

``class_model_explorer`` runs a gradient ascent of ``steps`` steps on the first request of a
setting, which takes longer than a redraw: it shows the ascent as it goes, the first picture
after a few steps (``benchmarks/bench_widgets.py`` measures both).
"""

from __future__ import annotations

import base64
import io
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import ipywidgets as widgets
import numpy as np
import PIL.Image
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from matplotlib.ticker import MaxNLocator, ScalarFormatter
from matplotlib.transforms import Bbox
from torch import nn

from . import activations, attribution, class_model, perturbation, plot
from .data import to_hwc
from .targets import as_batch, explaining, model_device

DPI = 80
"""Resolution of the pictures the explorers send (pixels per figure inch)."""

WIDTH = 960
"""Width of the explorers' pictures in pixels: about the width of a JupyterLab output on a laptop
screen, where a wider picture would be shrunk."""

TITLE_ROOM, MARGIN, SCALE_ROOM = 48, 16, 90
"""Pixels kept above the panels (two-line titles), around the figure, and right of a colour
scale (tick labels of up to 6 characters and the scale's label)."""

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

MAX_STEPS = 300
"""The most ascent steps ``class_model_explorer`` offers."""

SNAPSHOT_EVERY = 10
"""``class_model_explorer`` keeps the image after every this many steps of an ascent (the steps
slider's step), so fewer steps of a setting already run need no new ascent."""

FIRST_FRAME_S = 0.04
REFRESH_S = 0.3
"""A new ascent of ``class_model_explorer`` is on screen after ``FIRST_FRAME_S`` seconds of
computing (the steps so far, titled "step k of n…"), then every ``REFRESH_S`` seconds (or
twice as long as a frame takes to draw, if that is longer), until the last step's picture
replaces it."""

PREDICTED = -1
"""The value of the target dropdown's "predicted class" entry."""


class Explorer(widgets.VBox):
    """Controls above a picture that is redrawn whenever a control changes.

    Built from ``controls`` (name -> widget), the ``figure`` and ``draw(values) -> shown``,
    which updates the figure's artists in place for the controls' ``values``. ``adjust(values)``
    runs first and may change other controls (a slider's range) without extra redraws.

    Attributes:
        controls: the control widgets by name, e.g. ``controls["layer"]``.
        figure: the matplotlib Figure that ``draw`` updates in place.
        output: the ``Output`` widget that shows the figure as a PNG.
        shown: what is on screen now, as arrays and numbers (``draw``'s return value).
        cache: results already computed, reused by later updates.
        error: the message of the last failed update, shown in place of the picture (None).
        updates: how many times the picture was drawn.
    """

    def __init__(
        self,
        controls: dict[str, widgets.ValueWidget],
        figure: Figure,
        draw: Callable[[dict], dict],
        adjust: Callable[[dict], None] | None = None,
    ) -> None:
        self.controls = controls
        self.figure = figure
        self.output = widgets.Output()
        self.shown: dict = {}
        self.cache: dict = {}
        self.error: str | None = None
        self.updates = 0
        self._draw, self._adjust, self._held = draw, adjust, False
        FigureCanvasAgg(figure)
        bar = widgets.HBox(list(controls.values()), layout=widgets.Layout(flex_flow="row wrap"))
        super().__init__(children=[bar, self.output])
        self.update(raise_errors=True)
        for control in controls.values():
            control.observe(self._changed, names="value")

    def _repr_mimebundle_(self, **kwargs) -> dict:
        """The live widget; for where no live widget can show (a stored notebook opened before
        it runs, slides, a web page of the notebook) the picture now on screen as a PNG and one
        short line of text, instead of the widget's long ``repr``."""
        bundle = super()._repr_mimebundle_(**kwargs)
        bundle["text/plain"] = f"{type(self).__name__} ({', '.join(self.controls)})"
        if self.error is None and self.output.outputs:
            bundle["image/png"] = self.output.outputs[0]["data"]["image/png"]
        return bundle

    def values(self) -> dict:
        """The controls' current values by name."""
        return {name: control.value for name, control in self.controls.items()}

    def update(self, raise_errors: bool = False) -> None:
        """Draw the picture for the controls' current values and send it to the output."""
        try:
            self.shown = self._draw(self.values())
        except Exception as error:
            if raise_errors:
                raise
            self.error = f"{type(error).__name__}: {error}"
            self.output.outputs = (_text_output(self.error),)
            return
        self.error = None
        self.output.outputs = (_png_output(self.figure),)
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


def _png_output(figure: Figure) -> dict:
    """The figure as one display_data output of an ``Output`` widget: one Agg draw, then a
    fast PNG encoding (``savefig`` would draw twice when the figure has a layout engine)."""
    figure.canvas.draw()
    pixels = np.asarray(figure.canvas.buffer_rgba())[..., :3]
    buffer = io.BytesIO()
    PIL.Image.fromarray(pixels).save(buffer, format="png", compress_level=1)
    png = base64.b64encode(buffer.getvalue()).decode("ascii")
    return {"output_type": "display_data", "data": {"image/png": png}, "metadata": {}}


def _text_output(text: str) -> dict:
    return {"output_type": "stream", "name": "stderr", "text": text + "\n"}


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


def _probabilities(model: nn.Module, batch: torch.Tensor) -> torch.Tensor:
    """The class posteriors P_c of every image ``[N, K]``, from one forward pass."""
    with explaining(model), torch.no_grad():
        return model(batch.to(model_device(model))).softmax(dim=-1).cpu()


def _figure(width: int, height: int) -> Figure:
    """An empty figure of ``width`` x ``height`` pixels whose axes are placed by hand
    (``_place``): no layout solver runs on a draw, and nothing moves when a title or a tick
    label gets longer."""
    return Figure(figsize=(width / DPI, height / DPI), dpi=DPI, layout="none")


def _place(figure: Figure, left: int, top: int, width: int, height: int, axis_off: bool = True):
    """New axes at ``left``, ``top`` (pixels from the figure's top left corner), ``width`` x
    ``height`` pixels; an image drawn in it keeps its aspect and is centred in that box."""
    figure_width, figure_height = figure.get_size_inches() * DPI
    rect = (left / figure_width, 1 - (top + height) / figure_height)
    ax = figure.add_axes((*rect, width / figure_width, height / figure_height))
    ax.set_title("", y=1.0)  # a fixed title height: no title placement on every draw
    if axis_off:
        ax.set_axis_off()
    return ax


def _image_and_map(image: int = 380, box: tuple[int, int] = (380, 380), gap: int = 66):
    """A figure ``WIDTH`` pixels wide: the image (an ``image`` x ``image`` square) on the left,
    a map (in a ``box`` = (width, height) box) and its colour scale on the right. Room is kept
    above the panels for two-line titles and right of the colour scale for its longest tick
    labels and its label, so nothing is cut off whatever the numbers."""
    box_width, box_height = box
    figure = _figure(WIDTH, TITLE_ROOM + box_height + MARGIN)
    left = _place(figure, MARGIN, TITLE_ROOM + (box_height - image) // 2, image, image)
    x = MARGIN + image + gap
    right = _place(figure, x, TITLE_ROOM, box_width, box_height)
    scale = _place(figure, x + box_width + 12, TITLE_ROOM, 16, box_height, axis_off=False)
    assert x + box_width + 12 + 16 + SCALE_ROOM <= WIDTH, "the colour scale's labels need room"
    return figure, left, right, scale


def _colorbar(figure: Figure, artist, scale, label: str | None = None):
    """The colour scale of ``artist`` in the axes ``scale``, with at most 5 ticks (text is most
    of a draw) and short tick labels: values under 0.01 or from 10000 on share one factor,
    written above the scale (``1e-3``), so a label has at most 6 characters (``-0.075``)."""
    bar = figure.colorbar(artist, cax=scale, label=label)
    bar.locator = MaxNLocator(4)
    formatter = ScalarFormatter()
    formatter.set_powerlimits((-3, 4))
    bar.formatter = formatter
    return bar


def _fit_height(scale, full: Bbox, share: float) -> None:
    """Shrink the colour scale to ``share`` of its ``full`` height, centred: as tall as a wide
    map drawn beside it (a map keeps its aspect, so it fills less than its box's height)."""
    height = full.height * share
    scale.set_position((full.x0, full.y0 + (full.height - height) / 2, full.width, height))


def _attribution_label(attribution: np.ndarray) -> str:
    """What the method explorer's colour scale measures: a map ``[3, H, W]`` is summed over the
    colour channels before it is drawn (``plot.map_style``)."""
    return "attribution, summed over RGB" if attribution.ndim == 3 else "attribution"


def _show_array(artist, values: np.ndarray) -> None:
    """New data for an AxesImage, whatever its shape (the axes limits follow)."""
    artist.set_data(values)
    height, width = values.shape[:2]
    artist.set_extent((-0.5, width - 0.5, height - 0.5, -0.5))


def _show_map(artist, style: plot.MapStyle) -> None:
    """New data, colormap and limits for the map panel (its colorbar follows)."""
    _show_array(artist, style.values)
    artist.set_cmap(style.cmap)
    artist.set_clim(style.vmin, style.vmax)


# --- Part 1: feature maps -------------------------------------------------------------------


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
    figure, left, right, scale = _image_and_map(image=300, box=(486, 460), gap=40)
    image_artist = plot.draw_image(left, pictures[0])
    map_artist = right.imshow(np.zeros((1, 1)), cmap="viridis", interpolation="nearest")
    _colorbar(figure, map_artist, scale, "activation")
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
        _show_array(map_artist, shown)
        map_artist.set_clim(np.nanmin(shown), np.nanmax(shown))
        _fit_height(scale, full_scale, min(1.0, 486 / 460 * shown.shape[0] / shown.shape[1]))
        return {"image": pictures[i], "map": shown, "layer": layer, "channel": c}

    explorer = Explorer(controls, figure, draw, adjust)
    explorer.cache = maps
    return explorer


# --- Part 2: attribution methods ------------------------------------------------------------


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

    Each (image, class, method) is computed once; ``explorer.cache`` holds the maps.
    """
    batch = _batch(images, "method_explorer")
    probabilities = _probabilities(model, batch)
    names = plot.class_names_for(probabilities.shape[-1], class_names)
    pictures = [to_hwc(image) for image in batch]
    controls = {
        "image": _image_slider(len(batch)),
        "target": _target_dropdown(names),
        "method": widgets.Dropdown(options=list(METHODS), description="method"),
    }
    figure, left, right, scale = _image_and_map()
    image_artist = plot.draw_image(left, pictures[0])
    map_artist = right.imshow(np.zeros((1, 1)), interpolation="nearest")
    bar = _colorbar(figure, map_artist, scale)
    cache: dict = {}

    def draw(values: dict) -> dict:
        i, method = values["image"], values["method"]
        p = probabilities[i]
        predicted = int(p.argmax())
        c = predicted if values["target"] == PREDICTED else values["target"]
        if (i, c, method) not in cache:
            cache[i, c, method] = METHODS[method](model, batch[i], c).float().numpy()
        style = plot.map_style(cache[i, c, method], function="method_explorer")
        image_artist.set_data(pictures[i])
        title = f"image {i}: {names[predicted]} (p = {p[predicted]:.2f})"
        if labels is not None:
            title += f"\ntrue: {names[int(labels[i])]}"
        left.set_title(title)
        right.set_title(f"{method} for {names[c]}\n(p = {p[c]:.2f})")
        bar.set_label(_attribution_label(cache[i, c, method]))
        _show_map(map_artist, style)
        return {"image": pictures[i], "map": style.values, "target": c, "method": method}

    explorer = Explorer(controls, figure, draw)
    explorer.cache = cache
    return explorer


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

    The maps of every image's predicted class at the starting ``window`` and ``stride`` are
    computed together when the explorer is built, so browsing the images at those settings only
    draws. Any other (image, class, window, stride) is computed the first time it is shown, and
    kept: ``explorer.cache`` holds the maps.
    """
    batch = _batch(images, "occlusion_explorer")
    side = min(batch.shape[-2:])
    if not 1 <= min_stride <= stride <= window <= side:
        raise ValueError(
            f"occlusion_explorer: need 1 <= min_stride <= stride <= window <= {side} (the "
            f"image's side), got min_stride={min_stride}, stride={stride}, window={window}."
        )
    probabilities = _probabilities(model, batch)
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
    figure, left, right, scale = _image_and_map()
    image_artist = plot.draw_image(left, pictures[0])
    square = Rectangle((-0.5, -0.5), window, window, fill=False, color="white", linestyle="--")
    left.add_patch(square)
    map_artist = right.imshow(np.zeros((1, 1)), interpolation="nearest")
    _colorbar(figure, map_artist, scale, "mean drop of the score")
    predicted = probabilities.argmax(dim=1)
    first = perturbation.occlusion(
        model, batch, predicted, window=window, stride=stride, baseline=baseline
    )
    cache = {
        (i, int(c), window, stride): m.float().numpy()
        for i, (c, m) in enumerate(zip(predicted, first))
    }

    def adjust(values: dict) -> None:
        controls["stride"].max = values["window"]  # occlusion needs stride <= window

    def draw(values: dict) -> dict:
        i, w, s = values["image"], values["window"], values["stride"]
        p = probabilities[i]
        c = int(p.argmax()) if values["target"] == PREDICTED else values["target"]
        if (i, c, w, s) not in cache:
            occluded = perturbation.occlusion(
                model, batch[i], c, window=w, stride=s, baseline=baseline, progress=False
            )
            cache[i, c, w, s] = occluded.float().numpy()
        style = plot.map_style(cache[i, c, w, s], signed=True, function="occlusion_explorer")
        image_artist.set_data(pictures[i])
        square.set_width(w)
        square.set_height(w)
        left.set_title(f"image {i}: {names[int(p.argmax())]} (p = {p.max():.2f})")
        right.set_title(f"occlusion {w} x {w}, stride {s}\nscore of {names[c]}")
        _show_map(map_artist, style)
        return {"image": pictures[i], "map": style.values, "target": c, "window": w, "stride": s}

    explorer = Explorer(controls, figure, draw, adjust)
    explorer.cache = cache
    return explorer


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
    figure = _figure(WIDTH, TITLE_ROOM + 380 + MARGIN)
    left = _place(figure, MARGIN, TITLE_ROOM, 380, 380)
    x = MARGIN + 380 + 90  # room left of the curve for the score's tick labels and name
    right = _place(figure, x, TITLE_ROOM, WIDTH - x - 2 * MARGIN, 380 - 40, axis_off=False)
    image_artist = plot.draw_image(left, np.full((size, size, 3), 0.5))
    (curve,) = right.plot([], [])
    right.set_xlabel("step")
    right.set_ylabel(r"class score $S_c(I)$")
    right.grid(alpha=0.3)
    cache: dict[tuple, _Ascent] = {}
    shown: dict = {}  # the explorer, once built: frames of a running ascent go to its output

    def show(image: torch.Tensor, scores: torch.Tensor, title: str, score_title: str) -> None:
        image_artist.set_data(to_hwc(image))
        left.set_title(title)
        curve.set_data(np.arange(1, len(scores) + 1), scores.numpy())
        right.relim()
        right.autoscale_view()
        right.set_title(score_title)

    def frame(c: int, lam: float, n: int, step: int, image, scores) -> None:
        """An unfinished ascent on screen, at once (in the last layout: a layout costs more
        than the rest of the drawing)."""
        title = f"class model of {names[c]}\nλ = {lam:.0e}, step {step} of {n}…"
        show(image, scores, title, f"score after {step} steps: {scores[-1]:.2f}")
        layout = figure.get_layout_engine()
        figure.set_layout_engine("none")
        try:
            shown["explorer"].output.outputs = (_png_output(figure),)
        finally:
            figure.set_layout_engine(layout)

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
        p = ascent.probability(n, lambda: float(_probabilities(model, image[None])[0, c]))
        show(image, scores, f"class model of {names[c]}\nλ = {lam:.0e}, p = {p:.2f}",
             f"score after {n} steps: {scores[-1]:.2f}")  # fmt: skip
        return {"image": to_hwc(image), "scores": scores.numpy(), "probability": p}

    explorer = Explorer(controls, figure, draw)
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

    def longest_up_to(self, steps: int) -> int:
        """The most steps kept that are at most ``steps`` (0 if none)."""
        return max((k for k in self.images if k <= steps), default=0)

    def probability(self, steps: int, compute: Callable[[], float]) -> float:
        if steps not in self._probabilities:
            self._probabilities[steps] = compute()
        return self._probabilities[steps]
