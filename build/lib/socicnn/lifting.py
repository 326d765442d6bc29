"""Exact lifting of a model to the conic program whose optimal value it is (MATH.md §2).

A ReLU-ICNN becomes an LP and an SOC-ICNN an SOCP, assembled block by block. The input ``x``
is a ``cp.Parameter``, so a :class:`LiftedProblem` is compiled once and re-solved for many
inputs. Solver duals come back in the model's own convention (``nu >= 0``, ``p = alpha q``,
``r``), so they can be compared with the closed-form multipliers of :mod:`socicnn.readout`.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass

import cvxpy as cp
import numpy as np
import torch

from ._checks import check_finite
from .blocks import BlockLift
from .solvers import SolverUnavailableError, resolve_solver

__all__ = [
    "LiftedProblem",
    "LiftingError",
    "LiftingSolution",
    "SolverUnavailableError",
    "epigraph",
    "solve",
    "to_cvxpy",
]


class LiftingError(RuntimeError):
    """The conic solver did not return an optimal solution."""


@dataclass
class LiftingSolution:
    """Result of solving the lifted problem at one input.

    Attributes:
        value: optimal value (equals ``model(x0)`` up to solver tolerance).
        status: CVXPY status string.
        solver: name of the solver used.
        nu: solver duals of the ReLU covering constraints, one ``(m_l,)`` array per layer.
        p: solver duals of the quadratic blocks, one ``(k_h,)`` array each (``= alpha q``).
        r: solver duals of the norm blocks, one ``(n_g,)`` array each.
        dual_value: the dual objective (MATH.md §2) evaluated at the solver's duals.
        gap: ``value - dual_value``, the duality gap of the returned pair.
        primal_residual: largest constraint violation of the returned primal point.
        dual_residual: largest dual-feasibility violation of the returned duals.
        solve_time: wall time of the solve call in seconds (compilation excluded after the first).
    """

    value: float
    status: str
    solver: str
    nu: list[np.ndarray]
    p: list[np.ndarray]
    r: list[np.ndarray]
    dual_value: float
    gap: float
    primal_residual: float
    dual_residual: float
    solve_time: float


def _lift_blocks(model, x) -> list[BlockLift]:
    if not hasattr(model, "blocks"):
        raise TypeError(f"expected a socicnn model, got {type(model).__name__}")
    return [block.lift(x) for block in model.blocks()]


def epigraph(model, x) -> tuple[cp.Expression, list[cp.Constraint]]:
    """The model as ``(expr, constraints)`` over a CVXPY expression ``x`` of shape ``(d,)``.

    ``min expr`` subject to ``constraints`` (and anything else on ``x``) equals ``min model(x)``:
    embed the model in any convex CVXPY problem, e.g. ``cp.Minimize(expr + beta/2 * sum_squares(x - y))``.
    """
    if getattr(x, "shape", None) != (model.in_dim,):
        raise ValueError(f"x must be a CVXPY expression of shape ({model.in_dim},), got {getattr(x, 'shape', None)}")
    lifts = _lift_blocks(model, x)
    expr = sum(lift.objective for lift in lifts)
    return expr, [con for lift in lifts for con in lift.constraints]


class LiftedProblem:
    """The lifted LP/SOCP of a model with ``x`` as a parameter, compiled once, solved often.

    Args:
        model: an SOC-ICNN / ReLU-ICNN (ReLU backbone).
        solver: ``"auto"`` (MOSEK if licensed, else Clarabel) or a solver name.

    The weights are read when the problem is built: rebuild after training the model.
    """

    def __init__(self, model, solver: str = "auto") -> None:
        self.solver = resolve_solver(solver)
        self.model = model
        self.x = cp.Parameter(model.in_dim, name="x")
        self._lifts = _lift_blocks(model, self.x)
        # Dual checks run in float64 on the CPU, on a copy: never mutate the caller's model.
        self._model64 = copy.deepcopy(model).to("cpu", torch.float64)
        expr = sum(lift.objective for lift in self._lifts)
        constraints = [con for lift in self._lifts for con in lift.constraints]
        self.problem = cp.Problem(cp.Minimize(expr), constraints)
        self._last_options: dict | None = None

    def solve(self, x0, *, accept_inaccurate: bool = False, **solver_options) -> LiftingSolution:
        """Solve at one input ``x0`` of shape ``(d,)`` (tensor or array).

        Raises:
            ValueError: ``x0`` of the wrong shape or with non-finite entries.
            LiftingError: the solver failed or returned a non-optimal status.
        """
        x_np = np.asarray(x0.detach().cpu() if isinstance(x0, torch.Tensor) else x0, dtype=float)
        if x_np.shape != (self.model.in_dim,):
            raise ValueError(f"x0 must have shape ({self.model.in_dim},), got {x_np.shape}")
        check_finite("x0", torch.from_numpy(x_np))
        self.x.value = x_np
        # A warm start reuses the cached solver with its old settings (CVXPY + Clarabel), so an
        # option from an earlier call (e.g. max_iter) would leak into this one: re-create the
        # solver whenever the options change.
        warm = bool(solver_options.pop("warm_start", True)) and solver_options == self._last_options
        self._last_options = dict(solver_options)
        t0 = time.perf_counter()
        try:
            self.problem.solve(solver=self.solver, warm_start=warm, **solver_options)
        except cp.error.SolverError as exc:
            raise LiftingError(f"{self.solver} failed on the lifted problem: {exc}") from exc
        elapsed = time.perf_counter() - t0
        status = self.problem.status
        accepted = {cp.OPTIMAL} | ({cp.OPTIMAL_INACCURATE} if accept_inaccurate else set())
        if status not in accepted:
            raise LiftingError(
                f"{self.solver} returned status {status!r} for the lifted problem (expected "
                "'optimal'); try another solver or accept_inaccurate=True"
            )
        multipliers = [lift.read_multipliers() for lift in self._lifts]
        nu, p, r = split_multipliers(self.model, multipliers)
        dual_value, dual_residual = _dual_check(self._model64, x_np, multipliers)
        value = float(self.problem.value)
        primal_residual = max(float(np.max(c.violation(), initial=0.0)) for c in self.problem.constraints)
        return LiftingSolution(
            value=value,
            status=status,
            solver=self.solver,
            nu=nu,
            p=p,
            r=r,
            dual_value=dual_value,
            gap=value - dual_value,
            primal_residual=primal_residual,
            dual_residual=dual_residual,
            solve_time=elapsed,
        )


def split_multipliers(model, multipliers: list) -> tuple[list, list, list]:
    """Sort per-block multipliers into ``(nu, p, r)`` by each block's ``kind``."""
    out: dict[str, list] = {"nu": [], "p": [], "r": []}
    for block, mult in zip(model.blocks(), multipliers, strict=True):
        if block.kind == "nu":
            out["nu"] = list(mult)
        else:
            out[block.kind].append(mult)
    return out["nu"], out["p"], out["r"]


