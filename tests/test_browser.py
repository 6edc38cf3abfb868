"""The lectures in JupyterLab and one slide deck, in a real browser.

A JupyterLab server on 127.0.0.1 serves a copy of ``lectures/`` (``lecture_lib`` importable);
headless Chromium (Debian's ``chromium``, never a downloaded browser) driven by Playwright for
Python opens each lecture as a student would:

- as stored, before it runs: each explorer shows its picture, never its text;
- Run All: every cell runs without an error or text on stderr (a failure names the notebook,
  the cell and the error), every widget renders (no "Error displaying widget", nothing left at
  "Loading widget..."), and changing one control of each explorer changes its picture: three
  changes, each timed in the page from the change to the new picture painted (its image
  decoded and a frame drawn), reported in milliseconds with their median;
- one offline deck (``lecture_lib.slides``) shows its first slide, typesets its maths, moves on
  with the arrow key and asks nothing of the network;
- every deck at 1280x720: each slide shown in turn, none taller or wider than reveal.js's slide
  (a failure lists the deck, the slide and its first heading).

Screenshots go to the pytest temporary folder (``browser*/``), with ``times.txt``; the terminal
reports the time of each lecture and the screenshots' paths.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
LECTURES = sorted((ROOT / "lectures").glob("*.ipynb"))
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
VIEWPORT = {"width": 1366, "height": 900}
"""A laptop screen: with the file browser open, an output is about 970 pixels wide."""

SERVER_START_S, RUN_ALL_S, WIDGETS_S, CHANGE_S = 180, 600, 60, 120
"""Time limits in seconds: the server to answer, Run All (a lecture takes 8-18 s on an idle
2-core machine, up to 7 minutes on one shared by several jobs), widgets to render, a redraw."""

if not CHROMIUM.exists():
    pytest.skip(
        "needs Debian's Chromium at /usr/bin/chromium: apt-get install -y chromium",
        allow_module_level=True,
    )
sync_api = pytest.importorskip(
    "playwright.sync_api",
    reason="needs Playwright for Python: pip install playwright (its own browsers are not used)",
)

# --- the JupyterLab server ------------------------------------------------------------------

SETTINGS = {  # quiet and complete: no news from the internet, every cell kept in the page
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {
        "fetchNews": "false",
        "checkForUpdates": False,
    },
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Lab:
    """A JupyterLab server in a temporary folder, on 127.0.0.1, with a random token."""

    def __init__(self, folder: Path) -> None:
        self.root = folder / "root"
        shutil.copytree(ROOT / "lectures", self.root / "lectures")
        settings = folder / "settings"
        for name, values in SETTINGS.items():
            (settings / name).parent.mkdir(parents=True, exist_ok=True)
            (settings / name).write_text(json.dumps(values))
        self.port, self.token = free_port(), secrets.token_hex(16)
        env = dict(
            os.environ,
            PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
            JUPYTER_CONFIG_DIR=str(folder / "config"),  # no user's settings, trust or kernels
            JUPYTER_DATA_DIR=str(folder / "data"),
            JUPYTER_RUNTIME_DIR=str(folder / "runtime"),
            IPYTHONDIR=str(folder / "ipython"),
        )
        self.log = folder / "jupyterlab.log"
        command = [
            sys.executable,
            "-m",
            "jupyterlab",
            "--no-browser",
            "--ServerApp.ip=127.0.0.1",
            f"--ServerApp.port={self.port}",
            "--ServerApp.port_retries=0",
            f"--IdentityProvider.token={self.token}",
            f"--ServerApp.root_dir={self.root}",
            "--ServerApp.allow_root=True",
            "--LabApp.expose_app_in_browser=True",  # window.jupyterapp: commands and models
            f"--LabServerApp.user_settings_dir={settings}",
            f"--LabServerApp.workspaces_dir={folder / 'workspaces'}",
        ]
        with open(self.log, "w") as log:
            self.process = subprocess.Popen(
                command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        self._wait_until_ready()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}/{path}?token={self.token}"

    def _wait_until_ready(self) -> None:
        deadline = time.monotonic() + SERVER_START_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"JupyterLab stopped at start:\n{self.log.read_text()[-3000:]}")
            try:
                urllib.request.urlopen(self.url("api/status"), timeout=5)
                return
            except OSError:
                time.sleep(0.5)
        self.stop()
        pytest.fail(
            f"JupyterLab did not answer in {SERVER_START_S} s:\n{self.log.read_text()[-3000:]}"
        )

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)  # the server and its kernels
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    server = Lab(tmp_path_factory.mktemp("jupyterlab"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def browser():
    playwright = sync_api.sync_playwright().start()
    # launch() gives Chromium a fresh profile in a temporary folder, removed at close()
    chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
    yield chromium
    chromium.close()
    playwright.stop()


@pytest.fixture(scope="module")
def shots(tmp_path_factory):
    """The folder of the screenshots and of ``times.txt``."""
    return tmp_path_factory.mktemp("browser")


@pytest.fixture
def report(capsys, shots):
    """Write a line to the terminal (even without -s) and to ``times.txt``."""

    def write(line: str) -> None:
        with capsys.disabled():
            print(f"\n{line}")
        with open(shots / "times.txt", "a") as times:
            times.write(line + "\n")

    return write


# --- JupyterLab through its app object ------------------------------------------------------

PANEL = "window.jupyterapp && window.jupyterapp.shell.currentWidget"

READY = f"""(path) => {{
    const panel = {PANEL};
    const kernel = panel && panel.sessionContext && panel.sessionContext.session
        && panel.sessionContext.session.kernel;
    return Boolean(panel && panel.context && panel.context.path === path
        && panel.context.isReady && kernel && kernel.status === "idle"
        && panel.content.widgets.length > 0);
}}"""

RUN_ALL = """async (limit) => {
    const run = window.jupyterapp.commands.execute("notebook:run-all-cells");
    const late = new Promise(resolve => setTimeout(() => resolve("late"), limit * 1000));
    return String(await Promise.race([run, late]));
}"""

CELLS = f"""() => {PANEL}.content.widgets.map((cell, index) => {{
    const model = cell.model;
    if (model.type !== "code") return {{index, type: model.type}};
    const outputs = model.outputs.toJSON().map(o => ({{
        output_type: o.output_type, name: o.name, text: o.output_type === "stream"
            ? [].concat(o.text).join("") : "", ename: o.ename, evalue: o.evalue,
        traceback: o.traceback ? o.traceback.join("\\n") : "",
        widget: Boolean(o.data && o.data["application/vnd.jupyter.widget-view+json"]),
    }}));
    return {{index, type: "code", count: model.executionCount,
             source: model.sharedModel.getSource(), outputs}};
}})"""

VIEWS = ".jp-OutputArea-output:has(> .jupyter-widgets)"
"""Outputs that show a widget (JupyterLab gives them no data-mime-type)."""
TEXTS = '.jp-OutputArea-output[data-mime-type="text/plain"]'
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def cells(page) -> list[dict]:
    return page.evaluate(CELLS)


def failures(lecture: Path, found: list[dict]) -> list[str]:
    """Every error or stderr output, with its notebook and cell; without those, every code cell
    left unrun."""
    messages, unrun = [], []
    for cell in found:
        if cell["type"] != "code":
            continue
        where = f"{lecture.name}, cell {cell['index']}:\n{cell['source']}\n"
        for output in cell["outputs"]:
            if output["output_type"] == "error":
                traceback = ANSI.sub("", output["traceback"])
                messages.append(f"{where}{output['ename']}: {output['evalue']}\n{traceback}")
            elif output["output_type"] == "stream" and output["name"] == "stderr":
                messages.append(f"{where}wrote to stderr: {output['text']}")
        if cell["count"] is None:
            unrun.append(f"{where}did not run")
    return messages or unrun


def explorers(notebook):
    """The rendered explorers: widget views holding a picture and a dropdown."""
    views = notebook.locator(VIEWS)
    return [
        views.nth(k)
        for k in range(views.count())
        if views.nth(k).locator("select").count() and views.nth(k).locator("img").count()
    ]


PAINTS = 3
"""Changes of one control per explorer; the report gives each one's paint time and the median."""

