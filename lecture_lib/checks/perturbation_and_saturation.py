"""Checks of Part 2, perturbation-based approaches and the saturation problem: the toy
y = 1 - max(0, 1 - i1 - i2) worked by hand, integrated gradients, occlusion."""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
from torch import nn

from .. import attribution, perturbation
from ..models import load_shapes_net
from ..saturation import SaturatingToy
from .core import (
    Check,
    _array,
    _changes,
    _compare,
    _pixel,
    _shapes,
    _targets,
    _untouched,
    observe,
)

SATURATION_HINTS = {
    "gradient": "Which branch of y = min(i1 + i2, 1) holds at (1, 1), and what is the slope of "
    "that branch in i1 and in i2?",
    "single_feature": "Compute y(0, 1) and y(1, 0) from the formula and subtract each from "
    "y(1, 1).",
    "integrated_gradients": "On the path i1 = i2 = alpha, for which alpha is y on its sloped "
    "part (slope 1 in each input) and for which on its flat part (slope 0)? Integrate the slope "
    "over alpha from 0 to 1 and multiply by x_i - x'_i = 1. The two numbers must add up to "
    "y(1, 1) - y(0, 0) (completeness).",
}


def _run_saturation_by_hand(answers: dict) -> dict:
    """``answers`` holds the pairs (for i1, for i2) that the gradient, single-feature
    perturbation (baseline 0) and integrated gradients (baseline (0, 0)) give the saturating toy
    :math:`y = 1 - \\max(0, 1 - i_1 - i_2)` at (1, 1). A by-hand answer: a wrong one gets a hint,
    not the numbers."""
    if not isinstance(answers, dict):
        return {"type": type(answers).__name__}
    return {"answers": {str(key): observe(value) for key, value in answers.items()}}


def _judge_saturation_by_hand(observed) -> str:
    if "answers" not in observed:
        raise AssertionError(
            f"expected a dict of pairs (for i1, for i2), got a {observed['type']}."
        )
    answers = observed["answers"]
    toy, x = SaturatingToy(), torch.tensor([[1.0, 1.0]])
    expected = {
        "gradient": attribution.gradient(toy, x, target=0)[0],
        "single_feature": perturbation.single_feature(toy, x, target=0)[0],
        "integrated_gradients": attribution.integrated_gradients(toy, x, target=0, steps=1000)[0],
    }
    for key, value in expected.items():
        if key not in answers:
            raise AssertionError(f"answers has no entry {key!r}; give a pair (for i1, for i2).")
        got = _array(answers[key], key)
        if got.shape != (2,):
            raise AssertionError(f"{key}: give a pair (for i1, for i2), got shape {got.shape}.")
        wrong = [i for i in range(2) if abs(got[i] - float(value[i])) > 1e-3]
        if wrong:
            inputs = " and ".join(f"i{i + 1}" for i in wrong)
            raise AssertionError(
                f"{key}: your value for {inputs} is not right. {SATURATION_HINTS[key]}"
            )
    return (
        "saturation by hand: gradient (0, 0), single-feature (0, 0), integrated gradients "
        "(0.5, 0.5)."
    )


check_saturation_by_hand = Check(
    _run_saturation_by_hand,
    _judge_saturation_by_hand,
    library=[
        "lecture_lib.attribution.gradient",
        "lecture_lib.attribution.integrated_gradients",
        "lecture_lib.perturbation.single_feature",
    ],
)


