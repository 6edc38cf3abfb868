"""The explorer of adversarial examples, driven headlessly: each picture against a computation
of its own (the signed step, the class read back, the Taylor expansion's margin)."""

import matplotlib

matplotlib.use("Agg")

import copy  # noqa: E402

import ipywidgets  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from lecture_lib import fooling  # noqa: E402
from lecture_lib.data import CLASSES, make_shapes  # noqa: E402
from lecture_lib.fooling_widgets import GREY_LEVELS, fooling_explorer  # noqa: E402

TEST_SEED = 2026


@pytest.fixture(scope="module")
def images():
    return make_shapes(3, seed=TEST_SEED)[0]


def scores_of(model, x):
    with torch.no_grad():
        return model(x[None])[0]


def margin_gradient(model, x, c, t):
    """d(S_t - S_c)/dx at x, in float64 on a copy of the model (autograd, nothing else)."""
    double = copy.deepcopy(model).double().eval()
    image = x.double()[None].clone().requires_grad_(True)
    out = double(image)[0]
    (out[t] - out[c]).backward()
    return image.grad[0], float((out[t] - out[c]).detach())


def no_hooks_left(model) -> bool:
    return all(
        not m._forward_hooks and not m._forward_pre_hooks and not m._backward_hooks
        for m in model.modules()
    )


def test_the_signed_step_is_the_image_plus_epsilon_times_the_sign(shapes_net, images):
    explorer = fooling_explorer(shapes_net, images)
    x = images[0]
    ranked = scores_of(shapes_net, x).argsort(descending=True)
    c, t = int(ranked[0]), int(ranked[1])  # the runner-up, the default target
    for levels in (2, 8, 32):
        explorer.controls["epsilon"].value = levels
        assert explorer.error is None, explorer.error
        shown = explorer.shown
        assert (shown["source"], shown["target"]) == (c, t)
        g, _ = margin_gradient(shapes_net, x, c, t)
        epsilon = torch.tensor(levels / 255, dtype=torch.float32)
        expected = (x + epsilon * g.sign().float()).clamp(0, 1)
        steady = (g.abs() > 1e-9 * g.abs().max()).numpy()  # a sign that rounding cannot flip
        np.testing.assert_allclose(shown["perturbed"][steady], expected.numpy()[steady], atol=1e-7)
        np.testing.assert_allclose(shown["change"], shown["perturbed"] - x.numpy(), atol=1e-7)
        assert np.abs(shown["change"]).max() <= levels / 255 + 1e-6
        # the class and probability shown: a forward pass of the perturbed image
        after = scores_of(shapes_net, torch.from_numpy(shown["perturbed"]))
        assert shown["predicted"] == int(after.argmax())
        assert shown["probability"] == pytest.approx(float(after.softmax(0).max()), abs=1e-6)
        assert shown["fooled"] == (int(after.argmax()) == t)
        assert shown["margin_after"] == pytest.approx(float(after[t] - after[c]), abs=1e-4)
        title = explorer.figure.axes[3].get_title()  # original, change, its scale, changed
        assert f"now: {CLASSES[shown['predicted']]} (p = {shown['probability']:.2f})" in title
    assert explorer.shown["fooled"]  # 32 grey levels fool ShapesNet on this image


def test_the_taylor_line_is_the_margin_plus_the_gradient_times_the_change(shapes_net, images):
    explorer = fooling_explorer(shapes_net, images, grey_levels=4)
    x, shown = images[0], explorer.shown
    g, m0 = margin_gradient(shapes_net, x, shown["source"], shown["target"])
    assert shown["margin"] == pytest.approx(m0, abs=1e-4)
    change = torch.from_numpy(shown["change"]).double()
    assert shown["taylor_margin"] == pytest.approx(m0 + float((g * change).sum()), abs=1e-3)
    assert f"before {m0:.2f}" in explorer.figure.texts[0].get_text()
    # the amplified change: 0.5 + a * delta, with a * max|delta| = 0.5
    drawn = explorer.figure.axes[1].images[0].get_array()
    assert shown["amplification"] * np.abs(shown["change"]).max() == pytest.approx(0.5)
    np.testing.assert_allclose(
        drawn, np.clip(0.5 + shown["amplification"] * shown["change"].transpose(1, 2, 0), 0, 1)
    )


def test_gradient_steps_are_the_librarys_and_a_longer_run_is_not_recomputed(shapes_net, images):
    explorer = fooling_explorer(shapes_net, images, attack="gradient steps", steps=100)
    assert explorer.controls["epsilon"].disabled and not explorer.controls["steps"].disabled
    x, shown = images[1], None
    explorer.controls["image"].value = 1
    shown = explorer.shown
    reference = fooling.fooling_image(shapes_net, x, shown["target"], max_steps=100)
    np.testing.assert_array_equal(shown["perturbed"], reference.image.numpy())
    assert shown["steps"] == int(reference.steps) < 100 and shown["fooled"]
    assert f"{shown['steps']} gradient steps of 0.1" in explorer.figure.axes[1].get_title()
    calls = []
    handle = shapes_net.register_forward_pre_hook(lambda module, args: calls.append(1))
    try:
        explorer.controls["steps"].value = 60  # stops at the same step: nothing new to compute
        explorer.controls["image"].value = 0  # seen before: from the cache
        explorer.controls["image"].value = 1
    finally:
        handle.remove()
    assert calls == [] and explorer.error is None
    assert explorer.shown["steps"] == shown["steps"]
    explorer.controls["steps"].value = 1  # fewer steps than it took: a new, shorter run
    assert explorer.shown["steps"] == 1
    np.testing.assert_array_equal(
        explorer.shown["perturbed"],
        fooling.fooling_image(shapes_net, x, shown["target"], max_steps=1).image.numpy(),
    )


