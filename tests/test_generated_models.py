"""Generated models: small convnets drawn from a grammar of layers (shared modules, subclasses
with their own forward, in-place activations, padding kinds), each checked against an
independent computation.

- occlusion, computed incrementally where the plan allows it, equals every occluded image run
  through the whole network;
- the gradient of a ``Neuron`` equals autograd on the layers run by hand up to that layer
  (its last call, each layer on a copy, so no in-place layer can change what it reads).

Hypothesis draws the models (derandomized, so the suite is deterministic); cases it once shrank
to stay below as plain tests.
"""

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from lecture_lib import attribution
from lecture_lib.perturbation import occlusion, occlusion_plan
from lecture_lib.targets import Neuron

SETTINGS = settings(max_examples=12, deadline=None, derandomize=True, database=None)


class StdConv2d(nn.Conv2d):
    """A weight-standardised convolution (timm's StdConv2d): its own forward."""

    def forward(self, x):
        w = self.weight
        w = (w - w.mean((1, 2, 3), keepdim=True)) / (
            w.std((1, 2, 3), keepdim=True, correction=0) + 1e-5
        )
        return F.conv2d(x, w, self.bias, self.stride, self.padding, self.dilation, self.groups)


class ScaledReLU(nn.ReLU):
    def forward(self, x):
        return 1.5 * torch.relu(x)


class SoftPool(nn.MaxPool2d):
    """A max-pooling class that averages: the name says one thing, the forward another."""

    def forward(self, x):
        return F.avg_pool2d(x, self.kernel_size, self.stride, self.padding)


conv_spec = st.tuples(
    st.just("conv"),
    st.integers(1, 4),  # out channels
    st.integers(1, 3),  # kernel
    st.integers(1, 2),  # stride
    st.sampled_from(["zeros", "half", "same", "valid"]),  # padding kind
    st.integers(1, 2),  # dilation
    st.booleans(),  # grouped (depthwise when the channels allow)
    st.booleans(),  # a StdConv2d
)
layer_spec = st.one_of(
    conv_spec,
    st.tuples(st.just("relu"), st.booleans()),  # in place
    st.tuples(st.sampled_from(["leaky", "tanh", "identity", "scaled_relu", "norm"])),
    st.tuples(st.just("pool"), st.integers(2, 3), st.integers(1, 2), st.booleans(), st.booleans()),
    st.tuples(st.just("shared_relu")),
    st.tuples(st.just("shared_conv"), st.integers(0, 3)),
)


