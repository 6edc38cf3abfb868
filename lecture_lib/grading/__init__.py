"""Autograding that a hostile submission can neither fool nor harm (nbgrader plug-ins).

- ``sandbox``: the kernel that runs a submission starts inside bubblewrap, with memory and
  process limits, seeing only the Python environment, the library and its own scratch home.
- ``collect``: the only grading code that runs in that kernel; it sends the student's results
  out (``wire``).
- ``verdict``: the grader reads each check cell from the gradebook, draws secret seeds, and
  judges what came back with the library, in its own process.
- ``library_answers``: an answer that only calls the library's own answer earns no points.
- ``execute``: ``SandboxedExecute``, the nbgrader preprocessor that puts it together: one cell
  at a time, capped outputs, a fresh kernel after a crash, submissions graded in parallel.
- ``sanitize``: submissions that are not what they should be get a zero and a reason.

``nbgrader_config.py`` at the course's root turns them on; see the README's instructor section.
"""
