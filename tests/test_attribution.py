"""Attribution methods, each against an independent computation."""

import copy

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from lecture_lib import attribution as A
from lecture_lib.models import IMAGENET_MEAN, IMAGENET_STD, Normalize
from lecture_lib.saturation import SaturatingToy
from lecture_lib.targets import Neuron

BACKPROP_METHODS = [A.gradient, A.input_x_gradient, A.deconvnet, A.guided_backprop]
ALL_METHODS = [*BACKPROP_METHODS, A.saliency, A.integrated_gradients, A.deeplift]


# --- the gradient: finite differences ---------------------------------------------------------


def test_gradient_matches_finite_differences(shapes_net, shapes_batch):
    model = copy.deepcopy(shapes_net).double()
    x = shapes_batch[0][:2].double()
    grad = A.gradient(model, x, target=[1, 3])
    generator = torch.Generator().manual_seed(0)
    eps = 1e-6
    for _ in range(12):
        n = int(torch.randint(0, 2, (1,), generator=generator))
        c, i, j = (int(torch.randint(0, s, (1,), generator=generator)) for s in (3, 64, 64))
        up, down = x[n : n + 1].clone(), x[n : n + 1].clone()
        up[0, c, i, j] += eps
        down[0, c, i, j] -= eps
        with torch.no_grad():
            target = [1, 3][n]
            numeric = (model(up)[0, target] - model(down)[0, target]) / (2 * eps)
        assert abs(numeric.item() - grad[n, c, i, j].item()) < 1e-5


def test_saliency_and_input_x_gradient_follow_from_the_gradient(shapes_net, shapes_batch):
    x = shapes_batch[0]
    grad = A.gradient(shapes_net, x)
    assert torch.equal(A.saliency(shapes_net, x), grad.abs().amax(dim=1))  # max over channels
    assert torch.equal(A.saliency(shapes_net, x, reduce="sum"), grad.abs().sum(dim=1))
    assert torch.equal(A.input_x_gradient(shapes_net, x), x * grad)
    assert A.saliency(shapes_net, x).shape == (8, 64, 64)


def test_target_none_is_the_predicted_class(shapes_net, shapes_batch):
    x = shapes_batch[0]
    predicted = shapes_net(x).argmax(1)
    for method in ALL_METHODS:
        torch.testing.assert_close(method(shapes_net, x), method(shapes_net, x, target=predicted))


def test_single_example_has_no_batch_axis(shapes_net, shapes_batch):
    x = shapes_batch[0][:3]
    for method in ALL_METHODS:
        batched = method(shapes_net, x, target=2)
        single = method(shapes_net, x[1], target=2)
        assert single.shape == batched.shape[1:]
        torch.testing.assert_close(single, batched[1], rtol=1e-5, atol=1e-6)


# --- DeconvNet and guided backprop: a network computed by hand -------------------------------


def _two_layer_net():
    """x (2) -> linear W1, b1 -> ReLU -> linear w2 -> y (1)."""
    model = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1, bias=False))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[1.0, -1.0], [2.0, 1.0], [-1.0, 1.0]]))
        model[0].bias.copy_(torch.tensor([0.0, -1.0, 0.5]))
        model[2].weight.copy_(torch.tensor([[2.0, -1.0, 1.0]]))
    return model


def test_rules_on_a_network_computed_by_hand():
    # Forward: h = W1 x + b1 = (-1, 3, 1.5), relu(h) = (0, 3, 1.5), y = -3 + 1.5 = -1.5.
    # Backward: R from above = w2 = (2, -1, 1); the masks keep
    #   gradient  (h > 0)          -> (0, -1, 1) -> W1^T R = (-3, 0)
    #   deconvnet (R > 0)          -> (2, 0, 1)  -> W1^T R = (1, -1)
    #   guided    (h > 0)(R > 0)   -> (0, 0, 1)  -> W1^T R = (-1, 1)
    model, x = _two_layer_net(), torch.tensor([1.0, 2.0])
    assert model(x).item() == -1.5
    assert A.gradient(model, x).tolist() == [-3.0, 0.0]
    assert A.deconvnet(model, x).tolist() == [1.0, -1.0]
    assert A.guided_backprop(model, x).tolist() == [-1.0, 1.0]
    assert A.backprop(model, x, rule="guided").tolist() == [-1.0, 1.0]


