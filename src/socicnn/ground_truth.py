"""Ground truth for downstream experiments: exact optima of convex energies and certified gaps.

- :func:`solve_conic` solves a CVXPY problem (an SOCP: a true energy written with its cones) with
  a conic solver, Clarabel by default, and refuses any status but ``optimal``.
- :func:`accelerated_box` minimises a smooth convex energy over a box ``[lo, hi]^d``, batched, by
  accelerated projected gradient (FISTA with adaptive restart), a convergent first-order method,
  and certifies each row by the Frank-Wolfe gap.
- :func:`box_gap_bound` is that certificate: for a convex ``f``, a subgradient ``g`` at ``x`` in
  the box gives ``f(x) - min_box f <= g^T x - min_{s in box} g^T s`` (no smoothness needed).
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import cvxpy as cp
import torch

from .inference.constraints import Box
from .solvers import resolve_solver

__all__ = ["ConicSolution", "GroundTruthError", "BoxSolution", "accelerated_box", "box_gap_bound", "solve_conic"]


class GroundTruthError(RuntimeError):
    """The conic solver did not certify an optimum (its status is in the message)."""


@dataclass
class ConicSolution:
    """``value`` (the optimal value), ``status``, the solver's own ``solve_time`` and the wall
    ``time`` of the call (compilation included)."""

    value: float
    status: str
    solve_time: float
    time: float


def solve_conic(
    problem: cp.Problem, solver: str = "clarabel", accept_inaccurate: bool = False, **options
) -> ConicSolution:
    """Solve ``problem`` with ``solver``; raise :class:`GroundTruthError` unless it is optimal
    (or ``optimal_inaccurate`` with ``accept_inaccurate``, for a caller that certifies the answer
    by other means)."""
    name = resolve_solver(solver)
    t0 = time.perf_counter()
    try:
        with warnings.catch_warnings():  # the status is checked below
            warnings.simplefilter("ignore", UserWarning)
            problem.solve(solver=name, **options)
    except cp.error.SolverError as exc:
        raise GroundTruthError(f"{name} failed: {exc}") from exc
    status = problem.status
    if status != cp.OPTIMAL and not (accept_inaccurate and status == cp.OPTIMAL_INACCURATE):
        raise GroundTruthError(f"{name} returned status {status!r}, not 'optimal'")
    stats = problem.solver_stats
    solve_time = float(stats.solve_time) if stats is not None and stats.solve_time is not None else float("nan")
    return ConicSolution(float(problem.value), status, solve_time, time.perf_counter() - t0)


def box_gap_bound(x: torch.Tensor, g: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
    """``(N,)`` ``g^T x - min_{s in [lo, hi]^d} g^T s >= f(x) - min_box f`` for convex ``f`` with
    ``g`` a subgradient at ``x`` (rows of ``(N, d)``; the box's support function)."""
    return ((g * x).sum(-1) - Box(lo, hi).support(g)).clamp(min=0.0)


@dataclass
class BoxSolution:
    """``x`` ``(N, d)``, ``value`` ``(N,)``, certified ``gap_bound`` ``(N,)``, ``iterations``
    and wall ``time``."""

    x: torch.Tensor
    value: torch.Tensor
    gap_bound: torch.Tensor
    iterations: int
    time: float


def accelerated_box(
    f: Callable[[torch.Tensor], torch.Tensor],
    x0: torch.Tensor,
    lipschitz: float,
    lo: float = 0.0,
    hi: float = 1.0,
    *,
    tol: float = 1e-8,
    max_iter: int = 20000,
    check_every: int = 50,
) -> BoxSolution:
    """Minimise the smooth convex ``f`` (rows ``(N, d) -> (N,)``, gradient ``lipschitz``-Lipschitz)
    over ``[lo, hi]^d`` by FISTA with gradient-based restart; stop when every row's Frank-Wolfe gap
    is ``<= tol`` (checked every ``check_every`` steps) or after ``max_iter`` steps."""
    t0 = time.perf_counter()

    def value_grad(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = z.detach().requires_grad_(True)
        v = f(z)
        (g,) = torch.autograd.grad(v.sum(), z)
        return v.detach(), g

    x = x0.clamp(lo, hi).clone()
    y, t = x.clone(), x.new_ones(x.shape[0], 1)
    step = 1.0 / lipschitz
    it = 0
    for it in range(1, max_iter + 1):
        _, gy = value_grad(y)
        x_new = (y - step * gy).clamp(lo, hi)
        restart = ((gy * (x_new - x)).sum(-1) > 0)[:, None]  # O'Donoghue-Candes gradient restart
        t_new = 0.5 * (1 + (1 + 4 * t * t).sqrt())
        y = torch.where(restart, x_new, x_new + ((t - 1) / t_new) * (x_new - x))
        x, t = x_new, torch.where(restart, 1.0, t_new)
        if it % check_every == 0:
            _, gx = value_grad(x)
            if float(box_gap_bound(x, gx, lo, hi).max()) <= tol:
                break
    value, gx = value_grad(x)
    return BoxSolution(x, value, box_gap_bound(x, gx, lo, hi), it, time.perf_counter() - t0)