PAINT = """async ([view, index, limit]) => {
    // control changed -> new picture painted, timed in the page (performance.now)
    const picture = () => view.querySelector("img.lecture-explorer-picture")
        || view.querySelector("img");
    const failed = () => view.querySelector('[data-mime-type="application/vnd.jupyter.stderr"]');
    const before = picture() && picture().src;
    const select = view.querySelector("select");
    const start = performance.now();
    select.selectedIndex = index;
    select.dispatchEvent(new Event("input", {bubbles: true}));
    select.dispatchEvent(new Event("change", {bubbles: true}));
    const img = await new Promise(resolve => {
        const check = () => {
            const now = picture();
            if (failed()) resolve(null);
            else if (now && now.src !== before) resolve(now);
            else return false;
            observer.disconnect();
            return true;
        };
        const observer = new MutationObserver(check);
        if (check()) return;
        observer.observe(view, {subtree: true, childList: true, attributes: true});
        setTimeout(() => { observer.disconnect(); resolve(undefined); }, limit);
    });
    if (!img) return {failed: failed() ? failed().innerText : null, late: img === undefined};
    await img.decode().catch(() => null);  // loaded and decoded: ready to paint
    // a frame later the picture is on screen: rAF runs before a paint, a task after it
    await new Promise(resolve => requestAnimationFrame(() => setTimeout(resolve, 0)));
    return {ms: performance.now() - start, complete: img.complete && img.naturalWidth > 0};
}"""

