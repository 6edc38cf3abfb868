"""Feature maps and filters against a manual forward pass through ShapesNet's layers."""

import pytest
import torch
from torch import nn

from lecture_lib.activations import feature_maps, filters, relu_layers, top_channels
from lecture_lib.saturation import SaturatingToy


def manual_forward(model, x):
    """Every layer's output, computed by calling the layers one after another."""
    outputs = {}
    with torch.no_grad():
        for name, layer in model.named_children():
            x = layer(x)
            outputs[name] = x.clone()
    return outputs


def assert_no_hooks(model):
    for m in model.modules():
        assert not m._forward_hooks and not m._forward_pre_hooks and not m._backward_hooks


def test_default_is_every_relu_in_forward_order(shapes_net, shapes_batch):
    images = shapes_batch[0][:3]
    maps = feature_maps(shapes_net, images)
    assert list(maps) == ["relu1", "relu2", "relu3", "relu4", "relu5"]
    expected = manual_forward(shapes_net, images)
    for name, value in maps.items():
        torch.testing.assert_close(value, expected[name])
    assert maps["relu1"].shape == (3, 16, 64, 64)
    assert maps["relu4"].shape == (3, 64, 8, 8)
    assert maps["relu5"].shape == (3, 128)


def test_named_layers_in_the_order_asked(shapes_net, shapes_batch):
    images = shapes_batch[0][:2]
    maps = feature_maps(shapes_net, images, layers=["pool2", "conv1", "fc2"])
    assert list(maps) == ["pool2", "conv1", "fc2"]
    expected = manual_forward(shapes_net, images)
    for name in maps:
        torch.testing.assert_close(maps[name], expected[name])
    torch.testing.assert_close(maps["fc2"], shapes_net(images).detach())


def test_conv_output_is_not_overwritten_by_an_in_place_relu():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(inplace=True), nn.Conv2d(4, 2, 3))
    x = torch.randn(2, 3, 8, 8)
    maps = feature_maps(model, x, layers=["0", "1"])
    with torch.no_grad():
        conv = model[0](x)
    torch.testing.assert_close(maps["0"], conv)
    assert (maps["0"] < 0).any()  # the pre-activation keeps its negative values
    torch.testing.assert_close(maps["1"], conv.clamp(min=0))


def test_single_image_gives_maps_without_batch_axis(shapes_net, shapes_batch):
    image = shapes_batch[0][4]
    maps = feature_maps(shapes_net, image, layers="conv2")
    assert list(maps) == ["conv2"]
    assert maps["conv2"].shape == (32, 32, 32)
    batch = feature_maps(shapes_net, shapes_batch[0], layers="conv2")["conv2"]
    torch.testing.assert_close(maps["conv2"], batch[4], atol=1e-5, rtol=1e-5)


def test_maps_need_no_gradient_and_inputs_stay(shapes_net, shapes_batch):
    images = shapes_batch[0][:2].clone().requires_grad_(True)
    copy = images.detach().clone()
    maps = feature_maps(shapes_net, images)
    assert all(not m.requires_grad and m.grad_fn is None for m in maps.values())
    assert torch.equal(images.detach(), copy) and images.grad is None


def test_unknown_name_lists_the_valid_ones(shapes_net, shapes_batch):
    with pytest.raises(ValueError, match="no layer named 'conv9'.*conv1.*relu1.*fc2"):
        feature_maps(shapes_net, shapes_batch[0], layers=["conv1", "conv9"])
    with pytest.raises(TypeError, match="layers must be"):
        feature_maps(shapes_net, shapes_batch[0], layers=[])
    with pytest.raises(TypeError, match="layers must be"):
        feature_maps(shapes_net, shapes_batch[0], layers=3)
    assert_no_hooks(shapes_net)


