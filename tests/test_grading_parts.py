"""The pieces of safe autograding, one at a time: what crosses from the kernel, how a check
cell is read and decided, how a library answer is recognised, and what the sandbox lets in.
(``test_grading.py`` runs them together through nbgrader.)"""

from __future__ import annotations

import os
import shutil
import sys
import time

import nbformat
import numpy as np
import pytest

from lecture_lib import checks
from lecture_lib.grading import collect, library_answers, verdict, wire
from lecture_lib.grading.sandbox import SandboxUnavailable, bwrap_path

needs_bwrap = pytest.mark.skipif(
    shutil.which("bwrap") is None,
    reason="the sandbox needs bubblewrap: install the Debian package bubblewrap",
)


# --- the wire ---------------------------------------------------------------------------------


def test_observations_cross_as_plain_data_and_arrays():
    sent = {"cases": [{"got": np.arange(6.0).reshape(2, 3), "in_place": False}], "name": "x"}
    back = wire.decode(wire.encode(sent))
    assert back["name"] == "x" and back["cases"][0]["in_place"] is False
    np.testing.assert_array_equal(back["cases"][0]["got"], sent["cases"][0]["got"])


def test_the_wire_refuses_what_is_not_plain_data():
    with pytest.raises(ValueError):
        wire.decode('{"__array__": "AAAA", "dtype": "|O", "shape": [1]}')  # objects
    with pytest.raises(ValueError):
        wire.decode('{"__array__": "AAAA", "dtype": "<f8", "shape": [100]}')  # short data
    with pytest.raises(ValueError):
        wire.decode("x" * 100, max_bytes=10)


# --- check cells ------------------------------------------------------------------------------


CELL = """checks.check_relu_backward(relu_backward_deconvnet, rule="deconvnet")
### BEGIN HIDDEN TESTS
checks.check_relu_backward(partial(f, rule="guided"), "guided", seed=413)
### END HIDDEN TESTS"""


def test_a_check_cell_is_read_into_its_calls():
    visible, hidden = verdict.parse_check_cell(CELL)
    assert (visible.check, visible.answer, visible.options, visible.seed) == (
        "check_relu_backward",
        "relu_backward_deconvnet",
        {"rule": "deconvnet"},
        None,
    )
    assert hidden.answer == 'partial(f, rule="guided")' and hidden.options == {"rule": "guided"}
    assert hidden.hidden and not visible.hidden


@pytest.mark.parametrize(
    "source",
    ["print('hi')", "checks.check_relu_backward(f, rule=RULE)", "for r in R:\n    checks.x(f)"],
)
def test_a_check_cell_with_anything_else_is_refused(source):
    with pytest.raises(ValueError):
        verdict.parse_check_cell(source)


def test_hidden_seeds_are_fresh_each_time_and_visible_cases_stay():
    calls = verdict.parse_check_cell(CELL)
    draws = [verdict.draw_seeds(calls) for _ in range(5)]
    assert all(d[0] is None for d in draws)
    assert len({d[1] for d in draws}) == 5 and 413 not in {d[1] for d in draws}


def deconvnet_rule(x, r):
    return np.where(r > 0, r, 0)


def kernel_side(calls, seeds, namespace):
    """What the kernel would send for ``calls``, run here."""
    code = verdict.kernel_code(calls, seeds).replace(
        '__import__("lecture_lib.grading.collect", fromlist=["send_observations"])'
        ".send_observations",
        "_collect",
    )
    sent = {}
    namespace["_collect"] = lambda rows: sent.update(
        {
            (i, 0): wire.decode(wire.encode(collect.observe_call(c, a, o, s[0])))
            for i, (c, a, o, s) in enumerate(rows)
        }
    )
    exec(code, namespace)
    return sent


def test_a_right_answer_passes_and_a_wrong_one_fails_with_the_checks_message():
    calls = verdict.parse_check_cell(
        'checks.check_relu_backward(answer, rule="deconvnet")\n'
        'checks.check_relu_backward(answer, rule="deconvnet", seed=1)'
    )
    seeds = verdict.draw_seeds(calls)
    right = kernel_side(calls, seeds, {"answer": deconvnet_rule})
    decision = verdict.decide(calls, seeds, right)
    assert decision.passed and len(decision.lines) == 2
    wrong = kernel_side(calls, seeds, {"answer": lambda x, r: np.where(x > 0, r, 0)})
    decision = verdict.decide(calls, seeds, wrong)
    assert not decision.passed and "exactly what the gradient rule gives" in decision.failure


