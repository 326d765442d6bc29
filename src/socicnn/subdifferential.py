"""The optimal dual set ``D*(x)`` at one point and the subdifferential ``∂f(x) = G(D*(x))``.

At a degenerate point (a ReLU unit with ``|a| <= tol`` or a norm block with ``||u|| <= tol``)
the optimal multipliers form a set: tied units take any ``nu`` in ``[0, upper]`` with
``upper_l = U_{l+1}^T nu_{l+1}`` (a polyhedron in all ``nu`` jointly), tied norm blocks any
``||r|| <= lam``. Each block describes its part (``optimal_dual_set`` as CVXPY constraints,
``sample_optimal_duals`` for random members); this module assembles them into small conic
programs: membership ``g ∈ ∂f(x)``, the minimum-norm subgradient (steepest descent at a kink)
and the max-over-duals directional derivative ``max_{xi in D*(x)} G(xi)^T delta``.
"""

from __future__ import annotations

from dataclasses import dataclass

import cvxpy as cp
import numpy as np
import torch

from ._checks import check_integer, check_model, check_tol
from .blocks import MultiplierViews, to_numpy
from .lifting import LiftingError
from .solvers import resolve_solver

__all__ = [
    "DualSample",
    "OptimalDualSet",
    "max_directional_derivative",
    "min_norm_subgradient",
]


@dataclass
class DualSample(MultiplierViews):
    """``n`` random optimal multipliers and their supporting slopes.

    Attributes:
        multipliers: one entry per block (aligned with ``model.blocks()``), batched over ``n``;
            ``names`` the blocks' multiplier names. Views: ``nu`` (backbone, one ``(n, m_l)``
            tensor per layer), ``p`` (quadratic blocks), ``r`` (norm blocks).
        slopes: ``(n, d)`` the subgradients ``G``.
    """

    multipliers: list
    names: tuple[str, ...]
    slopes: torch.Tensor



