"""The grader's side of a check cell: read it, draw its secret seeds, and decide.

A check cell of the homework is a list of calls of the course's checks (``lecture_lib.checks``),
the student's answer first, then literal options:

    checks.check_relu_backward(relu_backward_deconvnet, rule="deconvnet")
    ### BEGIN HIDDEN TESTS
    checks.check_relu_backward(relu_backward_deconvnet, rule="deconvnet", seed=413)
    ### END HIDDEN TESTS

When grading, the cell's source comes from the gradebook (the student cannot change it).
``parse_check_cell`` reads its calls; every seed written in it is replaced by a fresh one drawn
at grading time (``draw_seeds``), so that no student can know the hidden cases; ``kernel_code``
is what runs in the student's kernel instead of the cell (``collect.send_observations``); and
``decide`` judges what came back with the ``judge`` half of each check, in this process.

What came back is taken only as asked (``gather``): one message per call and case, no message
the grader did not ask for, and the cases the check's run half makes (``skeleton``: the run
half, run here with a stand-in answer, says how many cases each list of cases holds). Anything
else fails the check cell, whatever code sent it.
"""

from __future__ import annotations

import ast
import secrets
import warnings
from dataclasses import dataclass

import numpy as np
import torch

from .. import checks
from .collect import seeded

PLACEHOLDER = object()


@dataclass(frozen=True)
class CheckCall:
    """One call in a check cell: ``checks.<check>(<answer>, **options, seed=seed)``."""

    check: str
    answer: str
    options: dict
    seed: int | None

    @property
    def hidden(self) -> bool:
        """A call with a seed draws random cases (a hidden test); without, the visible case."""
        return self.seed is not None

    def describe(self) -> str:
        return f"checks.{self.check}({self.answer}, ...)"


def parse_check_cell(source: str) -> list[CheckCall]:
    """The calls of a check cell; ``ValueError`` if it holds anything else."""
    calls = []
    for statement in ast.parse(source).body:
        call = statement.value if isinstance(statement, ast.Expr) else None
        function = getattr(call, "func", None)
        if not (
            isinstance(call, ast.Call)
            and isinstance(function, ast.Attribute)
            and isinstance(function.value, ast.Name)
            and function.value.id == "checks"
            and isinstance(getattr(checks, function.attr, None), checks.Check)
            and call.args
            and not isinstance(call.args[0], ast.Starred)
        ):
            line = ast.get_source_segment(source, statement)
            raise ValueError(
                f"a check cell may hold only calls checks.check_...(answer, options...); "
                f"found: {line!r}"
            )
        check = getattr(checks, function.attr)
        try:
            args = [ast.literal_eval(argument) for argument in call.args[1:]]
            kwargs = {k.arg: ast.literal_eval(k.value) for k in call.keywords}
        except ValueError as error:
            raise ValueError(
                f"the options of {function.attr} must be literals: "
                f"{ast.get_source_segment(source, call)!r}"
            ) from error
        _, options = check.options(PLACEHOLDER, *args, **kwargs)
        seed = options.pop("seed", None)
        answer = ast.get_source_segment(source, call.args[0])
        calls.append(CheckCall(function.attr, answer, options, seed))
    return calls


def draw_seeds(calls: list[CheckCall]) -> list[int | None]:
    """A fresh secret seed for every hidden call; the visible calls keep their fixed case."""
    return [secrets.randbelow(2**31 - 2) + 1 if call.hidden else None for call in calls]


def kernel_code(calls: list[CheckCall], seeds: list[int | None]) -> str:
    """The code that runs in the student's kernel in place of the check cell."""
    rows = "".join(
        f"    ({call.check!r}, lambda: ({call.answer}), {call.options!r}, [{seed!r}]),\n"
        for call, seed in zip(calls, seeds)
    )
    return (
        '__import__("lecture_lib.grading.collect", fromlist=["send_observations"])'
        f".send_observations([\n{rows}])\n"
    )


@dataclass
class Decision:
    """A check cell's verdict: the ✓ lines of what passed, and the first failure's message."""

    passed: bool
    lines: list[str]
    failure: str | None = None


def decide(
    calls: list[CheckCall],
    seeds: list[int | None],
    observations: dict,
    library_use: dict[int, list[str]] | None = None,
    allow_library: bool = False,
) -> Decision:
    """Judge what the kernel sent for each call (``observations[(call, case)]``).

    ``library_use`` maps a call's index to the library functions that the student's code was
    found to reference (``library_answers.references``); with ``allow_library=False`` such an
    answer fails, and the message says why.
    """
    lines = []
    for index, (call, seed) in enumerate(zip(calls, seeds)):
        sent = observations.get((index, 0))
        failure = _failure(call, seed, sent, (library_use or {}).get(index, []), allow_library)
        if isinstance(failure, str):
            return Decision(False, lines, failure)
        lines.append(failure[0])
    return Decision(True, lines)


