"""The verdict rule of the claims chapter and the readers of stored tables it relies on."""

from __future__ import annotations

import pandas as pd
import pytest

from socicnn.experiments.claims import (
    NONE,
    Evidence,
    approximation_ranking,
    degenerate_outcome,
    doubling_outcome,
    expressivity_outcome,
    first_order_outcome,
    hessian_outcome,
    value_equivalence_outcome,
    verdict,
    whitebox_outcome,
)

H, P, F = Evidence("holds", ""), Evidence("partial", ""), Evidence("fails", "")


def test_verdict_rule():
    assert verdict(NONE, NONE, needs_paper_table=False) == "not yet judged"
    assert verdict(H, NONE, needs_paper_table=False) == "reproduced"
    assert verdict(H, NONE, needs_paper_table=True) == "partly reproduced"
    assert verdict(NONE, H, needs_paper_table=True) == "reproduced"
    assert verdict(H, H, needs_paper_table=True) == "reproduced"
    assert verdict(H, F, needs_paper_table=True) == "partly reproduced"
    assert verdict(P, NONE, needs_paper_table=False) == "partly reproduced"
    assert verdict(F, F, needs_paper_table=True) == "not reproduced"
    assert verdict(NONE, F, needs_paper_table=True) == "not reproduced"
    with pytest.raises(ValueError, match="outcome"):
        Evidence("maybe", "")


def _fa(cells: list[tuple[str, int]], winners: list[str], budget: str = "reference") -> pd.DataFrame:
    rows = []
    for (target, d), best in zip(cells, winners, strict=True):
        for family in ("soc", "relu", "softplus"):
            rows.append(
                {
                    "target": target,
                    "d": d,
                    "family": family,
                    "budget": budget,
                    "rel_l2_mean": 0.1 if family == best else 0.5,
                }
            )
    return pd.DataFrame(rows)


def test_approximation_ranking():
    cells = [("quad", 5), ("norm", 5), ("huber", 5)]
    assert approximation_ranking(_fa(cells, ["soc", "soc", "relu"])).outcome == "holds"
    partial = _fa(cells, ["soc", "relu", "softplus"])
    assert approximation_ranking(partial).outcome == "fails"  # a tie with the best other family is no win
    four = cells + [("l1", 5)]
    assert approximation_ranking(_fa(four, ["soc", "soc", "relu", "softplus"])).outcome == "partial"
    assert approximation_ranking(_fa(cells, ["relu", "relu", "soc"])).outcome == "fails"
    mixed = pd.concat([_fa(cells, ["soc"] * 3, "short"), _fa(cells, ["relu"] * 3, "long")])
    result = approximation_ranking(mixed)
    assert result.outcome == "partial" and "budget long: SOC-ICNN best in 0 of 3" in result.measured
    # one configuration of three going SOC-ICNN's way is not enough for "partial"
    most_fail = pd.concat([mixed, _fa(cells, ["relu"] * 3, "longer")])
    assert approximation_ranking(most_fail).outcome == "fails"
    with pytest.raises(ValueError, match="none of the columns"):
        approximation_ranking(pd.DataFrame({"target": ["q"], "d": [5], "family": ["soc"]}))


def test_expressivity_outcome():
    def table(relu_narrow, relu_wide, soc):
        return pd.DataFrame(
            {
                "target": ["t"] * 3,
                "d": [2] * 3,
                "model": ["relu-icnn", "relu-icnn", "soc-icnn"],
                "width": [4, 64, 4],
                "test_rel_l2": [relu_narrow, relu_wide, soc],
            }
        )

    assert expressivity_outcome(table(0.1, 0.01, 0.001)).outcome == "holds"
    assert expressivity_outcome(table(0.1, 0.01, 0.05)).outcome == "partial"
    assert expressivity_outcome(table(0.1, 0.2, 0.001)).outcome == "fails"


def test_value_equivalence_outcome():
    t = pd.DataFrame({"value": [10.0, -2.0], "rel_err": [1e-9, 2e-9], "gap": [1e-8, 0.0], "status": ["optimal"] * 2,
                      "duals_compared": [True, False], "nu_rel_err": [1e-7, 1.0], "p_rel_err": [2e-6, 1.0]})
    assert value_equivalence_outcome(t).outcome == "holds"  # the second row's duals are not compared
    assert value_equivalence_outcome(t.assign(gap=[1e-4, 0.0])).outcome == "fails"
    assert value_equivalence_outcome(t.assign(p_rel_err=[1e-4, 0.0])).outcome == "fails"  # a wrong dual
    assert value_equivalence_outcome(t.assign(duals_compared=False)).outcome == "fails"  # nothing compared


