"""The instructor's Formgrader on a graded course, and one submission's page in a real browser.

``Formgrader(course)`` starts a Jupyter server with nbgrader's extension in the course directory
(on 127.0.0.1, with a token, as an instructor runs it); ``look_at(url, picture)`` opens a page
in headless Chromium (Debian's ``/usr/bin/chromium``, driven by Playwright) where every request
that is not to 127.0.0.1 is refused and recorded, clicks the links in the student's answers,
and reports what a test needs to know about the page.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
        "--disable-background-networking", "--disable-component-update"]  # fmt: skip
START_S = 90
"""Seconds the server may take to answer (a busy machine)."""


def submission_id(course: Path, assignment: str, student: str) -> str:
    """The gradebook's id of a student's notebook: the Formgrader's address of its page."""
    from nbgrader.api import Gradebook

    url = "sqlite:///" + str(course / "grading" / "gradebook.db")
    with Gradebook(url, "explaining-convnets") as gb:
        return gb.find_submission_notebook(assignment, assignment, student).id


class Formgrader:
    """A Jupyter server with nbgrader's Formgrader, serving ``course``, while in a ``with``."""

    def __init__(self, course: Path, folder: Path) -> None:
        self.course, self.folder = course, folder
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.token = secrets.token_hex(16)

    def __enter__(self) -> Formgrader:
        env = dict(
            os.environ,
            JUPYTER_RUNTIME_DIR=str(self.folder / "runtime"),
            JUPYTER_DATA_DIR=str(self.folder / "data"),
            IPYTHONDIR=str(self.folder / "ipython"),
        )
        command = [
            sys.executable, "-m", "jupyter_server", "--no-browser",
            "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={self.port}",
            "--ServerApp.port_retries=0", "--ServerApp.allow_root=True",
            f"--IdentityProvider.token={self.token}", f"--ServerApp.root_dir={self.course}",
            "--ServerApp.jpserver_extensions={'nbgrader': True}",
        ]  # fmt: skip
        self.log = self.folder / "formgrader.log"
        with open(self.log, "w") as log:
            self.process = subprocess.Popen(
                command, cwd=self.course, env=env, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        deadline = time.monotonic() + START_S
        while time.monotonic() < deadline and self.process.poll() is None:
            try:
                urllib.request.urlopen(self.url("api/status"), timeout=5)
                return self
            except OSError:
                time.sleep(0.3)
        self.__exit__()
        raise RuntimeError(f"the Formgrader did not start:\n{self.log.read_text()[-3000:]}")

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}/{path}?token={self.token}"

    def __exit__(self, *error) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


HANDLERS = """Array.from(document.querySelectorAll(SELECTOR)).flatMap(e =>
  Array.from(e.attributes).filter(a => a.name.startsWith('on')).map(a => a.value))"""
ADDRESSES = """Array.from(document.querySelectorAll('[href],[src],[action],[formaction]'))
  .map(e => e.getAttribute('href') || e.getAttribute('src') || e.getAttribute('action')
            || e.getAttribute('formaction'))"""


def look_at(url: str, picture: Path) -> dict:
    """Open ``url`` with the network blocked, click the student's links, and report the page:
    ``offsite`` (requests refused), ``dialogs``, ``pwned`` (what a script of the student set),
    ``handlers`` (inline event handlers on the page, and ``answer_handlers`` and
    ``answer_scripts`` inside the notebook), ``addresses`` (every href, src and action),
    ``maths`` (the box of each MathML formula inside the notebook), ``mathjax`` (whether
    MathJax or an error box of it exists), ``text`` (what its Markdown cells show) and ``status``
    (of the page's own response)."""
    from playwright.sync_api import sync_playwright

    offsite, dialogs = [], []

    def route(route):
        if urlsplit(route.request.url).hostname == "127.0.0.1":
            route.continue_()
        else:
            offsite.append(route.request.url)
            route.abort()

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            context = browser.new_context()
            context.route("**/*", route)
            tab = context.new_page()
            tab.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
            response = tab.goto(url)
            tab.wait_for_load_state("networkidle")
            notebook = tab.locator("#notebook-container").first  # nbgrader nests two
            for link in notebook.locator(".nbgrader_cell .text_cell_render a").all():
                href = (link.get_attribute("href") or "").strip().lower()
                if not href.startswith(("http:", "https:", "mailto:")):
                    link.click()  # a script link of the student's would run now
            report = {
                "status": response.status if response else None,
                "offsite": offsite,
                "dialogs": dialogs,
                "pwned": tab.evaluate("window.pwned === undefined ? null : String(window.pwned)"),
                "handlers": tab.evaluate(HANDLERS.replace("SELECTOR", "'*'")),
                "answer_handlers": tab.evaluate(
                    HANDLERS.replace("SELECTOR", "'#notebook-container *'")
                ),
                "answer_scripts": notebook.locator("script").count(),
                "addresses": tab.evaluate(ADDRESSES),
                "maths": [m.bounding_box() for m in notebook.locator("math").all()],
                "mathjax": tab.evaluate(
                    "window.MathJax !== undefined || document.querySelector("
                    "'.MathJax_Error, mjx-merror, .mjx-merror, #MathJax_Message') !== null"
                ),
                "text": "\n".join(notebook.locator(".text_cell_render").all_inner_texts()),
            }
            tab.screenshot(path=str(picture), full_page=True)
        finally:
            browser.close()
    return report
