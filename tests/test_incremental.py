"""Incremental occlusion against the full recomputation of every occluded image, and its region
arithmetic against the positions that a NaN in the window actually reaches."""

import pytest
import torch
import torchvision
from torch import nn

from lecture_lib import incremental, regions
from lecture_lib.models import Normalize
from lecture_lib.perturbation import occlusion, occlusion_plan
from lecture_lib.targets import Neuron


def small_net(*layers: nn.Module, seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(*layers).double().eval()


def both(model, x, **kwargs):
    """The map computed incrementally and by whole forward passes."""
    return occlusion(model, x, incremental=True, **kwargs), occlusion(
        model, x, incremental=False, **kwargs
    )


NETS = {
    "conv-relu-pool": lambda: small_net(
        nn.Conv2d(3, 4, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(4, 6, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.LazyLinear(3),
    ),  # fmt: skip
    "strides, dilation, odd kernels": lambda: small_net(
        nn.Conv2d(3, 4, 5, stride=2, padding=2),
        nn.LeakyReLU(0.1),
        nn.Conv2d(4, 4, 3, padding=2, dilation=2, groups=2),
        nn.ReLU(),
        nn.MaxPool2d(3, stride=2, padding=1),
        nn.Conv2d(4, 5, (3, 1), padding=(1, 0)),
        nn.ReLU(),
        nn.Flatten(),
        nn.LazyLinear(2),
    ),  # fmt: skip
    "no padding, pool 3 stride 1": lambda: small_net(
        nn.Conv2d(3, 4, 3),
        nn.ReLU(),
        nn.MaxPool2d(3, stride=1),
        nn.Conv2d(4, 4, 1),
        nn.BatchNorm2d(4).eval(),
        nn.Dropout(0.5),
        nn.Flatten(),
        nn.LazyLinear(3),
    ),  # fmt: skip
}


@pytest.mark.parametrize("net", list(NETS))
@pytest.mark.parametrize(
    "window, stride", [(4, 2), (5, 3), (3, 3), (7, 1), (20, 5)]
)  # (5, 3) and (20, 5) do not tile the 20 x 23 image: the last window sits at the border
def test_incremental_equals_the_full_recomputation(net, window, stride):
    model = NETS[net]()
    generator = torch.Generator().manual_seed(1)
    x = torch.rand(2, 3, 20, 23, generator=generator, dtype=torch.float64)
    model(x)  # materialise the lazy layers
    if isinstance(model[4], nn.BatchNorm2d):
        model[4].running_mean.uniform_(-0.5, 0.5, generator=generator)
        model[4].running_var.uniform_(0.5, 2.0, generator=generator)
    route = occlusion_plan(model, x, window=window, stride=stride)
    if not route.possible:  # a window as large as the image changes the whole first map
        assert window == 20 and "whole output map" in route.reason
        return
    fast, full = both(model, x, target=[0, 1], window=window, stride=stride, baseline=0.3)
    torch.testing.assert_close(fast, full, rtol=1e-10, atol=1e-12)


def test_shapes_net_maps_equal_the_full_recomputation_to_1e_5(shapes_net, shapes_batch):
    images = shapes_batch[0][:3]
    for window, stride in ((8, 4), (10, 7), (16, 8), (5, 3)):
        fast, full = both(shapes_net, images, window=window, stride=stride, baseline=0.5)
        scale = full.abs().amax(dim=(1, 2), keepdim=True)
        assert ((fast - full).abs() / scale).max() < 1e-5, (window, stride)


def test_a_baseline_image_per_example_and_batches_that_split_the_windows(shapes_net, shapes_batch):
    images = shapes_batch[0][:2]
    baseline = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    fast, full = both(shapes_net, images, window=12, stride=5, baseline=baseline, batch_size=7)
    torch.testing.assert_close(fast, full, rtol=1e-5, atol=2e-5)


def test_an_imagenet_style_model_normalize_and_vgg():
    """Normalize, then torchvision's VGG (features, adaptive pooling to 7 x 7, flatten,
    classifier), made small: the classifier is replaced, the features are tiny."""
    with torch.device("meta"):  # VGG's own classifier would take 400 MB
        vgg = torchvision.models.VGG(nn.Sequential(), num_classes=3, init_weights=False)
    torch.manual_seed(0)
    vgg.features = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2, 2),
        nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2, 2),
    )  # fmt: skip
    vgg.classifier = nn.Sequential(
        nn.Linear(4 * 7 * 7, 8), nn.ReLU(True), nn.Dropout(), nn.Linear(8, 3)
    )
    model = nn.Sequential(Normalize([0.4, 0.5, 0.6], [0.2, 0.25, 0.3]), vgg).double().eval()
    names = [name for name, _ in incremental.layer_chain(model)]
    assert names[:2] == ["0", "1.features.0"] and "1.flatten" in names and "1.avgpool" in names
    x = torch.rand(1, 3, 28, 28, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    route = occlusion_plan(model, x, window=6, stride=2)
    assert [step.kind for step in route.steps[:8]] == ["pointwise", "window", "pointwise"] + [
        "window", "window", "pointwise", "window", "pointwise"  # avgpool: 7 x 7 to 7 x 7
    ]  # fmt: skip
    assert route.reason.startswith("1.flatten")
    fast, full = both(model, x, window=6, stride=2)
    torch.testing.assert_close(fast, full, rtol=1e-10, atol=1e-12)

    larger = torch.rand(1, 3, 36, 36, dtype=torch.float64)  # 9 x 9 features, pooled to 7 x 7
    route = occlusion_plan(model, larger, window=6, stride=3)
    assert route.reason.startswith("1.avgpool: AdaptiveAvgPool2d")
    fast, full = both(model, larger, window=6, stride=3)
    torch.testing.assert_close(fast, full, rtol=1e-10, atol=1e-12)


# --- the region arithmetic -------------------------------------------------------------------


def reached(model: nn.Sequential, x: torch.Tensor, row: int, col: int, window: int):
    """Which positions of each layer's output change when the window at (row, col) changes:
    a NaN there spreads exactly to them (NaN * 0 is NaN, max and ReLU keep it)."""
    hidden = x.clone()
    hidden[:, :, row : row + window, col : col + window] = float("nan")
    outputs = []
    for layer in model:
        hidden = layer(hidden)
        outputs.append(hidden.isnan().any(dim=1)[0] if hidden.ndim == 4 else None)
    return outputs


@pytest.mark.parametrize("net", list(NETS))
def test_each_region_holds_exactly_what_a_window_reaches(net):
    model = NETS[net]()
    x = torch.rand(1, 3, 20, 23, dtype=torch.float64)
    model(x)
    window, stride = 5, 3
    route = occlusion_plan(model, x, window=window, stride=stride)
    assert route.possible
    largest = [(0, 0)] * route.full_from
    for i, row in enumerate(route.rows):
        for j, col in enumerate(route.cols):
            maps = reached(model, x, row, col, window)
            boxes = (torch.tensor(route.rows), torch.tensor(route.cols))
            for k, step in enumerate(route.steps[: route.full_from]):
                if step.kind == "window":
                    strides = regions._pair(step.module.stride)
                    boxes = tuple(t.start // s for t, s in zip(step.tiles, strides))
                top, left = int(boxes[0][i]), int(boxes[1][j])
                changed = maps[k].nonzero()
                if len(changed):
                    assert changed[:, 0].min() >= top and changed[:, 1].min() >= left
                    assert changed[:, 0].max() < top + step.region[0]
                    assert changed[:, 1].max() < left + step.region[1]
                    extent = (changed.max(0).values - changed.min(0).values + 1).tolist()
                    largest[k] = tuple(max(a, b) for a, b in zip(largest[k], extent))
    for k, step in enumerate(route.steps[: route.full_from]):  # and no larger than needed
        assert largest[k] == step.region, step.name


def test_the_plan_of_shapes_net(shapes_net):
    route = occlusion_plan(shapes_net, torch.zeros(3, 64, 64), window=8, stride=4)
    regions = {step.name: step.region for step in route.steps if step.region}
    assert regions["conv1"] == (10, 10)  # 8 + 2: a 3 x 3 kernel reaches one pixel further
    assert regions["conv4"] == (6, 6) and route.steps[route.full_from].name == "pool4"
    assert "whole output map (4x4)" in route.reason
    table = str(route)
    assert "conv1" in table and "10x10" in table and "225 windows" in table


# --- falling back, with the reason ---------------------------------------------------------------


class OwnForward(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 3, padding=1)
        self.fc = nn.Linear(2 * 8 * 8, 3)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).flatten(1))