def _small_mlp(seed: int) -> nn.Module:
    """A random ReLU network ``[N, 4] -> [N, 1]`` (the global random state is left alone)."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = nn.Sequential(
            nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 1)
        )
    return model.eval()


def _integrated_gradients_case(seed: int | None):
    """``(model, x, baseline, steps)``: the saturating toy, or a random network with a seed."""
    if seed is None:
        x = torch.tensor([[1.0, 1.0], [0.3, 0.2], [2.0, -0.5]])
        return SaturatingToy(), x, torch.zeros_like(x), 50
    generator = torch.Generator().manual_seed(seed)
    x, baseline = torch.randn(3, 4, generator=generator), torch.randn(3, 4, generator=generator)
    return _small_mlp(seed), x, baseline, 20


def _run_integrated_gradients(fn: Callable, seed: int | None = None) -> dict:
    """``fn(model, x, baseline, steps)`` for a model ``[N, D] -> [N, 1]``, with the midpoint rule
    :math:`\\alpha_k = (k + 1/2)/m`; compared with ``attribution.integrated_gradients``."""
    model, x, baseline, steps = _integrated_gradients_case(seed)
    fresh = copy.deepcopy(model)
    got = fn(model, x.clone(), baseline.clone(), steps)
    return {"got": observe(got), "changes": _changes(model, fresh, "your integrated_gradients")}


def _judge_integrated_gradients(observed, seed=None) -> str:
    _untouched(observed)
    model, x, baseline, steps = _integrated_gradients_case(seed)
    expected = attribution.integrated_gradients(model, x, 0, baseline=baseline, steps=steps)
    alphas = (torch.arange(steps) + 0.5) / steps
    mean_gradient = sum(
        attribution.gradient(model, baseline + a * (x - baseline), 0) for a in alphas
    )
    mean_gradient = mean_gradient / steps
    left = (
        sum(
            attribution.gradient(model, baseline + (k / steps) * (x - baseline), 0)
            for k in range(steps)
        )
        * (x - baseline)
        / steps
    )
    mistakes = {
        "the mean gradient along the path, without the factor (x - x')": mean_gradient,
        "the left Riemann sum (alpha_k = k / m instead of (k + 1/2) / m)": left,
        "the sum of the gradients times (x - x') without dividing by steps": expected * steps,
        "the gradient at x times (x - x')": attribution.gradient(model, x, 0) * (x - baseline),
    }
    _compare(
        observed["got"],
        expected,
        "integrated gradients",
        "IG_i = (x_i - x'_i) · (1/m) Σ_k ∂f(x' + α_k (x - x'))/∂x_i with α_k = (k + 1/2)/m.",
        mistakes,
        lambda index: f"example {index[0]}, input {index[1]}",
    )
    return "integrated gradients match attribution.integrated_gradients."


check_integrated_gradients = Check(
    _run_integrated_gradients,
    _judge_integrated_gradients,
    library=["lecture_lib.attribution.integrated_gradients"],
)


def _occlusion_case(window: int, stride: int, seed: int | None):
    """``(model, image, target, baseline)``; ``64 - window`` must be a multiple of ``stride``."""
    if (64 - window) % stride:
        raise ValueError(
            f"check_occlusion: 64 - window must be a multiple of stride, got {window=}, {stride=}."
        )
    images, labels = _shapes(seed or 0, 1)
    target = int(labels[0] if seed is None else _targets(labels, seed)[0])
    return load_shapes_net(), images[0], target, 0.5


def _run_occlusion(fn: Callable, window: int = 16, stride: int = 8, seed: int | None = None):
    """``fn(model, image, target, window, stride, baseline)`` returns the occlusion map ``[H, W]``
    of one image; compared with ``perturbation.occlusion``. ``64 - window`` must be a multiple
    of ``stride`` (the windows start at ``range(0, 64 - window + 1, stride)``)."""
    model, image, target, baseline = _occlusion_case(window, stride, seed)
    fresh = load_shapes_net()
    got = fn(model, image.clone(), target, window, stride, baseline)
    return {"got": observe(got), "changes": _changes(model, fresh, "your occlusion")}


def _judge_occlusion(observed, window: int = 16, stride: int = 8, seed=None) -> str:
    _untouched(observed)
    model, image, target, baseline = _occlusion_case(window, stride, seed)
    expected = perturbation.occlusion(model, image, target, window, stride, baseline)
    height, width = image.shape[1:]
    rows = perturbation.window_positions(height, window, stride)
    cols = perturbation.window_positions(width, window, stride)
    counts = torch.tensor(
        [
            [
                sum(r <= i < r + window for r in rows) * sum(c <= j < c + window for c in cols)
                for j in range(width)
            ]
            for i in range(height)
        ],
        dtype=expected.dtype,
    )
    mistakes = {
        "the sum of the drops (not divided by the number of windows covering the pixel)": (
            expected * counts
        ),
        "f(occluded) - f(x), the opposite sign": -expected,
    }
    if target != 0:
        mistakes["the map of class 0 (check the target)"] = perturbation.occlusion(
            model, image, 0, window, stride, baseline
        )
    _compare(
        observed["got"],
        expected,
        f"occlusion (window {window}, stride {stride})",
        "A_ij = mean over the windows w that cover (i, j) of f(x) - f(x with w set to the "
        "baseline), f the target's score (the logit).",
        mistakes,
        _pixel,
    )
    return f"occlusion map (window {window}, stride {stride}) matches perturbation.occlusion."


check_occlusion = Check(
    _run_occlusion, _judge_occlusion, library=["lecture_lib.perturbation.occlusion"]
)
