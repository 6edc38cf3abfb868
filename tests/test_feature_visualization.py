"""Feature visualization of channels and neurons, and the top patches of a data set."""

import copy
import math

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from torch import nn

from lecture_lib import activations, attribution, checks, class_model, fooling, plot
from lecture_lib.class_model import feature_visualization
from lecture_lib.targets import Neuron, score

# --- feature visualization --------------------------------------------------------------------


@pytest.mark.parametrize(
    "target",
    [Neuron("conv4", 2, reduce="sum"), Neuron("conv3", 7), 3],
    ids=["channel", "neuron", "class"],
)
@pytest.mark.parametrize("parameterization", ["fourier", "pixel"])
def test_the_ascent_raises_its_target(shapes_net, target, parameterization):
    image, scores = feature_visualization(
        shapes_net, target, steps=15, parameterization=parameterization
    )
    assert image.shape == (3, 64, 64) and scores.shape == (15,)
    assert 0 <= image.min() and image.max() <= 1
    with torch.no_grad():  # read back: f of the returned image is the last score
        f, _ = score(shapes_net, image[None], target, "test")
    assert float(f[0]) == pytest.approx(float(scores[-1]), rel=1e-4, abs=1e-4)
    assert scores[-1] > scores[0]


def test_the_images_of_a_list_do_not_interact(shapes_net):
    # without random transformations each image follows its own target only: changing the
    # other targets of the batch changes nothing for the first
    still = dict(jitter=0, scale=0, rotate=0, steps=6)
    first = Neuron("conv4", 5, reduce="sum")
    images, scores = feature_visualization(shapes_net, [first, Neuron("conv2", 1), 0], **still)
    other, other_scores = feature_visualization(shapes_net, [first, 4, Neuron("conv3", 2)], **still)
    assert images.shape == (3, 3, 64, 64) and scores.shape == (6, 3)
    torch.testing.assert_close(images[0], other[0], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(scores[:, 0], other_scores[:, 0], rtol=1e-4, atol=1e-4)
    assert (scores[-1] > scores[0]).all()


def test_a_fourier_coefficient_is_a_plane_wave_weighted_by_one_over_f():
    size, fy, fx = 16, 2, 3
    x = torch.zeros(1, 1, size, size // 2 + 1, 2)
    x[0, 0, fy, fx, 0] = 1.0  # the real part of one coefficient
    weights = class_model._spectrum_weights(size, decay=1.0)
    linear = torch.logit(class_model._to_image(x, "fourier", weights, torch.eye(1), size))[0, 0]
    rows, cols = torch.meshgrid(torch.arange(size * 1.0), torch.arange(size * 1.0), indexing="ij")
    frequency = math.hypot(fy / size, fx / size)
    # irfft2 (orthonormal) of one coefficient c at (fy, fx) with its mirror: 2 c cos(...) / size
    wave = 2 * torch.cos(2 * math.pi * (fy * rows + fx * cols) / size) / size
    torch.testing.assert_close(linear, wave / frequency / 4, rtol=1e-4, atol=1e-5)


def test_colour_correlation_is_the_square_root_of_the_colour_covariance(shapes_batch):
    images = shapes_batch[0]
    matrix = class_model.colour_correlation(images)
    pixels = images.permute(1, 0, 2, 3).reshape(3, -1).double().numpy()
    covariance = np.cov(pixels, bias=True)
    root = matrix.double().numpy()
    scale = covariance[0, 0] / (root @ root.T)[0, 0]
    np.testing.assert_allclose(root @ root.T * scale, covariance, rtol=1e-4)
    np.testing.assert_allclose(root, root.T, atol=1e-6)  # the symmetric square root
    assert np.linalg.norm(root, axis=0).max() == pytest.approx(1.0)
    image, _ = feature_visualization(_tiny_classifier(), 1, steps=2, size=8, colour=matrix)
    assert image.shape == (3, 8, 8)


def _tiny_classifier():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 8 * 8, 3)
    ).eval()


def test_transformations_shift_scale_and_rotate():
    image = torch.rand(2, 3, 16, 16)
    generator = torch.Generator().manual_seed(0)
    assert torch.equal(class_model._transform(image, 0, 0, 0, generator), image)
    moved = class_model._transform(image, 2.0, 0.1, 10.0, generator)
    assert moved.shape == image.shape and not torch.allclose(moved, image)
    assert moved.min() >= image.min() - 1e-6 and moved.max() <= image.max() + 1e-6  # bilinear


