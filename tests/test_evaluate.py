"""Measuring explanations: each function against an independent computation (a plain loop, a
hand-worked example, a model whose ideal map is known)."""

import copy
import math

import numpy as np
import pytest
import torch
from torch import nn

from lecture_lib import attribution
from lecture_lib.data import make_shapes
from lecture_lib.evaluate import (
    auc,
    deletion_curve,
    importance,
    insertion_curve,
    make_substrate,
    mask_share,
    pixel_order,
    pointing_game,
    randomizable_layers,
    randomization_test,
    rank,
    reinitialize,
    spearman,
    step_images,
)
from lecture_lib.models import ShapesNet

SHAPES_NET_TOP_DOWN = ["fc2", "fc1", "conv4", "conv3", "conv2", "conv1"]


# --- reading a map ----------------------------------------------------------------------------


def test_importance_is_the_max_over_channels_of_the_magnitude():
    a = torch.tensor([[[[1.0, -2.0]], [[-3.0, 0.5]], [[0.0, 1.0]]]])  # [1, 3, 1, 2]
    assert torch.equal(importance(a), torch.tensor([[[3.0, 2.0]]]))
    assert torch.equal(importance(-a[:, 0]), torch.tensor([[[1.0, 2.0]]]))


# --- pointing game ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def many_masks():
    return make_shapes(400, seed=7)[2]


def test_the_mask_itself_wins_the_pointing_game(many_masks):
    masks = many_masks[:50]
    assert pointing_game(masks.float(), masks) == 1.0
    # as a colour map, with a negative sign: the magnitude counts
    assert pointing_game(-masks.float()[:, None].expand(-1, 3, -1, -1), masks) == 1.0
    assert pointing_game((~masks).float(), masks) == 0.0


def test_a_uniform_random_map_scores_the_area_share(many_masks):
    generator = torch.Generator().manual_seed(3)
    maps = torch.rand(many_masks.shape, generator=generator)
    area = many_masks.float().mean().item()  # about 0.13
    assert abs(pointing_game(maps, many_masks) - area) < 0.05
    assert abs(mask_share(maps, many_masks) - area) < 0.01


def _hit_by_loop(point: tuple[int, int], mask: np.ndarray, tolerance: int) -> bool:
    """Is some object pixel within `tolerance` rows and columns of `point`?"""
    rows, cols = np.nonzero(mask)
    return any(
        max(abs(r - point[0]), abs(c - point[1])) <= tolerance
        for r, c in zip(rows.tolist(), cols.tolist())
    )


def test_tolerance_helps_a_point_next_to_the_object():
    mask = torch.zeros(9, 9, dtype=torch.bool)
    mask[3:6, 3:6] = True
    above = torch.zeros(9, 9)
    above[1, 4] = 1.0  # two rows above the object
    assert [pointing_game(above, mask, tolerance=t) for t in (0, 1, 2, 3)] == [0, 0, 1, 1]
    corner = torch.zeros(9, 9)
    corner[7, 7] = 1.0  # two pixels off diagonally: inside the square neighbourhood of 2
    assert [pointing_game(corner, mask, tolerance=t) for t in (0, 1, 2)] == [0, 0, 1]


def test_pointing_game_matches_a_plain_loop_for_every_point_and_tolerance():
    generator = torch.Generator().manual_seed(0)
    mask = torch.rand(12, 12, generator=generator) > 0.93
    mask[5, 5] = True
    points = [(r, c) for r in range(12) for c in range(12)]
    maps = torch.zeros(len(points), 12, 12)
    for i, (r, c) in enumerate(points):
        maps[i, r, c] = 1.0
    masks = mask.expand(len(points), -1, -1)
    for tolerance in range(4):
        got = pointing_game(maps, masks, tolerance=tolerance, per_example=True)
        expected = [float(_hit_by_loop(p, mask.numpy(), tolerance)) for p in points]
        assert got.tolist() == expected


