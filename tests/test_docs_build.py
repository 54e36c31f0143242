"""The documentation site builds with --strict, and its pages show rendered math and links.

`mkdocs build --strict` catches broken links and unresolved cross-references, but not
docstring markup that Markdown passes through as text: Sphinx roles (`:func:`), reST
directives (`.. math::`) or `$...$` that arithmatex did not pick up all build cleanly and
show up raw on the page. So after the one build, every generated page is scanned.
"""

import html.parser
import os
import pathlib
import re
import shutil
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]

# Text outside these elements is prose a reader sees as is.
_VERBATIM_TAGS = {"code", "pre", "script", "style", "textarea"}
_VOID_TAGS = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}
_RAW_MARKUP = [
    ("reST directive", re.compile(r"\.\. [a-z-]+::")),
    ("Sphinx role", re.compile(r":(?:func|class|mod|meth|attr|math|doc|data|obj|ref|exc):`?")),
    ("unrendered $ math", re.compile(r"\$")),
    # `[title][identifier]` or `[identifier][]` left as text, or a bare `[jaxkl.name]`.
    ("unresolved cross-reference", re.compile(r"\[[^\[\]\n]+\]\[[^\[\]\n]*\]|\[`?jaxkl\.[\w.]+`?\]")),
]


class _ProseScanner(html.parser.HTMLParser):
    """Collects (kind, text) for raw markup in text nodes outside code and arithmatex spans."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.stack = []  # (tag, verbatim) for every open element
        self.problems = []
        self.math = 0

    def handle_starttag(self, tag, attrs):
        if tag == "autoref":  # autorefs leaves these when an identifier is unknown
            self.problems.append(("unresolved cross-reference", dict(attrs).get("identifier", "")))
        if tag in _VOID_TAGS:
            return
        if tag == "blockquote" and self.stack and self.stack[-1][0] == "blockquote":
            # `>>> code` outside an `Examples:` section renders as quotes nested in quotes.
            self.problems.append(("doctest rendered as nested quotes", self.getpos()))
        classes = (dict(attrs).get("class") or "").split()
        math = "arithmatex" in classes
        self.math += math
        verbatim = tag in _VERBATIM_TAGS or math or (bool(self.stack) and self.stack[-1][1])
        self.stack.append((tag, verbatim))

    def handle_endtag(self, tag):
        # Pop to the matching element (tolerates the odd unclosed <p> or <li>).
        for i in range(len(self.stack) - 1, -1, -1):
            if self.stack[i][0] == tag:
                del self.stack[i:]
                return

    def handle_data(self, data):
        if self.stack and self.stack[-1][1]:
            return
        for kind, pattern in _RAW_MARKUP:
            for match in pattern.finditer(data):
                start = max(match.start() - 40, 0)
                self.problems.append((kind, " ".join(data[start : match.end() + 40].split())))


def scan(page_html):
    """Raw markup a reader would see on a page, and the number of arithmatex math elements."""
    scanner = _ProseScanner()
    scanner.feed(page_html)
    scanner.close()
    return scanner.problems, scanner.math


def _mkdocs():
    beside_python = pathlib.Path(sys.executable).parent / "mkdocs"
    return str(beside_python) if beside_python.exists() else shutil.which("mkdocs")


@pytest.mark.parametrize(
    "page",
    [
        "<p>see :func:<code>jaxkl.reduce</code></p>",
        "<p>.. math:: H(p) = -\\sum_i p_i \\log p_i</p>",
        "<p>with $p_i = 0$ the term is 0</p>",
        "<p>with $p_i <em>q_i</em> = 0$ split by emphasis</p>",
        "<p>see [jaxkl.not_a_name][] for details</p>",
        "<p>see [jaxkl.reduce] for details</p>",
        '<p>see <autoref identifier="jaxkl.nope" optional>nope</autoref></p>',
        "<blockquote><blockquote><blockquote><p>import jaxkl</p></blockquote></blockquote></blockquote>",
    ],
)
def test_scan_finds_raw_markup(page):
    problems, _ = scan(page)
    assert problems, page


def test_scan_accepts_rendered_markup():
    page = (
        '<p>Entropy <span class="arithmatex">\\(H(p)\\)</span> of <code>p[0][1]</code>:</p>'
        '<div class="arithmatex">\\[ \\sum_i p_i \\]</div><br>'
        '<pre><code>$ python -m bench  # :func: stays verbatim</code></pre>'
        '<p>see <a class="autorefs autorefs-internal" href="#jaxkl.reduce">jaxkl.reduce</a></p>'
    )
    assert scan(page) == ([], 2)


def test_mkdocs_build_strict_renders_math_and_links(tmp_path):
    mkdocs = _mkdocs()
    if mkdocs is None:
        if os.environ.get("CI"):
            pytest.fail("CI must build the docs: install the docs extra (pip install -e '.[test,docs]')")
        pytest.skip("mkdocs is not installed (pip install -e '.[docs]')")
    command = [mkdocs, "build", "--strict", "--site-dir", str(tmp_path)]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr

    pages = sorted(tmp_path.rglob("*.html"))
    assert len(pages) > 10, f"the build wrote only {len(pages)} pages"
    problems, math = [], {}
    for page in pages:
        text = page.read_text(encoding="utf-8")
        found, math[page.parent.name] = scan(text)
        problems += [f"{page.relative_to(tmp_path)}: {kind}: ...{context}..." for kind, context in found]
        if math[page.parent.name]:
            assert "mathjax" in text.lower(), f"{page} has math but does not load MathJax"
    assert not problems, "raw markup on the built pages:\n" + "\n".join(problems)
    # The docstrings' formulas reach the API pages as typeset math, not as text.
    assert math["api"] >= 10 and math["api-distributions"] >= 10, math
