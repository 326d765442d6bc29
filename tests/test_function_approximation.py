"""The function-approximation sweep: the reference configuration, the ladder, tidy tables, summaries."""

from __future__ import annotations

import json
import math
from dataclasses import fields, replace

import numpy as np
import pandas as pd
import pytest
import torch

from socicnn.experiments import function_approximation as fa
from socicnn.targets import REFERENCE_TARGETS

TINY = fa.SweepConfig(
    name="reference",
    dims=(2,),
    widths={2: 4},
    targets=("quad_iso", "l1"),
    seeds=(0, 1),
    budget=fa.Budget("reference", 8, 32, 1e-2, eval_every=2, patience=2),
    n_train=64,
    n_val=16,
    n_test=32,
)


def test_reference_configuration_is_the_documented_one():
    cfg = fa.reference_config("paper")
    assert cfg.dims == (5, 10, 20, 50) and cfg.widths == {5: 16, 10: 20, 20: 24, 50: 32}
    assert cfg.targets == REFERENCE_TARGETS and cfg.seeds == (2026, 2027, 2028)
    assert (cfg.n_train, cfg.n_val, cfg.n_test) == (6000, 1000, 2000)
    assert cfg.sample_dtype == "float32" and not cfg.standardize
    assert cfg.parameterisation == "reference" and cfg.zpath_mean(16) == -3.5 and cfg.soc_depth == 2
    b = cfg.budget
    assert (b.steps, b.batch_size, b.lr, b.schedule, b.warmup) == (240, 4096, 1e-3, "constant", 0)
    assert (b.weight_decay, b.clip_norm, b.eval_every, b.patience) == (1e-6, 1.0, 10, 8)
    assert math.ceil(cfg.n_train / b.batch_size) * 120 == b.steps  # 120 epochs of 2 steps


@pytest.mark.parametrize("profile", ["smoke", "book", "paper"])
def test_each_rung_of_the_ladder_changes_one_thing(profile):
    ladder = fa.ladder_for(profile)
    assert [c.name for c in ladder] == ["reference", "standardised", "movable z-path", "long budget",
                                        "library defaults"]
    changed = []
    for prev, cur in zip(ladder[:-1], ladder[1:], strict=True):
        diff = {f.name for f in fields(cur) if getattr(cur, f.name) != getattr(prev, f.name)} - {"name"}
        changed.append(diff)
    assert changed == [{"standardize"}, {"zpath"}, {"budget"}, {"parameterisation"}]
    long = ladder[3].budget
    assert long.steps > ladder[0].budget.steps and long.schedule == "cosine" and long.patience is None
    assert profile != "paper" or long.steps == 2000
    # the movable z-path starts at softplus(raw) = 1/sqrt(width), where the softplus passes gradients
    width = ladder[2].widths[ladder[2].dims[0]]
    assert math.log1p(math.exp(ladder[2].zpath_mean(width))) == pytest.approx(width**-0.5)


def test_sweep_table_is_tidy_repeatable_and_batched_equals_one_at_a_time():
    a = fa.run_sweep(TINY, device="cpu")
    b = fa.run_sweep(TINY, device="cpu")
    c = fa.run_sweep(TINY, device="cpu", batched=False)
    assert len(a.table) == 2 * 2 * 5
    assert {"config", "dim", "target", "group", "model", "seed", "budget", "params", "test_mse", "rel_l2",
            "const_mse", "converged", "train_time", "best_step"} <= set(a.table.columns)
    cols = ["test_mse", "rel_l2", "best_step", "steps"]
    np.testing.assert_array_equal(a.table[cols].to_numpy(), b.table[cols].to_numpy())
    np.testing.assert_allclose(a.table[cols].to_numpy(float), c.table[cols].to_numpy(float), rtol=1e-4)
    assert set(a.logs) == {("reference", 2, t, f, s) for t in TINY.targets for f in TINY.families
                           for s in TINY.seeds}
    summary = fa.summarize(a.table)
    assert len(summary) == 2 * 5 and (summary["rel_l2_sd"] >= 0).all() and (summary["seeds"] == 2).all()
    # sd over seeds with ddof 1
    one = a.table[(a.table["target"] == "l1") & (a.table["family"] == "soc")]["rel_l2"]
    row = summary[(summary["target"] == "l1") & (summary["family"] == "soc")].iloc[0]
    assert row["rel_l2_sd"] == pytest.approx(float(np.std(one, ddof=1)))


