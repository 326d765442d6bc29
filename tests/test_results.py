"""Result tables are saved with provenance and read back; absent tables are reported as absent,
and tables whose provenance is missing, incomplete, corrupt or disagrees with them are refused."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

import socicnn
from socicnn import results
from socicnn.profiles import setup
from socicnn.results import load_stored, load_table, output_dir, provenance, record, save_table, stored_dir

ROOT = Path(__file__).resolve().parents[1]


def test_save_and_load_round_trip_with_provenance(tmp_path):
    table = pd.DataFrame({"dim": [5, 10], "rel_l2": [0.1, 0.2]})
    path = save_table(table, tmp_path / "sub" / "t.csv", profile="book", device="cpu", wall_time=12.5, steps=240)
    stored = load_table(path)
    pd.testing.assert_frame_equal(stored.table, table)
    meta = stored.meta
    assert meta["profile"] == "book" and meta["device"] == "cpu" and meta["rows"] == 2
    assert meta["config"] == {"steps": 240} and meta["wall_time_s"] == 12.5
    assert meta["package_version"] == socicnn.__version__
    assert meta["versions"]["torch"] and meta["versions"]["clarabel"]
    assert "t.csv: 2 rows, profile=book" in stored.describe()
    assert stored.cases() is None and stored.complete  # written in one piece, not case by case


def _saved(tmp_path) -> Path:
    return save_table(pd.DataFrame({"a": [1, 2, 3]}), tmp_path / "t.csv", profile="paper", device="cpu")


def test_absent_and_unprovenanced_tables(tmp_path):
    assert load_table(tmp_path / "missing.csv") is None
    (tmp_path / "bare.csv").write_text("a\n1\n")
    with pytest.raises(ValueError, match="provenance"):
        load_table(tmp_path / "bare.csv")
    with pytest.raises(ValueError, match="csv"):
        save_table(pd.DataFrame(), tmp_path / "t.parquet", profile="book", device="cpu")


@pytest.mark.parametrize("meta", [{}, [], {"profile": "paper", "rows": 3}])
def test_empty_or_incomplete_provenance_is_refused(tmp_path, meta):
    path = _saved(tmp_path)
    path.with_suffix(".meta.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=r"t\.meta\.json"):
        load_table(path)


def test_row_count_must_match_the_provenance(tmp_path):
    path = _saved(tmp_path)
    path.write_text("a\n1\n2\n")
    with pytest.raises(ValueError, match=r"2 rows but its provenance t\.meta\.json records 3"):
        load_table(path)


def test_corrupt_provenance_names_the_file(tmp_path):
    path = _saved(tmp_path)
    path.with_suffix(".meta.json").write_text('{"profile": "paper",')
    with pytest.raises(ValueError, match=r"t\.meta\.json is not valid JSON"):
        load_table(path)


def test_stored_dir_is_package_data_unless_overridden(tmp_path, monkeypatch):
    monkeypatch.delenv(results.STORED_ENV, raising=False)
    assert stored_dir() == Path(socicnn.__file__).resolve().parent / "data" / "results"
    monkeypatch.setenv(results.STORED_ENV, str(tmp_path))
    assert stored_dir() == tmp_path
    assert load_stored("t") is None
    _saved(tmp_path)
    assert load_stored("t").table["a"].tolist() == [1, 2, 3]


def test_new_results_go_under_the_working_directory_unless_overridden(tmp_path, monkeypatch):
    monkeypatch.delenv(results.OUT_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    assert output_dir() == tmp_path / "results-local"
    table = pd.DataFrame({"a": [1.0]})
    assert record(table, "x", setup("book", "cpu", 0, verbose=False)) is None  # book runs keep nothing
    assert not (tmp_path / "results-local").exists()
    written = record(table, "x", setup("paper", "cpu", 3, verbose=False), wall_time=1.0, note="n")
    assert written == tmp_path / "results-local" / "x.csv"
    assert load_table(written).meta["config"] == {"seed": 3, "note": "n"}
    monkeypatch.setenv(results.OUT_ENV, str(tmp_path / "out"))
    assert record(table, "y", setup("smoke", "cpu", 0, verbose=False)) == tmp_path / "out" / "y.csv"


def test_provenance_records_the_checkout_only_when_run_from_it(tmp_path):
    here = provenance("book", "cpu")
    if results.checkout_root() == ROOT:  # this test run imports the package from the checkout
        assert here["source"] == "checkout" and len(here["git_commit"]) == 40
    # An installed copy in a virtualenv that sits inside some git checkout (run from that
    # checkout): neither that checkout's commit nor a path derived from the venv may be used.
    proj = tmp_path / "proj"
    proj.mkdir()
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false"]
    subprocess.run(["git", "init", "-q"], cwd=proj, check=True)
    (proj / "f").write_text("x")
    subprocess.run(["git", "add", "f"], cwd=proj, check=True)
    subprocess.run([*git, "commit", "-q", "-m", "c"], cwd=proj, check=True)
    site = proj / ".venv" / "lib" / "python3.11" / "site-packages"
    shutil.copytree(Path(socicnn.__file__).resolve().parent, site / "socicnn")
    code = (
        "import json, socicnn.results as r; p = r.provenance('book', 'cpu'); "
        "print(json.dumps([p['source'], p['git_commit'], str(r.stored_dir())]))"
    )
    env = {**os.environ, "PYTHONPATH": str(site)}
    env.pop(results.STORED_ENV, None)
    out = subprocess.run([sys.executable, "-c", code], cwd=proj, env=env, capture_output=True, text=True, check=True)
    source, commit, stored = json.loads(out.stdout.strip().splitlines()[-1])
    assert (source, commit) == ("installed", None)
    assert Path(stored) == site / "socicnn" / "data" / "results"
    # A copy sent without its git directory names the commit it came from; its changes are unknown.
    env[results.COMMIT_ENV] = "0123abcd"
    out = subprocess.run([sys.executable, "-c", code], cwd=proj, env=env, capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1])[:2] == ["copy", "0123abcd"]


def test_a_run_records_the_commit_it_started_from(tmp_path):
    """A checkout that moves on while a long run is going: the table records the starting commit."""
    proj = tmp_path / "checkout"
    shutil.copytree(Path(socicnn.__file__).resolve().parent, proj / "src" / "socicnn")
    shutil.copy(ROOT / "pyproject.toml", proj / "pyproject.toml")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false"]
    subprocess.run(["git", "init", "-q"], cwd=proj, check=True)
    subprocess.run(["git", "add", "-A"], cwd=proj, check=True)
    subprocess.run([*git, "commit", "-q", "-m", "first"], cwd=proj, check=True)
    first = subprocess.run(["git", "rev-parse", "HEAD"], cwd=proj, capture_output=True, text=True).stdout.strip()
    code = f"""