IDLE = f"() => {PANEL}.sessionContext.session.kernel.status === 'idle'"


def picture(view) -> str:
    return view.locator("img").first.get_attribute("src") or ""


def change_one_control(page, view) -> tuple[str, list[float]]:
    """Pick the next entry of the explorer's first dropdown, ``PAINTS`` times, waiting for the
    kernel to be idle in between; return what changed and the milliseconds from each change to
    its new picture painted in the page."""
    select = view.locator("select").first
    label = view.locator(".widget-dropdown label").first.inner_text().strip() or "dropdown"
    options = select.locator("option").all_inner_texts()
    current = select.evaluate("s => s.selectedIndex")
    painted, chosen = [], []
    for step in range(1, PAINTS + 1):
        choice = (current + step) % len(options)
        before = picture(view)
        result = page.evaluate(PAINT, [view.element_handle(), choice, CHANGE_S * 1000])
        failed = view.locator('[data-mime-type="application/vnd.jupyter.stderr"]')
        assert failed.count() == 0, f"the explorer failed after {label!r}: {failed.inner_text()}"
        assert not result.get("late"), f"{label!r}: no new picture in {CHANGE_S} s"
        assert result["complete"] and picture(view) != before, (label, options[choice], result)
        painted.append(result["ms"])
        chosen.append(repr(options[choice].replace("\xa0", " ")))
        page.wait_for_function(IDLE, timeout=CHANGE_S * 1000)
    return f"{label} -> {', '.join(chosen)}", painted


def open_notebook(page, lab: Lab, path: str):
    """Open ``path`` (from the server's root) in a workspace of its own, reset, so that no
    notebook of an earlier test opens again; wait for its kernel; return its element."""
    page.goto(lab.url(f"lab/workspaces/{Path(path).stem}/tree/{path}") + "&reset")
    page.wait_for_function(READY, arg=path, timeout=SERVER_START_S * 1000)
    return page.locator(f'[id="{page.evaluate(f"() => {PANEL}.id")}"] .jp-Notebook')


def run_all(page, notebook: Path) -> list[dict]:
    """Clear the stored outputs, then Run All, as a student does; returns the cells with their
    outputs (a cell that did not run has no execution count)."""
    page.evaluate("() => window.jupyterapp.commands.execute('notebook:clear-all-cell-outputs')")
    outcome = page.evaluate(RUN_ALL, RUN_ALL_S)
    assert outcome != "late", f"{notebook.name}: Run All took more than {RUN_ALL_S} s"
    return cells(page)


