"""The ``socicnn`` command: listing, running (smoke profile, one small chapter), resuming,
comparing tables, and one-line errors with exit status 2 for bad arguments."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from socicnn import cli, results
from socicnn.results import load_table, save_table

ROOT = Path(__file__).resolve().parents[1]


def _usage_error(capsys, argv, match):
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("socicnn: error:") and match in err, err
    assert "Traceback" not in err


def test_list_shows_every_chapter_with_its_profile_sizes(capsys):
    assert cli.main(["list", "--book", str(ROOT)]) == 0
    out = capsys.readouterr().out
    for chapter in cli.toc_chapters(ROOT):
        assert Path(chapter).name in out.splitlines()
    assert "paper dict(d=100, hidden=(256,) * 6, quad_dims=(24,), norm_dims=(24,), seeds=5, inputs=30)" in out


def test_list_prefers_the_pick_of_sizes_then_of_descriptions(tmp_path):
    chapter = tmp_path / "c.md"
    cell = "```{code-cell} ipython3\n%s\n```\n"
    chapter.write_text(cell % "LIFT = ctx.pick(smoke=4, book=5, paper=5)"
                       + cell % 'print(ctx.pick(smoke="tiny", book="small", paper="full"))')
    assert cli.profile_sizes(chapter) == {"smoke": "'tiny'", "book": "'small'", "paper": "'full'"}
    sizes = "SIZES = ctx.pick(smoke=dict(n=1), book=dict(n=2), paper=dict(n=3))"
    chapter.write_text(chapter.read_text() + cell % sizes)
    assert cli.profile_sizes(chapter)["paper"] == "dict(n=3)"


def test_bad_arguments_get_one_line_and_status_2(capsys, tmp_path):
    _usage_error(capsys, ["list", "--book", str(tmp_path)], "no _toc.yml")
    _usage_error(capsys, ["run", "no_such_chapter", "--book", str(ROOT)], "unknown chapter 'no_such_chapter'")
    _usage_error(capsys, ["run", "socp_lifting", "--profile", "huge", "--book", str(ROOT)], "invalid choice: 'huge'")
    _usage_error(capsys, ["run", "socp_lifting", "--device", "tpu", "--book", str(ROOT)], "invalid choice: 'tpu'")
    _usage_error(capsys, ["frobnicate"], "invalid choice: 'frobnicate'")
    _usage_error(capsys, ["compare", str(tmp_path / "missing")], "does not exist")
    if not torch.cuda.is_available():
        _usage_error(capsys, ["run", "socp_lifting", "--device", "cuda", "--book", str(ROOT)], "no CUDA device")


def test_console_script_error_has_no_traceback(tmp_path):
    out = subprocess.run([sys.executable, "-m", "socicnn.cli", "run", "nope", "--book", str(ROOT)],
                         capture_output=True, text=True)
    assert out.returncode == 2 and out.stderr.strip().startswith("socicnn: error: unknown chapter")
    assert "Traceback" not in out.stderr


@pytest.mark.chapter
def test_run_writes_notebooks_and_tables_with_provenance_and_resumes(tmp_path, monkeypatch, capsys):
    pytest.importorskip("papermill")
    monkeypatch.delenv(results.OUT_ENV, raising=False)  # restored after the test
    out = tmp_path / "run"
    argv = ["--profile", "smoke", "--device", "cpu", "--out", str(out), "--book", str(ROOT)]
    assert cli.main(["run", "socp_lifting", *argv]) == 0
    assert (out / "notebooks" / "socp_lifting.ipynb").is_file()
    stored = load_table(out / "value_equivalence.csv")
    assert stored.meta["profile"] == "smoke" and stored.meta["rows"] == 2 * 2 * 3 and stored.meta["wall_time_s"] > 0
    assert json.loads((out / "done" / "socp_lifting.json").read_text())["profile"] == "smoke"
    # reproduce skips every chapter already finished at this profile (here: all, marked done)
    for chapter in cli.toc_chapters(ROOT):
        (out / "done" / f"{Path(chapter).name}.json").write_text(json.dumps({"profile": "smoke"}))
    capsys.readouterr()
    assert cli.main(["reproduce", *argv]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert sum("skipped" in line for line in lines) == len(cli.toc_chapters(ROOT))
    assert not cli._finished(out, "book/socp_lifting", "paper")  # another profile is not finished
    # a run compared with itself matches; the table's timing columns are not compared
    assert cli.main(["compare", str(out), "--stored", str(out)]) == 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.chapter
def test_run_on_cuda(tmp_path, monkeypatch):
    monkeypatch.delenv(results.OUT_ENV, raising=False)
    argv = ["run", "reproducibility", "--profile", "smoke", "--device", "cuda", "--out", str(tmp_path)]
    argv += ["--book", str(ROOT)]
    assert cli.main(argv) == 0
    assert (tmp_path / "notebooks" / "reproducibility.ipynb").is_file()


def _pair(tmp_path, run_values, stored_values, *, run_profile="paper", stored_profile="paper"):
    run, stored = tmp_path / "run", tmp_path / "stored"
    for where, values, profile in ((run, run_values, run_profile), (stored, stored_values, stored_profile)):
        table = pd.DataFrame({"d": [5, 10], "model": ["soc", "relu"], "rel_err": values, "solve_time": [1.0, 2.0]})
        if where is stored:
            table["solve_time"] = [9.0, 9.0]  # timings always differ; never compared
        save_table(table, where / "t.csv", profile=profile, device="cpu")
    return ["compare", str(run), "--stored", str(stored)]


def test_compare_passes_within_tolerance_and_fails_on_drift(tmp_path, capsys):
    assert cli.main(_pair(tmp_path / "a", [1e-9, 2e-9], [1e-9 + 1e-12, 2e-9])) == 0
    assert "matches the stored table" in capsys.readouterr().out
    assert cli.main(_pair(tmp_path / "b", [1e-9, 2e-3], [1e-9, 2e-3 * (1 + 1e-4)])) == 1
    out = capsys.readouterr().out
    assert "DRIFT" in out and "rel_err: 1 of 2 values drift" in out
    assert cli.main([*_pair(tmp_path / "c", [1e-9, 2e-3], [1e-9, 2e-3 * (1 + 1e-4)]), "--rtol", "1e-3"]) == 0


def test_compare_refuses_to_call_nothing_a_match(tmp_path, capsys):
    assert cli.main(_pair(tmp_path, [1.0, 2.0], [1.0, 2.0], run_profile="smoke")) == 1
    out = capsys.readouterr().out
    assert "not comparable" in out and "nothing compared" in out
    argv = _pair(tmp_path, [1.0, 2.0], [1.0, 2.0])
    (tmp_path / "stored" / "t.meta.json").write_text("{}")
    assert cli.main(argv) == 1
    assert "t.meta.json lacks" in capsys.readouterr().out


def test_timing_columns_are_not_compared():
    from socicnn.cli import TIMING

    timing = ["train_time", "wall_time_s", "readout_s", "ms per query", "SOCP ms per query", "newton_ms_per_query",
              "speedup", "time"]
    kept = ["steps", "test_mse", "max iterations", "seeds", "best_step", "group_size", "rel_l2"]
    assert all(TIMING.search(c) for c in timing)
    assert not any(TIMING.search(c) for c in kept)