def test_ties_at_the_maximum_score_the_share_that_hits(many_masks):
    masks = many_masks[:20]
    constant = torch.ones(masks.shape)
    area = masks.flatten(1).float().mean(dim=1)
    assert torch.allclose(pointing_game(constant, masks, per_example=True), area)
    mask = torch.zeros(4, 4, dtype=torch.bool)
    mask[0, 0] = True
    two = torch.zeros(4, 4)
    two[0, 0] = two[3, 3] = 5.0  # one maximum on the object, one off it
    assert pointing_game(two, mask) == 0.5


def test_the_channel_with_the_largest_magnitude_decides():
    mask = torch.zeros(4, 4, dtype=torch.bool)
    mask[0, 0] = True
    a = torch.zeros(3, 4, 4)
    a[:, 0, 0] = 2.0  # sum over channels 6 on the object ...
    a[1, 3, 3] = -3.0  # ... but one channel's magnitude 3 off it
    assert pointing_game(a, mask) == 0.0
    assert pointing_game(a.abs().sum(dim=0), mask) == 1.0


def test_pointing_game_bad_input_is_named():
    masks = torch.zeros(2, 8, 8, dtype=torch.bool)
    masks[:, 2, 2] = True
    with pytest.raises(ValueError, match=r"attributions of shape \(2, 8, 9\)"):
        pointing_game(torch.rand(2, 8, 9), masks)
    with pytest.raises(ValueError, match=r"do not fit masks"):
        pointing_game(torch.rand(3, 8, 8), masks)
    with pytest.raises(ValueError, match="tolerance"):
        pointing_game(torch.rand(2, 8, 8), masks, tolerance=-1)
    with pytest.raises(TypeError, match="boolean"):
        pointing_game(torch.rand(2, 8, 8), masks.long() * 2)
    empty = masks.clone()
    empty[1] = False
    with pytest.raises(ValueError, match="example 1 is empty"):
        pointing_game(torch.rand(2, 8, 8), empty)


# --- mask share -------------------------------------------------------------------------------


def test_mask_share_of_a_hand_worked_example():
    mask = torch.tensor([[True, False], [False, True]])
    m = torch.tensor([[1.0, -3.0], [0.0, 4.0]])
    assert mask_share(m, mask) == pytest.approx((1 + 4) / (1 + 3 + 0 + 4))
    colour = torch.stack([m, torch.zeros(2, 2), torch.full((2, 2), 2.0)])  # max |a| per pixel
    assert mask_share(colour, mask) == pytest.approx((2 + 4) / (2 + 3 + 2 + 4))


def test_mask_share_of_mask_inverse_and_nothing(many_masks):
    masks = many_masks[:30]
    assert mask_share(masks.float(), masks) == pytest.approx(1.0)
    assert mask_share((~masks).float(), masks) == pytest.approx(0.0)
    area = masks.flatten(1).float().mean(dim=1)
    assert torch.allclose(mask_share(torch.zeros(masks.shape), masks, per_example=True), area)
    shares = mask_share(torch.rand(masks.shape), masks, per_example=True)
    assert shares.shape == (30,)
    assert mask_share(torch.rand(masks.shape), masks) == pytest.approx(float(shares.mean()), 0.1)


# --- deletion and insertion on a model whose best ordering is known ---------------------------


