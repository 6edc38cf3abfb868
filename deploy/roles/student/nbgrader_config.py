"""nbgrader for a student of the class (the hub sets the environment).

The student id is the JupyterHub user name, whatever the operating-system user is (on
Kubernetes every server runs as the same user, jovyan).
"""

import os

c = get_config()  # noqa: F821 (nbgrader provides get_config)

c.CourseDirectory.course_id = os.environ["COURSE_ID"]
c.Exchange.root = os.environ["COURSE_EXCHANGE"]
c.CourseDirectory.student_id = os.environ["JUPYTERHUB_USER"]
