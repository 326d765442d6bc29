"""The external baseline ``lpcf`` (learning parametric convex functions, Schaller, Bemporad and Boyd).

``lpcf`` represents ``f(x, theta)`` by an input-convex *main network* of ``x`` whose weights are
the outputs of a *parameter network* of ``theta``: with ``[W_l, V_l, omega_l] = psi(theta)``,

    y_1 = V_1 x + omega_1,   y_l = W_l relu(y_{l-1}) + V_l x + omega_l,   W_l = max(., 0),

so ``f`` is convex in ``x`` for every ``theta``; the trainable parameters are those of ``psi``
only. It trains with JAX (full-batch Adam, then L-BFGS-B, through ``jax-sysid``) and exports the
trained function to CVXPY (``PCF.tocvxpy``), which is how the decisions here are made:
``x_i = argmin_{x in C} f(x, theta_i)`` is that expression plus the set's constraints, solved by
Clarabel, status checked and gap bounded per instance as for :func:`socicnn.decisions.decide`.

``lpcf`` is an optional extra (``pip install -e '.[lpcf]'`` in a checkout); it is imported only when a
function here needs it, so ``socicnn`` itself imports without JAX. Importing it switches JAX to
64-bit arithmetic on the CPU (``lpcf`` does so itself).
"""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass
from typing import Any

import cvxpy as cp
import numpy as np
import torch

from .. import decisions
from ..inference.constraints import Constraint

__all__ = [
    "LPCFModel",
    "decide_lpcf",
    "fit_lpcf",
    "matched_shape",
    "parameter_count",
    "require",
]

INSTALL_HINT = ("lpcf is not installed: pip install lpcf==0.1.1 "
                "(or the lpcf extra, pip install -e '.[lpcf]' in a checkout)")


def _pcf_class():
    try:
        from lpcf.pcf import PCF
    except ImportError as exc:  # the optional extra is missing
        raise ImportError(INSTALL_HINT) from exc
    return PCF


def parameter_count(n: int, p: int, widths: tuple[int, ...], widths_psi: tuple[int, ...]) -> int:
    """Trainable parameters of a scalar ``lpcf`` PCF (ReLU, no quadratic term) with main-network
    hidden ``widths`` over ``x`` in ``R^n`` and parameter-network hidden ``widths_psi`` over
    ``theta`` in ``R^p``: the parameter network's weights; its output size ``m`` is the number of
    main-network weights (``W_l`` for ``l >= 2``, ``V_l``, ``omega_l``)."""
    w = [n, *widths, 1]
    m = sum(w[i] * w[i - 1] for i in range(2, len(w))) + sum(w[1:]) * (n + 1)
    v = [p, *widths_psi, m]
    return sum(v[i] * v[i - 1] for i in range(2, len(v))) + sum(v[1:]) * (p + 1)


