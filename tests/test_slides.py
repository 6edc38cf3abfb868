"""Offline slide decks (``python -m lecture_lib.slides``): what the HTML holds and what a
missing asset says. ``tests/test_browser.py`` opens a deck in a real browser."""

import re
import shutil
from pathlib import Path

import nbformat
import pytest

from lecture_lib import slides

ROOT = Path(__file__).resolve().parent.parent
LECTURES = sorted((ROOT / "lectures").glob("*.ipynb"))
REVEAL = slides.REVEAL  # reveal.js 4.6.1 as the course ships it

LOADS = re.compile(
    r"""<(?:script|img|iframe)\b[^>]*\bsrc=["']([^"']+)["']"""
    r"""|<link\b[^>]*\bhref=["']([^"']+)["']"""
    r"""|@import\s+(?:url\()?["']?([^"')\s;]+)"""
    r"""|\bimport\b[^;'"]*\bfrom\s+["']([^"']+)["']""",
    re.IGNORECASE,
)


def loaded(html: str) -> list[str]:
    """Everything the page loads by itself (scripts, styles, images, modules); links that a
    reader may click are not loads."""
    return [next(g for g in match.groups() if g) for match in LOADS.finditer(html)]


@pytest.fixture(scope="module")
def decks(tmp_path_factory):
    out = tmp_path_factory.mktemp("slides")
    return out, slides.build(LECTURES, out)  # the defaults: shipped reveal.js, PyPI's MathJax


def test_every_lecture_gets_a_deck_that_loads_nothing_from_the_internet(decks):
    out, written = decks
    assert [p.name for p in written] == [f"{p.stem}.slides.html" for p in LECTURES]
    for deck in written:
        html = deck.read_text()
        assert html.count("<section") >= 3, deck.name
        for url in loaded(html):
            assert not re.match(r"(https?:)?//", url), f"{deck.name} loads {url}"
            if not url.startswith("data:"):
                assert (out / url.split("?")[0]).exists(), f"{deck.name}: {url} is missing"


def test_assets_are_reveal_4_and_mathjax_2_7(decks):
    out, _ = decks
    assert "* reveal.js 4." in (out / "assets/reveal.js/dist/reveal.js").read_text()[:100]
    assert 'version:"2.7.' in (out / "assets/mathjax/MathJax.js").read_text()


def test_code_is_hidden_and_explorers_show_their_picture(decks):
    out, written = decks
    html = written[0].read_text()  # 01_activations: code cells and a feature map browser
    assert 'class="jp-CodeMirrorEditor' not in html and "feature_map_browser" not in html
    assert "Explorer(children" not in html and "application/vnd.jupyter.widget" not in html
    notebook = nbformat.read(LECTURES[0], as_version=4)
    pictures = [
        o["data"]["image/png"][:200]
        for c in notebook.cells
        if c.cell_type == "code" and c.metadata.get("slideshow", {}).get("slide_type") != "skip"
        for o in c.outputs
        if "image/png" in o.get("data", {})
    ]
    assert pictures and all(picture in html for picture in pictures)


def test_code_can_be_shown_scrolling(tmp_path):
    (deck,) = slides.build(LECTURES[:1], tmp_path, code=True, reveal=REVEAL)
    html = deck.read_text()
    assert "feature_map_browser" in html and 'class="jp-CodeMirrorEditor' in html
    assert re.search(r"\.jp-InputArea \.highlight[^{]*\{[^}]*overflow: auto", html, re.S)


def test_a_missing_asset_is_named(tmp_path):
    reveal = tmp_path / "reveal.js"
    (reveal / "dist").mkdir(parents=True)
    (reveal / "dist" / "reveal.css").write_text("")
    with pytest.raises(slides.MissingAsset, match=r"missing asset reveal\.js/dist/reveal\.js"):
        slides.build(LECTURES[:1], tmp_path / "out", reveal=reveal)
    assert not (tmp_path / "out").exists()  # nothing written before the check


def test_a_missing_mathjax_file_is_named(tmp_path):
    mathjax = tmp_path / "mathjax"
    shutil.copytree(slides.default_mathjax(), mathjax)
    (mathjax / "config" / f"{slides.MATHJAX_CONFIG}.js").unlink()
    with pytest.raises(slides.MissingAsset, match=r"mathjax/config/TeX-AMS-MML_HTMLorMML-full\.js"):
        slides.build(LECTURES[:1], tmp_path / "out", reveal=REVEAL, mathjax=mathjax)


def test_command_reports_a_missing_asset(tmp_path, capsys):
    status = slides.main([str(LECTURES[0]), "--out", str(tmp_path), "--reveal", str(tmp_path)])
    assert status == 1
    error = capsys.readouterr().err
    assert "missing asset reveal.js/dist/reveal.js" in error and "--reveal" in error


def test_reveal_is_shipped_with_its_license_and_installed_with_the_package():
    for file in slides.REVEAL_FILES:
        assert (REVEAL / file).exists(), file
    assert "MIT" in (REVEAL / "LICENSE").read_text()
    assert (REVEAL / "dist/theme/fonts/source-sans-pro/LICENSE").exists()
    assert '"slides_assets/**/*"' in (ROOT / "pyproject.toml").read_text()  # package data
    assert not (ROOT / "package.json").exists()  # no npm step anywhere


def test_speaker_notes_are_in_the_decks(decks):
    """Each notes cell becomes reveal.js's <aside class="notes"> inside its slide's section, and
    the deck loads the notes plugin that `s` opens."""
    _, written = decks
    for path, deck in zip(LECTURES, written):
        html = deck.read_text()
        notes = [
            c.source
            for c in nbformat.read(path, as_version=4).cells
            if c.metadata.get("slideshow", {}).get("slide_type") == "notes"
        ]
        asides = re.findall(r'<aside class="notes">(.*?)</aside>', html, re.S)
        assert notes and len(asides) == len(notes), deck.name
        for source, aside in zip(notes, asides):
            words = re.sub(r"[^\w ]", " ", source.split("\n")[0]).split()[:4]
            assert re.search(r"\W+".join(map(re.escape, words)), aside), (deck.name, source)
        for match in re.finditer(r'<aside class="notes">', html):
            before = html[: match.start()]
            assert before.rfind("<section") > before.rfind("</section>"), deck.name
        assert "plugin/notes/notes.js" in html and "RevealNotes" in html