def test_a_revisit_is_served_from_the_cache(shapes_net, images):
    explorer = fooling_explorer(shapes_net, images)
    explorer.controls["epsilon"].value = 16
    explorer.controls["image"].value = 2
    before = len(explorer.cache)
    calls = []
    handle = shapes_net.register_forward_pre_hook(lambda module, args: calls.append(1))
    try:
        explorer.controls["image"].value = 0
        explorer.controls["epsilon"].value = 8
    finally:
        handle.remove()
    assert calls == [] and len(explorer.cache) == before and explorer.error is None


def test_any_class_but_the_predicted_one(shapes_net, images):
    explorer = fooling_explorer(shapes_net, images)
    # the first dropdown (the one a browser test moves on by one) never leads to an error
    dropdowns = [k for k, c in explorer.controls.items() if isinstance(c, ipywidgets.Dropdown)]
    assert dropdowns == ["attack", "target"]
    c = explorer.shown["source"]
    other = (c + 2) % len(CLASSES)
    explorer.controls["target"].value = other
    assert explorer.error is None and explorer.shown["target"] == other
    assert f"fool into: {CLASSES[other]}" in explorer.figure.axes[0].get_title()
    explorer.controls["target"].value = c
    assert explorer.error == (
        f"ValueError: image 0 is already classified as {CLASSES[c]!r}; choose another class to "
        "fool it into (or 'runner-up', the closest other class)."
    )
    assert explorer.image.layout.display == "none"
    explorer.controls["target"].value = other
    assert explorer.error is None and explorer.image.layout.display is None


def test_the_model_is_left_as_it_came(shapes_net, images):
    model = copy.deepcopy(shapes_net).train()
    model.conv1.weight.requires_grad_(False)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    explorer = fooling_explorer(model, images[:2])
    explorer.controls["attack"].value = "gradient steps"
    explorer.controls["image"].value = 1
    explorer.controls["target"].value = explorer.shown["source"]  # an error on the way
    assert all(m.training for m in model.modules())
    assert no_hooks_left(model)
    assert not model.conv1.weight.requires_grad
    assert all(p.grad is None for p in model.parameters())
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())


def test_bad_settings_are_explained(shapes_net, images):
    with pytest.raises(ValueError, match="attack must be one of"):
        fooling_explorer(shapes_net, images, attack="fgsm")
    with pytest.raises(ValueError, match=r"grey_levels must be one of .*got grey_levels=5"):
        fooling_explorer(shapes_net, images, grey_levels=5)
    with pytest.raises(ValueError, match="steps must be an int in 1..100"):
        fooling_explorer(shapes_net, images, steps=0)
    with pytest.raises(ValueError, match=r"batch \[N, C, H, W\]"):
        fooling_explorer(shapes_net, torch.rand(64, 64))
    assert 8 in GREY_LEVELS


def test_predicted_margin_is_linear_in_the_change(shapes_net, images):
    x = images[0]
    with torch.no_grad():
        c, t = (int(k) for k in shapes_net(x[None])[0].argsort(descending=True)[:2])
    estimate = fooling.taylor_estimate(shapes_net, x, t)
    delta = 1e-3 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    after = scores_of(shapes_net, (x.double() + delta.double()).float())
    # a small change: the network's margin is the linear model's, to second order
    assert float(estimate.predicted_margin(delta)) == pytest.approx(
        float(after[t] - after[c]), abs=2e-3
    )
    assert float(estimate.predicted_margin(torch.zeros_like(x))) == float(estimate.margin)
    with pytest.raises(ValueError, match="change must have the images' shape"):
        estimate.predicted_margin(torch.zeros(3, 8, 8))


def test_the_picture_is_the_figure_whole_and_fits_a_slide(shapes_net, images):
    from test_widgets import full_draw, parts_cut_off, shown_pixels

    explorer = fooling_explorer(shapes_net, images)
    for attack, image in (("signed step", 0), ("gradient steps", 1)):
        with explorer.hold():
            explorer.controls["attack"].value = attack
            explorer.controls["image"].value = image
        reference, shown = full_draw(explorer), shown_pixels(explorer)
        assert shown.shape == reference.shape and shown.shape[0] <= 380  # a 1280 x 720 slide
        differ = np.abs(shown - reference).max(axis=-1) > 40
        assert differ.mean() < 0.005, differ.mean()
        assert parts_cut_off(explorer.figure) == []
        line = explorer.figure.texts[0].get_window_extent()
        assert line.x0 >= 0 and line.x1 <= shown.shape[1] and line.y0 >= 0
