"""What the explorers' tests share: the picture on screen, a count of forward passes, and the
check that no explorer leaves a pyplot figure open (import ``no_figure_left_open`` into a test
module: an autouse fixture)."""

import base64
from contextlib import contextmanager

import matplotlib.pyplot as plt
import pytest


@pytest.fixture(autouse=True)
def no_figure_left_open():
    assert plt.get_fignums() == []
    yield
    assert plt.get_fignums() == [], "an explorer left a pyplot figure open"


def png(explorer) -> str:
    """The picture the explorer shows now (base64 PNG)."""
    assert explorer.error is None, explorer.error
    assert explorer.image.layout.display != "none" and explorer.output.outputs == ()
    return base64.b64encode(explorer.image.value).decode("ascii")


@contextmanager
def count_forward_passes(model):
    """Counts the model's forward passes inside the block (the hook is removed afterwards)."""
    calls = []
    handle = model.register_forward_pre_hook(lambda module, args: calls.append(1))
    try:
        yield calls
    finally:
        handle.remove()
