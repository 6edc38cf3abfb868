"""The interactive explorers, driven headlessly: a control changes, the picture follows."""

import matplotlib

matplotlib.use("Agg")

import base64  # noqa: E402
import copy  # noqa: E402
from pathlib import Path  # noqa: E402

import ipywidgets  # noqa: E402
import nbformat  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from explorers import count_forward_passes, no_figure_left_open, png  # noqa: E402, F401
from matplotlib.figure import Figure  # noqa: E402

from lecture_lib import (  # noqa: E402
    attribution,
    class_model,
    incremental,
    perturbation,
    picture,
    widget_state,
    widgets,
)
from lecture_lib.data import CLASSES, make_shapes  # noqa: E402
from lecture_lib.perturbation import occlusion  # noqa: E402

TEST_SEED = 2026


@pytest.fixture(scope="module")
def images():
    return make_shapes(4, seed=TEST_SEED)[:2]


def changed(explorer, action):
    """Run ``action`` and return (did the picture change, how many redraws happened)."""
    before, updates = png(explorer), explorer.updates
    action()
    assert explorer.error is None, explorer.error
    return png(explorer) != before, explorer.updates - updates


def gradient_by_autograd(model, image, c):
    x = image[None].clone().requires_grad_(True)
    model(x)[0, c].backward()
    return x.grad[0]


def no_hooks_left(model) -> bool:
    return all(
        not m._forward_hooks and not m._forward_pre_hooks and not m._backward_hooks
        for m in model.modules()
    )


# --- feature_map_browser --------------------------------------------------------------------


def test_feature_map_browser_shows_the_chosen_channel(shapes_net, images):
    x, _ = images
    explorer = widgets.feature_map_browser(shapes_net, x)
    assert isinstance(explorer, ipywidgets.VBox) and explorer.output in explorer.children
    assert list(explorer.controls["layer"].options) == ["relu1", "relu2", "relu3", "relu4"]
    assert explorer.controls["channel"].max == 15  # relu1 has 16 channels
    with torch.no_grad():
        relu1 = torch.relu(shapes_net.conv1(x))  # an independent computation of the maps
    np.testing.assert_allclose(explorer.shown["map"], relu1[0, 0].numpy(), atol=1e-5)

    picture_changed, redraws = changed(
        explorer, lambda: setattr(explorer.controls["channel"], "value", 3)
    )
    assert picture_changed and redraws == 1
    np.testing.assert_allclose(explorer.shown["map"], relu1[0, 3].numpy(), atol=1e-5)
    assert "channel 3 of 16" in explorer.figure.axes[1].get_title()

    changed(explorer, lambda: setattr(explorer.controls["image"], "value", 2))
    np.testing.assert_allclose(explorer.shown["map"], relu1[2, 3].numpy(), atol=1e-5)
    np.testing.assert_allclose(explorer.shown["image"], x[2].permute(1, 2, 0).numpy())


def test_channel_slider_follows_the_layer_with_one_redraw(shapes_net, images):
    explorer = widgets.feature_map_browser(shapes_net, images[0], layers=["relu3", "pool1"])
    channel = explorer.controls["channel"]
    assert channel.max == 63
    channel.value = 40
    picture_changed, redraws = changed(
        explorer, lambda: setattr(explorer.controls["layer"], "value", "pool1")
    )
    assert picture_changed and redraws == 1
    assert channel.max == 15 and channel.value == 15
    assert explorer.shown["map"].shape == (32, 32) and explorer.shown["channel"] == 15


def test_all_channels_view_tiles_the_layer(shapes_net, images):
    explorer = widgets.feature_map_browser(shapes_net, images[0], ncols=8)
    picture_changed, _ = changed(
        explorer, lambda: setattr(explorer.controls["view"], "value", "all channels")
    )
    assert picture_changed and explorer.controls["channel"].disabled
    assert explorer.shown["map"].shape == (2 * 65 - 1, 8 * 65 - 1)  # 16 maps of 64 x 64, 8 a row


