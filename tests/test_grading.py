"""The homework grades itself: nbgrader's real commands on a temporary copy of the course.

The copy holds nbgrader_config.py, solutions/ and exercises/. In it, generate_assignment
rebuilds the student versions (which must equal the committed exercises/), simulated students
hand in notebooks, and autograde, generate_feedback and export grade them as an instructor
would. Every assignment is graded for its full solution and its untouched exercise; one
assignment also for a wrong answer, a never-ending loop, an edited test cell and a duplicated
solution cell.
"""

import copy
import csv
import hashlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
ASSIGNMENTS = sorted(p.name for p in (ROOT / "solutions").iterdir() if p.is_dir())
SCENARIOS = "04_deconvnet"  # the assignment that also meets the unusual students
TIMEOUT = 15  # seconds per cell while grading; the never-ending loop costs this, twice


def nbgrader(course: Path, *args: str) -> subprocess.CompletedProcess:
    """Run ``python -m nbgrader ARGS`` in the course directory; fail with its log."""
    # One thread per kernel: on a busy 2-core machine PyTorch's default thread pool spins against
    # the other processes and the small model runs many times slower. Scores do not depend on it.
    env = dict(os.environ, OMP_NUM_THREADS="1")
    result = subprocess.run(
        [sys.executable, "-m", "nbgrader", *args],
        cwd=course,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, f"nbgrader {' '.join(args)} failed:\n{result.stderr[-5000:]}"
    return result


def notebook_path(folder: Path, assignment: str) -> Path:
    return folder / assignment / f"{assignment}.ipynb"


def read(path: Path) -> nbformat.NotebookNode:
    return nbformat.read(path, as_version=4)


def cell(nb: nbformat.NotebookNode, grade_id: str) -> nbformat.NotebookNode:
    (found,) = [c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") == grade_id]
    return found


# --- the simulated students ---------------------------------------------------------------------


def wrong_answer(nb):
    """Question 1 answered with the gradient rule instead of DeconvNet's."""
    answer = cell(nb, "relu_backward_deconvnet")
    assert "grad_output > 0" in answer.source
    answer.source = answer.source.replace("grad_output > 0", "forward_input > 0")
    return nb


def endless_loop(nb):
    """Question 1's function never returns: its check cell (and the cell after it, which calls it
    too) run until the timeout."""
    answer = cell(nb, "relu_backward_deconvnet")
    answer.source = (
        "def relu_backward_deconvnet(forward_input, grad_output):\n    while True:\n        pass"
    )
    return nb


def edited_test(nb):
    """Question 2 answered wrongly, and its check cell edited to `pass` to hide it."""
    answer = cell(nb, "deconv_relu")
    assert "return grad_output.clamp(min=0)" in answer.source
    answer.source = answer.source.replace("return grad_output.clamp(min=0)", "return grad_output")
    cell(nb, "test_deconv_relu").source = "pass"
    return nb


def duplicated_cell(nb, exercise):
    """Question 3's cell copied: the first copy left as released, the answer in the second."""
    index = nb.cells.index(cell(nb, "with_relu_function"))
    stub = copy.deepcopy(cell(exercise, "with_relu_function"))
    stub.id = "copied-cell"
    nb.cells.insert(index, stub)
    return nb


def students(assignment: str) -> dict:
    """Each student's notebook, by student id."""
    solution = read(notebook_path(ROOT / "solutions", assignment))
    exercise = read(notebook_path(ROOT / "exercises", assignment))
    handed_in = {"full": solution, "untouched": exercise}
    if assignment == SCENARIOS:
        handed_in["wrong"] = wrong_answer(copy.deepcopy(solution))
        handed_in["loop"] = endless_loop(copy.deepcopy(solution))
        handed_in["edited"] = edited_test(copy.deepcopy(solution))
        handed_in["duplicated"] = duplicated_cell(copy.deepcopy(solution), exercise)
    return handed_in


def file_hashes(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


# --- the course, generated and graded once for all tests --------------------------------------


@pytest.fixture(scope="module")
def course(tmp_path_factory) -> Path:
    course = tmp_path_factory.mktemp("course")
    shutil.copy(ROOT / "nbgrader_config.py", course)
    shutil.copytree(ROOT / "solutions", course / "solutions")
    shutil.copytree(ROOT / "exercises", course / "exercises")
    nbgrader(course, "generate_assignment", "*", "--force")
    return course


@pytest.fixture(scope="module")
def graded(course) -> dict:
    """Hand in every student's notebook, autograde all, generate feedback and export grades."""
    for assignment in ASSIGNMENTS:
        for student, nb in students(assignment).items():
            path = notebook_path(course / "grading" / "submitted" / student, assignment)
            path.parent.mkdir(parents=True)
            nbformat.write(nb, path)
    submitted = course / "grading" / "submitted"
    before = file_hashes(submitted)
    nbgrader(
        course, "autograde", "*", "--create", "--force", f"--ExecutePreprocessor.timeout={TIMEOUT}"
    )
    after = file_hashes(submitted)
    nbgrader(course, "generate_feedback", SCENARIOS, "--force")
    nbgrader(course, "export", "--to", str(course / "grades.csv"))
    return {"before": before, "after": after, "scores": gradebook_scores(course)}


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
    solution = read(notebook_path(ROOT / "solutions", assignment))
    graded = [c for c in solution.cells if c.metadata.get("nbgrader", {}).get("grade")]
    tests = [c for c in graded if c.cell_type == "code"]
    written = [c for c in graded if c.cell_type == "markdown"]
    assert len(tests) >= 2 and len(written) >= 1
    assert all(c.metadata.nbgrader.get("solution") for c in written)
    assert all("checks.check_" in c.source for c in tests)
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


def lost_points(graded, student: str) -> dict:
    """The cells where ``student`` scored less than the full solution, with the points lost."""
    full = graded["scores"][SCENARIOS, "full"]
    theirs = graded["scores"][SCENARIOS, student]
    assert theirs.keys() == full.keys()
    return {
        name: full[name][0] - theirs[name][0]
        for name in auto_graded(full)
        if theirs[name][0] != full[name][0]
    }


def test_a_wrong_answer_loses_that_questions_points_only(graded):
    assert lost_points(graded, "wrong") == {"test_relu_backward_deconvnet": 2}


def test_an_endless_loop_is_stopped_and_the_other_questions_count(graded):
    assert lost_points(graded, "loop") == {"test_relu_backward_deconvnet": 2}


def test_an_edited_test_cell_is_restored_and_fails(graded, course):
    assert lost_points(graded, "edited") == {"test_deconv_relu": 2}
    autograded = read(notebook_path(course / "grading" / "autograded" / "edited", SCENARIOS))
    original = cell(read(notebook_path(ROOT / "solutions", SCENARIOS)), "test_deconv_relu")
    assert cell(autograded, "test_deconv_relu").source == original.source


def test_a_duplicated_solution_cell_still_grades(graded):
    assert lost_points(graded, "duplicated") == {}


def test_submitted_files_are_unchanged_by_grading(graded):
    assert graded["before"] == graded["after"]
    assert len(graded["before"]) == 2 * len(ASSIGNMENTS) + 4


def test_feedback_shows_the_checks_message(graded, course):
    feedback = course / "grading" / "feedback"
    wrong = notebook_path(feedback / "wrong", SCENARIOS).with_suffix(".html").read_text()
    assert "exactly what the gradient rule gives" in wrong
    full = notebook_path(feedback / "full", SCENARIOS).with_suffix(".html").read_text()
    assert "exactly what the gradient rule gives" not in full


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
