#!/usr/bin/env bash
# Build the wheel, install it (not editable) into a fresh virtualenv, and from a directory
# outside the repository run the README's library snippet and check that the installed package
# finds its stored results as package data, records no checkout commit, and has the `socicnn`
# command. Called by scripts/test.sh; needs only the project's .venv (for `pip wheel`).
#   KEEP_TMP=1  keep the temporary directory (printed) for inspection
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${VENV:-$ROOT/.venv}/bin/python"
TMP="$(mktemp -d)"
[ "${KEEP_TMP:-0}" = 1 ] && echo "[install] kept: $TMP" || trap 'rm -rf "$TMP"' EXIT

echo "[install] building the wheel"
# From a clean copy of the checkout's files (tracked, and untracked but not ignored): a stale
# build/ directory in the checkout must not leak old modules into the wheel.
SRC="$ROOT"
if git -C "$ROOT" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  SRC="$TMP/src"
  mkdir "$SRC"
  (cd "$ROOT" && git ls-files -z -co --exclude-standard | xargs -0 tar cf - 2>/dev/null) | tar xf - -C "$SRC"
fi
"$PY" -m pip wheel -q --no-deps -w "$TMP/dist" "$SRC" 2> >(grep -v "is ignored: it is neither" >&2)
wheel="$(ls "$TMP"/dist/socicnn-*.whl)"
echo "[install] $(basename "$wheel") -> fresh virtualenv"
python3 -m venv "$TMP/venv"
"$TMP/venv/bin/python" -m pip install -q "torch==2.13.0" "$wheel" 2> >(grep -v "is ignored: it is neither" >&2)

mkdir "$TMP/outside"
# The README's first ```python block under "## Use the library".
"$PY" - "$ROOT/README.md" > "$TMP/outside/snippet.py" <<'PYEOF'
import re, sys
text = open(sys.argv[1], encoding="utf-8").read()
section = text.split("## Use the library", 1)[1]
print(re.search(r"```python\n(.*?)```", section, re.S).group(1))
PYEOF
cat > "$TMP/outside/check.py" <<'PYEOF'
import pathlib, sys
import socicnn, socicnn.results as r
pkg = pathlib.Path(socicnn.__file__).resolve().parent
assert "site-packages" in pkg.parts, f"imported from {pkg}, not from the installed wheel"
p = r.provenance("smoke", "cpu")
assert p["source"] == "installed" and p["git_commit"] is None, p
assert p["package_version"] == socicnn.__version__, p
assert r.stored_dir() == pkg / "data" / "results", r.stored_dir()
expected = int(sys.argv[1])
tables = sorted(r.stored_dir().glob("*.csv")) if r.stored_dir().is_dir() else []
assert len(tables) == expected, f"{len(tables)} stored tables installed, {expected} in the checkout"
for t in tables:
    print(r.load_table(t).describe())
print(f"installed package OK: {pkg}")
PYEOF
n_stored="$( (find "$ROOT/src/socicnn/data/results" -maxdepth 1 -name "*.csv" 2>/dev/null || true) | wc -l)"
cd "$TMP/outside"
env -u PYTHONPATH -u SOCICNN_RESULTS_DIR OMP_NUM_THREADS=1 "$TMP/venv/bin/python" snippet.py
env -u PYTHONPATH -u SOCICNN_RESULTS_DIR "$TMP/venv/bin/python" check.py "$n_stored"
# The console script, and from inside the checkout too (cwd must not turn the install into a checkout).
"$TMP/venv/bin/socicnn" --help > /dev/null
(cd "$ROOT" && env -u PYTHONPATH "$TMP/venv/bin/python" -c \
  "import socicnn.results as r; p = r.provenance('smoke', 'cpu'); assert p['git_commit'] is None, p")
echo "[install] README snippet, stored results and provenance OK outside the repository"
