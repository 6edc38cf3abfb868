"""JupyterHub for one class of the course: ``jupyterhub -f deploy/jupyterhub_config.py``.

The settings come from the environment (COURSE_DIR, COURSE_EXCHANGE, COURSE_INSTRUCTORS,
COURSE_STUDENTS, COURSE_MEM_LIMIT, COURSE_CPU_LIMIT, COURSE_LECTURES, COURSE_IDLE_TIMEOUT,
COURSE_SSL_CERT, COURSE_SSL_KEY, COURSE_SPAWNER; see course_hub.py and
deploy/README.md). A setting that cannot work stops the hub here, before it starts anything,
with a message that names the setting and says what to do.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import course_hub  # noqa: E402

c = get_config()  # noqa: F821 (JupyterHub provides get_config)

try:
    settings = course_hub.Settings.from_environ()
    course = course_hub.check(settings)
except course_hub.SettingError as error:
    sys.exit(f"The course server cannot start: {error}")

course_hub.configure(c, settings, course)

# Site-specific settings go below (they override the above), e.g. an OAuth authenticator:
#   c.JupyterHub.authenticator_class = "github"
#   c.JupyterHub.bind_url = "http://127.0.0.1:8000"   # behind a TLS proxy (nginx, caddy)
