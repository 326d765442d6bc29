"""Sanity checks on the built HTML book (run by build_book.sh after the build).

Every chapter listed in _toc.yml has its page, and every chapter that draws with matplotlib
shows at least one rendered figure (a missing inline backend silently drops all figures).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HTML = ROOT / "_build" / "html"


def main() -> int:
    problems = []
    toc = (ROOT / "_toc.yml").read_text()
    for name in re.findall(r"(?:file|root):\s*([^\s#]+)", toc):
        page = HTML / f"{name}.html"
        if not page.is_file():
            problems.append(f"{name}: no page {page.relative_to(ROOT)}")
            continue
        source = (ROOT / f"{name}.md").read_text()
        figures = len(re.findall(r'<img[^>]+src="[^"]*_images/', page.read_text()))
        if "plt." in source and figures == 0:
            problems.append(f"{name}: draws with matplotlib but its page shows no figure")
        print(f"[check] {name}: {figures} figure(s)")
    for p in problems:
        print(f"[check] PROBLEM {p}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
