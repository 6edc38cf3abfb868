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
"""

from __future__ import annotations

import ast
import secrets
from dataclasses import dataclass

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
    if "raised" in sent:
        return (
            f"{call.answer} raised {sent['raised']} when {what} called it.\n"
            f"{sent.get('traceback', '')}".rstrip()
        )
    used = sorted(set(referenced) | set(sent.get("library_calls", [])))
    if used and not allow_library:
        return (
            f"{call.answer} uses {', '.join(used)}, the library's own answer to this question: "
            "no points. Write the computation yourself (the course's checks compare your code "
            "with the library; they cannot grade the library against itself)."
        )
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
