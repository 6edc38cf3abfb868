"""The checks of assignment 08 (layer-wise relevance propagation): a right answer passes, on the
visible and on hidden cases; the typical mistakes fail with a message that names them."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lecture_lib import attribution, checks


def epsilon_linear(x, weight, bias, relevance, epsilon):
    z = x @ weight.T + bias
    return x * ((relevance / (z + epsilon * torch.where(z >= 0, 1.0, -1.0))) @ weight)


def zplus_conv(x, weight, bias, relevance, stride, padding):
    x = x.detach().requires_grad_(True)
    z = F.conv2d(x, weight.clamp(min=0), bias.clamp(min=0), stride=stride, padding=padding)
    (c,) = torch.autograd.grad(z, x, relevance / (z + 1e-6))
    return (x * c).detach()


def lrp_zero(model, images, target):
    layers, activations = list(model.children()), [images]
    with torch.no_grad():
        for layer in layers:
            activations.append(layer(activations[-1]))
    rows = torch.arange(len(images))
    relevance = torch.zeros_like(activations[-1])
    relevance[rows, target] = activations[-1][rows, target]
    for layer, a in zip(reversed(layers), reversed(activations[:-1])):
        if isinstance(layer, nn.ReLU):
            continue
        a = a.detach().requires_grad_(True)
        z = layer(a)
        s = torch.where(z != 0, relevance / torch.where(z != 0, z, 1.0), 0.0)
        relevance = (a * torch.autograd.grad(z, a, s)[0]).detach()
    return relevance


@pytest.mark.parametrize("seed", [None, 11])
def test_right_answers_pass(seed, capsys):
    checks.check_epsilon_linear(epsilon_linear, seed=seed)
    checks.check_zplus_conv(zplus_conv, seed=seed)
    checks.check_lrp_zero(lrp_zero, seed=seed)
    printed = capsys.readouterr().out
    assert printed.count("✓") == 3 and "Note" not in printed


def test_the_hand_example():
    checks.check_epsilon_by_hand([4, -2.0])
    with pytest.raises(AssertionError, match="LRP-0, the rule without epsilon"):
        checks.check_epsilon_by_hand([20 / 3, -10 / 3])
    with pytest.raises(AssertionError, match="without the bias"):
        checks.check_epsilon_by_hand([5, -2.5])
    with pytest.raises(AssertionError, match="two inputs"):
        checks.check_epsilon_by_hand([4, -2, 0])


def test_epsilon_mistakes_are_named():
    def lrp0(x, weight, bias, relevance, epsilon):
        return epsilon_linear(x, weight, bias, relevance, 0.0)

    def unsigned(x, weight, bias, relevance, epsilon):
        return x * ((relevance / (x @ weight.T + bias + epsilon)) @ weight)

    with pytest.raises(AssertionError, match="LRP-0"):
        checks.check_epsilon_linear(lrp0)
    with pytest.raises(AssertionError, match="without the sign"):
        checks.check_epsilon_linear(unsigned, seed=4)


def test_zplus_mistakes_are_named():
    def no_bias(x, weight, bias, relevance, stride, padding):
        return zplus_conv(x, weight, torch.zeros_like(bias), relevance, stride, padding)

    def all_weights(x, weight, bias, relevance, stride, padding):
        x = x.detach().requires_grad_(True)
        z = F.conv2d(x, weight, bias, stride=stride, padding=padding)
        return (x * torch.autograd.grad(z, x, relevance / z)[0]).detach()

    with pytest.raises(AssertionError, match="without the positive bias"):
        checks.check_zplus_conv(no_bias)
    with pytest.raises(AssertionError, match="LRP-0"):
        checks.check_zplus_conv(all_weights)


def test_lrp_zero_mistakes_and_the_librarys_answer(capsys):
    with pytest.raises(AssertionError, match="the gradient alone"):
        checks.check_lrp_zero(lambda m, x, t: attribution.gradient(m, x, t))
    with pytest.raises(AssertionError, match="relevance of 1 at the output"):
        checks.check_lrp_zero(
            lambda m, x, t: lrp_zero(m, x, t) / m(x).gather(1, t[:, None]).view(-1, 1, 1, 1)
        )
    checks.check_lrp_zero(lambda m, x, t: attribution.input_x_gradient(m, x, t))
    assert "grading gives no points" in capsys.readouterr().out


def test_a_model_changed_by_the_answer_fails():
    def train_mode(model, images, target):
        model.train()
        return lrp_zero(model, images, target)

    with pytest.raises(AssertionError, match="mode"):
        checks.check_lrp_zero(train_mode)
