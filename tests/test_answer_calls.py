"""An answer that calls the library's own answer is seen from every thread and by every name.

The instant check in the student's kernel notes such a call (``lecture_lib.answer_calls``):
from a thread pool made in an earlier cell (its workers already running when the check
started), from a pool's callback, through an alias, from a nested function; an honest answer
run in the same pool gets no note. While grading, the library copy in the sandbox lacks the
answer, so the same calls raise there, whatever thread makes them.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.pool import ThreadPool

import numpy as np
import pytest

from lecture_lib import answer_calls, checks, rules
from lecture_lib.grading import grading_copy

NOTE = "the library's own answer to this question"


@pytest.fixture(scope="module")
def earlier_pool():
    """A thread pool made "in an earlier cell": its worker is running before any check."""
    pool = ThreadPoolExecutor(1)
    pool.submit(lambda: None).result()
    assert pool._threads and all(t.is_alive() for t in pool._threads)
    yield pool
    pool.shutdown()


@pytest.fixture(scope="module")
def earlier_callback_pool():
    """A ``multiprocessing`` thread pool whose callbacks run in a thread it started early."""
    pool = ThreadPool(1)
    pool.apply(lambda: None)
    yield pool
    pool.close()
    pool.join()


def by_the_library(x, r):
    return rules.relu_backward(x, r, "deconvnet")


def in_earlier_pool(pool):
    def answer(x, r):
        return pool.submit(by_the_library, x, r).result()

    return answer


def through_alias(pool):
    R = rules  # an alias of the module, and one of the function
    backward = R.relu_backward

    def answer(x, r):
        return pool.submit(backward, x, r, "deconvnet").result()

    return answer


def nested(pool):
    def answer(x, r):
        def inner():  # a computed name, which no reading of the source resolves
            return getattr(rules, "_".join(["relu", "backward"]))(x, r, "deconvnet")

        return pool.submit(inner).result()

    return answer


def in_callback(callback_pool):
    def answer(x, r):
        out, done = [], threading.Event()

        def callback(_):
            out.append(rules.relu_backward(x, r, "deconvnet"))
            done.set()

        callback_pool.apply_async(lambda: None, callback=callback)
        assert done.wait(30)
        return out[0]

    return answer


def honest(pool):
    def answer(x, r):
        return pool.submit(lambda: np.where(r > 0, r, 0)).result()

    return answer


@pytest.mark.parametrize("make", [in_earlier_pool, through_alias, nested, in_callback])
def test_the_instant_check_notes_the_library_answer_from_an_earlier_thread(
    make, earlier_pool, earlier_callback_pool, capsys
):
    pool = earlier_callback_pool if make is in_callback else earlier_pool
    threads_before = set(threading.enumerate())
    checks.check_relu_backward(make(pool), rule="deconvnet")
    assert set(threading.enumerate()) <= threads_before  # only threads made before the check
    out = capsys.readouterr().out
    assert out.startswith("✓") and NOTE in out and "lecture_lib.rules.relu_backward" in out, out


def test_an_honest_answer_in_the_same_pool_gets_no_note(earlier_pool, capsys):
    checks.check_relu_backward(honest(earlier_pool), rule="deconvnet")
    out = capsys.readouterr().out
    assert out.startswith("✓") and NOTE not in out, out


def test_outside_a_check_nothing_is_recorded_and_blocks_keep_their_own_record(earlier_pool):
    x, r = np.ones((2, 2)), -np.ones((2, 2))
    with answer_calls.watching() as outer:
        earlier_pool.submit(by_the_library, x, r).result()
        with answer_calls.watching() as inner:
            pass
    rules.relu_backward(x, r, "deconvnet")
    assert outer == [rules.relu_backward.__wrapped__] and inner == []
    assert answer_calls._records == {}


def test_every_library_answer_of_every_check_is_recorded():
    for name, check in vars(checks).items():
        if not isinstance(check, checks.Check):
            continue
        for dotted in check.library:
            module, _, attribute = dotted.rpartition(".")
            function = getattr(importlib.import_module(module), attribute)
            assert answer_calls.is_recorded(function), (name, dotted)
    assert not answer_calls.is_recorded(np.where)


# --- the grader's side: the sandbox's copy of the library has no answer ---------------------------

IN_THE_COPY = """
import threading
from concurrent.futures import ThreadPoolExecutor
pool = ThreadPoolExecutor(1)
pool.submit(lambda: None).result()  # an earlier cell's pool, its worker running
import lecture_lib
from lecture_lib import rules as R
from lecture_lib.grading import collect
assert lecture_lib.__file__.startswith(COPY), lecture_lib.__file__
def answer(x, r):
    return pool.submit(R.relu_backward, x, r, "deconvnet").result()
sent = collect.observe_call("check_relu_backward", lambda: answer, {"rule": "deconvnet"}, None)
print(sent.get("raised", sent)[:200])
import lecture_lib.checks, lecture_lib.attribution, lecture_lib.evaluate  # their decorators run
print("imported")
"""


def test_in_the_grading_copy_the_answer_raises_in_an_earlier_pool_and_every_module_imports(
    tmp_path,
):
    plan = grading_copy.plan(["check_relu_backward", "check_receptive_fields"], [{}, {}])
    assert "lecture_lib.rules.relu_backward" in plan.absent
    assert "lecture_lib.answer_calls.recorded" not in plan.absent  # a decorator stays
    copy = grading_copy.build(plan)
    env = dict(os.environ, PYTHONPATH=str(copy.parent))
    code = f"COPY = {str(copy)!r}\n" + IN_THE_COPY
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.startswith("NotAvailableWhileGrading"), result.stdout
    assert result.stdout.splitlines()[-1] == "imported"