def test_large_windows_run_whole_passes_and_say_why(shapes_net, shapes_batch, monkeypatch):
    route = occlusion_plan(shapes_net, shapes_batch[0][0], window=48, stride=16)
    assert route.possible and not route.incremental
    assert route.fallback.startswith("because 48x48 windows leave too little to save")
    assert "69% of the multiply-adds" in route.fallback and "4 windows per image" in route.fallback
    calls = []
    original = incremental.occluded_scores
    monkeypatch.setattr(incremental, "occluded_scores", lambda *a: calls.append(1) or original(*a))
    whole = occlusion(shapes_net, shapes_batch[0][:2], window=48, stride=16)
    assert calls == []
    forced = occlusion(shapes_net, shapes_batch[0][:2], window=48, stride=16, incremental=True)
    assert len(calls) == 2  # one call per image
    torch.testing.assert_close(forced, whole, rtol=1e-5, atol=1e-5)
    assert occlusion_plan(shapes_net, shapes_batch[0][0], window=8, stride=4).incremental


def test_a_model_with_its_own_forward_is_recomputed_in_full_and_says_why():
    torch.manual_seed(0)
    model = OwnForward().eval()
    x = torch.rand(2, 3, 8, 8)
    route = occlusion_plan(model, x, window=4, stride=2)
    assert not route.incremental and "OwnForward" in route.fallback
    with pytest.raises(ValueError, match="cannot be recomputed incrementally.*OwnForward"):
        occlusion(model, x, window=4, stride=2, incremental=True)
    torch.testing.assert_close(
        occlusion(model, x, window=4, stride=2),
        occlusion(model, x, window=4, stride=2, incremental=False),
    )


