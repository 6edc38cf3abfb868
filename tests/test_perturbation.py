"""Occlusion and single-feature perturbation against plain loops and analytic values."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lecture_lib.perturbation import occlusion, single_feature, window_positions
from lecture_lib.saturation import SaturatingToy
from lecture_lib.targets import Neuron


def snapshot(model: nn.Module) -> dict:
    """Everything about a model that an explanation must leave as it came."""
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
        assert not m._forward_hooks and not m._forward_pre_hooks and not m._backward_hooks


def target_score(model, x, target):
    with torch.no_grad():
        return model(x[None])[0, target].item()


def occlusion_by_loop(model, image, target, window, stride, baseline=0.0):
    """The definition, one window at a time: mean drop over the windows covering each pixel."""
    _, height, width = image.shape
    total = torch.zeros(height, width, dtype=torch.float64)
    count = torch.zeros(height, width, dtype=torch.float64)
    full = target_score(model, image, target)
    rows = list(range(0, height - window + 1, stride))
    cols = list(range(0, width - window + 1, stride))
    if rows[-1] != height - window:
        rows.append(height - window)
    if cols[-1] != width - window:
        cols.append(width - window)
    for r in rows:
        for c in cols:
            hidden = image.clone()
            hidden[:, r : r + window, c : c + window] = baseline
            total[r : r + window, c : c + window] += full - target_score(model, hidden, target)
            count[r : r + window, c : c + window] += 1
    return (total / count).float()


@pytest.fixture(scope="module")
def two_images():
    from lecture_lib.data import make_shapes

    images, labels, _ = make_shapes(2, seed=2026)
    return images, labels


# --- occlusion ------------------------------------------------------------------------------


def test_window_positions_cover_the_last_pixels():
    assert window_positions(64, 8, 4) == list(range(0, 57, 4))
    assert window_positions(64, 10, 7) == [0, 7, 14, 21, 28, 35, 42, 49, 54]
    assert window_positions(8, 8, 3) == [0]


@pytest.mark.parametrize("window, stride", [(8, 4), (10, 7)])
def test_occlusion_equals_a_loop_over_windows(shapes_net, two_images, window, stride):
    images, _ = two_images
    result = occlusion(shapes_net, images, window=window, stride=stride)
    assert result.shape == (2, 64, 64)
    for i in range(2):
        predicted = shapes_net(images[i : i + 1]).argmax().item()
        expected = occlusion_by_loop(shapes_net, images[i], predicted, window, stride)
        torch.testing.assert_close(result[i], expected, atol=2e-4, rtol=1e-4)


def test_occlusion_with_given_target_and_grey_baseline_equals_loop(shapes_net, two_images):
    images, _ = two_images
    result = occlusion(shapes_net, images, target=[3, 1], window=16, stride=8, baseline=0.5)
    for i, target in enumerate([3, 1]):
        expected = occlusion_by_loop(shapes_net, images[i], target, 16, 8, baseline=0.5)
        torch.testing.assert_close(result[i], expected, atol=2e-4, rtol=1e-4)


def test_batch_size_does_not_change_the_result(shapes_net, two_images):
    images, _ = two_images
    small = occlusion(shapes_net, images, window=16, stride=8, batch_size=1)
    large = occlusion(shapes_net, images, window=16, stride=8, batch_size=1000)
    torch.testing.assert_close(small, large, atol=1e-4, rtol=1e-4)


def test_single_image_gives_one_map(shapes_net, two_images):
    images, _ = two_images
    one = occlusion(shapes_net, images[1], window=16, stride=8)
    both = occlusion(shapes_net, images, window=16, stride=8)
    assert one.shape == (64, 64)
    torch.testing.assert_close(one, both[1], atol=1e-4, rtol=1e-4)


def linear_model(channels=3, side=12, classes=4, seed=0):
    generator = torch.Generator().manual_seed(seed)
    model = nn.Sequential(nn.Flatten(), nn.Linear(channels * side * side, classes))
    with torch.no_grad():
        model[1].weight.copy_(torch.randn(classes, channels * side * side, generator=generator))
        model[1].bias.copy_(torch.randn(classes, generator=generator))
    return model.double()


def test_linear_model_non_overlapping_windows_give_block_sums():
    """For y = w.x + b, hiding a window drops y by sum over the window of w (x - baseline)."""
    model = linear_model()
    generator = torch.Generator().manual_seed(1)
    x = torch.rand(3, 12, 12, generator=generator, dtype=torch.float64)
    result = occlusion(model, x, target=2, window=4, stride=4, baseline=0.25)
    w = model[1].weight[2].detach().view(3, 12, 12)
    contribution = (w * (x - 0.25)).sum(0)  # [12, 12]
    block_sums = F.avg_pool2d(contribution[None, None], 4)[0, 0] * 16
    expected = block_sums.repeat_interleave(4, 0).repeat_interleave(4, 1)
    torch.testing.assert_close(result, expected)


def test_linear_model_overlapping_windows_average_the_window_drops():
    model = linear_model(side=13)
    generator = torch.Generator().manual_seed(2)
    x = torch.rand(2, 3, 13, 13, generator=generator, dtype=torch.float64)
    baseline = torch.rand(3, 13, 13, generator=generator, dtype=torch.float64)
    window, stride = 5, 3  # positions 0, 3, 6 and the extra last one, 8
    result = occlusion(model, x, target=[0, 3], window=window, stride=stride, baseline=baseline)
    for i, target in enumerate([0, 3]):
        w = model[1].weight[target].detach().view(3, 13, 13)
        contribution = (w * (x[i] - baseline)).sum(0)
        # drop of the window at (r, c) = sum of the contributions under it, for every (r, c)
        drop = F.conv2d(contribution[None, None], torch.ones(1, 1, window, window).double())[0, 0]
        total = torch.zeros(13, 13, dtype=torch.float64)
        count = torch.zeros(13, 13, dtype=torch.float64)
        for r in (0, 3, 6, 8):
            for c in (0, 3, 6, 8):
                total[r : r + window, c : c + window] += drop[r, c]
                count[r : r + window, c : c + window] += 1
        torch.testing.assert_close(result[i], total / count)


def test_target_none_is_decided_once_on_the_unoccluded_image():
    """A linear model whose predicted class flips when a window is hidden: the map must still
    explain the class predicted for the full image."""
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 2)).double()
    with torch.no_grad():
        model[1].weight.copy_(torch.tensor([[1.0, 1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.5]]))
        model[1].bias.zero_()
    x = torch.ones(1, 2, 2, dtype=torch.float64)  # class 0 scores 2, class 1 scores 1.5
    result = occlusion(model, x, window=1, stride=1)
    # hiding a top pixel drops class 0 to 1, below class 1's 1.5; the map stays class 0's
    assert model(torch.tensor([[[0.0, 1.0], [1.0, 1.0]]]).double()).argmax().item() == 1
    torch.testing.assert_close(result, torch.tensor([[1.0, 1.0], [0.0, 0.0]]).double())


def test_neuron_target(shapes_net, two_images):
    images, _ = two_images
    neuron = Neuron("conv3", 5)
    result = occlusion(shapes_net, images[0], target=neuron, window=32, stride=32)
    layer_out = {}

    def activity(x):
        handle = shapes_net.conv3.register_forward_hook(lambda m, i, o: layer_out.update(o=o))
        try:
            with torch.no_grad():
                shapes_net(x[None])
        finally:
            handle.remove()
        return layer_out["o"][0, 5].max().item()

    full = activity(images[0])
    for r in (0, 32):
        for c in (0, 32):
            hidden = images[0].clone()
            hidden[:, r : r + 32, c : c + 32] = 0
            assert result[r, c].item() == pytest.approx(full - activity(hidden), abs=1e-4)


def test_occlusion_does_not_modify_inputs_or_model(shapes_net, two_images):
    images, _ = two_images
    copy = images.clone()
    model = shapes_net.train()  # a model in training mode stays in training mode
    try:
        before = snapshot(model)
        occlusion(model, images, window=32, stride=16, baseline=torch.rand(3, 64, 64))
        assert torch.equal(images, copy)
        assert_unchanged(model, before)
        with pytest.raises(ValueError):
            occlusion(model, images, target=7, window=32, stride=16)
        assert_unchanged(model, before)
    finally:
        shapes_net.eval()


def test_model_left_as_it_came_when_the_forward_fails_midway():
    class FailsOnBatches(nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = nn.Linear(3 * 8 * 8, 2)

        def forward(self, x):
            if x.shape[0] > 1:
                raise RuntimeError("boom")
            return self.linear(x.flatten(1))

    model = FailsOnBatches().train()
    before = snapshot(model)
    with pytest.raises(RuntimeError, match="boom"):
        occlusion(model, torch.rand(3, 8, 8), window=4, stride=2)
    assert_unchanged(model, before)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(window=0), "window must be a positive int"),
        (dict(window=2.5), "window must be a positive int"),
        (dict(window=True), "window must be a positive int"),
        (dict(stride=0), "stride must be a positive int"),
        (dict(window=65), "larger than the image"),
        (dict(window=4, stride=5), "stride=5 is larger than window=4"),
        (dict(batch_size=0), "batch_size must be a positive int"),
        (dict(target=5), "out of range"),
        (dict(baseline=torch.zeros(3, 32, 32)), "baseline of shape"),
    ],
)
def test_occlusion_bad_arguments_say_what_is_wrong(shapes_net, two_images, kwargs, message):
    images, _ = two_images
    with pytest.raises((ValueError, TypeError), match=message):
        occlusion(shapes_net, images, **kwargs)


def test_occlusion_needs_images(shapes_net):
    with pytest.raises(ValueError, match=r"expects images"):
        occlusion(SaturatingToy(), torch.ones(4, 2))
    with pytest.raises(TypeError, match="floating point"):
        occlusion(shapes_net, torch.zeros(3, 64, 64, dtype=torch.uint8))


def test_no_progress_bar_for_small_work(shapes_net, two_images, capsys):
    images, _ = two_images
    occlusion(shapes_net, images, window=16, stride=8)
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""


def test_progress_bar_on_request(shapes_net, two_images, capsys):
    images, _ = two_images
    occlusion(shapes_net, images[0], window=32, stride=32, progress=True)
    assert "occlusion" in capsys.readouterr().err


# --- single-feature perturbation ------------------------------------------------------------


def single_feature_by_loop(model, example, target, baseline=0.0):
    result = torch.zeros_like(example)
    full = target_score(model, example, target)
    flat = result.view(-1)
    for i in range(example.numel()):
        perturbed = example.clone().view(-1)
        perturbed[i] = baseline
        flat[i] = full - target_score(model, perturbed.view_as(example), target)
    return result


def test_single_feature_equals_a_loop_on_a_small_conv_net():
    torch.manual_seed(3)
    model = nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(16, 3)
    ).eval()
    x = torch.rand(2, 2, 4, 4)
    result = single_feature(model, x, target=[1, 2], baseline=0.3, batch_size=7)
    assert result.shape == x.shape
    for i, target in enumerate([1, 2]):
        expected = single_feature_by_loop(model, x[i], target, baseline=0.3)
        torch.testing.assert_close(result[i], expected, atol=1e-5, rtol=1e-5)


def test_single_feature_predicted_class_and_per_example_baseline():
    torch.manual_seed(4)
    model = nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 3)).eval()
    x = torch.randn(3, 5)
    baseline = torch.randn(3, 5)
    result = single_feature(model, x, baseline=baseline)
    predicted = model(x).argmax(1)
    for i in range(3):
        full = model(x[i : i + 1])[0, predicted[i]]
        for j in range(5):
            perturbed = x[i].clone()
            perturbed[j] = baseline[i, j]
            expected = (full - model(perturbed[None])[0, predicted[i]]).item()
            assert result[i, j].item() == pytest.approx(expected, abs=1e-5)


def test_single_feature_on_the_saturating_toy():
    toy = SaturatingToy()
    assert single_feature(toy, torch.tensor([1.0, 1.0])).tolist() == [0.0, 0.0]
    batch = torch.tensor([[1.0, 1.0], [0.2, 0.3], [0.0, 1.0]])
    expected = torch.tensor([[0.0, 0.0], [0.2, 0.3], [0.0, 1.0]])
    torch.testing.assert_close(single_feature(toy, batch), expected)


def test_single_feature_leaves_inputs_and_model_alone():
    torch.manual_seed(5)
    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2)).train()
    x = torch.rand(2, 4)
    copy = x.clone()
    before = snapshot(model)
    single_feature(model, x)
    assert torch.equal(x, copy)
    assert_unchanged(model, before)
    with pytest.raises(ValueError, match="out of range"):
        single_feature(model, x, target=2)
    assert_unchanged(model, before)


def test_single_feature_refuses_large_inputs_and_suggests_occlusion(shapes_net):
    with pytest.raises(ValueError, match="occlusion"):
        single_feature(shapes_net, torch.zeros(3, 256, 256))


def test_single_feature_bad_arguments(shapes_net):
    toy = SaturatingToy()
    with pytest.raises(ValueError, match="batch_size"):
        single_feature(toy, torch.ones(2), batch_size=0)
    with pytest.raises(ValueError, match="baseline"):
        single_feature(toy, torch.ones(2), baseline=torch.zeros(3))
    with pytest.raises(TypeError, match="torch.Tensor"):
        single_feature(toy, [1.0, 1.0])