import subprocess, pandas as pd, socicnn.profiles as p, socicnn.results as r
p.setup("paper", "cpu", 0, verbose=False)
open("later.txt", "w").write("x")
subprocess.run({git!r} + ["add", "later.txt"], check=True)
subprocess.run({git!r} + ["commit", "-q", "-m", "second"], check=True)
r.save_table(pd.DataFrame({{"a": [1]}}), "t.csv", profile="paper", device="cpu")
"""
    env = {**os.environ, "PYTHONPATH": str(proj / "src")}
    subprocess.run([sys.executable, "-c", code], cwd=proj, env=env, check=True, capture_output=True)
    meta = load_table(proj / "t.csv").meta
    assert meta["source"] == "checkout" and meta["git_commit"] == first and meta["git_dirty"] is False
    assert meta["git_changes"] == []


def test_run_cases_keeps_the_provenance_of_every_run_that_added_cases(tmp_path):
    from socicnn.results import run_cases

    out = tmp_path / "r.csv"

    def one(case):
        return pd.DataFrame({"case": [case[0]]}), f"case {case[0]}"

    run_cases(out, [(1,), (2,)], one, profile="paper", device="cpu", resume=False)
    assert [r["cases"] for r in load_table(out).meta["config"]["runs"]] == [2]
    # a table saved before runs were recorded: its own provenance becomes the first run
    meta_path = out.with_suffix(".meta.json")
    meta = json.loads(meta_path.read_text())
    del meta["config"]["runs"]
    meta_path.write_text(json.dumps(meta))
    run_cases(out, [(1,), (2,), (3,)], one, profile="paper", device="cpu", resume=True)
    stored = load_table(out)
    assert stored.table["case"].tolist() == [1, 2, 3] and stored.cases() == (3, 3)
    runs = stored.meta["config"]["runs"]
    assert [r["cases"] for r in runs] == [2, 1] and runs[0]["git_commit"] == meta["git_commit"]
    assert "s summed over its 2 runs" in stored.describe() and "(2 runs at commits " in stored.describe()


def test_run_cases_stops_after_limit_new_cases_when_resuming(tmp_path):
    from socicnn.results import run_cases

    out, ran = tmp_path / "r.csv", []

    def one(case):
        ran.append(case[0])
        return pd.DataFrame({"case": [case[0]]}), f"case {case[0]}"

    todo = [(1,), (2,), (3,), (4,)]
    run_cases(out, todo, one, profile="paper", device="cpu", resume=False, limit=1)
    run_cases(out, todo, one, profile="paper", device="cpu", resume=True, limit=2)
    assert ran == [1, 2, 3] and load_table(out).cases() == (3, 4)


def test_parts_run_by_separate_processes_merge_into_one_table(tmp_path):
    from socicnn.results import merge_case_tables, run_cases

    def one(case):
        return pd.DataFrame({"case": [case[0]]}), f"case {case[0]}"

    def merge_checks(into, other):
        into["worst"] = max(into["worst"], other["worst"])

    todo = [(1,), (2,), (3,), (4,)]
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    run_cases(a, todo[:2], one, profile="paper", device="cpu", resume=False, checks={"worst": 1.0},
              cases_total=4, steps=5)  # fmt: skip
    run_cases(b, todo[2:], one, profile="paper", device="cpu", resume=False, checks={"worst": 3.0},
              cases_total=4, steps=5)  # fmt: skip
    assert load_table(a).cases() == (2, 4) and not load_table(a).complete
    assert "2 of 4 cases (the run has not reached its last case)" in load_table(a).describe()
    merged = load_table(merge_case_tables([a, b], tmp_path / "all.csv", merge_checks))
    assert merged.table["case"].tolist() == [1, 2, 3, 4] and merged.complete
    config = merged.meta["config"]
    assert config["checks"] == {"worst": 3.0} and config["steps"] == 5
    assert [r["cases"] for r in config["runs"]] == [2, 2]
    assert merged.meta["wall_time_s"] == load_table(a).meta["wall_time_s"] + load_table(b).meta["wall_time_s"]
    with pytest.raises(ValueError, match="repeats cases"):
        merge_case_tables([a, a], tmp_path / "x.csv", merge_checks)
    run_cases(tmp_path / "c.csv", todo[2:], one, profile="paper", device="cpu", resume=False, cases_total=4, steps=6)
    with pytest.raises(ValueError, match="different profiles or configurations"):
        merge_case_tables([a, tmp_path / "c.csv"], tmp_path / "x.csv", merge_checks)
    with pytest.raises(ValueError, match="not a table written case by case"):
        merge_case_tables([a, _saved(tmp_path)], tmp_path / "x.csv", merge_checks)


def test_provenance_names_the_version_of_an_uninstalled_source_tree(monkeypatch):
    from importlib import metadata

    import socicnn.results as results

    def missing(pkg):
        raise metadata.PackageNotFoundError(pkg)

    monkeypatch.setattr(results.metadata, "version", missing)
    record = results.provenance("smoke", "cpu")
    assert record["package_version"] == socicnn.__version__ and record["versions"]["socicnn"] == socicnn.__version__
    assert record["versions"]["torch"] is None


def test_provenance_lists_the_uncommitted_changes_a_run_started_with(tmp_path, monkeypatch):
    import socicnn.results as results

    many = tuple(f"book/c{i}.md" for i in range(results.MAX_CHANGES + 3))
    monkeypatch.setattr(results, "_checkout", lambda: ("abcdef1234567", ("src/socicnn/x.py", "notes.txt")))
    record = results.provenance("paper", "cpu")
    assert record["git_dirty"] is True and record["git_changes"] == ["src/socicnn/x.py", "notes.txt"]
    table = results.StoredTable(pd.DataFrame({"a": [1]}), {**record, "rows": 1}, tmp_path / "t.csv")
    assert "(commit abcdef1234 with uncommitted changes (listed in its provenance))" in table.describe()
    monkeypatch.setattr(results, "_checkout", lambda: ("abcdef1234567", many))
    listed = results.provenance("paper", "cpu")["git_changes"]
    assert len(listed) == results.MAX_CHANGES + 1 and listed[-1] == "... and 3 more"
    monkeypatch.setattr(results, "_checkout", lambda: ("abcdef1234567", ()))
    record = results.provenance("paper", "cpu")
    assert record["git_dirty"] is False and "(commit abcdef1234)," in results.StoredTable(
        pd.DataFrame({"a": [1]}), {**record, "rows": 1}, tmp_path / "t.csv").describe()


def test_describe_says_when_the_version_was_not_recorded(tmp_path):
    from socicnn.results import StoredTable

    meta = {"profile": "paper", "device": "cuda", "hardware": "GPU", "package_version": None, "date": "d",
            "git_commit": "abcdef1234567"}
    assert "socicnn (version not recorded) (commit abcdef1234)" in StoredTable(
        pd.DataFrame({"a": [1]}), meta, tmp_path / "t.csv").describe()


def test_describe_gives_short_runs_in_seconds_and_long_ones_in_minutes(tmp_path):
    from socicnn.results import StoredTable

    meta = {"profile": "paper", "device": "cpu", "hardware": "CPU", "package_version": "0", "date": "d"}
    describe = lambda wall: StoredTable(pd.DataFrame({"a": [1]}), {**meta, "wall_time_s": wall},  # noqa: E731
                                        tmp_path / "t.csv").describe()
    assert describe(1.94).endswith(", 1.9 s") and describe(600.0).endswith(", 10.0 min")
