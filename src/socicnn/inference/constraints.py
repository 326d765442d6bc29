"""Constraint sets for constrained inference ``min_x F_y(x)`` s.t. ``x in C``.

Each named set knows three things: its exact Euclidean projection (for the projected readout
methods), its CVXPY constraints (for the exact ``"socp"`` method), and its description as
linear rows ``C x <= h`` / ``C x = h`` (for the face-Newton method, which treats an active row
like a tied ReLU unit with a sign-constrained multiplier). A user callable returning CVXPY
constraints is accepted by ``"socp"`` only.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import cvxpy as cp
import numpy as np
import torch

from .._checks import check_real
from .projections import project_box, project_budget, project_simplex

__all__ = ["Box", "Budget", "Constraint", "CvxpyConstraint", "LinearRows", "Simplex", "as_constraint"]


@dataclass
class LinearRows:
    """``C x <= h`` (rows with ``equality[k] = False``) and ``C x = h`` (``True``).

    Attributes: ``C`` ``(K, d)``, ``h`` ``(K,)``, ``equality`` ``(K,)`` bool.
    """

    C: torch.Tensor
    h: torch.Tensor
    equality: torch.Tensor


class Constraint:
    """A closed convex set ``C`` with an exact projection, CVXPY form and linear rows."""

    def check(self, d: int) -> None:
        """Raise ``ValueError`` when the set is empty or does not fit dimension ``d``."""

    def project(self, v: torch.Tensor) -> torch.Tensor:
        """Euclidean projection of each row of ``v`` ``(N, d)``."""
        raise NotImplementedError

    def cvxpy(self, x: cp.Expression) -> list[cp.Constraint]:
        """The set as CVXPY constraints on ``x`` ``(d,)``."""
        raise NotImplementedError

    def rows(self, d: int, dtype: torch.dtype, device: torch.device) -> LinearRows:
        """The set as linear rows (only for polyhedral sets)."""
        raise NotImplementedError

    def support(self, g: torch.Tensor) -> torch.Tensor:
        """``min_{z in C} g_i^T z`` ``(N,)`` for each row of ``g`` ``(N, d)`` (``-inf`` where the
        set is unbounded in a direction ``g_i`` decreases): the linear minimisation oracle's
        value, used by certified lower bounds over ``C``."""
        raise NotImplementedError


class Box(Constraint):
    """``{lo <= x <= hi}``; ``lo``/``hi`` real scalars or length-``d`` sequences (a lower bound
    may be ``-inf`` and an upper bound ``+inf``: that side is then free).

    Raises ``ValueError`` when the box is empty: some ``lo_i > hi_i``, a lower bound ``+inf`` or an
    upper bound ``-inf`` (no real ``x_i`` satisfies ``x_i >= +inf``); ``TypeError`` for bounds
    that are not real numbers.
    """

    def __init__(self, lo=-math.inf, hi=math.inf) -> None:
        self.lo = _bound("lo", lo)
        self.hi = _bound("hi", hi)
        if torch.isnan(self.lo).any() or torch.isnan(self.hi).any():
            raise ValueError("Box bounds must not be NaN")
        if bool((self.lo == math.inf).any()) or bool((self.hi == -math.inf).any()):
            raise ValueError(
                f"empty box: a lower bound is +inf or an upper bound is -inf (lo={lo}, hi={hi}); "
                "use -inf for a free lower side and +inf for a free upper side"
            )
        if bool((self.lo > self.hi).any()):
            raise ValueError(f"empty box: some lower bound exceeds its upper bound (lo={lo}, hi={hi})")

    def check(self, d: int) -> None:
        for name, t in (("lo", self.lo), ("hi", self.hi)):
            if t.ndim == 1 and t.shape[0] != d:
                raise ValueError(f"Box {name} has {t.shape[0]} entries but x has dimension {d}")

    def _bounds(self, d, dtype, device):
        return (self.lo.to(dtype=dtype, device=device).expand(d), self.hi.to(dtype=dtype, device=device).expand(d))

    def project(self, v):
        lo, hi = self._bounds(v.shape[-1], v.dtype, v.device)
        return project_box(v, lo, hi)

    def cvxpy(self, x):
        lo, hi = (t.numpy() for t in self._bounds(x.shape[0], torch.float64, "cpu"))
        out = []
        if (lo > -math.inf).any():
            keep = lo > -math.inf
            out.append(x[keep] >= lo[keep])
        if (hi < math.inf).any():
            keep = hi < math.inf
            out.append(x[keep] <= hi[keep])
        return out

    def support(self, g):
        lo, hi = self._bounds(g.shape[-1], g.dtype, g.device)
        # g_i * bound with 0 * inf read as 0: a free side only matters where g_i pulls towards it
        low = torch.where(g > 0, g * lo, torch.zeros_like(g))
        high = torch.where(g < 0, g * hi, torch.zeros_like(g))
        return (low + high).sum(-1)

    def rows(self, d, dtype, device):
        lo, hi = self._bounds(d, dtype, device)
        eye = torch.eye(d, dtype=dtype, device=device)
        upper, lower = torch.isfinite(hi), torch.isfinite(lo)
        C = torch.cat([eye[upper], -eye[lower]])
        h = torch.cat([hi[upper], -lo[lower]])
        return LinearRows(C, h, torch.zeros(C.shape[0], dtype=torch.bool, device=device))


def _bound(name: str, value) -> torch.Tensor:
    """A Box bound (a real scalar, sequence, array or tensor) as a float64 tensor of ndim <= 1."""
    if isinstance(value, torch.Tensor):
        if value.dtype == torch.bool or value.is_complex():
            raise TypeError(f"Box {name} must hold real numbers, got dtype {value.dtype}")
        value = value.detach().to("cpu", torch.float64).numpy()
    arr = np.asarray(value)
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise TypeError(f"Box {name} must be a real number or a sequence of them, got {value!r}")
    if arr.ndim > 1:
        raise ValueError(f"Box bounds must be scalars or 1-D sequences, {name} has shape {arr.shape}")
    return torch.as_tensor(arr, dtype=torch.float64)


class Simplex(Constraint):
    """The scaled probability simplex ``{x >= 0, sum x = total}`` (``total > 0``)."""

    def __init__(self, total: float = 1.0) -> None:
        self.total = check_real("total", total)
        if not (math.isfinite(self.total) and self.total > 0):
            raise ValueError(f"Simplex total must be a finite number > 0, got {total}")

    def project(self, v):
        return project_simplex(v, self.total)

    def cvxpy(self, x):
        return [x >= 0, cp.sum(x) == self.total]

    def support(self, g):
        return self.total * g.amin(-1)

    def rows(self, d, dtype, device):
        kw = {"dtype": dtype, "device": device}
        C = torch.cat([torch.ones(1, d, **kw), -torch.eye(d, **kw)])
        h = torch.cat([torch.full((1,), self.total, **kw), torch.zeros(d, **kw)])
        eq = torch.zeros(d + 1, dtype=torch.bool, device=device)
        eq[0] = True
        return LinearRows(C, h, eq)


class Budget(Constraint):
    """The capped budget set ``{0 <= x <= 1, sum x <= budget}`` (``budget >= 0``), or with
    ``equality=True`` ``{0 <= x <= 1, sum x = budget}`` (``0 <= budget <= d``)."""

    def __init__(self, budget: float, *, equality: bool = False) -> None:
        self.budget = check_real("budget", budget)
        if not isinstance(equality, bool):
            raise TypeError(f"Budget equality must be True or False, got {equality!r}")
        self.equality = equality
        if not (math.isfinite(self.budget) and self.budget >= 0):
            raise ValueError(f"Budget needs a finite budget >= 0 (the set is empty otherwise), got {budget}")

    def check(self, d: int) -> None:
        if self.equality and self.budget > d:
            raise ValueError(
                f"empty set: Budget(equality=True) needs budget <= d, got budget {self.budget} for d = {d}"
            )

    def project(self, v):
        return project_budget(v, self.budget, equality=self.equality)

    def cvxpy(self, x):
        total = cp.sum(x) == self.budget if self.equality else cp.sum(x) <= self.budget
        return [x >= 0, x <= 1, total]

    def support(self, g):
        # Greedy: the smallest entries first, each up to 1, until the budget is spent (only the
        # negative ones when the sum may stay below the budget).
        gs, _ = torch.sort(g, dim=-1)
        k = torch.arange(g.shape[-1], dtype=g.dtype, device=g.device)
        weight = (self.budget - k).clamp(0.0, 1.0)
        take = gs if self.equality else gs.clamp(max=0.0)
        return (weight * take).sum(-1)

    def rows(self, d, dtype, device):
        eye = torch.eye(d, dtype=dtype, device=device)
        C = torch.cat([torch.ones(1, d, dtype=dtype, device=device), eye, -eye])
        h = torch.cat(
            [
                torch.full((1,), self.budget, dtype=dtype, device=device),
                torch.ones(d, dtype=dtype, device=device),
                torch.zeros(d, dtype=dtype, device=device),
            ]
        )
        eq = torch.zeros(2 * d + 1, dtype=torch.bool, device=device)
        eq[0] = self.equality
        return LinearRows(C, h, eq)


class CvxpyConstraint(Constraint):
    """A user set given by ``fn(x) -> list of CVXPY constraints``; solved exactly by ``"socp"`` only."""

    def __init__(self, fn: Callable[[cp.Variable], list]) -> None:
        if not callable(fn):
            raise TypeError(f"expected a callable returning CVXPY constraints, got {type(fn).__name__}")
        self.fn = fn

    def cvxpy(self, x):
        out = self.fn(x)
        if isinstance(out, cp.constraints.constraint.Constraint):
            out = [out]
        if not isinstance(out, (list, tuple)) or not all(
            isinstance(c, cp.constraints.constraint.Constraint) for c in out
        ):
            raise TypeError("a constraint callable must return a CVXPY constraint or a list of them")
        return list(out)


def as_constraint(constraint) -> Constraint | None:
    """``None``, a :class:`Constraint`, or a callable (wrapped as :class:`CvxpyConstraint`)."""
    if constraint is None or isinstance(constraint, Constraint):
        return constraint
    if callable(constraint):
        return CvxpyConstraint(constraint)
    raise TypeError(
        "constraint must be None, sc.inference.Box/Simplex/Budget, or a callable returning CVXPY "
        f"constraints; got {type(constraint).__name__}"
    )
