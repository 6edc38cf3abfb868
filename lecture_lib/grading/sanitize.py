"""Submissions as they come: broken, empty, of another assignment, or with their cells tampered.

``SubmissionExporter`` reads a submitted file; one that is not a notebook (a link, truncated
JSON, no cells, far too large) is graded as the released notebook without answers, with a note
that says why, so that it gets a zero with feedback and grading goes on. ``CheckSubmission``
gives every cell the nbgrader role the gradebook knows for its id (a student cannot turn a
check into a written answer or unlock it), drops nbgrader metadata the assignment does not
know, puts back deleted check cells and locked cells, and notes a notebook of another
assignment. ``KeepLastCopy`` keeps one graded copy of a duplicated cell. ``SanitizeMarkdown`` keeps
the students' Markdown as written (the pages clean the rendered HTML: ``pages``).
"""

from __future__ import annotations

import json
import os

import nbformat
from nbconvert.exporters import NotebookExporter
from nbgrader.api import Gradebook, MissingEntry
from nbgrader.preprocessors import DeduplicateIds, NbGraderPreprocessor

MAX_NOTEBOOK_BYTES = 64 * 2**20
"""A submitted notebook larger than this is not read."""

NOTE = "lecture_grading_note"
"""The metadata key of the note cell that tells the student why the submission scored zero."""


def note_cell(text: str) -> nbformat.NotebookNode:
    cell = nbformat.v4.new_markdown_cell(f"**Grading note.** {text}")
    cell.metadata[NOTE] = True
    return cell


def read_problem(filename: str) -> str | None:
    """Why ``filename`` cannot be graded as a notebook, or None."""
    if os.path.islink(filename):
        return "the submitted file is a link, not a notebook"
    size = os.path.getsize(filename)
    if size > MAX_NOTEBOOK_BYTES:
        return f"the submitted file holds {size:,} bytes, more than {MAX_NOTEBOOK_BYTES:,}"
    try:
        with open(filename, encoding="utf-8") as file:
            text = file.read()
        content = json.loads(text)
    except UnicodeDecodeError:
        return "the submitted file is not text (not a Jupyter notebook)"
    except json.JSONDecodeError as error:
        return f"the submitted file is not valid JSON ({error.msg} at line {error.lineno}), perhaps cut short"
    if not isinstance(content, dict) or not isinstance(content.get("cells"), list):
        return "the submitted file is JSON but not a Jupyter notebook (it has no list of cells)"
    try:
        nb = nbformat.reads(text, as_version=4)
    except Exception as error:
        return f"the submitted file is not a readable notebook ({type(error).__name__})"
    if any(cell.get("cell_type") not in ("code", "markdown", "raw") for cell in nb.cells):
        return "the submitted notebook holds cells of unknown types"
    if not nb.cells:
        return "the submitted notebook has no cells"
    return None


class SubmissionExporter(NotebookExporter):
    """nbgrader's reader of submissions, which turns an unreadable one into a graded zero."""

    def from_filename(self, filename, resources=None, **kw):
        problem = (
            None if resources is None or "nbgrader" not in resources else read_problem(filename)
        )
        if problem is None:
            return super().from_filename(filename, resources, **kw)
        ids = resources["nbgrader"]
        self.log.error(
            "Submission %s/%s of %s is graded as the released notebook without answers: %s.",
            ids["assignment"], ids["notebook"], ids["student"], problem,
        )  # fmt: skip
        nb = released_notebook(self.config, ids) or nbformat.v4.new_notebook()
        nb.cells.insert(
            0,
            note_cell(
                f"This submission could not be graded: {problem}. It was graded as a notebook "
                f"without answers, so it scores 0. Hand in the notebook `{ids['notebook']}.ipynb` "
                "itself, saved from JupyterLab (File > Save Notebook), and ask your instructor "
                "to grade it again."
            ),
        )
        resources.setdefault("metadata", {})["name"] = ids["notebook"]
        resources["metadata"]["path"] = os.path.dirname(filename)
        return self.from_notebook_node(nb, resources, **kw)


class KeepLastCopy(DeduplicateIds):
    """A student who copied a graded or solution cell: the last copy keeps its nbgrader
    metadata and is graded, the other copies become plain cells (they still run).

    nbgrader 0.9's DeduplicateIds leaves an empty ``nbgrader`` dict on the other copies, which
    its metadata check then rejects, and the whole submission fails to grade
    (jupyter/nbgrader#1083); this removes the empty dict.
    """

    def preprocess_cell(self, cell, resources, cell_index):
        cell, resources = super().preprocess_cell(cell, resources, cell_index)
        if cell.metadata.get("nbgrader", None) == {}:
            del cell.metadata["nbgrader"]
        return cell, resources