def test_feature_maps_are_computed_once(shapes_net, images):
    explorer = widgets.feature_map_browser(shapes_net, images[0])
    assert set(explorer.cache) == {"relu1", "relu2", "relu3", "relu4"}  # relu5 is not spatial
    with count_forward_passes(shapes_net) as calls:
        for layer in ("relu2", "relu4"):
            explorer.controls["layer"].value = layer
            explorer.controls["channel"].value = 5
            explorer.controls["image"].value = 3
    assert calls == [] and explorer.error is None


def test_the_model_is_left_as_it_came(shapes_net, images):
    model = copy.deepcopy(shapes_net).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    explorer = widgets.feature_map_browser(model, images[0])
    explorer.controls["channel"].value = 2
    methods = widgets.method_explorer(model, images[0][:2])
    methods.controls["method"].value = "guided backprop"
    widgets.occlusion_explorer(model, images[0][:1], window=32, stride=32)
    assert all(m.training for m in model.modules())
    assert no_hooks_left(model)
    assert all(p.grad is None and p.requires_grad for p in model.parameters())
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())


def test_bad_images_are_explained(shapes_net):
    with pytest.raises(ValueError, match="batch \\[N, C, H, W\\]"):
        widgets.feature_map_browser(shapes_net, torch.rand(64, 64))
    with pytest.raises(ValueError, match="no layer named 'conv9'"):
        widgets.feature_map_browser(shapes_net, torch.rand(1, 3, 64, 64), layers=["conv9"])
    with pytest.raises(ValueError, match="none of the chosen layers"):
        widgets.feature_map_browser(shapes_net, torch.rand(1, 3, 64, 64), layers=["fc1"])


# --- method_explorer ------------------------------------------------------------------------


def test_method_explorer_shows_the_gradient_of_the_predicted_class(shapes_net, images):
    x, labels = images
    explorer = widgets.method_explorer(shapes_net, x, labels)
    with torch.no_grad():
        p = torch.softmax(shapes_net(x), dim=1)
    predicted = int(p[0].argmax())
    assert explorer.shown["target"] == predicted and explorer.shown["method"] == "gradient"
    expected = gradient_by_autograd(shapes_net, x[0], predicted).sum(0)  # summed over RGB
    np.testing.assert_allclose(explorer.shown["map"], expected.numpy(), atol=1e-5)
    image_title, map_title = (ax.get_title() for ax in explorer.figure.axes[:2])
    assert f"{CLASSES[predicted]} (p = {p[0, predicted]:.2f})" in image_title
    assert f"true: {CLASSES[int(labels[0])]}" in image_title
    assert map_title.startswith(f"gradient for {CLASSES[predicted]}")


def test_method_explorer_target_and_method_change_the_picture(shapes_net, images):
    x, _ = images
    explorer = widgets.method_explorer(shapes_net, x)
    other = (explorer.shown["target"] + 1) % len(CLASSES)
    picture_changed, _ = changed(
        explorer, lambda: setattr(explorer.controls["target"], "value", other)
    )
    assert picture_changed and explorer.shown["target"] == other
    assert explorer.figure.axes[1].get_title().startswith(f"gradient for {CLASSES[other]}")

    changed(explorer, lambda: setattr(explorer.controls["method"], "value", "saliency"))
    expected = gradient_by_autograd(shapes_net, x[0], other).abs().amax(0)
    np.testing.assert_allclose(explorer.shown["map"], expected.numpy(), atol=1e-5)
    colours = explorer.figure.axes[1].images[0]
    assert colours.get_cmap().name == "magma" and colours.get_clim()[0] == 0


@pytest.mark.parametrize("method", list(widgets.METHODS))
def test_every_method_draws(shapes_net, images, method):
    explorer = widgets.method_explorer(shapes_net, images[0][:1])
    explorer.controls["method"].value = "saliency" if method == "gradient" else "gradient"
    picture_changed, redraws = changed(
        explorer, lambda: setattr(explorer.controls["method"], "value", method)
    )
    assert picture_changed and redraws == 1
    reference = {  # what each entry must show: the library's method, summed over RGB
        "gradient": attribution.gradient,
        "saliency": attribution.saliency,
        "input x gradient": attribution.input_x_gradient,
        "deconvnet": attribution.deconvnet,
        "guided backprop": attribution.guided_backprop,
        f"integrated gradients ({widgets.IG_STEPS} steps)": lambda m, x, c: (
            attribution.integrated_gradients(m, x, c, steps=widgets.IG_STEPS)
        ),
        "deeplift": attribution.deeplift,
    }[method](shapes_net, images[0][0], explorer.shown["target"])
    if reference.ndim == 3:
        reference = reference.sum(0)
    np.testing.assert_allclose(explorer.shown["map"], reference.numpy(), atol=1e-5)
    if explorer.shown["map"].min() < 0:
        vmin, vmax = explorer.figure.axes[1].images[0].get_clim()
        assert vmin == -vmax


