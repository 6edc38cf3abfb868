"""Checks beyond the lecture: Grad-CAM, SmoothGrad, and the signed gradient step that makes a
fooling image."""

from __future__ import annotations

import functools
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from .. import attribution, fooling
from ..data import CLASSES
from ..models import load_shapes_net
from .core import (
    Check,
    _array,
    _changes,
    _compare_lazily,
    _images_case,
    _pixel,
    _score_gradient,
    _shapes,
    _untouched,
    observe,
)

CONV_LAYERS = ("conv1", "conv2", "conv3", "conv4")


def _check_conv_layer(layer) -> None:
    if layer not in CONV_LAYERS:
        raise ValueError(f"check_grad_cam: layer must be one of {CONV_LAYERS}, got {layer!r}.")


def _run_grad_cam(fn: Callable, layer: str = "conv4", seed: int | None = None) -> dict:
    """``fn(model, images, target, layer)`` returns Grad-CAM ``[N, H, W]`` of ShapesNet's
    ``layer``, from forward and backward hooks that it removes afterwards; compared with
    ``attribution.grad_cam(model, images, target, layer=layer)``."""
    _check_conv_layer(layer)
    model, images, target = _images_case(seed)
    fresh = load_shapes_net()
    got = fn(model, images.clone(), target.clone(), layer)
    return {"got": observe(got), "changes": _changes(model, fresh, "your grad_cam")}


def _layer_maps_and_gradients(model, images, target, layer):
    """A and dS_c/dA of ``layer`` (plain autograd with a forward hook), to name the mistakes."""
    kept = []
    handle = model.get_submodule(layer).register_forward_hook(lambda _m, _i, out: kept.append(out))
    try:
        x = images.clone().requires_grad_(True)
        scores = model(x)
    finally:
        handle.remove()
    (grads,) = torch.autograd.grad(scores.gather(1, target[:, None]).sum(), kept[0])
    return kept[0].detach(), grads


def _judge_grad_cam(observed, layer: str = "conv4", seed=None) -> str:
    _check_conv_layer(layer)
    _untouched(observed)
    model, images, target = _images_case(seed)
    expected = attribution.grad_cam(model, images, target, layer=layer)
    got = _array(observed["got"], "your grad_cam")
    size = tuple(images.shape[-2:])
    if got.ndim == 3 and len(got) == len(images) and got.shape[1] < size[0]:
        raise AssertionError(
            f"your Grad-CAM has the layer's resolution, {got.shape[1]} x {got.shape[2]}; enlarge "
            f"it to the image's {size[0]} x {size[1]} pixels with bilinear interpolation: "
            "F.interpolate(cam[:, None], size=(H, W), mode='bilinear', align_corners=False)[:, 0]."
        )
    _compare_lazily(
        got,
        expected,
        f"Grad-CAM of {layer}",
        "alpha_k = mean over (i, j) of dS_c/dA^k_ij, L = ReLU(Σ_k alpha_k A^k), enlarged "
        "bilinearly (align_corners=False) to the image.",
        functools.partial(_grad_cam_mistakes, model, images, target, layer, expected),
        _pixel,
    )
    return f"your Grad-CAM of {layer} matches attribution.grad_cam; no hooks left."


def _grad_cam_mistakes(model, images, target, layer: str, expected) -> dict:
    maps, grads = _layer_maps_and_gradients(model, images, target, layer)
    h, w = maps.shape[-2:]

    def enlarge(cam, mode="bilinear", align_corners=False):
        options = {"align_corners": align_corners} if mode == "bilinear" else {}
        return nn.functional.interpolate(
            cam[:, None], size=tuple(images.shape[-2:]), mode=mode, **options
        )[:, 0]

    weighted = (grads.mean(dim=(2, 3), keepdim=True) * maps).sum(dim=1)
    return {
        "Grad-CAM without the ReLU (keep only what speaks for the class: ReLU of the sum)": (
            enlarge(weighted)
        ),
        "the gradient at each position instead of its average over positions (that is "
        "HiResCAM; Grad-CAM's weight alpha_k is one number per channel)": attribution.grad_cam(
            model, images, target, layer=layer, elementwise=True
        ),
        f"the gradients summed over positions instead of averaged (a factor {h * w})": (
            expected * h * w
        ),
        "nearest-neighbour enlargement (use mode='bilinear')": enlarge(
            weighted.clamp(min=0), mode="nearest"
        ),
        "bilinear enlargement with align_corners=True (use align_corners=False)": enlarge(
            weighted.clamp(min=0), align_corners=True
        ),
        f"the maps of relu{layer[-1]}, after the ReLU, instead of {layer}'s own output": (
            attribution.grad_cam(model, images, target, layer=f"relu{layer[-1]}")
        ),
        "the Grad-CAM of the predicted class (use the given target)": attribution.grad_cam(
            model, images, layer=layer
        ),
    }