class CheckSubmission(NbGraderPreprocessor):
    """Each cell's nbgrader role as the gradebook knows it; unknown roles dropped; deleted
    check cells and locked cells put back (after the cell that preceded them in the released
    notebook); a notebook of another assignment noted."""

    def preprocess(self, nb, resources):
        ids = resources["nbgrader"]
        with Gradebook(ids["db_url"]) as gb:
            notebook = gb.find_notebook(ids["notebook"], ids["assignment"])
            roles = _roles(notebook)
            others = _other_notebooks(gb, ids["assignment"], ids["notebook"])
        submitted = {c.metadata.get("nbgrader", {}).get("grade_id") for c in nb.cells}
        for cell in nb.cells:
            grade_id = cell.metadata.get("nbgrader", {}).get("grade_id")
            if "nbgrader" not in cell.metadata:
                continue
            if grade_id in roles:
                cell.metadata.nbgrader = {**cell.metadata.nbgrader, **roles[grade_id]}
            else:
                del cell.metadata["nbgrader"]
        answers = {name for name, role in roles.items() if role["grade"] or role["solution"]}
        if not submitted & answers and not any(cell.metadata.get(NOTE) for cell in nb.cells):
            guesses = sorted(name for name, known in others.items() if known & submitted)
            hint = f" (its cells belong to {', '.join(guesses)})" if guesses else ""
            problem = (
                f"This notebook holds none of the questions of {ids['assignment']}{hint}. It was "
                f"graded with every answer missing, so it scores 0. Hand in "
                f"{ids['notebook']}.ipynb, the notebook of this assignment."
            )
            self.log.error(
                "Submission of %s for %s: %s", ids["student"], ids["assignment"], problem
            )
            nb.cells.insert(0, note_cell(problem))
        released = released_notebook(self.config, ids)
        if released is None:
            self.log.warning("No released notebook of %s: deleted cells cannot be restored.", ids)
        else:
            restore_missing_cells(nb, released, roles)
        return nb, resources


def restore_missing_cells(nb, released, roles: dict) -> None:
    """Put back each graded or locked cell of ``released`` that ``nb`` lacks, right after the
    cell that precedes it in ``released`` (at the end if none of those is in ``nb``)."""

    def where(grade_id) -> int | None:
        for index, cell in enumerate(nb.cells):
            if cell.metadata.get("nbgrader", {}).get("grade_id") == grade_id:
                return index
        return None

    anchor = None
    for cell in released.cells:
        grade_id = cell.metadata.get("nbgrader", {}).get("grade_id")
        if grade_id not in roles:
            continue
        if where(grade_id) is None and (roles[grade_id]["grade"] or roles[grade_id]["locked"]):
            restored = nbformat.from_dict(dict(cell))
            restored.metadata.nbgrader = {**cell.metadata.nbgrader, **roles[grade_id]}
            position = where(anchor) if anchor is not None else None
            nb.cells.insert(len(nb.cells) if position is None else position + 1, restored)
        if where(grade_id) is not None:
            anchor = grade_id


def released_notebook(config, ids) -> nbformat.NotebookNode | None:
    """The student version of the notebook, as generate_assignment released it."""
    from nbgrader.coursedir import CourseDirectory

    coursedir = CourseDirectory(config=config)
    folder = coursedir.format_path(coursedir.release_directory, ".", ids["assignment"])
    path = os.path.join(folder, f"{ids['notebook']}.ipynb")
    try:
        return nbformat.read(path, as_version=4)
    except (OSError, ValueError):
        return None


class SanitizeMarkdown(NbGraderPreprocessor):
    """The students' Markdown cells are kept as written (an answer with ``a < b`` reads
    ``a < b``, escaped once where it is shown): the pages that show them clean the *rendered*
    HTML (``pages.markdown2html``, set as ``c.HTMLExporter.filters`` in nbgrader_config.py).
    Here only what no page should ever receive goes: NUL and other control characters."""

    def preprocess_cell(self, cell, resources, index):
        if cell.cell_type == "markdown" and not cell.metadata.get("nbgrader", {}).get("locked"):
            cell.source = "".join(
                ch for ch in cell.source if ch in "\n\t\r" or ord(ch) >= 32 and ord(ch) != 127
            )
        return cell, resources


def _roles(notebook) -> dict[str, dict]:
    """``{grade_id: nbgrader flags}`` of every cell of the source notebook."""
    grades = {cell.name: cell.max_score for cell in notebook.grade_cells}
    solutions = {cell.name for cell in notebook.solution_cells}
    tasks = {cell.name for cell in notebook.task_cells}
    roles = {}
    for source in notebook.source_cells:
        role = {
            "grade": source.name in grades,
            "solution": source.name in solutions,
            "task": source.name in tasks,
            "locked": bool(source.locked),
        }
        if source.name in grades:
            role["points"] = float(grades[source.name])
        roles[source.name] = role
    return roles


def _other_notebooks(gb, assignment: str, notebook: str) -> dict[str, set[str]]:
    """The ids of the questions (graded and solution cells) of the course's other assignments."""
    others = {}
    for other in gb.assignments:
        if other.name == assignment:
            continue
        try:
            nb = gb.find_notebook(notebook, other.name)
        except MissingEntry:
            nb = other.notebooks[0] if other.notebooks else None
        if nb is not None:
            answers = [*nb.grade_cells, *nb.solution_cells]
            others[other.name] = {cell.name for cell in answers}
    return others
