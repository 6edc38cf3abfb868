"""The homework grades itself, and no submission can fool or harm it: nbgrader's real commands
on a temporary copy of the course.

The copy holds nbgrader_config.py, solutions/ and exercises/. In it, generate_assignment
rebuilds the student versions (which must equal the committed exercises/), simulated students
hand in notebooks, and autograde, generate_feedback and export grade them as an instructor
would. Every assignment is graded for its full solution and its untouched exercise. Assignment
04 also meets the hostile students of ``HOSTILE``: each one tries one way to get points it has
not earned, or to harm the grader, the gradebook or the other students, and each has its exact
expected score. The submissions are executed two at a time (``c.SandboxedExecute.workers``).
"""

from __future__ import annotations

import copy
import csv
import hashlib
import http.server
import os
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
ASSIGNMENTS = sorted(p.name for p in (ROOT / "solutions").iterdir() if p.is_dir())
SCENARIOS = "04_deconvnet"  # the assignment that also meets the hostile students
TIMEOUT = 15  # seconds per cell while grading
NEEDS_BWRAP = pytest.mark.skipif(
    shutil.which("bwrap") is None,
    reason="autograding runs submissions in a sandbox: install the Debian package bubblewrap",
)
pytestmark = NEEDS_BWRAP

Q1, Q2, Q3 = "test_relu_backward_deconvnet", "test_deconv_relu", "test_with_relu_function"
POINTS = {Q1: 2, Q2: 2, Q3: 3}


