"""nbgrader's exchange, the whole cycle of one assignment, with nbgrader's own commands.

The exchange is a folder in a temporary directory (mode 1777, as on the course server). The
instructor works in a copy of the course with its nbgrader_config.py; three students work in
their own home folders, each with the student configuration that the course server gives them
(deploy/roles/student: the exchange, the course id, the JupyterHub user name as student id).

    instructor   generate_assignment, release_assignment
    students     fetch_assignment, work, submit        (ada solves all, ben the first question,
                                                       cleo hands in the notebook untouched)
    instructor   collect, autograde, generate_feedback, release_feedback, export
    students     fetch_feedback

The scores are checked against the points in the solution notebook's metadata, through
nbgrader's exported grades: this test depends on what autograding gives, not on how it runs.
"""

import csv
import os
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

pytest.importorskip("nbgrader", reason="nbgrader is in the instructor extra")

ROOT = Path(__file__).resolve().parent.parent
STUDENT_CONFIG = ROOT / "deploy" / "roles" / "student"
COURSE_ID = "explaining-convnets"
ASSIGNMENT = "02_saturation"
STUDENTS = ("ada", "ben", "cleo")


def run(cwd: Path, home: Path, *args: str, env: dict | None = None) -> str:
    """``nbgrader ARGS`` as a user whose home is ``home``; fail with its log."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("JUPYTER", "COURSE_"))}
    clean.update(HOME=str(home), OMP_NUM_THREADS="1", **(env or {}))
    result = subprocess.run(
        [sys.executable, "-m", "nbgrader", *args],
        cwd=cwd,
        env=clean,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, f"nbgrader {' '.join(args)} failed:\n{result.stderr[-5000:]}"
    return result.stdout + result.stderr


def solution_cells() -> dict[str, nbformat.NotebookNode]:
    nb = nbformat.read(ROOT / "solutions" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb", as_version=4)
    return {c.metadata.nbgrader.grade_id: c for c in nb.cells if "nbgrader" in c.metadata}


def autograded_points() -> dict[str, float]:
    """Points of each autograded check, in notebook order, from the solution's metadata."""
    return {
        grade_id: cell.metadata.nbgrader.points
        for grade_id, cell in solution_cells().items()
        if cell.metadata.nbgrader.get("grade") and cell.cell_type == "code"
    }


def work(notebook: Path, answer: tuple[str, ...]) -> None:
    """Write the solution into the answer cells named in ``answer`` (the rest stay as fetched)."""
    solutions = solution_cells()
    nb = nbformat.read(notebook, as_version=4)
    answered = set()
    for cell in nb.cells:
        grade_id = cell.metadata.get("nbgrader", {}).get("grade_id")
        if grade_id in answer:
            assert "YOUR CODE HERE" in cell.source  # the fetched notebook is the student version
            cell.source = solutions[grade_id].source
            answered.add(grade_id)
    assert answered == set(answer)
    nbformat.write(nb, notebook)


@pytest.fixture(scope="module")
def cycle(tmp_path_factory, make_course) -> dict:
    tmp = tmp_path_factory.mktemp("exchange_cycle")
    exchange = tmp / "exchange"
    exchange.mkdir()
    exchange.chmod(0o1777)
    course = make_course(tmp / "course")
    instructor_home = tmp / "home" / "instructor"
    instructor_home.mkdir(parents=True)

    def instructor(*args: str) -> str:
        return run(course, instructor_home, *args, f"--Exchange.root={exchange}")

    def student(name: str, *args: str) -> str:
        home = tmp / "home" / name
        home.mkdir(parents=True, exist_ok=True)
        env = {
            "JUPYTER_CONFIG_PATH": str(STUDENT_CONFIG),
            "JUPYTERHUB_USER": name,
            "COURSE_ID": COURSE_ID,
            "COURSE_EXCHANGE": str(exchange),
        }
        return run(home, home, *args, env=env)

    instructor("generate_assignment", ASSIGNMENT, "--force")
    instructor("release_assignment", ASSIGNMENT)
    listed = student(STUDENTS[0], "list")  # what `nbgrader list` shows a student

    code_answers = tuple(
        grade_id
        for grade_id, cell in solution_cells().items()
        if cell.metadata.nbgrader.get("solution") and cell.cell_type == "code"
    )
    answers = {"ada": code_answers, "ben": code_answers[:1], "cleo": ()}
    for name in STUDENTS:
        student(name, "fetch_assignment", ASSIGNMENT)
        work(tmp / "home" / name / ASSIGNMENT / f"{ASSIGNMENT}.ipynb", answers[name])
        student(name, "submit", ASSIGNMENT)

    instructor("collect", ASSIGNMENT)
    instructor("autograde", ASSIGNMENT, "--create")
    instructor("generate_feedback", ASSIGNMENT)
    instructor("release_feedback", ASSIGNMENT)
    instructor("export", "--to", str(tmp / "grades.csv"))
    for name in STUDENTS:
        student(name, "fetch_feedback", ASSIGNMENT)

    with open(tmp / "grades.csv", newline="") as file:
        grades = {row["student_id"]: row for row in csv.DictReader(file)}
    return {"tmp": tmp, "course": course, "exchange": exchange, "listed": listed,
            "answers": answers, "grades": grades}  # fmt: skip


def test_the_students_see_the_released_assignment(cycle):
    assert f"{COURSE_ID} {ASSIGNMENT}" in cycle["listed"]
    for name in STUDENTS:  # each fetched it
        assert (cycle["tmp"] / "home" / name / ASSIGNMENT / f"{ASSIGNMENT}.ipynb").is_file()
    released = cycle["exchange"] / COURSE_ID / "outbound" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb"
    text = released.read_text()
    assert "YOUR CODE HERE" in text and "BEGIN SOLUTION" not in text  # the student version


def test_the_instructor_collects_each_student_under_their_name(cycle):
    submitted = cycle["course"] / "grading" / "submitted"
    assert sorted(p.name for p in submitted.iterdir()) == sorted(STUDENTS)
    for name in STUDENTS:
        assert (submitted / name / ASSIGNMENT / f"{ASSIGNMENT}.ipynb").is_file()


def test_scores_follow_the_answers(cycle):
    points = autograded_points()
    first_check = next(iter(points.values()))
    expected = {"ada": sum(points.values()), "ben": first_check, "cleo": 0}
    scores = {name: float(cycle["grades"][name]["raw_score"]) for name in STUDENTS}
    assert scores == expected
    assert 0 < expected["ben"] < expected["ada"]


def test_each_student_fetches_their_own_feedback(cycle):
    pages = {}
    for name in STUDENTS:
        feedback = cycle["tmp"] / "home" / name / ASSIGNMENT / "feedback"
        (page,) = feedback.glob(f"*/{ASSIGNMENT}.html")  # one submission, one feedback page
        pages[name] = page.read_text()
    points = autograded_points()
    maximum = sum(c.metadata.nbgrader.points for c in solution_cells().values()
                  if c.metadata.nbgrader.get("grade"))  # fmt: skip
    expected = {"ada": sum(points.values()), "ben": next(iter(points.values())), "cleo": 0}
    for name in STUDENTS:
        found = re.search(rf"<h4>{ASSIGNMENT} \(Score: ([0-9.]+) / ([0-9.]+)\)</h4>", pages[name])
        assert found, name
        assert (float(found[1]), float(found[2])) == (expected[name], maximum), name
