"""nbgrader for an instructor of the class (the hub sets the environment).

The course directory's own nbgrader_config.py (loaded after this one) says the rest: the
course id, where solutions, exercises and grades live, and how autograding runs.
"""

import os

c = get_config()  # noqa: F821 (nbgrader provides get_config)

c.CourseDirectory.root = os.environ["COURSE_DIR"]
