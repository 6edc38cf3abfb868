"""Layer-wise relevance propagation against independent computations: Zennit (an outside
library, dev extra), input x gradient (LRP-0's identity on ReLU networks), and a small network
propagated by hand."""

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from lecture_lib import attribution as A
from lecture_lib import relevance
from lecture_lib.models import Normalize
from lecture_lib.targets import Neuron

zennit = pytest.importorskip("zennit", reason="the outside reference (pip install zennit)")
from zennit.attribution import Gradient  # noqa: E402
from zennit.composites import (  # noqa: E402
    EpsilonGammaBox,
    EpsilonPlusFlat,
    LayerMapComposite,
    layer_map_base,
)
from zennit.rules import Epsilon  # noqa: E402
from zennit.types import Linear  # noqa: E402


def _zennit(model, x, target, composite, epsilon, gamma):
    """Zennit's composite of the same name; the output's relevance is the target's score."""
    if composite in ("zero", "epsilon"):
        rule = Epsilon(epsilon=0.0 if composite == "zero" else epsilon)
        chosen = LayerMapComposite(layer_map_base() + [(Linear, rule)])
    elif composite == "epsilon-plus-flat":
        chosen = EpsilonPlusFlat(epsilon=epsilon)
    else:
        chosen = EpsilonGammaBox(low=0.0, high=1.0, epsilon=epsilon, gamma=gamma)
    with Gradient(model, chosen) as attributor:
        _, relevance_map = attributor(x, lambda out: out * F.one_hot(target, out.shape[1]))
    return relevance_map


@pytest.fixture(scope="module")
def vgg11():
    torch.manual_seed(11)
    return torchvision.models.vgg11(weights=None).eval()  # random weights: nothing downloads


def _close(ours, reference, rtol=1e-4):
    scale = reference.abs().max()
    assert scale > 0
    assert (ours - reference).abs().max() <= rtol * scale


@pytest.mark.parametrize("composite", relevance.COMPOSITES)
@pytest.mark.parametrize("epsilon, gamma", [(1e-6, 0.25), (0.05, 1.0)])
def test_each_composite_equals_zennit_on_shapes_net(
    shapes_net, shapes_batch, composite, epsilon, gamma
):
    x = shapes_batch[0][:4]
    target = torch.tensor([0, 1, 2, 4])
    ours = A.lrp(shapes_net, x, target, composite=composite, epsilon=epsilon, gamma=gamma)
    _close(ours, _zennit(copy.deepcopy(shapes_net), x, target, composite, epsilon, gamma))


@pytest.mark.parametrize("composite", relevance.COMPOSITES)
def test_each_composite_equals_zennit_on_vgg11(vgg11, composite):
    # 64 x 64: the adaptive average pooling spreads 2 x 2 maps to 7 x 7 (its rule is tested too)
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    target = torch.tensor([7])
    ours = A.lrp(vgg11, x, target, composite=composite, epsilon=0.01)
    _close(ours, _zennit(vgg11, x, target, composite, 0.01, 0.25))


def test_lrp_zero_is_input_times_gradient(shapes_net, shapes_batch, vgg11):
    """On a network of linear layers and ReLUs, R_j = a_j dS/da_j holds layer by layer."""
    x = shapes_batch[0]
    _close(A.lrp(shapes_net, x, composite="zero"), A.input_x_gradient(shapes_net, x), 1e-5)
    # VGG11 at 224 x 224, whose average pooling of 7 x 7 maps to 7 x 7 does nothing, left out
    # (its rule, Zennit's, keeps a stabilizer); float64: random weights leave pre-activations
    # near 0, whose float32 quotients round
    vgg = copy.deepcopy(vgg11).double()
    vgg.avgpool = nn.Identity()
    x = torch.rand(1, 3, 224, 224, dtype=torch.float64)
    _close(A.lrp(vgg, x, 3, composite="zero"), A.input_x_gradient(vgg, x, 3), 1e-9)
    # and not the other composites: they change the map
    other = A.lrp(shapes_net, shapes_batch[0], composite="epsilon-plus-flat")
    assert not torch.allclose(other, A.input_x_gradient(shapes_net, shapes_batch[0]), atol=1e-3)