@pytest.mark.parametrize("lecture", LECTURES, ids=[p.stem for p in LECTURES])
def test_lecture_runs_in_jupyterlab(lecture, lab, browser, shots, report):
    page = browser.new_page(viewport=VIEWPORT)
    page.set_default_timeout(WIDGETS_S * 1000)
    page_errors = []
    page.on("pageerror", lambda error: page_errors.append(str(error)))
    name = lecture.stem
    try:
        start = time.monotonic()
        notebook = open_notebook(page, lab, f"lectures/{lecture.name}")
        opened = time.monotonic() - start

        # As stored: an explorer shows a picture (the notebook is not trusted yet), no repr.
        stored = [cell for cell in cells(page) if any(o["widget"] for o in cell.get("outputs", []))]
        texts = notebook.locator(TEXTS).all_inner_texts()
        reprs = [text[:80] for text in texts if "Explorer(" in text or "(children=" in text]
        assert reprs == [], f"{lecture.name} as stored shows widgets as text: {reprs}"
        for k, cell in enumerate(stored):
            output = notebook.locator(".jp-CodeCell").nth(_code_position(page, cell["index"]))
            assert output.locator(".jp-OutputArea-output img").count() >= 1, (
                f"{lecture.name}, cell {cell['index']} as stored shows no picture"
            )
            output.locator(".jp-OutputArea-output").last.screenshot(
                path=shots / f"{name}-stored-explorer{k}.png"
            )

        # Run All, as a student does.
        start = time.monotonic()
        found = run_all(page, lecture)
        ran = time.monotonic() - start
        problems = failures(lecture, found)
        assert problems == [], "\n\n".join(problems)

        # Every widget renders.
        page.wait_for_function(
            "(node) => !node.innerText.includes('Loading widget')", arg=notebook.element_handle()
        )
        text = notebook.inner_text()
        assert "Error displaying widget" not in text, f"{lecture.name}: a widget failed to show"
        views = notebook.locator(VIEWS)
        shown = sum(o["widget"] for cell in found for o in cell.get("outputs", []))
        assert views.count() == shown, f"{lecture.name}: {shown} widgets, {views.count()} shown"
        for k in range(views.count()):
            box = views.nth(k).bounding_box()
            assert box and box["height"] > 50, f"{lecture.name}: widget {k} is empty"

        # Each explorer redraws when a control changes.
        changes = []
        for k, view in enumerate(explorers(notebook)):
            view.scroll_into_view_if_needed()
            what, painted = change_one_control(page, view)
            view.screenshot(path=shots / f"{name}-explorer{k}.png")
            changes.append(
                f"explorer {k}: {what} painted in "
                + ", ".join(f"{ms:.0f}" for ms in painted)
                + f" ms (median {statistics.median(painted):.0f} ms)"
            )
        assert len(changes) == len(stored), f"{lecture.name}: not every explorer could be driven"
        page.screenshot(path=shots / f"{name}.png")
        report(
            f"{name}: opened in {opened:.1f} s, Run All {ran:.1f} s"
            + "".join(f"; {c}" for c in changes)
            + f"; screenshots {shots}/{name}*.png"
        )
    except Exception:
        page.screenshot(path=shots / f"{name}-failed.png")
        if page_errors:
            print(f"errors in the page of {lecture.name}:", *page_errors, sep="\n")
        raise
    finally:
        page.evaluate(f"() => {PANEL} && {PANEL}.sessionContext.shutdown()")
        page.close()


def test_a_broken_notebook_fails_with_its_cell_and_error(lab, browser):
    notebook = nbformat.v4.new_notebook(
        cells=[
            nbformat.v4.new_markdown_cell("A notebook that breaks in its second code cell."),
            nbformat.v4.new_code_cell("x = 1"),
            nbformat.v4.new_code_cell("x / 0  # broken on purpose"),
            nbformat.v4.new_code_cell("print('not reached')"),
        ],
        metadata={"kernelspec": {"name": "python3", "display_name": "Python 3"}},
    )
    path = lab.root / "checks" / "broken.ipynb"
    path.parent.mkdir(exist_ok=True)
    nbformat.write(notebook, path)
    page = browser.new_page(viewport=VIEWPORT)
    try:
        open_notebook(page, lab, "checks/broken.ipynb")
        found = run_all(page, path)
    finally:
        page.evaluate(f"() => {PANEL} && {PANEL}.sessionContext.shutdown()")
        page.close()
    problems = failures(path, found)
    assert len(problems) == 1, problems
    assert problems[0].startswith("broken.ipynb, cell 2:\nx / 0  # broken on purpose\n")
    assert "ZeroDivisionError: division by zero" in problems[0]
    # Run All stops at the error; without an error to show, the cells left unrun are named
    without_error = [cell for cell in found if cell["index"] != 2]
    assert failures(path, without_error) == [
        "broken.ipynb, cell 3:\nprint('not reached')\ndid not run"
    ]


def _code_position(page, index: int) -> int:
    """The position among the code cells of the cell at ``index``."""
    return page.evaluate(
        f"(index) => {PANEL}.content.widgets.slice(0, index)"
        ".filter(cell => cell.model.type === 'code').length",
        index,
    )


