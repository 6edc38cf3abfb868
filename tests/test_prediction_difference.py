"""Prediction difference analysis against plain loops, closed forms and textbook formulas."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lecture_lib import perturbation
from lecture_lib.data import make_shapes
from lecture_lib.models import load_shapes_net
from lecture_lib.prediction_difference import (
    PatchGaussian,
    condition,
    forward_passes,
    patch_gaussian,
    prediction_difference,
)
from lecture_lib.targets import Neuron


def snapshot(model: nn.Module) -> dict:
    return {
        "modes": [m.training for m in model.modules()],
        "state": {k: v.clone() for k, v in model.state_dict().items()},
        "requires_grad": [p.requires_grad for p in model.parameters()],
    }


def assert_unchanged(model: nn.Module, before: dict) -> None:
    after = snapshot(model)
    assert after["modes"] == before["modes"]
    assert after["requires_grad"] == before["requires_grad"]
    for key, value in before["state"].items():
        assert torch.equal(after["state"][key], value), key
    assert all(p.grad is None for p in model.parameters())
    for m in model.modules():
        assert not m._forward_hooks and not m._forward_pre_hooks


def positions(side, window, stride):
    starts = list(range(0, side - window + 1, stride))
    if starts[-1] != side - window:
        starts.append(side - window)
    return starts


def log2_odds(p, n, k):
    if n is not None:
        p = (p * n + 1) / (n + k)
    return math.log2(p / (1 - p))


def marginal_by_loop(model, image, target, data, window, stride, laplace_n):
    """The paper's formula, one window and one data image at a time, in float64."""
    model = model.double()
    image, data = image.double(), data.double()
    _, height, width = image.shape
    with torch.no_grad():
        probs = torch.softmax(model(image[None]), dim=1)[0]
    k = len(probs)
    we_x = log2_odds(probs[target].item(), laplace_n, k)
    total = torch.zeros(height, width, dtype=torch.float64)
    count = torch.zeros(height, width, dtype=torch.float64)
    for r in positions(height, window, stride):
        for c in positions(width, window, stride):
            p = 0.0
            for other in data:
                replaced = image.clone()
                replaced[:, r : r + window, c : c + window] = other[
                    :, r : r + window, c : c + window
                ]
                with torch.no_grad():
                    p += torch.softmax(model(replaced[None]), dim=1)[0, target].item()
            evidence = we_x - log2_odds(p / len(data), laplace_n, k)
            total[r : r + window, c : c + window] += evidence
            count[r : r + window, c : c + window] += 1
    return total / count


@pytest.fixture(scope="module")
def shapes():
    model = load_shapes_net()
    images, _, _ = make_shapes(2, seed=2026)
    data, _, _ = make_shapes(4, seed=5)
    return model, images, data


@pytest.mark.parametrize(("incremental", "laplace_n"), [(True, 20), (False, 16000)])
def test_marginal_equals_the_loop_over_windows_and_data(shapes, incremental, laplace_n):
    model, images, data = shapes
    target = 1
    found = prediction_difference(
        model, images[0], target, window=16, stride=8, sampler="marginal", data=data,
        samples=None, laplace_n=laplace_n, incremental=incremental,
    )  # fmt: skip
    expected = marginal_by_loop(load_shapes_net(), images[0], target, data, 16, 8, laplace_n)
    assert found.shape == (64, 64)
    torch.testing.assert_close(found.double(), expected, atol=2e-4, rtol=1e-4)
    assert found.abs().max() > 0.01  # the map says something


def test_marginal_without_laplace_and_predicted_class(shapes):
    model, images, data = shapes
    found = prediction_difference(
        model, images, window=32, stride=16, sampler="marginal", data=data[:2], samples=None,
        laplace_n=None,
    )  # fmt: skip
    with torch.no_grad():
        predicted = model(images).argmax(dim=1)
    for k in range(2):
        expected = marginal_by_loop(
            load_shapes_net(), images[k], int(predicted[k]), data[:2], 32, 16, None
        )
        torch.testing.assert_close(found[k].double(), expected, atol=2e-3, rtol=1e-3)


