"""Fooling images: the class read back from the model, the steps, the Taylor view."""

import copy

import pytest
import torch
from torch import nn

from lecture_lib import fooling
from lecture_lib.fooling import GREY_LEVEL


@pytest.fixture(scope="module")
def images_and_targets(shapes_net, shapes_batch):
    x = shapes_batch[0][:4]
    with torch.no_grad():
        predicted = shapes_net(x).argmax(1)
    return x, (predicted + 1) % 5


def classify(model, images):
    with torch.no_grad():
        return model(images).argmax(1)


def test_fooling_image_is_called_the_target_class(shapes_net, images_and_targets):
    x, target = images_and_targets
    result = fooling.fooling_image(shapes_net, x, target)
    assert result.fooled.all()
    assert torch.equal(classify(shapes_net, result.image), target)  # read back independently
    assert torch.equal(result.source, classify(shapes_net, x))
    torch.testing.assert_close(result.change, result.image - x)
    assert result.image.min() >= 0 and result.image.max() <= 1
    flat = (result.image - x).flatten(1)
    torch.testing.assert_close(result.l2, flat.norm(dim=1))
    torch.testing.assert_close(result.linf, flat.abs().amax(dim=1))
    torch.testing.assert_close(result.relative_l2, flat.norm(dim=1) / x.flatten(1).norm(dim=1))
    assert (result.steps >= 1).all() and (result.steps <= 100).all()


def test_it_stops_at_the_first_step_that_fools(shapes_net, images_and_targets):
    x, target = images_and_targets
    result = fooling.fooling_image(shapes_net, x[:1], target[:1])
    steps = int(result.steps[0])
    one_fewer = fooling.fooling_image(shapes_net, x[:1], target[:1], max_steps=max(steps - 1, 1))
    if steps > 1:
        assert not one_fewer.fooled[0]
        assert int(one_fewer.steps[0]) == steps - 1
    # each step has length step_size (before clamping), so the change is at most steps * step
    assert result.l2[0] <= steps * 0.1 + 1e-5


def test_first_step_follows_the_normalised_gradient_of_the_target_score():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 3)).eval()
    x = torch.full((1, 3, 2, 2), 0.5)
    source = int(model(x).argmax())
    target = (source + 1) % 3
    result = fooling.fooling_image(model, x, target, step_size=1e-3, max_steps=1, clamp=False)
    w = model[1].weight[target].detach().view(1, 3, 2, 2)  # dS_t/dI of a linear model
    torch.testing.assert_close(result.change, 1e-3 * w / w.norm())


def test_fast_gradient_sign_with_a_given_epsilon(shapes_net, images_and_targets):
    x, target = images_and_targets
    source = classify(shapes_net, x)
    result = fooling.fast_gradient_sign(shapes_net, x, target, epsilon=0.01, clamp=False)
    # the direction: the sign of d(S_t - S_c)/dI, from finite differences at a few pixels
    model = copy.deepcopy(shapes_net).double()
    generator = torch.Generator().manual_seed(0)
    for _ in range(6):
        c, i, j = (int(torch.randint(0, s, (1,), generator=generator)) for s in (3, 64, 64))
        up, down = x[:1].double().clone(), x[:1].double().clone()
        up[0, c, i, j] += 1e-6
        down[0, c, i, j] -= 1e-6
        with torch.no_grad():
            margin = lambda s: s[0, target[0]] - s[0, source[0]]  # noqa: E731
            slope = (margin(model(up)) - margin(model(down))) / 2e-6
        if abs(slope) > 1e-6:
            assert result.change[0, c, i, j] == pytest.approx(
                0.01 * float(torch.sign(slope)), abs=1e-7
            )
    assert torch.allclose(result.linf, torch.full((4,), 0.01))
    assert torch.equal(result.steps, torch.ones(4, dtype=torch.long))
    assert torch.equal(result.predicted, classify(shapes_net, result.image))


