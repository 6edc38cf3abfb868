"""The repository root is an nbgrader course directory.

    solutions/<assignment>/<assignment>.ipynb   instructor versions (nbgrader's source)
    exercises/<assignment>/<assignment>.ipynb   student versions, made by generate_assignment
    grading/                                    submissions, autograded work, feedback, gradebook
"""

import os

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

# A student's notebook runs in a few seconds; a cell stuck in a loop is stopped after this many
# seconds and the other questions still count.
c.ExecutePreprocessor.timeout = 60
c.Execute.timeout = 60
c.ExecutePreprocessor.kernel_name = "python3"

# The released notebooks keep no outputs; the student runs them.
c.ClearOutput.enabled = True