class Linear(nn.Sequential):
    """Two classes whose scores are linear in the pixels: logits = W x + b."""

    def __init__(self, shape, seed=0):
        generator = torch.Generator().manual_seed(seed)
        super().__init__(nn.Flatten(), nn.Linear(math.prod(shape), 2))
        with torch.no_grad():
            self[1].weight.copy_(torch.randn(2, math.prod(shape), generator=generator) * 0.3)
            self[1].bias.copy_(torch.tensor([0.2, -0.1]))


def test_linear_model_in_closed_form():
    """Filling with a constant b: odds p0/p1 = exp(z0 - z1), so WE_w = (w0 - w1).(x - b)_w / ln 2."""
    shape = (2, 6, 6)
    model = Linear(shape)
    image = torch.rand(shape, generator=torch.Generator().manual_seed(1))
    b = torch.full(shape, 0.3)
    found = prediction_difference(
        model, image, 0, window=3, stride=1, sampler="marginal", data=b.expand(3, *shape),
        samples=None, laplace_n=None,
    )  # fmt: skip
    w = (model[1].weight[0] - model[1].weight[1]).detach().view(shape).double()
    contribution = (w * (image - b).double()).sum(0) / math.log(2)  # per pixel, in bits
    expected = torch.zeros(6, 6, dtype=torch.float64)
    count = torch.zeros(6, 6, dtype=torch.float64)
    for r in range(4):
        for c in range(4):
            expected[r : r + 3, c : c + 3] += contribution[r : r + 3, c : c + 3].sum()
            count[r : r + 3, c : c + 3] += 1
    torch.testing.assert_close(found.double(), expected / count, atol=1e-5, rtol=1e-5)


def test_neuron_target_is_the_difference_of_activations():
    """A Neuron explains its activity: f(x) - mean f(x with the window from data)."""
    shape = (1, 5, 5)
    model = Linear(shape)
    image = torch.rand(shape, generator=torch.Generator().manual_seed(2))
    data = torch.rand(4, *shape, generator=torch.Generator().manual_seed(3))
    found = prediction_difference(
        model, image, Neuron("1", 1, reduce="sum"), window=5, stride=5, sampler="marginal",
        data=data, samples=None,
    )  # fmt: skip
    w = model[1].weight[1].detach().view(shape)
    expected = (w * (image - data.mean(0))).sum()
    torch.testing.assert_close(found, expected.expand(5, 5), atol=1e-5, rtol=1e-5)


def test_condition_matches_the_precision_matrix_form():
    """Textbook: with the precision Lambda = Sigma^-1, the conditional covariance is
    Lambda_uu^-1 and the mean mu_u - Lambda_uu^-1 Lambda_uk (x_k - mu_k) (Bishop, 2.69-2.75)."""
    generator = torch.Generator().manual_seed(4)
    a = torch.randn(5, 5, generator=generator, dtype=torch.float64)
    cov = a @ a.T + 0.5 * torch.eye(5, dtype=torch.float64)
    mean = torch.randn(5, generator=generator, dtype=torch.float64)
    unknown = torch.tensor([False, True, False, True, False])
    known_values = torch.randn(2, 3, generator=generator, dtype=torch.float64)
    means, cond_cov = condition(mean, cov, unknown, known_values)
    precision = torch.linalg.inv(cov)
    l_uu = precision[unknown][:, unknown]
    l_uk = precision[unknown][:, ~unknown]
    expected_cov = torch.linalg.inv(l_uu)
    expected_means = mean[unknown] - (known_values - mean[~unknown]) @ (expected_cov @ l_uk).T
    torch.testing.assert_close(cond_cov, expected_cov)
    torch.testing.assert_close(means, expected_means)


