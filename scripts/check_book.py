"""Sanity checks on the built HTML book (run by build_book.sh after the build).

- Every page listed in _toc.yml exists, and every chapter that draws with matplotlib shows at
  least one rendered figure (a missing inline backend silently drops all figures).
- No math is left as raw TeX in the prose: outside math, code and output blocks no page may
  contain ``$`` or a TeX command such as ``\\lVert`` (a line starting with ``+ `` inside ``$...$``
  turns into a bullet list and leaves both halves of the formula as text).
- MathJax is served by the book itself: every page with math loads it from ``_static/mathjax`` and no page
  loads any script from another host.
- The API reference documents every public name of the library's first-wave contract, the
  general index lists them, and the index of theorems and proofs is linked from the book.
- Pointers to the developers' design notes (MATH.md, EXPERIMENTS.md, shared/design), which a
  reader does not have, are listed (a report; tests/test_packaging.py fails on any in the sources).

Usage: python scripts/check_book.py [HTML_DIR]   (default: _build/html)
"""

from __future__ import annotations

import re
import sys
from html.parser import HTMLParser
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# The public names users rely on (the library's API contract); each must have an entry in the
# API reference page.
PUBLIC_API = [
    "socicnn.SOCICNN",
    "socicnn.SOCICNN.forward",
    "socicnn.SOCICNN.weights",
    "socicnn.SOCICNN.from_weights",
    "socicnn.ReLUICNN",
    "socicnn.SOCICNNWeights",
    "socicnn.lifting.solve",
    "socicnn.lifting.to_cvxpy",
    "socicnn.lifting.epigraph",
    "socicnn.lifting.LiftingSolution",
    "socicnn.readout.readout",
    "socicnn.readout.Readout",
    "socicnn.readout.hessian",
    "socicnn.readout.hvp",
    "socicnn.readout.directional_derivative",
    "socicnn.readout.min_norm_subgradient",
    "socicnn.inference.prox",
    "socicnn.inference.ProxResult",
]

SKIP_TAGS = {"script", "style", "pre", "code", "math", "mjx-container", "svg"}
SKIP_CLASSES = re.compile(r"\b(math|highlight|output|cell_output|MathJax|mjx-\w+|headerlink)\b")
RAW_TEX = re.compile(r"\$|\\[A-Za-z]{2,}")


class ProseText(HTMLParser):
    """Collects the text of a page outside math, code, outputs and scripts."""

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[bool] = []  # True where the element (or an ancestor) is skipped
        self.chunks: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag in {"br", "img", "hr", "meta", "link", "input", "source", "wbr", "col", "area", "base"}:
            return
        cls = dict(attrs).get("class") or ""
        skipped = (self.stack and self.stack[-1]) or tag in SKIP_TAGS or bool(SKIP_CLASSES.search(cls))
        self.stack.append(bool(skipped))

    def handle_endtag(self, tag):
        if tag in {"br", "img", "hr", "meta", "link", "input", "source", "wbr", "col", "area", "base"}:
            return
        if self.stack:
            self.stack.pop()

    def handle_data(self, data):
        if not (self.stack and self.stack[-1]):
            self.chunks.append(data)


def raw_math(html: str) -> list[str]:
    """Snippets of prose that still contain TeX (``$`` or ``\\command``)."""
    parser = ProseText()
    body = html.split('<main', 1)[-1]
    parser.feed(body)
    text = " ".join(parser.chunks)
    return [text[max(0, m.start() - 40): m.end() + 40].replace("\n", " ") for m in RAW_TEX.finditer(text)]


def main(html_dir: Path) -> int:
    problems = []
    toc = (ROOT / "_toc.yml").read_text()
    for name in re.findall(r"(?:file|root):\s*([^\s#]+)", toc):
        page = html_dir / f"{name}.html"
        if not page.is_file():
            problems.append(f"{name}: no page {page}")
            continue
        html = page.read_text()
        source = (ROOT / f"{name}.md").read_text()
        figures = len(re.findall(r'<img[^>]+src="[^"]*_images/', html))
        if "plt." in source and figures == 0:
            problems.append(f"{name}: draws with matplotlib but its page shows no figure")
        for snippet in raw_math(html)[:5]:
            problems.append(f"{name}: raw TeX in the text: ...{snippet}...")
        scripts = re.findall(r'<script[^>]*src="([^"]+)"', html)
        if 'class="math' in html and not any("_static/mathjax/es5/" in s for s in scripts):
            problems.append(f"{name}: does not load MathJax from _static/mathjax")
        for src in scripts:
            if re.match(r"(https?:)?//", src):
                problems.append(f"{name}: loads a script from another host: {src}")
        print(f"[check] {name}: {figures} figure(s)")
    mathjax = html_dir / "_static" / "mathjax" / "es5" / "tex-mml-chtml.js"
    if not mathjax.is_file():
        problems.append(f"MathJax is not in the build: {mathjax} missing (run scripts/setup_env.sh)")
    api = html_dir / "book" / "api.html"
    documented = set(re.findall(r'id="(socicnn\.[^"]+)"', api.read_text())) if api.is_file() else set()
    for name in PUBLIC_API:
        if name not in documented:
            problems.append(f"API reference: no entry for {name}")
    genindex = (html_dir / "genindex.html").read_text() if (html_dir / "genindex.html").is_file() else ""
    for name in PUBLIC_API:
        if f"#{name}" not in genindex:
            problems.append(f"general index: no entry for {name}")
    pages = [p.read_text() for p in sorted((html_dir / "book").glob("*.html"))]
    if not any('prf-prf.html"' in page for page in pages):
        problems.append("no page links to the index of theorems and proofs (prf-prf.html)")
    for page in sorted((html_dir / "book").glob("*.html")):
        text = page.read_text()
        for pointer in sorted(set(re.findall(r"MATH\.md|EXPERIMENTS\.md|shared/design", text))):
            print(f"[check] report: {page.relative_to(html_dir)} mentions {pointer}, a file readers do not have")
    print(f"[check] API reference: {len(documented)} entries, {len(PUBLIC_API)} required names present"
          if documented >= set(PUBLIC_API) else "[check] API reference incomplete")
    for p in problems:
        print(f"[check] PROBLEM {p}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "_build" / "html"))
