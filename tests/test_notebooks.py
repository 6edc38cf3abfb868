"""The lecture notebooks work as a course: parameters cell, slides, pictures, README table.

nbval (run by the same ``pytest``) re-executes every notebook and compares its outputs; these
tests check what nbval does not.
"""

from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
LECTURES = sorted((ROOT / "lectures").glob("*.ipynb"))
REQUIRED = [
    "01_activations",
    "02_saturation",
    "03_saliency",
    "04_deconvnet",
    "05_guided_backprop",
    "06_evaluating_explanations",
    "07_grad_cam_smoothgrad",
    "08_fooling_and_features",
    "09_shortcut",
    "10_relevance_propagation",
    "11_prediction_difference",
]


def test_every_part_of_the_lecture_has_its_notebook():
    assert [p.stem for p in LECTURES] == REQUIRED


@pytest.fixture(params=LECTURES, ids=[p.stem for p in LECTURES])
def notebook(request):
    return nbformat.read(request.param, as_version=4)


def test_first_code_cell_is_the_parameters_cell(notebook):
    first = next(c for c in notebook.cells if c.cell_type == "code")
    assert "parameters" in first.metadata.get("tags", [])
    assert 'MODEL = "shapes"' in first.source


def test_every_cell_has_slideshow_metadata(notebook):
    kinds = [c.metadata.get("slideshow", {}).get("slide_type") for c in notebook.cells]
    assert None not in kinds
    assert kinds.count("slide") >= 3


def test_stored_with_at_least_three_pictures(notebook):
    pictures = sum(
        "image/png" in output.get("data", {})
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.outputs
    )
    assert pictures >= 3


def test_no_errors_progress_bars_or_figure_reprs_stored(notebook):
    for cell in notebook.cells:
        if cell.cell_type != "code":
            continue
        for output in cell.outputs:
            assert output.output_type != "error", cell.source
            data = output.get("data", {})
            text = output.get("text", "") + data.get("text/plain", "")
            if "image/png" not in data:  # a figure's repr printed instead of the figure
                assert "<Figure size" not in text, cell.source
            assert "it/s]" not in text, cell.source


def test_widget_cells_are_excluded_from_output_comparison(notebook):
    for cell in notebook.cells:
        if cell.cell_type == "code" and "widgets." in cell.source and "import" not in cell.source:
            assert "nbval-ignore-output" in cell.metadata.get("tags", []), cell.source


def test_converts_to_slides(notebook):
    from nbconvert import SlidesExporter

    body, _ = SlidesExporter().from_notebook_node(notebook)
    assert body.count("<section") >= 3


def test_readme_lists_every_lecture():
    readme = (ROOT / "README.md").read_text()
    for path in LECTURES:
        assert f"lectures/{path.name}" in readme


def slides_of(notebook) -> list[list]:
    """The cells of each slide: from a cell of type "slide" or "subslide" to the next one."""
    kinds = [c.metadata.get("slideshow", {}).get("slide_type") for c in notebook.cells]
    starts = [i for i, kind in enumerate(kinds) if kind in ("slide", "subslide")]
    return [notebook.cells[a:b] for a, b in zip(starts, starts[1:] + [len(kinds)])]


def is_notes(cell) -> bool:
    return cell.metadata.get("slideshow", {}).get("slide_type") == "notes"


def test_speaker_notes_for_at_least_half_of_the_slides(notebook):
    first = next(
        i
        for i, c in enumerate(notebook.cells)
        if c.metadata.get("slideshow", {}).get("slide_type") in ("slide", "subslide")
    )
    assert not any(is_notes(c) for c in notebook.cells[:first]), "notes before the first slide"
    slides = slides_of(notebook)
    with_notes = sum(any(is_notes(c) for c in cells) for cells in slides)
    assert 2 * with_notes >= len(slides), f"notes on {with_notes} of {len(slides)} slides"
    for cells in slides:
        notes = [c for c in cells if is_notes(c)]
        assert len(notes) <= 1, cells[0].source
        for cell in notes:
            assert cell.cell_type == "markdown", cell.source
            assert len(cell.source.strip()) >= 40, cell.source  # something to say
            assert "≈" in cell.source and "min" in cell.source, cell.source  # how long it takes