# --- a lecture as a live slideshow (jupyterlab-rise) ----------------------------------------


def test_lecture_opens_as_a_live_slideshow(lab, browser, shots, report):
    """An instructor's talk: lecture 02 opens as a reveal.js slideshow of the notebook itself
    (jupyterlab-rise, the instructor extra), one slide for each cell stored as a "slide",
    every cell of the notebook on its slides."""
    lecture = LECTURES[1]
    notebook = nbformat.read(lecture, as_version=4)
    page = browser.new_page(viewport=VIEWPORT)
    try:
        start = time.monotonic()
        page.goto(lab.url(f"rise/lectures/{lecture.name}"))
        first = page.locator(".reveal .slides section.present .jp-Cell").first
        first.wait_for(timeout=SERVER_START_S * 1000)
        opened = time.monotonic() - start
        slides = page.locator(".reveal .slides > section").count()
        kinds = [c.metadata.get("slideshow", {}).get("slide_type") for c in notebook.cells]
        assert slides == kinds.count("slide"), (
            f"{slides} slides shown, {kinds.count('slide')} stored"
        )
        assert page.locator(".reveal .slides .jp-Cell").count() == len(notebook.cells)
        assert "Lecture 6, part 2" in first.inner_text()
        page.wait_for_function(
            "() => Array.from(document.querySelectorAll('.jp-Notebook .jp-CodeCell'))"
            ".every(cell => cell.closest('.reveal'))"
        )
        page.screenshot(path=shots / "slideshow-first-slide.png")
        report(
            f"slideshow {lecture.stem}: {slides} slides, opened in {opened:.1f} s; screenshot "
            f"{shots}/slideshow-first-slide.png"
        )
    finally:
        page.close()


# --- one offline deck -----------------------------------------------------------------------

SLIDE = """() => {
    const slide = Reveal.getCurrentSlide();
    return {
        indices: Reveal.getIndices(),
        text: slide.innerText.trim().slice(0, 80),
        height: slide.offsetHeight,
    };
}"""

MATHS_DONE = "() => window.MathJax && MathJax.isReady && MathJax.Hub.queue.pending === 0"


def test_offline_deck_in_the_browser(tmp_path, browser, shots, report):
    from lecture_lib import slides

    (deck,) = slides.build([LECTURES[0]], tmp_path / "slides")  # the reveal.js it ships
    page, asked = offline_page(browser, {"width": 1024, "height": 768})
    try:
        start = time.monotonic()
        page.goto(deck.as_uri())
        page.wait_for_function("() => window.Reveal && Reveal.isReady()", timeout=30_000)
        first = page.evaluate(SLIDE)
        assert first["indices"]["h"] == 0 and first["text"] and first["height"] > 100, first
        page.screenshot(path=shots / "deck-first-slide.png")

        page.wait_for_function(MATHS_DONE, timeout=60_000)
        maths = page.evaluate(
            """() => [document.querySelectorAll('script[type^="math/tex"]').length,
                      document.querySelectorAll('.MathJax, .MathJax_Display').length,
                      document.querySelectorAll('.MathJax_Error, merror').length]"""
        )
        sources, typeset, errors = maths
        assert sources > 0 and typeset >= sources and errors == 0, maths
        loaded = time.monotonic() - start

        slides_seen = page.evaluate("Reveal.getSlides().length")  # each one's fit: below
        with_maths = page.evaluate(
            "() => Reveal.getIndices(Reveal.getSlides().find(s => s.querySelector('.MathJax')))"
        )
        page.evaluate(f"Reveal.slide({with_maths['h']}, {with_maths.get('v') or 0}, 99)")
        page.wait_for_function(MATHS_DONE)
        page.screenshot(path=shots / "deck-maths.png")

        page.evaluate("Reveal.slide(0, 0, -1)")
        before = page.evaluate("JSON.stringify(Reveal.getIndices())")
        page.keyboard.press("ArrowRight")
        page.wait_for_function(f"() => JSON.stringify(Reveal.getIndices()) !== '{before}'")
        page.screenshot(path=shots / "deck-after-arrow.png")
        assert asked == [], f"the deck asked the network for {asked}"
        report(
            f"deck {deck.name}: {slides_seen} slides, {sources} formulas typeset, loaded in "
            f"{loaded:.1f} s; screenshots {shots}/deck-*.png"
        )
    finally:
        page.close()


