"""Downstream decisions: ``x_i = argmin_{x in C} f(x, theta_i)`` for a batch of contexts.

:func:`decide` minimises a model of ``(x, context)`` (a :class:`~socicnn.model.ContextualModel`,
convex in ``x``) over a feasible set for every context of a batch:

- ``"socp"``: the exact lifting of the model plus the set's constraints, as **one** compiled
  CVXPY problem whose parameters (the blocks' data) change with the context; each instance is
  re-solved by the conic solver, its status checked, and its answer projected onto the set. Its
  ``gap_bound`` is the value at the projected point minus the solver's dual objective.
- ``"auto"``: the library's certified batched minimiser over a compact convex set,
  ``socicnn.inference.minimize``, on ``model.at(theta)`` (one model with per-row data); its
  ``gap_bound`` is a certified bound on ``value - min_C f(., theta_i)``.

There is no proximal term: ``f`` may be piecewise linear in ``x`` and the minimiser need not be
unique, so decisions are compared by value, not by ``x``.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass

import cvxpy as cp
import numpy as np
import torch

from . import inference
from ._checks import check_choice, check_model
from .inference.constraints import Constraint
from .lifting import BlockData
from .solvers import resolve_solver

__all__ = ["DECIDE_METHODS", "DecisionResult", "DecisionSOCP", "decide", "socp_result", "solve_problem", "violation"]

DECIDE_METHODS = ("auto", "socp")


@dataclass
class DecisionResult:
    """Decisions for ``N`` contexts.

    Attributes:
        x: ``(N, d)`` decisions, in the set (NaN rows where a solve failed).
        value: ``(N,)`` model values ``f(x_i, theta_i)``.
        gap_bound: ``(N,)`` bound on ``value - min_C f(., theta_i)`` (see the module docstring).
        converged: ``(N,)`` bool: the gap bound meets the tolerance, ``gap_bound <= tol *
            max(1, |value|)`` (for ``"socp"`` also a status ``"optimal"``, or ``"optimal_inaccurate"``,
            which Clarabel reports for some exponential-cone solves whose duality gap is small).
        time: ``(N,)`` wall seconds per instance (batch time / N for ``"auto"``).
        status: per instance (``"socp"``: the solver's status; ``"auto"``: converged or not).
        solver_time: ``(N,)`` the conic solver's own reported solve time (``"socp"``; NaN else).
        infeasibility: ``(N,)`` largest set violation of the solver's answer before projection
            (``"socp"``; 0 for ``"auto"``, whose iterates stay in the set).
        method: ``"socp"`` or ``"auto"``.
    """

    x: torch.Tensor
    value: torch.Tensor
    gap_bound: torch.Tensor
    converged: torch.Tensor
    time: torch.Tensor
    status: list[str]
    solver_time: torch.Tensor
    infeasibility: torch.Tensor
    method: str


def violation(constraint: Constraint, x: torch.Tensor) -> torch.Tensor:
    """Largest violation ``(N,)`` of the set by each row of ``x`` ``(N, d)``: from the set's linear
    rows when it has them, else from its CVXPY constraints evaluated at each row."""
    try:
        rows = constraint.rows(x.shape[-1], x.dtype, x.device)
    except NotImplementedError:
        var = cp.Variable(x.shape[-1])
        cons = constraint.cvxpy(var)
        out = []
        for xi in x.detach().cpu().numpy():
            var.value = xi
            out.append(max((float(np.max(c.violation(), initial=0.0)) for c in cons), default=0.0))
        return torch.as_tensor(out, dtype=x.dtype)
    r = x @ rows.C.T - rows.h
    r = torch.where(rows.equality, r.abs(), r.clamp(min=0.0))
    return r.amax(-1) if r.shape[-1] else x.new_zeros(x.shape[0])


def _project(constraint: Constraint, x: torch.Tensor) -> torch.Tensor:
    """The exact projection onto the set where it has one (else ``x`` itself: a CVXPY-callable set)."""
    try:
        return constraint.project(x)
    except NotImplementedError:
        return x


class DecisionSOCP:
    """``min_{x in C} model(x)`` as one parametrised conic problem (the exact lifting).

    Args:
        model: a model of ``x`` (e.g. ``contextual.at(theta)``, per-row data allowed).
        constraint: the feasible set (a :class:`~socicnn.inference.Constraint` with a CVXPY form).
        solver: ``"auto"`` (MOSEK if licensed, else Clarabel) or a CVXPY solver name.

    The model's weights are read once; its data (one row per context) are ``cp.Parameter`` objects.
    """

    def __init__(self, model, constraint: Constraint, solver: str = "auto") -> None:
        check_model(model)
        self.model = model
        self.solver = resolve_solver(solver)
        self.x = cp.Variable(model.in_dim, name="x")
        self.data = BlockData(model)
        lifts = [b.lift(self.x, prm) for b, prm in zip(model.blocks(), self.data.params, strict=True)]
        cons = [c for lift in lifts for c in lift.constraints]
        self.set_constraints = constraint.cvxpy(self.x)
        self.problem = cp.Problem(cp.Minimize(sum(lift.objective for lift in lifts)), cons + self.set_constraints)

    def solve(self, row: int | None, **solver_options) -> tuple[np.ndarray | None, float, float, str, float, float]:
        """One instance: ``(x, solver value, solver duality gap, status, wall time, solver time)``;
        ``x`` is ``None`` when the solver returned no point."""
        self.data.set(row)
        return solve_problem(self.problem, self.x, self.solver, **solver_options)


def solve_problem(
    problem: cp.Problem, x: cp.Variable, solver: str, **solver_options
) -> tuple[np.ndarray | None, float, float, str, float, float]:
    """Solve ``problem`` once with the parameters' current values: ``(x, solver value, solver
    duality gap, status, wall time, solver time)``; ``x`` (flattened) is ``None`` when the solver
    returned no point or a status other than optimal."""
    t0 = time.perf_counter()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            data, chain, inverse = problem.get_problem_data(solver)
            raw = chain.solve_via_data(problem, data, solver_opts=solver_options)
            inverse[-1].solver_options = solver_options
            problem.unpack_results(raw, chain, inverse)
        status = problem.status
    except cp.error.SolverError:
        raw, status = None, "solver_error"
    elapsed = time.perf_counter() - t0
    primal, dual = getattr(raw, "obj_val", None), getattr(raw, "obj_val_dual", None)
    gap = abs(float(primal) - float(dual)) if primal is not None and dual is not None else float("nan")
    xv = None if x.value is None or status not in (cp.OPTIMAL, cp.OPTIMAL_INACCURATE) else x.value
    value = float(problem.value) if xv is not None else float("nan")
    solver_time = float(getattr(raw, "solve_time", float("nan")) or float("nan"))
    return (None if xv is None else np.array(xv, dtype=float).reshape(-1)), value, gap, status, elapsed, solver_time


def _decide_socp(model, constraint: Constraint, tol: float, solver: str, **solver_options) -> DecisionResult:
    n = model.rows if model.rows is not None else 1
    socp = DecisionSOCP(model, constraint, solver)
    solves = [socp.solve(i if model.rows is not None else None, **solver_options) for i in range(n)]

    def values(x, ok):
        return model.select(torch.nonzero(ok)[:, 0])(x) if model.rows else model(x)

    return socp_result(solves, constraint, values, model.in_dim, model.dtype, tol)


def socp_result(solves: list, constraint: Constraint, values, d: int, dtype: torch.dtype, tol: float) -> DecisionResult:
    """The :class:`DecisionResult` of per-instance conic solves (:func:`solve_problem`'s tuples):
    each point projected onto the set, ``values(x, ok)`` the model's values at the projected points
    of the instances ``ok`` (a bool mask), gap bound = value minus the solver's dual objective."""
    n = len(solves)
    xs = np.full((n, d), np.nan)
    lower = np.full(n, np.nan)
    times, solver_times, statuses = np.zeros(n), np.full(n, np.nan), []
    for i, (x, value, gap, status, elapsed, st) in enumerate(solves):
        statuses.append(status)
        times[i], solver_times[i] = elapsed, st
        if x is not None:
            xs[i], lower[i] = x, value - gap
    raw = torch.as_tensor(xs, dtype=dtype)
    ok = torch.isfinite(raw).all(-1)
    infeas = torch.full((n,), float("nan"), dtype=dtype)
    x_out = raw.clone()
    if bool(ok.any()):
        infeas[ok] = violation(constraint, raw[ok]).to(dtype)
        x_out[ok] = _project(constraint, raw[ok])
    with torch.no_grad():
        value = torch.full((n,), float("nan"), dtype=dtype)
        if bool(ok.any()):
            value[ok] = torch.as_tensor(values(x_out[ok], ok), dtype=dtype)
    gap = value - torch.as_tensor(lower, dtype=dtype)
    solved = torch.tensor([s in (cp.OPTIMAL, cp.OPTIMAL_INACCURATE) for s in statuses])
    return DecisionResult(
        x=x_out,
        value=value,
        gap_bound=gap,
        converged=solved & (gap <= tol * value.abs().clamp(min=1.0)),
        time=torch.as_tensor(times),
        status=statuses,
        solver_time=torch.as_tensor(solver_times),
        infeasibility=infeas,
        method="socp",
    )


def _decide_auto(model, constraint: Constraint, tol: float, **options) -> DecisionResult:
    t0 = time.perf_counter()
    res = inference.minimize(model, constraint, tol=tol, **options)
    elapsed = time.perf_counter() - t0
    n = res.x.shape[0]
    conv = torch.as_tensor(res.converged)
    return DecisionResult(
        x=res.x,
        value=res.value,
        gap_bound=res.gap_bound,
        converged=conv,
        time=torch.full((n,), elapsed / max(n, 1), dtype=torch.float64),
        status=["converged" if bool(c) else "not_converged" for c in conv],
        solver_time=torch.full((n,), float("nan"), dtype=torch.float64),
        infeasibility=torch.zeros(n, dtype=res.x.dtype),
        method="auto",
    )


def decide(
    model, theta, constraint: Constraint, method: str = "auto", *, tol: float = 1e-6, solver: str = "auto", **options
) -> DecisionResult:
    """Decisions ``x_i = argmin_{x in C} model(x, theta_i)`` for contexts ``theta`` ``(N, p)``.

    Args:
        model: a :class:`~socicnn.model.ContextualModel` (convex in ``x`` for every context).
        theta: contexts ``(N, p)`` (or ``(p,)`` for one).
        constraint: the feasible set: ``Box``, ``Simplex``, ``Budget``,
            ``Budget(b, equality=True)``, or (``"socp"`` only) a callable
            returning CVXPY constraints.
        method: ``"auto"`` (certified batched minimiser) or ``"socp"`` (exact lifting).
        tol: relative gap bound at which a decision counts as converged (the ``"auto"`` method
            iterates until it reaches it).
        solver: conic solver of ``"socp"``.
        options: passed to the method (solver options for ``"socp"``).
    """
    check_choice("method", method, DECIDE_METHODS)
    if not hasattr(model, "at") or not hasattr(model, "context_dim"):
        raise TypeError(f"model must be a socicnn ContextualModel (with .at(theta)), got {type(model).__name__}")
    constraint = inference.constraints.as_constraint(constraint)
    if constraint is None:
        raise TypeError("decide needs a feasible set (a socicnn.inference Constraint or a CVXPY callable), got None")
    constraint.check(model.in_dim)
    c2, _ = model.check_context(theta, "theta")
    with torch.no_grad():
        at = model.at(c2)
    if method == "socp":
        return _decide_socp(at, constraint, tol, solver, **options)
    return _decide_auto(at, constraint, tol, **options)
