"""The images of Zero to JupyterHub: what students' pods run holds no solution, no grading data
and no history.

Read as Docker reads them: each Dockerfile's build context is the repository filtered by its
``<Dockerfile>.dockerignore`` (the last pattern that matches a path, or a folder above it,
decides; ``!`` lets a path back in), and only what the ``COPY`` lines take lands in the image.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
SECRET_MARKERS = ("BEGIN SOLUTION", "BEGIN HIDDEN TESTS")
PRIVATE = ("solutions", "grading", ".git", "exercises", "nbgrader_config.py")


def patterns(dockerfile: Path) -> list[tuple[bool, re.Pattern]]:
    """``(lets back in, pattern)`` of ``<dockerfile>.dockerignore``, in order."""
    ignore = dockerfile.with_name(dockerfile.name + ".dockerignore")
    found = []
    for line in ignore.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        back = line.startswith("!")
        glob = os.path.normpath(line.lstrip("!").strip()).lstrip("/")
        regex = ""
        for part in re.split(r"(\*\*/?|\*|\?)", glob):
            if part in ("**", "**/"):
                regex += "(.*/)?" if part == "**/" else ".*"
            elif part == "*":
                regex += "[^/]*"
            elif part == "?":
                regex += "[^/]"
            else:
                regex += re.escape(part)
        found.append((back, re.compile(regex + r"\Z")))
    return found


def in_context(path: str, rules: list[tuple[bool, re.Pattern]]) -> bool:
    """Is ``path`` (relative to the repository) in the build context?"""
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    included = True
    for back, pattern in rules:
        if any(pattern.match(prefix) for prefix in prefixes):
            included = back
    return included


def repository_files(extra: tuple[str, ...] = ()) -> list[str]:
    """Every file of the working tree, .git and any grading/ included."""
    found = list(extra)
    for folder, dirs, names in os.walk(ROOT):
        dirs[:] = [d for d in dirs if d not in ("node_modules",)]
        for name in names:
            found.append(os.path.relpath(os.path.join(folder, name), ROOT).replace(os.sep, "/"))
    return found


def copied(dockerfile: Path, files: list[str]) -> list[str]:
    """The files of the build context that the Dockerfile's COPY lines take."""
    rules = patterns(dockerfile)
    sources = []
    for line in dockerfile.read_text().replace("\\\n", " ").splitlines():
        words = line.split()
        if words and words[0] == "COPY":
            words = [w for w in words[1:] if not w.startswith("--")]
            sources += words[:-1]
    assert sources, f"{dockerfile.name} copies nothing"
    taken = []
    for path in files:
        if not in_context(path, rules):
            continue
        for source in sources:
            source = os.path.normpath(source)
            if source == "." or path == source or path.startswith(source + "/"):
                taken.append(path)
                break
    return taken


# A grading folder and a git history as an instructor's checkout holds them.
PRETEND = ("grading/gradebook.db", "grading/submitted/ada/a/a.ipynb", ".git/HEAD")


def test_the_students_image_holds_no_solution_no_grading_data_no_history():
    taken = copied(DEPLOY / "Dockerfile", repository_files(PRETEND))
    assert any(p.startswith("lecture_lib/") for p in taken)
    assert any(p.startswith("lectures/") for p in taken)
    assert "deploy/roles/student/nbgrader_config.py" in taken
    for path in taken:
        top = path.split("/")[0]
        assert top not in PRIVATE, path
        full = ROOT / path
        if path.endswith(".ipynb") and full.is_file():  # a notebook with a solution region
            text = full.read_bytes().decode(errors="ignore")
            for marker in SECRET_MARKERS:
                assert marker not in text, f"{path} holds {marker!r}"


def test_the_students_image_fetches_nothing_at_build_time():
    text = (DEPLOY / "Dockerfile").read_text()
    assert "git clone" not in text and not re.search(r"^ADD\s", text, flags=re.M)
    assert "Dockerfile.instructor" not in (DEPLOY / "Dockerfile.dockerignore").read_text()


def test_the_instructors_image_holds_the_course_and_only_instructors_run_it():
    taken = copied(DEPLOY / "Dockerfile.instructor", repository_files(PRETEND))
    assert any(p.startswith("solutions/") for p in taken)
    assert not any(p.startswith((".git/", "grading/")) for p in taken)
    assert "bubblewrap" in (DEPLOY / "Dockerfile.instructor").read_text()
    values = yaml.safe_load((DEPLOY / "kubernetes" / "values.yaml").read_text())
    students = values["singleuser"]["image"]["name"]
    override = values["hub"]["config"]["KubeSpawner"]["group_overrides"]["instructors"]
    instructors = override["spawner_override"]["image"]
    assert students.endswith("-user") and "instructor" in instructors
    assert override["groups"] == ["formgrade-explaining-convnets"]
    start = " ".join(
        override["spawner_override"]["lifecycle_hooks"]["postStart"]["exec"]["command"]
    )
    assert "/opt/explaining-convnets-course" in start


@pytest.mark.parametrize(
    "path, context",
    [
        ("solutions/01/01.ipynb", False),
        ("lecture_lib/checks/core.py", True),
        ("lecture_lib/__pycache__/x.pyc", False),
        ("deploy/roles/student/x.json", True),
        ("deploy/Dockerfile", False),
        (".git/HEAD", False),
    ],
)
def test_the_dockerignore_reading_follows_docker(path, context):
    assert in_context(path, patterns(DEPLOY / "Dockerfile")) is context