def test_method_explorer_caches_each_map(shapes_net, images):
    explorer = widgets.method_explorer(shapes_net, images[0])
    explorer.controls["image"].value = 1
    explorer.controls["method"].value = "deeplift"
    assert len(explorer.cache) == 3
    with count_forward_passes(shapes_net) as calls:  # back to the two gradient maps
        explorer.controls["method"].value = "gradient"
        explorer.controls["image"].value = 0
    assert calls == [] and len(explorer.cache) == 3 and explorer.updates == 5
    assert (0, explorer.shown["target"], "gradient") in explorer.cache


def test_a_failing_update_is_shown_not_raised(shapes_net, images, monkeypatch):
    explorer = widgets.method_explorer(shapes_net, images[0][:1])

    def broken(model, inputs, target):
        raise RuntimeError("this method failed")

    monkeypatch.setitem(widgets.METHODS, "deconvnet", broken)
    explorer.controls["method"].value = "deconvnet"
    assert explorer.error == "RuntimeError: this method failed"
    assert "this method failed" in explorer.output.outputs[0]["text"]
    explorer.controls["method"].value = "saliency"
    assert explorer.error is None and png(explorer)


# --- occlusion_explorer ---------------------------------------------------------------------


def test_occlusion_explorer_window_and_stride(shapes_net, images):
    x, _ = images
    explorer = widgets.occlusion_explorer(shapes_net, x[:2], window=16, stride=8)
    c = explorer.shown["target"]
    expected = occlusion(shapes_net, x[0], c, window=16, stride=8)
    np.testing.assert_allclose(explorer.shown["map"], expected.numpy(), atol=1e-5)

    stride = explorer.controls["stride"]
    picture_changed, redraws = changed(
        explorer, lambda: setattr(explorer.controls["window"], "value", 6)
    )
    assert picture_changed and redraws == 1
    assert stride.max == 6 and stride.value == 6  # the stride never exceeds the window
    expected = occlusion(shapes_net, x[0], c, window=6, stride=6)
    np.testing.assert_allclose(explorer.shown["map"], expected.numpy(), atol=1e-5)

    picture_changed, _ = changed(explorer, lambda: setattr(stride, "value", 4))
    assert picture_changed and stride.min == 4
    with count_forward_passes(shapes_net) as calls:
        stride.value = 6  # seen before: from the cache
    assert calls == [] and len(explorer.cache) == 3  # the image at the start, (6, 6), (6, 4)


def test_a_new_image_is_occluded_alone_with_one_plan_per_window(shapes_net, images, monkeypatch):
    x, _ = images
    occluded, plans = [], []
    real_scores, real_plan = incremental.occluded_scores, perturbation.occlusion_plan

    def counting_scores(plan, image, *args, **kwargs):
        occluded.append(image.shape)
        return real_scores(plan, image, *args, **kwargs)

    def counting_plans(*args, **kwargs):
        plans.append(kwargs["window"])
        return real_plan(*args, **kwargs)

    monkeypatch.setattr(incremental, "occluded_scores", counting_scores)
    monkeypatch.setattr(perturbation, "occlusion_plan", counting_plans)
    explorer = widgets.occlusion_explorer(shapes_net, x, window=16, stride=8)
    assert len(explorer.cache) == 1 and occluded == [x[0].shape] and plans == [16]
    for i in (1, 2, 3):
        explorer.controls["image"].value = i
        c = explorer.shown["target"]
        expected = occlusion(shapes_net, x[i], c, window=16, stride=8, incremental=False)
        np.testing.assert_allclose(explorer.shown["map"], expected.numpy(), atol=1e-5)
    assert len(occluded) == 4 and plans == [16]  # one image each time, the same plan
    with count_forward_passes(shapes_net) as calls:
        explorer.controls["image"].value = 0  # seen before: from the cache
    assert calls == [] and len(occluded) == 4 and explorer.updates == 5