def test_fast_gradient_sign_finds_the_smallest_number_of_grey_levels(
    shapes_net, images_and_targets
):
    x, target = images_and_targets
    result = fooling.fast_gradient_sign(shapes_net, x, target)
    direction = torch.sign(fooling._margin_gradient(shapes_net, x, result.source, target))
    for n in range(len(x)):
        if not result.fooled[n]:
            continue
        levels = round(float(result.linf[n]) / GREY_LEVEL)
        assert float(result.linf[n]) == pytest.approx(levels * GREY_LEVEL, abs=1e-6)
        below = (x[n] + (levels - 1) * GREY_LEVEL * direction[n]).clamp(0, 1)
        assert levels == 1 or classify(shapes_net, below[None])[0] != target[n]
        assert classify(shapes_net, result.image[n : n + 1])[0] == target[n]


def test_taylor_estimate_is_exact_for_a_linear_model():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 3)).eval()
    x = torch.rand(2, 3, 2, 2)
    source = model(x).argmax(1)
    target = (source + 1) % 3
    estimate = fooling.taylor_estimate(model, x, target)
    weights = model[1].weight.detach()
    g = weights[target] - weights[source]  # [2, 12]
    with torch.no_grad():
        scores = model(x)
    margin = scores[[0, 1], target] - scores[[0, 1], source]
    torch.testing.assert_close(estimate.margin, margin)
    torch.testing.assert_close(estimate.l2, margin.abs() / g.norm(dim=1))
    torch.testing.assert_close(estimate.linf, margin.abs() / g.abs().sum(dim=1))
    # the predicted smallest change, a hair longer, reaches the target's score exactly
    delta = (1.001 * margin.abs() / g.square().sum(dim=1))[:, None] * g
    after = model(x + delta.view_as(x))
    assert (after[[0, 1], target] > after[[0, 1], source]).all()


def test_pixels_restrict_the_change(shapes_net, images_and_targets, shapes_batch):
    x, target = images_and_targets
    masks = shapes_batch[2][:4]
    for result in (
        fooling.fooling_image(shapes_net, x, target, pixels=masks, max_steps=5),
        fooling.fast_gradient_sign(shapes_net, x, target, epsilon=0.02, pixels=masks),
    ):
        outside = ~masks[:, None].expand_as(x)
        assert (result.change[outside] == 0).all()
        assert (result.change != 0).any()


def test_single_image_and_report(shapes_net, images_and_targets):
    x, target = images_and_targets
    result = fooling.fooling_image(shapes_net, x[0], int(target[0]))
    assert result.image.shape == (3, 64, 64) and result.steps.ndim == 0 and result.l2.ndim == 0
    text = str(result)
    assert "||delta||_2" in text and f"{float(result.l2):.3f}" in text and "yes" in text
    estimate = fooling.taylor_estimate(shapes_net, x[0], int(target[0]))
    assert estimate.l2.ndim == 0 and estimate.l2 > 0


@pytest.mark.parametrize(
    "function", [fooling.fooling_image, fooling.fast_gradient_sign, fooling.taylor_estimate]
)
def test_errors_are_explained(shapes_net, images_and_targets, function):
    x, target = images_and_targets
    name = function.__name__
    source = classify(shapes_net, x)
    with pytest.raises(ValueError, match=rf"{name}: image 0 is already classified as class"):
        function(shapes_net, x, source)
    with pytest.raises(TypeError, match="class to fool the network into"):
        function(shapes_net, x, None)
    with pytest.raises(ValueError, match="target 5 is out of range"):
        function(shapes_net, x, 5)
    with pytest.raises(ValueError, match=r"expects images \[N, C, H, W\]"):
        function(shapes_net, torch.rand(4, 12), target)


def test_bad_options_are_explained(shapes_net, images_and_targets):
    x, target = images_and_targets
    with pytest.raises(ValueError, match="step_size must be a positive number"):
        fooling.fooling_image(shapes_net, x, target, step_size=0)
    with pytest.raises(ValueError, match="max_steps must be an int >= 1"):
        fooling.fooling_image(shapes_net, x, target, max_steps=0)
    with pytest.raises(ValueError, match="epsilon must be a positive number"):
        fooling.fast_gradient_sign(shapes_net, x, target, epsilon=-0.1)
    with pytest.raises(ValueError, match="pixels must be a bool mask"):
        fooling.fooling_image(shapes_net, x, target, pixels=torch.ones(4, 32, 32, dtype=torch.bool))
    with pytest.raises(ValueError, match="no pixel to change"):
        fooling.fooling_image(shapes_net, x, target, pixels=torch.zeros(64, 64, dtype=torch.bool))