class LinearScore(nn.Module):
    """Two classes: S_0 = sum_i w_i x_i, S_1 = 0, so P_0 = sigmoid(sum_i w_i x_i)."""

    def __init__(self, w: torch.Tensor) -> None:
        super().__init__()
        self.w = nn.Parameter(w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = (self.w * x).flatten(1).sum(dim=1) - 3.0
        return torch.stack([s, torch.zeros_like(s)], dim=1)


@pytest.fixture()
def linear_case():
    generator = torch.Generator().manual_seed(11)
    w = torch.rand(1, 6, 6, generator=generator) * 0.5
    x = torch.rand(4, 1, 6, 6, generator=generator)
    return LinearScore(w), x, w * x  # the contributions w_i x_i: the ideal ordering


def _sigmoid_loop(contributions: np.ndarray, steps: int, kind: str) -> list[float]:
    """The curve by hand: after step k the top floor(k * D / steps) contributions are gone
    (deletion, substrate 0) or the only ones present (insertion)."""
    ordered = sorted(contributions.ravel().tolist(), reverse=True)
    curve = []
    for k in range(steps + 1):
        moved = k * len(ordered) // steps
        kept = ordered[moved:] if kind == "deletion" else ordered[:moved]
        curve.append(1.0 / (1.0 + math.exp(-(sum(kept) - 3.0))))
    return curve


@pytest.mark.parametrize("kind", ["deletion", "insertion"])
def test_curve_of_the_ideal_ordering_matches_a_plain_loop(linear_case, kind):
    model, x, contributions = linear_case
    curve_fn = deletion_curve if kind == "deletion" else insertion_curve
    curve = curve_fn(model, x, contributions, target=0, steps=7, substrate=0.0)
    assert curve.shape == (4, 8)
    for i in range(4):
        expected = _sigmoid_loop(contributions[i].numpy(), 7, kind)
        assert curve[i].tolist() == pytest.approx(expected, abs=1e-6)


def test_ideal_deletion_lies_below_and_ideal_insertion_above_any_random_ordering(linear_case):
    model, x, contributions = linear_case
    ideal_del = deletion_curve(model, x, contributions, target=0, steps=9, substrate=0.0)
    ideal_ins = insertion_curve(model, x, contributions, target=0, steps=9, substrate=0.0)
    generator = torch.Generator().manual_seed(5)
    for _ in range(10):
        shuffled = torch.rand(contributions.shape, generator=generator)
        random_del = deletion_curve(model, x, shuffled, target=0, steps=9, substrate=0.0)
        random_ins = insertion_curve(model, x, shuffled, target=0, steps=9, substrate=0.0)
        assert (ideal_del <= random_del + 1e-6).all()
        assert (ideal_ins >= random_ins - 1e-6).all()
        assert auc(ideal_del) < auc(random_del)
        assert auc(ideal_ins) > auc(random_ins)


def test_on_shapes_the_mask_beats_a_random_map(shapes_net):
    images, _, masks = make_shapes(12, seed=2026)
    noise = torch.rand(masks.shape, generator=torch.Generator().manual_seed(0))
    by_mask = auc(deletion_curve(shapes_net, images, masks.float(), steps=10))
    by_noise = auc(deletion_curve(shapes_net, images, noise, steps=10))
    assert by_mask < by_noise - 0.1  # measured 0.29 against 0.54
    by_mask = auc(insertion_curve(shapes_net, images, masks.float(), steps=10))
    by_noise = auc(insertion_curve(shapes_net, images, noise, steps=10))
    assert by_mask > by_noise + 0.1  # measured 0.87 against 0.52


def test_curve_ends_and_target_fixed_on_the_original_image(shapes_net, shapes_batch):
    images, _, masks = shapes_batch
    substrate = make_substrate(images, "mean")
    with torch.no_grad():
        on_image = torch.softmax(shapes_net(images), dim=1)
        on_substrate = torch.softmax(shapes_net(substrate), dim=1)
    predicted = on_image.argmax(dim=1)
    rows = torch.arange(len(images))
    deletion = deletion_curve(shapes_net, images, masks.float(), steps=4)
    insertion = insertion_curve(shapes_net, images, masks.float(), steps=4)
    assert torch.allclose(deletion[:, 0], on_image[rows, predicted], atol=1e-5)
    assert torch.allclose(deletion[:, -1], on_substrate[rows, predicted], atol=1e-5)
    assert torch.allclose(insertion[:, 0], on_substrate[rows, predicted], atol=1e-5)
    assert torch.allclose(insertion[:, -1], on_image[rows, predicted], atol=1e-5)
    # the substrate alone is not predicted as the image was: a moving target would show here
    assert (on_substrate.argmax(dim=1) != predicted).any()


def test_curve_is_the_same_in_any_chunking_and_for_one_image(shapes_net, shapes_batch):
    images, _, masks = shapes_batch
    maps = attribution.saliency(shapes_net, images)
    whole = deletion_curve(shapes_net, images, maps, steps=5, substrate="blur")
    chunked = deletion_curve(shapes_net, images, maps, steps=5, substrate="blur", batch_size=7)
    assert torch.allclose(whole, chunked, atol=1e-6)
    one = deletion_curve(shapes_net, images[3], maps[3], steps=5, substrate="blur")
    assert one.shape == (6,)
    assert torch.allclose(one, whole[3], atol=1e-6)


@pytest.mark.parametrize("kind", ["deletion", "insertion"])
def test_step_images_are_what_the_curve_shows(shapes_net, shapes_batch, kind):
    images = shapes_batch[0][:3]
    maps = torch.rand(3, 64, 64, generator=torch.Generator().manual_seed(3))  # no ties
    shown = step_images(images, maps, steps=4, kind=kind)
    assert shown.shape == (3, 5, 3, 64, 64)
    with torch.no_grad():
        target = shapes_net(images).argmax(dim=1)
        p = shapes_net(shown.flatten(0, 1)).softmax(dim=1).view(3, 5, -1)
    curve_fn = deletion_curve if kind == "deletion" else insertion_curve
    expected = p.gather(2, target[:, None, None].expand(3, 5, 1))[..., 0]
    assert torch.allclose(curve_fn(shapes_net, images, maps, steps=4), expected, atol=1e-6)
    # by hand: after step 1 of 4, the 1024 most important pixels have moved
    top = maps[0].flatten().argsort(descending=True)[:1024]
    mean = images[0].mean(dim=(1, 2), keepdim=True).expand_as(images[0]).flatten(1)
    start, end = (
        (images[0].flatten(1), mean) if kind == "deletion" else (mean, images[0].flatten(1))
    )
    by_hand = start.clone()
    by_hand[:, top] = end[:, top]
    assert torch.allclose(
        step_images(images[0], maps[0], steps=4, kind=kind)[1].flatten(1), by_hand
    )
    with pytest.raises(ValueError, match="kind must be 'deletion' or 'insertion'"):
        step_images(images, maps, kind="removal")


def test_substrates():
    import torchvision.transforms.functional as TF

    from lecture_lib.evaluate import BLUR_SIGMA

    images = make_shapes(3, seed=1)[0]
    radius = int(3 * BLUR_SIGMA)
    expected = TF.gaussian_blur(images, [2 * radius + 1] * 2, [BLUR_SIGMA] * 2)
    assert torch.allclose(make_substrate(images, "blur"), expected, atol=1e-5)
    mean = make_substrate(images, "mean")
    assert torch.allclose(mean[:, :, 5, 7], images.mean(dim=(2, 3)))
    assert torch.equal(mean.amax(dim=(2, 3)), mean.amin(dim=(2, 3)))
    grey = make_substrate(images, torch.tensor([0.1, 0.2, 0.3])[:, None, None])
    assert torch.equal(grey[2, :, 0, 0], torch.tensor([0.1, 0.2, 0.3]))
    assert torch.equal(make_substrate(images[0], 0.5), torch.full((1, 3, 64, 64), 0.5))


def test_curves_leave_the_model_as_it_came(shapes_batch):
    model = ShapesNet()
    model.train()
    model.conv1.weight.requires_grad_(False)
    before = copy.deepcopy(model.state_dict())
    images, _, masks = shapes_batch
    deletion_curve(model, images, masks.float(), steps=2)
    insertion_curve(model, images, masks.float(), steps=2)
    assert all(m.training for m in model.modules())
    assert not model.conv1.weight.requires_grad and model.conv2.weight.requires_grad
    assert all(p.grad is None for p in model.parameters())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_constant_maps_delete_in_a_seeded_random_order():
    flat = torch.zeros(1, 8, 8)
    first, again = pixel_order(flat, seed=1), pixel_order(flat, seed=1)
    assert torch.equal(first, again)
    assert not torch.equal(first, pixel_order(flat, seed=2))
    assert not torch.equal(first[0], torch.arange(64))  # not a sweep from the top row
    assert sorted(first[0].tolist()) == list(range(64))
    ramp = torch.arange(64.0).view(1, 8, 8)
    assert pixel_order(ramp).tolist() == [list(range(63, -1, -1))]


def test_curve_bad_input_is_named(shapes_net, shapes_batch):
    images, _, masks = shapes_batch
    with pytest.raises(ValueError, match="steps must be an int >= 1, got steps=0"):
        deletion_curve(shapes_net, images, masks.float(), steps=0)
    with pytest.raises(ValueError, match="steps"):
        insertion_curve(shapes_net, images, masks.float(), steps=2.5)
    with pytest.raises(ValueError, match=r"attributions of shape \(8, 32, 32\)"):
        deletion_curve(shapes_net, images, masks[:, :32, :32].float())
    with pytest.raises(ValueError, match="substrate must be one of"):
        deletion_curve(shapes_net, images, masks.float(), substrate="zero")
    with pytest.raises(ValueError, match="does not fit inputs"):
        deletion_curve(shapes_net, images, masks.float(), substrate=torch.zeros(2, 64, 64))
    with pytest.raises(ValueError, match="out of range"):
        deletion_curve(shapes_net, images, masks.float(), target=5)


# --- area under the curve ---------------------------------------------------------------------


def test_auc_of_known_curves():
    assert auc(torch.tensor([1.0, 0.0, 0.0, 0.0])) == pytest.approx(1 / 6)
    assert auc(torch.full((5,), 0.2)) == pytest.approx(0.2)
    assert auc(torch.tensor([0.0, 0.25, 1.0])) == pytest.approx(0.375)  # x^2 at 0, 1/2, 1
    curves = torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.2, 0.2, 0.2, 0.2]])
    assert auc(curves, per_example=True).tolist() == pytest.approx([1 / 6, 0.2])
    assert auc(curves) == pytest.approx((1 / 6 + 0.2) / 2)
    with pytest.raises(ValueError, match="at least 2 points"):
        auc(torch.tensor([0.5]))