def test_guided_backprop_through_max_pool_routes_to_the_switch():
    # One 2x2 pooling region whose maximum (the switch) is at (1, 0): only it gets a gradient.
    model = nn.Sequential(nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(1, 1, bias=False))
    with torch.no_grad():
        model[3].weight.fill_(2.0)
    x = torch.tensor([[[0.5, -1.0], [3.0, 1.0]]])
    for method in (A.gradient, A.deconvnet, A.guided_backprop):
        assert method(model, x).tolist() == [[[0.0, 0.0], [2.0, 0.0]]]


# --- integrated gradients ---------------------------------------------------------------------


def _linear_model():
    torch.manual_seed(3)
    return nn.Sequential(nn.Flatten(), nn.Linear(12, 4))


def test_integrated_gradients_of_a_linear_model_is_gradient_times_input():
    model, x = _linear_model(), torch.randn(5, 3, 2, 2)
    baseline = torch.randn(3, 2, 2)
    w = model[1].weight[2].detach().view(3, 2, 2)
    for steps in (1, 7, 50):
        torch.testing.assert_close(A.integrated_gradients(model, x, target=2, steps=steps), x * w)
        torch.testing.assert_close(
            A.integrated_gradients(model, x, target=2, baseline=baseline, steps=steps),
            (x - baseline) * w,
        )


def test_integrated_gradients_completeness_on_shapes_net(shapes_net, shapes_batch):
    x = shapes_batch[0][:4]
    _, gap = A.integrated_gradients(shapes_net, x, steps=64, return_gap=True)
    _, gap_fine = A.integrated_gradients(shapes_net, x, steps=512, return_gap=True)
    with torch.no_grad():
        logits = shapes_net(x)
        delta = (
            logits.max(1).values
            - shapes_net(torch.zeros_like(x)).gather(1, logits.argmax(1, keepdim=True))[:, 0]
        )
    assert (gap_fine.abs() / delta.abs()).max() < 0.01  # the Riemann sum converges to f(x) - f(0)
    assert gap_fine.abs().mean() < gap.abs().mean() + 1e-6


