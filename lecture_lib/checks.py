r"""Checks for the exercises: each one runs a student's function on a few cases and compares it
with the library's method (or with the lecture's worked example).

A check prints one line starting with ``✓`` when everything agrees. Otherwise it raises an
``AssertionError`` that says what is wrong, where (which entry, pixel or layer), what was
expected, and the lecture's formula; when the answer matches a typical mistake (the gradient
rule handed in for DeconvNet, the sum over colour channels instead of the max, ...) the
message names it.

    >>> checks.check_relu_backward(my_relu_backward, rule="deconvnet")
    ✓ relu_backward follows the DeconvNet rule on the lecture's 3x3 example.

``seed=None`` checks the lecture's example or a fixed case; a ``seed`` draws fresh random cases
(the hidden tests of the exercises use those).

Every check is written in two halves (a ``Check``): ``run`` calls the student's code on the
cases and returns what came back, as plain numbers, strings and arrays; ``judge`` computes the
reference with the library and compares. In a student's notebook both halves run at once.
When grading, only ``run`` happens in the student's kernel; what it observed is sent out, and
``judge`` decides in the grader's own process (``lecture_lib.grading``), with the same
messages. Nothing the student's code does inside its kernel can change a verdict.
"""

from __future__ import annotations

import copy
import functools
import importlib
import inspect
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import numpy as np
import torch
from torch import nn

from . import activations, attribution, evaluate, fooling, perturbation, rules
from .data import CLASSES, make_shapes
from .models import load_shapes_net
from .saturation import SaturatingToy

# The lecture's worked example ("Difference in backpropagating through ReLU").
LECTURE_FORWARD_INPUT = np.array([[1, -1, 5], [2, -5, -7], [-3, 2, 4]])
LECTURE_GRAD_FROM_ABOVE = np.array([[-2, 3, -1], [6, -3, 1], [2, -1, 3]])

RULE_NAMES = {"gradient": "gradient", "deconvnet": "DeconvNet", "guided": "guided backprop"}
RULE_TEXT = {
    "gradient": "the gradient rule keeps R^{l+1} where the forward input f^l > 0: "
    "R^l = (f^l > 0) · R^{l+1}",
    "deconvnet": "the DeconvNet rule keeps R^{l+1} where R^{l+1} > 0, whatever the forward "
    "input: R^l = (R^{l+1} > 0) · R^{l+1}",
    "guided": "guided backprop keeps R^{l+1} where both f^l > 0 and R^{l+1} > 0: "
    "R^l = (f^l > 0) · (R^{l+1} > 0) · R^{l+1}",
}


# --- a check in two halves -----------------------------------------------------------------------


class Check:
    """One question's check: ``run`` (the student's side) and ``judge`` (the reference side).

    ``run(answer, *options, seed=None)`` calls the student's ``answer`` on the cases of
    ``seed`` and returns what it observed: plain data (numbers, strings, lists, dicts, numpy
    arrays) that can leave a kernel. ``judge(observed, *options, seed=None)`` recomputes the
    cases and the references, and returns the ✓ line or raises an ``AssertionError``.

    ``library`` names the library functions that *are* this question's answer (for example
    ``"lecture_lib.attribution.saliency"``); an answer that only calls one of them earns no
    points when grading, and the instant check says so.

    Calling the check runs both halves: ``check_relu_backward(fn, rule="deconvnet")``.
    """

    def __init__(self, run: Callable[..., dict], judge: Callable[..., str], library=()) -> None:
        self.run, self.judge, self.library = run, judge, tuple(library)
        functools.update_wrapper(self, run)  # name, docstring and signature of the run half

    def options(self, *args, **kwargs) -> tuple[object, dict]:
        """The student's answer and the check's options by name (defaults filled in)."""
        bound = inspect.signature(self.run).bind(*args, **kwargs)
        bound.apply_defaults()
        arguments = dict(bound.arguments)
        first = next(iter(arguments))
        return arguments.pop(first), arguments

    def __call__(self, *args, **kwargs) -> None:
        answer, options = self.options(*args, **kwargs)
        with library_calls(self.library) as called:
            observed = self.run(answer, **options)
        _ok(self.judge(observed, **options))
        if called:
            print(library_note(called))


def library_note(called: list[str]) -> str:
    names = ", ".join(sorted(set(called)))
    return (
        f"Note: your answer calls {names}, the library's own answer to this question. The check "
        "passes, but grading gives no points for it: write the computation yourself."
    )


