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