def matched_shape(
    n: int, p: int, budget: int, depth: int = 2, max_width: int = 4096
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """``(widths, widths_psi)`` at the narrowest width ``w`` whose PCF (main network of ``depth``
    hidden layers of width ``w``, parameter network of one hidden layer of width ``w``) has at
    least ``budget`` parameters: at least as many as the reference model, and not a whole width
    step more."""
    for w in range(1, max_width + 1):
        shape = (w,) * depth, (w,)
        if parameter_count(n, p, *shape) >= budget:
            return shape
    raise ValueError(f"no lpcf width up to {max_width} reaches {budget} parameters")


@dataclass
class LPCFModel:
    """A trained ``lpcf`` PCF of ``x`` in ``R^n`` and ``theta`` in ``R^p`` (float64 numpy in and out)."""

    pcf: Any
    n: int
    p: int
    widths: tuple[int, ...]
    widths_psi: tuple[int, ...]
    train_time: float
    train_r2: float

    def __call__(self, x, theta) -> np.ndarray:
        """``f(x_i, theta_i)`` ``(N,)`` by ``lpcf``'s own forward function."""
        x = np.asarray(x, dtype=float).reshape(-1, self.n)
        theta = np.asarray(theta, dtype=float).reshape(-1, self.p)
        return np.asarray(self.pcf.predict(x, theta), dtype=float).reshape(-1)

    def num_parameters(self) -> int:
        """Trainable parameters (those of the parameter network), counted on the fitted arrays."""
        return int(sum(np.size(a) for a in self.pcf.model.params))


def fit_lpcf(
    x: np.ndarray,
    theta: np.ndarray,
    y: np.ndarray,
    widths: tuple[int, ...],
    widths_psi: tuple[int, ...],
    seed: int,
    adam_epochs: int = 200,
    lbfgs_epochs: int = 2000,
) -> LPCFModel:
    """Fit ``lpcf``'s PCF to ``y ~ f(x, theta)`` (``x`` ``(N, n)``, ``theta`` ``(N, p)``, ``y``
    ``(N,)``) with explicit hidden widths of the main and the parameter network
    (:func:`matched_shape`), ReLU activations and no quadratic term (``lpcf``'s defaults), one
    initial guess drawn from ``seed`` (``lpcf`` draws it from NumPy's generator seeded with it),
    ``lpcf``'s training (full-batch Adam for ``adam_epochs``
    iterations, then L-BFGS-B for at most ``lbfgs_epochs``) and its default regularisation.
    Deterministic for a given seed."""
    PCF = _pcf_class()
    x = np.asarray(x, dtype=float)
    theta = np.asarray(theta, dtype=float)
    y = np.asarray(y, dtype=float).reshape(-1, 1)
    if x.ndim != 2 or theta.ndim != 2 or not (len(x) == len(theta) == len(y)):
        raise ValueError(f"x (N, n), theta (N, p) and y (N,) must have N rows, got {x.shape}, {theta.shape}, {y.shape}")
    widths, widths_psi = tuple(widths), tuple(widths_psi)
    pcf = PCF(widths=list(widths), widths_psi=list(widths_psi), activation="relu")
    state = np.random.get_state()  # lpcf seeds NumPy's global generator with ``seed``: restored after
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # lpcf prints progress bars
            info = pcf.fit(y, x, theta, seeds=np.array([seed]), cores=1, adam_epochs=adam_epochs,
                           lbfgs_epochs=lbfgs_epochs)
    finally:
        np.random.set_state(state)
    return LPCFModel(pcf, x.shape[1], theta.shape[1], widths, widths_psi, float(info["time"]), float(info["R2"]))


class _Exported:
    """``min_{x in C} f(x, theta)`` with ``f`` from ``PCF.tocvxpy``: the context is a CVXPY parameter
    (the export evaluates the parameter network at its value)."""

    def __init__(self, model: LPCFModel, constraint: Constraint) -> None:
        self.x = cp.Variable((model.n, 1), name="x")
        self.theta = cp.Parameter((model.p, 1), name="theta")
        f = model.pcf.tocvxpy(x=self.x, theta=self.theta)
        self.problem = cp.Problem(cp.Minimize(cp.sum(f)), constraint.cvxpy(self.x[:, 0]))

    def solve(self, theta_i: np.ndarray, solver: str):
        self.theta.value = np.asarray(theta_i, dtype=float).reshape(-1, 1)
        return decisions.solve_problem(self.problem, self.x, solver)


def decide_lpcf(
    model: LPCFModel, theta, constraint: Constraint, tol: float = 1e-6, solver: str = "CLARABEL"
) -> tuple[decisions.DecisionResult, np.ndarray]:
    """``x_i = argmin_{x in C} f(x, theta_i)`` for contexts ``theta`` ``(N, p)`` through ``lpcf``'s
    CVXPY export, one solve per instance: the :class:`~socicnn.decisions.DecisionResult` (status per
    instance, point projected onto ``C``, value by ``lpcf``'s forward function, gap bound = value
    minus the solver's dual objective) and, per instance, ``|solver value - f(x_solver, theta_i)|``,
    how far the export and the forward function disagree at the solver's point."""
    theta = np.atleast_2d(np.asarray(theta, dtype=float))
    if theta.shape[1] != model.p:
        raise ValueError(f"theta must have {model.p} columns, got shape {theta.shape}")
    constraint.check(model.n)
    problem = _Exported(model, constraint)
    solves = [problem.solve(t, solver) for t in theta]
    export_gap = np.array([
        abs(value - float(model(x, t)[0])) if x is not None else np.nan
        for (x, value, *_), t in zip(solves, theta, strict=True)
    ])

    def values(x, ok):
        return model(x.numpy(), theta[ok.numpy()]).copy()

    return decisions.socp_result(solves, constraint, values, model.n, torch.float64, tol), export_gap


def require() -> None:
    """Raise the install hint when ``lpcf`` is missing (before any training starts)."""
    _pcf_class()

