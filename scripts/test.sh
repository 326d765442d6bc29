#!/usr/bin/env bash
# Run the whole test suite: lint, unit/property tests, every chapter through papermill at
# PROFILE="smoke", the installed-wheel check (tests/test_install.py: scripts/check_install.sh),
# then the HTML book build (warnings as errors, every chapter executed) and the browser test of
# the built book (headless chromium, network off; tests/test_browser.py).
# The unit tests run in SOCICNN_TEST_WORKERS processes (pytest-xdist; default "auto", one per CPU
# core), each with one intra-op thread (tests/conftest.py).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/setup_env.sh"
cd "$ROOT"
echo "[test] ruff"
ruff check src tests benchmarks
echo "[test] pytest"
python -m pytest -q -n "${SOCICNN_TEST_WORKERS:-auto}" "$@"
echo "[test] wheel installed non-editably into a fresh virtualenv"
python -m pytest -q -m install tests/test_install.py
echo "[test] book build"
bash "$ROOT/scripts/build_book.sh"
echo "[test] browser"
python -m pytest -q -m browser tests/test_browser.py