check_grad_cam = Check(
    _run_grad_cam,
    _judge_grad_cam,
    library=[
        "lecture_lib.attribution.grad_cam",
        "lecture_lib.attribution.guided_grad_cam",
        "lecture_lib.attribution._grad_cam",
        "lecture_lib.attribution._maps_and_gradients",
    ],
)


SMOOTHGRAD_METHODS = ("gradient", "saliency", "input_x_gradient", "guided_backprop")


def _smoothgrad_case(method: str, seed: int | None):
    """``(model, images, target, noise [S, N, C, H, W], the method)``: noise of standard
    deviation 15 % of each image's range."""
    if method not in SMOOTHGRAD_METHODS:
        raise ValueError(
            f"check_smoothgrad: method must be one of {SMOOTHGRAD_METHODS}, got {method!r}."
        )
    model, images, target = _images_case(seed, n=2)
    generator = torch.Generator().manual_seed(seed or 0)
    samples = 4 if seed is None else int(torch.randint(3, 7, (1,), generator=generator))
    spread = images.flatten(1).amax(dim=1) - images.flatten(1).amin(dim=1)
    sigma = 0.15 * spread.view(1, -1, 1, 1, 1)
    noise = sigma * torch.randn(samples, *images.shape, generator=generator)
    return model, images, target, noise, getattr(attribution, method)


def _run_smoothgrad(fn: Callable, method: str = "gradient", seed: int | None = None) -> dict:
    """``fn(method, model, images, target, noise)`` returns SmoothGrad, the mean over the
    samples k of ``method(model, images + noise[k], target)``, for the noise
    ``[S, N, C, H, W]`` it is given; compared with a plain loop over the library's method."""
    model, images, target, noise, function = _smoothgrad_case(method, seed)
    fresh = load_shapes_net()
    before = images.clone()
    got = fn(function, model, images, target.clone(), noise.clone())
    return {
        "got": observe(got),
        "in_place": not torch.equal(images, before),
        "changes": _changes(model, fresh, "your smoothgrad"),
    }


def _judge_smoothgrad(observed, method: str = "gradient", seed=None) -> str:
    if observed["in_place"]:
        raise AssertionError(
            "your smoothgrad changed `images` in place; make each noisy copy a new tensor "
            "(images + noise[k]) and leave the images as they came."
        )
    _untouched(observed)
    model, images, target, noise, function = _smoothgrad_case(method, seed)
    maps = torch.stack([function(model, images + e, target) for e in noise])
    samples = len(noise)

    def mistakes() -> dict:
        return {
            f"the sum over the {samples} noisy copies, not divided by their number (average "
            "them)": maps.sum(dim=0),
            "the mean of the squared maps (that is SmoothGrad-Squared)": maps.square().mean(dim=0),
            "the mean of |map| (keep the sign: average the maps themselves)": maps.abs().mean(0),
            "the map of the clean images (add noise[k] to the images)": function(
                model, images, target
            ),
            "the map of the last noisy copy only (accumulate every copy)": maps[-1],
            "the map of the first noisy copy only (accumulate every copy)": maps[0],
        }

    _compare_lazily(
        observed["got"],
        maps.mean(dim=0),
        f"SmoothGrad of attribution.{method}",
        f"M̂(x) = (1/S) Σ_k M(x + ε_k), with ε_k = noise[k] and M = attribution.{method}.",
        mistakes,
        _pixel,
    )
    return f"your SmoothGrad of attribution.{method} over {samples} noisy copies is right."


check_smoothgrad = Check(
    _run_smoothgrad, _judge_smoothgrad, library=["lecture_lib.attribution.smoothgrad"]
)