def test_occlusion_explorer_hold_changes_several_controls_with_one_redraw(shapes_net, images):
    explorer = widgets.occlusion_explorer(shapes_net, images[0][:2], window=16, stride=8)
    updates = explorer.updates
    with explorer.hold():
        explorer.controls["image"].value = 1
        explorer.controls["window"].value = 8
    assert explorer.updates == updates + 1
    assert explorer.controls["stride"].max == 8 and explorer.shown["stride"] == 8
    assert explorer.shown["window"] == 8 and len(explorer.cache) == 2


def test_occlusion_explorer_bad_settings(shapes_net, images):
    with pytest.raises(ValueError, match="min_stride <= stride <= window"):
        widgets.occlusion_explorer(shapes_net, images[0][:1], window=8, stride=16)


# --- class_model_explorer -------------------------------------------------------------------


def test_class_model_explorer(shapes_net, monkeypatch):
    runs = []
    real_visualize = class_model.visualize

    def counting(*args, **kwargs):
        runs.append(kwargs)
        return real_visualize(*args, **kwargs)

    monkeypatch.setattr(class_model, "visualize", counting)
    explorer = widgets.class_model_explorer(shapes_net, steps=10, l2=1e-3, objective="score")
    image, scores = real_visualize(shapes_net, 0, steps=10, l2=1e-3, objective="score")
    np.testing.assert_allclose(explorer.shown["scores"], scores.numpy(), rtol=1e-5)
    np.testing.assert_allclose(explorer.shown["image"], image.permute(1, 2, 0).numpy(), atol=1e-6)
    (curve,) = explorer.figure.axes[1].lines
    np.testing.assert_allclose(curve.get_ydata(), scores.numpy(), rtol=1e-5)

    picture_changed, _ = changed(explorer, lambda: setattr(explorer.controls["target"], "value", 3))
    assert picture_changed and runs[-1]["steps"] == 10
    changed(explorer, lambda: setattr(explorer.controls["l2"], "value", 1e-2))
    assert runs[-1]["l2"] == pytest.approx(1e-2)
    changed(explorer, lambda: setattr(explorer.controls["steps"], "value", 20))
    assert len(explorer.shown["scores"]) == 20 and len(runs) == 4
    changed(explorer, lambda: setattr(explorer.controls["objective"], "value", "log_softmax"))
    assert runs[-1]["objective"] == "log_softmax" and len(runs) == 5
    explorer.controls["objective"].value = "score"  # (3, 1e-2, 20, score) is cached
    explorer.controls["target"].value = 0
    with explorer.hold():  # back to the first setting: nothing is run again
        explorer.controls["l2"].value = 1e-3
        explorer.controls["steps"].value = 10
    assert len(runs) == 6  # (0, 1e-2, 20) was new; (0, 1e-3, 10) came from the cache
    np.testing.assert_allclose(explorer.shown["scores"], scores.numpy(), rtol=1e-5)


def steps_shown(titles: list[str]) -> list[int]:
    """The step of each frame's title "... step k of n…"."""
    return [int(title.split("step ")[1].split(" of")[0]) for title in titles if "step " in title]


