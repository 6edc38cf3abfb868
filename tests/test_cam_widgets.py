"""The Grad-CAM explorer (``cam_widgets``), driven headlessly: each picture's map against
Grad-CAM computed from scratch (a forward hook, autograd, the average gradient) and against the
library's functions called directly."""

import matplotlib

matplotlib.use("Agg")

import copy  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from explorers import count_forward_passes, no_figure_left_open, png  # noqa: E402, F401

from lecture_lib import attribution, cam_widgets, plot  # noqa: E402
from lecture_lib.data import CLASSES, make_shapes  # noqa: E402

SHAPES_LAYERS = ["conv1", "relu1", "conv2", "relu2", "conv3", "relu3", "conv4", "relu4"]


@pytest.fixture(scope="module")
def images():
    return make_shapes(3, seed=2026)[:2]


def cam_from_scratch(model, image, c, layer, per_position=False):
    """Grad-CAM by its definition: A = the layer's output, dS_c/dA by autograd, the weights
    their mean over positions (HiResCAM: the gradient itself), ReLU of the weighted sum,
    enlarged bilinearly to the image."""
    module = dict(model.named_modules())[layer]
    kept = []

    def keep(_module, _inputs, output):
        kept.append(output.clone())  # A itself; the layers above get a copy (in-place ReLUs)
        return kept[-1].clone()

    handle = module.register_forward_hook(keep)
    try:
        score = model(image[None].clone())[0, c]
    finally:
        handle.remove()
    a = kept[-1]
    (grad,) = torch.autograd.grad(score, a)
    weights = grad if per_position else grad.mean(dim=(2, 3), keepdim=True)
    cam = torch.relu((weights * a).sum(dim=1, keepdim=True))
    return F.interpolate(cam, size=image.shape[-2:], mode="bilinear", align_corners=False)[0, 0]


def predicted(model, x):
    with torch.no_grad():
        return model(x).argmax(dim=1)


def test_the_map_is_grad_cam_of_the_last_relu_for_the_predicted_class(shapes_net, images):
    x, labels = images
    explorer = cam_widgets.grad_cam_explorer(shapes_net, x, labels, class_names=list(CLASSES))
    assert list(explorer.controls["layer"].options) == SHAPES_LAYERS
    assert explorer.controls["layer"].value == "relu4"
    c = int(predicted(shapes_net, x)[0])
    assert explorer.shown["target"] == c
    expected = cam_from_scratch(shapes_net, x[0], c, "relu4").detach().numpy()
    np.testing.assert_allclose(explorer.shown["map"], expected, atol=1e-5 * expected.max())
    direct = attribution.grad_cam(shapes_net, x[0], c, layer="relu4").numpy()
    np.testing.assert_array_equal(explorer.shown["map"], direct)
    assert "relu4 (8 × 8)" in explorer.figure.axes[1].get_title()
    assert f"true: {CLASSES[int(labels[0])]}" in explorer.figure.axes[0].get_title()


@pytest.mark.parametrize(
    ("control", "value", "size"),
    [("layer", "conv3", "16 × 16"), ("layer", "relu1", "64 × 64"), ("target", 2, "8 × 8")],
)
def test_layer_and_class_change_the_map(shapes_net, images, control, value, size):
    x, _ = images
    explorer = cam_widgets.grad_cam_explorer(shapes_net, x)
    explorer.controls["image"].value = 2
    before, updates = png(explorer), explorer.updates
    explorer.controls[control].value = value
    assert png(explorer) != before and explorer.updates == updates + 1
    c = int(predicted(shapes_net, x)[2]) if control == "layer" else value
    layer = value if control == "layer" else "relu4"
    assert explorer.shown["target"] == c and explorer.shown["layer"] == layer
    expected = cam_from_scratch(shapes_net, x[2], c, layer).detach().numpy()
    np.testing.assert_allclose(explorer.shown["map"], expected, atol=1e-5 * max(expected.max(), 1))
    assert f"{layer} ({size})" in explorer.figure.axes[1].get_title()


def test_every_method_is_the_library_function_at_that_layer(shapes_net, images):
    x, _ = images
    explorer = cam_widgets.grad_cam_explorer(shapes_net, x)
    explorer.controls["target"].value = 1
    explorer.controls["layer"].value = "relu3"
    direct = {
        "Grad-CAM": attribution.grad_cam(shapes_net, x[0], 1, layer="relu3"),
        "HiResCAM": attribution.hires_cam(shapes_net, x[0], 1, layer="relu3"),
        "guided Grad-CAM": attribution.guided_grad_cam(shapes_net, x[0], 1, layer="relu3"),
        "guided HiResCAM": attribution.guided_grad_cam(
            shapes_net, x[0], 1, layer="relu3", elementwise=True
        ),
    }
    pictures = set()
    for method, expected in direct.items():
        explorer.controls["method"].value = method
        pictures.add(png(explorer))
        np.testing.assert_array_equal(explorer.shown["map"], expected.numpy())
        assert explorer.shown["method"] == method and method in explorer.figure.axes[1].get_title()
    assert len(pictures) == 4
    per_position = cam_from_scratch(shapes_net, x[0], 1, "relu3", per_position=True)
    np.testing.assert_allclose(direct["HiResCAM"], per_position.detach(), atol=1e-6)


