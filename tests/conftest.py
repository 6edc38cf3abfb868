"""Shared fixtures: the shipped model and a small batch of unseen shapes."""

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
