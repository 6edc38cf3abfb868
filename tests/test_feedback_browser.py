"""A feedback page in a real browser with the network blocked: no script runs, maths renders.

The page is what ``nbgrader generate_feedback`` makes with the course's configuration
(``nbgrader_config.py``: the Markdown filter of ``lecture_lib.grading.pages`` and the feedback
template without MathJax), for a written answer that tries every way in: a ``<script>``, a
``javascript:`` link in Markdown and in HTML, a ``data:`` picture holding SVG with a script,
an event handler, and a formula. Headless Chromium (Debian's ``/usr/bin/chromium``) driven by
Playwright opens it from a file; every request that is not the file itself is refused and
recorded.
"""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
        "--disable-background-networking", "--disable-component-update"]  # fmt: skip

if not CHROMIUM.exists():
    pytest.skip("needs Debian's Chromium: apt-get install -y chromium", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="needs pip install playwright")
nbgrader = pytest.importorskip("nbgrader", reason="nbgrader is in the instructor extra")

WRITTEN = (
    "My answer: <script>window.pwned = 'script'</script>\n\n"
    "[see](javascript:window.pwned='markdown-link') "
    "![x](data:image/svg+xml;base64,"
    "PHN2ZyB4bWxucz0iaHR0cDovL3d3dy53My5vcmcvMjAwMC9zdmciIG9ubG9hZD0id2luZG93LnB3bmVkPTEiLz4=) "
    "<a href=\"javascript:window.pwned='html-link'\">here</a> "
    "<img src=x onerror=\"window.pwned='onerror'\"> "
    "<svg onload=\"window.pwned='svg'\"></svg> "
    "so a < b & c > d, and the score is linear near I: $S_c(I) \\approx w^T I + b$.\n\n"
    "$$\\frac{\\partial S_c}{\\partial I}$$\n"
)


def feedback_page(folder: Path) -> Path:
    """The feedback page of a notebook with one written answer, as generate_feedback makes it."""
    from nbconvert.exporters import HTMLExporter
    from traitlets.config import Config
    from traitlets.config.loader import PyFileConfigLoader

    config = Config()
    config.merge(PyFileConfigLoader("nbgrader_config.py", path=str(ROOT)).load_config())
    static = Path(nbgrader.__file__).parent / "server_extensions" / "formgrader" / "static"
    config.HTMLExporter.template_name = "feedback"  # what GenerateFeedback sets
    config.HTMLExporter.extra_template_paths = [
        str(static / "node_modules" / "bootstrap" / "dist" / "css")
    ]
    nb = nbformat.v4.new_notebook()
    written = nbformat.v4.new_markdown_cell(WRITTEN)
    written.metadata["nbgrader"] = {"solution": True, "grade": True, "grade_id": "written",
                                    "points": 2, "locked": False, "score": 1}  # fmt: skip
    nb.cells = [written, nbformat.v4.new_code_cell("1 + 1")]
    resources = {"nbgrader": {"notebook": "a", "assignment": "a", "student": "ada",
                              "score": 1, "max_score": 2, "late_penalty": 0}}  # fmt: skip
    html, _ = HTMLExporter(config=config).from_notebook_node(nb, resources=resources)
    page = folder / "feedback.html"
    page.write_text(html, encoding="utf-8")
    return page


def test_a_feedback_page_runs_no_script_and_renders_maths_offline(tmp_path):
    page = feedback_page(tmp_path)
    text = page.read_text()
    assert "javascript:" not in text.split("</style>")[-1]  # bootstrap's CSS names it once
    assert "onerror" not in text and "data:image/svg" not in text and "<script" not in text
    assert "a &lt; b &amp; c &gt; d" in text and "&amp;lt;" not in text
    requests, dialogs = [], []
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            context = browser.new_context()

            def route(route):
                if route.request.url.startswith("file:"):
                    route.continue_()
                else:
                    requests.append(route.request.url)
                    route.abort()

            context.route("**/*", route)
            tab = context.new_page()
            tab.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
            tab.goto(page.as_uri())
            tab.wait_for_load_state("load")
            for link in (
                tab.locator("a", has_text="see").all() + tab.locator("a", has_text="here").all()
            ):
                link.click()
            assert tab.evaluate("window.pwned === undefined"), tab.evaluate("window.pwned")
            assert tab.evaluate("document.scripts.length") == 0
            handlers = tab.evaluate(
                "Array.from(document.querySelectorAll('*')).flatMap(e => "
                "Array.from(e.attributes).filter(a => a.name.startsWith('on')).map(a => a.name))"
            )
            assert handlers == []
            links = tab.evaluate(
                "Array.from(document.querySelectorAll('[href],[src]'))"
                ".map(e => e.getAttribute('href') || e.getAttribute('src'))"
            )
            assert not [u for u in links if u.split(":")[0].lower() in ("javascript", "data")]
            maths = tab.locator("math")
            assert maths.count() == 2
            boxes = [maths.nth(i).bounding_box() for i in range(2)]
            assert all(box and box["width"] > 10 and box["height"] > 5 for box in boxes), boxes
            shown = tab.inner_text("body")
            assert "$S_c" not in shown and "\\approx" not in shown and "≈" in shown
            assert "a < b & c > d" in shown
            tab.screenshot(path=str(tmp_path / "feedback.png"), full_page=True)
        finally:
            browser.close()
    assert requests == [], requests  # nothing asked of the network
    assert dialogs == []
    print(f"\nfeedback page: {page}\nscreenshot: {tmp_path / 'feedback.png'}")


def test_pages_show_no_script_link_however_it_is_written():
    from lecture_lib.grading.pages import markdown2html

    for attack in (
        "[x](javascript:alert(1))",
        "[x](JaVaScRiPt:alert(1))",
        "[x]( javascript:alert(1))",
        "[x](&#106;avascript:alert(1))",
        "<a href='&#x6A;avascript:alert(1)'>x</a>",
        "![x](data:text/html;base64,PHNjcmlwdD4=)",
        "<iframe src=javascript:alert(1)>",
        "<math><a xlink:href='javascript:alert(1)'>x</a></math>",
        "<form action=javascript:alert(1)><button>x</button></form>",
        "<style>@import 'http://x'</style>",
        "$\\href{javascript:alert(1)}{x}$",
    ):
        html = markdown2html(attack).lower()
        for word in ("javascript", "data:", "<script", "<iframe", "<form", "<style", " on"):
            assert word not in html, (attack, html)
    assert os.path.basename(__file__) == "test_feedback_browser.py"