def test_an_unsupported_layer_starts_the_full_recomputation_there():
    model = small_net(
        nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2), nn.Conv2d(4, 4, 3),
        nn.Flatten(), nn.LazyLinear(3),
    )  # fmt: skip
    x = torch.rand(1, 3, 16, 16, dtype=torch.float64)
    model(x)
    route = occlusion_plan(model, x, window=4, stride=4)
    assert route.full_from == 2 and route.reason.startswith("2: AvgPool2d")
    fast, full = both(model, x, window=4, stride=4)
    torch.testing.assert_close(fast, full, rtol=1e-10, atol=1e-12)


def test_a_neuron_target_and_forward_hooks_fall_back(shapes_net, shapes_batch):
    image = shapes_batch[0][0]
    route = occlusion_plan(shapes_net, image, Neuron("conv3", 5), window=16, stride=8)
    assert not route.incremental and "Neuron" in route.reason
    calls = []
    handle = shapes_net.conv2.register_forward_hook(lambda *args: calls.append(1))
    try:
        route = occlusion_plan(shapes_net, image, window=16, stride=8)
        assert not route.incremental and "hooks" in route.reason
        occlusion(shapes_net, image, window=32, stride=32)
    finally:
        handle.remove()
    # the plan's check of the target, the prediction and one batch of 4 occluded images
    assert len(calls) == 3


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(window=65), "larger than the image"),
        (dict(stride=0), "stride must be a positive int"),
        (dict(window=4, stride=5), "stride=5 is larger than window=4"),
        (dict(incremental="yes"), "incremental must be None, True or False"),
    ],
)
def test_bad_arguments_give_the_same_errors(shapes_net, kwargs, message):
    with pytest.raises(ValueError, match=message):
        occlusion(shapes_net, torch.rand(3, 64, 64), **kwargs)
    kwargs.pop("incremental", None)
    if kwargs:
        with pytest.raises(ValueError, match=message):
            occlusion_plan(shapes_net, torch.rand(3, 64, 64), **kwargs)


# --- the layers as the forward runs them, and only computations it knows ----------------------


def test_a_module_listed_twice_runs_twice_in_the_plan():
    relu, conv = nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1)
    model = small_net(
        nn.Conv2d(3, 4, 3, padding=1), relu, conv, relu, conv, nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.LazyLinear(3),
    )  # fmt: skip
    x = torch.rand(2, 3, 16, 16, dtype=torch.float64)
    model(x)
    names = [name for name, _ in incremental.layer_chain(model)]
    assert names == [str(k) for k in range(7)] + ["7", "8"]
    route = occlusion_plan(model, x, window=4, stride=2)
    assert route.incremental and route.full_from == 7
    fast, full = both(model, x, window=4, stride=2)
    torch.testing.assert_close(fast, full, rtol=1e-10, atol=1e-12)


class StdConv2d(nn.Conv2d):
    """A weight-standardised convolution (as timm's): its own forward."""

    def forward(self, x):
        w = self.weight
        w = (w - w.mean((1, 2, 3), keepdim=True)) / (w.std((1, 2, 3), keepdim=True) + 1e-5)
        return nn.functional.conv2d(x, w, self.bias, self.stride, self.padding)


class DoubledReLU(nn.ReLU):
    def forward(self, x):
        return 2 * torch.relu(x)


class AveragingPool(nn.MaxPool2d):
    def forward(self, x):
        return nn.functional.avg_pool2d(x, self.kernel_size)


class ShiftedNorm(nn.BatchNorm2d):
    def forward(self, x):
        return super().forward(x) + x.mean((1, 2, 3), keepdim=True)  # each example's own


