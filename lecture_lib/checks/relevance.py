"""Checks of layer-wise relevance propagation (beyond the lecture, lecture 10): the epsilon rule
for a linear layer by hand and in code, the z+ rule for a convolution, and a whole LRP-0 pass
(which equals input x gradient on a ReLU network)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from .. import attribution
from ..models import load_shapes_net
from ..relevance import Layer, layer_relevance
from .core import (
    Check,
    _array,
    _changes,
    _compare,
    _compare_lazily,
    _images_case,
    _pixel,
    _untouched,
    observe,
)

# The by-hand example: two inputs, two outputs, the output 0 explained.
HAND_X = torch.tensor([[2.0, 1.0]], dtype=torch.float64)
HAND_W = torch.tensor([[1.0, -1.0], [0.5, 2.0]], dtype=torch.float64)  # w[j, i]
HAND_B = torch.tensor([0.5, 0.0], dtype=torch.float64)
HAND_EPSILON = 1.0
HAND_R = torch.tensor([[5.0, 0.0]], dtype=torch.float64)

EPSILON_TEXT = "R_i = sum_j x_i w_ij / (z_j + eps·sign(z_j)) · R_j, z_j = sum_i x_i w_ij + b_j"
ZPLUS_TEXT = (
    "R_i = x_i sum_j w+_ij / (z+_j + 1e-6) · R_j, z+_j = sum_i x_i w+_ij + max(b_j, 0), "
    "w+ = max(w, 0)"
)


def _dense(weight, bias, x) -> Layer:
    return Layer("dense", weight, bias, x.shape)


def hand_reference() -> np.ndarray:
    """The by-hand example's R_i by the library's epsilon rule."""
    layer = _dense(HAND_W, HAND_B, HAND_X)
    return layer_relevance("epsilon", layer, HAND_X, HAND_R, epsilon=HAND_EPSILON)[0].numpy()


def _run_epsilon_by_hand(answer) -> dict:
    """``answer``: the two inputs' relevance ``[R_1, R_2]`` of the by-hand example."""
    return {"got": observe(answer)}


def _judge_epsilon_by_hand(observed) -> str:
    got = _array(observed["got"], "your answer").reshape(-1)
    if got.shape != (2,):
        raise AssertionError(f"give the two inputs' relevance [R_1, R_2], got {got.size} numbers.")
    expected = hand_reference()
    z = float((HAND_X @ HAND_W.T + HAND_B)[0, 0])
    hints = {
        "LRP-0, the rule without epsilon,": (HAND_X[0] * HAND_W[0] / z * HAND_R[0, 0]).numpy(),
        "a z_j without the bias": (
            HAND_X[0] * HAND_W[0] / (z - HAND_B[0] + HAND_EPSILON) * HAND_R[0, 0]
        ).numpy(),
    }
    if not np.allclose(got, expected, atol=1e-3):
        message = (
            f"not yet: z_0 = {z:g}; the rule is {EPSILON_TEXT}. Only output 0 carries relevance."
        )
        for mistake, value in hints.items():
            if np.allclose(got, value, atol=1e-3):
                message += f" Your numbers are what {mistake} gives."
        raise AssertionError(message)
    absorbed = float(HAND_R.sum()) - float(expected.sum())
    return (
        f"epsilon rule by hand: R = [{expected[0]:g}, {expected[1]:g}]; the bias and epsilon "
        f"absorbed {absorbed:g} of the relevance {float(HAND_R.sum()):g}."
    )


check_epsilon_by_hand = Check(_run_epsilon_by_hand, _judge_epsilon_by_hand)


def _linear_case(seed: int | None):
    """``(x [N, in], weight [out, in], bias [out], relevance [N, out], epsilon)``."""
    g = torch.Generator().manual_seed(seed or 0)
    n, d_in, d_out = (
        (2, 5, 3) if seed is None else tuple(int(v) for v in torch.randint(2, 7, (3,), generator=g))
    )
    x = torch.randn(n, d_in, generator=g, dtype=torch.float64)
    weight = torch.randn(d_out, d_in, generator=g, dtype=torch.float64)
    bias = torch.randn(d_out, generator=g, dtype=torch.float64)
    relevance = torch.randn(n, d_out, generator=g, dtype=torch.float64)
    epsilon = 0.5 if seed is None else float(torch.rand(1, generator=g)) + 0.1
    return x, weight, bias, relevance, epsilon


def _run_epsilon_linear(fn: Callable, seed: int | None = None) -> dict:
    """``fn(x, weight, bias, relevance, epsilon)`` returns the inputs' relevance ``[N, in]``."""
    x, weight, bias, relevance, epsilon = _linear_case(seed)
    before = [t.clone() for t in (x, weight, bias, relevance)]
    got = fn(x, weight, bias, relevance, epsilon)
    changed = any(not torch.equal(a, b) for a, b in zip((x, weight, bias, relevance), before))
    return {"got": observe(got), "in_place": changed}


def _judge_epsilon_linear(observed, seed=None) -> str:
    if observed["in_place"]:
        raise AssertionError("your function changed its arguments in place; return a new tensor.")
    x, weight, bias, relevance, epsilon = _linear_case(seed)
    layer = _dense(weight, bias, x)
    expected = layer_relevance("epsilon", layer, x, relevance, epsilon=epsilon)
    z = x @ weight.T + bias

    def mistakes() -> dict:
        return {
            "LRP-0 (epsilon left out)": layer_relevance("zero", layer, x, relevance),
            "z_j + epsilon, without the sign of z_j": x * ((relevance / (z + epsilon)) @ weight),
            "z_j without the bias": x * ((relevance / (z - bias + epsilon * z.sign())) @ weight),
            "the share without x_i (multiply by the input)": (
                (relevance / (z + epsilon * z.sign())) @ weight
            ),
        }

    _compare_lazily(observed["got"], expected, "epsilon rule", EPSILON_TEXT, mistakes)
    return "the epsilon rule matches relevance.layer_relevance('epsilon', ...)."