def test_a_new_class_model_is_shown_as_the_ascent_goes(shapes_net, monkeypatch):
    monkeypatch.setattr(widgets, "FIRST_FRAME_S", 0.0)  # a frame after the first step
    monkeypatch.setattr(widgets, "REFRESH_S", 0.0)  # and as often as drawing allows
    runs = []
    real_visualize = class_model.visualize

    def counting(*args, **kwargs):
        runs.append(kwargs["steps"])
        return real_visualize(*args, **kwargs)

    monkeypatch.setattr(class_model, "visualize", counting)
    explorer = widgets.class_model_explorer(shapes_net, steps=10)
    titles = []
    explorer.image.observe(
        lambda change: titles.append(explorer.figure.axes[0].get_title()), names="value"
    )
    explorer.controls["target"].value = 2
    assert titles[0] == f"class model of {CLASSES[2]}\nλ = 1e-03, step 1 of 10…"
    assert "p = " in titles[-1] and steps_shown(titles[:-1]) == sorted(set(steps_shown(titles)))
    image, scores = real_visualize(shapes_net, 2, steps=10)
    np.testing.assert_allclose(explorer.shown["image"], image.permute(1, 2, 0).numpy(), atol=1e-6)
    np.testing.assert_allclose(explorer.shown["scores"], scores.numpy(), rtol=1e-5)

    titles.clear()
    explorer.controls["steps"].value = 20  # starts on screen from the 10 steps kept
    assert titles[0].endswith("step 10 of 20…") and titles[1].endswith("step 11 of 20…")
    assert steps_shown(titles[:-1]) == sorted(set(steps_shown(titles))) and "p = " in titles[-1]
    image, scores = real_visualize(shapes_net, 2, steps=20)
    np.testing.assert_allclose(explorer.shown["image"], image.permute(1, 2, 0).numpy(), atol=1e-6)
    np.testing.assert_allclose(explorer.shown["scores"], scores.numpy(), rtol=1e-5)

    runs.clear()
    explorer.controls["steps"].value = 10  # kept from the run of 20 steps: no new ascent
    assert runs == []
    image, scores = real_visualize(shapes_net, 2, steps=10)
    np.testing.assert_allclose(explorer.shown["image"], image.permute(1, 2, 0).numpy(), atol=1e-6)
    np.testing.assert_allclose(explorer.shown["scores"], scores.numpy(), rtol=1e-5)


def test_class_model_explorer_bad_settings(shapes_net):
    with pytest.raises(ValueError, match="steps must be an int in 1..300"):
        widgets.class_model_explorer(shapes_net, steps=0)
    with pytest.raises(ValueError, match=r"l2 must lie in \[1e-6, 1\]"):
        widgets.class_model_explorer(shapes_net, l2=0.0)
    with pytest.raises(ValueError, match="objective must be one of"):
        widgets.class_model_explorer(shapes_net, objective="probability")


# --- what the picture looks like ------------------------------------------------------------


def parts_cut_off(figure) -> list[str]:
    """The axes whose drawn parts (image, titles, tick labels, axis labels, the colour scale's
    factor) reach past the picture's edges, with how far (in pixels)."""
    figure.canvas.draw()
    renderer = figure.canvas.get_renderer()
    width, height = figure.canvas.get_width_height()
    cut = []
    for k, ax in enumerate(figure.axes):
        box = ax.get_tightbbox(renderer)
        over = max(-box.x0, -box.y0, box.x1 - width, box.y1 - height)
        if over > 0.5:
            cut.append(f"axes {k} ({ax.get_title()!r}, {ax.get_ylabel()!r}): {over:.0f} px")
    return cut


def picture_size(explorer) -> tuple[int, int]:
    """Width and height in pixels of the PNG the explorer shows."""
    import io

    import PIL.Image

    return PIL.Image.open(io.BytesIO(base64.b64decode(png(explorer)))).size


def test_colour_scales_keep_their_labels_inside_after_updates(shapes_net, images):
    x, _ = images
    # Images whose maps need labels such as "-0.15", wider than those of the first picture:
    # a layout computed once for the first picture cut them off at the right edge.
    wide, labels = make_shapes(4, seed=7)[:2]
    explorer = widgets.method_explorer(shapes_net, wide[:2], labels[:2])
    for image in range(2):
        for method in ("gradient", "saliency", "input x gradient", "deeplift"):
            with explorer.hold():
                explorer.controls["image"].value = image
                explorer.controls["method"].value = method
            assert explorer.error is None, explorer.error
            assert parts_cut_off(explorer.figure) == [], (image, method)

    features = widgets.feature_map_browser(shapes_net, x)
    for layer in ("relu1", "relu4"):
        for view in ("one channel", "all channels"):
            with features.hold():
                features.controls["layer"].value = layer
                features.controls["view"].value = view
            assert parts_cut_off(features.figure) == [], (layer, view)

    occluded = widgets.occlusion_explorer(shapes_net, x[:1], window=32, stride=32, min_stride=8)
    occluded.controls["window"].value = 8
    assert parts_cut_off(occluded.figure) == []