# --- Spearman rank correlation ----------------------------------------------------------------


def test_spearman_of_a_worked_example_with_a_tie():
    # ranks of y: 1, 2, 3.5, 5, 3.5; Pearson of the ranks: 8 / sqrt(10 * 9.5)
    x, y = torch.tensor([1.0, 2, 3, 4, 5]), torch.tensor([5.0, 6, 7, 8, 7])
    assert rank(y).tolist() == [1.0, 2.0, 3.5, 5.0, 3.5]
    assert float(spearman(x, y)) == pytest.approx(8 / math.sqrt(95))
    assert float(spearman(x, y)) == pytest.approx(0.8207826816681233)  # scipy.stats.spearmanr


def _average_ranks(values: list[float]) -> list[float]:
    return [sum(v < u for v in values) + (sum(v == u for v in values) + 1) / 2 for u in values]


def test_spearman_against_the_textbook_formulas():
    generator = torch.Generator().manual_seed(2)
    x, y = torch.randn(3, 40, generator=generator), torch.randn(3, 40, generator=generator)
    n = 40
    for i in range(3):  # no ties: 1 - 6 sum d^2 / (n (n^2 - 1))
        d = np.array(_average_ranks(x[i].tolist())) - np.array(_average_ranks(y[i].tolist()))
        expected = 1 - 6 * (d**2).sum() / (n * (n**2 - 1))
        assert float(spearman(x, y)[i]) == pytest.approx(expected)
    tied_x, tied_y = x.round(), (y * 2).round()  # many ties: Pearson of the average ranks
    got = spearman(tied_x, tied_y)
    for i in range(3):
        expected = np.corrcoef(
            _average_ranks(tied_x[i].tolist()), _average_ranks(tied_y[i].tolist())
        )
        assert float(got[i]) == pytest.approx(expected[0, 1])