def test_standardised_targets_are_scored_on_the_raw_scale():
    raw = fa.run_sweep(replace(TINY, families=("soc",)), device="cpu").table
    std = fa.run_sweep(replace(TINY, families=("soc",), standardize=True), device="cpu").table
    np.testing.assert_array_equal(raw["const_mse"].to_numpy(), std["const_mse"].to_numpy())
    assert not np.allclose(raw["test_mse"], std["test_mse"])


def _fake(configs, ratios):
    """A results table with SOC-ICNN error 1 and the baselines at ``ratio`` per configuration."""
    rows = []
    for config, ratio in zip(configs, ratios, strict=True):
        for family in fa.fam.FAMILIES:
            for seed in (0, 1):
                err = 1.0 if family == "soc" else ratio
                rows.append(dict(config=config, dim=5, target="quad_iso", group="quadratic",
                                 model=fa.fam.LABELS[family], family=family, seed=seed, budget=config, steps=10,
                                 params=100, depth=2, width=4, test_mse=err**2, rel_l2=err, const_mse=5.0,
                                 const_rel_l2=2.0, best_step=10, late_improvement=0.0, converged=True,
                                 train_time=1.0, group_time=2.0, group_size=2))
    return pd.DataFrame(rows)


def test_gap_table_and_verdict_are_computed_from_the_numbers():
    table = _fake(["reference", "a", "b"], [8.0, 2.0, 1.0])
    gaps = fa.gap_table(table)
    assert gaps["best_baseline_over_soc"].tolist() == pytest.approx([8.0, 2.0, 1.0])
    assert np.isnan(gaps["gap_closed"].iloc[0])
    assert gaps["gap_closed"].iloc[1:].tolist() == pytest.approx([2 / 3, 1 / 3])  # log 8 = 3 log 2
    assert gaps["baselines_worse_than_constant"].tolist() == [1.0, 0.0, 0.0]  # 8^2 >= 5 > 2^2
    lines = fa.verdict(table)
    assert any("'a' (67% of it)" in line for line in lines)
    assert lines[0].startswith("'reference': SOC-ICNN has the lowest mean relative L2 error in 1 of 1")
    no_gap = fa.verdict(_fake(["reference", "a"], [1.05, 0.5]))
    assert any("no gap to close" in line for line in no_gap)


def test_verdict_reports_runs_still_improving_and_can_skip_the_ladder():
    table = _fake(["reference", "a"], [8.0, 2.0])
    table.loc[table["config"] == "a", "converged"] = [True, False] * 5
    lines = fa.verdict(table, ladder=False)
    assert len(lines) == 2 and "5 of 10 runs were still improving" in lines[1]
    assert "0 of 10 runs were still improving" in lines[0]


def test_doubling_comparison_uses_the_cases_of_the_doubled_run():
    summary = fa.summarize(pd.concat([_fake(["long budget"], [2.0]),
                                      _fake(["long budget"], [0.5]).assign(dim=10)], ignore_index=True))
    doubled = fa.summarize(_fake(["long budget" + fa.DOUBLED_SUFFIX], [4.0]))
    (line,) = fa.doubling_comparison(summary, doubled)
    # only d = 5 is in the doubled run, so the T-step gap is that case's 2x, not the mean with d = 10
    assert line.startswith("'long budget', quadratic targets (1 case, d = 5): the best baseline's error is 2x")
    assert "4x at 2T; SOC-ICNN lowest in 1 and 1 of them" in line
    rows = fa.long_budget_rows(pd.concat([summary, fa.summarize(_fake(["reference"], [1.0]))]), doubled)
    assert set(rows["config"]) == {"long budget", "long budget" + fa.DOUBLED_SUFFIX}


def test_sweep_configs_round_trip_through_their_provenance():
    for cfg in fa.ladder_for("paper"):
        assert fa.SweepConfig.from_dict(json.loads(json.dumps(fa.config_dict(cfg)))) == cfg


def test_exact_soc_models_equal_their_targets():
    for name in ("quad_iso", "quad_aniso", "norm_euclid", "norm_aniso"):
        model = fa.exact_soc_model(name, 6, 8)
        x = 6 * torch.rand(200, 6, dtype=torch.float64) - 3
        y = fa.get_target(name)(x)
        with torch.no_grad():
            assert float((model(x) - y).norm() / y.norm()) < 1e-12
    with pytest.raises(ValueError, match="not exactly representable"):
        fa.exact_soc_model("l1", 6, 8)


def test_runner_refuses_unknown_configurations_and_dims(capsys):
    with pytest.raises(SystemExit):
        fa.main(["--profile", "smoke", "--configs", "nope"])
    assert "unknown configuration" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        fa.main(["--profile", "smoke", "--dims", "7"])
    assert "not in the smoke grid" in capsys.readouterr().err