def test_class_model_curve_keeps_its_labels_inside(shapes_net):
    explorer = widgets.class_model_explorer(shapes_net, steps=10, objective="score")
    explorer.controls["objective"].value = "log_softmax"  # negative scores: wider tick labels
    assert parts_cut_off(explorer.figure) == []


def test_every_colour_scale_says_what_it_measures(shapes_net, images):
    x, _ = images
    methods = widgets.method_explorer(shapes_net, x[:1])
    assert methods.figure.axes[2].get_ylabel() == "attribution, summed over RGB"  # gradient
    methods.controls["method"].value = "saliency"  # already one value per pixel
    assert methods.figure.axes[2].get_ylabel() == "attribution"
    features = widgets.feature_map_browser(shapes_net, x[:1])
    assert features.figure.axes[2].get_ylabel() == "activation"
    occluded = widgets.occlusion_explorer(shapes_net, x[:1], window=32, stride=32)
    assert occluded.figure.axes[2].get_ylabel() == "mean drop of the score"


def test_pictures_fill_an_output_and_a_whole_layer_is_readable(shapes_net, images):
    x, _ = images
    for explorer in (
        widgets.method_explorer(shapes_net, x[:1]),
        widgets.occlusion_explorer(shapes_net, x[:1], window=32, stride=32),
        widgets.class_model_explorer(shapes_net, steps=10),
    ):
        width, height = picture_size(explorer)
        assert width == widgets.WIDTH == 960 and height >= 400
    features = widgets.feature_map_browser(shapes_net, x[:1], ncols=8)
    features.controls["layer"].value = "relu3"  # 64 maps, 8 a row
    features.controls["view"].value = "all channels"
    features.figure.canvas.draw()
    shown = features.figure.axes[1].get_window_extent().frozen()  # the mosaic, as drawn
    assert shown.width / 8 >= 50 and shown.height / 8 >= 50  # pixels per map on screen
    scale = features.figure.axes[2].get_window_extent().frozen()
    features.controls["layer"].value = "relu1"  # 16 maps: 2 rows of 8, a wide mosaic
    features.figure.canvas.draw()
    wide = features.figure.axes[1].get_window_extent().frozen()
    assert wide.width / 8 >= 55
    short_scale = features.figure.axes[2].get_window_extent().frozen()  # as tall as the mosaic
    assert abs(short_scale.height - wide.height) < 2 and short_scale.height < scale.height / 2


# --- how the picture is redrawn ---------------------------------------------------------------


def full_draw(explorer) -> np.ndarray:
    """The figure drawn the ordinary way, every artist by matplotlib (RGB)."""
    for artist in explorer.picture.changing:
        artist.set_animated(False)
    try:
        explorer.figure.canvas.draw()
        return np.array(explorer.figure.canvas.buffer_rgba())[..., :3].astype(int)
    finally:
        for artist in explorer.picture.changing:
            artist.set_animated(True)
        explorer.picture.forget_background()


def shown_pixels(explorer) -> np.ndarray:
    import io

    import PIL.Image

    return np.asarray(PIL.Image.open(io.BytesIO(explorer.image.value)))[..., :3].astype(int)


def test_the_picture_is_the_figure_as_matplotlib_draws_it(shapes_net, images):
    x, labels = images
    explorers = [
        widgets.method_explorer(shapes_net, x[:2], labels[:2]),
        widgets.occlusion_explorer(shapes_net, x[:1], window=32, stride=32),
        widgets.class_model_explorer(shapes_net, steps=10),
    ]
    features = widgets.feature_map_browser(shapes_net, x[:2])
    features.controls["view"].value = "all channels"  # a wide mosaic: the axes shrink
    for explorer in [*explorers, features]:
        reference, shown = full_draw(explorer), shown_pixels(explorer)
        assert shown.shape == reference.shape
        differ = np.abs(shown - reference).max(axis=-1) > 40
        assert differ.mean() < 0.005, differ.mean()  # only where a pixel edge rounds otherwise


