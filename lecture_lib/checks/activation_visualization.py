"""Checks of Part 1, activation visualization: the feature maps of chosen layers (forward
hooks) and the receptive field of a unit, worked out by hand."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from .. import activations, answer_calls
from ..models import load_shapes_net
from .core import (
    Check,
    _array,
    _changes,
    _compare,
    _pixel,
    _scalar,
    _shapes,
    _untouched,
    observe,
)


def _run_feature_maps(fn: Callable, layers=("relu1", "conv2", "relu4"), seed: int | None = None):
    """``fn(model, images, layers)`` returns ``{layer name: output}`` from one forward pass with
    forward hooks, and removes its hooks; compared with ``activations.feature_maps``."""
    model, fresh = load_shapes_net(), load_shapes_net()
    images, _ = _shapes(seed or 0, 2)
    got = fn(model, images.clone(), list(layers))
    observed = {"changes": _changes(model, fresh, "your function")}
    if not isinstance(got, dict):
        observed["type"] = type(got).__name__
        return observed
    observed["maps"] = {str(name): observe(value) for name, value in got.items()}
    return observed


def _judge_feature_maps(observed, layers=("relu1", "conv2", "relu4"), seed=None) -> str:
    _untouched(observed)
    if "maps" not in observed:
        raise AssertionError(
            f"expected a dict {{layer name: feature map}}, got a {observed['type']}."
        )
    got, layers = observed["maps"], list(layers)
    if sorted(got) != sorted(layers):
        hint = ""
        if len(got) < len(layers):
            hint = (
                " If you register the hooks in a loop: a hook defined inside the loop looks up "
                "the loop variable when it runs, after the loop ended, so every hook stores "
                "under the last name. Make each hook in a function, def keep(name): ..."
            )
        raise AssertionError(
            f"the dict's keys are {sorted(got)}, expected the requested layers "
            f"{sorted(layers)}.{hint}"
        )
    model = load_shapes_net()
    images, _ = _shapes(seed or 0, 2)
    expected = activations.feature_maps(model, images, layers)
    inputs = _layer_inputs(model, images, layers)
    for name in layers:
        value = _array(got[name], f"the map of {name!r}")
        mistakes = {f"the output of layer {other!r}": expected[other] for other in layers}
        mistakes[f"the *input* of {name!r} (a forward hook gets (module, input, output))"] = inputs[
            name
        ]
        _compare(
            value,
            expected[name],
            f"feature map of {name!r}",
            f"the map of a layer is what the layer returns in the forward pass, "
            f"X_{{n+1}} for {name!r}.",
            mistakes,
            _pixel,
        )
    return (
        f"your feature maps of {', '.join(layers)} match activations.feature_maps; no hooks left."
    )


check_feature_maps = Check(
    _run_feature_maps, _judge_feature_maps, library=["lecture_lib.activations.feature_maps"]
)


def _layer_inputs(model: nn.Module, images: torch.Tensor, layers) -> dict[str, torch.Tensor]:
    """What each named layer receives in the forward pass (to recognise a hook that kept it)."""
    captured: dict[str, torch.Tensor] = {}

    def keep(name: str):
        def hook(_module, inputs, _output):
            captured[name] = inputs[0].detach()

        return hook

    handles = [model.get_submodule(name).register_forward_hook(keep(name)) for name in layers]
    try:
        with torch.no_grad():
            model(images)
    finally:
        for handle in handles:
            handle.remove()
    return captured


@answer_calls.recorded
def receptive_fields(model: nn.Module) -> dict[str, int]:
    r"""The side of the input square that one unit of each conv / max-pool layer sees:

    .. math:: r_l = r_{l-1} + (k_l - 1)\, j_{l-1}, \qquad j_l = j_{l-1}\, s_l, \qquad r_0 = j_0 = 1

    (k: kernel size, s: stride, j: the distance in input pixels between neighbouring units).
    """
    r, j, fields = 1, 1, {}
    for name, module in model.named_modules():
        if isinstance(module, (nn.Conv2d, nn.MaxPool2d)):
            k, s = module.kernel_size, module.stride
            k, s = (k[0] if isinstance(k, tuple) else k), (s[0] if isinstance(s, tuple) else s)
            r, j = r + (k - 1) * j, j * s
            fields[name] = r
    return fields


def _run_receptive_fields(answers: dict) -> dict:
    """``answers`` ``{layer: side in pixels}`` for every conv and pool layer of ShapesNet.
    A by-hand answer: a wrong one gets a hint, not the number."""
    if not isinstance(answers, dict):
        return {"type": type(answers).__name__}
    return {"answers": {str(name): _scalar(value) for name, value in answers.items()}}


def _judge_receptive_fields(observed) -> str:
    if "answers" not in observed:
        raise AssertionError(
            f"expected a dict {{layer: side in pixels}}, got a {observed['type']}."
        )
    answers = observed["answers"]
    model = load_shapes_net()
    expected = receptive_fields(model)
    missing = [name for name in expected if name not in answers]
    if missing:
        raise AssertionError(f"give a receptive field for every layer; missing: {missing}.")
    jump = 1
    for name, module in model.named_modules():
        if name not in expected:
            continue
        if answers[name] != expected[name]:
            given = answers[name]
            given = given["repr"] if isinstance(given, dict) else repr(given)
            k = module.kernel_size if isinstance(module.kernel_size, int) else module.kernel_size[0]
            raise AssertionError(
                f"{name}: {given} is not right. r_l = r_{{l-1}} + (k_l - 1) · j_{{l-1}}: "
                f"{name} has k = {k}, and the units of the layer below it lie j = {jump} pixels "
                "apart in the image (each 2 x 2 pooling with stride 2 doubles j)."
            )
        jump *= module.stride if isinstance(module.stride, int) else module.stride[0]
    return (
        f"receptive fields correct: a unit of conv4 sees {expected['conv4']} x "
        f"{expected['conv4']} pixels of the 64 x 64 image."
    )


# Both paths a student can import it by (the grader reads the imports); the package's name
# last, so that the note of a call names it.
check_receptive_fields = Check(
    _run_receptive_fields,
    _judge_receptive_fields,
    library=[
        "lecture_lib.checks.activation_visualization.receptive_fields",
        "lecture_lib.checks.receptive_fields",
    ],
)