def test_energy_regret_outcomes_can_fail():
    import pandas as pd

    from socicnn.experiments.claims import energy_regret

    def table(soc):
        return pd.DataFrame({"seed": [0, 0, 0], "family": ["SOC", "A", "B"], "regret": [soc, 1.0, 2.0]})

    assert energy_regret(table(1.05), "SOC").outcome == "holds"
    assert energy_regret(table(1.5), "SOC").outcome == "partial"
    assert energy_regret(table(3.0), "SOC").outcome == "fails"
    assert energy_regret(table(1.0).iloc[1:], "SOC").outcome is None


def test_outcomes_of_the_stored_tables_of_c_to_f_can_fail():
    fo = pd.DataFrame({"max_rel_err_fd": [1e-9, 2e-9], "max_rel_err_solver": [1e-6, 1e-6]})
    assert first_order_outcome(fo).outcome == "holds"
    assert first_order_outcome(fo.assign(max_rel_err_fd=[1e-9, 1e-5])).outcome == "fails"
    lh = pd.DataFrame({"model": [0, 0, 1], "max_frob_rel_err": [1e-16, 1e-16, 2e-16], "order": 3.0})
    assert hessian_outcome(lh).outcome == "holds"
    assert hessian_outcome(lh.assign(max_frob_rel_err=[1e-16, 1e-16, 1e-8])).outcome == "fails"
    de = pd.DataFrame({"forward_vs_conic": [1e-9, 1e-8], "forward_vs_fd": [1e-8, 1e-7]})
    assert degenerate_outcome(de).outcome == "holds"
    assert degenerate_outcome(de.assign(forward_vs_fd=[1e-8, 1e-3])).outcome == "fails"
    wb = pd.DataFrame({"method": ["socp", "newton (face)"], "queries within 1e-7": [30, 30],
                       "converged": [29, 30], "max rel. gap": [0.0, 1e-12]})
    assert whitebox_outcome(wb).outcome == "holds"
    assert whitebox_outcome(wb.assign(converged=[30, 29])).outcome == "fails"
    assert whitebox_outcome(wb.assign(**{"max rel. gap": [0.0, 1e-4]})).outcome == "fails"


def test_doubling_outcome_measures_convergence_by_doubling():
    keys = dict(dim=[5, 5, 5], target=["a", "b", "c"], model=["SOC-ICNN"] * 3, steps=[2000] * 3)
    short = pd.DataFrame({"config": "long budget", **keys, "val_mse_mean": [1.0, 1.0, 1.0]})
    twice = pd.DataFrame({"config": "long budget (2x steps)", **keys, "val_mse_mean": [0.99, 0.97, 0.5]})
    assert doubling_outcome(short, twice).outcome == "partial"
    assert doubling_outcome(short, twice.assign(val_mse_mean=[0.99, 0.99, 1.2])).outcome == "holds"
    assert doubling_outcome(short, twice.assign(val_mse_mean=[0.5, 0.5, 0.99])).outcome == "fails"
    assert doubling_outcome(short, twice.assign(config="other (2x steps)")).outcome is None


def test_claims_table_reads_absent_and_partial_tables_without_judging_them(tmp_path):
    from socicnn.experiments import claims_table
    from socicnn.results import StoredTable

    for claim in claims_table.CLAIMS:  # no stored table at all: nothing judged, and the row says why
        evidence, note = claim.stored(lambda name: None)
        assert evidence.outcome is None and note, claim.claim

    meta = {"profile": "paper", "device": "cpu", "hardware": "cpu", "package_version": "0", "date": "today",
            "config": {"cases_done": [0], "cases_total": 3}}
    partial = StoredTable(pd.DataFrame({"regret": [1.0]}), meta, tmp_path / "downstream_decisions.csv")

    def never(table):
        raise AssertionError("a partial table must not be judged")

    evidence, note = claims_table._judged("downstream_decisions", never)(lambda name: partial)
    assert evidence == Evidence(None, "partial table: 1 of 3 cases")
    assert "1 of 3 cases" in note
    complete = StoredTable(partial.table, {**meta, "config": {}}, partial.path)
    evidence, _ = claims_table._judged("x", lambda t: Evidence("fails", str(len(t))))(lambda name: complete)
    assert evidence == Evidence("fails", "1")


def test_claims_table_names_missing_sizes():
    from socicnn.experiments import claims_table

    with pytest.raises(ValueError, match="steps"):
        claims_table.evidence_table(dict(inputs=5, dirs=5, queries=3), seed=0)