def test_spearman_extremes():
    x = torch.randn(50)
    assert float(spearman(x, x.exp())) == pytest.approx(1.0)
    assert float(spearman(x, -x)) == pytest.approx(-1.0)
    assert torch.isnan(spearman(x, torch.ones(50)))
    with pytest.raises(ValueError, match="same shape"):
        spearman(x, torch.randn(49))


# --- the model parameter randomization test ---------------------------------------------------


def test_default_layers_go_from_the_logits_down(shapes_net, shapes_batch):
    assert randomizable_layers(shapes_net, shapes_batch[0]) == SHAPES_NET_TOP_DOWN


def test_a_method_that_ignores_the_model_keeps_correlation_one(shapes_net, shapes_batch):
    images = shapes_batch[0]
    result = randomization_test(shapes_net, images, lambda model, x, target: x * 2.0)
    assert result.layers == SHAPES_NET_TOP_DOWN
    assert result.spearman.shape == (6, 8)
    assert torch.allclose(result.spearman, torch.ones(6, 8), atol=1e-6)


class WithDeadBranch(nn.Module):
    """A small ConvNet plus a branch whose output is multiplied by zero: randomizing it changes
    nothing, neither the scores nor their gradient."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten()
        )
        self.head = nn.Linear(16, 3)
        self.dead = nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.body(x)
        return self.head(h) + 0.0 * self.dead(h)


def test_randomizing_a_layer_without_effect_keeps_correlation_one():
    torch.manual_seed(0)
    model = WithDeadBranch()
    images = torch.rand(5, 3, 8, 8)
    result = randomization_test(model, images, attribution.gradient, layers=["dead"])
    assert result.layers == ["dead"]
    assert torch.allclose(result.spearman, torch.ones(1, 5), atol=1e-6)
    changed = randomization_test(model, images, attribution.gradient, layers=["dead", "head"])
    assert changed.mean[1] < 0.99


def test_randomizing_changes_the_gradient_of_shapes_net(shapes_net, shapes_batch):
    result = randomization_test(shapes_net, shapes_batch[0], attribution.gradient)
    assert result.layers == SHAPES_NET_TOP_DOWN
    assert result.mean[0] < 0.9  # the logits alone already change the map
    assert result.mean[-1] < 0.5  # nothing learned is left
    assert result.mean[-1] < result.mean[0]
    assert result.original.shape == (8, 64, 64)
    assert result.randomized.shape == (6, 8, 64, 64)
    table = str(result)
    assert "fc2" in table and "conv1" in table and "Spearman" in table


def _changed_layers(model: nn.Module, trained: dict) -> list[str]:
    state = model.state_dict()
    return sorted({k.rsplit(".", 1)[0] for k in state if not torch.equal(state[k], trained[k])})


@pytest.mark.parametrize("cascade", [True, False])
def test_each_step_randomizes_the_right_layers_and_keeps_the_target(
    shapes_net, shapes_batch, cascade
):
    images = shapes_batch[0]
    trained = copy.deepcopy(shapes_net.state_dict())
    with torch.no_grad():
        predicted = shapes_net(images).argmax(dim=1)
    seen = []

    def spy(model, x, target):
        seen.append((_changed_layers(model, trained), torch.as_tensor(target).clone()))
        return attribution.gradient(model, x, target)

    randomization_test(shapes_net, images, spy, cascade=cascade)
    assert seen[0][0] == []  # the trained model's own map first
    for step, (changed, _) in enumerate(seen[1:], start=1):
        expected = SHAPES_NET_TOP_DOWN[:step] if cascade else SHAPES_NET_TOP_DOWN[step - 1 : step]
        assert changed == sorted(expected)
    assert all(torch.equal(target, predicted) for _, target in seen)


def test_the_model_passed_in_is_left_as_it_came(shapes_batch):
    torch.manual_seed(1)
    model = ShapesNet()
    model.train()
    model.fc1.weight.requires_grad_(False)
    before = copy.deepcopy(model.state_dict())
    rng = torch.get_rng_state()
    randomization_test(model, shapes_batch[0], attribution.gradient)

    calls = []

    def fails_on_third(m, x, target):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("broken method")
        return attribution.gradient(m, x, target)

    with pytest.raises(RuntimeError, match="broken method"):
        randomization_test(model, shapes_batch[0], fails_on_third)
    assert all(m.training for m in model.modules())
    assert [p.requires_grad for p in model.parameters()] == [
        name != "fc1.weight" for name, _ in model.named_parameters()
    ]
    assert all(p.grad is None for p in model.parameters())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(not m._forward_hooks and not m._backward_hooks for m in model.modules())
    assert torch.equal(torch.get_rng_state(), rng)


def test_same_seed_same_result_other_seed_other_result(shapes_net, shapes_batch):
    images = shapes_batch[0][:4]
    first = randomization_test(shapes_net, images, attribution.gradient, layers=["fc2"], seed=3)
    again = randomization_test(shapes_net, images, attribution.gradient, layers=["fc2"], seed=3)
    other = randomization_test(shapes_net, images, attribution.gradient, layers=["fc2"], seed=4)
    assert torch.equal(first.spearman, again.spearman)
    assert not torch.equal(first.spearman, other.spearman)


def test_reinitialize_is_seeded_and_keeps_the_global_random_state():
    a, b = nn.Linear(4, 3), nn.Linear(4, 3)
    rng = torch.get_rng_state()
    reinitialize(a, seed=9)
    reinitialize(b, seed=9)
    assert torch.equal(a.weight, b.weight) and torch.equal(a.bias, b.bias)
    assert torch.equal(torch.get_rng_state(), rng)


def test_randomization_bad_input_is_named(shapes_net, shapes_batch):
    images = shapes_batch[0][:2]
    with pytest.raises(ValueError, match="no layer named 'fc3'.*Valid layers"):
        randomization_test(shapes_net, images, attribution.gradient, layers=["fc3"])
    with pytest.raises(ValueError, match="'relu1' has no parameters.*conv1"):
        randomization_test(shapes_net, images, attribution.gradient, layers=["relu1"])
    with pytest.raises(ValueError, match="layers is empty"):
        randomization_test(shapes_net, images, attribution.gradient, layers=[])
    with pytest.raises(ValueError, match="method returned shape"):
        randomization_test(shapes_net, images, lambda m, x, t: x.flatten(1))
    with pytest.raises(TypeError, match="method must be an attribution function"):
        randomization_test(shapes_net, images, "gradient")


def test_maps_per_class_explains_each_image_for_its_most_probable_classes(shapes_net):
    from lecture_lib import attribution
    from lecture_lib.class_sensitivity import class_correlation, maps_per_class

    images = make_shapes(3, seed=4)[0]
    maps, classes = maps_per_class(shapes_net, images, attribution.gradient, k=3)
    assert maps.shape == (3, 3, 3, 64, 64) and classes.shape == (3, 3)
    assert torch.equal(classes[:, 0], shapes_net(images).argmax(1))
    torch.testing.assert_close(maps[:, 1], attribution.gradient(shapes_net, images, classes[:, 1]))
    r = class_correlation(maps)
    assert r.shape == (3, 3)  # pairs (0, 1), (0, 2), (1, 2)
    expected = np.corrcoef(maps[2, 0].flatten().numpy(), maps[2, 2].flatten().numpy())[0, 1]
    assert abs(r[2, 1].item() - expected) < 1e-5
    with pytest.raises(ValueError, match="k=9"):
        maps_per_class(shapes_net, images, attribution.gradient, k=9)


def test_class_correlation_of_identical_and_opposite_maps():
    from lecture_lib.class_sensitivity import class_correlation

    m = torch.rand(1, 1, 8, 8)
    assert torch.allclose(class_correlation(torch.cat([m, 2 * m], dim=1)), torch.ones(1, 1))
    assert torch.allclose(class_correlation(torch.cat([m, -m], dim=1)), -torch.ones(1, 1))
    with pytest.raises(ValueError, match="k >= 2"):
        class_correlation(m)