def test_the_overlay_is_the_map_over_the_darkened_grey_image(shapes_net, images):
    x, _ = images
    explorer = cam_widgets.grad_cam_explorer(shapes_net, x)
    shown, picture = explorer.shown, explorer.shown["image"]
    style = plot.map_style(shown["map"], signed=False)
    grey = picture @ np.array([0.299, 0.587, 0.114])
    low, high = grey.min(), grey.max()
    dark = np.clip((grey - low) / ((high - low) / plot.DARK_IMAGE), 0, 1)
    cold = shown["map"] == 0  # no map: the darkened grey image
    np.testing.assert_allclose(shown["overlay"][cold], np.repeat(dark[cold, None], 3, 1), atol=1e-6)
    hot = shown["map"] >= style.vmax  # at the limit: 80 % the colormap's top colour
    assert hot.any() and cold.any()
    top = np.array(matplotlib.colormaps[plot.SEQUENTIAL](1.0)[:3])
    expected = 0.8 * top + 0.2 * dark[hot, None]
    np.testing.assert_allclose(shown["overlay"][hot], expected, atol=1e-6)


def test_a_revisit_is_served_from_the_cache(shapes_net, images):
    x, _ = images
    explorer = cam_widgets.grad_cam_explorer(shapes_net, x)
    explorer.controls["layer"].value = "conv2"
    explorer.controls["image"].value = 1
    assert len(explorer.cache) == 3
    with count_forward_passes(shapes_net) as calls:
        explorer.controls["image"].value = 0
        explorer.controls["layer"].value = "relu4"
    assert calls == [] and len(explorer.cache) == 3 and explorer.error is None
    c = int(predicted(shapes_net, x)[0])
    assert (0, c, "relu4", "Grad-CAM") in explorer.cache


def test_a_map_without_positive_evidence_says_so(shapes_net, images, monkeypatch):
    x, _ = images
    explorer = cam_widgets.grad_cam_explorer(shapes_net, x)
    monkeypatch.setitem(
        cam_widgets.METHODS, "HiResCAM", lambda model, image, c, layer: torch.zeros(64, 64)
    )
    explorer.controls["method"].value = "HiResCAM"
    assert explorer.error is None and "zero everywhere" in explorer.figure.axes[1].get_title()
    assert not explorer.shown["map"].any()


def test_the_model_is_left_as_it_came(shapes_net, images):
    x, _ = images
    model = copy.deepcopy(shapes_net).train()
    model.conv1.weight.requires_grad_(False)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    explorer = cam_widgets.grad_cam_explorer(model, x)
    for method in cam_widgets.METHODS:
        explorer.controls["method"].value = method
    explorer.controls["layer"].value = "conv1"
    with pytest.raises(ValueError):
        cam_widgets.grad_cam_explorer(model, x, layers=["fc1"])
    assert all(m.training for m in model.modules())
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())
    assert all(not m._backward_hooks for m in model.modules())
    assert all(p.grad is None for p in model.parameters())
    assert [p.requires_grad for p in model.parameters()] == [False] + [True] * (
        len(list(model.parameters())) - 1
    )
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())


def test_bad_input_is_explained(shapes_net, images):
    x, _ = images
    explore = cam_widgets.grad_cam_explorer
    with pytest.raises(ValueError, match=r"batch \[N, C, H, W\]"):
        explore(shapes_net, torch.rand(64, 64))
    with pytest.raises(ValueError, match="method must be one of 'Grad-CAM'"):
        explore(shapes_net, x, method="CAM")
    with pytest.raises(ValueError, match="'fc1' gives no spatial maps.*relu4"):
        explore(shapes_net, x, layers=["relu4", "fc1"])
    with pytest.raises(ValueError, match="'conv9' gives no spatial maps"):
        explore(shapes_net, x, layers="conv9")
    with pytest.raises(ValueError, match="distinct layers"):
        explore(shapes_net, x, layers=[])
    chosen = explore(shapes_net, x, layers=["relu2", "relu3"])
    assert list(chosen.controls["layer"].options) == ["relu2", "relu3"]
    assert chosen.controls["layer"].value == "relu3"


def test_a_failing_update_is_shown_not_raised(shapes_net, images, monkeypatch):
    x, _ = images
    explorer = cam_widgets.grad_cam_explorer(shapes_net, x)

    def broken(model, image, c, layer):
        raise RuntimeError("this map failed")

    monkeypatch.setitem(cam_widgets.METHODS, "HiResCAM", broken)
    explorer.controls["method"].value = "HiResCAM"
    assert explorer.error == "RuntimeError: this map failed"
    explorer.controls["method"].value = "Grad-CAM"
    assert explorer.error is None and png(explorer)


def test_the_picture_fits_a_slide(shapes_net, images):
    explorer = cam_widgets.grad_cam_explorer(shapes_net, images[0])
    width, height = (explorer.figure.get_size_inches() * explorer.figure.dpi).round()
    assert width <= 960 and height <= 380


def test_titles_and_the_scale_label_stay_inside_the_picture(shapes_net, images, monkeypatch):
    x, labels = images
    explorer = cam_widgets.grad_cam_explorer(shapes_net, x, labels, class_names=list(CLASSES))
    monkeypatch.setitem(  # the longest title: a map that is zero everywhere
        cam_widgets.METHODS, "guided HiResCAM", lambda model, image, c, layer: torch.zeros(64, 64)
    )
    renderer = explorer.picture.canvas.get_renderer()
    inside = explorer.figure.bbox
    for method in cam_widgets.METHODS:
        explorer.controls["method"].value = method
        explorer.picture.render()
        texts = [ax.title for ax in explorer.figure.axes] + [explorer.figure.axes[2].yaxis.label]
        for text in texts:
            box = text.get_window_extent(renderer)
            assert inside.x0 <= box.x0 and box.x1 <= inside.x1, text.get_text()
            assert inside.y0 <= box.y0 and box.y1 <= inside.y1, text.get_text()
    assert "zero everywhere" in explorer.figure.axes[1].get_title()
