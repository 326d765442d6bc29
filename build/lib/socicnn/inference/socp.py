"""The exact prox problem as one SOCP, compiled once and re-solved for every query.

``min_{x, lifting vars} epigraph(x) + (beta/2)||x - y||^2`` [``x in C``], with ``y`` a
``cp.Parameter`` so CVXPY canonicalises the problem once (DPP) and each query only re-runs the
conic solver. The certificate of each solve is the solver's duality gap (primal minus dual
objective, as Clarabel reports them).
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass

import cvxpy as cp
import numpy as np

from .. import lifting
from ..solvers import resolve_solver
from .constraints import Constraint

__all__ = ["ProxSOCP", "SOCPSolution"]


@dataclass
class SOCPSolution:
    """One solve: ``x`` ``(d,)``, optimal value, the solver's duality gap, status and wall time."""

    x: np.ndarray
    value: float
    gap: float
    status: str
    solve_time: float


class ProxSOCP:
    """``min f(x) + (beta/2)||x - y||^2`` [``x in C``] as a parametrised SOCP.

    Args:
        model: SOC-ICNN / ReLU-ICNN with a ReLU backbone.
        beta: proximal weight ``> 0``.
        constraint: ``None`` or a :class:`~socicnn.inference.constraints.Constraint`.
        solver: ``"auto"`` or a CVXPY solver name (Clarabel by default).
    """

    def __init__(self, model, beta: float, constraint: Constraint | None = None, solver: str = "auto") -> None:
        self.solver = resolve_solver(solver)
        d = model.in_dim
        self.x = cp.Variable(d, name="x")
        self.y = cp.Parameter(d, name="y")
        expr, cons = lifting.epigraph(model, self.x)
        if constraint is not None:
            cons = cons + constraint.cvxpy(self.x)
        self.problem = cp.Problem(cp.Minimize(expr + 0.5 * beta * cp.sum_squares(self.x - self.y)), cons)

    def solve(self, y: np.ndarray, *, accept_inaccurate: bool = False, **solver_options) -> SOCPSolution:
        """Solve for one query ``y`` ``(d,)``.

        Raises ``LiftingError`` unless the status is ``"optimal"`` (or ``"optimal_inaccurate"``
        with ``accept_inaccurate=True``; the status is reported either way).
        """
        self.y.value = np.asarray(y, dtype=float)
        t0 = time.perf_counter()
        try:
            with warnings.catch_warnings():  # the status below says what the warning would
                warnings.simplefilter("ignore", UserWarning)
                # problem.solve() in its parts, to keep the solver's raw output (its dual objective).
                data, chain, inverse = self.problem.get_problem_data(self.solver)
                raw = chain.solve_via_data(self.problem, data, solver_opts=solver_options)
                inverse[-1].solver_options = solver_options
                self.problem.unpack_results(raw, chain, inverse)
        except cp.error.SolverError as exc:
            raise lifting.LiftingError(f"{self.solver} failed on the prox SOCP: {exc}") from exc
        elapsed = time.perf_counter() - t0
        accepted = {cp.OPTIMAL} | ({cp.OPTIMAL_INACCURATE} if accept_inaccurate else set())
        if self.problem.status not in accepted:
            raise lifting.LiftingError(
                f"{self.solver} returned status {self.problem.status!r} for the prox SOCP "
                "(an infeasible constraint set gives 'infeasible')"
            )
        value = float(self.problem.value)
        return SOCPSolution(
            x=np.asarray(self.x.value, dtype=float),
            value=value,
            gap=_solver_gap(raw),
            status=self.problem.status,
            solve_time=elapsed,
        )


def _solver_gap(raw) -> float:
    """``|primal - dual|`` objective of the solver's raw output (NaN if the solver reports no dual objective)."""
    primal, dual = getattr(raw, "obj_val", None), getattr(raw, "obj_val_dual", None)
    if primal is None or dual is None:
        return float("nan")
    return abs(float(primal) - float(dual))
