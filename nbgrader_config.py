"""The repository root is an nbgrader course directory.

solutions/<assignment>/<assignment>.ipynb   instructor versions (nbgrader's source)
exercises/<assignment>/<assignment>.ipynb   student versions, made by generate_assignment
grading/                                    submissions, autograded work, feedback, gradebook
"""

import os
import sys

from nbconvert.preprocessors import ClearMetadataPreprocessor
from nbgrader.preprocessors import (
    AssignLatePenalties,
    CheckCellMetadata,
    ClearOutput,
    IgnorePattern,
    LimitOutput,
    OverwriteCells,
    OverwriteKernelspec,
    SaveAutoGrades,
)

from lecture_lib.grading.execute import SandboxedExecute
from lecture_lib.grading.sanitize import (
    CheckSubmission,
    KeepLastCopy,
    SanitizeMarkdown,
    SubmissionExporter,
)

c = get_config()  # noqa: F821 (nbgrader provides get_config)

# nbgrader runs `alembic` (a tool of its environment) when it creates the gradebook: find it
# next to this Python also when the environment is not activated (`.venv/bin/nbgrader ...`).
_tools = os.path.dirname(sys.executable)
if _tools not in os.environ.get("PATH", "").split(os.pathsep):
    os.environ["PATH"] = _tools + os.pathsep + os.environ.get("PATH", "")

c.CourseDirectory.root = os.path.dirname(os.path.abspath(__file__))
os.makedirs(os.path.join(c.CourseDirectory.root, "grading"), exist_ok=True)
c.CourseDirectory.course_id = "explaining-convnets"
c.CourseDirectory.source_directory = "solutions"
c.CourseDirectory.release_directory = "exercises"
c.CourseDirectory.submitted_directory = "grading/submitted"
c.CourseDirectory.autograded_directory = "grading/autograded"
c.CourseDirectory.feedback_directory = "grading/feedback"
c.CourseDirectory.db_url = "sqlite:///" + os.path.join(
    c.CourseDirectory.root, "grading", "gradebook.db"
)
c.Exchange.root = os.path.join(c.CourseDirectory.root, "grading", "exchange")

# A student's notebook runs in a few seconds. A cell still running after this many seconds (a loop
# that never ends) is interrupted; one that does not stop within 10 s more loses its kernel, and
# grading goes on in a fresh one (the cells above run again). The other questions still count.
# The timeout is set on ExecutePreprocessor, a base class of the course's SandboxedExecute, so
# that a command-line --ExecutePreprocessor.timeout=N overrides it.
c.ExecutePreprocessor.timeout = 60
c.ExecutePreprocessor.kernel_name = "python3"

# The released notebooks keep no outputs; the student runs them.
c.ClearOutput.enabled = True

# Autograding treats every submission as hostile (lecture_lib.grading; README, "Homework"):
# - a submission that is not a readable notebook of this assignment scores 0 with a note;
# - every cell gets the nbgrader role the gradebook knows; deleted check cells come back;
#   (lecture_lib.grading.sanitize);
c.Autograde.exporter_class = SubmissionExporter
c.Autograde.sanitize_preprocessors = [
    CheckSubmission,
    ClearOutput,
    KeepLastCopy,
    OverwriteKernelspec,
    OverwriteCells,
    SanitizeMarkdown,
    CheckCellMetadata,
]
# - its kernel runs in a bubblewrap sandbox (memory, process and disk limits, no network, no
#   view of this folder), the check cells only send the student's results out, and the
#   verdict is reached here, with fresh secret seeds for the hidden cases.
c.Autograde.autograde_preprocessors = [
    SandboxedExecute,
    IgnorePattern,
    ClearMetadataPreprocessor,
    LimitOutput,
    SaveAutoGrades,
    AssignLatePenalties,
    CheckCellMetadata,
]
c.SandboxedExecute.workers = 2  # submissions executed at a time; about one per 2 CPU cores
# c.SandboxedExecute.submission_timeout = 600  # seconds per submission; the cells past it not run

# The feedback pages and the Formgrader render Markdown through the course's filter: the rendered
# HTML cleaned with an allow-list (no script, no event handler, no javascript:/data: link or
# picture), and maths as MathML, which browsers draw without loading MathJax from the network.
c.HTMLExporter.filters = {"markdown2html": "lecture_lib.grading.pages.markdown2html"}
# The feedback pages and the Formgrader's submission page load no MathJax from the network (the
# course's templates, lecture_lib/grading/templates: feedback/ and formgrade/).
import nbgrader  # noqa: E402

c.HTMLExporter.extra_template_basedirs = [
    os.path.join(
        os.path.dirname(os.path.abspath(__import__("lecture_lib").__file__)), "grading", "templates"
    ),
    os.path.join(
        os.path.dirname(nbgrader.__file__), "server_extensions", "formgrader", "templates"
    ),
]
# c.SandboxedExecute.sandbox = False  # only where bubblewrap cannot run, for trusted work
# c.SandboxedExecute.allow_library_answers = True  # points for answers that call the library
# c.SandboxedExecute.memory_limit = 3 * 2**30  # bytes; also process_limit, output_limit
