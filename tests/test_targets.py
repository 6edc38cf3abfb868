"""What every method shares: the model is left as it came, inputs are brought to the model."""

import pytest
import torch
from torch import nn

from lecture_lib import attribution as A
from lecture_lib.targets import (
    Neuron,
    class_indices,
    explaining,
    finish,
    gradients_on,
    prepare,
    score,
)


class FrozenNorm(nn.Module):
    """A module whose ``train()`` does more than set ``.training``: it keeps its batch norm in
    eval mode even in training (frozen statistics), and logs every mode it was given."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.norm = nn.BatchNorm2d(4)
        self.relu = nn.ReLU()
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(4 * 6 * 6, 3))
        self.modes_given: list[bool] = []

    def train(self, mode: bool = True):
        super().train(mode)
        self.norm.eval()  # frozen
        self.modes_given.append(mode)
        return self

    def forward(self, x):
        return self.head(self.relu(self.norm(self.conv(x))))


def _modes(model):
    return [module.training for module in model.modules()]


def test_explaining_restores_through_train_as_it_was():
    model = FrozenNorm().train()
    before = _modes(model)
    assert before == [True, True, False, True, True, True, True]
    with explaining(model):
        assert not any(_modes(model))
        assert model.modes_given[-1] is False  # eval() went through train(False)
    assert _modes(model) == before
    assert model.modes_given[-1] is True  # and back through train(True): its extra work ran


def test_explaining_restores_mixed_modes_also_after_an_error():
    model = FrozenNorm().train()
    model.head.eval()  # a parent in training, a child in eval, its grandchild in training
    model.head[1].train()
    before = _modes(model)
    with pytest.raises(RuntimeError, match="boom"):
        with explaining(model):
            raise RuntimeError("boom")
    assert _modes(model) == before
    assert model.modes_given[-1] is True


def test_a_method_leaves_a_model_with_its_own_train_as_it_came():
    model = FrozenNorm().train()
    before, given = _modes(model), len(model.modes_given)
    A.guided_backprop(model, torch.rand(2, 3, 6, 6))
    assert _modes(model) == before
    assert model.modes_given[given:] == [False, True]


def test_an_eval_model_is_not_touched_on_the_way_back():
    model = FrozenNorm().eval()
    given = len(model.modes_given)
    with explaining(model):
        pass
    assert model.modes_given[given:] == [False]  # eval() on the way in, nothing to restore


def test_gradients_on_inside_no_grad_and_inference_mode():
    with torch.no_grad():
        with gradients_on():
            assert torch.is_grad_enabled()
        assert not torch.is_grad_enabled()
    with torch.inference_mode():
        with gradients_on():
            assert torch.is_grad_enabled() and not torch.is_inference_mode_enabled()
        assert torch.is_inference_mode_enabled()


def test_prepare_brings_inputs_to_the_models_dtype_and_finish_brings_them_back():
    model = nn.Linear(4, 2)
    x = torch.rand(3, 4, dtype=torch.float64)
    batch, single = prepare(model, x, "m")
    assert batch.dtype == torch.float32 and single == 0
    assert finish(batch, x, single).dtype == torch.float64
    with torch.inference_mode():
        made_inside = torch.rand(4)
        batch, single = prepare(model, made_inside, "m")
    assert not batch.is_inference() and single == 1
    assert finish(batch, made_inside, single).shape == (4,)
    assert finish(torch.arange(3)[None], x[0], 1).dtype == torch.int64  # only floats follow


def test_prepare_reads_an_image_without_channel_axis_from_the_first_layer():
    grey = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(2 * 4 * 4, 3))
    batch, single = prepare(grey, torch.rand(6, 6), "m")
    assert batch.shape == (1, 1, 6, 6) and single == 2
    assert finish(batch, torch.rand(6, 6), single).shape == (6, 6)
    assert finish(torch.rand(1, 6, 6), torch.rand(6, 6), single).shape == (6, 6)  # a map
    vectors = nn.Sequential(nn.Linear(6, 3))
    batch, single = prepare(vectors, torch.rand(6, 6), "m")  # [N, D] for a linear model
    assert batch.shape == (6, 6) and single == 0
    colour = nn.Sequential(nn.Conv2d(3, 2, 3))
    with pytest.raises(ValueError, match=r"m: .*\(6, 6\).*\[H, W\].*'0'.*3 channels"):
        prepare(colour, torch.rand(6, 6), "m")


def test_class_indices_checks_what_it_can_without_a_model():
    assert class_indices(2, 3, "m").tolist() == [2, 2, 2]
    assert class_indices([0, 1, 4], 3, "m").tolist() == [0, 1, 4]
    with pytest.raises(ValueError, match="m: target has 2 entries but inputs hold 3"):
        class_indices([0, 1], 3, "m")
    with pytest.raises(TypeError, match="m: target must hold integer"):
        class_indices([0.5], 3, "m")


# --- a Neuron is its layer's own output ----------------------------------------------------------


def vgg_like(seed: int = 0) -> nn.Sequential:
    """conv, in-place ReLU, conv, in-place ReLU, linear: torchvision's VGG in small."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(4, 4, 3, padding=1),
        nn.ReLU(inplace=True), nn.Flatten(), nn.Linear(4 * 8 * 8, 3),
    ).double().eval()  # fmt: skip


