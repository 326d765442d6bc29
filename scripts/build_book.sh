#!/usr/bin/env bash
# Build the HTML book into _build/html, executing every chapter (PROFILE="book" by default).
# A failing cell or any Sphinx warning fails the build (the chapters are executed in parallel by
# scripts/execute_chapters.py first). MathJax is served from the build itself
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
# Every chapter executed into the build's cache first, SOCICNN_BOOK_JOBS at a time (default: one
# per CPU core); the build then renders the cached outputs.
python scripts/execute_chapters.py --jobs "${SOCICNN_BOOK_JOBS:-$(nproc)}"
jupyter-book build --all -W --keep-going . 2>&1 | tee _build/build.log
if grep -q "Executing notebook" _build/build.log; then
    echo "[book] note: the build executed chapters that scripts/execute_chapters.py had not cached:" \
        "$(grep -c "Executing notebook" _build/build.log) (correct, but one at a time)"
fi
python scripts/check_book.py
echo "[book] built: $ROOT/_build/html/index.html"
