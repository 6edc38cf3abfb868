"""Checks of Part 2, the ReLU backward rules of DeconvNet and guided backpropagation: one rule on
the lecture's 3x3 example, as an autograd function, a model with its ReLUs replaced, and
guided backprop with backward hooks."""

from __future__ import annotations

import copy
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from .. import answer_calls, attribution, rules
from ..data import CLASSES
from ..models import load_shapes_net
from .core import (
    LECTURE_FORWARD_INPUT,
    LECTURE_GRAD_FROM_ABOVE,
    RULE_NAMES,
    RULE_TEXT,
    Check,
    _changes,
    _compare,
    _pixel,
    _score_gradient,
    _shapes,
    _targets,
    _untouched,
    observe,
)


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


@answer_calls.recorded
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


class MarkedReLU(torch.autograd.Function):
    """The ReLU function a replacement check hands over: ReLU forward, and a backward pass that
    is no rule of the lecture, R^l = sigmoid(4 f^l) · R^{l+1}, so that no answer to another
    question is in the student's kernel while grading, and a replacement shows in the gradient."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x.clamp(min=0)

    @staticmethod
    def backward(ctx, grad_output):
        (x,) = ctx.saved_tensors
        return grad_output * torch.sigmoid(4 * x)


def _run_relu_replacement(fn: Callable, rule: str = "deconvnet", seed: int | None = None) -> dict:
    """``fn(model, relu_function)`` returns a copy of ``model`` in which every ``nn.ReLU`` calls
    ``relu_function.apply``; the check hands over ``MarkedReLU`` (``rule`` names the rule the
    student has in mind, and is checked to be one), and the input gradient of the copy must be
    the one every ReLU replaced by it gives. ``seed`` checks a small model with ReLUs inside
    nested blocks."""
    rules.check_rule(rule)
    model, images, target = _model_case(seed)
    fresh = copy.deepcopy(model)
    new = fn(model, MarkedReLU)
    observed = {
        "same_object": new is model,
        "changes": _changes(model, fresh, "your function"),
        "type": type(new).__name__,
    }
    if isinstance(new, nn.Module) and new is not model:
        observed["relus_left"] = [name for name, m in new.named_modules() if type(m) is nn.ReLU]
        observed["gradient"] = observe(_score_gradient(new, images, target))
    return observed


class _Marked(nn.Module):
    def forward(self, x):
        return MarkedReLU.apply(x)


def _marked_copy(model: nn.Module) -> nn.Module:
    """``model`` with every ``nn.ReLU`` replaced by ``MarkedReLU`` (the judge's reference)."""
    new = copy.deepcopy(model)
    for module in list(new.modules()):
        for child_name, child in list(module.named_children()):
            if type(child) is nn.ReLU:
                setattr(module, child_name, _Marked())
    return new


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
        _score_gradient(_marked_copy(model), images, target),
        "the input gradient of the new model (the check hands over a ReLU function whose "
        "backward is sigmoid(4 f^l) · R^{l+1})",
        "every nn.ReLU, also inside nested blocks, must call relu_function.apply"
        + (f". The new model still holds nn.ReLU layers: {', '.join(left)}." if left else "."),
        mistakes,
        _pixel,
    )
    where = "ShapesNet" if seed is None else "a model with ReLUs in nested blocks"
    return (
        f"every ReLU of {where} replaced: its gradient is the one the relu_function it was "
        f"handed gives (ready for {RULE_NAMES[rule]} ReLUs)."
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
