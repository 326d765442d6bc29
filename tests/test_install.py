"""The wheel, installed non-editably into a fresh virtualenv, works from outside the repository.

Slow (builds a wheel and a virtualenv), so deselected by default; ``scripts/test.sh`` runs it
with ``pytest -m install``.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.install
def test_non_editable_install_runs_the_readme_snippet_outside_the_repository():
    out = subprocess.run(["bash", str(ROOT / "scripts" / "check_install.sh")], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "installed package OK" in out.stdout and "outside the repository" in out.stdout
