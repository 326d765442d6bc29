#!/usr/bin/env bash
# Build the HTML book into _build/html, executing every chapter (PROFILE="book" by default).
# A failing cell or any Sphinx warning fails the build.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/setup_env.sh"
cd "$ROOT"
rm -rf _build/html _build/.doctrees _build/jupyter_execute
jupyter-book build --all -W --keep-going .
python scripts/check_book.py
echo "[book] built: $ROOT/_build/html/index.html"
