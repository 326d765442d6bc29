"""The Colab/Binder launch notebooks book/<chapter>.ipynb exist and match their chapters."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_launch_notebooks_are_in_sync_with_the_chapters():
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "make_notebooks.py"), "--check"],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_launch_notebooks_have_no_outputs_and_start_with_the_colab_setup():
    notebooks = sorted((ROOT / "book").glob("*.ipynb"))
    assert notebooks, "no launch notebooks under book/"
    for path in notebooks:
        nb = json.loads(path.read_text())
        first = nb["cells"][0]
        assert first["cell_type"] == "code" and "google.colab" in "".join(first["source"]), path.name
        for cell in nb["cells"]:
            assert not cell.get("outputs") and cell.get("execution_count") is None, path.name