def test_an_exception_in_the_answer_fails_the_check_with_its_text():
    calls = verdict.parse_check_cell('checks.check_relu_backward(answer, rule="deconvnet")')

    def broken(x, r):
        raise ZeroDivisionError("oops")

    sent = kernel_side(calls, [None], {"answer": broken})
    decision = verdict.decide(calls, [None], sent)
    assert not decision.passed and "ZeroDivisionError: oops" in decision.failure
    nothing = verdict.decide(calls, [None], {})
    assert not nothing.passed and "no result came back" in nothing.failure


def test_observations_that_lie_about_their_shape_fail_without_crashing_the_grader():
    calls = verdict.parse_check_cell('checks.check_relu_backward(answer, rule="deconvnet")')
    decision = verdict.decide(calls, [None], {(0, 0): {"observed": {"cases": "nonsense"}}})
    assert not decision.passed


# --- library answers ---------------------------------------------------------------------------


LIBRARY = ("lecture_lib.attribution.integrated_gradients",)


@pytest.mark.parametrize(
    "cells",
    [
        [
            "from lecture_lib import attribution",
            "def ig(m, x, b, s):\n    return attribution.integrated_gradients(m, x, 0, baseline=b)",
        ],
        [
            "from lecture_lib.attribution import integrated_gradients as lib",
            "def ig(m, x, b, s):\n    return lib(m, x, 0)",
        ],
        ["import lecture_lib.attribution as A", "def ig(m, x, b, s):\n    return helper(m)"]
        + ["def helper(m):\n    return getattr(A, 'integrated_gradients')(m)"],
        [
            "from lecture_lib.attribution import *",
            "ig = lambda m, x, b, s: integrated_gradients(m)",
        ],
    ],
)
def test_a_call_of_the_library_answer_is_found_however_it_is_imported(cells):
    assert library_answers.references(cells, "ig", LIBRARY) == list(LIBRARY)
    assert checks.check_integrated_gradients.library == LIBRARY


def test_an_own_answer_with_a_library_helper_is_not_flagged():
    cells = [
        "from lecture_lib import attribution\nimport numpy as np",
        "def ig(m, x, b, s):\n    g = attribution.gradient(m, x, 0)\n    return np.gradient(g)",
        "%timeit ig(1, 2, 3, 4)",
    ]
    assert library_answers.references(cells, "ig", LIBRARY) == []
    assert library_answers.suspicious(cells) == []
    assert library_answers.suspicious(["exec(code)", "import sys; sys.setprofile(None)"]) == [
        "exec",
        "setprofile",
    ]


def test_the_instant_check_notes_a_call_of_the_library_answer(capsys):
    from lecture_lib import attribution

    checks.check_saliency(attribution.saliency)
    assert "grading gives no points" in capsys.readouterr().out


# --- the sandbox ----------------------------------------------------------------------------------


def test_without_bubblewrap_autograding_stops_and_names_the_package(monkeypatch):
    monkeypatch.setenv("PATH", os.path.dirname(sys.executable))
    if shutil.which("bwrap"):
        pytest.skip("bwrap lies on the Python environment's own path")
    with pytest.raises(SandboxUnavailable, match="apt-get install -y bubblewrap"):
        bwrap_path()


@pytest.fixture(scope="module")
def kernel():
    from lecture_lib.grading.kernel import SandboxKernel
    from lecture_lib.grading.sandbox import GiB, Sandbox

    with Sandbox(memory_limit=GiB, process_limit=64) as sandbox:
        running = SandboxKernel(sandbox)
        running.start()
        yield running, sandbox
        running.stop()


def output(run) -> str:
    return "".join(o.get("text", "") + o.get("evalue", "") for o in run.outputs)