check_epsilon_linear = Check(
    _run_epsilon_linear,
    _judge_epsilon_linear,
    library=["lecture_lib.relevance.layer_relevance"],
)


def _conv_case(seed: int | None):
    """``(x >= 0 [N, C, H, W], weight, bias, relevance, stride, padding)``."""
    g = torch.Generator().manual_seed(seed or 0)
    c_in, c_out, size = (
        (2, 3, 6)
        if seed is None
        else (
            int(torch.randint(1, 4, (1,), generator=g)),
            int(torch.randint(2, 5, (1,), generator=g)),
            int(torch.randint(5, 9, (1,), generator=g)),
        )
    )
    stride, padding = (
        (1, 1)
        if seed is None
        else (
            int(torch.randint(1, 3, (1,), generator=g)),
            int(torch.randint(0, 2, (1,), generator=g)),
        )
    )
    x = torch.rand(2, c_in, size, size, generator=g, dtype=torch.float64)
    x[x < 0.2] = 0.0  # ReLU outputs: some are 0
    weight = torch.randn(c_out, c_in, 3, 3, generator=g, dtype=torch.float64)
    bias = torch.randn(c_out, generator=g, dtype=torch.float64)
    out = (size + 2 * padding - 3) // stride + 1
    relevance = torch.rand(2, c_out, out, out, generator=g, dtype=torch.float64)
    return x, weight, bias, relevance, stride, padding


def _conv_layer(weight, bias, x, stride, padding) -> Layer:
    conv = dict(stride=stride, padding=padding, dilation=1, groups=1)
    return Layer("conv", weight, bias, x.shape, conv)


def _run_zplus_conv(fn: Callable, seed: int | None = None) -> dict:
    """``fn(x, weight, bias, relevance, stride, padding)`` returns the inputs' relevance, the
    shape of ``x``."""
    x, weight, bias, relevance, stride, padding = _conv_case(seed)
    before = [t.clone() for t in (x, weight, bias, relevance)]
    got = fn(x, weight, bias, relevance, stride, padding)
    changed = any(not torch.equal(a, b) for a, b in zip((x, weight, bias, relevance), before))
    return {"got": observe(got), "in_place": changed}


def _judge_zplus_conv(observed, seed=None) -> str:
    if observed["in_place"]:
        raise AssertionError("your function changed its arguments in place; return a new tensor.")
    x, weight, bias, relevance, stride, padding = _conv_case(seed)
    layer = _conv_layer(weight, bias, x, stride, padding)
    expected = layer_relevance("plus", layer, x, relevance)

    def mistakes() -> dict:
        no_bias = _conv_layer(weight, None, x, stride, padding)
        return {
            "z+ without the positive bias in the denominator": layer_relevance(
                "plus", no_bias, x, relevance
            ),
            "LRP-0 (all weights, not only the positive ones)": layer_relevance(
                "zero", layer, x, relevance
            ),
        }

    _compare_lazily(observed["got"], expected, "z+ rule", ZPLUS_TEXT, mistakes, _pixel)
    return "the z+ rule matches relevance.layer_relevance('plus', ...) for a convolution."


check_zplus_conv = Check(
    _run_zplus_conv, _judge_zplus_conv, library=["lecture_lib.relevance.layer_relevance"]
)


def _run_lrp_zero(fn: Callable, seed: int | None = None) -> dict:
    """``fn(model, images, target)`` returns LRP-0's relevance of every pixel ``[N, C, H, W]``,
    the output's relevance being the target's score."""
    model, images, target = _images_case(seed)
    fresh = load_shapes_net()
    got = fn(model, images.clone(), target.clone())
    return {"got": observe(got), "changes": _changes(model, fresh, "your lrp_zero")}


def _judge_lrp_zero(observed, seed=None) -> str:
    _untouched(observed)
    model, images, target = _images_case(seed)
    expected = attribution.lrp(model, images, target, composite="zero")
    with torch.no_grad():
        scores = model(images).gather(1, target[:, None])
    gradient = attribution.gradient(model, images, target)
    mistakes = {
        "the gradient alone (LRP-0 is input x gradient: multiply by the pixels)": gradient,
        "a relevance of 1 at the output instead of the score S_c": (
            expected / scores.view(-1, 1, 1, 1)
        ),
        "the relevance of the predicted class (use the given target)": attribution.lrp(
            model, images, composite="zero"
        ),
    }
    _compare(
        observed["got"],
        expected,
        "LRP-0",
        "R_i = sum_j x_i w_ij / z_j · R_j in every layer, R = S_c at the output, ReLUs pass R "
        "on, max-pooling gives it to the winner.",
        mistakes,
        _pixel,
    )
    return "your LRP-0 matches attribution.lrp(..., composite='zero'): input x gradient."


check_lrp_zero = Check(
    _run_lrp_zero,
    _judge_lrp_zero,
    library=[
        "lecture_lib.attribution.lrp",
        "lecture_lib.attribution.input_x_gradient",
        "lecture_lib.relevance.layer_relevance",
    ],
)