def test_conditional_samples_follow_the_conditional_gaussian():
    """With a linear Neuron, the mean over many conditional samples approaches
    w . (x_w - mu_{w|frame}), also at the border where the frame is one-sided."""
    shape = (1, 6, 6)
    generator = torch.Generator().manual_seed(5)
    a = torch.randn(16, 16, generator=generator, dtype=torch.float64)
    cov = a @ a.T / 16 + 0.1 * torch.eye(16, dtype=torch.float64)
    mean = torch.rand(16, generator=generator, dtype=torch.float64)
    gauss = PatchGaussian(mean, cov, channels=1, size=4, images=1)
    model = Linear(shape)
    image = torch.rand(shape, generator=generator)
    samples = 4000
    found = prediction_difference(
        model, image, Neuron("1", 0, reduce="sum"), window=2, stride=2, sampler="conditional",
        data=gauss, samples=samples, padding=1,
    )  # fmt: skip
    w = model[1].weight[0].detach().view(6, 6).double()
    x = image[0].double()
    for r, c in [(0, 0), (2, 2), (4, 2)]:  # a corner (frame one-sided), the middle, an edge
        top, left = min(max(r - 1, 0), 2), min(max(c - 1, 0), 2)
        inside = torch.zeros(4, 4, dtype=torch.bool)
        inside[r - top : r - top + 2, c - left : c - left + 2] = True
        unknown = inside.flatten()
        patch = x[top : top + 4, left : left + 4].flatten()
        means, cond_cov = condition(mean, cov, unknown, patch[~unknown])
        weights = w[top : top + 4, left : left + 4].flatten()[unknown]
        expected = (weights * (patch[unknown] - means)).sum()
        spread = (weights @ cond_cov @ weights).sqrt() / math.sqrt(samples)
        assert abs(found[r, c].double() - expected) < 5 * spread + 1e-5, (r, c)


def test_patch_gaussian_is_the_mean_and_covariance_of_all_patches():
    data = torch.rand(3, 2, 7, 7, generator=torch.Generator().manual_seed(6))
    gauss = patch_gaussian(data, 3)
    patches = F.unfold(data.double(), 3).transpose(1, 2).reshape(-1, 18)
    torch.testing.assert_close(gauss.mean, patches.mean(0))
    expected = torch.cov(patches.T, correction=0) + 1e-4 * torch.eye(18, dtype=torch.float64)
    torch.testing.assert_close(gauss.cov, expected, atol=1e-6, rtol=1e-5)


def test_deterministic_and_seeded(shapes):
    model, images, data = shapes
    options = {"window": 16, "stride": 8, "samples": 3}
    for sampler in ("marginal", "conditional"):
        one = prediction_difference(model, images, sampler=sampler, data=data, **options)
        two = prediction_difference(model, images, sampler=sampler, data=data, **options)
        other = prediction_difference(model, images, sampler=sampler, data=data, seed=1, **options)
        assert torch.equal(one, two), sampler
        assert not torch.equal(one, other), sampler
    exact = [
        prediction_difference(
            model, images, window=16, stride=8, sampler="marginal", data=data, samples=None, seed=s
        )
        for s in (0, 1)
    ]
    assert torch.equal(*exact)


def test_incremental_and_whole_passes_agree(shapes):
    model, images, data = shapes
    maps = [
        prediction_difference(
            model, images[:1], window=8, stride=4, data=data, samples=2, incremental=incremental
        )
        for incremental in (True, False)
    ]
    torch.testing.assert_close(maps[0], maps[1], atol=1e-4, rtol=1e-4)


def test_model_left_as_it_came(shapes):
    _, images, data = shapes
    model = load_shapes_net().train()
    next(model.parameters()).requires_grad_(False)
    before = snapshot(model)
    prediction_difference(model, images[:1], window=16, stride=16, data=data, samples=2)
    assert_unchanged(model, before)
    with pytest.raises(ValueError):
        prediction_difference(model, images[:1], window=16, sampler="nope", data=data)
    assert_unchanged(model, before)


