"""Shared fixtures: the shipped model and a small batch of unseen shapes."""

import os

import pytest
import torch

from lecture_lib.data import make_shapes
from lecture_lib.models import load_shapes_net

TEST_SEED = 2026
"""Shapes from a seed that training never used."""


@pytest.fixture(scope="session")
def shapes_net():
    return load_shapes_net()


@pytest.fixture(scope="session")
def shapes_batch():
    images, labels, masks = make_shapes(8, seed=TEST_SEED)
    return images, labels, masks


SLOWEST_FIRST = (
    "tests/test_grading.py",  # the simulated class, graded once (about 3 minutes)
    "tests/test_browser.py",  # every lecture in JupyterLab and Chromium
    "tests/test_exchange.py",
    "tests/test_grading_parts.py",
    "tests/test_jupyterhub.py",
    "tests/test_portable.py",
)
"""The test files that take longest, collected first, then the notebooks (10-30 s each), then
the many short files that fill the gaps."""


def pytest_xdist_auto_num_workers(config) -> int:
    """``-n auto``: a worker more than the cores the tests may use. Many tests wait (for a
    kernel, a browser, a grader's sandbox, a time limit); the extra worker computes meanwhile."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return (cores or 1) + 1


def pytest_collection_modifyitems(config, items):
    """pytest runs on every core (``-n auto --dist loadfile`` in pyproject.toml): each file on one
    worker (its tests share its fixtures), the files in collection order, so the longest start
    first on different workers while the short ones fill the gaps."""
    rank = {path: k for k, path in enumerate(SLOWEST_FIRST)}

    def order(item) -> tuple[int, int]:
        path = item.nodeid.split("::")[0]
        return rank.get(path, len(rank)), 0 if path.endswith(".ipynb") else 1

    items.sort(key=order)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def make_course():
    """A function that builds a temporary nbgrader course in a folder: the course's
    nbgrader_config.py, solutions/ and exercises/ copied there (what the grading and the
    exchange tests start from)."""
    import shutil
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent

    def make(folder: Path) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(root / "nbgrader_config.py", folder)
        shutil.copytree(root / "solutions", folder / "solutions")
        shutil.copytree(root / "exercises", folder / "exercises")
        return folder

    return make
