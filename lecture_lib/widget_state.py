"""The widget state a stored notebook carries, checked and, where stale, cleared.

A notebook run with live widgets stores, for each widget shown, an output that names the
widget's model (``application/vnd.jupyter.widget-view+json``), and may store the state of every
model in its metadata (``metadata.widgets``; ``jupyter nbconvert --execute`` does). JupyterLab
draws a stored widget from that state; where the state does not hold the model (it was saved
by another run) it shows "Error displaying widget: model not found", and where widgets cannot
be drawn at all (a notebook not trusted yet, slides) it shows the output's next format: the
picture of an explorer (``widgets.Explorer``), or else the widget's text, a long ``repr``.

So a stored lecture is right when every widget output carries a picture, and its saved state is
consistent (every model that an output names is saved, every model a saved model refers to is
saved, and no saved model is left over) or absent, with only the pictures of the widgets kept::

    python -m lecture_lib.widget_state lectures/*.ipynb          # report; exit 1 on a problem
    python -m lecture_lib.widget_state --fix lectures/*.ipynb    # clear what is stale

``--fix`` removes saved state that is not consistent, and from each widget output whose model
is not saved it removes the widget's part (its picture stays) or, without a picture, the output.
Re-running the notebook (``jupyter nbconvert --to notebook --execute --inplace``) is the other
fix: it stores a consistent state.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Sequence
from pathlib import Path

import nbformat

VIEW = "application/vnd.jupyter.widget-view+json"
"""The output format that names a widget's model."""

STATE = "application/vnd.jupyter.widget-state+json"
"""The key of the saved state in ``metadata.widgets``."""

_REFERENCE = re.compile(r"IPY_MODEL_([0-9a-f]+)")


def saved_models(notebook) -> dict[str, dict]:
    """The saved state ``{model id: model}`` of ``notebook`` (empty when none is saved)."""
    return notebook.metadata.get("widgets", {}).get(STATE, {}).get("state", {})


def widget_outputs(notebook) -> list[tuple[int, dict]]:
    """Every ``(cell index, output)`` that shows a widget."""
    return [
        (index, output)
        for index, cell in enumerate(notebook.cells)
        if cell.cell_type == "code"
        for output in cell.get("outputs", [])
        if VIEW in output.get("data", {})
    ]


def _references(model: dict) -> set[str]:
    """The models that ``model`` refers to (its children, layout, style, ...)."""
    return set(_REFERENCE.findall(json.dumps(model.get("state", {}))))


def state_problems(notebook) -> list[str]:
    """What is stale: widget outputs whose model is not saved (JupyterLab cannot draw them),
    saved models that refer to a model that is not saved, and saved models that no output
    reaches. Empty when the saved state is consistent, or absent with no widget output left."""
    models = saved_models(notebook)
    problems = []
    shown: dict[str, int] = {}
    for index, output in widget_outputs(notebook):
        shown.setdefault(output["data"][VIEW].get("model_id", ""), index)
    for model_id, index in shown.items():
        if model_id not in models:
            problems.append(
                f"cell {index} shows widget model {model_id}, which is not saved (JupyterLab "
                "shows 'Error displaying widget: model not found' there)"
            )
    reached, todo = set(), [m for m in shown if m in models]
    while todo:
        model_id = todo.pop()
        if model_id in reached:
            continue
        reached.add(model_id)
        for reference in sorted(_references(models[model_id])):
            if reference in models:
                todo.append(reference)
            else:
                problems.append(f"saved model {model_id} refers to model {reference}, not saved")
    left_over = len(models) - len(reached)
    if left_over:
        problems.append(f"{left_over} saved widget models are shown by no output")
    return problems


def problems(notebook) -> list[str]:
    """Everything that makes the stored widgets of ``notebook`` show wrongly: stale state
    (``state_problems``), and widget outputs without a picture, which show as text where the
    widget cannot be drawn."""
    found = state_problems(notebook)
    for index, output in widget_outputs(notebook):
        if "image/png" not in output["data"]:
            text = output["data"].get("text/plain", "")
            found.append(f"cell {index} shows a widget without a picture; its text: {text[:60]!r}")
    return found


def clear_stale(notebook) -> bool:
    """Clear what is stale in ``notebook`` (in place): the saved state when it is not consistent,
    then the widget part of each output whose model is not saved (its picture stays; an output
    without a picture is removed). Returns whether anything changed."""
    changed = False
    if state_problems(notebook) and "widgets" in notebook.metadata:
        del notebook.metadata["widgets"]
        changed = True
    models = saved_models(notebook)
    for cell in notebook.cells:
        if cell.cell_type != "code":
            continue
        kept = []
        for output in cell.get("outputs", []):
            data = output.get("data", {})
            if VIEW in data and data[VIEW].get("model_id") not in models:
                changed = True
                if "image/png" not in data:
                    continue
                del data[VIEW]
            kept.append(output)
        cell.outputs = kept
    return changed


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m lecture_lib.widget_state",
        description="Check the saved widget state of stored notebooks; --fix clears what is stale.",
    )
    parser.add_argument("notebooks", nargs="+", type=Path)
    parser.add_argument("--fix", action="store_true", help="clear stale state and widget outputs")
    args = parser.parse_args(argv)
    status = 0
    for path in args.notebooks:
        notebook = nbformat.read(path, as_version=4)
        if args.fix:
            if clear_stale(notebook):
                nbformat.write(notebook, path)
                print(f"{path}: cleared stale widget state")
        for problem in problems(notebook):
            print(f"{path}: {problem}")
            status = 1
    return status


if __name__ == "__main__":
    sys.exit(main())
