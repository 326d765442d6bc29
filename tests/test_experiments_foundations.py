"""Runners of the Foundations chapters: value equivalence (A) and LP equivalence / expressivity (B)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

import socicnn as sc
from socicnn.experiments import expressivity as ex
from socicnn.experiments import value_equivalence as ve

F64 = torch.float64


def test_compare_with_solver_agrees_on_a_small_socicnn():
    m = sc.SOCICNN(4, (8, 8), quad_dims=(3,), norm_dims=(2,), dtype=F64, seed=3)
    X = torch.randn(4, 4, dtype=F64)
    df = ve.compare_with_solver(m, X, "clarabel", margin_threshold=1e-4)
    assert len(df) == 4 and (df["status"] == "optimal").all()
    assert df["rel_err"].max() < 1e-6
    sel = df[df["duals_compared"]]
    assert len(sel) > 0
    assert sel[["nu_err", "p_err", "r_err"]].to_numpy().max() < 1e-4
    assert df["gap"].abs().max() < 1e-5
    assert (df["settings"] == "first").all()


def test_compare_with_solver_on_a_relu_icnn_has_no_block_duals():
    m = sc.ReLUICNN(3, (6, 6), dtype=F64, seed=0)
    df = ve.compare_with_solver(m, torch.randn(3, 3, dtype=F64), "clarabel")
    assert df["p_err"].isna().all() and df["r_err"].isna().all()
    assert df["rel_err"].max() < 1e-6


def test_only_uncertified_solves_are_re_solved_and_counted():
    m = sc.SOCICNN(3, (6,), quad_dims=(2,), dtype=F64, seed=1)
    X = torch.randn(2, 3, dtype=F64)
    with pytest.raises(sc.lifting.LiftingError):
        ve.compare_with_solver(m, X, "clarabel", max_iter=1)
    df = ve.compare_with_solver(m, X, "clarabel", resolve={}, max_iter=1)
    assert (df["settings"] == "re-solved").all() and (df["status"] == "optimal").all()
    assert df["rel_err"].max() < 1e-6
    first = ve.compare_with_solver(m, X, "clarabel", resolve={"max_iter": 1})
    assert (first["settings"] == "first").all()
    summary = ve.summarize(pd.concat([df, first]).assign(passthrough=True, seed=0))
    assert int(summary["re_solved"].sum()) == 2 and int(summary["inaccurate"].sum()) == 0


def test_inaccurate_re_solve_is_kept_and_counted(monkeypatch):
    """When the re-solve also stops short of 'optimal', the row is kept and flagged."""
    m = sc.SOCICNN(3, (6,), quad_dims=(2,), dtype=F64, seed=1)
    X = torch.randn(2, 3, dtype=F64)
    solve = sc.lifting.LiftedProblem.solve

    def inaccurate(self, x0, *, accept_inaccurate=False, **options):
        if not accept_inaccurate:
            raise sc.lifting.LiftingError("status 'optimal_inaccurate'")
        sol = solve(self, x0, **options)
        sol.status = "optimal_inaccurate"
        return sol

    monkeypatch.setattr(sc.lifting.LiftedProblem, "solve", inaccurate)
    df = ve.compare_with_solver(m, X, "clarabel", resolve={})
    assert (df["settings"] == "re-solved").all() and (df["status"] == "optimal_inaccurate").all()
    summary = ve.summarize(df.assign(passthrough=True, seed=0))
    assert int(summary["inaccurate"].sum()) == 2 and int(summary["re_solved"].sum()) == 2


def test_run_value_equivalence_is_repeatable_and_summarised():
    kw = dict(seeds=(0, 1), n_inputs=2, solver="clarabel", margin_threshold=1e-3)
    a = ve.run_value_equivalence(3, (5, 5), (2,), (2,), **kw)
    b = ve.run_value_equivalence(3, (5, 5), (2,), (2,), **kw)
    assert len(a) == 2 * 2 * 2
    np.testing.assert_array_equal(a["value"].to_numpy(), b["value"].to_numpy())
    s = ve.summarize(a)
    assert list(s.index) == [False, True]
    assert s["inputs"].tolist() == [4, 4]
    assert (s["duals_compared"] == a.groupby("passthrough")["duals_compared"].sum()).all()
    assert (s["max_rel_err"] < 1e-6).all()
    shown = ve.summary_rows(s)
    assert "max_p_rel_err" in shown.index and shown.loc["inputs"].tolist() == ["4", "4"]


def test_the_displayed_summary_leaves_out_the_multipliers_of_absent_blocks():
    # A ReLU-ICNN has no quadratic (p) or norm (r) multipliers: their rows are not shown as nan.
    a = ve.run_value_equivalence(3, (5, 5), seeds=(0,), n_inputs=2, solver="clarabel", margin_threshold=1e-3)
    shown = ve.summary_rows(ve.summarize(a))
    assert not any(name.startswith(("max_p_", "max_r_")) for name in shown.index)
    assert "max_nu_rel_err" in shown.index and "nan" not in shown.to_string()


def test_run_value_equivalence_rejects_bad_sizes():
    with pytest.raises(ValueError, match="n_inputs"):
        ve.run_value_equivalence(3, (4,), n_inputs=0)
    with pytest.raises(ValueError, match="non-empty"):
        ve.run_value_equivalence(3, (4,), seeds=())


def test_affine_pieces_are_lower_bounds_whose_max_is_f():
    m = sc.ReLUICNN(1, (6, 6), dtype=F64, seed=2)
    grid = torch.linspace(-3, 3, 301, dtype=F64)[:, None]
    pieces = ex.affine_pieces(m, grid)
    assert [p.shape[1] for p in pieces] == [6, 6]
    values = ex.piece_values(m, pieces, grid)
    with torch.no_grad():
        f = m(grid)
    assert values.shape == (pieces[0].shape[0], 301)
    assert float((values - f).max()) < 1e-12
    assert float((values.max(0).values - f).abs().max()) < 1e-12
    # Each piece is affine in x: second differences on the uniform grid vanish.
    assert float(values.diff(n=2, dim=1).abs().max()) < 1e-10
    with pytest.raises(ValueError, match="ReLU-ICNN"):
        ex.affine_pieces(sc.SOCICNN(1, (4,), quad_dims=(1,), dtype=F64), grid)


def test_relu_width_sweep_small():
    df = ex.relu_width_sweep("half_squared_norm", 2, (2, 4), steps=5, n_train=64, n_val=32, n_test=32, seed=0)
    assert df["model"].tolist() == ["relu-icnn", "relu-icnn", "soc-icnn"]
    assert df["params"].iloc[0] < df["params"].iloc[1]
    assert np.isfinite(df["test_mse"]).all() and (df["test_rel_l2"] > 0).all()
    with pytest.raises(ValueError, match="unknown target"):
        ex.relu_width_sweep("cube", 2, (2,))
    with pytest.raises(ValueError, match="widths"):
        ex.relu_width_sweep("norm", 2, ())


def test_expressivity_sweep_covers_targets_dims_and_seeds():
    kw = dict(steps=5, n_train=64, n_val=16, n_test=64, batch_size=32)
    df = ex.expressivity_sweep(("half_squared_norm", "norm"), (2, 3), (0, 1), (2, 3), **kw)
    assert len(df) == 2 * 2 * 2 * 3  # two ReLU widths and the block model per (target, d, seed)
    assert set(df["target"]) == {"half_squared_norm", "norm"} and set(df["d"]) == {2, 3}
    one = ex.relu_width_sweep("norm", 3, (2, 3), seed=1, **kw)
    sel = df[(df["target"] == "norm") & (df["d"] == 3) & (df["seed"] == 1)]
    np.testing.assert_array_equal(sel["test_mse"].to_numpy(), one["test_mse"].to_numpy())
    with pytest.raises(ValueError, match="non-empty"):
        ex.expressivity_sweep((), (2,), (0,), (2,))


def test_parameter_ratio_is_widest_relu_over_block_model_per_cell():
    rows = [("norm", 2, "relu-icnn", 2, 40), ("norm", 2, "relu-icnn", 8, 400), ("norm", 2, "soc-icnn", 2, 50),
            ("norm", 3, "relu-icnn", 8, 900), ("norm", 3, "soc-icnn", 2, 60)]
    table = pd.DataFrame(rows, columns=["target", "d", "model", "width", "params"])
    assert ex.parameter_ratio(table).startswith("the widest ReLU-ICNN has 8x to 15x the parameters")
    with pytest.raises(ValueError, match="no \\(target, d\\) cell"):
        ex.parameter_ratio(table[table["model"] == "relu-icnn"])


def test_one_thread_on_cpu_restores_the_thread_count():
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        with sc.profiles.one_thread_on_cpu("cpu"):
            assert torch.get_num_threads() == 1
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