def test_integrated_gradients_batches_the_path_without_changing_the_result(
    shapes_net, shapes_batch
):
    x = shapes_batch[0][:3]
    whole = A.integrated_gradients(shapes_net, x, steps=10, batch_size=1000)
    split = A.integrated_gradients(shapes_net, x, steps=10, batch_size=3)
    default = A.integrated_gradients(shapes_net, x, steps=10)
    torch.testing.assert_close(whole, split, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(default, split, rtol=1e-5, atol=1e-7)
    with pytest.raises(ValueError, match="batch_size=0"):
        A.integrated_gradients(shapes_net, x, batch_size=0)


def test_integrated_gradients_matches_a_plain_loop_over_the_path(shapes_net, shapes_batch):
    # The definition, one path point at a time: (x - x') * mean_k grad f(x' + alpha_k (x - x')).
    x, baseline, steps = shapes_batch[0][:2], torch.full((3, 64, 64), 0.25), 6
    total = torch.zeros_like(x)
    for k in range(steps):
        point = (baseline + (k + 0.5) / steps * (x - baseline)).requires_grad_(True)
        (grad,) = torch.autograd.grad(shapes_net(point)[:, 2].sum(), point)
        total += grad
    expected = (x - baseline) * total / steps
    for batch_size in (None, 1, 5):
        result = A.integrated_gradients(
            shapes_net, x, target=2, baseline=baseline, steps=steps, batch_size=batch_size
        )
        torch.testing.assert_close(result, expected, rtol=1e-5, atol=1e-7)


# --- DeepLIFT: summation to delta -------------------------------------------------------------


def _relative_gap(model, x, baseline, gap):
    with torch.no_grad():
        logits = model(x)
        target = logits.argmax(1, keepdim=True)
        reference = baseline if baseline.ndim == x.ndim else baseline.expand_as(x)
        delta = logits.gather(1, target) - model(reference.expand_as(x)).gather(1, target)
    return (gap.abs() / delta[:, 0].abs()).max().item()


@pytest.mark.parametrize("baseline", ["zeros", "noise", "per example", "blurred"])
def test_deeplift_summation_to_delta_on_shapes_net(shapes_net, shapes_batch, baseline):
    x = shapes_batch[0]
    generator = torch.Generator().manual_seed(1)
    references = {
        "zeros": torch.zeros(3, 64, 64),
        "noise": torch.rand(3, 64, 64, generator=generator),
        "per example": torch.rand(8, 3, 64, 64, generator=generator),
        "blurred": nn.functional.avg_pool2d(x, 9, stride=1, padding=4, count_include_pad=False),
    }
    reference = references[baseline]
    attributions, gap = A.deeplift(shapes_net, x, baseline=reference, return_gap=True)
    assert attributions.shape == x.shape
    assert _relative_gap(shapes_net, x, reference, gap) < 1e-3


def test_deeplift_on_relu_then_max_pool_computed_by_hand():
    # Pool two values. Input x = (1, 0), baseline x' = (0, 2): y = 1, y' = 2, so delta y = -1.
    # The gradient would send everything to x's switch (position 0) and give contributions
    # (1 * 1, 0) = (1, 0), summing to +1: wrong sign. The rule splits delta y between the
    # switches: delta y = t * delta x_s + (1 - t) * delta x_s' with delta x_s = 1, delta x_s' = -2,
    # so t = 1/3 and the contributions are (1/3, -4/3), which sum to -1.
    model = nn.Sequential(
        nn.ReLU(), nn.MaxPool2d((1, 2)), nn.Flatten(), nn.Linear(1, 1, bias=False)
    )
    with torch.no_grad():
        model[3].weight.fill_(1.0)
    x, baseline = torch.tensor([[[1.0, 0.0]]]), torch.tensor([[[0.0, 2.0]]])
    attributions, gap = A.deeplift(model, x, baseline=baseline, return_gap=True)
    torch.testing.assert_close(attributions, torch.tensor([[[1 / 3, -4 / 3]]]))
    assert abs(gap.item()) < 1e-6


def test_deeplift_with_overlapping_pools_inplace_relus_and_dropout():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(3, stride=2, padding=1),
        nn.Conv2d(8, 8, 3, padding=1),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
        nn.AdaptiveAvgPool2d(2),
        nn.Flatten(),
        nn.Dropout(0.5),
        nn.Linear(32, 6),
        nn.ReLU(inplace=True),
        nn.Linear(6, 3),
    )
    x, baseline = torch.rand(6, 3, 16, 16), torch.rand(6, 3, 16, 16)
    _, gap = A.deeplift(model, x, baseline=baseline, return_gap=True)
    assert _relative_gap(model.eval(), x, baseline, gap) < 1e-3


def test_deeplift_of_a_linear_model_is_gradient_times_difference():
    model, x, baseline = _linear_model(), torch.randn(4, 3, 2, 2), torch.randn(3, 2, 2)
    w = model[1].weight[1].detach().view(3, 2, 2)
    torch.testing.assert_close(
        A.deeplift(model, x, target=1, baseline=baseline), (x - baseline) * w
    )


def test_deeplift_rejects_nonlinearities_it_has_no_rule_for():
    model = nn.Sequential(nn.Linear(4, 4), nn.Sigmoid(), nn.Linear(4, 2))
    with pytest.raises(NotImplementedError, match="sigmoid"):
        A.deeplift(model, torch.randn(2, 4))


class Apply(nn.Module):
    """A layer that applies one function, as a model's own forward code would."""

    def __init__(self, function):
        super().__init__()
        self.function = function

    def forward(self, x):
        return self.function(x)


