"""Every chapter in _toc.yml runs through papermill at PROFILE="smoke" without error.

A chapter is covered the moment it is added to the table of contents.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def toc_chapters() -> list[str]:
    toc = (ROOT / "_toc.yml").read_text()
    return re.findall(r"(?:file|root):\s*([^\s#]+)", toc)


def chapter_path(name: str) -> Path:
    path = ROOT / f"{name}.md"
    assert path.is_file(), f"{name} is listed in _toc.yml but {path} does not exist"
    return path


def test_every_chapter_has_a_parameters_cell():
    for name in toc_chapters():
        text = chapter_path(name).read_text()
        if "{code-cell}" not in text:
            continue
        cell = re.search(r"```\{code-cell\}[^\n]*\n:tags: \[parameters\]\n(.*?)```", text, re.S)
        assert cell, f"{name}: no code cell tagged 'parameters'"
        for var in ("PROFILE", "DEVICE", "SEED"):
            assert re.search(rf"^{var}\s*=", cell.group(1), re.M), f"{name}: parameters cell lacks {var}"


@pytest.mark.chapter
@pytest.mark.parametrize("name", toc_chapters())
def test_chapter_runs_at_smoke(name, tmp_path):
    jupytext = pytest.importorskip("jupytext")
    papermill = pytest.importorskip("papermill")
    path = chapter_path(name)
    nb = jupytext.read(path)
    src = tmp_path / (path.stem + ".ipynb")
    jupytext.write(nb, src, fmt="ipynb")
    if not any("parameters" in c.get("metadata", {}).get("tags", []) for c in nb.cells):
        pytest.skip(f"{name} has no code")
    papermill.execute_notebook(
        str(src),
        str(tmp_path / (path.stem + ".out.ipynb")),
        parameters={"PROFILE": "smoke", "DEVICE": "cpu", "SEED": 0},
        kernel_name="python3",
        cwd=str(path.parent),
        progress_bar=False,
    )