def nbgrader(course: Path, *args: str, check: bool = True, **env) -> subprocess.CompletedProcess:
    """Run ``python -m nbgrader ARGS`` in the course directory; fail with its log."""
    # One thread per kernel: on a busy 2-core machine PyTorch's default thread pool spins against
    # the other processes and the small model runs many times slower. Scores do not depend on it.
    environment = dict(os.environ, OMP_NUM_THREADS="1", **env)
    result = subprocess.run(
        [sys.executable, "-m", "nbgrader", *args],
        cwd=course,
        env=environment,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    if check:
        assert result.returncode == 0, f"nbgrader {' '.join(args)} failed:\n{result.stderr[-5000:]}"
    return result


def notebook_path(folder: Path, assignment: str) -> Path:
    return folder / assignment / f"{assignment}.ipynb"


def read(path: Path) -> nbformat.NotebookNode:
    return nbformat.read(path, as_version=4)


def cell(nb: nbformat.NotebookNode, grade_id: str) -> nbformat.NotebookNode:
    (found,) = [c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") == grade_id]
    return found


def replace(nb, grade_id: str, old: str, new: str):
    answer = cell(nb, grade_id)
    assert old in answer.source, (grade_id, old)
    answer.source = answer.source.replace(old, new)
    return nb


def insert_after(nb, grade_id: str, source: str):
    nb.cells.insert(nb.cells.index(cell(nb, grade_id)) + 1, nbformat.v4.new_code_cell(source))
    return nb


# --- the simulated students of assignment 04 ----------------------------------------------------
# Each takes the full solution ``nb`` (or the released exercise ``ex``) and the course's path.

WRONG_Q1 = ("grad_output > 0", "forward_input > 0")


def wrong(nb, ex, course):
    """Question 1 answered with the gradient rule instead of DeconvNet's."""
    return replace(nb, "relu_backward_deconvnet", *WRONG_Q1)


def loop(nb, ex, course):
    """Question 1's function never returns; the interrupt stops it."""
    cell(
        nb, "relu_backward_deconvnet"
    ).source = (
        "def relu_backward_deconvnet(forward_input, grad_output):\n    while True:\n        pass"
    )
    return nb


def swallows_interrupt(nb, ex, course):
    """Question 1's function ignores SIGINT and swallows KeyboardInterrupt in an endless loop."""
    cell(nb, "relu_backward_deconvnet").source = (
        "import signal, time\n"
        "def relu_backward_deconvnet(forward_input, grad_output):\n"
        "    signal.signal(signal.SIGINT, signal.SIG_IGN)\n"
        "    while True:\n"
        "        try:\n"
        "            time.sleep(0.1)\n"
        "        except BaseException:\n"
        "            pass\n"
    )
    return nb


def edited_test(nb, ex, course):
    """Question 2 answered wrongly, and its check cell edited to `pass` to hide it."""
    replace(nb, "deconv_relu", "return grad_output.clamp(min=0)", "return grad_output")
    cell(nb, Q2).source = "pass"
    return nb


def duplicated(nb, ex, course):
    """Question 3's cell copied: the first copy left as released, the answer in the second."""
    index = nb.cells.index(cell(nb, "with_relu_function"))
    stub = copy.deepcopy(cell(ex, "with_relu_function"))
    stub.id = "copied-cell"
    nb.cells.insert(index, stub)
    return nb


def deleted_check(nb, ex, course):
    """Question 2's check cell deleted (a correct answer): nbgrader puts it back and grades it."""
    nb.cells.remove(cell(nb, Q2))
    return nb


def duplicated_check(nb, ex, course):
    """Question 3's check cell copied to the top, before anything it needs is defined."""
    copied = copy.deepcopy(cell(nb, Q3))
    copied.id = "copied-check"
    nb.cells.insert(1, copied)
    return nb


def role_change(nb, ex, course):
    """Question 1 wrong, and its check cell's metadata turned into a student's written answer."""
    wrong(nb, ex, course)
    cell(nb, Q1).metadata.nbgrader.update(solution=True, locked=False)
    return nb


def reads_solution(nb, ex, course):
    """Every answer taken from the instructor's solutions on disk (and a look around: the
    gradebook, the instructor's home, the network)."""
    for grade_id in ("relu_backward_deconvnet", "deconv_relu", "with_relu_function"):
        cell(nb, grade_id).source = "# answered at the top"
    return insert_after(
        nb,
        "setup",
        "import glob, json, os, urllib.request\n"
        f"COURSE = {str(course)!r}\n"
        "seen = {p: os.path.exists(p) for p in [COURSE, COURSE + '/grading/gradebook.db', "
        "COURSE + '/solutions', '/etc/shadow', '/etc/passwd']}\n"
        "print('seen:', seen)\n"
        f"try:\n    urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('LEAK_PORT', "
        f"'{{port}}') + '/leak', timeout=3)\nexcept Exception as error:\n    print('network:', error)\n"
        "for path in glob.glob(COURSE + '/solutions/*/*.ipynb') + glob.glob('../../../../solutions/*/*.ipynb'):\n"
        "    if path.endswith('04_deconvnet.ipynb'):\n"
        "        for c in json.load(open(path))['cells']:\n"
        "            text = ''.join(c['source'])\n"
        "            if c['cell_type'] == 'code' and 'BEGIN SOLUTION' in text:\n"
        "                exec(text, globals())\n",
    )


def patches(nb, ex, course):
    """Nothing answered; everything in the kernel that could decide a grade patched to pass."""
    nb = copy.deepcopy(ex)
    return insert_after(
        nb,
        "setup",
        "import numpy, torch, IPython\n"
        "import lecture_lib.checks as C, lecture_lib.grading.collect as G\n"
        "for name in dir(C):\n"
        "    if name.startswith('check_'):\n"
        "        setattr(C, name, lambda *a, **k: print('✓ passed'))\n"
        "C._compare = lambda *a, **k: None\n"
        "numpy.allclose = numpy.array_equal = lambda *a, **k: True\n"
        "torch.equal = torch.allclose = lambda *a, **k: True\n"
        "G.observe_call = lambda *a: {'observed': {}, 'library_calls': []}\n"
        "G.send_observations = lambda calls: 3.0  # an execute_result nbgrader would take as points\n"
        "IPython.get_ipython().events.register('post_run_cell', lambda *a: print('✓ all passed'))\n",
    )


def writes_everything(nb, ex, course):
    """Full answers, and an attempt to write the gradebook, the solutions, another student's
    submission and the course's configuration, and to leave processes running."""
    targets = [
        course / "grading" / "gradebook.db",
        notebook_path(course / "solutions", SCENARIOS),
        notebook_path(course / "grading" / "submitted" / "wrong", SCENARIOS),
        course / "nbgrader_config.py",
    ]
    return insert_after(
        nb,
        "setup",
        "import sqlite3, subprocess\n"
        f"for path in {[str(t) for t in targets]!r}:\n"
        "    try:\n"
        "        if path.endswith('.db'):\n"
        "            db = sqlite3.connect('file:' + path + '?mode=rw', uri=True)\n"
        "            db.execute(\"UPDATE source_cells SET source = 'pass'\")\n"
        "            db.commit()\n"
        "        else:\n"
        "            open(path, 'w').write('{}')\n"
        "        print('WROTE', path)\n"
        "    except Exception as error:\n"
        "        print('refused:', type(error).__name__)\n"
        "for _ in range(5):\n"
        "    subprocess.Popen(['sleep', '987654'])\n",
    )


def warns(nb, ex, course):
    """Correct answers whose code writes a warning and a line to stderr."""
    return replace(
        nb,
        "relu_backward_deconvnet",
        "return np.where",
        "import sys, warnings\n"
        "    warnings.warn('a warning from the student code')\n"
        "    print('a line on stderr', file=sys.stderr)\n"
        "    return np.where",
    )


def exits(nb, ex, course):
    """Question 2's backward pass ends the kernel process (os._exit) when the check calls it."""
    return replace(
        nb, "deconv_relu", "return grad_output.clamp(min=0)", "import os\n        os._exit(0)"
    )


def killed(nb, ex, course):
    """Question 1's cell defines the answer and then kills its own kernel."""
    answer = cell(nb, "relu_backward_deconvnet")
    answer.source += "\nimport os, signal\nos.kill(os.getpid(), signal.SIGKILL)"
    return nb


def memory(nb, ex, course):
    """Question 2's backward pass asks for 8 GiB, more than a submission may use."""
    return replace(
        nb,
        "deconv_relu",
        "return grad_output.clamp(min=0)",
        "hog = bytearray(8 * 2**30)\n        return grad_output.clamp(min=0)",
    )


WRITTEN_ATTACKS = (
    "\n<script>alert(2)</script>\n\n[see](javascript:alert(3)) "
    "![x](data:image/svg+xml;base64,PHN2ZyBvbmxvYWQ9YWxlcnQoNCk+PC9zdmc+) "
    '<a href="javascript:alert(5)">y</a> <img src=x onerror=alert(6)> '
    "so a < b & c > d, and $S_c(I) \\approx w^T I + b$\n"
)


def floods(nb, ex, course):
    """A 50 MB line of output, a large HTML output with a script, and a script in a written
    answer (which the instructor opens in the Formgrader)."""
    cell(nb, "deconvnet_written").source += WRITTEN_ATTACKS
    return insert_after(
        nb,
        "setup",
        "from IPython.display import display\n"
        "print('x' * 50_000_000)\n"
        "display({'text/html': '<script>alert(1)</script>' * 200_000}, raw=True)\n",
    )


def library_answer(nb, ex, course):
    """Question 1 answered by calling the library's own answer."""
    cell(nb, "relu_backward_deconvnet").source = (
        "from lecture_lib import rules as R\n\n"
        "def relu_backward_deconvnet(forward_input, grad_output):\n"
        '    return R.relu_backward(forward_input, grad_output, "deconvnet")\n'
    )
    return nb


def hardcoded(nb, ex, course):
    """Question 1 answered with the slide's table: the visible check passes, the hidden one not."""
    cell(nb, "relu_backward_deconvnet").source = (
        "def relu_backward_deconvnet(forward_input, grad_output):\n"
        "    return np.array([[0, 3, 0], [6, 0, 1], [2, 0, 3]])\n"
    )
    return nb


FORGE = (
    "import IPython, numpy as np\n"
    "from IPython.display import display\n"
    "from lecture_lib import rules, checks\n"
    "from lecture_lib.grading import wire\n"
    "def forged(call, seed):\n"
    "    # the library's own answer, computed on the check's own cases: absent while grading\n"
    "    try:\n"
    "        cases = checks.relu_rules._relu_cases(seed)\n"
    "        return {'cases': [{'got': rules.relu_backward(x, r, 'deconvnet'), 'in_place': False}\n"
    "                          for x, r in cases]}\n"
    "    except Exception as error:\n"
    "        print('forging failed:', type(error).__name__)\n"
    "        return {'cases': []}\n"
)


def forged_messages(nb, ex, course):
    """Nothing answered; an event hook displays results of its own, computed with the library's
    answer (or with no cases at all), whenever a check cell runs."""
    return insert_after(
        copy.deepcopy(ex),
        "setup",
        FORGE + "def hook(info):\n"
        "    if 'send_observations' in (info.raw_cell or ''):\n"
        "        for call in range(4):\n"
        "            message = {'call': call, 'case': 0, 'observed': forged(call, None),\n"
        "                       'library_calls': []}\n"
        "            display({wire.MIME: wire.encode(message)}, raw=True)\n"
        "IPython.get_ipython().events.register('pre_run_cell', hook)\n",
    )


def forged_patch(nb, ex, course):
    """Nothing answered; an event hook replaces the grading code in the kernel so that each check
    sends only a forged result: the library's answer where it can, else no cases at all."""
    return insert_after(
        copy.deepcopy(ex),
        "setup",
        FORGE + "import lecture_lib.grading.collect as G\n"
        "def fake(check, answer, options, seed):\n"
        "    return {'observed': forged(check, seed), 'library_calls': []}\n"
        "def hook(info):\n"
        "    G.observe_call = fake\n"
        "IPython.get_ipython().events.register('pre_run_cell', hook)\n",
    )


def threaded_library(nb, ex, course):
    """Question 1 answered by the library's own answer, called through an alias in a worker
    thread (the kernel's call tracing sees only its own thread)."""
    cell(nb, "relu_backward_deconvnet").source = (
        "from concurrent.futures import ThreadPoolExecutor\n"
        "import lecture_lib\n"
        "R = lecture_lib.rules\n\n"
        "def relu_backward_deconvnet(forward_input, grad_output):\n"
        "    if True:\n"
        "        def inner():\n"
        "            return R.relu_backward(forward_input, grad_output, 'deconvnet')\n"
        "    with ThreadPoolExecutor(1) as pool:\n"
        "        return pool.submit(inner).result()\n"
    )
    return nb


def searches_the_files(nb, ex, course):
    """Question 1 answered by the library's own code, searched for in every file the kernel can
    read (the Python environment, /tmp, home): sources and bytecode of any lecture_lib copy."""
    cell(nb, "relu_backward_deconvnet").source = (
        "import marshal, os, sys\n"
        "found = {}\n"
        "roots = {sys.prefix, sys.base_prefix, os.path.dirname(os.__file__), '/tmp',\n"
        "         os.path.expanduser('~'), os.getcwd()}\n"
        "for root in roots:\n"
        "    for top, _, files in os.walk(root):\n"
        "        for name in files:\n"
        "            path = os.path.join(top, name)\n"
        "            if 'lecture_lib' not in path or not name.endswith(('.py', '.pyc')):\n"
        "                continue\n"
        "            try:\n"
        "                if name.endswith('.py'):\n"
        "                    text = open(path).read()\n"
        "                    if 'def relu_backward(' not in text or 'NotAvailable' in text:\n"
        "                        continue\n"
        "                    code = compile(text, path, 'exec')\n"
        "                else:\n"
        "                    code = marshal.loads(open(path, 'rb').read()[16:])\n"
        "                space = {'__name__': 'lecture_lib.found', '__package__': 'lecture_lib'}\n"
        "                exec(code, space)\n"
        "                if 'relu_backward' in space:\n"
        "                    found[path] = space['relu_backward']\n"
        "            except Exception:\n"
        "                pass\n"
        "print('copies with a working relu_backward:', sorted(found))\n\n"
        "def relu_backward_deconvnet(forward_input, grad_output):\n"
        "    for relu_backward in found.values():\n"
        "        return relu_backward(forward_input, grad_output, 'deconvnet')\n"
        "    raise NotImplementedError('no copy of the answer found')\n"
    )
    return nb


def odd_messages(nb, ex, course):
    """Correct answers; while question 2's check runs, the kernel sends results nested 100,000
    deep, a huge number, and messages with odd headers and content."""
    return insert_after(
        nb,
        "setup",
        "import IPython\n"
        "from IPython.display import display\n"
        "from lecture_lib.grading import wire\n"
        "def hook(info):\n"
        "    if 'check_relu_function' in (info.raw_cell or ''):\n"
        "        display({wire.MIME: '[' * 100_000 + ']' * 100_000}, raw=True)\n"
        "        display({wire.MIME: {'not': 'text'}}, raw=True)\n"
        "        display({wire.MIME: '{\"call\": 1e999999}'}, raw=True)\n"
        "        kernel = IPython.get_ipython().kernel\n"
        "        kernel.session.send(kernel.iopub_socket, 'display_data', content=[1, 2],\n"
        "                            parent=kernel.get_parent())\n"
        "        kernel.session.send(kernel.iopub_socket, 'stream',\n"
        "                            content={'name': 'stdout', 'text': [[[]]]},\n"
        "                            parent=kernel.get_parent())\n"
        "IPython.get_ipython().events.register('pre_run_cell', hook)\n"
        "display({wire.MIME: '[' * 100_000 + ']' * 100_000}, raw=True)  # outside a check: ignored\n",
    )


def fills_shm(nb, ex, course):
    """Correct answers; a cell writes to /dev/shm until it is full."""
    return insert_after(
        nb,
        "setup",
        "written = 0\n"
        "try:\n"
        "    with open('/dev/shm/fill', 'wb') as file:\n"
        "        for _ in range(1100):\n"
        "            file.write(b'x' * 2**20)\n"
        "            written += 1\n"
        "except OSError as error:\n"
        "    print('shm refused:', type(error).__name__)\n"
        "print('shm written MiB:', written)\n"
        "import os\n"
        "os.remove('/dev/shm/fill')\n",
    )


HOSTILE = {
    # student: (how, the questions it loses)
    "wrong": (wrong, [Q1]),
    "loop": (loop, [Q1]),
    "swallows_interrupt": (swallows_interrupt, [Q1]),
    "edited": (edited_test, [Q2]),
    "duplicated": (duplicated, []),
    "deleted_check": (deleted_check, []),
    "duplicated_check": (duplicated_check, []),
    "role_change": (role_change, [Q1]),
    "reads_solution": (reads_solution, [Q1, Q2, Q3]),
    "patches": (patches, [Q1, Q2, Q3]),
    "writes_everything": (writes_everything, []),
    "warns": (warns, []),
    "exits": (exits, [Q2]),
    "killed": (killed, [Q1]),
    "memory": (memory, [Q2]),
    "floods": (floods, []),
    "library_answer": (library_answer, [Q1]),
    "hardcoded": (hardcoded, [Q1]),
    "forged_messages": (forged_messages, [Q1, Q2, Q3]),
    "forged_patch": (forged_patch, [Q1, Q2, Q3]),
    "threaded_library": (threaded_library, [Q1]),
    "searches_the_files": (searches_the_files, [Q1]),
    "odd_messages": (odd_messages, [Q2]),
    "fills_shm": (fills_shm, []),
}

BROKEN = {  # submissions that are not a notebook of this assignment: zero, with a note
    "not_json": lambda solution: nbformat.writes(solution)[:5000],
    "no_cells": lambda solution: nbformat.writes(nbformat.v4.new_notebook()),
    "other_assignment": lambda solution: nbformat.writes(
        read(notebook_path(ROOT / "solutions", "03_saliency"))
    ),
    "binary": lambda solution: bytes(range(256)) * 100,
}


def library_integrated_gradients(nb):
    """Assignment 02: integrated gradients by calling attribution.integrated_gradients."""
    cell(nb, "integrated_gradients").source = (
        "def integrated_gradients(model, x, baseline, steps):\n"
        "    return attribution.integrated_gradients(model, x, 0, baseline=baseline, steps=steps)\n"
    )
    return nb


def threaded_integrated_gradients(nb):
    """Assignment 02: attribution.integrated_gradients through an alias, in a worker thread."""
    cell(nb, "integrated_gradients").source = (
        "from concurrent.futures import ThreadPoolExecutor\n"
        "A = attribution\n\n"
        "def integrated_gradients(model, x, baseline, steps):\n"
        "    with ThreadPoolExecutor(1) as pool:\n"
        "        job = pool.submit(A.integrated_gradients, model, x, 0, baseline=baseline, steps=steps)\n"
        "        return job.result()\n"
    )
    return nb


def step_images_deletion_curve(nb):
    """Assignment 06: the deletion curve from ``evaluate.step_images`` (the images lecture 06's
    explorer shows at each step), its name put together at run time: the model's probabilities
    on those images are the curve."""
    cell(nb, "deletion_curve").source = (
        "import importlib\n\n"
        "def deletion_curve(model, image, importance, target, steps):\n"
        "    library = importlib.import_module('lecture_lib.' + 'evaluate')\n"
        "    shown = getattr(library, 'step' + '_images')(image, importance, steps=steps)\n"
        "    with torch.no_grad():\n"
        "        return model(shown).softmax(dim=1)[:, target]\n"
    )
    return nb


def students(assignment: str, course: Path, port: int) -> dict:
    """Each student's submission (a notebook, or raw text/bytes), by student id."""
    solution = read(notebook_path(ROOT / "solutions", assignment))
    exercise = read(notebook_path(ROOT / "exercises", assignment))
    handed_in = {"full": solution, "untouched": exercise}
    if assignment == "02_saturation":
        handed_in["library_answer"] = library_integrated_gradients(copy.deepcopy(solution))
        handed_in["library_thread"] = threaded_integrated_gradients(copy.deepcopy(solution))
    if assignment == "06_evaluation":
        handed_in["step_images"] = step_images_deletion_curve(copy.deepcopy(solution))
    if assignment == SCENARIOS:
        for student, (how, _) in HOSTILE.items():
            nb = how(copy.deepcopy(solution), copy.deepcopy(exercise), course)
            for c in nb.cells:
                c.source = c.source.replace("{port}", str(port))
            handed_in[student] = nb
        for student, make in BROKEN.items():
            handed_in[student] = make(solution)
    return handed_in


def file_hashes(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


class Listener(http.server.BaseHTTPRequestHandler):
    """Records every request: no submission may reach the network."""

    requests: list[str] = []

    def do_GET(self):  # noqa: N802 (http.server's name)
        Listener.requests.append(self.path)
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


# --- the course, generated and graded once for all tests --------------------------------------


@pytest.fixture(scope="session")
def course(tmp_path_factory, make_course) -> Path:
    course = make_course(tmp_path_factory.mktemp("course"))
    nbgrader(course, "generate_assignment", "*", "--force")
    return course


@pytest.fixture(scope="session")
def graded(course) -> dict:
    """Hand in every submission, autograde all, generate feedback and export grades."""
    server = http.server.HTTPServer(("127.0.0.1", 0), Listener)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    submitted = course / "grading" / "submitted"
    for assignment in ASSIGNMENTS:
        for student, nb in students(assignment, course, server.server_address[1]).items():
            path = notebook_path(submitted / student, assignment)
            path.parent.mkdir(parents=True)
            if isinstance(nb, bytes):
                path.write_bytes(nb)
            else:
                path.write_text(nb if isinstance(nb, str) else nbformat.writes(nb))
    protected = ("solutions", "exercises", "grading/submitted")
    before = {folder: file_hashes(course / folder) for folder in protected}
    config_before = (course / "nbgrader_config.py").read_bytes()
    result = nbgrader(
        course, "autograde", "*", "--create", "--force", f"--ExecutePreprocessor.timeout={TIMEOUT}"
    )
    server.shutdown()
    after = {folder: file_hashes(course / folder) for folder in protected}
    nbgrader(course, "generate_feedback", SCENARIOS, "--force")
    nbgrader(course, "export", "--to", str(course / "grades.csv"))
    return {
        "before": before,
        "after": after,
        "config_unchanged": config_before == (course / "nbgrader_config.py").read_bytes(),
        "scores": gradebook_scores(course),
        "log": result.stdout + result.stderr,
        "requests": list(Listener.requests),
        "leftover": subprocess.run(["pgrep", "-f", "sleep 987654"], capture_output=True).stdout,
    }


def gradebook_scores(course: Path) -> dict:
    """``{(assignment, student): {grade_id: (auto_score, max_score, needs_manual_grade)}}``."""
    from nbgrader.api import Gradebook

    scores = {}
    url = "sqlite:///" + str(course / "grading" / "gradebook.db")
    with Gradebook(url, "explaining-convnets") as gb:
        for assignment in ASSIGNMENTS:
            for submission in gb.assignment_submissions(assignment):
                (notebook,) = submission.notebooks
                scores[assignment, submission.student.id] = {
                    grade.name: (grade.auto_score, grade.max_score, grade.needs_manual_grade)
                    for grade in notebook.grades
                }
    return scores


def auto_graded(scores: dict) -> dict:
    """The autograded cells' scores (written answers, graded by hand, left out)."""
    return {name: s for name, s in scores.items() if not name.endswith("_written")}


def feedback(course: Path, student: str) -> str:
    path = notebook_path(course / "grading" / "feedback" / student, SCENARIOS).with_suffix(".html")
    return path.read_text()


# --- the student versions ---------------------------------------------------------------------


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_exercises_are_what_generate_assignment_makes(course, assignment):
    committed = read(notebook_path(ROOT / "exercises", assignment))
    generated = read(notebook_path(course / "exercises", assignment))
    assert committed.metadata.kernelspec == generated.metadata.kernelspec
    assert len(committed.cells) == len(generated.cells)
    for ours, theirs in zip(committed.cells, generated.cells):
        assert ours.cell_type == theirs.cell_type
        assert ours.get("id") == theirs.get("id")
        assert ours.source == theirs.source, f"cell {ours.get('id')} differs: regenerate exercises/"
        assert ours.metadata == theirs.metadata, f"cell {ours.get('id')}: metadata differs"
        if ours.cell_type == "code":
            assert ours.outputs == theirs.outputs == []


REGION = re.compile(r"### BEGIN (SOLUTION|HIDDEN TESTS)\n.*?### END \1", flags=re.S)


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_exercises_hold_no_solution_no_hidden_test_no_output(assignment):
    solution = read(notebook_path(ROOT / "solutions", assignment))
    exercise = read(notebook_path(ROOT / "exercises", assignment))
    text = nbformat.writes(exercise)
    for marker in ("BEGIN SOLUTION", "END SOLUTION", "BEGIN HIDDEN TESTS", "END HIDDEN TESTS"):
        assert marker not in text
    released = {c.id: c for c in exercise.cells}
    regions = 0
    for c in solution.cells:
        kept = {line.strip() for line in REGION.sub("", c.source).splitlines()}
        stub = released[c.id].source
        for region in REGION.finditer(c.source):
            regions += 1
            lines = {line.strip() for line in region.group(0).splitlines()} - kept
            for line in lines:
                if len(line) >= 12:  # a distinctive line of a solution or a hidden test
                    assert line not in stub, f"cell {c.id} releases: {line}"
            if region.group(1) == "SOLUTION":
                assert "YOUR CODE HERE" in stub or "YOUR ANSWER HERE" in stub
    assert regions >= 4  # solutions, written answers and hidden tests
    for c in exercise.cells:
        if c.cell_type == "code":
            assert c.outputs == [] and c.execution_count is None


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_every_assignment_has_graded_checks_and_a_written_answer(assignment):
    from lecture_lib.grading.verdict import parse_check_cell

    solution = read(notebook_path(ROOT / "solutions", assignment))
    graded = [c for c in solution.cells if c.metadata.get("nbgrader", {}).get("grade")]
    tests = [c for c in graded if c.cell_type == "code"]
    written = [c for c in graded if c.cell_type == "markdown"]
    assert len(tests) >= 2 and len(written) >= 1
    assert all(c.metadata.nbgrader.get("solution") for c in written)
    for test in tests:
        assert parse_check_cell(test.source), test.source  # only calls of checks, readable
    hidden = [c for c in tests if "### BEGIN HIDDEN TESTS" in c.source]
    assert len(hidden) >= len(tests) - 1  # only a by-hand answer has no fresh random case


# --- grading -------------------------------------------------------------------------------------


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_full_solution_gets_every_autograded_point(graded, assignment):
    scores = graded["scores"][assignment, "full"]
    for name, (auto, maximum, _) in auto_graded(scores).items():
        assert auto == maximum, f"{assignment}: {name} scored {auto} of {maximum}"
    written = [s for name, s in scores.items() if name.endswith("_written")]
    assert written and all(needs_manual for _, _, needs_manual in written)


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_untouched_exercise_gets_zero(graded, assignment):
    scores = graded["scores"][assignment, "untouched"]
    assert sum(auto or 0 for auto, _, _ in scores.values()) == 0, scores


def lost_points(graded, student: str, assignment: str = SCENARIOS) -> dict:
    """The cells where ``student`` scored less than the full solution, with the points lost."""
    full = graded["scores"][assignment, "full"]
    theirs = graded["scores"][assignment, student]
    assert theirs.keys() == full.keys()
    return {
        name: full[name][0] - (theirs[name][0] or 0)
        for name in auto_graded(full)
        if theirs[name][0] != full[name][0]
    }


@pytest.mark.parametrize("student", sorted(HOSTILE))
def test_each_hostile_student_gets_exactly_its_points(graded, student):
    expected = {question: POINTS[question] for question in HOSTILE[student][1]}
    assert lost_points(graded, student) == expected, HOSTILE[student][0].__doc__


@pytest.mark.parametrize("student", sorted(BROKEN))
def test_a_submission_that_is_no_notebook_of_the_assignment_scores_zero_and_says_why(
    graded, course, student
):
    scores = graded["scores"][SCENARIOS, student]
    assert sum(auto or 0 for auto, _, _ in scores.values()) == 0
    assert "Grading note" in feedback(course, student)
    assert student_mentioned(graded["log"], student)


def student_mentioned(log: str, student: str) -> bool:
    return any(student in line and "ERROR" in line for line in log.splitlines())


def test_the_other_assignment_is_named_in_the_note(course):
    assert "03_saliency" in feedback(course, "other_assignment")


def test_an_answer_that_calls_the_library_earns_nothing_and_is_told_why(graded, course):
    for student in ("library_answer", "library_thread"):
        assert lost_points(graded, student, "02_saturation") == {"test_integrated_gradients": 3}
    assert "the library's own answer" in feedback(course, "library_answer")
    assert "not available while grading" in feedback(course, "threaded_library")


def test_a_deletion_curve_from_the_explorers_step_images_earns_nothing(graded):
    # a correct answer outside grading (the instant check passes it, with a note)
    assert lost_points(graded, "step_images", "06_evaluation") == {"test_deletion_curve": 3}


def test_forged_results_are_refused_and_said_so(course):
    assert "no call of this check cell asked for" in feedback(course, "forged_messages")
    page = feedback(course, "forged_patch")
    assert "forging failed" in page and "the check asked for" in page


def test_a_message_the_grader_cannot_read_costs_only_its_cell(graded, course):
    assert "could not be read" in feedback(course, "odd_messages")
    lines = [line for line in graded["log"].splitlines() if "odd_messages" in line]
    assert any("could not be read" in line for line in lines), lines


def test_shared_memory_is_capped_like_tmp(course):
    graded_nb = read(notebook_path(course / "grading" / "autograded" / "fills_shm", SCENARIOS))
    printed = "".join(
        o.get("text", "") for c in graded_nb.cells if c.cell_type == "code" for o in c.outputs
    )
    assert "shm refused: OSError" in printed
    written = int(printed.split("shm written MiB:")[1].split()[0])
    assert written <= 512


def test_nothing_a_submission_does_changes_the_course_or_other_submissions(graded):
    assert graded["before"] == graded["after"]
    assert graded["config_unchanged"]
    submissions = len(graded["before"]["grading/submitted"])
    # full and untouched of each; 02's two library answers and 06's step_images; the scenarios
    assert submissions == 2 * len(ASSIGNMENTS) + 3 + len(HOSTILE) + len(BROKEN)


def test_no_submission_reaches_the_network_or_leaves_a_process(graded):
    assert graded["requests"] == []
    assert graded["leftover"] == b""


def test_the_sandbox_hid_the_course_from_the_student(course):
    graded_nb = read(notebook_path(course / "grading" / "autograded" / "reads_solution", SCENARIOS))
    printed = "".join(
        o.get("text", "") for c in graded_nb.cells if c.cell_type == "code" for o in c.outputs
    )
    assert "seen:" in printed and "True" not in printed.split("seen:")[1].split("\n")[0]
    writes = read(notebook_path(course / "grading" / "autograded" / "writes_everything", SCENARIOS))
    printed = "".join(
        o.get("text", "") for c in writes.cells if c.cell_type == "code" for o in c.outputs
    )
    assert printed.count("refused:") == 4 and "WROTE" not in printed  # four paths, none written


def test_an_edited_test_cell_is_restored_and_fails(graded, course):
    autograded = read(notebook_path(course / "grading" / "autograded" / "edited", SCENARIOS))
    original = cell(read(notebook_path(ROOT / "solutions", SCENARIOS)), Q2)
    assert cell(autograded, Q2).source == original.source


def test_a_dead_kernel_is_explained_in_the_feedback(course):
    for student in ("exits", "killed", "memory"):
        assert "Grading went on in a fresh kernel" in feedback(course, student), student
    assert "did not stop when interrupted" in feedback(course, "swallows_interrupt")


def test_outputs_are_capped_and_keep_no_html(course):
    path = notebook_path(course / "grading" / "autograded" / "floods", SCENARIOS)
    assert path.stat().st_size < 3 * 2**20
    assert "[output cut:" in path.read_text()
    page = feedback(course, "floods")
    assert len(page) < 5 * 2**20 and "<script>alert(1)" not in page
    assert "<script>alert(2)" not in page


def test_written_answers_show_as_written_without_script_and_with_maths(course):
    page = feedback(course, "floods")
    for attack in ("alert(2)", "alert(3)", "data:image/svg", "onerror", "alert(5)", "alert(6)"):
        assert attack not in page, attack
    addresses = re.findall(r"""(?:href|src)\s*=\s*["']?\s*([a-zA-Z]+):""", page)
    assert set(addresses) <= {"http", "https", "data"}, addresses
    pictures = re.findall(r"""(?:href|src)\s*=\s*["']?\s*data:([^;,]*)""", page)
    assert set(pictures) <= {"image/png", "image/jpeg"}, pictures  # the grader's own outputs
    assert "a &lt; b &amp; c &gt; d" in page and "&amp;lt;" not in page
    assert "<math" in page and "<mi>w</mi>" in page and "cdnjs" not in page


def test_the_formgrader_shows_written_answers_without_script_and_with_maths_offline(
    graded, course, tmp_path
):
    """The page the instructor grades a submission in (nbgrader's Formgrader on a Jupyter
    server), opened in Chromium with every request off 127.0.0.1 refused."""
    pytest.importorskip("playwright.sync_api", reason="needs pip install playwright")
    import formgrader_page as formgrader

    if not formgrader.CHROMIUM.exists():
        pytest.skip("needs Debian's Chromium: apt-get install -y chromium")
    submission = formgrader.submission_id(course, SCENARIOS, "floods")
    with formgrader.Formgrader(course, tmp_path) as server:
        seen = formgrader.look_at(
            server.url(f"formgrader/submissions/{submission}/"), tmp_path / "formgrader.png"
        )
    assert seen["status"] == 200
    assert seen["offsite"] == [] and seen["dialogs"] == [] and seen["pwned"] is None, seen
    assert seen["answer_handlers"] == [] and seen["answer_scripts"] == 0
    # nbgrader's own button that shows or hides the student's name is the page's only handler
    assert set(seen["handlers"]) <= {"toggle_name(true);", "toggle_name(false);"}
    script = re.compile(r"\s*(javascript|data|vbscript):", re.I)
    assert [a for a in seen["addresses"] if script.match(a)] == []
    text = seen["text"]
    assert "a < b & c > d" in text and "&lt;" not in text and "&amp;" not in text
    assert re.findall(r"\$[^$\n]+\$", text) == [] and "\\approx" not in text and "≈" in text
    assert seen["maths"] and all(b and b["width"] > 5 and b["height"] > 5 for b in seen["maths"])
    assert not seen["mathjax"]  # no MathJax, and so none of its error boxes


def test_hidden_cases_are_drawn_at_grading_time(course):
    """The hidden checks do not run on the seeds written in the solution."""
    autograded = read(notebook_path(course / "grading" / "autograded" / "full", SCENARIOS))
    assert "random arrays" in "".join(o.get("text", "") for o in cell(autograded, Q1).outputs)


def test_feedback_shows_the_checks_message(graded, course):
    assert "exactly what the gradient rule gives" in feedback(course, "wrong")
    assert "exactly what the gradient rule gives" not in feedback(course, "full")


def test_exported_grades_list_every_submission(graded, course):
    with open(course / "grades.csv", newline="") as file:
        rows = {(row["assignment"], row["student_id"]): row for row in csv.DictReader(file)}
    assert set(graded["scores"]) <= set(rows)
    for assignment in ASSIGNMENTS:
        auto_points = sum(
            m for _, m, _ in auto_graded(graded["scores"][assignment, "full"]).values()
        )
        assert float(rows[assignment, "full"]["raw_score"]) == auto_points
        assert float(rows[assignment, "untouched"]["raw_score"]) == 0


def test_library_answers_can_be_allowed(graded, course):
    nbgrader(
        course,
        "autograde",
        SCENARIOS,
        "--student=library_answer",
        "--force",
        "--SandboxedExecute.allow_library_answers=True",
    )  # the grading copy then keeps the library's answers
    assert (
        lost_points({"scores": {**graded["scores"], **gradebook_scores(course)}}, "library_answer")
        == {}
    )