def _signed_step_cases(seed: int | None):
    """``(model, images, source, target, epsilon)``: the model's classes and a target class
    that differs from each (the same image at two targets when ``seed`` is None)."""
    model = load_shapes_net()
    images, _ = _shapes(seed or 0, 3)
    with torch.no_grad():
        source = model(images).argmax(dim=1)
    generator = torch.Generator().manual_seed(seed or 0)
    if seed is None:
        offset, epsilon = torch.tensor([1, 2, 3]), 4 / 255
    else:
        offset = torch.randint(1, len(CLASSES), (3,), generator=generator)
        epsilon = int(torch.randint(2, 13, (1,), generator=generator)) / 255
    return model, images, source, (source + offset) % len(CLASSES), epsilon


def _run_signed_step(fn: Callable, seed: int | None = None) -> dict:
    """``fn(model, image, target, epsilon)`` returns one signed gradient step towards class
    ``target``, :math:`I + \\varepsilon\\, \\mathrm{sign}(\\partial (S_t - S_c)/\\partial I)` with c
    the model's class of ``image``, clamped to [0, 1]; compared with
    ``fooling.fast_gradient_sign(model, image, target, epsilon=epsilon).image``."""
    model, images, _, target, epsilon = _signed_step_cases(seed)
    fresh = load_shapes_net()
    cases = []
    for image, t in zip(images, target):
        before = image.clone()
        got = fn(model, image, int(t), epsilon)
        cases.append({"got": observe(got), "in_place": not torch.equal(image, before)})
    return {"cases": cases, "changes": _changes(model, fresh, "your signed_step")}


def _margin_gradient(model, image, source: int, target: int) -> torch.Tensor:
    """g = d(S_t - S_c)/dI of one image, plain autograd."""
    x = image[None].clone().requires_grad_(True)
    scores = model(x)[0]
    (g,) = torch.autograd.grad(scores[target] - scores[source], x)
    return g[0]


def _judge_signed_step(observed, seed=None) -> str:
    _untouched(observed)
    model, images, source, target, epsilon = _signed_step_cases(seed)
    for i, (image, c, t, case) in enumerate(zip(images, source, target, observed["cases"])):
        if case["in_place"]:
            raise AssertionError(
                "your signed_step changed `image` in place; return a new tensor and leave the "
                "image as it came."
            )
        got = _array(case["got"], "your signed_step")
        expected = fooling.fast_gradient_sign(model, image, int(t), epsilon=epsilon).image
        g = _margin_gradient(model, image, int(c), int(t))
        if got.shape == tuple(expected.shape):
            # Where g is nearly 0, rounding may decide its sign: any of the three steps is right.
            unsure = (g.abs() <= 1e-5 * g.abs().max()).numpy()
            allowed = [(image + sign * epsilon).clamp(0, 1).numpy() for sign in (-1.0, 0.0, 1.0)]
            fits = np.any([np.abs(got - a) <= 1e-6 for a in allowed], axis=0)
            expected = torch.from_numpy(np.where(unsure & fits, got, expected.double().numpy()))

        def mistakes(image=image, t=t, g=g) -> dict:
            w_t = _score_gradient(model, image[None], torch.tensor([int(t)]))[0]
            return {
                "the gradient of S_t alone (step along the margin S_t - S_c, c the model's "
                "class)": (image + epsilon * w_t.sign()).clamp(0, 1),
                "a step away from the target (I - ε sign(g); the step raises S_t - S_c)": (
                    (image - epsilon * g.sign()).clamp(0, 1)
                ),
                "ε times the gradient itself instead of its sign": (image + epsilon * g).clamp(
                    0, 1
                ),
                "the step without clamping to [0, 1] (an image's pixels stay in [0, 1])": (
                    image + epsilon * g.sign()
                ),
            }

        _compare_lazily(
            got,
            expected,
            f"signed step (image {i}, class {int(c)} -> {int(t)}, ε = {epsilon:.4g})",
            "I = clamp(I_0 + ε sign(g), 0, 1), g = ∂(S_t - S_c)/∂I at I_0, c = the class the "
            "model gives I_0.",
            mistakes,
            lambda index: f"channel {index[0]}, pixel {index[1:]}",
        )
    return "your signed gradient steps match fooling.fast_gradient_sign."


check_signed_step = Check(
    _run_signed_step,
    _judge_signed_step,
    library=[
        "lecture_lib.fooling.fast_gradient_sign",
        "lecture_lib.fooling._margin_gradient",
        "lecture_lib.fooling.taylor_estimate",
    ],
)
