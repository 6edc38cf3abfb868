"""The deletion explorer (``evaluation_widgets``), driven headlessly: each curve against the
model's probability on images whose pixels the test removes itself, and against
``evaluate.deletion_curve`` / ``insertion_curve`` of the whole batch."""

import matplotlib

matplotlib.use("Agg")

import copy  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from explorers import count_forward_passes, no_figure_left_open, png  # noqa: E402, F401

from lecture_lib import attribution, evaluate, evaluation_widgets  # noqa: E402
from lecture_lib.data import CLASSES, make_shapes  # noqa: E402

STEPS = 8


@pytest.fixture(scope="module")
def case(shapes_net):
    images, _, masks = make_shapes(3, seed=2026)
    generator = torch.Generator().manual_seed(1)
    maps = {
        "random": torch.rand(3, 64, 64, generator=generator),  # no ties: an order by hand
        "noise": torch.randn(3, 3, 64, 64, generator=generator),  # read as max over RGB |a|
        "gradient": attribution.gradient(shapes_net, images),
        "mask": masks.float(),
    }
    return images, maps


def by_hand(model, image, importance, k, kind="deletion", substrate=None):
    """The image after step k of STEPS, and P_c of the class predicted on the whole image: the
    k * H * W // STEPS most important pixels (no ties) go to the mean colour (or come back)."""
    h, w = image.shape[-2:]
    order = torch.as_tensor(importance).flatten().argsort(descending=True)
    moved = order[: k * h * w // STEPS]
    fill = image.mean(dim=(1, 2), keepdim=True).expand_as(image) if substrate is None else substrate
    start, end = (image, fill) if kind == "deletion" else (fill, image)
    result = start.clone().flatten(1)
    result[:, moved] = end.flatten(1)[:, moved]
    result = result.view_as(image)
    with torch.no_grad():
        c = model(image[None]).argmax(dim=1)[0]
        p = model(result[None]).softmax(dim=1)[0, c]
    return result.permute(1, 2, 0).numpy(), float(p)


def test_the_curve_is_the_probability_after_each_step(shapes_net, case):
    images, maps = case
    explorer = evaluation_widgets.deletion_explorer(
        shapes_net, images, maps, steps=STEPS, class_names=list(CLASSES)
    )
    assert explorer.controls["method"].value == "random" and explorer.shown["step"] == 0
    for k in (0, 3, STEPS):
        explorer.controls["step"].value = k
        picture, p = by_hand(shapes_net, images[0], maps["random"][0], k)
        np.testing.assert_allclose(explorer.shown["image"], picture, atol=1e-6)
        assert explorer.shown["probability"] == pytest.approx(p, abs=1e-5)
        assert explorer.shown["curve"][k] == pytest.approx(p, abs=1e-5)
        assert f"= {p:.2f}" in explorer.figure.axes[0].get_title()
    whole = evaluate.deletion_curve(shapes_net, images, maps["random"], steps=STEPS)
    np.testing.assert_allclose(explorer.shown["curve"], whole[0].numpy(), atol=1e-6)
    curve = explorer.shown["curve"]
    trapezoids = sum((curve[k - 1] + curve[k]) / (2 * STEPS) for k in range(1, STEPS + 1))
    assert explorer.shown["auc"] == pytest.approx(trapezoids, abs=1e-6)
    assert f"deletion, mean colour: AUC ↓ {trapezoids:.2f}" in explorer.figure.axes[2].get_title()


def test_moving_the_step_only_redraws(shapes_net, case):
    images, maps = case
    explorer = evaluation_widgets.deletion_explorer(shapes_net, images, maps, steps=STEPS)
    assert len(explorer.cache) == 1
    with count_forward_passes(shapes_net) as calls:
        for k in range(1, STEPS + 1):
            before, updates = png(explorer), explorer.updates
            explorer.controls["step"].value = k
            assert png(explorer) != before and explorer.updates == updates + 1
    assert calls == [] and len(explorer.cache) == 1


def test_a_revisit_is_served_from_the_cache(shapes_net, case):
    images, maps = case
    explorer = evaluation_widgets.deletion_explorer(
        shapes_net, images, maps, steps=STEPS, against="mask"
    )
    explorer.controls["image"].value = 2
    explorer.controls["method"].value = "gradient"
    assert len(explorer.cache) == 5  # (image, map) pairs: 0 random, 0 mask, 2 random, ...
    with count_forward_passes(shapes_net) as calls:
        with explorer.hold():  # back to image 0 and its first map at once
            explorer.controls["image"].value = 0
            explorer.controls["method"].value = "random"
        explorer.controls["step"].value = 5
        explorer.controls["image"].value = 2
    assert calls == [] and len(explorer.cache) == 5 and explorer.error is None
    assert (0, "random", "deletion", "mean colour") in explorer.cache
    assert explorer.shown["step"] == 5 and explorer.shown["curve"] is not None


def test_each_map_curve_and_substrate_is_the_librarys(shapes_net, case):
    images, maps = case
    explorer = evaluation_widgets.deletion_explorer(shapes_net, images, maps, steps=STEPS)
    explorer.controls["image"].value = 1
    for method in maps:
        for kind, curve_fn in (
            ("deletion", evaluate.deletion_curve),
            ("insertion", evaluate.insertion_curve),
        ):
            for name, value in evaluation_widgets.SUBSTRATES.items():
                with explorer.hold():
                    explorer.controls["method"].value = method
                    explorer.controls["curve"].value = kind
                    explorer.controls["substrate"].value = name
                whole = curve_fn(shapes_net, images, maps[method], steps=STEPS, substrate=value)
                np.testing.assert_allclose(explorer.shown["curve"], whole[1].numpy(), atol=1e-6)
    np.testing.assert_allclose(
        explorer.shown["map"], evaluate.importance(maps["mask"][1:2])[0].numpy(), atol=0
    )


def test_insertion_and_black_by_hand(shapes_net, case):
    images, maps = case
    explorer = evaluation_widgets.deletion_explorer(
        shapes_net, images, maps, steps=STEPS, curve="insertion", substrate="black"
    )
    explorer.controls["step"].value = 2
    black = torch.zeros_like(images[0])
    picture, p = by_hand(shapes_net, images[0], maps["random"][0], 2, "insertion", black)
    np.testing.assert_allclose(explorer.shown["image"], picture, atol=1e-6)
    assert explorer.shown["probability"] == pytest.approx(p, abs=1e-5)
    assert "25% put back" in explorer.figure.axes[0].get_title()
    assert "insertion, black: AUC ↑" in explorer.figure.axes[2].get_title()


def test_the_second_curve_is_drawn_dashed_or_not_at_all(shapes_net, case):
    images, maps = case
    explorer = evaluation_widgets.deletion_explorer(
        shapes_net, images, maps, steps=STEPS, against="mask"
    )
    mask_curve = evaluate.deletion_curve(shapes_net, images[0], maps["mask"][0], steps=STEPS)
    np.testing.assert_allclose(explorer.shown["against"], mask_curve.numpy(), atol=1e-6)
    dashed = explorer.figure.axes[2].lines[1]
    assert dashed.get_visible() and "dashed: mask, AUC" in explorer.figure.axes[2].get_title()
    before = png(explorer)
    explorer.controls["against"].value = evaluation_widgets.NONE
    assert png(explorer) != before and explorer.shown["against"] is None
    assert not dashed.get_visible() and "dashed" not in explorer.figure.axes[2].get_title()


def test_the_model_is_left_as_it_came(shapes_net, case):
    images, maps = case
    model = copy.deepcopy(shapes_net).train()
    model.fc2.bias.requires_grad_(False)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    explorer = evaluation_widgets.deletion_explorer(model, images, maps, against="random")
    explorer.controls["curve"].value = "insertion"
    explorer.controls["step"].value = 4
    with pytest.raises(ValueError):
        evaluation_widgets.deletion_explorer(model, images, maps, against="nothing")
    assert all(m.training for m in model.modules())
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())
    assert all(p.grad is None for p in model.parameters())
    assert [name for name, p in model.named_parameters() if not p.requires_grad] == ["fc2.bias"]
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())


