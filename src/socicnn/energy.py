"""Learned energies on a box: fit a contextual model to labelled candidates, minimise it exactly
by its conic lifting, and certify any point's gap.

- :func:`fit_energy`: train a :class:`~socicnn.model.ContextualModel` ``E(x; c)`` on candidates
  ``(x_i, c_i)`` labelled by a true energy, by MSE on standardised labels (a positive affine
  map of the energy, which leaves every minimiser unchanged), with :func:`socicnn.train.fit`.
- :class:`ExactBoxSolve`: ``min_{lo <= x <= hi} f(x)`` for a model with per-row data (one context
  per row) as one compiled conic program (CVXPY, data as parameters), solved row by row with the
  status checked.
- :func:`box_gap_bounds`: certified bounds on ``f(x) - min_box f`` at feasible points, from a
  readout subgradient (a Frank-Wolfe bound) and from dual multipliers (an affine minorant).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import cvxpy as cp
import numpy as np
import torch
from torch import nn

from . import lifting, readout
from .ground_truth import box_gap_bound
from .inference import Box, certified_lower_bound
from .solvers import resolve_solver, solve_with_retries
from .train import FitResult, fit

__all__ = ["ExactBoxSolution", "ExactBoxSolve", "box_gap_bounds", "certified_gap", "fit_energy"]


class _Joint(nn.Module):
    """``[x, c] -> E(x; c)``: a contextual model as a model of one concatenated input (for ``fit``)."""

    def __init__(self, model, in_dim: int) -> None:
        super().__init__()
        self.model, self.in_dim = model, in_dim

    def forward(self, xc: torch.Tensor) -> torch.Tensor:
        return self.model(xc[:, : self.in_dim], xc[:, self.in_dim :])


def fit_energy(model, x, c, energy, x_val, c_val, energy_val, **fit_options) -> tuple[FitResult, float, float]:
    """Train ``model(x, c)`` to the standardised energies; returns ``(fit result, mean, std)``
    with ``model(x, c) * std + mean`` the energy's scale. ``fit_options`` go to :func:`~socicnn.train.fit`.

    Args:
        model: a contextual model (``model(x, c)`` ``(N,)``), trained in place.
        x, c: flattened inputs ``(N, d)`` and contexts ``(N, p)``; ``energy`` ``(N,)``; the same
            for the validation set.
    """
    mean, std = float(energy.mean()), float(energy.std().clamp_min(1e-12))
    joint = _Joint(model, x.shape[1])
    res = fit(
        joint,
        torch.cat([x, c], 1),
        (energy - mean) / std,
        torch.cat([x_val, c_val], 1),
        (energy_val - mean) / std,
        **fit_options,
    )
    res.model = model
    return res, mean, std


@torch.no_grad()
def box_gap_bounds(
    model, x: torch.Tensor, lo: float, hi: float, multipliers=None, *, tie_tol: float = 1.5e-9
) -> dict[str, torch.Tensor]:
    """Certified bounds on ``f(x_i) - min_box f`` ``(N,)`` at feasible points ``x`` ``(N, d)``.

    - ``"frank_wolfe"``: ``g^T x - min_box g^T y`` with ``g`` the readout subgradient at ``x``
      (exact canonical multipliers, so ``f(y) >= f(x) + g^T (y - x)`` for every ``y``). Zero at a
      minimiser where ``f`` is differentiable; can stay positive at a kink.
    - ``"kinks"``: ``f(x)`` minus :func:`socicnn.inference.certified_lower_bound` (dual-feasible
      multipliers chosen on the tied kinks and the box's active faces): no solver output is
      trusted, and it also closes at kinks.
    - ``"strict"``: the smaller of these two.
    - ``"dual"`` (with ``multipliers``, e.g. a conic solver's duals, one per block and row):
      ``f(x) - min_box l`` for the affine minorant ``l(y)`` = dual objective at the multipliers,
      a valid bound when they are dual feasible; ``"dual_residual"`` is their largest
      violation of dual feasibility (the bound is certified up to it).
    """
    ro = readout.readout(model, x)
    f = ro.value
    g = ro.grad
    fw = box_gap_bound(x, g, lo, hi)
    kinks = f - certified_lower_bound(model, x, Box(lo, hi), tie_tol)
    out = {"value": f, "frank_wolfe": fw, "kinks": kinks, "strict": torch.minimum(fw, kinks)}
    if multipliers is not None:
        G = readout.supporting_slope(model, multipliers)
        low = readout.dual_objective(model, x, multipliers) - (G * x).sum(-1) + Box(lo, hi).support(G)
        out["dual"] = f - low
        out["dual_residual"] = readout.dual_residual(model, multipliers)
    return out


def certified_gap(bounds: dict[str, torch.Tensor], dual_residual_tol: float) -> torch.Tensor:
    """The certified bound ``(N,)`` on ``f(x) - min_box f`` from :func:`box_gap_bounds`: its
    ``"strict"`` bound, or the smaller of that and the ``"dual"`` one where the multipliers'
    ``"dual_residual"`` is at most ``dual_residual_tol * max(1, |f(x)|)`` (without multipliers,
    ``"strict"`` alone)."""
    if "dual" not in bounds:
        return bounds["strict"]
    ok = bounds["dual_residual"] <= dual_residual_tol * bounds["value"].abs().clamp(min=1.0)
    return torch.where(ok, torch.minimum(bounds["strict"], bounds["dual"]), bounds["strict"])


@dataclass
class ExactBoxSolution:
    """Row-by-row exact solves: ``x`` ``(N, d)`` (clipped into the box), the solver's optimal
    values, statuses, the wall time of each solve and the solver's own reported solve time, and
    the solver's multipliers batched per block (for :func:`box_gap_bounds`)."""

    x: torch.Tensor
    solver_value: np.ndarray
    status: list[str]
    time: np.ndarray
    solver_time: np.ndarray
    multipliers: list


class ExactBoxSolve:
    """``min_{lo <= x <= hi} f(x)`` through the model's conic lifting, compiled once.

    Args:
        model: a socicnn model (blocks with a conic lifting); with per-row data, row ``i`` is
            solved with row ``i``'s data.
        lo, hi: the box (scalars).
        solver: ``"auto"`` or a CVXPY solver name.
    """

    def __init__(self, model, lo: float, hi: float, solver: str = "auto") -> None:
        if not (math.isfinite(lo) and math.isfinite(hi) and lo <= hi):
            raise ValueError(f"the box must be finite and non-empty, got [{lo}, {hi}]")
        self.model, self.lo, self.hi = model, float(lo), float(hi)
        self.solver = resolve_solver(solver)
        self.x = cp.Variable(model.in_dim, name="x")
        expr, cons, (self.data, self.lifts) = lifting._epigraph(model, self.x, 0 if model.rows is not None else None)
        self.problem = cp.Problem(cp.Minimize(expr), cons + [self.x >= lo, self.x <= hi])

    def solve_row(self, row: int | None, *, accept_inaccurate: bool = False, **solver_options):
        """One solve: ``(x, value, status, wall time, solver time, per-block multipliers)``.

        Raises:
            socicnn.lifting.LiftingError: the solver failed or its status is not optimal
                (``"optimal_inaccurate"`` too, unless ``accept_inaccurate``: then the point's
                certificate, :func:`box_gap_bounds`, decides whether it is good enough).
        """
        self.data.set(row)
        t0 = time.perf_counter()
        try:
            solve_with_retries(self.problem, self.solver, **solver_options)
        except cp.error.SolverError as exc:
            raise lifting.LiftingError(f"{self.solver} failed on the box problem (row {row}): {exc}") from exc
        elapsed = time.perf_counter() - t0
        accepted = {cp.OPTIMAL} | ({cp.OPTIMAL_INACCURATE} if accept_inaccurate else set())
        if self.problem.status not in accepted:
            raise lifting.LiftingError(
                f"{self.solver} returned status {self.problem.status!r} on the box problem (row {row}); "
                "expected 'optimal'"
            )
        stats = self.problem.solver_stats
        solver_time = float(stats.solve_time) if stats is not None and stats.solve_time is not None else float("nan")
        mults = [lift.read_multipliers() for lift in self.lifts]
        x = np.clip(np.asarray(self.x.value, dtype=float), self.lo, self.hi)
        return x, float(self.problem.value), self.problem.status, elapsed, solver_time, mults

    def solve(
        self, rows: int | None = None, *, accept_inaccurate: bool = False, skip_failures: bool = False, **solver_options
    ) -> ExactBoxSolution:
        """Solve every row (``rows``: how many; default the model's rows, or 1 without per-row data).

        With ``skip_failures`` a row the solver fails on (or ends with a non-optimal status) gets
        status ``"solver_error"``, ``x`` NaN and zero multipliers (dual feasible for every block
        of the library: the dual bound of :func:`box_gap_bounds` is then valid but loose); the
        caller solves those rows another way."""
        n = rows if rows is not None else (self.model.rows or 1)
        per_row = self.model.rows is not None
        kw = {"dtype": self.model.dtype, "device": self.model.device}
        out = []
        for i in range(n):
            try:
                row = i if per_row else None
                out.append(self.solve_row(row, accept_inaccurate=accept_inaccurate, **solver_options))
            except lifting.LiftingError:
                if not skip_failures:
                    raise
                out.append(None)
        failed = (np.full(self.model.in_dim, np.nan), np.nan, "solver_error", np.nan, np.nan, self._zero_multipliers())
        out = [failed if o is None else o for o in out]
        mults = [_stack([o[5][b] for o in out], kw) for b in range(len(self.lifts))]
        return ExactBoxSolution(
            x=torch.as_tensor(np.stack([o[0] for o in out]), **kw),
            solver_value=np.array([o[1] for o in out]),
            status=[o[2] for o in out],
            time=np.array([o[3] for o in out]),
            solver_time=np.array([o[4] for o in out]),
            multipliers=mults,
        )

    def _zero_multipliers(self) -> list:
        """Zero multipliers in the blocks' shapes (as one row's solver output)."""
        probe = self.model if self.model.rows is None else self.model.select(torch.zeros(1, dtype=torch.long))
        x1 = torch.zeros(1, self.model.in_dim, dtype=self.model.dtype, device=self.model.device)

        def zeros(m):
            return [zeros(t) for t in m] if isinstance(m, list) else np.zeros(m.shape[1:])

        with torch.no_grad():
            return [zeros(b.multipliers(b.state(x1))) for b in probe.blocks()]


def _stack(per_row: list, kw) -> torch.Tensor | list:
    """Per-row multipliers of one block (arrays, or lists of arrays) batched along a first axis."""
    if isinstance(per_row[0], list):
        return [_stack([m[j] for m in per_row], kw) for j in range(len(per_row[0]))]
    return torch.as_tensor(np.stack([np.asarray(m, dtype=float) for m in per_row]), **kw)