# Each model computes something DeepLIFT has no rule for; before the allow-list, these gave
# attributions whose sum missed f(x) - f(x') by 7-40%, without an error.
REFUSED = {
    "softplus": (nn.Softplus(), r"torch\.nn\.functional\.softplus in layer 'act' \(Softplus\)"),
    "selu": (nn.SELU(), r"torch\.nn\.functional\.selu in layer 'act' \(SELU\)"),
    "layer norm": (nn.LayerNorm(8), r"layer_norm in layer 'act' \(LayerNorm\)"),
    "Tensor.softmax": (Apply(lambda h: h.softmax(dim=1)), r"Tensor\.softmax in layer 'act'"),
    "x * x": (Apply(lambda h: h * h), r"multiplies two tensors .*Tensor\.mul in layer 'act'"),
    "global max": (Apply(lambda h: h.amax(dim=1, keepdim=True) + h), r"Tensor\.amax"),
    "torch.amax": (Apply(lambda h: torch.amax(h, dim=1, keepdim=True) + h), r"torch\.amax"),
    "1 / x": (Apply(lambda h: 1 / (h + 10)), r"Tensor\.__rdiv__"),
    "x / sum x": (Apply(lambda h: h / h.sum()), r"divides by a tensor .*Tensor\.div"),
    "x ** 2": (Apply(lambda h: h**2), r"Tensor\.pow"),
    "abs": (Apply(torch.abs), r"torch\.abs"),
    "rounding": (Apply(lambda h: h.round()), r"Tensor\.round"),
    "integer cast": (Apply(lambda h: h.long().float()), r"Tensor\.long"),
    "gating": (Apply(lambda h: h * (h > 0)), r"Tensor\.gt"),
    "leaky relu": (nn.LeakyReLU(), r"leaky_relu"),
    "relu6": (nn.ReLU6(), r"relu6|hardtanh"),
    "max-pool 1-D": (
        Apply(lambda h: F.max_pool1d(h[:, None], 2).repeat_interleave(2, -1)[:, 0]),
        r"max_pool1d",
    ),
    "dropout in training": (
        Apply(lambda h: F.dropout(h, 0.5, training=True)),
        r"dropout in layer 'act' \(Apply\) in training mode",
    ),
}


@pytest.mark.parametrize("name", REFUSED)
def test_deeplift_refuses_every_operation_without_a_rule_and_names_it(name):
    layer, message = REFUSED[name]
    torch.manual_seed(0)
    model = nn.Sequential()
    model.add_module("fc1", nn.Linear(6, 8))
    model.add_module("act", layer)
    model.add_module("fc2", nn.Linear(8, 3))
    x, baseline = torch.randn(4, 6), torch.randn(4, 6)
    with pytest.raises(NotImplementedError, match=f"^deeplift: .*{message}") as error:
        A.deeplift(model, x, baseline=baseline)
    assert "integrated_gradients" in str(error.value)  # what to do instead
    if name != "integer cast":
        A.integrated_gradients(model.eval(), x, baseline=baseline, steps=2)  # which explains it


@pytest.mark.parametrize("method", [A.deeplift, A.integrated_gradients, A.gradient])
def test_a_batch_norm_with_batch_statistics_is_refused_naming_it(method):
    """Each example's map would depend on the others batched with it (path points, copies)."""
    model = nn.Sequential()
    model.add_module("fc1", nn.Linear(6, 8))
    model.add_module("act", nn.BatchNorm1d(8, track_running_stats=False))
    model.add_module("fc2", nn.Linear(8, 3))
    with pytest.raises(ValueError, match=r"layer 'act' \(BatchNorm1d\) has no running statistics"):
        method(model, torch.randn(4, 6))


@pytest.mark.parametrize("method", ALL_METHODS)
def test_a_model_without_gradient_is_explained(method):
    cast = Apply(lambda h: h.detach())
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(72, 3), cast)
    with pytest.raises(ValueError, match=rf"{method.__name__}: .*does not depend on the inputs"):
        method(model, torch.randn(2, 1, 8, 8), target=0)