def library_functions(names) -> dict:
    """``{code object: dotted name}`` of the library functions called ``names``."""
    codes = {}
    for name in names:
        module, _, attribute = name.rpartition(".")
        function = inspect.unwrap(getattr(importlib.import_module(module), attribute))
        code = getattr(function, "__code__", None)
        if code is not None:
            codes[code] = name
    return codes


@contextmanager
def library_calls(names) -> Iterator[list[str]]:
    """Inside the block, record each call of the library functions ``names`` (by their code
    objects, so an alias or a ``from ... import`` is caught too)."""
    called: list[str] = []
    codes = library_functions(names)
    if not codes:
        yield called
        return
    previous = sys.getprofile()

    def profile(frame, event, _arg):
        if event == "call" and frame.f_code in codes:
            called.append(codes[frame.f_code])

    sys.setprofile(profile)
    try:
        yield called
    finally:
        sys.setprofile(previous)


# --- helpers ------------------------------------------------------------------------------------


def _ok(message: str) -> None:
    print("✓ " + message)


def _number(value) -> str:
    value = float(value)
    return str(int(value)) if value.is_integer() else f"{value:.4g}"


def observe(value):
    """What a student's code returned, as data that can leave the kernel: a float64 array, or a
    note of its type (``{"returned": "NoneType"}``) when it is not a numeric array."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().double().numpy()
    if value is None:
        return {"returned": "None"}
    try:
        array = np.asarray(value, dtype=float)
    except (TypeError, ValueError, RuntimeError):
        return {"returned": type(value).__name__}
    return array


def _scalar(value):
    """A by-hand answer's entry as a plain number or string (its repr for anything else)."""
    if isinstance(value, (np.generic, torch.Tensor)) and np.size(value) == 1:
        value = value.item()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return {"repr": repr(value)[:200]}


def _array(value, what: str) -> np.ndarray:
    """A result as a float numpy array, or a message about what came back."""
    if isinstance(value, dict) and "returned" in value:
        if value["returned"] == "None":
            raise AssertionError(f"{what} returned None: did you forget the `return` statement?")
        raise AssertionError(
            f"{what} returned a {value['returned']}, expected an array or a tensor."
        )
    if value is None:
        raise AssertionError(f"{what} returned None: did you forget the `return` statement?")
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().double().numpy()
    try:
        return np.asarray(value, dtype=float)
    except (TypeError, ValueError) as error:
        raise AssertionError(
            f"{what} returned a {type(value).__name__}, expected an array or a tensor."
        ) from error


def _close(got: np.ndarray, expected: np.ndarray, rtol: float = 1e-4) -> np.ndarray:
    """Entrywise agreement up to rounding, on the scale of the expected values."""
    scale = float(np.abs(expected).max()) if expected.size else 0.0
    return np.abs(got - expected) <= rtol * np.abs(expected) + 1e-5 * scale + 1e-7


def _matches(got: np.ndarray, candidate) -> bool:
    candidate = _array(candidate, "candidate")
    return got.shape == candidate.shape and bool(_close(got, candidate).all())


def _compare(got, expected, what: str, formula: str, mistakes=None, where=None) -> None:
    """Raise a helpful AssertionError unless ``got`` equals ``expected`` up to rounding.

    ``mistakes`` maps a description to the result that mistake gives; a match is named.
    ``where`` turns an index tuple into words (default: ``entry (i, j)``).
    """
    got, expected = _array(got, what), _array(expected, "expected")
    if got.shape != expected.shape:
        raise AssertionError(f"{what}: got shape {got.shape}, expected {expected.shape}. {formula}")
    if not np.isfinite(got).all():
        raise AssertionError(f"{what}: the result holds NaN or infinite values.")
    bad = ~_close(got, expected)
    if not bad.any():
        return
    index = tuple(int(i) for i in np.argwhere(bad)[0])
    place = where(index) if where else f"entry {index}"
    message = (
        f"{what}, {place}: got {_number(got[index])}, expected {_number(expected[index])} "
        f"({int(bad.sum())} of {bad.size} values differ) — {formula}"
    )
    for description, result in (mistakes or {}).items():
        if _matches(got, result):
            message += f"\nYour result is exactly what {description} gives."
            break
    raise AssertionError(message)


