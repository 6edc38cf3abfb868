"""Grad-CAM and guided Grad-CAM, each against an independent computation."""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lecture_lib import attribution as A
from lecture_lib.targets import Neuron


def small_net(inplace: bool = False) -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        nn.ReLU(inplace=inplace),
        nn.MaxPool2d(2),
        nn.Conv2d(4, 6, 3, padding=1),
        nn.ReLU(inplace=inplace),
        nn.Flatten(),
        nn.Linear(6 * 4 * 4, 3),
    ).eval()


def hooked_grad_cam(model, x, target, layer: nn.Module):
    """Grad-CAM written out with a forward hook (the maps A) and a full backward hook (dS/dA)."""
    saved = {}
    forward = layer.register_forward_hook(lambda m, i, out: saved.update(a=out.detach()))
    backward = layer.register_full_backward_hook(
        lambda m, grad_in, grad_out: saved.update(g=grad_out[0].detach())
    )
    try:
        x = x.clone().requires_grad_(True)
        scores = model(x)
        scores[torch.arange(len(x)), target].sum().backward()
    finally:
        forward.remove()
        backward.remove()
        model.zero_grad(set_to_none=True)
    alpha = saved["g"].mean(dim=(2, 3), keepdim=True)
    return torch.relu((alpha * saved["a"]).sum(dim=1))


def test_grad_cam_matches_a_hook_based_grad_cam_on_a_small_net():
    model = small_net()
    x = torch.rand(5, 3, 8, 8)
    target = torch.tensor([0, 1, 2, 1, 0])
    expected = hooked_grad_cam(model, x, target, model[3])
    got = A.grad_cam(model, x, target, layer="3", upsample=False)
    assert got.shape == (5, 4, 4)
    torch.testing.assert_close(got, expected)
    upsampled = A.grad_cam(model, x, target, layer="3")
    assert upsampled.shape == (5, 8, 8)
    torch.testing.assert_close(
        upsampled, F.interpolate(expected[:, None], size=(8, 8), mode="bilinear")[:, 0]
    )


def test_grad_cam_matches_the_hook_version_on_shapes_net(shapes_net, shapes_batch):
    x = shapes_batch[0]
    predicted = shapes_net(x).argmax(1)
    model = copy.deepcopy(shapes_net)
    expected = hooked_grad_cam(model, x, predicted, model.relu4)
    torch.testing.assert_close(A.grad_cam(shapes_net, x, upsample=False), expected)
    # the default layer is the last convolution's rectified maps (Selvaraju et al.'s code)
    torch.testing.assert_close(A.grad_cam(shapes_net, x), A.grad_cam(shapes_net, x, layer="relu4"))
    before = hooked_grad_cam(model, x, predicted, model.conv4)
    torch.testing.assert_close(A.grad_cam(shapes_net, x, layer="conv4", upsample=False), before)
    assert not torch.allclose(before, expected)


def test_the_default_layer_is_the_relu_after_the_last_convolution_or_the_convolution():
    x = torch.rand(2, 3, 8, 8)
    model = small_net()  # conv, relu, pool, conv, relu ("4"), flatten, linear
    torch.testing.assert_close(A.grad_cam(model, x, 1), A.grad_cam(model, x, 1, layer="4"))
    bare = nn.Sequential(nn.Conv2d(3, 2, 3, padding=1), nn.Flatten(), nn.Linear(128, 3)).eval()
    torch.testing.assert_close(A.grad_cam(bare, x, 1), A.grad_cam(bare, x, 1, layer="0"))


def test_hires_cam_is_grad_cam_with_the_gradient_at_each_position(shapes_net, shapes_batch):
    x = shapes_batch[0][:3]
    torch.testing.assert_close(
        A.hires_cam(shapes_net, x, 2), A.grad_cam(shapes_net, x, 2, elementwise=True)
    )
    assert not torch.allclose(A.hires_cam(shapes_net, x, 2), A.grad_cam(shapes_net, x, 2))


def test_with_global_average_pooling_grad_cam_is_cam():
    # Zhou et al.'s CAM network: S_c = sum_k w_ck mean_ij A^k_ij, so alpha_k^c = w_ck / Z and
    # Grad-CAM = ReLU(sum_k w_ck A^k) / Z with Z = h * w (Selvaraju et al., section 3.1).
    torch.manual_seed(1)
    conv, linear = nn.Conv2d(3, 5, 3, padding=1), nn.Linear(5, 4)
    model = nn.Sequential(conv, nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), linear).eval()
    x = torch.rand(3, 3, 6, 6)
    with torch.no_grad():
        maps = torch.relu(conv(x))
        cam = torch.einsum("k,nkij->nij", linear.weight[2], maps).clamp(min=0) / 36
    torch.testing.assert_close(A.grad_cam(model, x, 2, layer="1", upsample=False), cam)


def test_elementwise_on_a_flattening_head_is_the_linear_layers_contribution():
    # S_c = sum_kij W[c, k, i, j] A_kij + b: each position's own contribution, summed over k
    model = small_net()
    x = torch.rand(2, 3, 8, 8)
    with torch.no_grad():
        maps = model[:5](x)  # ReLU(conv2), [2, 6, 4, 4]
        weights = model[6].weight[1].view(6, 4, 4)
        expected = (weights * maps).sum(dim=1).clamp(min=0)
    got = A.grad_cam(model, x, 1, layer="4", upsample=False, elementwise=True)
    torch.testing.assert_close(got, expected)


def test_an_in_place_relu_after_the_layer_changes_nothing():
    x = torch.rand(3, 3, 8, 8)
    plain, inplace = small_net(), small_net(inplace=True)
    torch.testing.assert_close(
        A.grad_cam(inplace, x, 1, layer="3"), A.grad_cam(plain, x, 1, layer="3")
    )


