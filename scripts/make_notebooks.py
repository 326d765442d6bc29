"""Write the launch notebooks ``book/<chapter>.ipynb`` that Colab and Binder open.

The chapters are MyST markdown (``book/*.md``); Colab opens only ``.ipynb`` files at a path that
exists in the repository, and the book theme points its launch buttons at the ``.ipynb`` next to
a chapter's ``.md``. Each notebook is the chapter converted by jupytext, without outputs, with one
cell in front that, in Colab only, clones the repository and installs the library (elsewhere,
Binder included, it does nothing: Binder builds ``environment.yml``).

    python scripts/make_notebooks.py          # (re)write the notebooks
    python scripts/make_notebooks.py --check  # exit 1 when one is missing or stale (tests use this)
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import jupytext
import nbformat
import yaml

ROOT = Path(__file__).resolve().parents[1]
CLONE = "/content/socicnn"


def toc_chapters() -> list[str]:
    return re.findall(r"(?:file|root):\s*([^\s#]+)", (ROOT / "_toc.yml").read_text())


def colab_cell(repository: str, branch: str) -> nbformat.NotebookNode:
    source = f'''# In Google Colab: clone the repository and install the library with its dependencies.
# Anywhere else (a local checkout, Binder) this cell does nothing.
import os
import subprocess
import sys

if "google.colab" in sys.modules:
    if not os.path.isdir("{CLONE}"):
        subprocess.run(["git", "clone", "--depth", "1", "--branch", "{branch}", "{repository}", "{CLONE}"],
                       check=True)
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "-e", "{CLONE}"], check=True)
    sys.path.insert(0, "{CLONE}/src")  # the editable install is seen only after a restart
    os.chdir("{CLONE}/book")'''
    return nbformat.v4.new_code_cell(source, metadata={"tags": ["colab-setup"]})


def notebook_text(chapter: Path, repository: str, branch: str) -> str:
    nb = jupytext.read(chapter)
    nb.cells.insert(0, colab_cell(repository, branch))
    for i, cell in enumerate(nb.cells):
        cell.id = f"cell-{i:03d}"  # deterministic ids: the files are compared byte for byte
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    nb.metadata = {"kernelspec": nb.metadata["kernelspec"], "language_info": {"name": "python"}}
    return jupytext.writes(nb, fmt="ipynb")


def expected() -> dict[Path, str]:
    config = yaml.safe_load((ROOT / "_config.yml").read_text())["repository"]
    out = {}
    for name in toc_chapters():
        chapter = ROOT / f"{name}.md"
        if "kernelspec:" in chapter.read_text():  # a notebook page: the theme shows launch buttons
            out[chapter.with_suffix(".ipynb")] = notebook_text(chapter, config["url"], config["branch"])
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only report missing or stale notebooks")
    args = parser.parse_args()
    want = expected()
    stale = [path for path, text in want.items() if not path.is_file() or path.read_text() != text]
    if args.check:
        for path in stale:
            print(f"{path.relative_to(ROOT)} is missing or out of date: run python scripts/make_notebooks.py")
        return 1 if stale else 0
    for path in stale:
        path.write_text(want[path])
        print(f"wrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
