#!/usr/bin/env bash
# Create or update the project's virtualenv (.venv) with everything the book and tests need.
# Sourced by build_book.sh and test.sh. Needs only Python >= 3.10 (3.11 recommended).
#   PYTHON      interpreter used to create the venv (default: python3)
#   TORCH_SPEC  the PyTorch requirement (default: torch==2.13.0, a CPU build here; for a CUDA
#               build install torch from the PyTorch index first, see README "GPU")
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
  echo "[setup] installing $TORCH_SPEC and socicnn[book,test] into $VENV"
  quiet_pip install -q --upgrade pip
  if ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
    quiet_pip install -q "$TORCH_SPEC"
  fi
  quiet_pip install -q -e "$ROOT[book,test]"
  echo "$want" > "$stamp"
fi
export PATH="$VENV/bin:$PATH"