@pytest.mark.parametrize("own", [StdConv2d(3, 4, 3, padding=1), DoubledReLU(), AveragingPool(2),
                                 ShiftedNorm(3)])  # fmt: skip
def test_a_subclass_with_its_own_forward_is_computed_as_it_says(own):
    layers = [own] if isinstance(own, nn.Conv2d) else [nn.Conv2d(3, 3, 3, padding=1), own]
    channels = 4 if isinstance(own, nn.Conv2d) else 3
    model = small_net(*layers, nn.ReLU(), nn.Conv2d(channels, 4, 3), nn.Flatten(), nn.LazyLinear(3))
    x = torch.rand(2, 3, 16, 16, dtype=torch.float64)
    model(x)
    route = occlusion_plan(model, x, window=4, stride=2)
    where = len(layers) - 1
    assert route.full_from == where and "overrides forward" in route.reason
    assert route.reason.startswith(f"{where}: {type(own).__name__}")
    fast = occlusion(model, x, window=4, stride=2)  # incrementally up to the layer, if at all
    full = occlusion(model, x, window=4, stride=2, incremental=False)
    torch.testing.assert_close(fast, full, rtol=1e-10, atol=1e-12)


@pytest.mark.filterwarnings("ignore:Using padding=.same. with even kernel")
def test_padding_same_and_parametrized_weights_are_recomputed_incrementally():
    conv = nn.Conv2d(4, 4, 3, padding="same", dilation=2)
    model = small_net(
        nn.Conv2d(3, 4, 3, padding="same"), nn.ReLU(inplace=True), conv, nn.ReLU(inplace=True),
        nn.Flatten(), nn.LazyLinear(3),
    )  # fmt: skip
    nn.utils.parametrizations.weight_norm(conv)  # the weight is computed, forward is Conv2d's
    x = torch.rand(2, 3, 16, 16, dtype=torch.float64)
    model(x)
    route = occlusion_plan(model, x, window=4, stride=2)
    assert route.incremental and route.full_from == 4
    fast, full = both(model, x, window=4, stride=2)
    torch.testing.assert_close(fast, full, rtol=1e-10, atol=1e-12)
    even = small_net(nn.Conv2d(3, 4, 2, padding="same"), nn.Flatten(), nn.LazyLinear(3))
    even(x)
    assert "padding='same'" in occlusion_plan(even, x, window=4, stride=2).reason


class Block(nn.Module):
    def __init__(self, relu):
        super().__init__()
        self.conv, self.relu = nn.Conv2d(4, 4, 3, padding=1), relu

    def forward(self, x):
        return self.relu(self.conv(x)) + x


def test_a_layer_also_called_inside_another_one_gives_whole_passes():
    relu = nn.ReLU()
    model = small_net(
        nn.Conv2d(3, 4, 3, padding=1), relu, Block(relu), nn.Flatten(), nn.LazyLinear(3)
    )
    x = torch.rand(2, 3, 12, 12, dtype=torch.float64)
    model(x)
    route = occlusion_plan(model, x, window=4, stride=2)
    assert route.full_from == 0 and "does not call its layers one after the other" in route.reason
    fast, full = occlusion(model, x, window=4, stride=2), occlusion(model, x, window=4, stride=2,
                                                                    incremental=False)  # fmt: skip
    torch.testing.assert_close(fast, full, rtol=1e-10, atol=1e-12)


def test_a_batch_norm_with_batch_statistics_is_refused_naming_it():
    model = small_net(
        nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4, track_running_stats=False), nn.Flatten(),
        nn.LazyLinear(3),
    )  # fmt: skip
    x = torch.rand(2, 3, 8, 8, dtype=torch.float64)
    model(x)
    for call in (occlusion, occlusion_plan):
        with pytest.raises(ValueError, match="layer '1' .BatchNorm2d. has no running statistics"):
            call(model, x, window=4, stride=2)


def test_the_plan_checks_its_target_and_a_nan_baseline_is_refused(shapes_net):
    x = torch.rand(3, 64, 64)
    with pytest.raises(ValueError, match="target 7 is out of range"):
        occlusion_plan(shapes_net, x, target=7)
    with pytest.raises(ValueError, match="no layer named 'conv9'"):
        occlusion_plan(shapes_net, x, target=Neuron("conv9", 0))
    with pytest.raises(ValueError, match="baseline contains NaN"):
        occlusion(shapes_net, x, baseline=float("nan"))
    with pytest.raises(ValueError, match="inputs have 1 channels.*takes 3"):
        occlusion(shapes_net, x[:1])
