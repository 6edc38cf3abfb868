"""The machinery every check shares: the two-halves ``Check``, the record of calls of the
library's own answers, and the helpers that compare a student's result with the reference
and say what differs (``_compare`` and friends), with the lecture's worked example and the
ReLU rules' names and formulas.

The topic modules of this package import from here; nothing here imports them.
"""

from __future__ import annotations

import functools
import importlib
import inspect
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import numpy as np
import torch
from torch import nn

from .. import answer_calls
from ..data import CLASSES, make_shapes
from ..models import load_shapes_net

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
    """``{function: dotted name}`` of the library functions called ``names`` (each as the
    undecorated function that ``answer_calls.watching`` lists)."""
    functions = {}
    for name in names:
        module, _, attribute = name.rpartition(".")
        functions[inspect.unwrap(getattr(importlib.import_module(module), attribute))] = name
    return functions


@contextmanager
def library_calls(names) -> Iterator[list[str]]:
    """Inside the block, record each call of the library functions ``names``, from any thread
    (a worker pool made before the block too) and by any name (an alias, a callback): the
    list the block receives holds their names once the block ends. Each of them carries
    ``answer_calls.recorded`` (``tests/test_answer_calls.py`` checks every ``Check.library``)."""
    called: list[str] = []
    functions = library_functions(names)
    if not functions:
        yield called
        return
    with answer_calls.watching() as seen:
        try:
            yield called
        finally:
            called.extend(functions[f] for f in list(seen) if f in functions)


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


def _compare_lazily(
    got, expected, what: str, formula: str, mistakes: Callable[[], dict], where=None
):
    """``_compare``, with the typical mistakes (``mistakes()``) computed only for a wrong answer."""
    try:
        _compare(got, expected, what, formula, None, where)
    except AssertionError:
        _compare(got, expected, what, formula, mistakes(), where)
        raise


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