@pytest.mark.parametrize("reduce", ["sum", "max"])
def test_a_neuron_before_an_in_place_relu_is_the_layers_own_output(reduce):
    model = vgg_like()
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    leaf = x.clone().requires_grad_(True)
    conv2 = model[2](torch.relu(model[0](leaf)))  # by hand, no ReLU after it
    maps = conv2[:, 1].flatten(1)
    f = maps.sum(1) if reduce == "sum" else maps.amax(1)
    assert (conv2[:, 1] < 0).any()  # the ReLU would change it
    (expected,) = torch.autograd.grad(f.sum(), leaf)
    got = A.gradient(model, x, Neuron("2", 1, reduce))
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)
    got = A.input_x_gradient(model, x, Neuron("2", 1, reduce))
    torch.testing.assert_close(got, x * expected, rtol=1e-10, atol=1e-12)
    f_library, _ = score(model, x, Neuron("2", 1, reduce), "score")
    torch.testing.assert_close(f_library, f.detach())


# --- batch-coupled models, channels, in-place first layers ------------------------------------------


class KeepsNormTraining(nn.Sequential):
    def train(self, mode: bool = True):
        super().train(mode)
        self[1].train(True)  # its batch norm always uses batch statistics
        return self


def test_a_model_that_uses_batch_statistics_is_refused_and_left_as_it_came():
    model = KeepsNormTraining(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.LazyLinear(2))
    model(torch.rand(2, 3, 6, 6))
    modes = [m.training for m in model.modules()]
    with pytest.raises(ValueError, match="layer '1' .BatchNorm2d. stays in train mode"):
        A.gradient(model, torch.rand(2, 3, 6, 6))
    assert [m.training for m in model.modules()] == modes


def test_inputs_with_the_wrong_number_of_channels_are_refused_naming_the_layer(shapes_net):
    with pytest.raises(ValueError, match=r"inputs have 1 channels .*'conv1' \(Conv2d\) takes 3"):
        A.gradient(shapes_net, torch.rand(2, 1, 64, 64))


@pytest.mark.parametrize(
    "method",
    ["gradient", "saliency", "guided_backprop", "deconvnet", "integrated_gradients", "deeplift",
     "grad_cam", "guided_grad_cam"],
)  # fmt: skip
def test_a_first_layer_relu_in_place_changes_nothing(method):
    torch.manual_seed(0)
    layers = [nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3)]
    plain = nn.Sequential(nn.ReLU(), *layers).double().eval()
    in_place = nn.Sequential(nn.ReLU(inplace=True), *layers).double().eval()
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    before = x.clone()
    want = getattr(A, method)(plain, x, 1)
    got = getattr(A, method)(in_place, x, 1)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
    assert torch.equal(x, before)


def test_a_baseline_must_be_finite(shapes_net):
    with pytest.raises(ValueError, match="baseline contains NaN or infinite"):
        A.integrated_gradients(shapes_net, torch.rand(3, 64, 64), baseline=float("inf"))