class OptimalDualSet:
    """``D*(x0)`` of a model at one point ``x0`` (``(d,)``), with ties decided by ``tol``.

    Args:
        model: a socicnn model (any blocks; smooth blocks contribute a single multiplier).
        x0: the point, shape ``(d,)``.
        tol: a unit with ``|a| <= tol`` (a norm block with ``||u|| <= tol``) counts as tied
            (default :func:`socicnn.readout.default_tie_tol`: ties off by rounding count).
        solver: conic solver for the programs (``"auto"``: MOSEK if licensed, else Clarabel).

    Attributes:
        canonical: ``(d,)`` the canonical readout slope (the member ``relu'(0) = 0`` picks).
        margin: distance of ``x0`` to degeneracy, as in :func:`socicnn.readout.readout`.
        singleton: whether ``D*(x0)`` is a single point (no ties), so ``∂f(x0)`` is ``{grad}``.
    """

    def __init__(self, model, x0, tol: float | None = None, solver: str = "auto") -> None:
        check_model(model)
        x2, vector = model.check_input(x0, "x0")
        if not vector:
            raise ValueError(f"x0 must be one point of shape ({model.in_dim},), got {tuple(x2.shape)}")
        if tol is None:
            from .readout import default_tie_tol

            tol = default_tie_tol(model, x2)
        self.model, self.tol, self.solver = model, check_tol(tol), resolve_solver(solver)
        self.x0 = x2[0]
        with torch.no_grad():
            self._states = [(block, block.state(x2, self.tol)) for block in model.blocks()]
            self.canonical = sum(block.slope(st) for block, st in self._states)[0]
            margins = [m for block, st in self._states if (m := block.margin(st)) is not None]
            self.margin = float(torch.stack(margins).amin()) if margins else float("inf")
        self.singleton = self.margin > self.tol
        if not self.singleton:
            parts = [block.optimal_dual_set(st, self.tol) for block, st in self._states]
            constraints = [con for part in parts for con in part.constraints]
            self._slope = sum(part.slope for part in parts)
            self._target = cp.Parameter(model.in_dim)
            self._direction = cp.Parameter(model.in_dim)
            self._distance = cp.Problem(cp.Minimize(cp.norm(self._slope - self._target, 2)), constraints)
            self._support_problem = cp.Problem(cp.Maximize(self._direction @ self._slope), constraints)

    # ------------------------------------------------------------------ sampling
    @torch.no_grad()
    def sample(self, n: int, seed: int = 0) -> DualSample:
        """``n`` random optimal multipliers (ties resolved at random, vertices included) and
        their slopes ``G``, all members of ``∂f(x0)``. Same seed, same sample."""
        n, seed = check_integer("n", n), check_integer("seed", seed)
        if n <= 0:
            raise ValueError(f"n must be a positive integer, got {n!r}")
        gen = torch.Generator().manual_seed(seed)
        mults = [block.sample_optimal_duals(st, n, self.tol, gen) for block, st in self._states]
        slopes = sum(block.dual_slope(m) for (block, _), m in zip(self._states, mults, strict=True))
        names = tuple(block.multiplier_name for block, _ in self._states)
        return DualSample(multipliers=mults, names=names, slopes=slopes)

    # ------------------------------------------------------------------ conic programs
    def _solve(self, problem: cp.Problem) -> None:
        try:
            problem.solve(solver=self.solver)
        except cp.error.SolverError as exc:
            raise LiftingError(f"{self.solver} failed on the optimal-dual-set program: {exc}") from exc
        if problem.status != cp.OPTIMAL:
            raise LiftingError(f"{self.solver} returned status {problem.status!r} on the optimal-dual-set program")

    def _vector(self, name: str, g) -> np.ndarray:
        g2, vector = self.model.check_input(g, name)
        if not vector:
            raise ValueError(f"{name} must have shape ({self.model.in_dim},), got {tuple(g2.shape)}")
        return to_numpy(g2[0])

    def _out(self, arr: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(np.asarray(arr, dtype=float), dtype=self.model.dtype, device=self.model.device)

    def distance(self, g) -> float:
        """Euclidean distance from ``g`` ``(d,)`` to ``∂f(x0)`` (a second-order cone program)."""
        g_np = self._vector("g", g)
        if self.singleton:
            return float(np.linalg.norm(to_numpy(self.canonical) - g_np))
        self._target.value = g_np
        self._solve(self._distance)
        return float(self._distance.value)

    def contains(self, g, atol: float = 1e-6) -> bool:
        """Whether ``g ∈ ∂f(x0)``, up to a distance ``atol * (1 + ||g||)``."""
        atol = check_tol(atol)
        scale = 1.0 + float(np.linalg.norm(self._vector("g", g)))
        return self.distance(g) <= atol * scale

    def min_norm_subgradient(self) -> torch.Tensor:
        """The element of ``∂f(x0)`` of least Euclidean norm, ``(d,)``: its negative is the
        steepest-descent direction at ``x0`` (zero iff ``x0`` minimises ``f``)."""
        if self.singleton:
            return self.canonical.clone()
        self._target.value = np.zeros(self.model.in_dim)
        self._solve(self._distance)
        return self._out(self._slope.value)

    def _support(self, delta) -> tuple[torch.Tensor, torch.Tensor, bool]:
        d2, vector = self.model.check_input(delta, "delta")
        rows = to_numpy(d2)
        if self.singleton:
            points = np.broadcast_to(to_numpy(self.canonical), rows.shape)
        else:
            points = np.empty_like(rows)
            for i, row in enumerate(rows):
                self._direction.value = row
                self._solve(self._support_problem)
                points[i] = self._slope.value
        values = np.einsum("nd,nd->n", rows, points)
        return self._out(values), self._out(points), vector

    def max_directional_derivative(self, delta) -> torch.Tensor:
        """``max_{xi in D*(x0)} G(xi)^T delta`` for ``delta`` ``(N, d)`` -> ``(N,)`` or
        ``(d,)`` -> ``()``: the support function of ``∂f(x0)``, one conic program per row."""
        values, _, vector = self._support(delta)
        return values[0] if vector else values

    def support_points(self, delta) -> torch.Tensor:
        """A subgradient attaining the max in ``max_{g ∈ ∂f(x0)} g^T delta``: ``(N, d)`` for
        ``delta`` ``(N, d)``, ``(d,)`` for ``(d,)``. Traces the boundary of ``∂f(x0)``."""
        _, points, vector = self._support(delta)
        return points[0] if vector else points

def min_norm_subgradient(model, x0, tol: float | None = None, solver: str = "auto") -> torch.Tensor:
    """Minimum-norm subgradient ``(d,)`` of ``model`` at ``x0`` ``(d,)`` (a conic program over
    ``D*(x0)``; ties are ``|a| <= tol``, ``||u|| <= tol``, by default
    :func:`socicnn.readout.default_tie_tol`). See :class:`OptimalDualSet`."""
    return OptimalDualSet(model, x0, tol, solver).min_norm_subgradient()


def max_directional_derivative(model, x0, delta, tol: float | None = None, solver: str = "auto") -> torch.Tensor:
    """``f'(x0; delta) = max_{xi in D*(x0)} G(xi)^T delta`` as conic programs: ``(N,)`` for
    ``delta`` ``(N, d)``. The forward form is :func:`socicnn.readout.directional_derivative`."""
    return OptimalDualSet(model, x0, tol, solver).max_directional_derivative(delta)
