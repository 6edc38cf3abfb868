"""The repository root is an nbgrader course directory.

    solutions/<assignment>/<assignment>.ipynb   instructor versions (nbgrader's source)
    exercises/<assignment>/<assignment>.ipynb   student versions, made by generate_assignment
    grading/                                    submissions, autograded work, feedback, gradebook
"""

import os

from nbgrader.preprocessors import (
    CheckCellMetadata,
    ClearOutput,
    DeduplicateIds,
    OverwriteCells,
    OverwriteKernelspec,
)

c = get_config()  # noqa: F821 (nbgrader provides get_config)

c.CourseDirectory.root = os.path.dirname(os.path.abspath(__file__))
os.makedirs(os.path.join(c.CourseDirectory.root, "grading"), exist_ok=True)
c.CourseDirectory.course_id = "explaining-convnets"
c.CourseDirectory.source_directory = "solutions"
c.CourseDirectory.release_directory = "exercises"
c.CourseDirectory.submitted_directory = "grading/submitted"
c.CourseDirectory.autograded_directory = "grading/autograded"
c.CourseDirectory.feedback_directory = "grading/feedback"
c.CourseDirectory.db_url = "sqlite:///" + os.path.join(c.CourseDirectory.root, "grading", "gradebook.db")
c.Exchange.root = os.path.join(c.CourseDirectory.root, "grading", "exchange")

# A student's notebook runs in a few seconds. A cell still running after this many seconds (a loop
# that never ends) is interrupted and recorded as an error; the cells after it still run and
# count (Execute.interrupt_on_timeout, nbgrader's default, stated here). The timeout is set on
# ExecutePreprocessor, the class nbgrader's Execute extends, so that a command-line
# --ExecutePreprocessor.timeout=N (or --Execute.timeout=N) overrides it.
c.ExecutePreprocessor.timeout = 60
c.Execute.interrupt_on_timeout = True
c.ExecutePreprocessor.kernel_name = "python3"

# The released notebooks keep no outputs; the student runs them.
c.ClearOutput.enabled = True


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


c.Autograde.sanitize_preprocessors = [
    ClearOutput,
    KeepLastCopy,
    OverwriteKernelspec,
    OverwriteCells,
    CheckCellMetadata,
]