class _Functional(nn.Module):
    """ShapesNet's layers, its ReLUs written as F.relu and x.clamp(min=0) in the forward."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        for k in range(1, 5):
            x = F.max_pool2d(F.relu(getattr(self.net, f"conv{k}")(x)), 2)
        return self.net.fc2(self.net.fc1(x.flatten(1)).clamp(min=0))


@pytest.mark.parametrize("composite", relevance.COMPOSITES)
def test_models_that_call_relu_as_a_function(shapes_net, shapes_batch, composite):
    x = shapes_batch[0][:3]
    expected = A.lrp(shapes_net, x, composite=composite)
    _close(A.lrp(_Functional(shapes_net), x, composite=composite), expected, 1e-6)


def _tiny():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)).double()
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([[1, -2, 0.5], [0.5, 1, 1], [-1, 1, 2], [2, 0.5, -1]]))
        net[0].bias.copy_(torch.tensor([0.1, -0.2, 0.3, 0.5]))
        net[2].weight.copy_(torch.tensor([[1, -1, 0.5, 2], [-0.5, 1, 1, -1]]))
        net[2].bias.copy_(torch.tensor([0.2, -0.1]))
    return net


@pytest.mark.parametrize("epsilon", [0.0, 0.5])
def test_conservation_on_a_network_propagated_by_hand(epsilon):
    """Score = relevance of the inputs + relevance absorbed by the biases (and epsilon)."""
    net = _tiny()
    x = np.array([0.8, 0.3, 0.6])
    w1, b1 = net[0].weight.detach().numpy(), net[0].bias.detach().numpy()
    w2, b2 = net[2].weight.detach().numpy(), net[2].bias.detach().numpy()
    z1 = w1 @ x + b1
    a = np.maximum(z1, 0)
    z2 = w2 @ a + b2
    c = 0
    score = z2[c]

    def stab(z):
        return z + epsilon * (1 if z >= 0 else -1)

    hidden = [a[j] * w2[c, j] / stab(z2[c]) * score for j in range(4)]
    absorbed = score - sum(hidden)  # b2's share (and epsilon's)
    inputs = [sum(x[i] * w1[j, i] / stab(z1[j]) * hidden[j] for j in range(4)) for i in range(3)]
    absorbed += sum(hidden) - sum(inputs)
    composite = "zero" if epsilon == 0 else "epsilon"
    ours = A.lrp(net, torch.tensor(x), c, composite=composite, epsilon=epsilon)
    np.testing.assert_allclose(ours.numpy(), inputs, rtol=1e-12)
    # what the biases took, one by one: b_j / z_j * R_j
    by_bias = b2[c] / stab(z2[c]) * score + sum(b1[j] / stab(z1[j]) * hidden[j] for j in range(4))
    if epsilon == 0:
        assert abs(by_bias - absorbed) < 1e-12
    assert abs(ours.sum().item() + absorbed - score) < 1e-12


def test_the_rules_of_each_composite_are_as_named(shapes_net, shapes_batch):
    x = shapes_batch[0][:1].clone().requires_grad_(True)
    expected = {
        "epsilon-plus-flat": ["flat", "plus", "plus", "plus", "epsilon", "epsilon"],
        "epsilon-gamma-box": ["box", "gamma", "gamma", "gamma", "epsilon", "epsilon"],
        "zero": ["zero"] * 6,
    }
    for composite, rules in expected.items():
        with relevance.use_composite(composite, x, shapes_net) as used:
            shapes_net(x)
        assert used.used == list(zip(["conv1", "conv2", "conv3", "conv4", "fc1", "fc2"], rules))


def test_bounds_follow_a_normalization_before_the_first_layer(shapes_net, shapes_batch):
    mean, std = [0.4, 0.5, 0.6], [0.2, 0.25, 0.3]
    normalized = nn.Sequential(Normalize(mean, std), shapes_net)
    x = shapes_batch[0][:2]
    m, s = torch.tensor(mean).view(1, 3, 1, 1), torch.tensor(std).view(1, 3, 1, 1)
    low, high = (0 - m) / s, (1 - m) / s
    for composite in relevance.COMPOSITES:
        ours = A.lrp(normalized, x, composite=composite)
        direct = A.lrp(shapes_net, (x - m) / s, composite=composite, low=low, high=high)
        _close(ours, direct, 1e-5)  # (x - mean) / std passes relevance on unchanged


def _state(model):
    return (
        [m.training for m in model.modules()],
        [p.requires_grad for p in model.parameters()],
        [p.grad for p in model.parameters()],
        [p.detach().clone() for p in model.parameters()],
        [(len(m._forward_hooks), len(m._backward_hooks)) for m in model.modules()],
    )


def _same(before, after):
    assert before[0] == after[0] and before[1] == after[1] and before[4] == after[4]
    assert all(g is None for g in after[2])
    assert all(torch.equal(p, q) for p, q in zip(before[3], after[3]))


def test_layers_without_a_rule_are_named_and_the_model_is_left_as_it_came(shapes_batch):
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(4 * 64 * 64, 5),
    ).train()
    model[0].weight.requires_grad_(False)
    before = _state(model)
    with pytest.raises(NotImplementedError, match=r"batch_norm in layer '1' \(BatchNorm2d\)"):
        A.lrp(model, shapes_batch[0][:2])
    _same(before, _state(model))
    sigmoid = nn.Sequential(nn.Flatten(), nn.Linear(3 * 64 * 64, 8), nn.Sigmoid(), nn.Linear(8, 2))
    with pytest.raises(NotImplementedError, match="sigmoid.*has no LRP rule"):
        A.lrp(sigmoid, shapes_batch[0][:2])
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten()).train()
    before = _state(model)
    A.lrp(nn.Sequential(model, nn.Linear(4 * 64 * 64, 3)), shapes_batch[0][:2])
    _same(before, _state(model))


def test_bad_options_are_explained(shapes_net, shapes_batch):
    x = shapes_batch[0][:2]
    with pytest.raises(ValueError, match="unknown composite 'z-plus'"):
        A.lrp(shapes_net, x, composite="z-plus")
    with pytest.raises(ValueError, match="epsilon must be a number >= 0"):
        A.lrp(shapes_net, x, epsilon=-1)
    with pytest.raises(ValueError, match="Neuron target"):
        A.lrp(shapes_net, x, target=Neuron("conv3", 0))
    with pytest.raises(ValueError, match="out of range"):
        A.lrp(shapes_net, x, target=9)
    with pytest.raises(ValueError, match="no convolution or linear layer"):
        A.lrp(nn.Flatten(), torch.rand(2, 3))


def test_one_image_and_dtypes(shapes_net, shapes_batch):
    x = shapes_batch[0][:2]
    batch = A.lrp(shapes_net, x, [1, 2])
    assert batch.shape == x.shape
    one = A.lrp(shapes_net, x[1], 2)
    _close(one, batch[1], 1e-6)
    with torch.inference_mode():
        _close(A.lrp(shapes_net, x.double(), [1, 2]).float(), batch, 1e-6)


def test_the_explorer_follows_its_controls(shapes_net, shapes_batch):
    import matplotlib

    matplotlib.use("Agg")
    from lecture_lib.relevance_widgets import relevance_explorer

    images, labels, _ = shapes_batch
    explorer = relevance_explorer(shapes_net, images[:2], labels[:2])
    assert explorer.controls["gamma"].disabled and not explorer.controls["epsilon"].disabled
    before = explorer.image.value
    explorer.controls["composite"].value = "epsilon-gamma-box"
    assert explorer.error is None and not explorer.controls["gamma"].disabled
    explorer.controls["gamma"].value = 1.0
    c = explorer.shown["target"]
    expected = A.lrp(shapes_net, images[0], c, composite="epsilon-gamma-box", gamma=1.0)
    assert abs(explorer.shown["sum"] - float(expected.sum())) < 1e-4 * float(expected.abs().sum())
    assert explorer.image.value != before
    explorer.controls["composite"].value = "zero"
    assert explorer.controls["epsilon"].disabled and explorer.controls["gamma"].disabled
