"""Feasible sets of the downstream-decision tasks that :mod:`socicnn.inference.constraints` does
not hold yet: the budget set with an *equality* ``{0 <= x <= 1, sum x = budget}``.

(``socicnn.inference.Budget`` is the capped set with ``sum x <= budget``.)
"""

from __future__ import annotations

import cvxpy as cp
import torch

from .inference.constraints import Budget, LinearRows
from .inference.projections import project_budget

__all__ = ["BudgetEquality"]


class BudgetEquality(Budget):
    """``{0 <= x <= 1, sum x = budget}`` (``0 <= budget <= d``).

    Projection: ``x = clip(v - t, 0, 1)`` with ``sum x = budget``. When ``sum clip(v, 0, 1) >=
    budget`` the shift is ``t >= 0`` and this is the projection onto the capped set ``sum x <=
    budget``; otherwise ``t < 0``, and ``y = 1 - x`` is the projection of ``1 - v`` onto the capped
    set with budget ``d - budget`` (the map ``x -> 1 - x`` swaps the two cases).
    """

    def check(self, d: int) -> None:
        if self.budget > d:
            raise ValueError(f"BudgetEquality({self.budget}) is empty in dimension {d}: sum x <= d on [0, 1]^d")

    def project(self, v: torch.Tensor) -> torch.Tensor:
        d = v.shape[-1]
        self.check(d)
        below = v.clamp(0.0, 1.0).sum(-1, keepdim=True) < self.budget
        return torch.where(below, 1.0 - project_budget(1.0 - v, d - self.budget), project_budget(v, self.budget))

    def cvxpy(self, x):
        return [x >= 0, x <= 1, cp.sum(x) == self.budget]

    def rows(self, d, dtype, device):
        out = super().rows(d, dtype, device)
        equality = out.equality.clone()
        equality[0] = True
        return LinearRows(out.C, out.h, equality)
