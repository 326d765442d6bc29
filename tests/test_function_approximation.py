"""The function-approximation sweep: tidy table, repeatability, summaries and verdict."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from socicnn.experiments import function_approximation as fa

TINY = fa.SweepConfig(
    dims=(2,),
    widths={2: 4},
    targets=("quad_iso", "l1"),
    seeds=(0, 1),
    budgets=(fa.Budget("reference", 4, 32, 1e-3), fa.Budget("converged", 6, 32, 1e-2, "cosine", warmup=1)),
    n_train=64,
    n_val=16,
    n_test=32,
)


def test_sweep_table_is_tidy_and_repeatable():
    a = fa.run_sweep(TINY, device="cpu")
    b = fa.run_sweep(TINY, device="cpu")
    assert len(a.table) == 1 * 2 * 2 * 5 * 2
    assert {"dim", "target", "model", "seed", "budget", "params", "test_mse", "rel_l2", "train_time",
            "best_step"} <= set(a.table.columns)
    cols = ["test_mse", "rel_l2", "best_step"]
    np.testing.assert_array_equal(a.table[cols].to_numpy(), b.table[cols].to_numpy())
    assert set(a.logs) == {(2, t, f, s, bud) for t in TINY.targets for f in TINY.families for s in TINY.seeds
                           for bud in ("reference", "converged")}
    assert a.parameters["model"].nunique() == 5
    summary = fa.summarize(a.table)
    assert len(summary) == 2 * 2 * 5 and (summary["rel_l2_sd"] >= 0).all()
    adv = fa.advantage_table(a.table)
    assert len(adv) == 4 and np.isclose(adv["ratio"], adv["best_baseline"] / adv["soc"]).all()
    lines = fa.verdict(a.table)
    assert any("after convergence" in line for line in lines)
    assert fa.trivial_ok(a.table).dtype == bool


def test_profiles_cover_every_family_and_target():
    smoke = fa.config_for("smoke")
    assert set(smoke.targets) == set(fa.target_names()) and smoke.families == fa.fam.FAMILIES
    paper = fa.config_for("paper")
    assert paper.dims == (5, 10, 20, 50) and paper.seeds == (2026, 2027, 2028)
    ref = paper.budgets[0]
    assert (ref.steps, ref.batch_size, ref.lr, ref.schedule) == (240, 4096, 1e-3, "constant")
    for cfg in (smoke, paper, fa.config_for("book")):
        assert cfg.budgets[1].steps > 2 * cfg.budgets[0].steps and cfg.budgets[1].schedule == "cosine"


def test_exact_soc_models_equal_their_targets():
    for name in ("quad_iso", "quad_aniso", "norm_euclid", "norm_aniso"):
        model = fa.exact_soc_model(name, 6, 8)
        x = 6 * torch.rand(200, 6, dtype=torch.float64) - 3
        y = fa.get_target(name)(x)
        with torch.no_grad():
            assert float((model(x) - y).norm() / y.norm()) < 1e-12
    with pytest.raises(ValueError, match="not exactly representable"):
        fa.exact_soc_model("l1", 6, 8)