@torch.no_grad()
def _dual_check(model, x_np: np.ndarray, multipliers: list) -> tuple[float, float]:
    """Dual objective and dual-feasibility violation of solver multipliers, in float64."""
    kw = {"dtype": torch.float64, "device": "cpu"}
    x = torch.as_tensor(x_np, **kw)[None]

    def batch(m):
        if isinstance(m, list):
            return [torch.as_tensor(a, **kw)[None] for a in m]
        return torch.as_tensor(m, **kw)[None]

    value, residual = 0.0, 0.0
    for block, mult in zip(model.blocks(), multipliers, strict=True):
        value += float(block.dual_value(x, batch(mult))[0])
        residual = max(residual, float(block.dual_residual(batch(mult))[0]))
    return value, residual


def to_cvxpy(model) -> tuple[cp.Problem, cp.Parameter]:
    """The lifted problem and its input parameter: set ``x.value`` and call ``prob.solve()``."""
    lp = LiftedProblem(model, solver="auto")
    return lp.problem, lp.x


def solve(model, x0, solver: str = "auto", **solver_options) -> LiftingSolution:
    """Solve the lifted problem of ``model`` at one input ``x0`` ``(d,)``; see :class:`LiftedProblem`."""
    return LiftedProblem(model, solver).solve(x0, **solver_options)
