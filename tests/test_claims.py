"""The verdict rule of the claims chapter and the readers of stored tables it relies on."""

from __future__ import annotations

import pandas as pd
import pytest

from socicnn.experiments.claims import (
    NONE,
    Evidence,
    approximation_ranking,
    expressivity_outcome,
    value_equivalence_outcome,
    verdict,
)

H, P, F = Evidence("holds", ""), Evidence("partial", ""), Evidence("fails", "")


def test_verdict_rule():
    assert verdict(NONE, NONE, needs_paper_table=False) == "not yet in the book"
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
    t = pd.DataFrame({"value": [10.0, -2.0], "rel_err": [1e-9, 2e-9], "gap": [1e-8, 0.0], "status": ["optimal"] * 2})
    assert value_equivalence_outcome(t).outcome == "holds"
    assert value_equivalence_outcome(t.assign(gap=[1e-4, 0.0])).outcome == "fails"


def test_energy_regret_outcomes_can_fail():
    import pandas as pd

    from socicnn.experiments.claims import energy_regret

    def table(soc):
        return pd.DataFrame({"seed": [0, 0, 0], "family": ["SOC", "A", "B"], "regret": [soc, 1.0, 2.0]})

    assert energy_regret(table(1.05), "SOC").outcome == "holds"
    assert energy_regret(table(1.5), "SOC").outcome == "partial"
    assert energy_regret(table(3.0), "SOC").outcome == "fails"
    assert energy_regret(table(1.0).iloc[1:], "SOC").outcome is None