def test_an_update_redraws_the_same_figure_without_a_full_draw(shapes_net, images, monkeypatch):
    x, labels = images
    explorer = widgets.method_explorer(shapes_net, x, labels)
    figure, artists = explorer.figure, list(explorer.figure.axes[1].images)
    made = []
    real_init = Figure.__init__

    def counting(self, *args, **kwargs):
        made.append(self)
        real_init(self, *args, **kwargs)

    monkeypatch.setattr(Figure, "__init__", counting)
    full_draws = explorer.picture.backgrounds
    for i, method in ((1, "saliency"), (2, "deeplift"), (0, "gradient")):
        with explorer.hold():
            explorer.controls["image"].value = i
            explorer.controls["method"].value = method
        assert explorer.error is None, explorer.error
    assert made == [] and explorer.figure is figure and explorer.updates == 4
    assert list(explorer.figure.axes[1].images) == artists  # the same artist, new data and limits
    assert explorer.picture.backgrounds == full_draws == 1
    np.testing.assert_array_equal(artists[0].get_array(), explorer.shown["map"])


def test_the_cache_is_bounded():
    cache = picture.Cache(max_items=3, max_bytes=8500)
    for k in range(5):
        cache[k] = np.zeros(100, np.float32)  # 400 bytes each
    assert list(cache) == [2, 3, 4] and cache.nbytes == 1200
    cache[2]  # read: now the most recent
    cache[5] = np.zeros(100, np.float32)
    assert list(cache) == [4, 2, 5]
    cache["big"] = np.zeros(2000, np.float32)  # 8000 bytes: the older ones make room
    assert list(cache) == [5, "big"] and cache.nbytes == 8400
    cache.clear()
    assert len(cache) == 0 and cache.nbytes == 0


def test_an_explorer_keeps_a_bounded_number_of_maps(shapes_net, images, monkeypatch):
    monkeypatch.setattr(widgets, "CACHED_RESULTS", 3)
    explorer = widgets.method_explorer(shapes_net, images[0])
    for i in (1, 2, 3, 0):
        explorer.controls["image"].value = i
    assert len(explorer.cache) == 3 and (0, explorer.shown["target"], "gradient") in explorer.cache


def test_integrated_gradients_show_a_coarse_map_then_the_exact_one(shapes_net, images):
    x, _ = images
    explorer = widgets.method_explorer(shapes_net, x[:1])
    frames = []
    explorer.image.observe(
        lambda change: frames.append(
            (explorer.figure.axes[1].get_title(), explorer.status.value, explorer.shown)
        ),
        names="value",
    )
    method = f"integrated gradients ({widgets.IG_STEPS} steps)"
    explorer.controls["method"].value = method
    (coarse_title, coarse_status, _), (title, status, _) = frames
    assert f"({widgets.COARSE_STEPS} steps, refining…)" in coarse_title
    assert coarse_status == f"refining {method}…" and explorer.status.value == status == ""
    assert "refining" not in title and explorer.updates == 2
    c = explorer.shown["target"]
    exact = attribution.integrated_gradients(shapes_net, x[0], c, steps=widgets.IG_STEPS)
    np.testing.assert_allclose(explorer.shown["map"], exact.sum(0).numpy(), atol=1e-6)
    frames.clear()
    explorer.controls["method"].value = "gradient"
    explorer.controls["method"].value = method  # cached: the exact map at once
    assert len(frames) == 2 and "refining" not in frames[-1][0]


def test_encode_png_is_lossless():
    import io

    import PIL.Image

    pixels = np.random.default_rng(0).integers(0, 256, (7, 11, 4), dtype=np.uint8)
    decoded = np.asarray(PIL.Image.open(io.BytesIO(picture.encode_png(pixels))))
    np.testing.assert_array_equal(decoded, pixels)


# --- how an explorer shows where no live widget can -----------------------------------------


def test_explorer_offers_its_picture_and_a_short_text(shapes_net, images):
    explorer = widgets.method_explorer(shapes_net, images[0][:1])
    bundle = explorer._repr_mimebundle_()
    assert bundle["application/vnd.jupyter.widget-view+json"]["model_id"] == explorer.model_id
    assert bundle["image/png"] == png(explorer)  # the picture on screen now
    assert bundle["text/plain"] == "Explorer (image, target, method)"
    explorer.controls["method"].value = "saliency"
    assert explorer._repr_mimebundle_()["image/png"] == png(explorer)