def test_model_and_images_left_as_they_came(shapes_net, images_and_targets):
    model = copy.deepcopy(shapes_net).train()
    model.conv2.weight.requires_grad_(False)
    x, target = images_and_targets
    kept = x.clone()
    before = [p.detach().clone() for p in model.parameters()]
    fooling.fooling_image(model, x, target, max_steps=3)
    fooling.fast_gradient_sign(model, x, target, epsilon=0.01)
    with pytest.raises(ValueError):
        fooling.fooling_image(model, x, classify(shapes_net, x))
    assert all(m.training for m in model.modules())
    assert [p.requires_grad for p in model.parameters()][2] is False
    assert all(p.grad is None for p in model.parameters())
    assert all(torch.equal(p, q) for p, q in zip(before, model.parameters()))
    assert all(not m._forward_hooks for m in model.modules())
    assert torch.equal(x, kept) and not x.requires_grad


def linear_model(in_place_first: bool = False, dtype=torch.float32) -> nn.Sequential:
    torch.manual_seed(0)
    first = [nn.ReLU(inplace=True)] if in_place_first else []
    return nn.Sequential(*first, nn.Flatten(), nn.Linear(12, 3)).to(dtype).eval()


@pytest.mark.parametrize("mode", [torch.no_grad, torch.inference_mode])
def test_the_same_under_no_grad_and_inference_mode(mode):
    model = linear_model()
    x = torch.rand(2, 3, 2, 2)
    target = (model(x).argmax(1) + 1) % 3
    calls = [
        lambda t: fooling.fooling_image(model, x, t, step_size=0.05, max_steps=5).image,
        lambda t: fooling.fast_gradient_sign(model, x, t).image,
        lambda t: fooling.taylor_estimate(model, x, t).gradient,
    ]
    for call in calls:
        want = call(target)
        with mode():
            got = call(target.clone())
        torch.testing.assert_close(got, want)


def test_float64_images_for_a_float32_model_and_a_float64_epsilon():
    model = linear_model()
    x = torch.rand(2, 3, 2, 2, dtype=torch.float64)
    target = (model(x.float()).argmax(1) + 1) % 3
    for call in (
        lambda y: fooling.fooling_image(model, y, target, step_size=0.05, max_steps=5).image,
        lambda y: fooling.fast_gradient_sign(model, y, target).image,
        lambda y: fooling.taylor_estimate(model, y, target).l2,
    ):
        torch.testing.assert_close(call(x).float(), call(x.float()))
    wide = linear_model(dtype=torch.float64)
    epsilon = 0.1234567890123
    result = fooling.fast_gradient_sign(wide, x, target, epsilon=epsilon, clamp=False)
    assert result.change.abs().max().item() == pytest.approx(epsilon, abs=1e-15)


def test_a_first_layer_relu_in_place_changes_nothing():
    plain, in_place = linear_model(), linear_model(in_place_first=True)
    plain = nn.Sequential(nn.ReLU(), *plain)
    x = torch.rand(2, 3, 2, 2) - 0.5
    target = (plain(x).argmax(1) + 1) % 3
    for call in (
        lambda m: fooling.fooling_image(m, x, target, step_size=0.05, max_steps=5).image,
        lambda m: fooling.fast_gradient_sign(m, x, target).image,
        lambda m: fooling.taylor_estimate(m, x, target).gradient,
    ):
        torch.testing.assert_close(call(in_place), call(plain))


def test_images_with_the_wrong_number_of_channels_are_refused(shapes_net):
    with pytest.raises(ValueError, match=r"inputs have 1 channels .*'conv1' \(Conv2d\) takes 3"):
        fooling.fooling_image(shapes_net, torch.rand(1, 64, 64), 1)
