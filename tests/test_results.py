"""Result tables are saved with provenance and read back; absent tables are reported as absent."""

from __future__ import annotations

import pandas as pd
import pytest

from socicnn.results import RESULTS_DIR, load_table, save_table


def test_save_and_load_round_trip_with_provenance(tmp_path):
    table = pd.DataFrame({"dim": [5, 10], "rel_l2": [0.1, 0.2]})
    path = save_table(table, tmp_path / "sub" / "t.csv", profile="book", device="cpu", steps=240)
    stored = load_table(path)
    pd.testing.assert_frame_equal(stored.table, table)
    meta = stored.meta
    assert meta["profile"] == "book" and meta["device"] == "cpu" and meta["rows"] == 2
    assert meta["config"] == {"steps": 240}
    assert meta["versions"]["torch"] and meta["versions"]["socicnn"]
    assert "git_commit" in meta and "date" in meta
    assert "t.csv: 2 rows, profile=book" in stored.describe()


def test_absent_and_unprovenanced_tables(tmp_path):
    assert load_table(tmp_path / "missing.csv") is None
    (tmp_path / "bare.csv").write_text("a\n1\n")
    with pytest.raises(ValueError, match="provenance"):
        load_table(tmp_path / "bare.csv")
    with pytest.raises(ValueError, match="csv"):
        save_table(pd.DataFrame(), tmp_path / "t.parquet", profile="book", device="cpu")
    assert RESULTS_DIR.parts[-2:] == ("data", "results")
