#!/usr/bin/env bash
# Create or update the project's virtualenv (.venv) with everything the book and tests need.
# Sourced by build_book.sh and test.sh. Needs Python >= 3.11 and npm (MathJax); the browser test
# also needs apt (with sudo unless run as root) to install chromium, unless it is on the PATH.
#   PYTHON      interpreter used to create the venv (default: python3)
#   TORCH_SPEC  the PyTorch requirement (default: torch==2.13.0, a CPU build here; for a CUDA
#               build install torch from the PyTorch index first, see README "GPU")
#   SOCICNN_NO_BROWSER=1  skip installing Debian's chromium/chromedriver (the browser test then
#               fails with a message saying so)
# Besides the venv it provides, at install time only (nothing is downloaded when the book runs):
#   MathJax 3 from the npm registry, unpacked into .cache/static/mathjax and served by the built
#   book from its own _static folder (the book never loads MathJax from a CDN);
#   Debian's chromium and chromium-driver for tests/test_browser.py, when absent.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VENV:-$ROOT/.venv}"
PYTHON="${PYTHON:-python3}"
TORCH_SPEC="${TORCH_SPEC:-torch==2.13.0}"

quiet_pip() {
  # pip prints a warning per missing local mirror directory on some machines; keep real errors.
  "$VENV/bin/python" -m pip "$@" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
}

if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup] creating virtualenv $VENV"
  "$PYTHON" -m venv "$VENV"
fi
stamp="$VENV/.socicnn-installed"
want="$(cat "$ROOT/pyproject.toml" "$ROOT/scripts/setup_env.sh" | sha256sum | cut -d' ' -f1) $TORCH_SPEC"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "[setup] installing $TORCH_SPEC and socicnn[book,test,lpcf] into $VENV"
  quiet_pip install -q --upgrade pip
  if ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
    quiet_pip install -q "$TORCH_SPEC"
  fi
  quiet_pip install -q -e "$ROOT[book,test,lpcf]"
  echo "$want" > "$stamp"
fi

MATHJAX_VERSION="3.2.2"
MATHJAX_DIR="$ROOT/.cache/static/mathjax"
if [ "$(cat "$MATHJAX_DIR/VERSION" 2>/dev/null)" != "$MATHJAX_VERSION" ]; then
  echo "[setup] fetching mathjax@$MATHJAX_VERSION from the npm registry into $MATHJAX_DIR"
  command -v npm >/dev/null || { echo "[setup] npm is needed to fetch MathJax (install Node.js)" >&2; exit 1; }
  tmp="$(mktemp -d)"
  (cd "$tmp" && npm pack --silent "mathjax@$MATHJAX_VERSION" >/dev/null && tar xzf "mathjax-$MATHJAX_VERSION.tgz")
  rm -rf "$MATHJAX_DIR" && mkdir -p "$MATHJAX_DIR"
  cp -r "$tmp/package/es5" "$tmp/package/LICENSE" "$MATHJAX_DIR/"
  echo "$MATHJAX_VERSION" > "$MATHJAX_DIR/VERSION"
  rm -rf "$tmp"
fi

if [ -z "${SOCICNN_NO_BROWSER:-}" ] && { ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; }; then
  echo "[setup] installing Debian's chromium and chromium-driver (browser test)"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium chromium-driver >/dev/null
fi
export PATH="$VENV/bin:$PATH"
