"""scripts/execute_chapters.py: the book's chapters executed in parallel into the build's cache.

The build renders what that script cached (``execute_notebooks: cache``), so the script must read
each chapter exactly as the build does (else the build would execute it again, one chapter at a
time), and a failing cell must still fail the build.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import yaml

from socicnn.cli import toc_chapters

ROOT = Path(__file__).resolve().parents[1]


def _script():
    """The script as a module, registered by name so that its worker function pickles."""
    spec = importlib.util.spec_from_file_location("execute_chapters", ROOT / "scripts" / "execute_chapters.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_every_notebook_chapter_is_executed_and_read_as_the_build_reads_it(tmp_path):
    pytest.importorskip("myst_nb")
    from jupyter_cache import get_cache
    from myst_nb.core.config import NbParserConfig
    from myst_nb.core.read import create_nb_reader
    from myst_parser.config.main import MdParserConfig

    script = _script()
    chapters = script.notebook_chapters()
    with_kernel = [name for name in toc_chapters(ROOT) if "kernelspec:" in (ROOT / f"{name}.md").read_text()]
    assert [p.relative_to(ROOT).with_suffix("").as_posix() for p in chapters] == with_kernel

    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    assert config["execute"]["execute_notebooks"] == "cache"
    md_config = MdParserConfig(enable_extensions=set(config["parse"]["myst_enable_extensions"]))
    cache = get_cache(str(tmp_path / "cache"))
    for path in chapters:
        text = path.read_text(encoding="utf8")
        built = create_nb_reader(str(path), md_config, NbParserConfig(), text).read(text)
        _, by_build = cache.create_hashed_notebook(built)
        _, by_script = cache.create_hashed_notebook(_read(path))
        assert by_build == by_script, path.name


def _read(path: Path):
    from myst_nb.core.read import myst_nb_reader_plugin

    return myst_nb_reader_plugin(str(path))


CHAPTER = """\
---
jupytext:
  text_representation:
    extension: .md
    format_name: myst
kernelspec:
  display_name: Python 3
  language: python
  name: python3
---
# {title}

```{{code-cell}} ipython3
{code}
```
"""


def test_a_failing_cell_fails_the_run_and_the_other_chapters_are_cached(tmp_path, monkeypatch, capsys):
    pytest.importorskip("myst_nb")
    from jupyter_cache import get_cache

    (tmp_path / "_toc.yml").write_text("format: jb-book\nroot: good\nchapters:\n  - file: bad\n")
    (tmp_path / "_config.yml").write_text("execute:\n  timeout: 120\n")
    (tmp_path / "good.md").write_text(CHAPTER.format(title="Good", code="x = 1 + 1\nprint(x)"))
    (tmp_path / "bad.md").write_text(CHAPTER.format(title="Bad", code="raise ValueError('planted failure')"))
    script = _script()
    monkeypatch.setattr(script, "ROOT", tmp_path)
    monkeypatch.setattr(script, "CACHE", tmp_path / "_build" / ".jupyter_cache")

    assert script.main(["--jobs", "2"]) == 1
    err = capsys.readouterr().err
    assert "bad.md FAILED" in err and "planted failure" in err, err
    cached = get_cache(str(tmp_path / "_build" / ".jupyter_cache"))
    record = cached.match_cache_notebook(_read(tmp_path / "good.md"))
    outputs = cached.get_cache_bundle(record.pk).nb.cells[0].outputs
    assert "".join(o.get("text", "") for o in outputs).strip() == "2"
    with pytest.raises(KeyError):
        cached.match_cache_notebook(_read(tmp_path / "bad.md"))