@needs_bwrap
def test_the_sandbox_sees_no_course_no_home_no_network(kernel, tmp_path):
    running, _ = kernel
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    (tmp_path / "secret.txt").write_text("not for students")
    home = os.path.expanduser("~")
    run = running.run(
        "import os, socket\n"
        f"print([os.path.exists(p) for p in {[here + '/solutions', here + '/README.md', str(tmp_path / 'secret.txt')]!r}])\n"
        f"print('home:', sorted(os.listdir({home!r})) if os.path.isdir({home!r}) else [])\n"
        "print(os.getcwd(), len([p for p in os.listdir('/proc') if p.isdigit()]) < 10)\n"
        "try:\n    socket.create_connection(('127.0.0.1', 22), timeout=1)\n"
        "except OSError as error:\n    print('no network:', type(error).__name__)",
        timeout=30,
    )
    text = output(run)
    assert "[False, False, False]" in text, text
    # of the grader's home, at most the folders that lead to the Python installation
    seen = eval(text.split("home:")[1].split("\n")[0])
    assert all(any(r.startswith(os.path.join(home, name)) for r in _roots()) for name in seen)
    assert "/home/student True" in text and "no network" in text


def _roots():
    from lecture_lib.grading.sandbox import _python_roots

    return _python_roots()


@needs_bwrap
def test_the_library_is_read_only_and_home_is_writable(kernel):
    running, _ = kernel
    run = running.run(
        "import lecture_lib, os\n"
        "try:\n    open(os.path.join(os.path.dirname(lecture_lib.__file__), 'x.py'), 'w')\n"
        "except OSError as error:\n    print('library:', type(error).__name__)\n"
        "open('notes.txt', 'w').write('ok'); print('home:', open('notes.txt').read())",
        timeout=30,
    )
    assert "library: OSError" in output(run) or "library: PermissionError" in output(run)
    assert "home: ok" in output(run)


@needs_bwrap
def test_a_fork_bomb_meets_the_process_limit(kernel):
    running, sandbox = kernel
    if sandbox.groups.kind is None and os.geteuid() == 0:
        pytest.skip("no control group here, and root is not bound by RLIMIT_NPROC")
    run = running.run(
        "import subprocess\nprocs = []\n"
        "try:\n    for _ in range(500):\n        procs.append(subprocess.Popen(['sleep', '60']))\n"
        "except OSError as error:\n    print('stopped after', len(procs), type(error).__name__)\n"
        "for p in procs:\n    p.kill(); p.wait()",
        timeout=60,
    )
    assert "stopped after" in output(run), output(run)
    assert int(output(run).split("stopped after")[1].split()[0]) < 64


@needs_bwrap
def test_memory_beyond_the_limit_ends_only_that_kernel(kernel):
    running, _ = kernel
    run = running.run("hog = bytearray(3 * 2**30)", timeout=60)
    assert run.status == "died" or "MemoryError" in output(run)
    running.restart()
    assert "ok" in output(running.run("print('ok')", timeout=30))


@needs_bwrap
def test_a_cell_that_ignores_interrupts_is_stopped(kernel):
    running, _ = kernel
    start = time.monotonic()
    run = running.run(
        "import signal, time\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\nwhile True:\n"
        "    time.sleep(0.05)",
        timeout=2,
    )
    assert run.status == "unstoppable" and time.monotonic() - start < 20
    running.restart()


def test_grading_a_notebook_without_a_sandbox_still_decides_outside_the_kernel():
    """``sandbox=False`` (only for trusted work): the verdict still comes from the grader."""
    from lecture_lib.grading.execute import Settings, grade_notebook

    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell("import numpy as np\nfrom lecture_lib import checks"),
        nbformat.v4.new_code_cell(
            "def answer(x, r):\n    return np.where(x > 0, r, 0)\n"
            "checks.check_relu_backward = lambda *a, **k: print('✓')"
        ),
        nbformat.v4.new_code_cell('checks.check_relu_backward(answer, rule="deconvnet")'),
    ]
    nb.cells[2].metadata["nbgrader"] = {"grade": True, "solution": False, "grade_id": "t"}
    graded = grade_notebook(nb, Settings(sandbox=False, timeout=60))
    (error,) = [o for o in graded.cells[2].outputs if o.output_type == "error"]
    assert "exactly what the gradient rule gives" in error.evalue


