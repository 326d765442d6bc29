"""``minimize``: certified minimisation of a model over a compact convex set, batched.

``min_{x in C} f(x)`` has no proximal term, so ``f`` may be piecewise linear and its minimisers
need not be unique. The method is the proximal point algorithm
``x_{k+1} = argmin_{x in C} f(x) + (beta_k/2)||x - x_k||^2`` with every step solved by the face
Newton of :func:`~socicnn.inference.prox` (which lands exactly on the kinks of the optimal face),
and a per-row weight ``beta_k`` (a power of two) that falls eightfold
after a solved step and grows fourfold after an unsolved one (every step decreases ``f``,
solved or not).

Face Newton handles the set's linear rows and the kink rows densely, so this suits inputs of
up to a few hundred coordinates. It is correct at any size but slow where many kinks change
between the start and the minimiser (face Newton adds ties about one per iteration until its
identification guesses take over). A row whose last :data:`STALL` proximal steps together
decreased ``f`` by less than :data:`SLOW` times its certified gap, or that is still uncertified
after ``max_iter`` steps, is handed from its best point to the matrix-free
primal-dual method, whose certificate is of the same kind; the row keeps the larger of the two
lower bounds and the lower of the two values.

**Certificate.** At a feasible ``x``, dual-feasible multipliers (the least-squares choice on the
tied kinks and active constraint rows, projected into the blocks' dual sets) give a slope ``s``
and a slack ``eps >= 0`` with ``f(z) >= f(x) - eps + s^T (z - x)`` for every ``z in C``, hence

    min_C f >= f(x) - eps - s^T x + min_{z in C} s^T z    (the set's ``support``),

a lower bound that needs no solver and holds at every kink. A row stops when
``f(x) - lower_bound <= tol * max(1, |f(x)|)``.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch

from .._checks import check_choice, check_integer, check_model, check_real
from .constraints import Constraint, CvxpyConstraint, as_constraint
from .newton import _certificate, _Point, _rows_and_eq, face_newton
from .primal_dual import primal_dual

__all__ = ["METHODS", "MinimizeResult", "certified_lower_bound", "minimize"]

METHODS = ("face_newton", "primal_dual")

# log2 changes of a row's proximal weight after a solved / an unsolved step: solved steps let
# the weight fall fast (the last steps then reach the optimum of f itself, where the certificate
# needs a small proximal term), unsolved ones make the next step easier.
SHRINK, GROW = 3, 2
CLOSE = 1e-9  # relative certified gap of a proximal step that counts as solved
# Each proximal step starts at the previous iterate, near its answer: face Newton's identification
# guesses join from the step's third iteration (decisions benchmark, d = 20: 45 against 63 ms per
# instance with the guesses from the fifth; from the second, 37 ms, but a ReLU model over a box in
# the tests then ended one row uncertified).
WARM_IDENTIFY_AFTER = 2
# A row whose last STALL proximal steps together decreased f by less than SLOW times its
# certified gap goes to the primal-dual method. Seen on ReLU- and Norm-ICNNs with a few hundred
# units (decisions paper profile, d = 20): where f is flat on the way to the minimiser, a long step
# crosses more kinks than inner_iter face-Newton iterations settle, so the weight grows, and a
# heavily weighted step can only move f by less than the rounding-level tolerance at which it
# counts as solved (CLOSE); the row then creeps at ~1e-8 per step with a gap of ~1e-2, or stops.
STALL = 5
SLOW = 0.1
PD_MAX_ITER = 20000  # the primal-dual method's iteration cap


@dataclass
class MinimizeResult:
    """Certified minimisers of a batch of problems ``min_{x in C} f_i(x)``.

    Attributes:
        x: ``(N, d)`` feasible points (exactly in ``C`` up to rounding of its projection).
        value: ``(N,)`` ``f_i(x_i)``.
        lower_bound: ``(N,)`` certified lower bound on ``min_C f_i`` (module docstring).
        gap_bound: ``(N,)`` ``value - lower_bound >= value - min_C f_i``.
        converged: ``(N,)`` ``gap_bound <= tol * max(1, |value|)``.
        iterations: ``(N,)`` proximal steps taken.
        time: ``(N,)`` wall time per row (batch time / N).
    """

    x: torch.Tensor
    value: torch.Tensor
    lower_bound: torch.Tensor
    gap_bound: torch.Tensor
    converged: torch.Tensor
    iterations: torch.Tensor
    time: torch.Tensor


@torch.no_grad()
def certified_lower_bound(model, x: torch.Tensor, constraint: Constraint, tie_tol: float) -> torch.Tensor:
    """A certified lower bound ``(N,)`` on ``min_{z in C} f_i(z)`` from a feasible ``x`` ``(N, d)``:
    ``f(x) - eps - s^T x + min_C s^T z`` (module docstring). Every variant below is valid; the
    largest bound is kept: ties at ``tie_tol`` and at ``1e3 tie_tol``, and the multipliers of the
    kinks fitted with the set's active rows or without them (the support function then accounts
    for the set alone: at a degenerate vertex, with more active rows than coordinates, the
    least-squares row multipliers may need clipping that the support function does not)."""
    d = x.shape[-1]
    rows, eq = _rows_and_eq(constraint, d, x.dtype, x.device)
    no_eq = torch.zeros(0, dtype=torch.bool, device=x.device)
    index = torch.arange(x.shape[0], device=x.device)
    value = model.select(index)(x)
    best = torch.full_like(value, -math.inf)
    for tol in (tie_tol, 1e3 * tie_tol):
        for r, e in ((rows, eq), (None, no_eq)):
            s, eps = _certificate(_Point(model, index, x, x, 0.0, r, tol, curvature=False), tol, e)
            bound = value - eps - (s * x).sum(-1) + constraint.support(s)
            best = torch.maximum(best, torch.nan_to_num(bound, nan=-math.inf))
    return best


@torch.no_grad()
def minimize(
    model,
    constraint,
    x0=None,
    *,
    tol: float = 1e-6,
    max_iter: int | None = None,
    inner_iter: int = 4,
    tie_tol: float | None = None,
    method: str = "face_newton",
    work_model=None,
) -> MinimizeResult:
    """Minimise ``f`` over a compact convex set ``C`` for a batch of rows, with a certified gap.

    Args:
        model: a socicnn model (any blocks); with per-row data (e.g. ``contextual.at(theta)`` for
            a batch of contexts) row ``i`` minimises row ``i``'s function.
        constraint: a compact :class:`Box` (finite bounds), :class:`Simplex` or :class:`Budget`.
        x0: starting points ``(N, d)`` or ``(d,)`` (projected onto ``C``); default: the
            projection of ``0`` onto ``C``, one row per row of the model's data (one row without).
        tol: relative tolerance of the certified gap: a row is solved when
            ``value - lower_bound <= tol * max(1, |value|)``.
        max_iter: cap on the proximal steps per row (``"face_newton"``, default 100) or on the
            iterations (``"primal_dual"``, default :data:`PD_MAX_ITER`, which also caps the rows
            face Newton hands over: slow, or uncertified after ``max_iter`` steps).
        inner_iter: cap on the face-Newton iterations of one proximal step (steps may be
            inexact: each one only has to decrease ``f``; short steps measured fastest on the
            decision benchmark's models).
        tie_tol: kink tolerance (default ``0.1 sqrt(eps)`` of the dtype, as in ``prox``).
        method: ``"face_newton"`` (the proximal point method above: exact on the kinks, dense in
            the kink rows, for inputs up to a few hundred coordinates) or ``"primal_dual"``
            (:mod:`~socicnn.inference.primal_dual`: matrix-free, every block's maps applied as
            operators, for large inputs such as images; its certificate is the same kind of
            lower bound, from the dual iterate projected onto the blocks' dual sets).
        work_model: ``"primal_dual"`` only: the same function in a lower precision (for a
            contextual model, ``copy.deepcopy(contextual).float().at(theta.float())``), on which
            the iterations run; values and certificates stay in ``model``'s precision, so the gap
            bound is as valid, but the gap the iterations can reach is limited by the lower
            precision's rounding (float32's machine epsilon is about ``1.2e-7``).

    Returns:
        A :class:`MinimizeResult` (no autograd history).

    Raises:
        TypeError: wrong argument types.
        ValueError: an unbounded or empty set, a CVXPY callable (use
            :func:`~socicnn.inference.prox` with ``method="socp"`` for those), ``x0`` of the wrong
            shape or non-finite, non-positive tolerances, a ``work_model`` of another input size or
            number of rows, or with ``method="face_newton"``.
    """
    check_model(model)
    cons = as_constraint(constraint)
    if cons is None or isinstance(cons, CvxpyConstraint):
        raise ValueError(
            "minimize needs a compact Box, Simplex or Budget constraint (a CVXPY callable is not supported)"
        )
    d = model.in_dim
    cons.check(d)
    tol = check_real("tol", tol)
    if not (math.isfinite(tol) and tol > 0):
        raise ValueError(f"tol must be a finite number > 0, got {tol}")
    check_choice("method", method, METHODS)
    if work_model is not None:
        check_model(work_model, "work_model")
        if method != "primal_dual":
            raise ValueError(f'work_model is used by method="primal_dual" only, got method={method!r}')
        if (work_model.in_dim, work_model.rows) != (model.in_dim, model.rows):
            raise ValueError(
                f"work_model must be the same function as model: input size {work_model.in_dim} and "
                f"{work_model.rows} rows against {model.in_dim} and {model.rows}"
            )
    if max_iter is None:
        max_iter = 100 if method == "face_newton" else PD_MAX_ITER
    max_iter, inner_iter = check_integer("max_iter", max_iter), check_integer("inner_iter", inner_iter)
    if max_iter < 0 or inner_iter < 1:
        raise ValueError(f"need max_iter >= 0 and inner_iter >= 1, got {max_iter} and {inner_iter}")
    if x0 is None:
        n = model.rows if model.rows is not None else 1
        x, vector = torch.zeros(n, d, dtype=model.dtype, device=model.device), False
    else:
        x, vector = model.check_input(x0, "x0")
        x = x.detach()
    x = cons.project(x)
    diam = _diameter(cons, x)
    if not math.isfinite(diam):
        raise ValueError("minimize needs a compact set: this Box has an infinite bound")
    eps = torch.finfo(x.dtype).eps
    tie_tol = 0.1 * math.sqrt(eps) if tie_tol is None else check_real("tie_tol", tie_tol)

    t0 = time.perf_counter()
    n = x.shape[0]
    if method == "primal_dual":
        x, value, lower, iterations, _ = primal_dual(
            model, cons, x, tol=tol, max_iter=max_iter, work=work_model) if n else (
            x, x.new_zeros(0), x.new_zeros(0), torch.zeros(0, dtype=torch.long), 0.0)
        return _result(x, value, lower, iterations, tol, t0, vector)
    value = model(x) if n else x.new_zeros(0)
    lower = certified_lower_bound(model, x, cons, tie_tol) if n else x.new_zeros(0)
    iterations = torch.zeros(n, dtype=torch.long, device=x.device)
    # First weight: a proximal step of about the set's diameter at the start's certified slope
    # (gap / diam), i.e. beta = gap / diam^2, rounded to a power of two.
    beta0 = (value - lower).clamp(min=eps) / max(diam, eps) ** 2
    level = torch.round(torch.log2(beta0)).long()
    slow = torch.zeros(n, dtype=torch.bool, device=x.device)
    past = [value.clone()]  # f before the last STALL steps (a row steps at every pass until it stops)
    for _ in range(max_iter):
        running = ((value - lower > tol * value.abs().clamp(min=1.0)) & ~slow).nonzero().squeeze(1)
        if running.numel() == 0:
            break
        sub = model.select(running)
        beta = torch.pow(2.0, level[running].to(x.dtype))
        step = face_newton(
            sub, x[running], beta, cons, max_iter=inner_iter, rtol=eps**0.75, tie_tol=tie_tol,
            identify_after=WARM_IDENTIFY_AFTER,
        )  # fmt: skip
        new_x = cons.project(step.x)
        new_value = sub(new_x)
        better = new_value <= value[running]
        keep = running[better]
        x[keep], value[keep] = new_x[better], new_value[better]
        # A step that stalled at rounding level next to its optimum counts as solved.
        solved = step.converged | (step.gap_bound <= CLOSE * step.value.abs().clamp(min=1.0))
        level[running] = torch.where(solved, level[running] - SHRINK, level[running] + GROW)
        iterations[running] += 1
        bound = certified_lower_bound(sub, x[running], cons, tie_tol)
        lower[running] = torch.maximum(lower[running], bound)
        past = [*past[-STALL:], value.clone()]
        if len(past) > STALL:
            slow[running] = (past[0] - value)[running] < SLOW * (value - lower)[running]
    left = (value - lower > tol * value.abs().clamp(min=1.0)).nonzero().squeeze(1)  # slow, or at max_iter
    if left.numel():
        px, pvalue, plower, _, _ = primal_dual(model.select(left), cons, x[left], tol=tol, max_iter=PD_MAX_ITER)
        take = pvalue < value[left]
        x[left[take]], value[left[take]] = px[take], pvalue[take]
        lower[left] = torch.maximum(lower[left], plower)
    return _result(x, value, lower, iterations, tol, t0, vector)


def _result(x, value, lower, iterations, tol, t0, vector) -> MinimizeResult:
    n = x.shape[0]
    gap = value - lower
    converged = gap <= tol * value.abs().clamp(min=1.0)
    per_row = torch.full((n,), (time.perf_counter() - t0) / max(n, 1), dtype=torch.float64)
    res = MinimizeResult(x, value, lower, gap, converged, iterations, per_row)
    if vector:
        res = MinimizeResult(*(t[0] for t in (x, value, lower, gap, converged, iterations, per_row)))
    return res


def _diameter(cons: Constraint, x: torch.Tensor) -> float:
    """A bound on the set's Euclidean diameter (a scale for the first proximal weight)."""
    d = x.shape[-1]
    width = x.new_zeros(d)
    for start in range(0, d, 512):  # the coordinate directions in chunks: no d x d buffer for images
        k = min(512, d - start)
        rows = x.new_zeros(k, d)
        rows[torch.arange(k), torch.arange(start, start + k)] = 1.0
        width[start : start + k] = -cons.support(-rows) - cons.support(rows)
    return float(torch.linalg.vector_norm(width))
