"""The only grading code that runs in a student's kernel: call the student's answers, send out
what came back.

The grader replaces each check cell, at grading time, by one call of ``send_observations``
with the check cell's own calls and seeds that the grader has just drawn. For every call it
runs the ``run`` half of the check (``lecture_lib.checks.Check``), records an exception
instead of raising it, notes any call of the library's own answer, and displays the result as
one message of MIME type ``wire.MIME``. It decides nothing: whatever the student's code does to
this kernel, the verdict is reached in the grader's process.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable

from .. import checks
from . import wire

LIBRARY_CALLS: list[str] = []
"""Calls of the library's answers that the grading copy keeps (``grading_copy``), from any
thread: each such function appends its name here when it is called."""

CHECKS = {name: value for name, value in vars(checks).items() if isinstance(value, checks.Check)}
"""The checks as they were when the grader imported this module, before any student code ran."""


def seeded(seed) -> dict:
    """The ``seed`` argument of a hidden check; a visible check or a by-hand answer has none."""
    return {} if seed is None else {"seed": seed}


def observe_call(check: str, answer: Callable[[], object], options: dict, seed) -> dict:
    """What ``checks.<check>`` observes of the student's ``answer()`` on the cases of ``seed``."""
    try:
        target = CHECKS[check]
        answer = answer()
        start = len(LIBRARY_CALLS)
        with checks.library_calls(target.library) as called:
            observed = target.run(answer, **options, **seeded(seed))
        called = [*called, *(n for n in LIBRARY_CALLS[start:] if n in target.library)]
    except KeyboardInterrupt:
        raise
    except BaseException as error:  # the student's code may raise anything, SystemExit included
        lines = traceback.format_exception(type(error), error, error.__traceback__)
        return {
            "raised": (f"{type(error).__name__}: {error}" if str(error) else type(error).__name__)[
                :2000
            ],
            "traceback": "".join(lines[-6:])[-4000:],
        }
    return {"observed": observed, "library_calls": sorted(set(called))}


def send_observations(calls: list[tuple[str, Callable[[], object], dict, list]]) -> None:
    """For each ``(check, answer, options, seeds)`` and each seed, display what was observed."""
    from IPython.display import display

    for index, (check, answer, options, seeds) in enumerate(calls):
        for case, seed in enumerate(seeds):
            result = observe_call(check, answer, options, seed)
            message = {"call": index, "case": case, **result}
            display({wire.MIME: wire.encode(message)}, raw=True)
