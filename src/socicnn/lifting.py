"""Exact lifting of a model to the conic program whose optimal value it is.

A ReLU-ICNN becomes an LP and an SOC-ICNN an SOCP, assembled block by block (each block says
its variables, cones and objective term). The input ``x`` and every block datum (offsets and
scalings, e.g. a context's) are CVXPY parameters, so a :class:`LiftedProblem` is compiled once
and re-solved for many inputs and contexts. Solver duals come back in the model's own
convention (``nu >= 0``, ``p = alpha q``, ``r``), so they can be compared with the closed-form
multipliers of :mod:`socicnn.readout`.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass

import cvxpy as cp
import numpy as np
import torch

from ._checks import LIFTING_SCALE_LIMIT, check_finite, check_magnitude, check_model
from .blocks import BlockLift, MultiplierViews, to_numpy
from .solvers import SolverUnavailableError, resolve_solver

__all__ = [
    "BlockData",
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
class LiftingSolution(MultiplierViews):
    """Result of solving the lifted problem at one input.

    Attributes:
        value: optimal value (equals ``model(x0)`` up to solver tolerance).
        status: CVXPY status string.
        solver: name of the solver used.
        multipliers: the solver's duals per block, in the model's convention (aligned with
            ``model.blocks()``); ``names`` the blocks' multiplier names. The views ``nu`` (ReLU
            covering constraints, one ``(m_l,)`` array per layer), ``p`` (quadratic blocks,
            ``= alpha q``) and ``r`` (norm blocks) are derived from them.
        dual_value: the dual objective of the lifted program evaluated at the solver's duals.
        gap: ``value - dual_value``, the duality gap of the returned pair.
        primal_residual: largest constraint violation of the returned primal point.
        dual_residual: largest dual-feasibility violation of the returned duals.
        solve_time: wall time of the solve call in seconds (compilation excluded after the first).
    """

    value: float
    status: str
    solver: str
    multipliers: list
    names: tuple[str, ...]
    dual_value: float
    gap: float
    primal_residual: float
    dual_residual: float
    solve_time: float



class BlockData:
    """The blocks' data as CVXPY parameters (one per datum), set from a model row by row."""

    def __init__(self, model) -> None:
        check_model(model)
        self.model = model
        self.params: list[dict[str, cp.Parameter]] = []
        for block in model.blocks():
            shapes = block.data_shapes
            params = {}
            for name, shape in shapes.items():
                if block.data(name) is None:
                    continue
                nonneg = any(name == p or name.startswith(p + ".") for p in block.nonnegative_data)
                params[name] = cp.Parameter(shape, name=f"{name}", nonneg=nonneg)
            self.params.append(params)

    def set(self, row: int | None) -> None:
        """Set every parameter to the model's data (row ``row`` of per-row data)."""
        rows = self.model.rows
        if rows is not None and row is None:
            raise ValueError(f"the model carries per-row data for {rows} rows: pass row=i to choose one")
        if row is not None and not (rows is not None and 0 <= row < rows):
            raise ValueError(f"row {row} is out of range for a model with {rows} rows of data")
        for block, params in zip(self.model.blocks(), self.params, strict=True):
            shapes = block.data_shapes
            for name, param in params.items():
                value = block.data(name)
                if value.ndim > len(shapes[name]):
                    value = value[row]
                arr = to_numpy(value)
                if param.is_nonneg():
                    arr = np.maximum(arr, 0.0)  # -0.0 and rounding: abs() already made them >= 0
                param.value = arr


def _detached_copy(model):
    """A deep copy of ``model`` whose bound data are detached (per-row data computed from a
    context under autograd are non-leaf tensors, which ``copy.deepcopy`` refuses)."""
    memo = {id(t): t.detach().clone() for b in model.blocks() for t in (b._bound or {}).values()}
    return copy.deepcopy(model, memo)


def _lift_blocks(model, x, data: BlockData) -> list[BlockLift]:
    return [block.lift(x, params) for block, params in zip(model.blocks(), data.params, strict=True)]


def epigraph(model, x, row: int | None = None) -> tuple[cp.Expression, list[cp.Constraint]]:
    """The model as ``(expr, constraints)`` over a CVXPY expression ``x`` of shape ``(d,)``.

    ``min expr`` subject to ``constraints`` (and anything else on ``x``) equals ``min model(x)``:
    embed the model in any convex CVXPY problem, e.g. ``cp.Minimize(expr + beta/2 * sum_squares(x - y))``.
    The blocks' data enter as parameters set to the model's (row ``row`` of per-row data); use
    :class:`BlockData` directly to change them between solves.
    """
    expr, constraints, _ = _epigraph(model, x, row)
    return expr, constraints


def _epigraph(model, x, row: int | None):
    check_model(model)
    if getattr(x, "shape", None) != (model.in_dim,):
        raise ValueError(f"x must be a CVXPY expression of shape ({model.in_dim},), got {getattr(x, 'shape', None)}")
    data = BlockData(model)
    data.set(row)
    lifts = _lift_blocks(model, x, data)
    expr = sum(lift.objective for lift in lifts)
    return expr, [con for lift in lifts for con in lift.constraints], (data, lifts)