def _pixel(index: tuple[int, ...]) -> str:
    """``(n, c, i, j)`` or ``(n, i, j)`` in words."""
    if len(index) == 4:
        return f"image {index[0]}, channel {index[1]}, pixel {index[2:]}"
    if len(index) == 3:
        return f"image {index[0]}, pixel {index[1:]}"
    return f"pixel {index}"


def _hooks_left(model: nn.Module) -> list[str]:
    """The names of the modules that still carry a hook."""
    kinds = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")
    return [
        name or "the model itself"
        for name, module in model.named_modules()
        if any(getattr(module, kind, None) for kind in kinds)
    ]


def _changes(model: nn.Module, fresh: nn.Module, what: str) -> str | None:
    """What a student's function changed in the model it received, in words (None: nothing)."""
    left = _hooks_left(model)
    if left:
        return (
            f"{what} left hooks on {', '.join(left)}: remove every hook you register "
            "(handle = layer.register_..._hook(...); ...; handle.remove(), in a `finally:` block "
            "so that it also happens when an error is raised)."
        )
    layers = [(name, type(module)) for name, module in model.named_modules()]
    if layers != [(name, type(module)) for name, module in fresh.named_modules()]:
        return (
            f"{what} changed the layers of the model it was given: work on a copy, "
            "new = copy.deepcopy(model), and leave `model` as it came."
        )
    for (name, module), original in zip(model.named_modules(), fresh.modules()):
        if module.training != original.training:
            return (
                f"{what} switched {name or 'the model'} to {'train' if module.training else 'eval'}"
                " mode; leave the model's mode as it came."
            )
    for (name, p), q in zip(model.named_parameters(), fresh.parameters()):
        if not torch.equal(p.detach(), q.detach()) or p.requires_grad != q.requires_grad:
            return f"{what} changed the model's parameter {name!r}; leave it as it came."
    return None


def _untouched(observed: dict) -> None:
    """Raise what ``_changes`` found, if anything."""
    if observed.get("changes"):
        raise AssertionError(observed["changes"])


def _shapes(seed: int, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    images, labels, _ = make_shapes(n, seed=seed)
    return images, labels


def _targets(labels: torch.Tensor, seed: int | None) -> torch.Tensor:
    """The true classes, the last one changed to another class (so that the predicted class
    cannot pass for the target), or with a seed random classes."""
    if seed is None:
        target = labels.clone()
        target[-1] = (target[-1] + 1) % len(CLASSES)
        return target
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, len(CLASSES), labels.shape, generator=generator)


# --- Part 1: activations ------------------------------------------------------------------------


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


check_receptive_fields = Check(
    _run_receptive_fields, _judge_receptive_fields, library=["lecture_lib.checks.receptive_fields"]
)


# --- Part 2: perturbation and saturation -------------------------------------------------------


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


# --- Part 2: saliency, input x gradient, class model -----------------------------------------


def _score_gradient(model, images, target, probability=False) -> torch.Tensor:
    """d S_c / d I (or d P_c / d I) for each image, plain autograd."""
    x = images.clone().requires_grad_(True)
    out = model(x)
    out = out.softmax(dim=1) if probability else out
    (grad,) = torch.autograd.grad(out.gather(1, target[:, None]).sum(), x)
    return grad


def _images_case(seed: int | None, n: int = 3):
    """``(model, images, target)``: unseen shapes and their targets."""
    images, labels = _shapes(seed or 0, n)
    return load_shapes_net(), images, _targets(labels, seed)


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


# --- Part 2: DeconvNet and guided backpropagation ----------------------------------------------


def _relu_cases(seed: int | None) -> list[tuple[np.ndarray, np.ndarray]]:
    if seed is None:
        return [(LECTURE_FORWARD_INPUT.copy(), LECTURE_GRAD_FROM_ABOVE.copy())]
    rng = np.random.default_rng(seed)
    shapes = [(3, 3), (2, 5), (2, 3, 4, 4)]
    return [(rng.standard_normal(shape), rng.standard_normal(shape)) for shape in shapes]


def _other_rules(rule: str, x, r) -> dict:
    mistakes = {
        f"the {RULE_NAMES[other]} rule": rules.relu_backward(x, r, other)
        for other in rules.RULES
        if other != rule
    }
    mistakes["the ReLU's forward pass, max(f^l, 0)"] = np.maximum(np.asarray(x), 0)
    return mistakes