def test_deterministic_for_a_seed_and_the_global_random_state_untouched(shapes_net):
    state = torch.get_rng_state()
    threads = torch.get_num_threads()
    a, _ = feature_visualization(shapes_net, Neuron("conv3", 1), steps=3, seed=4)
    b, _ = feature_visualization(shapes_net, Neuron("conv3", 1), steps=3, seed=4)
    c, _ = feature_visualization(shapes_net, Neuron("conv3", 1), steps=3, seed=5)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.get_num_threads() == threads


def test_model_left_as_it_came(shapes_net):
    model = copy.deepcopy(shapes_net).train()
    model.conv1.weight.requires_grad_(False)
    before = [p.detach().clone() for p in model.parameters()]
    feature_visualization(model, Neuron("conv2", 3), steps=2)
    with pytest.raises(ValueError):
        feature_visualization(model, Neuron("conv2", 99), steps=2)
    assert all(m.training for m in model.modules())
    assert [p.requires_grad for p in model.parameters()][0] is False
    assert all(p.grad is None for p in model.parameters())
    assert all(torch.equal(p, q) for p, q in zip(before, model.parameters()))
    assert all(not m._forward_hooks for m in model.modules())


@pytest.mark.parametrize(
    "target, kwargs, error, message",
    [
        (Neuron("conv9", 0), {}, ValueError, r"no layer named 'conv9'.*Valid layers: conv1"),
        (Neuron("conv2", 32), {}, ValueError, r"32 channels.*0..31"),
        (7, {}, ValueError, r"target 7 is out of range"),
        ([], {}, ValueError, "list of targets is empty"),
        ("conv2", {}, TypeError, "a class index"),
        (0, dict(parameterization="fft"), ValueError, "parameterization must be one of"),
        (0, dict(scale=1.0), ValueError, "scale must be below 1"),
        (0, dict(rotate=-5), ValueError, "rotate must be a number of degrees"),
        (0, dict(lr=0), ValueError, "lr must be positive"),
        (0, dict(steps=0), ValueError, "steps must be an int >= 1"),
        (0, dict(colour=torch.eye(2)), ValueError, r"colour must be a finite 3 x 3 matrix"),
        (0, dict(size=20), ValueError, "does not accept an image of shape"),
    ],
)
def test_bad_input_is_explained(shapes_net, target, kwargs, error, message):
    with pytest.raises(error, match=message):
        feature_visualization(shapes_net, target, steps=kwargs.pop("steps", 2), **kwargs)


# --- receptive fields ---------------------------------------------------------------------------


def linearised(model: nn.Sequential) -> nn.Sequential:
    """A copy whose every unit sees its whole receptive field with a non-zero gradient: ReLU ->
    identity, max-pool -> average-pool, every weight 1 (as tests/test_checks.py measures it)."""
    copied = nn.Sequential()
    for name, layer in model.named_children():
        if isinstance(layer, nn.ReLU):
            layer = nn.Identity()
        elif isinstance(layer, nn.MaxPool2d):
            layer = nn.AvgPool2d(layer.kernel_size, layer.stride, layer.padding)
        elif isinstance(layer, nn.Conv2d):
            layer = copy.deepcopy(layer)
            nn.init.ones_(layer.weight)
        copied.add_module(name, layer)
    return copied


def measured_box(model: nn.Sequential, layer: str, row: int, col: int, size: int):
    """The bounding box of the pixels whose gradient is non-zero for one unit of ``layer``."""
    x = torch.zeros(1, 3, size, size, requires_grad=True)
    names = [name for name, _ in model.named_children()]
    out = model[: names.index(layer) + 1](x)
    (grad,) = torch.autograd.grad(out[0, :, row, col].sum(), x)
    rows = grad[0].abs().sum(dim=(0, 2)).nonzero()
    cols = grad[0].abs().sum(dim=(0, 1)).nonzero()
    return int(rows.min()), int(cols.min()), int(rows.max()) + 1, int(cols.max()) + 1


def clipped(box, size):
    top, left, bottom, right = box
    return max(top, 0), max(left, 0), min(bottom, size), min(right, size)


def test_receptive_fields_of_shapes_net_match_the_exercise(shapes_net):
    sides = checks.receptive_fields(shapes_net)  # the exercise's formula: 3, 4, 8, ..., 38, 46
    for name, side in sides.items():
        field = activations.receptive_field(shapes_net, name, torch.rand(3, 64, 64))
        assert field.size == (side, side), name