def _failure(call: CheckCall, seed, sent, referenced: list[str], allow_library: bool):
    """The failure message of one call, or ``(✓ line,)`` when it passes."""
    what = "the hidden check" if call.hidden else "the check"
    if sent is None:
        return (
            f"{call.describe()}: no result came back from {what}. The cell stopped before it "
            "finished (see the message above), or code run earlier changed the grading code in "
            "the kernel."
        )
    if not isinstance(sent, dict):
        return GRADING_REFUSED.format(reason="the result that came back is not a dict.")
    if "raised" in sent:
        return (
            f"{call.answer} raised {str(sent['raised'])[:2000]} when {what} called it.\n"
            f"{str(sent.get('traceback', ''))[:4000]}".rstrip()
        )
    calls_seen = sent.get("library_calls", [])
    if not isinstance(calls_seen, list) or not all(isinstance(c, str) for c in calls_seen):
        calls_seen = ["(an unreadable list of library calls)"]
    used = sorted(set(referenced) | set(calls_seen))
    if used and not allow_library:
        return (
            f"{call.answer} uses {', '.join(used)}, the library's own answer to this question: "
            "no points. Write the computation yourself (the course's checks compare your code "
            "with the library; they cannot grade the library against itself)."
        )
    if "observed" not in sent:
        return f"{call.describe()}: the result that came back from the kernel holds no observation."
    problem = case_problem(call, seed, sent["observed"])
    if problem:
        return GRADING_REFUSED.format(reason=problem)
    try:
        ok = getattr(checks, call.check).judge(sent["observed"], **call.options, **seeded(seed))
    except AssertionError as error:
        return str(error)
    except Exception as error:  # what came back was not what the check's run half sends
        return (
            f"{call.describe()}: the results that came back from the kernel could not be read "
            f"({type(error).__name__}: {error})."
        )
    return ("✓ " + ok,)


# --- what came back, taken only as asked -------------------------------------------------------


def gather(messages: list, calls: list[CheckCall]) -> tuple[dict, str | None]:
    """``{(call, case): message}`` from a check cell's messages, or the reason they are refused:
    a message that is not one of the grader's (its call, its case), or two for the same case."""
    asked = {(index, 0) for index in range(len(calls))}
    taken: dict = {}
    for message in messages:
        if isinstance(message, Exception):
            return {}, f"a result the kernel sent could not be read ({message})."
        key = (message.get("call"), message.get("case")) if isinstance(message, dict) else None
        if key not in asked:
            return {}, "the kernel sent a result that no call of this check cell asked for."
        if key in taken:
            return {}, (
                f"the kernel sent more than one result for {calls[key[0]].describe()}; the "
                "grader asks once."
            )
        taken[key] = message
    return taken, None


GRADING_REFUSED = (
    "This check cell earns no points: {reason} Only the check cell's own run of your answer "
    "counts; code that sends results of its own (an event hook, a thread, a changed display) "
    "or changes the grading code makes the results unusable."
)


class _ProbeFunction(torch.autograd.Function):
    """A stand-in for an answer that is a ``torch.autograd.Function``: ReLU, gradient rule."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x.clamp(min=0)

    @staticmethod
    def backward(ctx, grad_output):
        (x,) = ctx.saved_tensors
        return grad_output * (x > 0)


def _probe_function(*args, **kwargs):
    """A stand-in for an answer that is a function: it returns its first array."""
    for value in [*args, *kwargs.values()]:
        if isinstance(value, torch.Tensor):
            return value.detach().clone()
        if isinstance(value, np.ndarray):
            return value.copy()
    return None


PROBES = (_probe_function, _ProbeFunction)


def _case_lists(value, path=()) -> dict:
    """``{path: length}`` of the lists of cases in an observation: lists under a key
    ``"cases"`` and lists of dicts."""
    found = {}
    if isinstance(value, dict):
        for key, item in value.items():
            if key == "cases" and not isinstance(item, list):
                found[(*path, key)] = -1  # not a list where the cases belong
            found.update(_case_lists(item, (*path, key)))
    elif isinstance(value, list):
        if path and (path[-1] == "cases" or any(isinstance(v, dict) for v in value)):
            found[path] = len(value)
        for index, item in enumerate(value):
            found.update(_case_lists(item, (*path, index)))
    return found


def skeleton(call: CheckCall, seed) -> dict | None:
    """The lists of cases the check's run half makes for ``seed`` (``{path: length}``), from
    the stand-in answer that makes the most; None when no stand-in gets through the run half."""
    best = None
    for probe in PROBES:
        try:
            with torch.random.fork_rng(), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                observed = getattr(checks, call.check).run(probe, **call.options, **seeded(seed))
        except Exception:
            continue
        lists = _case_lists(observed)
        if best is None or sum(lists.values()) > sum(best.values()):
            best = lists
    return best


def case_problem(call: CheckCall, seed, observed) -> str | None:
    """Why ``observed`` does not hold the cases the check asked for, or None."""
    expected = skeleton(call, seed)
    if not expected:
        return None
    got = _case_lists(observed)
    for path, length in expected.items():
        if path in got and got[path] != length:
            where = "/".join(str(p) for p in path)
            count = "no list" if got[path] < 0 else f"{got[path]} case(s)"
            return (
                f"the result of {call.describe()} holds {count} at {where!r}; the check asked "
                f"for {length}."
            )
    return None