# --- every slide of every deck fits a 1280x720 screen ---------------------------------------

SCREEN = {"width": 1280, "height": 720}
"""A projector's or a laptop's 720p screen."""

EVERY_SLIDE = """async () => {
    const {width, height} = Reveal.getConfig();
    // the deck typesets and fits a slide in MathJax's queue when it is shown: wait for both,
    // without the pauses MathJax makes between its phases for a screen (same layout, 0.2 s less)
    MathJax.Hub.processSectionDelay = 0;
    const settled = () => new Promise(resolve => MathJax.Hub.Queue([resolve]));
    const seen = [];
    for (const slide of Reveal.getSlides()) {
        const {h, v} = Reveal.getIndices(slide);
        Reveal.slide(h, v || 0, 99);  // every fragment shown
        await settled();
        const box = slide.getBoundingClientRect(), scale = box.width / slide.offsetWidth;
        const outside = Array.from(slide.querySelectorAll("img, pre, table, .MathJax_Display"))
            .filter(e => {
                const r = e.getBoundingClientRect();
                return r.width > 0 && (r.left < box.left - 1 || r.right > box.right + 1
                    || (r.bottom - box.top) / scale > height + 1);
            }).length;
        const first = selector => Array.from(slide.querySelectorAll(selector))
            .filter(e => !e.closest("aside"))
            .map(e => e.textContent.replace(/\\u00b6/g, "").trim().split("\\n")[0]).find(t => t);
        seen.push({
            where: `#/${h}/${v || 0}`,
            heading: (first("h1, h2, h3, h4, h5, h6") || first("p, li, pre, td") || "(no text)")
                .slice(0, 70),
            tall: slide.scrollHeight, wide: slide.scrollWidth, outside,
        });
    }
    return {width, height, seen};
}"""


@pytest.fixture(scope="module")
def all_decks(tmp_path_factory):
    """Every lecture's offline deck, built once (the reveal.js the course ships)."""
    from lecture_lib import slides

    return slides.build(LECTURES, tmp_path_factory.mktemp("decks"))


def offline_page(browser, viewport):
    """A page that may load only files; returns it and the list of what it asked the network."""
    page = browser.new_page(viewport=viewport)
    asked = []

    def offline(route):
        if route.request.url.startswith(("file:", "data:")):
            route.continue_()
        else:
            asked.append(route.request.url)
            route.abort()

    page.route("**/*", offline)
    return page, asked


def overflowing(measured: dict) -> list[str]:
    """The slides whose content does not fit the slide's box: taller or wider than the slide,
    or an element outside it."""
    width, height = measured["width"], measured["height"]
    return [
        f"slide {k} ({s['where']}) {s['heading']!r}: {s['tall']} x {s['wide']} px "
        f"(the slide is {height} x {width}), {s['outside']} elements outside"
        for k, s in enumerate(measured["seen"])
        if s["tall"] > height or s["wide"] > width or s["outside"]
    ]


@pytest.mark.parametrize("lecture", LECTURES, ids=[p.stem for p in LECTURES])
def test_no_slide_scrolls_at_1280x720(lecture, all_decks, browser, report):
    """Each slide of the deck is shown (all its fragments) at 1280x720 with the network
    blocked, after MathJax and the deck's own fitting; its content must fit reveal.js's slide
    (nbconvert's 960 x 700, scaled to the screen): no slide scrolls, nothing sticks out."""
    (deck,) = [d for d in all_decks if d.name == f"{lecture.stem}.slides.html"]
    page, asked = offline_page(browser, SCREEN)
    try:
        start = time.monotonic()
        page.goto(deck.as_uri())
        page.wait_for_function(
            "() => window.Reveal && Reveal.isReady() && window.MathJax && MathJax.isReady",
            timeout=60_000,
        )
        measured = page.evaluate(EVERY_SLIDE)
        bad = overflowing(measured)
        report(
            f"deck {deck.name} at 1280x720: {len(measured['seen'])} slides, {len(bad)} do not "
            f"fit, measured in {time.monotonic() - start:.1f} s"
            + "".join(f"\n  {line}" for line in bad)
        )
        assert asked == [], f"the deck asked the network for {asked}"
        assert bad == [], f"{deck.name}: slides that do not fit 1280x720:\n" + "\n".join(bad)
    finally:
        page.close()