def test_grad_cam_is_class_discriminative(shapes_net, shapes_batch):
    x = shapes_batch[0]
    maps = torch.stack([A.grad_cam(shapes_net, x, c) for c in range(5)], dim=1)  # [N, 5, H, W]
    for n in range(len(x)):
        assert not torch.allclose(maps[n, 0], maps[n, 1])
    assert (maps >= 0).all()


def test_guided_grad_cam_is_guided_backprop_times_the_upsampled_cam(shapes_net, shapes_batch):
    x = shapes_batch[0][:4]
    predicted = shapes_net(x).argmax(1)
    expected = (
        A.guided_backprop(shapes_net, x, predicted) * A.grad_cam(shapes_net, x, predicted)[:, None]
    )
    torch.testing.assert_close(A.guided_grad_cam(shapes_net, x), expected)
    assert A.guided_grad_cam(shapes_net, x[0], target=2).shape == (3, 64, 64)


def test_single_image_and_neuron_target(shapes_net, shapes_batch):
    x = shapes_batch[0][:3]
    torch.testing.assert_close(A.grad_cam(shapes_net, x[1], 3), A.grad_cam(shapes_net, x, 3)[1])
    neuron = A.grad_cam(shapes_net, x, Neuron("conv4", 5), layer="conv3")
    assert neuron.shape == (3, 64, 64)
    with pytest.raises(ValueError, match="does not depend on layer 'conv4'"):
        A.grad_cam(shapes_net, x, Neuron("conv3", 5), layer="conv4")


def test_errors_name_what_is_valid(shapes_net, shapes_batch):
    x = shapes_batch[0][:2]
    with pytest.raises(ValueError, match=r"no layer named 'conv9'.*Valid layers: conv1, relu1"):
        A.grad_cam(shapes_net, x, layer="conv9")
    with pytest.raises(ValueError, match=r"'fc1'.*\(2, 128\).*spatial maps: conv1, .*pool4\."):
        A.grad_cam(shapes_net, x, layer="fc1")
    with pytest.raises(ValueError, match=r"target 7 is out of range"):
        A.grad_cam(shapes_net, x, 7)
    with pytest.raises(ValueError, match=r"expects images"):
        A.grad_cam(nn.Linear(4, 2), torch.rand(3, 4), layer="")
    with pytest.raises(ValueError, match=r"no nn.Conv2d.*layer="):
        A.grad_cam(nn.Sequential(nn.Flatten(), nn.Linear(12, 2)), torch.rand(1, 3, 2, 2))
    with pytest.raises(ValueError, match="guided_grad_cam.*no layer named"):
        A.guided_grad_cam(shapes_net, x, layer="nowhere")


def _state(model):
    return (
        [m.training for m in model.modules()],
        [p.requires_grad for p in model.parameters()],
        [p.grad for p in model.parameters()],
        [p.detach().clone() for p in model.parameters()],
        [(len(m._forward_hooks), len(m._backward_hooks)) for m in model.modules()],
    )


@pytest.mark.parametrize("method", [A.grad_cam, A.guided_grad_cam])
def test_model_and_inputs_are_left_as_they_came(shapes_net, shapes_batch, method):
    model = copy.deepcopy(shapes_net).train()
    model.conv1.weight.requires_grad_(False)
    model.fc1.register_forward_hook(lambda *args: None)
    x = shapes_batch[0][:2]
    kept = x.clone()
    before = _state(model)
    for bad in ({}, {"layer": "fc1"}, {"target": 9}):
        try:
            method(model, x, **bad)
        except ValueError:
            pass
        after = _state(model)
        assert before[0] == after[0] and before[1] == after[1] and before[4] == after[4]
        assert all(g is None for g in after[2])
        assert all(torch.equal(p, q) for p, q in zip(before[3], after[3]))
    assert torch.equal(x, kept) and not x.requires_grad


@pytest.mark.parametrize("mode", [torch.no_grad, torch.inference_mode])
def test_the_same_under_no_grad_and_inference_mode_and_in_float64(mode):
    model = small_net()
    x = torch.rand(2, 3, 8, 8)
    want = A.grad_cam(model, x, [0, 2]), A.guided_grad_cam(model, x, [0, 2])
    with mode():
        got = A.grad_cam(model, x, [0, 2]), A.guided_grad_cam(model, x, [0, 2])
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w)
    wide = A.grad_cam(model, x.double(), [0, 2])
    assert wide.dtype == torch.float64
    torch.testing.assert_close(wide, want[0].double())


@pytest.mark.parametrize("reduce", ["sum", "max"])
def test_a_neuron_before_an_in_place_relu_is_explained_by_its_own_output(reduce):
    """The Neuron on conv2 (followed by an in-place ReLU): dS/dA of conv1's maps by hand."""
    model = small_net(inplace=True).double()
    x = torch.rand(2, 3, 8, 8, dtype=torch.float64) - 0.5
    a = model[0](x).requires_grad_(True)
    conv2 = model[3](model[2](torch.relu(a)))
    maps = conv2[:, 1].flatten(1)
    f = maps.sum(1) if reduce == "sum" else maps.amax(1)
    (g,) = torch.autograd.grad(f.sum(), a)
    want = (g.mean((2, 3), keepdim=True) * a).sum(1).clamp(min=0).detach()
    got = A.grad_cam(model, x, Neuron("3", 1, reduce), layer="0", upsample=False)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("flag", ["upsample", "elementwise"])
def test_flags_must_be_booleans(flag):
    with pytest.raises(TypeError, match=f"{flag} must be True or False, got {flag}='yes'"):
        A.grad_cam(small_net(), torch.rand(3, 8, 8), **{flag: "yes"})
