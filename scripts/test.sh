#!/usr/bin/env bash
# Run the whole test suite: lint, unit/property tests, every chapter through papermill at
# PROFILE="smoke", the installed-wheel check (tests/test_install.py: scripts/check_install.sh),
# then the HTML book build (warnings as errors, every chapter executed).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/setup_env.sh"
cd "$ROOT"
echo "[test] ruff"
ruff check src tests benchmarks
echo "[test] pytest"
python -m pytest -q "$@"
echo "[test] wheel installed non-editably into a fresh virtualenv"
python -m pytest -q -m install tests/test_install.py
echo "[test] book build"
bash "$ROOT/scripts/build_book.sh"