def test_hooks_removed_and_mode_restored_after_an_error():
    model = nn.Sequential(nn.Conv2d(3, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(5, 2)).train()
    with pytest.raises(RuntimeError):  # the linear layer does not fit the flattened maps
        feature_maps(model, torch.rand(1, 3, 8, 8), layers=["0", "1"])
    assert_no_hooks(model)
    assert all(m.training for m in model.modules())


def test_model_mode_kept_after_success(shapes_net, shapes_batch):
    shapes_net.train()
    try:
        feature_maps(shapes_net, shapes_batch[0][:1])
        assert all(m.training for m in shapes_net.modules())
        assert all(p.grad is None for p in shapes_net.parameters())
        assert_no_hooks(shapes_net)
    finally:
        shapes_net.eval()


def test_a_layer_that_never_runs_is_reported():
    class Unused(nn.Module):
        def __init__(self):
            super().__init__()
            self.used = nn.Linear(2, 2)
            self.spare = nn.ReLU()

        def forward(self, x):
            return self.used(x)

    with pytest.raises(ValueError, match="'spare' did not run"):
        feature_maps(Unused(), torch.ones(1, 2), layers=["used", "spare"])


def test_a_shared_relu_gives_its_last_output():
    class Shared(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(2, 2)
            self.relu = nn.ReLU()

        def forward(self, x):
            return self.relu(self.a(self.relu(x)))

    model = Shared()
    x = torch.tensor([[1.0, -2.0]])
    maps = feature_maps(model, x)
    with torch.no_grad():
        expected = model.a(x.clamp(min=0)).clamp(min=0)
    torch.testing.assert_close(maps["relu"], expected)


def test_no_relu_layer_means_name_the_layers():
    model = nn.Sequential(nn.Linear(2, 2))
    with pytest.raises(ValueError, match="no nn.ReLU layer"):
        feature_maps(model, torch.ones(2))


def test_relu_layers_of_the_toy():
    assert relu_layers(SaturatingToy()) == ["relu"]
    maps = feature_maps(SaturatingToy(), torch.tensor([0.2, 0.3]))
    torch.testing.assert_close(maps["relu"], torch.tensor([0.5]))


# --- filters ----------------------------------------------------------------------------------


def test_filters_are_the_conv1_kernels_scaled_per_filter(shapes_net):
    kernels = filters(shapes_net)
    weight = shapes_net.conv1.weight.detach()
    assert kernels.shape == weight.shape == (16, 3, 3, 3)
    for k, w in zip(kernels, weight):
        expected = (w - w.min()) / (w.max() - w.min())
        torch.testing.assert_close(k, expected)
        assert k.min().item() == 0.0 and k.max().item() == 1.0


def test_filters_of_another_layer_and_a_constant_filter():
    conv = nn.Conv2d(2, 3, 5)
    with torch.no_grad():
        conv.weight[1] = 0.7
    kernels = filters(nn.Sequential(conv), layer="0")
    assert kernels.shape == (3, 2, 5, 5)
    assert torch.equal(kernels[1], torch.full((2, 5, 5), 0.5))


def test_filters_leave_the_weights_alone(shapes_net):
    before = shapes_net.conv1.weight.detach().clone()
    kernels = filters(shapes_net, "conv1")
    kernels += 1
    assert torch.equal(shapes_net.conv1.weight.detach(), before)


def test_filters_need_a_conv_layer(shapes_net):
    with pytest.raises(ValueError, match="'fc1' is a Linear, not a Conv2d"):
        filters(shapes_net, "fc1")
    with pytest.raises(ValueError, match="no layer named 'conv0'"):
        filters(shapes_net, "conv0")


# --- top channels -----------------------------------------------------------------------------


def test_top_channels_by_mean_activation():
    feature_map = torch.zeros(5, 2, 2)
    feature_map[3] = 4.0
    feature_map[1] = 2.0
    feature_map[4, 0, 0] = 4.0  # mean 1
    assert top_channels(feature_map, 3).tolist() == [3, 1, 4]
    batch = torch.stack([feature_map, feature_map.flip(0)])  # means per channel are symmetric
    assert set(top_channels(batch, 2).tolist()) == {1, 3}


def test_top_channels_bad_arguments():
    with pytest.raises(ValueError, match="k must be an int in 1..5"):
        top_channels(torch.zeros(5, 2, 2), 6)
    with pytest.raises(ValueError, match=r"\[channels, h, w\]"):
        top_channels(torch.zeros(5, 2), 1)
