"""The six parametric decision tasks of paper A's experiment 3, as a registry.

Every task is ``f(theta, x) = (s/2) ||w * (x - m(theta))||^2 + c(theta)^T x + g(theta, x)`` over a
feasible set ``C`` (simplex ``{x >= 0, sum x = 1}``, box ``[0, 1]^d``, or the budget set ``{0 <= x
<= 1, sum x = 0.3 d}``), with a context ``theta in R^8``, ``theta ~ N(0, I)``:

- ``m(theta)`` affine in ``theta``, mapped into the set (simplex: softplus then normalised; box and
  budget: clipped to ``[0, 1]``); ``c(theta) = clip(c_0 + C theta, -2, 2)``;
- ``g`` is a sum of cones ``lam_j(theta) ||A_j x - d_j(theta)||`` (``*_socp``), of weighted
  softplus atoms ``beta_i(theta) softplus(a_i^T x - shift_i(theta))`` (``simplex_logistic``), of two
  weighted log-sum-exps (``box_logsumexp``) or of weighted Huber atoms with CVXPY's convention
  ``z^2`` inside ``|z| <= delta`` and ``2 delta |z| - delta^2`` outside (``budget_huber``);
  the weights ``lam``, ``beta`` are ``floor + softplus(affine(theta))``.

The templates (random matrices ``scale * N(0, 1) / sqrt(cols)`` and uniform offsets) and the data
splits are drawn exactly as the reference data generator describes them, from the same seeds
(``2026 + 1000 * task_index + d`` for the template, ``+ 10000`` for training, ``+ 20000`` for
testing), so a split is a deterministic function of (task, d, split sizes).

The true objective exists twice: in PyTorch (float64, to score decisions) and in CVXPY with the
context's data as ``cp.Parameter`` objects (one compiled problem per task, to compute the exact optimum
``x*(theta)``, ``f*`` with Clarabel; the status is checked and ``f*`` is re-evaluated by the
PyTorch objective at ``x*`` projected onto ``C``).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field

import cvxpy as cp
import numpy as np
import torch
import torch.nn.functional as F

from .._checks import check_choice
from ..inference import Box, Budget, Constraint, Simplex
from ..solvers import solve_with_retries

__all__ = [
    "BASE_SEED",
    "CERTIFIED_TOL",
    "CONTEXT_DIM",
    "TASKS",
    "DecisionTask",
    "Split",
    "make_split",
    "make_task",
]

BASE_SEED = 2026
CONTEXT_DIM = 8
# name -> (objective family, feasible set)
TASKS = {
    "simplex_socp": ("socp", "simplex"),
    "box_socp": ("socp", "box"),
    "budget_twocone_socp": ("socp_two", "budget"),
    "simplex_logistic": ("logistic", "simplex"),
    "box_logsumexp": ("logsumexp", "box"),
    "budget_huber": ("huber", "budget"),
}
QUAD_SCALE = {"socp": 1.0, "socp_two": 1.0, "logistic": 0.35, "logsumexp": 0.35, "huber": 0.25}
HUBER_DELTA = 0.35
F64 = torch.float64
# The largest certified relative gap (f(x*) - lower bound) / max(1, |f(x*)|) accepted for x*.
CERTIFIED_TOL = 1e-7


def _gauss(rng: np.random.Generator, rows: int, cols: int, scale: float = 1.0) -> np.ndarray:
    return scale * rng.standard_normal((rows, cols)) / np.sqrt(max(cols, 1))


@dataclass
class DecisionTask:
    """One task at one decision dimension: its template, objective, set and samplers.

    Attributes:
        name, family, feasible: the registry entry; dim ``d``, context_dim ``p``.
        tpl: the template's arrays (float64).
        terms: the family's atoms, a list of ``(A, shift0, shift_ctx)`` with the weights' maps in
            ``weight_W``, ``weight_b`` and ``weight_floor`` (``lam`` or ``beta``).
    """

    name: str
    family: str
    feasible: str
    dim: int
    context_dim: int
    tpl: dict[str, np.ndarray]
    terms: list[tuple[np.ndarray, np.ndarray, np.ndarray]]
    weight_W: np.ndarray
    weight_b: np.ndarray
    weight_floor: float
    _problem: tuple | None = field(default=None, repr=False)

    @property
    def budget(self) -> float | None:
        return 0.3 * self.dim if self.feasible == "budget" else None

    def constraint(self) -> Constraint:
        """The feasible set as a constraint of :mod:`socicnn.inference`."""
        if self.feasible == "simplex":
            return Simplex(1.0)
        if self.feasible == "box":
            return Box(0.0, 1.0)
        return Budget(self.budget, equality=True)

    # ----------------------------------------------------------------- context -> data
    def context_data(self, theta) -> dict[str, torch.Tensor]:
        """The context's data ``(N, ...)`` (float64): ``m``, ``c``, the atoms' weights and shifts."""
        th = torch.as_tensor(np.asarray(theta, dtype=float), dtype=F64)
        if th.ndim == 1:
            th = th[None]
        t = {k: torch.as_tensor(v, dtype=F64) for k, v in self.tpl.items()}
        m_raw = t["m0"] + th @ t["M_ctx"].T
        if self.feasible == "simplex":
            pos = F.softplus(m_raw) + 1e-6
            m = pos / pos.sum(-1, keepdim=True)
        else:
            m = m_raw.clamp(0.0, 1.0)
        c = (t["c0"] + th @ t["C_ctx"].T).clamp(-2.0, 2.0)
        weight = self.weight_floor + F.softplus(th @ torch.as_tensor(self.weight_W).T + torch.as_tensor(self.weight_b))
        shifts = [torch.as_tensor(s0) + th @ torch.as_tensor(sc).T for _, s0, sc in self.terms]
        return {"m": m, "c": c, "weight": weight, "shifts": shifts}

    # ----------------------------------------------------------------- objective (torch)
    def objective(self, x: torch.Tensor, theta) -> torch.Tensor:
        """``f(theta_i, x_i)`` ``(N,)`` in float64 (``x`` ``(N, d)``, ``theta`` ``(N, p)``)."""
        x = torch.as_tensor(x, dtype=F64)
        data = self.context_data(theta)
        w = torch.as_tensor(self.tpl["quad_w"])
        s = QUAD_SCALE[self.family]
        out = 0.5 * s * ((w * (x - data["m"])) ** 2).sum(-1) + (x * data["c"]).sum(-1)
        weight = data["weight"]
        if self.family in ("socp", "socp_two", "logsumexp"):
            for j, ((A, _, _), shift) in enumerate(zip(self.terms, data["shifts"], strict=True)):
                z = x @ torch.as_tensor(A).T - shift
                atom = torch.linalg.vector_norm(z, dim=-1) if self.family != "logsumexp" else torch.logsumexp(z, -1)
                out = out + weight[:, j] * atom
        else:
            A = torch.as_tensor(self.terms[0][0])
            z = x @ A.T - data["shifts"][0]
            if self.family == "logistic":
                atom = F.softplus(z)
            else:
                a = z.abs()
                atom = torch.where(a <= HUBER_DELTA, z * z, 2 * HUBER_DELTA * a - HUBER_DELTA**2)
            out = out + (weight * atom).sum(-1)
        return out

    # ----------------------------------------------------------------- exact optimum (CVXPY)
    def _compiled(self):
        """One parametrised CVXPY problem for every context (built once)."""
        if self._problem is not None:
            return self._problem
        d = self.dim
        x = cp.Variable(d)
        w = self.tpl["quad_w"]
        s = QUAD_SCALE[self.family]
        wm = cp.Parameter(d)  # w * m(theta)
        c = cp.Parameter(d)
        n_w = self.weight_b.shape[0]
        weight = cp.Parameter(n_w, nonneg=True)
        shifts = [cp.Parameter(s0.shape[0]) for _, s0, _ in self.terms]
        expr = 0.5 * s * cp.sum_squares(cp.multiply(w, x) - wm) + c @ x
        # Weighted atoms through epigraph variables t >= atom, so that each parameter multiplies
        # a variable only (the problem stays DPP: compiled once, re-solved per context).
        if self.family in ("socp", "socp_two", "logsumexp"):
            t = cp.Variable(len(self.terms))
            atom = (lambda z: cp.norm(z, 2)) if self.family != "logsumexp" else cp.log_sum_exp
            cons = [t[j] >= atom(A @ x - shifts[j]) for j, (A, _, _) in enumerate(self.terms)]
        else:
            t = cp.Variable(n_w)
            z = self.terms[0][0] @ x - shifts[0]
            cons = [t >= (cp.logistic(z) if self.family == "logistic" else cp.huber(z, HUBER_DELTA))]
        expr = expr + weight @ t
        problem = cp.Problem(cp.Minimize(expr), cons + self.constraint().cvxpy(x))
        self._problem = (problem, x, wm, c, weight, shifts)
        return self._problem

    def solve_exact(self, theta) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Exact ``x*`` ``(N, d)`` (projected onto ``C``), ``f*`` ``(N,)`` (the PyTorch objective
        at ``x*``) and the certified gap ``(f* - lower bound) / max(1, |f*|)`` ``(N,)`` of
        :meth:`certified_gap`.

        Clarabel solves the compiled problem; a context whose status is not ``optimal`` is
        re-solved with other settings (:func:`socicnn.solvers.solve_with_retries`). Raises ``RuntimeError`` when the
        final status is neither ``optimal`` nor ``optimal_inaccurate``, when the solver's value and
        the PyTorch objective disagree beyond ``1e-6`` relative, or when the certified gap exceeds
        ``CERTIFIED_TOL`` (so an ``optimal_inaccurate`` solve is kept only when certified)."""
        theta = np.atleast_2d(np.asarray(theta, dtype=float))
        problem, x, wm, c, weight, shifts = self._compiled()
        data = self.context_data(theta)
        w = self.tpl["quad_w"]
        xs, vals = [], []
        for i in range(theta.shape[0]):
            wm.value = w * data["m"][i].numpy()
            c.value = data["c"][i].numpy()
            weight.value = data["weight"][i].numpy()
            for p, sh in zip(shifts, data["shifts"], strict=True):
                p.value = sh[i].numpy()
            solve_with_retries(problem, cp.CLARABEL)  # an inaccurate status is handled below
            if problem.status not in (cp.OPTIMAL, cp.OPTIMAL_INACCURATE):
                raise RuntimeError(
                    f"{self.name} (d={self.dim}): the exact solve of context {i} returned {problem.status!r}"
                )
            xs.append(np.asarray(x.value, dtype=float))
            vals.append(float(problem.value))
        x_star = self.constraint().project(torch.as_tensor(np.stack(xs), dtype=F64))
        f_star = self.objective(x_star, theta)
        solver_vals = torch.as_tensor(vals, dtype=F64)
        worst = float(((f_star - solver_vals).abs() / solver_vals.abs().clamp(min=1.0)).max())
        if worst > 1e-6:
            raise RuntimeError(f"{self.name} (d={self.dim}): f(x*) and the solver's value differ by {worst:.2e}")
        gap = self.certified_gap(x_star, theta) / f_star.abs().clamp(min=1.0)
        bad = int(gap.argmax())
        if float(gap[bad]) > CERTIFIED_TOL:
            raise RuntimeError(
                f"{self.name} (d={self.dim}): the exact solve of context {bad} is certified only to "
                f"{float(gap[bad]):.1e} relative (> {CERTIFIED_TOL:.0e})"
            )
        return x_star.numpy(), f_star.numpy(), gap.numpy()

    # ----------------------------------------------------------------- optimality certificate
    def certified_gap(self, x, theta, *, max_iter: int = 5000) -> torch.Tensor:
        """An upper bound ``(N,)`` on ``f(theta_i, x_i) - min_C f(theta_i, .)`` for feasible ``x``
        ``(N, d)``, from a Lagrangian lower bound that needs no solver.

        Every atom is bounded below by an affine function: a smooth atom by its tangent at ``x``,
        a norm by ``u^T z`` with ``||u|| <= 1``. What remains is the separable quadratic
        ``(s/2) ||w * (x - m)||^2`` plus a linear term, minimised over ``C`` in closed form up to
        the multiplier of ``sum x`` (any multiplier gives a lower bound; bisection picks a good
        one). For the norm families the ``u_j`` then follow accelerated projected ascent on this
        concave dual function (it is smooth: the quadratic is strongly convex), from the norms'
        gradients at ``x``, until every row's gap is below ``CERTIFIED_TOL / 10`` relative or
        ``max_iter`` steps; near a kink (``A_j x = d_j``) the gradient is not the right ``u_j``."""
        x = torch.as_tensor(x, dtype=F64)
        data = self.context_data(theta)
        a = QUAD_SCALE[self.family] * torch.as_tensor(self.tpl["quad_w"]) ** 2
        m, c, weight = data["m"], data["c"], data["weight"]
        f = self.objective(x, theta)
        target = 0.1 * CERTIFIED_TOL * f.abs().clamp(min=1.0)

        def bound(lin: torch.Tensor, const: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return _separable_bound(a, m, c + lin, const, self.feasible, self.budget)

        if self.family not in ("socp", "socp_two"):
            xr = x.clone().requires_grad_(True)
            quad = 0.5 * (a * (xr - m) ** 2).sum(-1) + (c * xr).sum(-1)
            atoms = self.objective(xr, theta) - quad
            (grad,) = torch.autograd.grad(atoms.sum(), xr)
            return f - bound(grad, atoms.detach() - (grad * x).sum(-1))[0]
        mats = [torch.as_tensor(A) for A, _, _ in self.terms]
        lip = sum(float(weight[:, j].max()) ** 2 * float(torch.linalg.matrix_norm(A, 2)) ** 2
                  for j, A in enumerate(mats)) / float(a.min())

        def dual(us: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
            pairs = list(enumerate(zip(us, mats, data["shifts"], strict=True)))
            lin = sum(weight[:, j : j + 1] * (u @ A) for j, (u, A, _) in pairs)
            const = -sum(weight[:, j] * (u * sh).sum(-1) for j, (u, _, sh) in pairs)
            return bound(lin, const)

        def ball(u: torch.Tensor) -> torch.Tensor:
            return u / torch.linalg.vector_norm(u, dim=-1, keepdim=True).clamp(min=1.0)

        zs = [x @ A.T - sh for A, sh in zip(mats, data["shifts"], strict=True)]
        us = [z / torch.linalg.vector_norm(z, dim=-1, keepdim=True).clamp(min=1e-300) for z in zs]
        best, _ = dual(us)
        ys, t = us, 1.0
        for _ in range(max_iter):
            if bool((f - best <= target).all()):
                break
            value, xm = dual(ys)
            best = torch.maximum(best, value)
            new = [ball(y + weight[:, j : j + 1] * (xm @ A.T - sh) / lip)
                   for j, (y, A, sh) in enumerate(zip(ys, mats, data["shifts"], strict=True))]
            t_next = 0.5 * (1.0 + math.sqrt(1.0 + 4.0 * t * t))
            ys = [ball(n + (t - 1.0) / t_next * (n - o)) for n, o in zip(new, us, strict=True)]
            us, t = new, t_next
        return f - torch.maximum(best, dual(us)[0])

    # ----------------------------------------------------------------- samplers
    def sample_candidates(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """``n`` decisions uniform on ``C`` (Dirichlet for the simplex; for the budget set a scaled
        Dirichlet with rejection of rows that leave the cap 1)."""
        d = self.dim
        if self.feasible == "simplex":
            return rng.dirichlet(np.ones(d), size=n)
        if self.feasible == "box":
            return rng.uniform(0.0, 1.0, size=(n, d))
        out, have = [], 0
        batch = max(4 * n, 256)
        while have < n:
            z = rng.gamma(1.0, 1.0, size=(batch, d))
            xs = self.budget * z / z.sum(1, keepdims=True)
            good = xs[xs.max(1) <= 1.0 + 1e-12]
            out.append(good)
            have += good.shape[0]
        return np.concatenate(out)[:n]


def _separable_bound(a, m, g, const, feasible: str, budget: float | None) -> tuple[torch.Tensor, torch.Tensor]:
    """A lower bound ``(N,)`` on ``min_{x in C} sum_i a_i/2 (x_i - m_i)^2 + g_i x_i + const`` and its
    minimiser ``(N, d)``: exact on the box; on the simplex and the budget set the Lagrangian with
    the multiplier ``nu`` of ``sum x = total`` (a lower bound for every ``nu``), ``nu`` found by
    bisection on the clipped minimiser ``x(nu) = clip(m - (g + nu) / a, 0, hi)``."""
    hi = math.inf if feasible == "simplex" else 1.0

    def at(nu: torch.Tensor) -> torch.Tensor:
        return (m - (g + nu) / a).clamp(0.0, hi)

    def value(x: torch.Tensor) -> torch.Tensor:
        return 0.5 * (a * (x - m) ** 2).sum(-1) + (g * x).sum(-1) + const

    if feasible == "box":
        x = at(torch.zeros_like(g[:, :1]))
        return value(x), x
    total = 1.0 if feasible == "simplex" else float(budget)
    # sum x(nu) is nonincreasing in nu: 0 at nu_hi, at least total at nu_lo.
    nu_hi = (a * m - g).max(-1, keepdim=True).values
    nu_lo = (a * (m - min(hi, total)) - g).min(-1, keepdim=True).values
    for _ in range(100):
        mid = 0.5 * (nu_lo + nu_hi)
        over = at(mid).sum(-1, keepdim=True) > total
        nu_lo, nu_hi = torch.where(over, mid, nu_lo), torch.where(over, nu_hi, mid)
    nu = 0.5 * (nu_lo + nu_hi)
    x = at(nu)
    return value(x) + nu[:, 0] * (x.sum(-1) - total), x


def make_task(name: str, dim: int, context_dim: int = CONTEXT_DIM, base_seed: int = BASE_SEED) -> DecisionTask:
    """The task ``name`` at decision dimension ``dim`` (its template drawn from its fixed seed)."""
    check_choice("task", name, tuple(TASKS))
    if isinstance(dim, bool) or not isinstance(dim, int) or dim < 2:
        raise ValueError(f"dim must be an integer >= 2, got {dim!r}")
    return _make_task(name, dim, context_dim, base_seed)


@functools.lru_cache(maxsize=64)
def _make_task(name: str, dim: int, p: int, base_seed: int) -> DecisionTask:
    family, feasible = TASKS[name]
    rng = np.random.default_rng(base_seed + 1000 * list(TASKS).index(name) + dim)
    tpl: dict[str, np.ndarray] = {}
    if feasible == "simplex":
        m0 = rng.random(dim)
        tpl["m0"], m_scale = m0 / m0.sum(), 0.08
    elif feasible == "box":
        tpl["m0"], m_scale = rng.uniform(0.20, 0.80, size=dim), 0.25
    else:
        tpl["m0"], m_scale = rng.uniform(0.10, 0.55, size=dim), 0.20
    tpl["quad_w"] = rng.uniform(0.8, 1.6, size=dim)
    tpl["M_ctx"] = _gauss(rng, dim, p, m_scale)
    tpl["c0"] = rng.uniform(-0.30, 0.30, size=dim)
    tpl["C_ctx"] = _gauss(rng, dim, p, 0.20 if feasible != "box" else 0.25)
    terms = []
    if family in ("socp", "socp_two"):
        cones = [max(4, dim // 3)] if family == "socp" else [max(4, dim // 4), max(3, dim // 5)]
        lo, hi = {"simplex": (0.20, 0.60), "box": (0.25, 0.80), "budget": (0.20, 0.70)}[feasible]
        weight_W = _gauss(rng, len(cones), p, 0.20 if feasible != "box" else 0.25)
        weight_b = rng.uniform(lo, hi, size=len(cones))
        floor = 0.10
        for k in cones:
            A = _gauss(rng, k, dim)
            d0 = rng.uniform(-0.30, 0.30, size=k)
            terms.append((A, d0, _gauss(rng, k, p, 0.25)))
    elif family == "logistic":
        n = max(6, dim // 3)
        weight_W, weight_b, floor = _gauss(rng, n, p, 0.15), rng.uniform(0.20, 0.70, size=n), 0.05
        A = _gauss(rng, n, dim)
        s0 = rng.uniform(-0.40, 0.40, size=n)
        terms.append((A, s0, _gauss(rng, n, p, 0.25)))
    elif family == "logsumexp":
        k = max(4, dim // 5)
        weight_W, weight_b, floor = _gauss(rng, 2, p, 0.15), rng.uniform(0.20, 0.60, size=2), 0.05
        for _ in range(2):
            A = _gauss(rng, k, dim)
            s0 = rng.uniform(-0.35, 0.35, size=k)
            terms.append((A, s0, _gauss(rng, k, p, 0.22)))
    else:
        n = max(8, dim // 2)
        weight_W, weight_b, floor = _gauss(rng, n, p, 0.10), rng.uniform(0.10, 0.45, size=n), 0.05
        A = _gauss(rng, n, dim)
        s0 = rng.uniform(-0.30, 0.30, size=n)
        terms.append((A, s0, _gauss(rng, n, p, 0.18)))
    return DecisionTask(name, family, feasible, dim, p, tpl, terms, weight_W, weight_b, floor)


@dataclass
class Split:
    """A data split of one task: contexts ``(n, p)``, candidate decisions ``(n, k, d)`` and their
    true values ``(n, k)``; for a test split also ``x_star`` ``(n, d)``, ``f_star`` ``(n,)`` and the
    certified relative gap ``gap_star`` ``(n,)`` of ``f_star``."""

    theta: np.ndarray
    cand_x: np.ndarray
    cand_y: np.ndarray
    x_star: np.ndarray | None = None
    f_star: np.ndarray | None = None
    gap_star: np.ndarray | None = None

    def flat(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(x, theta, y)`` with one row per candidate."""
        n, k, d = self.cand_x.shape
        return self.cand_x.reshape(n * k, d), np.repeat(self.theta, k, axis=0), self.cand_y.reshape(n * k)


def make_split(task: DecisionTask, which: str, n_instances: int, n_candidates: int) -> Split:
    """The ``"train"`` or ``"test"`` split (seeded as the reference: ``base + 10000`` / ``+ 20000``
    ``+ 1000 * task_index + d``); the test split carries the exact optimum of every instance.
    Draws per instance: the context, then its candidates (the reference's order)."""
    check_choice("which", which, ("train", "test"))
    return _make_split(task.name, task.dim, task.context_dim, which, int(n_instances), int(n_candidates))


@functools.lru_cache(maxsize=32)
def _make_split(name: str, dim: int, p: int, which: str, n: int, k: int) -> Split:
    task = _make_task(name, dim, p, BASE_SEED)
    offset = 10000 if which == "train" else 20000
    rng = np.random.default_rng(BASE_SEED + offset + 1000 * list(TASKS).index(name) + dim)
    theta = np.zeros((n, p))
    cand = np.zeros((n, k, dim))
    for i in range(n):
        theta[i] = rng.standard_normal(p)
        cand[i] = task.sample_candidates(rng, k)
    y = task.objective(torch.as_tensor(cand.reshape(n * k, dim)), np.repeat(theta, k, axis=0)).numpy().reshape(n, k)
    split = Split(theta, cand, y)
    if which == "test":
        split.x_star, split.f_star, split.gap_star = task.solve_exact(theta)
    return split
