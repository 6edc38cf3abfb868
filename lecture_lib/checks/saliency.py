"""Checks of Part 2, the gradient methods: saliency (Simonyan et al.), input x gradient, and a
step of class model visualization (gradient ascent on the class score)."""

from __future__ import annotations

from collections.abc import Callable

import torch

from .. import attribution
from ..data import CLASSES
from ..models import load_shapes_net
from .core import (
    Check,
    _changes,
    _compare,
    _images_case,
    _pixel,
    _score_gradient,
    _untouched,
    observe,
)


def _run_on_images(fn: Callable, seed: int | None, what: str) -> dict:
    """``fn(model, images, target)`` on the case of ``seed``: what it returned, what it changed."""
    model, images, target = _images_case(seed)
    fresh = load_shapes_net()
    got = fn(model, images.clone(), target.clone())
    return {"got": observe(got), "changes": _changes(model, fresh, what)}


def _run_saliency(fn: Callable, seed: int | None = None) -> dict:
    """``fn(model, images, target)`` returns ``[N, H, W]``, :math:`M_{ij} = \\max_c |w_{h(i,j,c)}|`."""
    return _run_on_images(fn, seed, "your saliency")


def _judge_saliency(observed, seed=None) -> str:
    _untouched(observed)
    model, images, target = _images_case(seed)
    w = attribution.gradient(model, images, target)
    mistakes = {
        "the gradient itself, one map per colour channel (take the max over channels, dim=1)": w,
        "the sum over colour channels of |w| (the lecture takes the max)": w.abs().sum(1),
        "the mean over colour channels of |w| (the lecture takes the max)": w.abs().mean(1),
        "the max over channels of w without the absolute value": w.amax(1),
        "the gradient of the softmax probability (use the score S_c, the logit)": (
            _score_gradient(model, images, target, probability=True).abs().amax(1)
        ),
        "the saliency of the predicted class (use the given target)": attribution.saliency(
            model, images
        ),
    }
    _compare(
        observed["got"],
        attribution.saliency(model, images, target),
        "saliency",
        "M_ij = max_c |w_h(i,j,c)|, w = dS_c/dI at I_0 (the score, not the probability).",
        mistakes,
        _pixel,
    )
    return "saliency maps match attribution.saliency (max over channels of |dS_c/dI|)."


check_saliency = Check(_run_saliency, _judge_saliency, library=["lecture_lib.attribution.saliency"])


def _run_input_x_gradient(fn: Callable, seed: int | None = None) -> dict:
    """``fn(model, images, target)`` returns :math:`I \\odot \\partial S_c/\\partial I`, ``[N, C, H, W]``."""
    return _run_on_images(fn, seed, "your input_x_gradient")


def _judge_input_x_gradient(observed, seed=None) -> str:
    _untouched(observed)
    model, images, target = _images_case(seed)
    expected = attribution.input_x_gradient(model, images, target)
    w = attribution.gradient(model, images, target)
    mistakes = {
        "the gradient alone (multiply by the input)": w,
        "|input x gradient| (keep the sign)": expected.abs(),
        "input x gradient summed over colour channels (keep [N, C, H, W])": expected.sum(1),
    }
    _compare(
        observed["got"],
        expected,
        "input x gradient",
        "the contribution of pixel value x_i is x_i · dS_c/dx_i (for y = w^T x: w_i x_i).",
        mistakes,
        _pixel,
    )
    return "input x gradient matches attribution.input_x_gradient."


check_input_x_gradient = Check(
    _run_input_x_gradient,
    _judge_input_x_gradient,
    library=["lecture_lib.attribution.input_x_gradient"],
)


def _ascent_case(seed: int | None):
    """``(model, image, target, l2, lr)``."""
    generator = torch.Generator().manual_seed(seed or 0)
    image = torch.rand(3, 64, 64, generator=generator)
    target = 1 if seed is None else int(torch.randint(0, len(CLASSES), (1,), generator=generator))
    l2, lr = (
        (0.05, 0.1)
        if seed is None
        else (0.2 * float(torch.rand(1, generator=generator)) + 0.01, 0.3)
    )
    return load_shapes_net(), image, target, l2, lr


def _run_ascent_step(fn: Callable, seed: int | None = None) -> dict:
    """``fn(model, image, target, l2, lr)`` returns the image after one step of gradient ascent
    on :math:`S_c(I) - \\lambda \\|I\\|_2^2`: :math:`I + lr\\,(\\partial S_c/\\partial I - 2\\lambda I)`."""
    model, image, target, l2, lr = _ascent_case(seed)
    fresh, before = load_shapes_net(), image.clone()
    got = fn(model, image, target, l2, lr)
    return {
        "got": observe(got),
        "in_place": not torch.equal(image, before),
        "changes": _changes(model, fresh, "your ascent_step"),
    }


def _judge_ascent_step(observed, seed=None) -> str:
    if observed["in_place"]:
        raise AssertionError(
            "your ascent_step changed `image` in place; return a new tensor and leave the input "
            "as it came (e.g. image.detach().clone().requires_grad_(True) before the forward pass)."
        )
    _untouched(observed)
    model, image, target, l2, lr = _ascent_case(seed)
    t = torch.tensor([target])
    g = _score_gradient(model, image[None], t)[0]
    p = _score_gradient(model, image[None], t, probability=True)[0]
    mistakes = {
        "a descent step, I - lr · gradient (ascent adds it)": image - lr * (g - 2 * l2 * image),
        "the gradient without the factor 2 of d(λ||I||²)/dI = 2λI": image + lr * (g - l2 * image),
        "+ λ||I||² (the penalty is subtracted)": image + lr * (g + 2 * l2 * image),
        "ascent on S_c alone, without the L2 term": image + lr * g,
        "the softmax probability instead of the score S_c": image + lr * (p - 2 * l2 * image),
    }
    _compare(
        observed["got"],
        image + lr * (g - 2 * l2 * image),
        "ascent step",
        "I_new = I + lr · ∂/∂I [S_c(I) - λ||I||²] = I + lr · (∂S_c/∂I - 2λ I).",
        mistakes,
        lambda index: f"channel {index[0]}, pixel {index[1:]}",
    )
    return "one step of class model ascent is right: I + lr · (dS_c/dI - 2λI)."


check_ascent_step = Check(
    _run_ascent_step, _judge_ascent_step, library=["lecture_lib.class_model.visualize"]
)