def test_explorer_without_a_picture_offers_none(shapes_net, images, monkeypatch):
    explorer = widgets.method_explorer(shapes_net, images[0][:1])

    def broken(model, inputs, target):
        raise RuntimeError("this method failed")

    monkeypatch.setitem(widgets.METHODS, "deconvnet", broken)
    explorer.controls["method"].value = "deconvnet"
    assert "image/png" not in explorer._repr_mimebundle_()


# --- stored lectures: a picture or nothing, never a repr; saved state consistent or absent ---

LECTURES = sorted((Path(__file__).resolve().parent.parent / "lectures").glob("*.ipynb"))
VIEW = "application/vnd.jupyter.widget-view+json"


def widget_notebook(views: dict[str, dict], saved: dict[str, dict] | None):
    """A notebook with one cell per ``{model id: output data}`` and the saved ``state``."""
    notebook = nbformat.v4.new_notebook()
    for model_id, data in views.items():
        cell = nbformat.v4.new_code_cell("widgets.method_explorer(model, images)")
        cell.outputs = [
            nbformat.v4.new_output("display_data", data={**data, VIEW: {"model_id": model_id}})
        ]
        notebook.cells.append(cell)
    if saved is not None:
        notebook.metadata["widgets"] = {widget_state.STATE: {"state": saved, "version_major": 2}}
    return notebook


def model(*children: str) -> dict:
    return {"state": {"children": [f"IPY_MODEL_{c}" for c in children]}}


PICTURE = {"image/png": "iVBORw0KGgo=", "text/plain": "Explorer (image)"}


def test_consistent_state_passes_and_is_kept():
    notebook = widget_notebook(
        {"a1": PICTURE}, {"a1": model("b2", "c3"), "b2": model(), "c3": model()}
    )
    assert widget_state.problems(notebook) == []
    assert not widget_state.clear_stale(notebook)
    assert VIEW in notebook.cells[0].outputs[0]["data"]


def test_stale_state_is_found_and_cleared_keeping_the_picture():
    stale = widget_notebook({"a1": PICTURE}, {"f0": model("b2"), "b2": model()})
    found = widget_state.problems(stale)
    assert "cell 0 shows widget model a1, which is not saved" in found[0]
    assert found[1] == "2 saved widget models are shown by no output"
    assert widget_state.clear_stale(stale)
    assert "widgets" not in stale.metadata
    assert stale.cells[0].outputs[0]["data"] == PICTURE  # the picture shows, trusted or not
    assert widget_state.problems(stale) == []


def test_a_missing_child_makes_the_state_stale():
    notebook = widget_notebook({"a1": PICTURE}, {"a1": model("b2", "d4"), "b2": model()})
    assert widget_state.problems(notebook) == ["saved model a1 refers to model d4, not saved"]


def test_a_repr_is_found_and_a_widget_without_picture_is_removed():
    text = {"text/plain": "Explorer(children=(HBox(children=(IntSlider(value=0, ..."}
    notebook = widget_notebook({"a1": text}, None)
    found = widget_state.problems(notebook)
    assert len(found) == 2 and "without a picture" in found[1] and "Explorer(children" in found[1]
    assert widget_state.clear_stale(notebook)
    assert notebook.cells[0].outputs == [] and widget_state.problems(notebook) == []


def test_widget_state_command_reports_and_fixes(tmp_path, capsys):
    path = tmp_path / "stale.ipynb"
    nbformat.write(widget_notebook({"a1": PICTURE}, {"f0": model()}), path)
    assert widget_state.main([str(path)]) == 1
    assert "a1, which is not saved" in capsys.readouterr().out
    assert widget_state.main(["--fix", str(path)]) == 0
    assert widget_state.main([str(path)]) == 0


@pytest.mark.parametrize("path", LECTURES, ids=[p.stem for p in LECTURES])
def test_stored_lecture_shows_pictures_and_consistent_widget_state(path):
    notebook = nbformat.read(path, as_version=4)
    assert widget_state.problems(notebook) == [], (
        f"{path.name}: re-run it (jupyter nbconvert --to notebook --execute --inplace) or "
        f"clear what is stale (python -m lecture_lib.widget_state --fix {path.name})"
    )
    for index, output in widget_state.widget_outputs(notebook):
        assert not output["data"]["text/plain"].startswith("Explorer("), index