def test_available_from_perturbation_and_pass_count():
    assert perturbation.prediction_difference is prediction_difference
    assert forward_passes((3, 64, 64), 8, 2, 10) == 29 * 29 * 10 + 1


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"data": None}, "needs data"),
        ({"sampler": "gaussian"}, "sampler must be"),
        ({"samples": 0}, "samples must be a positive int"),
        ({"sampler": "conditional", "samples": None}, "samples=None"),
        ({"sampler": "marginal", "samples": 9}, "more than the 4 images"),
        ({"window": 65}, "larger than the image"),
        ({"stride": 9}, "stride=9 is larger than window=8"),
        ({"window": 32, "padding": 17}, "do not fit in the image"),
        ({"padding": -1}, "padding must be an int >= 0"),
        ({"laplace_n": 0}, "laplace_n must be a positive int"),
        ({"data": torch.rand(2, 3, 32, 32)}, "inputs' shape"),
        (
            {"data": PatchGaussian(torch.zeros(3), torch.eye(3), 3, 1, 1)},
            "patch_gaussian(data, 12)",
        ),
        ({"incremental": "yes"}, "incremental must be"),
    ],
)
def test_clear_errors(shapes, options, message):
    model, images, data = shapes
    arguments = {"window": 8, "stride": 4, "data": data, "samples": 2, **options}
    with pytest.raises(ValueError, match=".*" + message.replace("(", r"\(").replace(")", r"\)")):
        prediction_difference(model, images[0], **arguments)


def test_explorer_draws_every_sampler(shapes):
    from lecture_lib.prediction_difference_widgets import GREY, prediction_difference_explorer

    model, images, data = shapes
    explorer = prediction_difference_explorer(
        model, images[:1], data, window=16, sampler="marginal", samples=2
    )
    first = explorer.shown["map"]
    for sampler in ("conditional", GREY):
        explorer.controls["sampler"].value = sampler
        assert explorer.error is None, explorer.error
        assert not (explorer.shown["map"] == first).all()
    assert explorer.updates == 3
    expected = prediction_difference(
        model,
        images[0],
        explorer.shown["target"],
        window=16,
        stride=8,
        sampler="marginal",
        data=data,
        samples=2,
    )
    explorer.controls["sampler"].value = "marginal"
    assert torch.equal(
        torch.as_tensor(explorer.cache[0, explorer.shown["target"], "marginal", 16, 2]), expected
    )
    with pytest.raises(ValueError, match="window must be one of"):
        prediction_difference_explorer(model, images[:1], data, window=5)


def test_explorer_shows_a_one_sample_map_first_then_the_map_of_every_sample(shapes):
    from lecture_lib import prediction_difference_widgets as pdw

    model, images, data = shapes
    explorer = pdw.prediction_difference_explorer(
        model, images[:2], data, window=16, sampler="marginal", samples=3
    )
    frames = []
    explorer.image.observe(
        lambda change: frames.append((explorer.figure.axes[1].get_title(), explorer.status.value)),
        names="value",
    )
    explorer.controls["image"].value = 1
    (coarse_title, coarse_status), (title, status) = frames
    assert "1 sample, refining…" in coarse_title and coarse_status.startswith("refining")
    assert "3 samples" in title and "refining" not in title and status == ""
    c = explorer.shown["target"]

    def exact(samples):
        return prediction_difference(
            model, images[1], c, window=16, stride=8, sampler="marginal", data=data,
            samples=samples, progress=False,
        )  # fmt: skip

    kept = torch.as_tensor(explorer.cache[explorer.shown["key"]])
    assert explorer.shown["key"][-1] == 3 and torch.equal(kept, exact(3).float())
    assert not torch.allclose(kept, exact(1).float())
    frames.clear()
    explorer.controls["image"].value = 0
    explorer.controls["image"].value = 1  # kept: the map of every sample at once
    assert len(frames) == 2 and "refining" not in frames[-1][0]
    frames.clear()
    explorer.controls["sampler"].value = pdw.GREY  # one pass per window: nothing to refine
    assert len(frames) == 1
