"""Trajectory smoothing: the true energy's exact SOCP, its first-order cross-check, deterministic
data, and the exact conic minimisation of a learned energy with its certificates."""

from __future__ import annotations

import dataclasses

import pytest
import torch

import socicnn as sc
from socicnn.energy import ExactBoxSolve, box_gap_bounds
from socicnn.experiments import trajectory as tj
from socicnn.lifting import LiftingError
from socicnn.recurrent import recurrent_family

CFG = dataclasses.replace(tj.config("smoke"), fo_iters=1500)


def test_data_are_deterministic_and_in_the_box():
    a, b = tj.reference_sequences(5, CFG, 3), tj.reference_sequences(5, CFG, 3)
    assert torch.equal(a, b) and not torch.equal(a, tj.reference_sequences(5, CFG, 4))
    assert a.shape == (5, CFG.steps, CFG.features) and float(a.abs().max()) <= 1.0
    U, R, E = tj.candidates(a, CFG, 0)
    assert U.shape[0] == 5 * CFG.n_candidates and float(U.abs().max()) <= 1.0
    torch.testing.assert_close(E, tj.true_energy(U, R, CFG), rtol=0, atol=0)


def test_exact_optimum_matches_the_certified_first_order_method():
    R = tj.reference_sequences(4, CFG, 1)
    U_star, times = tj.exact_optimum(R, CFG)
    E_star = tj.true_energy(U_star, R, CFG)
    U_fo, E_fo, fw = tj.first_order_optimum(R, CFG)
    assert float(fw.max()) <= 1e-9  # certified: E(U_fo) - min E <= fw
    assert float((E_star - E_fo).max()) <= 1e-8 and float((E_fo - E_star).max()) <= 1e-9 + float(fw.max())
    # no point of the box does better (random feasible trial points)
    g = torch.Generator().manual_seed(0)
    trial = (U_star[0] + 0.05 * torch.randn(64, *U_star.shape[1:], generator=g, dtype=torch.float64)).clamp(-1, 1)
    assert float((tj.true_energy(trial, R[:1].expand(64, -1, -1), CFG) - E_star[0]).min()) >= -1e-9


def test_exact_box_solve_and_certificates_agree_with_minimize():
    R = tj.reference_sequences(2, CFG, 2)
    kw = dict(steps=CFG.steps, features=CFG.features, context_features=CFG.features, hidden=4,
              quad_channels=2, norm_groups=1, context_hidden=8, dtype=torch.float64, seed=0)  # fmt: skip
    model = recurrent_family("RNN-Softplus", **kw).at(R)
    sol = ExactBoxSolve(model, -1.0, 1.0, solver="clarabel").solve(accept_inaccurate=True)
    assert float(sol.x.abs().max()) <= 1.0
    bounds = box_gap_bounds(model, sol.x, -1.0, 1.0, sol.multipliers)
    assert float(bounds["strict"].max()) <= 1e-6 and float(bounds["dual_residual"].max()) <= 1e-8
    res = sc.inference.minimize(model, sc.inference.Box(-1.0, 1.0), tol=1e-8)
    assert bool(res.converged.all())
    # Both are certified, so the values agree within the two certified gaps.
    with torch.no_grad():
        gap = (model(sol.x) - res.value).abs()
    assert bool((gap <= bounds["strict"] + res.gap_bound + 1e-12).all())


def test_a_failed_solve_is_an_error():
    R = tj.reference_sequences(1, CFG, 2)
    model = recurrent_family("RNN-SOC", steps=CFG.steps, features=CFG.features, context_features=CFG.features,
                             hidden=3, quad_channels=2, norm_groups=1, context_hidden=4, dtype=torch.float64,
                             seed=0).at(R)  # fmt: skip
    with pytest.raises(LiftingError, match="status"):
        ExactBoxSolve(model, -1.0, 1.0, solver="clarabel").solve(max_iter=1)
    skipped = ExactBoxSolve(model, -1.0, 1.0, solver="clarabel").solve(max_iter=1, skip_failures=True)
    assert skipped.status == ["solver_error"] and bool(skipped.x.isnan().all())
    # zero multipliers are dual feasible: the dual bound stays valid (and finite)
    x = torch.zeros(1, model.in_dim, dtype=torch.float64)
    bounds = box_gap_bounds(model, x, -1.0, 1.0, skipped.multipliers)
    assert float(bounds["dual_residual"][0]) == 0.0 and bool(torch.isfinite(bounds["dual"]).all())
    with pytest.raises(ValueError, match="finite and non-empty"):
        ExactBoxSolve(model, 1.0, -1.0)


def test_tables_and_the_protocol_comparison_from_a_summary():

    rows = []
    for seed in (0, 1):
        for family, ours, theirs in (("A", 0.10 + 0.02 * seed, 0.09), ("B", 0.30, 0.40 + seed)):
            rows.append(dict(family=family, seed=seed, params=100, regret=ours, rel_regret=2 * ours, rmse_to_opt=0.1,
                             time_per_seq=0.002, test_rel_err=0.05, ref_regret_exact=theirs,
                             ref_regret_adam=theirs, ref_rmse_to_opt=0.2))
    summary = tj.summarise(rows)
    table = tj.results_table(summary)
    assert table.loc[0, "regret"] == "0.11 ± 0.01" and table.loc[0, "time (ms)"] == "2.0"
    assert tj.reference_table(summary).loc[1, "regret vs exact optimum"] == "0.9 ± 0.7"
    line = tj.reference_versus_certified(summary)
    assert "for 1 of 2 families: A 0.09 against 0.11 (18.2 % lower)" in line and "the same ranking" in line
    close = summary.assign(ref_regret_exact_mean=summary.regret_mean * (1 - 1e-4))
    assert "lower by more than 1% for 0 of 2 families; within 1% of the certified one for 2" in (
        tj.reference_versus_certified(close))
    flipped = summary.assign(ref_regret_exact_mean=[0.5, 0.2])
    assert "for 1 of 2 families: B 0.2 against 0.3 (33.3 % lower)" in tj.reference_versus_certified(flipped)
    assert "a different ranking (B < A against A < B)" in tj.reference_versus_certified(flipped)
    one_seed = tj.summarise([r for r in rows if r["seed"] == 0])
    assert tj.results_table(one_seed).loc[0, "regret"] == "0.1 (1 seed)"
    assert isinstance(tj.TrajectoryConfig.from_dict({"steps": 8, "seeds": [0]}), tj.TrajectoryConfig)
    assert tj.TrajectoryConfig.from_dict({"steps": 8, "seeds": [0]}).describe().startswith("T = 8, p = 4")
