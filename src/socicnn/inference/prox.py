"""``prox``: white-box inference ``argmin_x f(x) + (beta/2)||x - y||^2`` [``x in C``].

Outputs carry no autograd history (they are solutions, not differentiable functions of the
model's weights)."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from .._checks import check_choice, check_integer, check_model, check_real
from ..lifting import LiftingError
from .constraints import Constraint, CvxpyConstraint, as_constraint
from .descent import AutogradOracle, LoopResult, ReadoutOracle, damped_newton, gradient_descent, objective
from .newton import certified_gap_bound, face_newton
from .socp import InfeasibleConstraintError, ProxSOCP, SOCPSolution

__all__ = ["METHODS", "ProxResult", "prox"]

METHODS = ("gd", "newton", "autograd-gd", "autograd-newton", "lbfgs", "socp")
SOCP_TIE_TOL = 1e-6
DEFAULT_MAX_ITER = {"gd": 1000, "autograd-gd": 1000, "newton": 100, "autograd-newton": 100, "lbfgs": 500}


@dataclass
class ProxResult:
    """Solutions of a batch of prox problems (shapes for ``y`` ``(N, d)``; ``(d,)`` gives scalars).

    Attributes:
        x: ``(N, d)`` minimisers found (feasible: the ``"socp"`` answer is projected onto ``C``).
        value: ``(N,)`` objective ``F_y(x)``.
        grad_norm: ``(N,)`` optimality measure at ``x``: the norm of a certified subgradient
            ``s`` of ``F_y`` at ``x`` (kinks of every block included; see ``gap_bound``), or for
            ``"gd"``, ``"autograd-*"`` and ``"lbfgs"`` the norm of the (projected) gradient they
            use when that is smaller. NaN for a CVXPY-callable constraint.
        iterations: ``(N,)`` iterations used.
        converged: ``(N,)`` whether the query is solved: for ``"newton"`` the certified gap bound
            ``gap_bound <= rtol * max(1, |value|)``; for ``"socp"`` the solver status
            ``optimal``; for the others ``grad_norm <= gtol`` (their own test, or the certified
            subgradient, which also holds at kinks where their gradients do not vanish).
        time: ``(N,)`` wall time per query in seconds (batch time / N for the batched methods).
        method: the method name.
        history: objective ``(N,)`` at every iteration for the batched methods; for ``"lbfgs"``
            only the start and the end (``torch.optim.LBFGS`` runs its iterations inside one call).
        certificate: ``(N,)`` the conic solver's duality gap (``"socp"`` only, else ``None``).
        gap_bound: ``(N,)`` a certified bound on ``value - min F_y``: ``eps + ||s||^2 / (2 beta)``,
            with ``eps >= 0`` the duality gap of dual-feasible multipliers (every method; NaN for a
            CVXPY-callable constraint).
        status: solver status per query (``"socp"`` only): ``"optimal"``, ``"optimal_inaccurate"``,
            another non-optimal status, or ``"solver_error"`` when the solver failed on that query
            (its ``x`` and ``value`` are then NaN). An infeasible constraint set raises
            :class:`~socicnn.inference.socp.InfeasibleConstraintError`.
        infeasibility: ``(N,)`` (``"socp"`` only) the largest constraint violation of the solver's
            ``x`` before it was projected onto ``C``.
        solver_time: ``(N,)`` (``"socp"`` only) the conic solver's own solve time per query, as it
            reports it (no CVXPY overhead).
    """

    x: torch.Tensor
    value: torch.Tensor
    grad_norm: torch.Tensor
    iterations: torch.Tensor
    converged: torch.Tensor
    time: torch.Tensor
    method: str
    history: list[torch.Tensor] = field(default_factory=list)
    certificate: torch.Tensor | None = None
    status: list[str] | None = None
    gap_bound: torch.Tensor | None = None
    infeasibility: torch.Tensor | None = None
    solver_time: torch.Tensor | None = None


def _check_beta(beta) -> float:
    beta = check_real("beta", beta)
    if not math.isfinite(beta) or beta <= 0:
        raise ValueError(f"beta must be a finite number > 0 (the prox weight), got {beta}")
    return beta


def _check_positive(name: str, value) -> float:
    value = check_real(name, value)
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be > 0, got {value}")
    return value


def _check_max_iter(value) -> int:
    value = check_integer("max_iter", value)
    if value < 0:
        raise ValueError(f"max_iter must be >= 0 (0 only evaluates the start), got {value}")
    return value


def prox(
    model,
    y,
    beta: float = 10.0,
    method: str = "newton",
    constraint=None,
    *,
    max_iter: int | None = None,
    gtol: float | None = None,
    rtol: float | None = None,
    tie_tol: float | None = None,
    faces: bool = True,
    solver: str = "auto",
) -> ProxResult:
    """Solve ``min_x f(x) + (beta/2)||x - y||^2`` [``x in C``] for every row of ``y``.

    Args:
        model: a socicnn model (any blocks; a model with per-row data solves query ``i`` with
            row ``i``'s data; the autograd baselines need one without per-row data).
        y: queries ``(N, d)`` or ``(d,)`` (model dtype and device).
        beta: proximal weight ``> 0``.
        method: ``"newton"`` (readout face Newton; ``faces=False``: plain damped Newton),
            ``"gd"`` (readout gradient descent, projected when constrained), ``"autograd-gd"``,
            ``"autograd-newton"`` (the same loops with ``torch.func`` derivatives), ``"lbfgs"``
            (``torch.optim.LBFGS``, strong Wolfe, one query at a time) or ``"socp"`` (the lifted
            SOCP, compiled once, solved per query).
        constraint: ``None``, ``Box``, ``Simplex``, ``Budget`` (``"gd"``, ``"autograd-gd"``,
            ``"newton"``, ``"socp"``), or a callable ``x -> CVXPY constraints`` (``"socp"`` only).
        max_iter: iteration cap ``>= 0`` (default: 1000 for gd, 100 for Newton, 500 for L-BFGS).
        gtol: stopping tolerance on ``grad_norm`` for ``"gd"``, ``"autograd-*"`` and ``"lbfgs"``
            (default ``sqrt(eps)`` of the dtype).
        rtol: ``"newton"`` stops a query when its certified gap bound is
            ``<= rtol * max(1, |F|)`` (default ``eps**0.75`` of the dtype: about ``2e-12`` in
            float64, four orders above the rounding level of ``F`` itself).
        tie_tol: a kink coordinate within ``tie_tol`` of its kink (``|a| <= tie_tol``,
            ``||u|| <= tie_tol``) counts as a tie in ``"newton"`` (default ``0.1 sqrt(eps)``);
            the certificates of the other methods also try ``1e3 tie_tol`` and keep the better.
        faces: ``"newton"`` only: use the face steps (default) or plain damped Newton.
        solver: conic solver for ``"socp"`` (``"auto"``: MOSEK if licensed, else Clarabel).

    Returns:
        A :class:`ProxResult`. Its tensors carry no autograd graph (the solution is not
        differentiable through ``prox``; ``y`` and the model's parameters are treated as data).

    Raises:
        ValueError: ``beta <= 0``, ``y`` of the wrong shape or non-finite, an empty constraint
            set, an unknown method, or a constraint a method cannot handle.
        TypeError: wrong argument types.
    """
    check_choice("method", method, METHODS)
    beta = _check_beta(beta)
    check_model(model)
    y2, vector = model.check_input(y, "y")
    y2 = y2.detach()
    cons = as_constraint(constraint)
    d = y2.shape[-1]
    if cons is not None:
        cons.check(d)
        if isinstance(cons, CvxpyConstraint) and method != "socp":
            raise ValueError(f"a CVXPY constraint callable is only supported by method='socp', not {method!r}")
        if method in ("autograd-newton", "lbfgs") or (method == "newton" and not faces):
            raise ValueError(
                f"method {method!r} does not handle constraints; use 'newton', 'gd', 'autograd-gd' or 'socp'"
            )
    eps = torch.finfo(y2.dtype).eps
    gtol = math.sqrt(eps) if gtol is None else _check_positive("gtol", gtol)
    rtol = eps**0.75 if rtol is None else _check_positive("rtol", rtol)
    tie_tol = 0.1 * math.sqrt(eps) if tie_tol is None else _check_positive("tie_tol", tie_tol)
    if method != "socp":
        max_iter = DEFAULT_MAX_ITER[method] if max_iter is None else _check_max_iter(max_iter)

    n = y2.shape[0]
    t0 = time.perf_counter()
    if n == 0:
        res = _empty(y2, method)
    elif method == "socp":
        res = _socp(model, y2, beta, cons, solver, tie_tol)
    elif method == "lbfgs":
        res = _certify(model, y2, beta, cons, _lbfgs(model, y2, beta, max_iter, gtol), gtol, tie_tol)
    else:
        if method == "newton" and faces:
            loop = face_newton(model, y2, beta, cons, max_iter=max_iter, rtol=rtol, tie_tol=tie_tol)
        else:
            oracle = (AutogradOracle if method.startswith("autograd") else ReadoutOracle)(model, beta)
            if method.endswith("gd"):
                loop = gradient_descent(model, y2, beta, oracle, cons, max_iter=max_iter, gtol=gtol)
            else:
                loop = damped_newton(model, y2, beta, oracle, max_iter=max_iter, gtol=gtol)
        per_query = torch.full((n,), (time.perf_counter() - t0) / n, dtype=torch.float64)
        res = _from_loop(loop, method, per_query)
        if not (method == "newton" and faces):
            res = _certify(model, y2, beta, cons, res, gtol, tie_tol)
    if vector:
        res = _squeeze(res)
    return res


def _from_loop(loop: LoopResult, method: str, per_query: torch.Tensor) -> ProxResult:
    return ProxResult(
        x=loop.x,
        value=loop.value,
        grad_norm=loop.grad_norm,
        iterations=loop.iterations,
        converged=loop.converged,
        time=per_query,
        method=method,
        history=loop.history,
        gap_bound=loop.gap_bound,
    )


def _empty(y: torch.Tensor, method: str) -> ProxResult:
    """The result for an empty batch of queries."""
    z = y.new_zeros(0)
    return ProxResult(
        x=y.clone(),
        value=z,
        grad_norm=z.clone(),
        iterations=torch.zeros(0, dtype=torch.long),
        converged=torch.zeros(0, dtype=torch.bool),
        time=torch.zeros(0, dtype=torch.float64),
        method=method,
        gap_bound=z.clone(),
        status=[] if method == "socp" else None,
    )


def _certified(model, x, y, beta, cons, tie_tol):
    """``(||s||, bound)`` of the certificate at ``x`` (NaN for CVXPY callables), with ties at
    ``tie_tol`` and at ``1e3 tie_tol`` (both are valid certificates), the better kept."""
    if isinstance(cons, CvxpyConstraint):
        nan = torch.full((x.shape[0],), math.nan, dtype=x.dtype, device=x.device)
        return nan, nan.clone()
    norm, bound = certified_gap_bound(model, x, y, beta, cons, tie_tol)
    norm2, bound2 = certified_gap_bound(model, x, y, beta, cons, 1e3 * tie_tol)
    better = bound2 < bound
    return torch.where(better, norm2, norm), torch.where(better, bound2, bound)


def _certify(model, y, beta, cons, res: ProxResult, gtol: float, tie_tol: float) -> ProxResult:
    """Add the certified subgradient and gap bound to a first-order or autograd result; a query
    whose certified subgradient is below ``gtol`` is solved even where its own gradient is not."""
    norm, bound = _certified(model, res.x, y, beta, cons, tie_tol)
    res.grad_norm = torch.minimum(res.grad_norm, norm)
    res.gap_bound = bound
    res.converged = res.converged | (norm <= gtol)
    return res


def _squeeze(res: ProxResult) -> ProxResult:
    for name in (
        "x",
        "value",
        "grad_norm",
        "iterations",
        "converged",
        "time",
        "certificate",
        "gap_bound",
        "infeasibility",
        "solver_time",
    ):
        t = getattr(res, name)
        if t is not None:
            setattr(res, name, t[0])
    res.history = [h[0] for h in res.history]
    return res


def _lbfgs(model, y: torch.Tensor, beta: float, max_iter: int, gtol: float) -> ProxResult:
    """One ``torch.optim.LBFGS`` run (strong Wolfe) per query, timed on its own.

    The history records the objective at every iteration's accepted point (the closure's
    evaluations at the iterates; line-search trials are not iterations).
    """
    n = y.shape[0]
    xs, values, gnorms, iters, conv, times, history = [], [], [], [], [], [], []
    for i in range(n):
        t0 = time.perf_counter()
        yi = y[i]
        xi = yi.clone().requires_grad_(True)
        opt = torch.optim.LBFGS(
            [xi],
            lr=1.0,
            max_iter=max_iter,
            max_eval=4 * max_iter,
            history_size=20,
            tolerance_grad=gtol,
            tolerance_change=1e-15,
            line_search_fn="strong_wolfe",
        )

        def closure(xi=xi, yi=yi):
            F = model(xi) + 0.5 * beta * ((xi - yi) ** 2).sum()
            xi.grad = torch.autograd.grad(F, xi)[0]
            return F.detach()

        start = float(closure())
        opt.step(closure)
        closure()
        gn = float(xi.grad.norm())
        times.append(time.perf_counter() - t0)
        k = int(opt.state[xi].get("n_iter", 0))
        xs.append(xi.detach())
        values.append(float(objective(model, xi.detach()[None], yi[None], beta)[0]))
        gnorms.append(gn)
        iters.append(k)
        conv.append(gn <= gtol)
        history.append([start, values[-1]])
    kw = {"dtype": y.dtype, "device": y.device}
    return ProxResult(
        x=torch.stack(xs),
        value=torch.tensor(values, **kw),
        grad_norm=torch.tensor(gnorms, **kw),
        iterations=torch.tensor(iters),
        converged=torch.tensor(conv),
        time=torch.tensor(times, dtype=torch.float64),
        method="lbfgs",
        history=[torch.tensor([h[j] for h in history], **kw) for j in range(2)],
    )


def _solve_or_record(problem: ProxSOCP, y: np.ndarray, row: int | None) -> SOCPSolution:
    """One solve; a failure or a non-optimal status is recorded on this query (an infeasible
    constraint set, the same for every query, is raised)."""
    try:
        return problem.solve(y, row=row, accept_inaccurate=True)
    except InfeasibleConstraintError:
        raise
    except LiftingError as exc:
        nan = np.full(y.shape, np.nan)
        status = getattr(exc, "status", None) or "solver_error"
        return SOCPSolution(x=nan, value=float("nan"), gap=float("nan"), status=status, solve_time=0.0)


def _socp(model, y, beta, cons: Constraint | None, solver, tie_tol) -> ProxResult:
    """The exact SOCP, compiled once and solved query by query (compilation timed with the first).

    The solver's ``x`` satisfies the constraints only to its own tolerance: its violation is
    reported (``infeasibility``) and ``x`` is projected onto ``C`` (exact projections for the
    named sets), so ``value`` is the objective of a feasible point."""
    t0 = time.perf_counter()
    problem = ProxSOCP(model, beta, cons, solver)
    setup = time.perf_counter() - t0
    per_row = model.rows is not None
    sols = [_solve_or_record(problem, y[i].cpu().numpy(), i if per_row else None) for i in range(y.shape[0])]
    kw = {"dtype": y.dtype, "device": y.device}
    x = torch.as_tensor(np.stack([s.x for s in sols]), **kw)
    times = torch.tensor([s.solve_time for s in sols], dtype=torch.float64)
    times[0] += setup
    solved = torch.isfinite(x).all(-1)
    infeasibility = torch.full((y.shape[0],), float("nan"), **kw)
    value = torch.full((y.shape[0],), float("nan"), **kw)
    grad_norm, gap_bound = value.clone(), value.clone()
    if bool(solved.any()) and cons is not None:
        infeasibility[solved] = torch.as_tensor(
            [problem.violation(x[i].cpu().numpy()) for i in solved.nonzero().squeeze(1).tolist()], **kw
        )
        if not isinstance(cons, CvxpyConstraint):
            x[solved] = cons.project(x[solved])
    elif bool(solved.any()):
        infeasibility[solved] = 0.0
    if bool(solved.any()):
        idx = solved.nonzero().squeeze(1)
        sub = model.select(idx)
        value[solved] = objective(sub, x[solved], y[solved], beta)
        # The solver's x resolves kinks only to about its own tolerance, hence the looser ties.
        grad_norm[solved], gap_bound[solved] = _certified(
            sub, x[solved], y[solved], beta, cons, max(tie_tol, SOCP_TIE_TOL)
        )
    return ProxResult(
        x=x,
        value=value,
        grad_norm=grad_norm,
        iterations=torch.zeros(y.shape[0], dtype=torch.long),
        converged=torch.tensor([s.status == "optimal" for s in sols]),
        time=times,
        method="socp",
        certificate=torch.tensor([s.gap for s in sols], dtype=torch.float64),
        status=[s.status for s in sols],
        gap_bound=gap_bound,
        infeasibility=infeasibility,
        solver_time=torch.tensor([s.solver_time for s in sols], dtype=torch.float64),
    )