class EveryLinearOperation(nn.Module):
    """ReLU, max-pooling and many linear operations, each written as model code writes them."""

    def __init__(self):
        super().__init__()
        self.normalize = Normalize(IMAGENET_MEAN, IMAGENET_STD)
        self.conv = nn.Conv2d(3, 6, 3, padding=1, padding_mode="reflect")
        self.bn = nn.BatchNorm2d(6)
        self.scale = nn.Parameter(torch.linspace(0.5, 2.0, 6).view(1, 6, 1, 1))
        self.branch = nn.Conv2d(6, 6, 1)
        self.fc = nn.Linear(12 * 8 * 8 + 2, 3)
        self.dropout = nn.Dropout(0.3)
        with torch.no_grad():
            self.bn.running_mean.uniform_(-0.5, 0.5)
            self.bn.running_var.uniform_(0.5, 2.0)

    def forward(self, x):
        h = torch.relu(self.bn(self.conv(self.normalize(x))))
        h = F.max_pool2d(h, 2) * self.scale / 2.0 - 0.1
        identity = h
        h = self.branch(h).clamp(min=0)
        h += identity  # a residual connection, in place
        h = F.avg_pool2d(F.pad(h, (1, 1, 1, 1)), 3, stride=1)
        h = torch.cat([h, F.interpolate(h[:, :, ::2, ::2], scale_factor=2.0)], dim=1)
        flat = torch.flatten(h, 1)
        extra = torch.stack([flat[:, :10].sum(1), flat.mean(1)], dim=1)
        return self.fc(self.dropout(torch.cat([flat, extra], dim=1)))


def test_deeplift_allows_linear_operations_and_keeps_summation_to_delta():
    torch.manual_seed(0)
    model = EveryLinearOperation().eval()
    x, baseline = torch.rand(5, 3, 16, 16), torch.rand(5, 3, 16, 16)
    _, gap = A.deeplift(model, x, baseline=baseline, return_gap=True)
    assert _relative_gap(model, x, baseline, gap) < 1e-4


@pytest.mark.parametrize("name", ["vgg11 after Normalize", "resnet18", "saturating toy"])
def test_deeplift_accepts_the_courses_and_torchvisions_networks(name):
    torch.manual_seed(0)
    if name == "saturating toy":
        model, x, baseline = SaturatingToy(), torch.rand(6, 2), torch.zeros(6, 2)
    else:
        network = (
            torchvision.models.vgg11() if name.startswith("vgg") else torchvision.models.resnet18()
        )
        model = nn.Sequential(Normalize(IMAGENET_MEAN, IMAGENET_STD), network).eval()
        x, baseline = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32)
    _, gap = A.deeplift(model, x, baseline=baseline, return_gap=True)
    assert _relative_gap(model, x, baseline, gap) < 1e-3


# --- neuron targets ---------------------------------------------------------------------------


def test_neuron_target_explains_one_channels_strongest_activation(shapes_net, shapes_batch):
    x = shapes_batch[0][:2]
    grad = A.gradient(shapes_net, x, target=Neuron("conv3", 5))
    # By hand: the maximum of channel 5 of conv3's output.
    xr = x.clone().requires_grad_(True)
    h = shapes_net.pool2(
        shapes_net.relu2(shapes_net.conv2(shapes_net.pool1(shapes_net.relu1(shapes_net.conv1(xr)))))
    )
    activity = shapes_net.conv3(h)[:, 5].flatten(1).amax(1)
    (expected,) = torch.autograd.grad(activity.sum(), xr)
    torch.testing.assert_close(grad, expected)
    summed = A.gradient(shapes_net, x, target=Neuron("conv3", 5, reduce="sum"))
    assert not torch.allclose(summed, grad)
    for method in (A.deconvnet, A.guided_backprop):
        assert method(shapes_net, x, target=Neuron("relu4", 0)).shape == x.shape


def test_neuron_target_with_summation_to_delta(shapes_net, shapes_batch):
    x = shapes_batch[0][:2]
    neuron = Neuron("conv3", 7, reduce="sum")
    attributions, gap = A.deeplift(shapes_net, x, target=neuron, return_gap=True)
    assert gap.abs().max() < 1e-3 * attributions.flatten(1).sum(1).abs().max()
    with pytest.raises(ValueError, match="reduce='sum'"):
        A.deeplift(shapes_net, x, target=Neuron("conv3", 7))


def test_neuron_target_errors_list_what_is_valid(shapes_net, shapes_batch):
    x = shapes_batch[0][:1]
    with pytest.raises(ValueError, match="no layer named 'conv9'.*conv1, relu1, pool1"):
        A.gradient(shapes_net, x, target=Neuron("conv9", 0))
    with pytest.raises(ValueError, match="64 channels.*0..63.*channel=64"):
        A.guided_backprop(shapes_net, x, target=Neuron("conv3", 64))