# --- what came back is taken only as asked -----------------------------------------------------


def test_an_observation_without_the_cases_the_check_asked_for_is_refused():
    calls = verdict.parse_check_cell('checks.check_relu_backward(answer, rule="deconvnet", seed=3)')
    seeds = verdict.draw_seeds(calls)
    right = kernel_side(calls, seeds, {"answer": deconvnet_rule})
    assert verdict.decide(calls, seeds, right).passed
    for forged in ([], right[0, 0]["observed"]["cases"][:1], {}, "cases"):
        sent = {(0, 0): {"observed": {"cases": forged}, "library_calls": []}}
        decision = verdict.decide(calls, seeds, sent)
        assert not decision.passed, forged
        assert "earns no points" in decision.failure or "could not be read" in decision.failure
    sent = {(0, 0): {"observed": {}, "library_calls": []}}  # no cases at all
    assert not verdict.decide(calls, seeds, sent).passed


def test_duplicated_unsolicited_and_unreadable_messages_are_refused():
    calls = verdict.parse_check_cell('checks.check_relu_backward(a, rule="deconvnet")')
    one = {"call": 0, "case": 0, "observed": {}, "library_calls": []}
    assert verdict.gather([one], calls) == ({(0, 0): one}, None)
    _, why = verdict.gather([one, dict(one)], calls)
    assert "more than one result" in why
    for stray in ({**one, "call": 1}, {**one, "case": 1}, {**one, "call": "0"}, [1], None):
        _, why = verdict.gather([stray], calls)
        assert "no call of this check cell asked for" in why, stray
    _, why = verdict.gather([ValueError("nested too deep")], calls)
    assert "could not be read" in why


def test_the_wire_refuses_deep_nesting_and_huge_arrays_without_recursing():
    for text in (
        "[" * 200_000 + "]" * 200_000,
        '{"a":' * 60 + "1" + "}" * 60,
        '{"__array__": "AA==", "dtype": "<f8", "shape": [100000000000]}',
        '{"__array__": "AA==", "dtype": "<f8", "shape": [-1]}',
        "1e999999",
    ):
        try:
            value = wire.decode(text)
        except ValueError:
            continue
        assert value == float("inf"), text  # JSON's infinity is data; the judge refuses it


def test_the_grading_copy_lacks_the_answers_and_the_references():
    from lecture_lib.grading import grading_copy

    plan = grading_copy.plan(["check_integrated_gradients"], [{}])
    assert "lecture_lib.attribution.integrated_gradients" in plan.absent
    assert "lecture_lib.attribution.gradient" in plan.absent  # what the judge computes with
    judge = checks.check_integrated_gradients.judge
    assert f"{judge.__module__}.{judge.__name__}" in plan.absent
    assert "lecture_lib.checks.core.observe" not in plan.absent  # the run half's own helper
    folder = grading_copy.build(plan)
    assert not list(folder.rglob("*.pyc")) and not list(folder.rglob("__pycache__"))
    text = (folder / "attribution.py").read_text()
    assert "NotAvailableWhileGrading" in text
    smooth = grading_copy.plan(["check_smoothgrad"], [{"method": "saliency"}])
    assert "lecture_lib.attribution.saliency" not in smooth.absent  # handed to the answer
    assert "lecture_lib.attribution.smoothgrad" in smooth.absent
    allowed = grading_copy.plan(["check_integrated_gradients"], [{}], keep_answers=True)
    assert "lecture_lib.attribution.integrated_gradients" not in allowed.absent