def test_bad_input_is_explained(shapes_net, case):
    images, maps = case
    explore = evaluation_widgets.deletion_explorer
    with pytest.raises(TypeError, match="maps must be a dict"):
        explore(shapes_net, images, maps["random"])
    with pytest.raises(TypeError, match="at least one entry"):
        explore(shapes_net, images, {})
    with pytest.raises(ValueError, match=r"'random' have shape \(2, 64, 64\).*\[3, H, W\]"):
        explore(shapes_net, images, {"random": maps["random"][:2]})
    with pytest.raises(ValueError, match="steps must be an int in 1..100"):
        explore(shapes_net, images, maps, steps=0)
    with pytest.raises(ValueError, match="curve must be 'deletion' or 'insertion'"):
        explore(shapes_net, images, maps, curve="removal")
    with pytest.raises(ValueError, match="substrate must be one of 'mean colour'"):
        explore(shapes_net, images, maps, substrate="mean")
    with pytest.raises(ValueError, match="against must name one of the maps"):
        explore(shapes_net, images, maps, against="saliency")
    with pytest.raises(ValueError, match=r"batch \[N, C, H, W\]"):
        explore(shapes_net, torch.rand(64, 64), maps)


def test_the_picture_fits_a_slide(shapes_net, case):
    images, maps = case
    explorer = evaluation_widgets.deletion_explorer(shapes_net, images, maps)
    width, height = (explorer.figure.get_size_inches() * explorer.figure.dpi).round()
    assert width <= 960 and height <= 380


def test_titles_stay_inside_the_picture_with_long_names(shapes_net, case):
    images, maps = case
    long = {"gradient = saliency": maps["gradient"], "integrated gradients (mean)": maps["noise"]}
    explorer = evaluation_widgets.deletion_explorer(
        shapes_net, images, long, curve="insertion", substrate="mean colour",
        against="integrated gradients (mean)", class_names=list(CLASSES),
    )  # fmt: skip
    explorer.controls["step"].value = 7
    renderer = explorer.picture.canvas.get_renderer()
    inside = explorer.figure.bbox
    for ax in explorer.figure.axes:
        for text in (ax.title, ax.xaxis.label, ax.yaxis.label):
            box = text.get_window_extent(renderer)
            assert inside.x0 <= box.x0 and box.x1 <= inside.x1, text.get_text()
            assert inside.y0 <= box.y0 and box.y1 <= inside.y1, text.get_text()