def _run_relu_backward(fn: Callable, rule: str, seed: int | None = None) -> dict:
    """``fn(forward_input, grad_output)`` returns :math:`R^l` by ``rule``, for numpy arrays."""
    rules.check_rule(rule)
    cases = []
    for x, r in _relu_cases(seed):
        x_before, r_before = x.copy(), r.copy()
        got = fn(x, r)
        in_place = not (np.array_equal(x, x_before) and np.array_equal(r, r_before))
        cases.append({"got": observe(got), "in_place": in_place})
    return {"cases": cases}


def _judge_relu_backward(observed, rule: str, seed=None) -> str:
    rules.check_rule(rule)
    for (x, r), case in zip(_relu_cases(seed), observed["cases"]):
        if case["in_place"]:
            raise AssertionError(
                "your function changed its input arrays in place; compute a new array "
                "(np.where(mask, grad_output, 0) or grad_output * mask) and leave them unchanged."
            )
        _compare(
            case["got"],
            rules.relu_backward(x, r, rule),
            f"relu_backward ({RULE_NAMES[rule]})",
            RULE_TEXT[rule] + ".",
            _other_rules(rule, x, r),
        )
    case = "the lecture's 3x3 example" if seed is None else "random arrays"
    return f"relu_backward follows the {RULE_NAMES[rule]} rule on {case}."


check_relu_backward = Check(
    _run_relu_backward, _judge_relu_backward, library=["lecture_lib.rules.relu_backward"]
)


def _run_relu_function(fn_class, rule: str, seed: int | None = None) -> dict:
    """``fn_class.apply(x)`` is a ``torch.autograd.Function``: ReLU forward, ``rule`` backward."""
    rules.check_rule(rule)
    if not (isinstance(fn_class, type) and issubclass(fn_class, torch.autograd.Function)):
        return {"not_a_function": repr(fn_class)[:200]}
    cases = []
    for x_np, r_np in _relu_cases(seed):
        x = torch.tensor(x_np, dtype=torch.float64, requires_grad=True)
        r = torch.tensor(r_np, dtype=torch.float64)
        y = fn_class.apply(x)
        case = {
            "forward": observe(y),
            "in_place": not torch.equal(x.detach(), torch.tensor(x_np, dtype=torch.float64)),
            "requires_grad": isinstance(y, torch.Tensor) and y.requires_grad,
        }
        if case["requires_grad"]:
            (grad,) = torch.autograd.grad(y, x, grad_outputs=r)
            case["backward"] = observe(grad)
        cases.append(case)
    return {"name": fn_class.__name__, "cases": cases}


def _judge_relu_function(observed, rule: str, seed=None) -> str:
    rules.check_rule(rule)
    if "not_a_function" in observed:
        raise AssertionError(
            f"expected a subclass of torch.autograd.Function, got {observed['not_a_function']}; "
            "call it as MyReLU.apply(x)."
        )
    for (x_np, r_np), case in zip(_relu_cases(seed), observed["cases"]):
        _compare(
            case["forward"],
            np.maximum(x_np, 0.0),
            "forward",
            "every rule computes the usual ReLU forward, f^{l+1} = max(f^l, 0); only the "
            "backward pass differs.",
        )
        if case["in_place"]:
            raise AssertionError("forward changed its input in place; return a new tensor.")
        if not case["requires_grad"]:
            raise AssertionError(
                "the output does not require grad: compute it inside forward(ctx, x) and call "
                "the function as fn_class.apply(x)."
            )
        _compare(
            case["backward"],
            rules.relu_backward(x_np, r_np, rule),
            f"backward ({RULE_NAMES[rule]})",
            RULE_TEXT[rule] + ". (backward(ctx, grad_output) receives R^{l+1}; save what "
            "you need in forward with ctx.save_for_backward.)",
            _other_rules(rule, x_np, r_np),
        )
    case = "the lecture's 3x3 example" if seed is None else "random tensors"
    return f"{observed['name']}: ReLU forward, {RULE_NAMES[rule]} backward, on {case}."


check_relu_function = Check(
    _run_relu_function,
    _judge_relu_function,
    library=["lecture_lib.rules.relu_backward", "lecture_lib.checks.reference_relu_function"],
)


