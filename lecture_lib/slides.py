"""Every lecture as a reveal.js slide deck that works offline.

    python -m lecture_lib.slides                      # lectures/*.ipynb -> slides/
    python -m lecture_lib.slides --code lectures/03_saliency.ipynb --out /tmp/decks

Open ``slides/<lecture>.slides.html`` in a browser; arrow keys move on, ``s`` shows the notes.
The decks are nbconvert's slides (each cell's "Slide Type" decides where slides start) with
nothing loaded from the internet: reveal.js and MathJax are copied beside the decks, in
``slides/assets/``:

- reveal.js 4.6.1, shipped with the course in ``lecture_lib/slides_assets/reveal.js`` (its
  files as the npm package has them, its license beside them; or give ``--reveal DIR``);
- MathJax 2.7 from PyPI: the package ``jupyter-server-mathjax`` (the ``instructor`` and ``dev``
  extras install it).

A build with a missing asset fails and names it. Code is hidden unless ``--code`` is given
(then it scrolls inside its box); a figure is at most the slide's width and
``FIGURE_HEIGHT`` pixels of its height; on a slide that is too tall the figures shrink (down to
``MIN_FIGURE_HEIGHT``), and a slide that is still too tall scrolls. An
explorer (``widgets.Explorer``) shows the picture it had when the notebook was saved.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

import nbformat

from . import widget_state

TEMPLATES = Path(__file__).with_name("slides_template")
"""nbconvert's template folder of the offline decks (template ``offline_slides``)."""

REVEAL_FILES = (
    "dist/reveal.js",
    "dist/reveal.css",
    "dist/theme/white.css",
    "dist/theme/fonts/source-sans-pro",
    "plugin/notes/notes.js",
)
"""What a deck needs of reveal.js, relative to its folder (as in the npm package)."""

MATHJAX_FILES = (
    "MathJax.js",
    "config/TeX-AMS-MML_HTMLorMML-full.js",
    "extensions",
    "fonts/HTML-CSS/STIX-Web",
    "jax",
    "localization",
)
"""What a deck needs of MathJax 2.7 (``jupyter_server_mathjax/static``): the combined TeX
configuration with its HTML-CSS output and the STIX web fonts."""

MATHJAX_CONFIG = "TeX-AMS-MML_HTMLorMML-full"

FIGURE_HEIGHT = 520
"""The most a figure may take of the slide's 700 pixels of height (a heading stays visible)."""

MIN_FIGURE_HEIGHT = 260
"""On a slide that is too tall, figures shrink down to this height; beyond that it scrolls."""


class MissingAsset(FileNotFoundError):
    """A file that the decks need is not installed."""


REVEAL = Path(__file__).with_name("slides_assets") / "reveal.js"
"""reveal.js 4.6.1 as the course ships it (``slides_assets/README.md``)."""


def default_reveal() -> Path:
    """reveal.js as the course ships it, ``REVEAL``."""
    return REVEAL


def default_mathjax() -> Path:
    """MathJax 2.7 as the PyPI package ``jupyter-server-mathjax`` installs it."""
    try:
        import jupyter_server_mathjax
    except ImportError as error:
        raise MissingAsset(
            "slides: missing asset mathjax/MathJax.js: the Python package "
            "jupyter-server-mathjax is not installed; pip install jupyter-server-mathjax "
            "(or pip install -e '.[instructor]')."
        ) from error
    return Path(jupyter_server_mathjax.__file__).parent / "static"


def _check(folder: Path, files: Sequence[str], name: str, how: str) -> None:
    for file in files:
        if not (folder / file).exists():
            raise MissingAsset(f"slides: missing asset {name}/{file} (looked in {folder}); {how}")


