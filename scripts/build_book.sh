#!/usr/bin/env bash
# Build the HTML book into _build/html, executing every chapter (PROFILE="book" by default).
# A failing cell or any Sphinx warning fails the build. MathJax is served from the build itself
# (scripts/setup_env.sh fetches it from the npm registry); scripts/check_book.py then checks the
# pages (figures, no raw TeX, local MathJax, API reference). The launch notebooks for Colab and
# Binder must be in sync with the chapters (python scripts/make_notebooks.py rewrites them).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export SOCICNN_NO_BROWSER="${SOCICNN_NO_BROWSER:-1}"  # building needs no browser (the test does)
source "$ROOT/scripts/setup_env.sh"
cd "$ROOT"
python scripts/make_notebooks.py --check
rm -rf _build/html _build/.doctrees _build/jupyter_execute _build/screenshots
jupyter-book build --all -W --keep-going .
python scripts/check_book.py
echo "[book] built: $ROOT/_build/html/index.html"