# --- bad input speaks to the student -----------------------------------------------------------


@pytest.mark.parametrize("method", ALL_METHODS)
def test_bad_inputs_are_explained(shapes_net, shapes_batch, method):
    x = shapes_batch[0][:2]
    name = method.__name__
    with pytest.raises(ValueError, match=rf"{name}.*shape \(1, 2, 3, 64, 64\)"):
        method(shapes_net, x[None])
    with pytest.raises(TypeError, match=rf"{name}.*floating point.*torch.uint8"):
        method(shapes_net, (x * 255).to(torch.uint8))
    with pytest.raises(ValueError, match=rf"{name}.*target 5 is out of range.*0..4"):
        method(shapes_net, x, target=5)
    with pytest.raises(ValueError, match=rf"{name}.*3 entries.*2 examples"):
        method(shapes_net, x, target=[0, 1, 2])
    with pytest.raises(ValueError, match="NaN"):
        method(shapes_net, torch.full_like(x, float("nan")))


def test_unknown_rule_and_rules_without_relu():
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 3))
    x = torch.rand(2, 3, 2, 2)
    with pytest.raises(ValueError, match="Unknown rule 'deconv'"):
        A.backprop(model, x, rule="deconv")
    for method in (A.deconvnet, A.guided_backprop):
        with pytest.raises(ValueError, match="no ReLU"):
            method(model, x)
    A.gradient(model, x)  # the gradient needs no ReLU


def test_bad_baseline_is_explained(shapes_net, shapes_batch):
    x = shapes_batch[0][:2]
    for method in (A.integrated_gradients, A.deeplift):
        with pytest.raises(ValueError, match="baseline of shape"):
            method(shapes_net, x, baseline=torch.zeros(3, 32, 32))
    with pytest.raises(ValueError, match="steps=0"):
        A.integrated_gradients(shapes_net, x, steps=0)


# --- nothing is changed: inputs, model ---------------------------------------------------------


def _state(model):
    return (
        [m.training for m in model.modules()],
        [p.requires_grad for p in model.parameters()],
        [p.grad for p in model.parameters()],
        [p.detach().clone() for p in model.parameters()],
        [
            (len(m._forward_hooks), len(m._forward_pre_hooks), len(m._backward_hooks))
            for m in model.modules()
        ],
    )


def _assert_same_state(before, after):
    assert before[0] == after[0] and before[1] == after[1] and before[4] == after[4]
    assert all(g is None for g in after[2])
    assert all(torch.equal(p, q) for p, q in zip(before[3], after[3]))


@pytest.mark.parametrize("method", ALL_METHODS)
def test_model_and_inputs_are_left_as_they_came(shapes_net, shapes_batch, method):
    model = copy.deepcopy(shapes_net).train()
    model.conv1.weight.requires_grad_(False)
    model.fc1.register_forward_hook(lambda *args: None)
    x = shapes_batch[0][:2]
    kept = x.clone()
    before = _state(model)
    method(model, x)
    _assert_same_state(before, _state(model))
    with pytest.raises(ValueError):
        method(model, x, target=17)  # an error raised after the forward pass
    _assert_same_state(before, _state(model))
    with pytest.raises(ValueError):
        method(model, x, target=Neuron("nowhere", 0))
    _assert_same_state(before, _state(model))
    assert torch.equal(x, kept) and not x.requires_grad


# --- where the answer is well defined, methods work; otherwise they say what to do -------------


@pytest.mark.parametrize("method", ALL_METHODS)
def test_methods_inside_no_grad_and_inference_mode_return_the_same(
    shapes_net, shapes_batch, method
):
    x = shapes_batch[0][:2]
    expected = method(shapes_net, x, target=1)
    with torch.no_grad():
        inside_no_grad = method(shapes_net, x, target=1)
        assert not torch.is_grad_enabled()  # the caller's mode is back
    with torch.inference_mode():
        inside_inference = method(shapes_net, x, target=1)
        made_inside = method(shapes_net, x * 1.0, target=1)  # an inference tensor
        assert torch.is_inference_mode_enabled()
    for result in (inside_no_grad, inside_inference, made_inside):
        torch.testing.assert_close(result, expected, rtol=0, atol=0)