def copy_assets(out: Path, reveal: Path | None = None, mathjax: Path | None = None) -> Path:
    """Copy reveal.js and MathJax into ``out/assets`` (checked first: a missing file raises
    ``MissingAsset`` naming it); returns that folder."""
    reveal = default_reveal() if reveal is None else Path(reveal)
    mathjax = default_mathjax() if mathjax is None else Path(mathjax)
    _check(
        reveal,
        REVEAL_FILES,
        "reveal.js",
        "the course ships it in lecture_lib/slides_assets/reveal.js (reinstall the package: "
        "pip install -e .), or pass --reveal with the folder of the npm package reveal.js 4.",
    )
    _check(
        mathjax,
        MATHJAX_FILES,
        "mathjax",
        "pip install jupyter-server-mathjax, or pass --mathjax with MathJax 2.7's folder.",
    )
    assets = Path(out) / "assets"
    for source, target, files in (
        (reveal, assets / "reveal.js", REVEAL_FILES),
        (mathjax, assets / "mathjax", MATHJAX_FILES),
    ):
        for file in files:
            (target / file).parent.mkdir(parents=True, exist_ok=True)
            if (source / file).is_dir():
                shutil.copytree(source / file, target / file, dirs_exist_ok=True)
            else:
                shutil.copy2(source / file, target / file)
    return assets


def _for_slides(notebook):
    """A copy without live widgets: each explorer keeps its picture (no widget scripts are
    loaded, and no widget would work without a kernel anyway)."""
    notebook = nbformat.from_dict(notebook)
    notebook.metadata.pop("widgets", None)
    widget_state.clear_stale(notebook)
    return notebook


def deck(notebook, *, code: bool = False) -> str:
    """The HTML of one deck for ``notebook`` (a NotebookNode), its assets in ``assets/``."""
    from nbconvert import SlidesExporter

    exporter = SlidesExporter(
        extra_template_basedirs=[str(TEMPLATES)],
        template_name="offline_slides",
        reveal_url_prefix="assets/reveal.js",
        reveal_theme="white",
        exclude_input=not code,
        exclude_input_prompt=True,
        exclude_output_prompt=True,
    )
    resources = {
        "offline_slides": {
            "mathjax": f"assets/mathjax/MathJax.js?config={MATHJAX_CONFIG}",
            "figure_height": FIGURE_HEIGHT,
            "min_figure_height": MIN_FIGURE_HEIGHT,
        }
    }
    body, _ = exporter.from_notebook_node(_for_slides(notebook), resources=resources)
    return body


def build(
    notebooks: Sequence[Path],
    out: Path = Path("slides"),
    *,
    code: bool = False,
    reveal: Path | None = None,
    mathjax: Path | None = None,
) -> list[Path]:
    """Write one deck ``out/<name>.slides.html`` per notebook and their shared assets; returns
    the decks' paths. The assets are checked before any deck is written."""
    out = Path(out)
    copy_assets(out, reveal, mathjax)
    written = []
    for path in notebooks:
        path = Path(path)
        html = deck(nbformat.read(path, as_version=4), code=code)
        target = out / f"{path.stem}.slides.html"
        target.write_text(html, encoding="utf-8")
        written.append(target)
    return written


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m lecture_lib.slides",
        description="Build every lecture's reveal.js deck so that it works offline.",
    )
    parser.add_argument(
        "notebooks", nargs="*", type=Path, help="notebooks (default: lectures/*.ipynb)"
    )
    parser.add_argument("--out", type=Path, default=Path("slides"), help="default: slides/")
    parser.add_argument("--code", action="store_true", help="show code cells (they scroll)")
    parser.add_argument(
        "--reveal", type=Path, help="reveal.js 4 (default: the copy the course ships)"
    )
    parser.add_argument(
        "--mathjax", type=Path, help="MathJax 2.7 (default: jupyter-server-mathjax)"
    )
    args = parser.parse_args(argv)
    notebooks = args.notebooks or sorted(Path("lectures").glob("*.ipynb"))
    if not notebooks:
        parser.error("no notebooks given and none in lectures/; run it in the repository root.")
    try:
        decks = build(notebooks, args.out, code=args.code, reveal=args.reveal, mathjax=args.mathjax)
    except MissingAsset as error:
        print(error, file=sys.stderr)
        return 1
    for path in decks:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