def build(specs, channels: int, size: int, seed: int) -> nn.Sequential:
    """The convnet the specs describe, skipping a layer that would not fit; then flatten and a
    linear layer to 3 classes. Float64, eval mode, random batch-norm statistics."""
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    convs: list[nn.Conv2d] = []
    relu = None
    for spec in specs:
        kind = spec[0]
        if kind == "conv":
            _, out, kernel, stride, padding, dilation, grouped, standardised = spec
            reach = dilation * (kernel - 1)
            pad = {"zeros": reach // 2, "half": kernel // 2, "valid": 0, "same": "same"}[padding]
            if pad == "same" and stride != 1:
                pad = reach // 2
            side = size + 2 * (reach // 2 if pad == "same" else pad) - reach
            if side < 1 or (pad == "same" and reach % 2):
                continue
            groups = channels if grouped and out % channels == 0 else 1
            cls = StdConv2d if standardised and pad != "same" else nn.Conv2d
            conv = cls(channels, out, kernel, stride, pad, dilation, groups)
            layers.append(conv)
            convs.append(conv)
            channels, size = out, (side - 1) // stride + 1
        elif kind == "relu":
            layers.append(nn.ReLU(inplace=spec[1]))
        elif kind == "shared_relu":
            relu = relu or nn.ReLU()
            layers.append(relu)
        elif kind == "shared_conv":
            fitting = [c for c in convs if c.in_channels == c.out_channels == channels]
            if fitting:
                conv = fitting[spec[1] % len(fitting)]
                reach = conv.dilation[0] * (conv.kernel_size[0] - 1)
                pad = reach // 2 if conv.padding == "same" else conv.padding[0]
                side = size + 2 * pad - reach
                if side >= 1:
                    layers.append(conv)
                    size = (side - 1) // conv.stride[0] + 1
        elif kind == "pool":
            _, kernel, stride, padded, own = spec
            pad = kernel // 2 if padded else 0
            if size + 2 * pad < kernel:
                continue
            layers.append((SoftPool if own else nn.MaxPool2d)(kernel, stride, pad))
            size = (size + 2 * pad - kernel) // stride + 1
        elif kind == "norm":
            norm = nn.BatchNorm2d(channels)
            norm.running_mean.uniform_(-0.5, 0.5)
            norm.running_var.uniform_(0.5, 2.0)
            layers.append(norm)
        else:
            layers.append(
                {
                    "leaky": nn.LeakyReLU(0.1),
                    "tanh": nn.Tanh(),
                    "identity": nn.Identity(),
                    "scaled_relu": ScaledReLU(),
                }[kind]
            )
    model = nn.Sequential(*layers, nn.Flatten(), nn.Linear(channels * size * size, 3))
    return model.double().eval()


models = st.tuples(
    st.lists(layer_spec, min_size=1, max_size=6),
    st.integers(1, 3),  # input channels
    st.integers(6, 12),  # image side
    st.integers(0, 3),  # seed
)


def image(channels: int, size: int, n: int = 2) -> torch.Tensor:
    generator = torch.Generator().manual_seed(channels * 100 + size)
    return torch.rand(n, channels, size, size, dtype=torch.float64, generator=generator) - 0.3


# --- occlusion: incremental against whole passes ------------------------------------------------


def check_occlusion(model: nn.Sequential, x: torch.Tensor, window: int, stride: int) -> None:
    route = occlusion_plan(model, x, window=window, stride=stride)
    fast = occlusion(model, x, window=window, stride=stride)
    whole = occlusion(model, x, window=window, stride=stride, incremental=False)
    scale = whole.abs().max().clamp(min=1e-12)
    assert (fast - whole).abs().max() / scale < 1e-9, str(route)
    if route.possible:
        forced = occlusion(model, x, window=window, stride=stride, incremental=True)
        assert (forced - whole).abs().max() / scale < 1e-9, str(route)


@SETTINGS
@given(models, st.integers(1, 5), st.integers(1, 5))
def test_incremental_occlusion_equals_whole_passes(drawn, window, stride):
    specs, channels, size, seed = drawn
    model = build(specs, channels, size, seed)
    window, stride = min(window, size), min(stride, window, size)
    check_occlusion(model, image(channels, size), window, stride)


# --- Neuron gradients against autograd on the layers run by hand --------------------------------


def neuron_gradient_by_hand(model, x, index: int, channel: int, reduce: str) -> torch.Tensor:
    """d f / d x for the channel of layer ``model[index]``'s output, each layer on a copy."""
    leaf = x.clone().requires_grad_(True)
    h = leaf
    for layer in list(model)[: index + 1]:
        h = layer(h.clone())
    maps = h[:, channel].flatten(1)
    f = maps.sum(1) if reduce == "sum" else maps.amax(1)
    (grad,) = torch.autograd.grad(f.sum(), leaf)
    return grad


@SETTINGS
@given(models, st.integers(0, 10), st.integers(0, 3), st.sampled_from(["sum", "max"]))
def test_neuron_gradients_equal_a_hand_computation(drawn, pick, channel, reduce):
    specs, channels, size, seed = drawn
    model = build(specs, channels, size, seed)
    spatial = list(range(len(model) - 2))  # every layer before the flatten
    if not spatial:
        return
    index = spatial[pick % len(spatial)]
    layer = model[index]
    last = max(i for i in spatial if model[i] is layer)  # a shared layer explains its last call
    name = next(n for n, m in model.named_modules() if m is layer)
    x = image(channels, size)
    with torch.no_grad():
        out = model[: last + 1](x.clone())
    channel %= out.shape[1]
    want = neuron_gradient_by_hand(model, x, last, channel, reduce)
    got = attribution.gradient(model, x, Neuron(name, channel, reduce))
    torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-12)


# --- cases found by the generated tests, kept as plain tests ------------------------------------


@pytest.mark.parametrize(
    "specs, channels, size, window, stride",
    [
        # a ReLU listed twice, a conv listed twice (named_children() lists each once)
        ([("conv", 3, 3, 1, "zeros", 1, False, False), ("shared_relu",),
          ("conv", 3, 3, 1, "zeros", 1, False, False), ("shared_relu",),
          ("shared_conv", 1)], 3, 10, 3, 2),
        # shrunk by Hypothesis: a max-pooling class whose forward averages
        ([("pool", 2, 1, False, True)], 1, 6, 1, 1),
        # a standardised conv first, a pooling class that averages, an in-place ReLU
        ([("conv", 2, 3, 1, "zeros", 1, False, True), ("relu", True), ("pool", 2, 2, False, True),
          ("conv", 2, 3, 1, "same", 1, True, False)], 2, 10, 4, 2),
    ],
)  # fmt: skip
def test_kept_occlusion_cases(specs, channels, size, window, stride):
    model = build(specs, channels, size, seed=0)
    check_occlusion(model, image(channels, size), window, stride)


@pytest.mark.parametrize("reduce", ["sum", "max"])
def test_kept_neuron_case_an_in_place_relu_first(reduce):
    """Shrunk by Hypothesis: a Neuron on a first layer that is an in-place ReLU."""
    model = build([("relu", True)], 1, 6, seed=0)
    x = image(1, 6)
    want = neuron_gradient_by_hand(model, x, 0, 0, reduce)
    torch.testing.assert_close(attribution.gradient(model, x, Neuron("0", 0, reduce)), want)
