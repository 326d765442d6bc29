"""Batched readout descent methods for ``min_x F_y(x) = f(x) + (beta/2)||x - y||^2`` [``x in C``].

All queries run at once; each keeps its own step size and stopping state, and converged
queries drop out of the batch. Two derivative oracles feed the same loops: the closed-form
readout (:mod:`socicnn.readout`) and autograd (``torch.func``), so the two can be compared
iterate for iterate.

- :func:`gradient_descent`: (projected) gradient descent with backtracking on the
  sufficient-decrease condition of the gradient mapping.
- :func:`damped_newton`: Newton directions ``-(H + beta I)^{-1} g`` with Armijo backtracking.

The kink-aware ``"newton"`` method is :func:`socicnn.inference.newton.face_newton`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .. import readout as ro
from .constraints import Constraint

__all__ = [
    "AutogradOracle",
    "LoopResult",
    "ReadoutOracle",
    "damped_newton",
    "gradient_descent",
    "objective",
]

ARMIJO = 1e-4
MAX_HALVINGS = 40


@torch.no_grad()
def objective(model, x: torch.Tensor, y: torch.Tensor, beta: float) -> torch.Tensor:
    """``F_y(x) = f(x) + (beta/2)||x - y||^2`` row by row, ``(N,)``."""
    return model(x) + 0.5 * beta * ((x - y) ** 2).sum(-1)


class ReadoutOracle:
    """Gradient and Hessian of ``F_y`` from the closed-form readout (canonical multipliers)."""

    def __init__(self, model, beta: float) -> None:
        self.model, self.beta = model, beta

    def grad(self, x, y):
        return ro.readout(self.model, x).grad + self.beta * (x - y)

    def hessian(self, x, y):
        eye = torch.eye(x.shape[-1], dtype=x.dtype, device=x.device)
        return ro.hessian(self.model, x) + self.beta * eye


class AutogradOracle:
    """Gradient and Hessian of ``F_y`` by ``torch.func`` (``vmap`` of ``grad`` / ``hessian``)."""

    def __init__(self, model, beta: float) -> None:
        def single(x, y):
            return model(x) + 0.5 * beta * ((x - y) ** 2).sum()

        self._grad = torch.func.vmap(torch.func.grad(single))
        self._hess = torch.func.vmap(torch.func.hessian(single))

    def grad(self, x, y):
        return self._grad(x, y).detach()

    def hessian(self, x, y):
        return self._hess(x, y).detach()


@dataclass
class LoopResult:
    """What a batched loop returns: final iterates and per-query diagnostics (all ``(N, ...)``)."""

    x: torch.Tensor
    value: torch.Tensor
    grad_norm: torch.Tensor
    iterations: torch.Tensor
    converged: torch.Tensor
    history: list[torch.Tensor] = field(default_factory=list)  # F at every iteration, (N,) each
    gap_bound: torch.Tensor | None = None  # certified bound on F - F* (face Newton only)


class _Batch:
    """Bookkeeping shared by the loops: iterates, values, flags, history."""

    def __init__(self, model, y, beta, x0):
        self.model, self.y, self.beta = model, y, beta
        self.x = x0.clone()
        self.F = objective(model, self.x, y, beta)
        n = y.shape[0]
        self.grad_norm = torch.full((n,), float("inf"), dtype=y.dtype, device=y.device)
        self.iterations = torch.zeros(n, dtype=torch.long, device=y.device)
        self.converged = torch.zeros(n, dtype=torch.bool, device=y.device)
        self.running = torch.ones(n, dtype=torch.bool, device=y.device)
        self.history = [self.F.clone()]

    def F_at(self, x, idx):
        return objective(self.model, x, self.y[idx], self.beta)

    def check(self, oracle, gtol, stationarity):
        """Evaluate the running queries' gradients and stop those whose stationarity measure
        ``||stationarity(x, g)||`` is ``<= gtol``. Returns ``(idx, x, y, F, g)`` of the queries
        still running, or ``None`` when none is."""
        idx = self.running.nonzero().squeeze(1)
        if idx.numel() == 0:
            return None
        x, ya, F = self.x[idx], self.y[idx], self.F[idx]
        g = oracle.grad(x, ya)
        gn = torch.linalg.vector_norm(stationarity(x, g), dim=-1)
        self.grad_norm[idx] = gn
        done = gn <= gtol
        self.stop(idx, done)
        if bool(done.all()):
            return None
        keep = ~done
        return idx[keep], x[keep], ya[keep], F[keep], g[keep]

    def stop(self, idx, converged_mask):
        self.converged[idx[converged_mask]] = True
        self.running[idx[converged_mask]] = False

    def result(self) -> LoopResult:
        return LoopResult(self.x, self.F, self.grad_norm, self.iterations, self.converged, self.history)


def _gradient_mapping(x, g, beta, constraint):
    """``beta (x - P(x - g / beta))``: the gradient when unconstrained, its projected analogue otherwise."""
    if constraint is None:
        return g
    return beta * (x - constraint.project(x - g / beta))


@torch.no_grad()
def gradient_descent(
    model, y, beta, oracle, constraint: Constraint | None, *, max_iter: int, gtol: float
) -> LoopResult:
    """(Projected) gradient descent; per-query step ``t`` doubles on success, halves on failure.

    Accepts ``x+ = P(x - t g)`` when ``F(x+) <= F(x) + g.(x+ - x) + ||x+ - x||^2 / (2t)``.
    Stops when the gradient mapping norm is ``<= gtol``.
    """
    x0 = y.clone() if constraint is None else constraint.project(y)
    st = _Batch(model, y, beta, x0)
    step = torch.full_like(st.F, 1.0 / beta)
    for it in range(max_iter + 1):
        active = st.check(oracle, gtol, lambda x, g: _gradient_mapping(x, g, beta, constraint))
        if active is None or it == max_iter:
            break
        idx, x, _, F, g = active
        st.iterations[idx] += 1
        t = 2.0 * step[idx]
        pending = torch.ones_like(F, dtype=torch.bool)
        x_new, F_new = x.clone(), F.clone()
        for _ in range(MAX_HALVINGS):
            p = pending.nonzero().squeeze(1)
            if p.numel() == 0:
                break
            trial = x[p] - t[p, None] * g[p]
            if constraint is not None:
                trial = constraint.project(trial)
            Ft = st.F_at(trial, idx[p])
            diff = trial - x[p]
            ok = Ft <= F[p] + (g[p] * diff).sum(-1) + (diff**2).sum(-1) / (2 * t[p])
            x_new[p[ok]], F_new[p[ok]] = trial[ok], Ft[ok]
            pending[p[ok]] = False
            t[p[~ok]] *= 0.5
        step[idx] = t
        st.x[idx], st.F[idx] = x_new, F_new
        st.history.append(st.F.clone())
    return st.result()


@torch.no_grad()
def damped_newton(model, y, beta, oracle, *, max_iter: int, gtol: float) -> LoopResult:
    """Damped Newton ``x+ = x + alpha d``, ``d = -(H + beta I)^{-1} g``, Armijo backtracking.

    Stops when ``||g|| <= gtol``, or when backtracking finds no decrease (a stall, reported as
    not converged). At a kink ``g`` is one subgradient, so this loop can cycle there; see
    :func:`face_newton`.
    """
    st = _Batch(model, y, beta, y)
    for it in range(max_iter + 1):
        active = st.check(oracle, gtol, lambda x, g: g)
        if active is None or it == max_iter:
            break
        idx, x, ya, F, g = active
        st.iterations[idx] += 1
        d = -torch.linalg.solve(oracle.hessian(x, ya), g)
        slope = (g * d).sum(-1)
        x_new, F_new, moved = _armijo(st, idx, x, F, d, slope)
        st.x[idx], st.F[idx] = x_new, F_new
        st.running[idx[~moved]] = False  # stalled
        st.history.append(st.F.clone())
    return st.result()


def _armijo(st: _Batch, idx, x, F, d, slope):
    """Halve ``alpha`` from 1 until ``F(x + alpha d) <= F + 1e-4 alpha slope``; per query."""
    alpha = torch.ones_like(F)
    x_new, F_new = x.clone(), F.clone()
    moved = torch.zeros_like(F, dtype=torch.bool)
    pending = torch.ones_like(moved)
    for _ in range(MAX_HALVINGS):
        p = pending.nonzero().squeeze(1)
        if p.numel() == 0:
            break
        trial = x[p] + alpha[p, None] * d[p]
        Ft = st.F_at(trial, idx[p])
        ok = Ft <= F[p] + ARMIJO * alpha[p] * slope[p]
        x_new[p[ok]], F_new[p[ok]] = trial[ok], Ft[ok]
        moved[p[ok]] = True
        pending[p[ok]] = False
        alpha[p[~ok]] *= 0.5
    return x_new, F_new, moved