def test_in_the_sandbox_the_library_answer_is_absent_from_every_copy(tmp_path):
    from lecture_lib.grading import grading_copy
    from lecture_lib.grading.kernel import SandboxKernel
    from lecture_lib.grading.sandbox import GiB, Sandbox

    plan = grading_copy.plan(["check_integrated_gradients"], [{}])
    with Sandbox(memory_limit=GiB, library=grading_copy.build(plan)) as sandbox:
        running = SandboxKernel(sandbox)
        running.start()
        try:
            run = running.run(
                "import glob, threading, lecture_lib, sys\n"
                "from lecture_lib import attribution as A\n"
                "out = []\n"
                "def worker():\n"
                "    try:\n"
                "        A.integrated_gradients(None, None, 0)\n"
                "    except Exception as error:\n"
                "        out.append(type(error).__name__)\n"
                "t = threading.Thread(target=worker); t.start(); t.join()\n"
                "print(out)\n"
                "roots = [r for r in sys.path if r] + ['/work', '/tmp', '/home', '/opt']\n"
                "found = {p for r in roots for p in glob.glob(r + '/**/lecture_lib/**', recursive=True)}\n"
                "sources = [p for p in found if p.endswith('attribution.py')]\n"
                "print(all(b'NotAvailableWhileGrading' in open(p, 'rb').read() for p in sources),"
                " len(sources) > 0)\n"
                "print(len([p for p in found if p.endswith('.pyc')]))\n",
                timeout=300,
            )
        finally:
            running.stop()
    printed = "".join(o.get("text", "") for o in run.outputs)
    assert "['NotAvailableWhileGrading']" in printed, run.outputs
    assert printed.splitlines()[-2] == "True True"  # every copy of the source lacks it
    assert printed.splitlines()[-1] == "0"  # no bytecode of the library anywhere


def test_dev_shm_is_private_and_capped_like_tmp():
    from lecture_lib.grading.kernel import SandboxKernel
    from lecture_lib.grading.sandbox import GiB, Sandbox

    with Sandbox(memory_limit=GiB, disk_limit=64 * 2**20) as sandbox:
        running = SandboxKernel(sandbox)
        running.start()
        try:
            run = running.run(
                "import os\nprint(os.listdir('/dev/shm'))\nwritten = 0\ntry:\n"
                "    with open('/dev/shm/f', 'wb') as f:\n"
                "        for _ in range(200):\n"
                "            f.write(b'x' * 2**20)\n            f.flush()\n            written += 1\n"
                "except OSError as e:\n    print('refused', written)\n",
                timeout=60,
            )
        finally:
            running.stop()
    text = "".join(o.get("text", "") for o in run.outputs)
    assert text.startswith("[]") and "refused" in text, run.outputs
    assert int(text.split("refused")[1].split()[0]) <= 64


def test_a_submission_stops_at_its_time_budget_and_keeps_its_points():
    from lecture_lib.grading.execute import Settings, grade_notebook

    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell("import numpy as np"),
        nbformat.v4.new_code_cell("def answer(x, r):\n    return np.where(r > 0, r, 0)"),
        nbformat.v4.new_code_cell('checks.check_relu_backward(answer, rule="deconvnet")'),
    ] + [nbformat.v4.new_code_cell("import time\ntime.sleep(5)") for _ in range(30)]
    nb.cells.append(
        nbformat.v4.new_code_cell('checks.check_relu_backward(answer, rule="deconvnet")')
    )
    for index in (2, len(nb.cells) - 1):
        nb.cells[index].metadata["nbgrader"] = {
            "grade": True,
            "solution": False,
            "grade_id": f"t{index}",
        }
    start = time.monotonic()
    graded = grade_notebook(nb, Settings(timeout=4, submission_timeout=30))
    took = time.monotonic() - start
    assert took < 30 + 60, took  # the budget, plus the kernel's start and the last interrupt
    assert not [o for o in graded.cells[2].outputs if o.output_type == "error"]
    notes = "".join(str(o) for c in graded.cells[3:] for o in c.outputs)
    assert "used up its 30 s of grading time" in notes
    (error,) = [o for o in graded.cells[-1].outputs if o.output_type == "error"]
    assert error.ename == "NotGraded"


def test_the_instant_check_notes_the_library_answer_called_from_a_worker_thread(capsys):
    from concurrent.futures import ThreadPoolExecutor

    from lecture_lib import attribution

    alias = attribution

    def answer(model, x, baseline, steps):
        with ThreadPoolExecutor(1) as pool:
            job = pool.submit(alias.integrated_gradients, model, x, 0, baseline=baseline)
            return job.result()

    checks.check_integrated_gradients(answer)
    assert "the library's own answer" in capsys.readouterr().out
