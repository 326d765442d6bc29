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
from .._checks import check_model
from ..solvers import resolve_solver
from .constraints import Constraint

__all__ = ["InfeasibleConstraintError", "ProxSOCP", "SOCPSolution"]


class InfeasibleConstraintError(lifting.LiftingError, ValueError):
    """The constraint set is empty: the solver proved the prox problem infeasible."""


class SolveStatusError(lifting.LiftingError):
    """The solver returned a status other than optimal for one query (``status`` says which)."""

    def __init__(self, message: str, status: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class SOCPSolution:
    """One solve: ``x`` ``(d,)``, optimal value, the solver's duality gap, status, wall time of
    the solve call (CVXPY's data update included) and the solver's own reported solve time."""

    x: np.ndarray
    value: float
    gap: float
    status: str
    solve_time: float
    solver_time: float = float("nan")


class ProxSOCP:
    """``min f(x) + (beta/2)||x - y||^2`` [``x in C``] as a parametrised SOCP.

    Args:
        model: a socicnn model whose blocks have a conic lifting (with per-row data, pass the
            row of each query to :meth:`solve`).
        beta: proximal weight ``> 0``.
        constraint: ``None`` or a :class:`~socicnn.inference.constraints.Constraint`.
        solver: ``"auto"`` or a CVXPY solver name (Clarabel by default).
    """

    def __init__(self, model, beta: float, constraint: Constraint | None = None, solver: str = "auto") -> None:
        check_model(model)
        self.solver = resolve_solver(solver)
        d = model.in_dim
        self.x = cp.Variable(d, name="x")
        self.y = cp.Parameter(d, name="y")
        self.model = model
        expr, cons, (self.data, _) = lifting._epigraph(model, self.x, 0 if model.rows is not None else None)
        self.set_constraints = [] if constraint is None else constraint.cvxpy(self.x)
        self.problem = cp.Problem(
            cp.Minimize(expr + 0.5 * beta * cp.sum_squares(self.x - self.y)), cons + self.set_constraints
        )

    def violation(self, x: np.ndarray) -> float:
        """Largest violation of the constraint set at ``x`` ``(d,)`` (0 when feasible)."""
        keep = self.x.value
        self.x.value = np.asarray(x, dtype=float)
        try:
            return max((float(np.max(c.violation(), initial=0.0)) for c in self.set_constraints), default=0.0)
        finally:
            self.x.value = keep

    def solve(
        self, y: np.ndarray, *, row: int | None = None, accept_inaccurate: bool = False, **solver_options
    ) -> SOCPSolution:
        """Solve for one query ``y`` ``(d,)`` (with row ``row`` of per-row data).

        Raises :class:`InfeasibleConstraintError` when the constraint set is empty, and a
        ``LiftingError`` (with the ``status``) unless the status is ``"optimal"`` (or
        ``"optimal_inaccurate"`` with ``accept_inaccurate=True``).
        """
        self.data.set(row)
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
        status = self.problem.status
        if status in (cp.INFEASIBLE, cp.INFEASIBLE_INACCURATE):
            raise InfeasibleConstraintError(
                f"{self.solver} proved the prox problem infeasible (status {status!r}): the constraint set is empty"
            )
        if status not in accepted:
            raise SolveStatusError(f"{self.solver} returned status {status!r} for the prox SOCP", status)
        value = float(self.problem.value)
        return SOCPSolution(
            x=np.asarray(self.x.value, dtype=float),
            value=value,
            gap=_solver_gap(raw),
            status=self.problem.status,
            solve_time=elapsed,
            solver_time=float(getattr(raw, "solve_time", float("nan"))),
        )


def _solver_gap(raw) -> float:
    """``|primal - dual|`` objective of the solver's raw output (NaN if the solver reports no dual objective)."""
    primal, dual = getattr(raw, "obj_val", None), getattr(raw, "obj_val_dual", None)
    if primal is None or dual is None:
        return float("nan")
    return abs(float(primal) - float(dual))
