"""The saturating toy y = 1 - max(0, 1 - i1 - i2) and what each method makes of it."""

import pytest
import torch

from lecture_lib import attribution
from lecture_lib.perturbation import single_feature
from lecture_lib.saturation import SaturatingToy
from lecture_lib.targets import score

ONE_ONE = torch.tensor([1.0, 1.0])
BELOW_THE_KINK = torch.tensor([0.2, 0.3])


@pytest.fixture
def toy():
    return SaturatingToy()


def lecture_formula(i1: float, i2: float) -> float:
    """The slide's definition, written independently of the module."""
    return 1.0 - max(0.0, 1.0 - i1 - i2)


def test_maps_pairs_to_one_column(toy):
    assert toy(torch.zeros(7, 2)).shape == (7, 1)


@pytest.mark.parametrize(
    "i1, i2, expected",
    [(1, 1, 1.0), (0, 1, 1.0), (1, 0, 1.0), (0, 0, 0.0), (0.2, 0.3, 0.5), (0.7, 0.9, 1.0)],
)
def test_values_at_the_lectures_points(toy, i1, i2, expected):
    y = toy(torch.tensor([[float(i1), float(i2)]]))
    assert y.item() == pytest.approx(expected, abs=1e-7)
    assert y.item() == pytest.approx(lecture_formula(i1, i2), abs=1e-7)


def test_equals_the_formula_on_a_grid(toy):
    grid = torch.cartesian_prod(torch.linspace(-1, 2, 31), torch.linspace(-1, 2, 31))
    expected = torch.tensor([lecture_formula(a, b) for a, b in grid.tolist()])
    torch.testing.assert_close(toy(grid)[:, 0], expected, atol=1e-6, rtol=0)


def test_sum_below_one_is_the_sum_and_above_one_is_one(toy):
    below = torch.tensor([[0.1, 0.2], [0.4, 0.5], [-0.3, 0.6]])
    above = torch.tensor([[0.6, 0.5], [2.0, 0.1], [1.0, 1.0]])
    torch.testing.assert_close(toy(below)[:, 0], below.sum(1))
    torch.testing.assert_close(toy(above)[:, 0], torch.ones(3))


def test_weights_are_fixed(toy):
    assert all(not p.requires_grad for p in toy.parameters())


def test_uses_an_nn_relu(toy):
    assert any(isinstance(m, torch.nn.ReLU) for m in toy.modules())


def test_gradient_is_zero_at_one_one(toy):
    grad = attribution.gradient(toy, ONE_ONE)
    assert grad.tolist() == [0.0, 0.0]


def test_gradient_is_one_one_below_the_kink(toy):
    grad = attribution.gradient(toy, BELOW_THE_KINK)
    assert grad.tolist() == [1.0, 1.0]


def test_gradient_agrees_with_finite_differences_below_and_above(toy):
    eps = 1e-3
    for point in (BELOW_THE_KINK, torch.tensor([0.8, 0.9])):
        grad = attribution.gradient(toy, point)
        for i in range(2):
            step = torch.zeros(2)
            step[i] = eps
            numeric = (toy((point + step)[None]) - toy((point - step)[None])).item() / (2 * eps)
            assert grad[i].item() == pytest.approx(numeric, abs=1e-3)


def test_single_feature_perturbation_is_zero_at_one_one(toy):
    assert single_feature(toy, ONE_ONE).tolist() == [0.0, 0.0]


def test_single_feature_below_the_kink_is_each_input(toy):
    torch.testing.assert_close(single_feature(toy, BELOW_THE_KINK), BELOW_THE_KINK)


def test_integrated_gradients_split_the_output_evenly(toy):
    ig = attribution.integrated_gradients(toy, ONE_ONE, baseline=torch.zeros(2))
    # midpoint rule with 50 steps: 25 path points lie below the kink (gradient 1), 25 above (0)
    assert ig.tolist() == [0.5, 0.5]


def test_deeplift_splits_the_output_evenly(toy):
    dl = attribution.deeplift(toy, ONE_ONE, baseline=torch.zeros(2))
    torch.testing.assert_close(dl, torch.tensor([0.5, 0.5]), atol=1e-6, rtol=0)
    # summation to delta: y(1, 1) - y(0, 0) = 1
    assert dl.sum().item() == pytest.approx(1.0, abs=1e-6)


def test_batch_of_points_gives_one_row_each(toy):
    points = torch.stack([ONE_ONE, BELOW_THE_KINK])
    assert attribution.gradient(toy, points).tolist() == [[0.0, 0.0], [1.0, 1.0]]
    torch.testing.assert_close(
        attribution.deeplift(toy, points, baseline=0.0), torch.tensor([[0.5, 0.5], [0.2, 0.3]])
    )


def test_target_none_and_zero_both_explain_the_single_output(toy):
    points = torch.tensor([[1.0, 1.0], [0.2, 0.3]])
    for target in (None, 0, [0, 0]):
        f, logits = score(toy, points, target, "test")
        assert logits.shape == (2, 1)
        torch.testing.assert_close(f, torch.tensor([1.0, 0.5]))
    with pytest.raises(ValueError, match="0..0"):
        score(toy, points, 1, "test")


def test_wrong_shape_says_what_it_expects(toy):
    with pytest.raises(ValueError, match=r"\[N, 2\]"):
        toy(torch.zeros(3, 3))
    with pytest.raises(ValueError, match=r"\[N, 2\]"):
        toy(torch.zeros(2))