def reference_relu_function(rule: str) -> type[torch.autograd.Function]:
    """A ``torch.autograd.Function``: ReLU forward, ``rule`` backward (``rules.relu_backward``)."""
    rules.check_rule(rule)

    class RuleReLU(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return x.clamp(min=0)

        @staticmethod
        def backward(ctx, grad_output):
            (x,) = ctx.saved_tensors
            return rules.relu_backward(x, grad_output, rule)

    RuleReLU.__name__ = f"{RULE_NAMES[rule].title().replace(' ', '')}ReLU"
    return RuleReLU


def _nested_model(seed: int) -> nn.Module:
    """A small ConvNet whose ReLUs sit at two depths, to test a replacement that walks the tree."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = nn.Sequential(
            nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.MaxPool2d(4)),
            nn.Sequential(nn.Conv2d(6, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(4)),
            nn.Flatten(),
            nn.Linear(8 * 4 * 4, 16),
            nn.ReLU(),
            nn.Linear(16, len(CLASSES)),
        )
    return model.eval()


def _model_case(seed: int | None):
    """``(model, images, target)``: ShapesNet, or with a seed a small model with nested ReLUs."""
    model = load_shapes_net() if seed is None else _nested_model(seed)
    images, labels = _shapes(seed or 0, 2)
    return model, images, _targets(labels, seed)


def _run_relu_replacement(fn: Callable, rule: str = "deconvnet", seed: int | None = None) -> dict:
    """``fn(model, relu_function)`` returns a copy of ``model`` in which every ``nn.ReLU`` calls
    ``relu_function.apply``; its input gradient must equal ``attribution.backprop(rule=rule)``.
    ``seed`` checks a small model with ReLUs inside nested blocks."""
    model, images, target = _model_case(seed)
    fresh = copy.deepcopy(model)
    new = fn(model, reference_relu_function(rule))
    observed = {
        "same_object": new is model,
        "changes": _changes(model, fresh, "your function"),
        "type": type(new).__name__,
    }
    if isinstance(new, nn.Module) and new is not model:
        observed["relus_left"] = [name for name, m in new.named_modules() if type(m) is nn.ReLU]
        observed["gradient"] = observe(_score_gradient(new, images, target))
    return observed


def _judge_relu_replacement(observed, rule: str = "deconvnet", seed=None) -> str:
    if observed["same_object"]:
        raise AssertionError(
            "your function returned the model it was given: make a copy first, "
            "new = copy.deepcopy(model), and replace the ReLUs of the copy."
        )
    _untouched(observed)
    if "gradient" not in observed:
        raise AssertionError(f"expected the new model (an nn.Module), got {observed['type']}.")
    model, images, target = _model_case(seed)
    left = observed["relus_left"]
    mistakes = {
        "the plain gradient (the ReLUs still backpropagate as usual)": attribution.gradient(
            model, images, target
        )
    }
    _compare(
        observed["gradient"],
        attribution.backprop(model, images, target, rule=rule),
        f"the input gradient of the new model ({RULE_NAMES[rule]} ReLUs)",
        RULE_TEXT[rule]
        + (f". The new model still holds nn.ReLU layers: {', '.join(left)}." if left else "."),
        mistakes,
        _pixel,
    )
    where = "ShapesNet" if seed is None else "a model with ReLUs in nested blocks"
    return (
        f"every ReLU of {where} replaced; its gradient equals attribution.backprop(rule={rule!r})."
    )


check_relu_replacement = Check(
    _run_relu_replacement,
    _judge_relu_replacement,
    library=[
        "lecture_lib.rules.use_rule",
        "lecture_lib.attribution.backprop",
        "lecture_lib.attribution.deconvnet",
        "lecture_lib.attribution.guided_backprop",
    ],
)


def _run_guided_hooks(fn: Callable, seed: int | None = None) -> dict:
    """``fn(model, images, target)`` computes guided backprop with backward hooks on the model's
    ``nn.ReLU`` layers, removed afterwards; compared with ``attribution.guided_backprop``."""
    model, images, target = _model_case(seed)
    fresh = copy.deepcopy(model)
    got = fn(model, images.clone(), target.clone())
    return {
        "got": observe(got),
        "changes": _changes(model, fresh, "your guided_backprop_with_hooks"),
    }


def _judge_guided_hooks(observed, seed=None) -> str:
    _untouched(observed)
    model, images, target = _model_case(seed)
    mistakes = {
        f"the {RULE_NAMES[other]} rule": attribution.backprop(model, images, target, rule=other)
        for other in ("gradient", "deconvnet")
    }
    mistakes["the predicted class's map (use the given target)"] = attribution.guided_backprop(
        model, images
    )
    _compare(
        observed["got"],
        attribution.guided_backprop(model, images, target),
        "guided backprop",
        "R^l = (f^l > 0) · (R^{l+1} > 0) · R^{l+1}. A ReLU's grad_input[0] is already "
        "(f^l > 0) · R^{l+1}; the hook returns it with its negative entries set to 0.",
        mistakes,
        _pixel,
    )
    return "guided backprop with hooks matches attribution.guided_backprop; no hooks left."


check_guided_hooks = Check(
    _run_guided_hooks,
    _judge_guided_hooks,
    library=[
        "lecture_lib.attribution.guided_backprop",
        "lecture_lib.attribution.backprop",
        "lecture_lib.rules.use_rule",
    ],
)


# --- Part 6: evaluating explanations -----------------------------------------------------------


def _compare_lazily(
    got, expected, what: str, formula: str, mistakes: Callable[[], dict], where=None
):
    """``_compare``, with the typical mistakes (``mistakes()``) computed only for a wrong answer."""
    try:
        _compare(got, expected, what, formula, None, where)
    except AssertionError:
        _compare(got, expected, what, formula, mistakes(), where)
        raise


def _pointing_case(seed: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(maps [N, H, W], masks [N, H, W])``: random maps in [0, 1) whose single maximum (1.5)
    lies on the object in some images and off it in the others (image 0 a hit, 1 a miss)."""
    n = 6 if seed is None else 8
    _, _, masks = make_shapes(n, seed=3 if seed is None else seed)
    generator = torch.Generator().manual_seed(seed or 0)
    maps = torch.rand(masks.shape, generator=generator)
    on_object = torch.rand(n, generator=generator) < 0.5
    on_object[0], on_object[1] = True, False
    for i in range(n):
        allowed = (masks[i] if on_object[i] else ~masks[i]).flatten().nonzero()[:, 0]
        pick = allowed[torch.randint(len(allowed), (1,), generator=generator)]
        maps[i].view(-1)[pick] = 1.5
    return maps, masks


def _run_pointing_game(fn: Callable, seed: int | None = None) -> dict:
    """``fn(maps, masks)`` returns one value per image, 1 where the map's strongest pixel lies on
    the object (a hit) and 0 where not; compared with ``evaluate.pointing_game(...,
    per_example=True)``. The maps hold values >= 0 with a single maximum each."""
    maps, masks = _pointing_case(seed)
    got = fn(maps.clone(), masks.clone())
    return {"got": observe(got)}


def _judge_pointing_game(observed, seed=None) -> str:
    maps, masks = _pointing_case(seed)
    n, h, w = maps.shape
    expected = evaluate.pointing_game(maps, masks, per_example=True)
    got = _array(observed["got"], "your pointing game")
    if got.shape in ((), (1,)) and abs(float(got.reshape(-1)[0]) - float(expected.mean())) < 1e-6:
        raise AssertionError(
            f"your pointing game returned one number, {_number(got.reshape(-1)[0])}, the share of "
            f"hits over the images; return one value per image ({n} values: 1 hit, 0 miss). The "
            "pointing game's score is their mean."
        )
    index = torch.arange(n)
    peak = maps.flatten(1).argmax(dim=1)
    top = int(maps.argmax())  # one maximum for the whole batch
    mistakes = {
        "the argmax of the mask instead of the map (every image a hit)": torch.ones(n),
        "the row and the column of the maximum swapped (divmod(index, W) gives (row, column))": (
            masks[index, peak % w, peak // w].float()
        ),
        "one maximum for the whole batch (the same pixel looked up in every image)": (
            masks[:, (top % (h * w)) // w, top % w].float()
        ),
        "the weakest pixel instead of the strongest (argmin)": masks.flatten(1)[
            index, maps.flatten(1).argmin(dim=1)
        ].float(),
    }
    _compare(
        got,
        expected,
        "pointing game",
        "hit_n = 1 if the map's strongest pixel, argmax over (i, j) of M^(n)_ij, lies on mask_n, "
        "else 0: one value per image (maps.flatten(1).argmax(1) finds each map's peak).",
        mistakes,
        lambda index: f"image {index[0]}",
    )
    return (
        f"pointing game: your hits match evaluate.pointing_game on {n} images "
        f"({int(expected.sum())} hits)."
    )


check_pointing_game = Check(
    _run_pointing_game, _judge_pointing_game, library=["lecture_lib.evaluate.pointing_game"]
)


def _deletion_cases(seed: int | None) -> list[tuple[torch.Tensor, torch.Tensor, int]]:
    """``[(image [C, H, W], importance [H, W], target)]``: importance values all distinct (the
    order is unique); the first case ranks the object's pixels first, the second is random."""
    images, labels, masks = make_shapes(2, seed=5 if seed is None else seed)
    generator = torch.Generator().manual_seed(seed or 0)
    h, w = masks.shape[1:]
    cases = []
    for i in range(2):
        distinct = torch.randperm(h * w, generator=generator).view(h, w).float() / (h * w)
        importance = masks[i].float() + 0.5 * distinct if i == 0 else distinct + 0.1
        cases.append((images[i], importance, int(labels[i])))
    return cases


def _check_steps(steps) -> None:
    if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= 64:
        raise ValueError(f"check_deletion_curve: steps must be an int in 1..64, got {steps!r}.")


def _run_deletion_curve(fn: Callable, steps: int = 8, seed: int | None = None) -> dict:
    """``fn(model, image, importance, target, steps)`` returns the deletion curve of one image
    ``[steps + 1]``: the target's probability after removing the first ``k * H * W // steps``
    pixels, most important first, replaced by the image's mean colour; compared with
    ``evaluate.deletion_curve(..., substrate="mean")``."""
    _check_steps(steps)
    model, fresh = load_shapes_net(), load_shapes_net()
    cases = []
    for image, importance, target in _deletion_cases(seed):
        before = image.clone()
        got = fn(model, image, importance.clone(), target, steps)
        cases.append({"got": observe(got), "in_place": not torch.equal(image, before)})
    return {"cases": cases, "changes": _changes(model, fresh, "your deletion_curve")}


def _removal_curve(model, image, order, target, cuts, substrate, probability=True):
    """The target's probability (or score) after replacing the pixels ``order[:cut]`` by
    ``substrate`` [C, H, W], for each cut: a plain version, to name the mistakes."""
    flat, fill = image.flatten(1), substrate.flatten(1)
    steps = []
    for cut in cuts:
        x = flat.clone()
        x[:, order[:cut]] = fill[:, order[:cut]]
        steps.append(x.view_as(image))
    with torch.no_grad():
        scores = model(torch.stack(steps))
    values = scores.softmax(dim=1) if probability else scores
    return values[:, target]


def _judge_deletion_curve(observed, steps: int = 8, seed=None) -> str:
    _check_steps(steps)
    _untouched(observed)
    model = load_shapes_net()
    for number, ((image, importance, target), case) in enumerate(
        zip(_deletion_cases(seed), observed["cases"])
    ):
        if case["in_place"]:
            raise AssertionError(
                "your deletion_curve changed `image` in place; change a copy for each step "
                "(x = image.clone()) and leave the image as it came."
            )
        expected = evaluate.deletion_curve(model, image, importance, target, steps=steps)
        got = _array(case["got"], "your deletion_curve")
        if got.shape == (steps,):
            raise AssertionError(
                f"your deletion curve has {steps} points, expected steps + 1 = {steps + 1}: step 0 "
                "is the image itself (nothing removed yet), step `steps` the mean colour alone."
            )
        _compare_lazily(
            got,
            expected,
            f"deletion curve ({'object first' if number == 0 else 'a random map'})",
            "p_k = softmax(S(I_k))_c, where I_k is the image with its k * H * W // steps most "
            "important pixels (all channels) set to the image's mean colour.",
            functools.partial(_deletion_mistakes, model, image, importance, target, steps),
            lambda index: f"step {index[0]}",
        )
    return (
        f"your deletion curves ({steps} steps) match evaluate.deletion_curve with the mean colour."
    )


def _deletion_mistakes(model, image, importance, target, steps) -> dict:
    c, h, w = image.shape
    order = importance.flatten().argsort(descending=True)
    cuts = [k * h * w // steps for k in range(steps + 1)]
    mean = image.mean(dim=(1, 2), keepdim=True).expand_as(image)
    mistakes = {
        "removing the least important pixels first (sort in descending order)": (
            _removal_curve(model, image, order.flip(0), target, cuts, mean)
        ),
        "the score S_c (a logit) instead of the probability softmax(S)_c": _removal_curve(
            model, image, order, target, cuts, mean, probability=False
        ),
        "black (0) instead of the image's mean colour": _removal_curve(
            model, image, order, target, cuts, torch.zeros_like(image)
        ),
        "one grey level, the mean over all channels, instead of the mean colour (one mean "
        "per channel)": _removal_curve(
            model, image, order, target, cuts, image.mean().expand_as(image)
        ),
    }
    if (h * w) % steps:
        mistakes[
            f"chunks of H*W // steps pixels, k * (H*W // steps): then the last step leaves "
            f"{h * w - steps * (h * w // steps)} pixels (the rule is k * H * W // steps)"
        ] = _removal_curve(
            model, image, order, target, [k * (h * w // steps) for k in range(steps + 1)], mean
        )
    return mistakes


check_deletion_curve = Check(
    _run_deletion_curve,
    _judge_deletion_curve,
    library=[
        "lecture_lib.evaluate.deletion_curve",
        "lecture_lib.evaluate.insertion_curve",
        "lecture_lib.evaluate._curve",
        "lecture_lib.evaluate.pixel_order",
    ],
)


def _spearman_cases(seed: int | None) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Pairs of maps: related maps without ties, maps with many ties (values rounded), and a
    map that is zero on most pixels (as guided backprop's maps are)."""
    generator = torch.Generator().manual_seed(seed or 0)
    size = 8 if seed is None else int(torch.randint(6, 24, (1,), generator=generator))

    def noise(*shape):
        return torch.randn(*shape, generator=generator)

    a = noise(size, size)
    smooth = (a + 0.8 * noise(size, size), a)
    tied = ((a * 2).round() / 2, (a + noise(size, size)).round())
    sparse = ((a - a.quantile(0.7)).clamp(min=0), a.abs() + 0.5 * noise(size, size).abs())
    return [smooth, tied, sparse]


def _run_spearman(fn: Callable, seed: int | None = None) -> dict:
    """``fn(a, b)`` returns Spearman's rank correlation of two maps of the same shape (one
    number), tied values sharing their average rank; compared with ``evaluate.spearman``."""
    return {"cases": [observe(fn(a.clone(), b.clone())) for a, b in _spearman_cases(seed)]}


def _plain_ranks(x: torch.Tensor) -> torch.Tensor:
    """Ranks 1..D of a flat tensor, ties broken by position (no averaging)."""
    ranks = torch.empty(len(x), dtype=torch.float64)
    ranks[x.argsort(stable=True)] = torch.arange(1, len(x) + 1, dtype=torch.float64)
    return ranks


def _pearson(x: torch.Tensor, y: torch.Tensor) -> float:
    return float(torch.corrcoef(torch.stack([x.double(), y.double()]))[0, 1])


def _judge_spearman(observed, seed=None) -> str:
    kinds = ["maps without ties", "maps with tied values", "a map that is zero on most pixels"]
    for kind, (a, b), got in zip(kinds, _spearman_cases(seed), observed["cases"]):
        x, y = a.flatten(), b.flatten()
        got = _array(got, "your spearman")
        if got.size != 1:
            raise AssertionError(
                f"your spearman returned shape {got.shape} for two maps of shape "
                f"{tuple(a.shape)}; return one number, the correlation of the two maps' ranks."
            )
        n = len(x)
        r, s = evaluate.rank(x.double()), evaluate.rank(y.double())
        mistakes = {
            "the Pearson correlation of the values themselves (correlate their ranks)": (
                _pearson(x, y)
            ),
            "argsort taken as the ranks: argsort gives the order of the pixels, not each pixel's "
            "rank (the rank of x_i is the number of values below it, plus 1)": _pearson(
                x.argsort().double(), y.argsort().double()
            ),
            "ranks that ignore ties (tied values must share their average rank)": _pearson(
                _plain_ranks(x), _plain_ranks(y)
            ),
            "the shortcut 1 - 6 Σ d² / (n (n² - 1)), exact only without ties (with tied values "
            "use the correlation of the average ranks)": 1
            - 6 * float(((r - s) ** 2).sum()) / (n * (n * n - 1)),
        }
        _compare(
            got.reshape(()),
            evaluate.spearman(x, y),
            "Spearman correlation",
            "ρ = the Pearson correlation of the ranks r, s of the two maps' values; a value with "
            "b smaller and e equal values (itself included) gets the rank b + (e + 1) / 2.",
            mistakes,
            lambda index, kind=kind: kind,
        )
    return "your Spearman correlations match evaluate.spearman, ties included."


check_spearman = Check(
    _run_spearman,
    _judge_spearman,
    library=["lecture_lib.evaluate.spearman", "lecture_lib.evaluate.rank"],
)


# --- Beyond the lecture: Grad-CAM, SmoothGrad, fooling images ---------------------------------


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