@pytest.mark.parametrize("method", ALL_METHODS)
def test_float64_inputs_into_a_float32_model(shapes_net, shapes_batch, method):
    x = shapes_batch[0][:2]
    expected = method(shapes_net, x, target=3)
    result = method(shapes_net, x.double(), target=3)
    assert result.dtype == torch.float64  # the inputs' dtype, as the device is the inputs'
    torch.testing.assert_close(result, expected.double())
    model64 = copy.deepcopy(shapes_net).double()
    atol = 1e-5
    if method is A.integrated_gradients:
        # The mean of 50 gradients along the path: at a path point where a ReLU's input (or two
        # max-pool candidates) lie within float32 rounding, the float32 and the float64 model
        # take different sides for that one step (seen on some CPUs: one of the 50 points,
        # 3e-5 in the map, 4e-4 of its largest value), so the maps agree to a share of a step.
        atol = 2e-3 * float(expected.abs().max())
    torch.testing.assert_close(method(model64, x, target=3), expected, rtol=1e-4, atol=atol)


def _grey_image_model():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(64, 3)
    ).eval()


@pytest.mark.parametrize("method", ALL_METHODS)
def test_an_image_without_channel_axis(shapes_net, method):
    image = torch.rand(8, 8)
    model = _grey_image_model()
    result = method(model, image, target=2)  # [H, W] is one grey image for a 1-channel model
    expected = method(model, image[None, None], target=2)  # the same image as a batch
    assert result.shape == (8, 8)
    torch.testing.assert_close(result, expected.reshape(8, 8))
    with pytest.raises(
        ValueError, match=rf"{method.__name__}: .*\[H, W\].*'conv1'.*3 channels.*\[3, H, W\]"
    ):
        method(shapes_net, torch.rand(64, 64))


# --- a batch larger than one pass -------------------------------------------------------------


def test_passes_cut_evenly_and_cover_every_example():
    from lecture_lib.targets import passes

    assert passes(64, 42) == [slice(0, 32), slice(32, 64)]
    assert passes(5, 5) == [slice(0, 5)]
    for n, size in [(1, 1), (7, 3), (100, 42), (43, 42)]:
        parts = passes(n, size)
        assert parts[0].start == 0 and parts[-1].stop == n
        assert all(a.stop == b.start for a, b in zip(parts, parts[1:]))
        assert all(0 < p.stop - p.start <= size for p in parts)
        assert len(parts) == -(-n // size)


@pytest.mark.parametrize("target", [None, 2, "per example", Neuron("conv3", 5)])
def test_a_batch_in_several_passes_equals_each_example_alone(
    shapes_net, shapes_batch, target, monkeypatch
):
    """Three images per pass on a batch of 8: every method's maps equal those of each image
    explained on its own (the reference: one image per call, which no split can touch)."""
    from lecture_lib import targets

    x = shapes_batch[0]
    if target == "per example":
        target = torch.tensor([0, 1, 2, 3, 4, 0, 1, 2])
    alone = {
        method: torch.stack(
            [
                method(
                    shapes_net,
                    x[k],
                    target=target[k] if isinstance(target, torch.Tensor) else target,
                )
                for k in range(len(x))
            ]
        )
        for method in BACKPROP_METHODS + [A.saliency]
    }
    monkeypatch.setattr(targets, "PASS_VALUES", 3 * x[0].numel())
    assert targets.pass_size(x) == 3
    for method, expected in alone.items():
        torch.testing.assert_close(
            method(shapes_net, x, target=target), expected, rtol=1e-5, atol=1e-7
        )


def test_a_target_out_of_range_in_a_later_pass_is_reported(shapes_net, shapes_batch, monkeypatch):
    from lecture_lib import targets

    monkeypatch.setattr(targets, "PASS_VALUES", 3 * shapes_batch[0][0].numel())
    with pytest.raises(ValueError, match="target 9 is out of range"):
        A.gradient(shapes_net, shapes_batch[0], target=[0, 1, 2, 3, 4, 0, 1, 9])
    with pytest.raises(ValueError, match="target has 7 entries but inputs hold 8"):
        A.gradient(shapes_net, shapes_batch[0], target=[0] * 7)
