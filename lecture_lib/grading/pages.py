"""What the feedback pages and the Formgrader show of a student's Markdown: no script, maths
that renders without the network.

``markdown2html`` is the Markdown filter of the course's HTML pages (``nbgrader_config.py`` sets
``c.HTMLExporter.filters``, which both ``nbgrader generate_feedback`` and the Formgrader use).
It renders the Markdown as nbconvert does, turns ``$...$`` and ``$$...$$`` into MathML (which
browsers draw without MathJax), and then cleans the *rendered* HTML with an allow-list
(``nh3``): no script, no event handler, no style, no frame, and links and pictures only to
``http``, ``https`` and ``mailto`` addresses (no ``javascript:``, no ``data:``). A written answer
is escaped once: ``a < b`` reads ``a < b``.
"""

from __future__ import annotations

import html
import re

import nh3

HTML_TAGS = {
    "a", "abbr", "b", "blockquote", "br", "code", "dd", "del", "div", "dl", "dt", "em",
    "h1", "h2", "h3", "h4", "h5", "h6", "hr", "i", "img", "kbd", "li", "ol", "p", "pre", "q",
    "s", "samp", "small", "span", "strong", "sub", "sup", "table", "tbody", "td", "tfoot",
    "th", "thead", "tr", "u", "ul",
}  # fmt: skip
MATHML_TAGS = {
    "math", "mi", "mn", "mo", "ms", "mspace", "mtext", "mrow", "mfrac", "msqrt", "mroot",
    "msub", "msup", "msubsup", "munder", "mover", "munderover", "mtable", "mtr", "mtd",
    "mstyle", "mpadded", "mphantom", "menclose", "semantics", "annotation",
}  # fmt: skip
ATTRIBUTES = {
    "a": {"href", "title"},
    "img": {"src", "alt", "title", "width", "height"},
    "td": {"colspan", "rowspan", "align"},
    "th": {"colspan", "rowspan", "align"},
    "math": {"display", "xmlns"},
    "mo": {"stretchy", "fence", "separator", "lspace", "rspace"},
    "mstyle": {"displaystyle", "scriptlevel"},
    "mtd": {"columnspan", "rowspan"},
    "mspace": {"width"},
    "annotation": {"encoding"},
}
URL_SCHEMES = {"http", "https", "mailto"}

DISPLAY_MATH = re.compile(r"\$\$([^$<>]+?)\$\$", flags=re.S)
INLINE_MATH = re.compile(r"(?<![\\$])\$([^$<>\n]+?)\$(?!\$)")


def clean(rendered: str) -> str:
    """Rendered HTML through the allow-list."""
    return nh3.clean(
        rendered,
        tags=HTML_TAGS | MATHML_TAGS,
        attributes=ATTRIBUTES,
        url_schemes=URL_SCHEMES,
        link_rel="noopener noreferrer nofollow",
        strip_comments=True,
    )


def _mathml(latex: str, display: bool) -> str | None:
    from latex2mathml.converter import convert

    try:
        return convert(html.unescape(latex).strip(), display="block" if display else "inline")
    except Exception:  # not LaTeX that the converter reads: left as the student wrote it
        return None


def render_math(rendered: str) -> str:
    """``$$...$$`` and ``$...$`` in rendered HTML text as MathML."""

    def replace(display: bool):
        def one(match: re.Match) -> str:
            return _mathml(match.group(1), display) or match.group(0)

        return one

    rendered = DISPLAY_MATH.sub(replace(True), rendered)
    return INLINE_MATH.sub(replace(False), rendered)


def markdown2html(source: str) -> str:
    """Markdown as safe HTML, its maths as MathML (the course pages' ``markdown2html``)."""
    from nbconvert.filters.markdown import markdown2html as render

    return clean(render_math(render(source.replace("\\$", "&#36;"))))