@pytest.mark.parametrize("layer", ["conv2", "pool3", "relu4"])
def test_receptive_field_boxes_match_a_gradient_measurement(shapes_net, layer):
    linear = linearised(shapes_net)
    field = activations.receptive_field(shapes_net, layer, torch.rand(1, 3, 64, 64))
    side = activations.feature_maps(shapes_net, torch.rand(1, 3, 64, 64), layer)[layer].shape[-1]
    for row, col in [(0, 0), (side // 2, 1), (side - 1, side - 2)]:
        assert clipped(field.box(row, col), 64) == measured_box(linear, layer, row, col, 64)


def test_receptive_field_with_strides_padding_and_dilation():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 2, 5, stride=2, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(3, stride=2, padding=1),
        nn.Conv2d(2, 2, 3, padding=2, dilation=2),
    )
    field = activations.receptive_field(model, "3", torch.rand(1, 3, 40, 40))
    linear = linearised(model)
    for row, col in [(0, 0), (2, 3), (4, 5)]:
        assert clipped(field.box(row, col), 40) == measured_box(linear, "3", row, col, 40)


def test_receptive_field_refuses_what_it_cannot_follow():
    model = nn.Sequential(nn.Conv2d(3, 2, 3), nn.Upsample(scale_factor=2), nn.Conv2d(2, 2, 3))
    with pytest.raises(ValueError, match="through Upsample"):
        activations.receptive_field(model, "2", torch.rand(1, 3, 10, 10))
    with pytest.raises(ValueError, match="no layer named 'x'"):
        activations.receptive_field(model, "x", torch.rand(1, 3, 10, 10))


# --- top patches ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def patches_result(shapes_net, shapes_batch):
    return activations.top_patches(shapes_net, "conv3", 5, shapes_batch[0], k=4)


def test_top_patches_are_the_strongest_units_found_by_a_plain_loop(
    shapes_net, shapes_batch, patches_result
):
    images = shapes_batch[0]
    found = []
    for n, image in enumerate(images):
        m = activations.feature_maps(shapes_net, image, "conv3")["conv3"][5]  # [16, 16]
        value = float(m.max())
        row, col = divmod(int(m.argmax()), m.shape[1])
        found.append((value, n, row, col))
    found.sort(key=lambda t: -t[0])
    result = patches_result
    assert result.indices.tolist() == [n for _, n, _, _ in found[:4]]
    assert result.positions.tolist() == [[r, c] for _, _, r, c in found[:4]]
    torch.testing.assert_close(result.activations, torch.tensor([v for v, *_ in found[:4]]))


def test_patches_are_the_receptive_field_crops_and_hold_the_projection(
    shapes_net, shapes_batch, patches_result
):
    images = shapes_batch[0]
    result = patches_result
    assert result.patches.shape == (4, 3, 18, 18) == result.projections.shape
    padded = nn.functional.pad(images, (18, 18, 18, 18))  # zeros outside the image
    for i, n in enumerate(result.indices.tolist()):
        top, left, bottom, right = result.boxes[i].tolist()
        row, col = result.positions[i].tolist()
        assert (top, left, bottom, right) == (
            -7 + 4 * row,
            -7 + 4 * col,
            11 + 4 * row,
            11 + 4 * col,
        )
        crop = padded[n, :, top + 18 : bottom + 18, left + 18 : right + 18]
        assert torch.equal(result.patches[i], crop)
        projection = attribution.deconvnet(shapes_net, images[n], Neuron("conv3", 5))
        inside = torch.zeros(64, 64, dtype=torch.bool)
        inside[max(top, 0) : bottom, max(left, 0) : right] = True
        assert (projection[:, ~inside] == 0).all()  # the projection stays in the field
        full = nn.functional.pad(projection, (18, 18, 18, 18))
        window = full[:, top + 18 : bottom + 18, left + 18 : right + 18]
        torch.testing.assert_close(result.projections[i], window)
        assert result.projections[i].abs().sum() > 0


def test_a_list_of_channels_gives_each_channels_patches(shapes_net, shapes_batch, patches_result):
    both = activations.top_patches(shapes_net, "conv3", [5, 9], shapes_batch[0], k=4, batch_size=3)
    alone = activations.top_patches(shapes_net, "conv3", 9, shapes_batch[0], k=4)
    for got, expected in ((both[0], patches_result), (both[1], alone)):
        assert got.channel == expected.channel
        assert torch.equal(got.indices, expected.indices)
        assert torch.equal(got.positions, expected.positions)
        assert torch.equal(got.patches, expected.patches)
        torch.testing.assert_close(got.projections, expected.projections)


def test_top_patches_errors(shapes_net, shapes_batch):
    images = shapes_batch[0]
    with pytest.raises(ValueError, match=r"'fc1'.*no spatial maps.*spatial maps: conv1"):
        activations.top_patches(shapes_net, "fc1", 0, images, k=3)
    with pytest.raises(ValueError, match=r"no layer named 'conv7'"):
        activations.top_patches(shapes_net, "conv7", 0, images, k=3)
    with pytest.raises(ValueError, match=r"64 channels.*0..63.*channel=64"):
        activations.top_patches(shapes_net, "conv3", 64, images, k=3)
    with pytest.raises(ValueError, match=r"channel=70"):
        activations.top_patches(shapes_net, "conv3", [1, 70], images, k=3)
    with pytest.raises(TypeError, match=r"channel must be an int or a list of ints"):
        activations.top_patches(shapes_net, "conv3", 1.0, images, k=3)
    with pytest.raises(ValueError, match=r"k must be an int in 1..8"):
        activations.top_patches(shapes_net, "conv3", 0, images, k=9)
    with pytest.raises(ValueError, match=r"data set \[N, C, H, W\]"):
        activations.top_patches(shapes_net, "conv3", 0, images[0])


def test_top_patches_leave_the_model_as_it_came(shapes_net, shapes_batch):
    model = copy.deepcopy(shapes_net).train()
    activations.top_patches(model, "conv2", 1, shapes_batch[0], k=2, batch_size=3)
    assert all(m.training for m in model.modules())
    assert all(p.grad is None and p.requires_grad for p in model.parameters())
    assert all(not m._forward_hooks and not m._backward_hooks for m in model.modules())


# --- their pictures -----------------------------------------------------------------------------


def test_plot_top_patches_and_fooling_images(shapes_net, patches_result, shapes_batch):
    try:
        _check_the_pictures(shapes_net, patches_result, shapes_batch)
    finally:
        plt.close("all")


def _check_the_pictures(shapes_net, patches_result, shapes_batch):
    fig = plot.top_patches(patches_result, ncols=2, title="conv3, channel 5")
    assert len([ax for ax in fig.axes if ax.images]) == 8
    x = shapes_batch[0][:2]
    target = (shapes_net(x).argmax(1) + 1) % 5
    result = fooling.fast_gradient_sign(shapes_net, x, target, epsilon=0.02)
    fig = plot.fooling_images(result)
    assert len(fig.axes) == 6
    assert "/255" in fig.axes[1].get_title()
    fig = plot.fooling_images(fooling.fast_gradient_sign(shapes_net, x[0], int(target[0]), 0.02))
    assert len(fig.axes) == 3


def test_a_neuron_before_an_in_place_relu_is_its_layers_own_output():
    """On a VGG-like net (conv, ReLU(inplace=True)), a channel of the conv is the conv's own sum:
    its score can go below zero, and it is what a hand computation on the image gives."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(inplace=True), nn.Flatten(), nn.Linear(4 * 16 * 16, 2)
    ).eval()  # fmt: skip
    with torch.no_grad():
        model[0].bias.fill_(-5.0)  # every value of the conv negative: the ReLU makes them 0
    image, scores = feature_visualization(model, Neuron("0", 1, "sum"), steps=3, size=16)
    with torch.no_grad():
        by_hand = model[0](image[None])[0, 1].sum()
    assert scores[-1] < 0
    torch.testing.assert_close(scores[-1], by_hand, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("mode", [torch.no_grad, torch.inference_mode])
def test_the_same_under_no_grad_and_inference_mode(shapes_net, mode):
    want = feature_visualization(shapes_net, Neuron("conv2", 3), steps=2)
    want_class = class_model.visualize(shapes_net, 1, steps=2)
    with mode():
        got = feature_visualization(shapes_net, Neuron("conv2", 3), steps=2)
        got_class = class_model.visualize(shapes_net, 1, steps=2)
    for g, w in zip((*got, *got_class), (*want, *want_class)):
        torch.testing.assert_close(g, w)