class SolverBoundProblem(cp.Problem):
    """A ``cp.Problem`` whose ``solve()`` uses the library's resolved solver unless told otherwise
    (CVXPY would otherwise pick its own default, e.g. an installed but unlicensed MOSEK)."""

    def __init__(self, objective, constraints, solver: str) -> None:
        super().__init__(objective, constraints)
        self.default_solver = solver

    def solve(self, *args, **kwargs):
        if not args and "method" not in kwargs:
            kwargs.setdefault("solver", self.default_solver)
        return super().solve(*args, **kwargs)


class LiftedProblem:
    """The lifted LP/SOCP of a model with ``x`` as a parameter, compiled once, solved often.

    Args:
        model: a socicnn model whose blocks have a conic lifting (every block but ones that say
            otherwise); a model with per-row data (e.g. ``contextual.at(thetas)``) is solved one
            row at a time, ``solve(x0, row=i)``, by the same compiled problem.
        solver: ``"auto"`` (MOSEK if licensed, else Clarabel) or a solver name.

    The weights are read when the problem is built: rebuild after training the model. The data
    (offsets, scalings) are parameters, re-read at every solve.
    """

    def __init__(self, model, solver: str = "auto") -> None:
        check_model(model)
        self.solver = resolve_solver(solver)
        self.model = model
        self.x = cp.Parameter(model.in_dim, name="x")
        # The blocks see x through a variable pinned to the parameter, so data multiplying x
        # (a context's linear term) stay DPP (parameter times variable, not parameter times parameter).
        x_var = cp.Variable(model.in_dim, name="x_pinned")
        self.data = BlockData(model)
        self._lifts = _lift_blocks(model, x_var, self.data)
        # Dual checks run in float64 on the CPU, on a copy: never mutate the caller's model.
        self._model64 = _detached_copy(model).to("cpu", torch.float64)
        expr = sum(lift.objective for lift in self._lifts)
        constraints = [x_var == self.x] + [con for lift in self._lifts for con in lift.constraints]
        self.problem = SolverBoundProblem(cp.Minimize(expr), constraints, self.solver)
        self._last_options: dict | None = None

    def solve(
        self, x0, *, row: int | None = None, accept_inaccurate: bool = False, **solver_options
    ) -> LiftingSolution:
        """Solve at one input ``x0`` of shape ``(d,)`` (tensor or array); ``row`` picks the row of
        per-row data (required when the model has some).

        Raises:
            ValueError: ``x0`` of the wrong shape or with non-finite entries; a bad ``row``;
                ``x0`` or a block's value ``f_b(x0)`` beyond ``LIFTING_SCALE_LIMIT`` (``1e4``) in
                absolute value, where the conic solvers lose accuracy.
            TypeError: a ``solver`` option (the solver is chosen when the problem is built).
            LiftingError: the solver failed or returned a non-optimal status.
        """
        if "solver" in solver_options:
            raise TypeError(
                f"the solver is chosen when the problem is built (this one uses {self.solver}): "
                f"LiftedProblem(model, solver={solver_options['solver']!r}), not solve(..., solver=...)"
            )
        x_np = np.asarray(x0.detach().cpu() if isinstance(x0, torch.Tensor) else x0, dtype=float)
        if x_np.shape != (self.model.in_dim,):
            raise ValueError(f"x0 must have shape ({self.model.in_dim},), got {x_np.shape}")
        check_finite("x0", torch.from_numpy(x_np))
        self.data.set(row)
        model64 = self._model64 if row is None else self._model64.select(torch.tensor([row]))
        remedy = (
            ": the conic solvers lose accuracy there (wrong values, or 'infeasible' for a feasible "
            "problem); rescale x0 (and the model) so that x0 and the model's terms stay below it"
        )
        check_magnitude("x0", x_np, LIFTING_SCALE_LIMIT, remedy)
        with torch.no_grad():
            terms = [float(b(torch.from_numpy(x_np)[None])[0]) for b in model64.blocks()]
        check_magnitude("a block's value f_b(x0)", terms, LIFTING_SCALE_LIMIT, remedy)
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
        dual_value, dual_residual = _dual_check(model64, x_np, multipliers)
        value = float(self.problem.value)
        primal_residual = max(float(np.max(c.violation(), initial=0.0)) for c in self.problem.constraints)
        return LiftingSolution(
            value=value,
            status=status,
            solver=self.solver,
            multipliers=multipliers,
            names=tuple(b.multiplier_name for b in self.model.blocks()),
            dual_value=dual_value,
            gap=value - dual_value,
            primal_residual=primal_residual,
            dual_residual=dual_residual,
            solve_time=elapsed,
        )


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


def to_cvxpy(model, solver: str = "auto") -> tuple[cp.Problem, cp.Parameter]:
    """The lifted problem and its input parameter: set ``x.value`` and call ``prob.solve()``,
    which uses ``solver`` (``"auto"``: MOSEK if licensed, else Clarabel) unless given another.
    The blocks' data are parameters set to the model's (shared data only)."""
    lp = LiftedProblem(model, solver=solver)
    lp.data.set(None)
    return lp.problem, lp.x


def solve(model, x0, solver: str = "auto", *, row: int | None = None, **solver_options) -> LiftingSolution:
    """Solve the lifted problem of ``model`` at one input ``x0`` ``(d,)``; see :class:`LiftedProblem`."""
    return LiftedProblem(model, solver).solve(x0, row=row, **solver_options)
