"""Certified minimisation over compact sets (``sc.inference.minimize``) vs a conic solver."""

from __future__ import annotations

import importlib
import math
from types import SimpleNamespace

import cvxpy as cp
import pytest
import torch

import socicnn as sc
from socicnn.inference import Box, Budget, Simplex, minimize
from socicnn.lifting import epigraph
from socicnn.solvers import solve_with_retries

F64 = torch.float64
D = 6


def exact_minimum(model, cons, row=None) -> float:
    """``min_C f`` by Clarabel on the lifted problem with the set's constraints."""
    x = cp.Variable(model.in_dim)
    expr, constraints = epigraph(model, x, row)
    prob = cp.Problem(cp.Minimize(expr), constraints + cons.cvxpy(x))
    assert solve_with_retries(prob, cp.CLARABEL, tol_gap_abs=1e-10, tol_gap_rel=1e-10, tol_feas=1e-10) == "optimal"
    return float(prob.value)


# (set, certified tolerance for the SOC model). On the box [-1, 0.5]^6 the SOC model's minimiser
# sits on a norm-block kink (u = 0) with weak curvature along its face: face Newton stalled there
# at a gap of a few 1e-6 until its stall escape (the certificate's plain step -s / beta) left it.
SETS = [
    (Box(0.0, 1.0), 1e-6),
    (Box(-1.0, 0.5), 1e-6),
    (Simplex(1.0), 1e-6),
    (Budget(2.0), 1e-6),
    (Budget(0.3 * D, equality=True), 1e-6),
]
SET_IDS = ["box01", "box", "simplex", "budget", "budget-eq"]


@pytest.mark.parametrize("cons, soc_tol", SETS, ids=SET_IDS)
@pytest.mark.parametrize("family", ["soc", "relu"])
def test_minimize_is_certified_and_matches_the_conic_solver(cons, soc_tol, family):
    if family == "soc":
        model = sc.SOCICNN(D, (16, 16), quad_dims=(3,), norm_dims=(3, 2), dtype=F64, seed=1)
    else:  # piecewise linear: the minimiser sits on kinks and constraint rows, maybe not unique
        model = sc.ReLUICNN(D, (16, 16), dtype=F64, seed=2)
    x0 = torch.rand(8, D, dtype=F64, generator=torch.Generator().manual_seed(0)) * 2 - 0.5
    tol = soc_tol if family == "soc" else 1e-6
    res = minimize(model, cons, x0, tol=tol)
    assert_certified(res, model, cons, exact_minimum(model, cons), tol, slack=1e-7)


def assert_certified(res, model, cons, f_star: float, tol: float, slack: float) -> None:
    """Every row certified, feasible, its value the model's, and the certificate brackets the
    solver's optimum ``f_star`` (up to ``slack``, relative: the solver's own accuracy)."""
    scale = max(1.0, abs(f_star))
    assert bool(res.converged.all()), res.gap_bound
    torch.testing.assert_close(cons.project(res.x), res.x, rtol=0, atol=1e-12)
    torch.testing.assert_close(res.value, model(res.x).detach(), rtol=0, atol=1e-13)
    assert float(res.lower_bound.max()) <= f_star + slack * scale
    assert float((res.value - f_star).max()) <= (tol + slack) * scale
    assert float(res.gap_bound.max()) <= tol * res.value.abs().clamp(min=1.0).max()


def test_minimize_solves_each_row_with_its_own_data():
    base = sc.SOCICNN(D, (8, 8), quad_dims=(2,), norm_dims=(3,), dtype=F64, seed=3)
    g = torch.Generator().manual_seed(4)
    data = [dict(b.default_data()) for b in base.blocks()]
    rows = 4
    for entry in data:
        for name, value in entry.items():
            per_row = value.expand(rows, *value.shape).clone()
            if name.startswith("b"):
                per_row = per_row + 0.5 * torch.randn(per_row.shape, dtype=F64, generator=g)
            entry[name] = per_row
    model = base.bind(data)
    cons = Simplex(1.0)
    res = minimize(model, cons, tol=1e-6)  # x0 = None: one start per row of data
    assert res.x.shape == (rows, D) and bool(res.converged.all())
    for i in range(rows):
        f_star = exact_minimum(model, cons, row=i)
        assert abs(float(res.value[i]) - f_star) <= 1e-6 * max(1.0, abs(f_star))


def test_a_vector_start_gives_scalars_and_a_start_at_the_optimum_stops_at_once():
    model = sc.SOCICNN(D, (8,), quad_dims=(2,), dtype=F64, seed=5)
    cons = Box(0.0, 1.0)
    first = minimize(model, cons, torch.full((D,), 0.5, dtype=F64))
    assert first.x.shape == (D,) and first.value.shape == ()
    again = minimize(model, cons, first.x)
    assert int(again.iterations) == 0 and bool(again.converged)


def test_the_lower_bound_is_valid_far_from_the_optimum():
    # At an arbitrary feasible point the certificate is loose but still a lower bound.
    model = sc.SOCICNN(D, (16, 16), quad_dims=(3,), norm_dims=(3,), dtype=F64, seed=6)
    cons = Budget(0.3 * D, equality=True)
    x = cons.project(torch.rand(5, D, dtype=F64, generator=torch.Generator().manual_seed(7)))
    lower = sc.inference.certified_lower_bound(model, x, cons, 1e-9)
    f_star = exact_minimum(model, cons)
    assert float(lower.max()) <= f_star + 1e-8
    assert bool(torch.isfinite(lower).all())


@pytest.mark.parametrize(
    "cons, match",
    [
        (None, "compact Box, Simplex or Budget"),
        (Box(0.0, math.inf), "infinite bound"),
        (lambda x: [x >= 0], "CVXPY callable"),
    ],
    ids=["none", "unbounded", "callable"],
)
def test_minimize_needs_a_compact_named_set(cons, match):
    model = sc.SOCICNN(D, (4,), dtype=F64, seed=0)
    with pytest.raises(ValueError, match=match):
        minimize(model, cons)


def test_minimize_rejects_bad_arguments():
    model = sc.SOCICNN(D, (4,), dtype=F64, seed=0)
    with pytest.raises(ValueError, match="x0"):
        minimize(model, Box(0, 1), torch.zeros(3, D + 1, dtype=F64))
    with pytest.raises(ValueError, match="tol"):
        minimize(model, Box(0, 1), tol=0.0)
    with pytest.raises(ValueError, match="budget <= d"):
        minimize(model, Budget(D + 1.0, equality=True))


def test_a_degenerate_vertex_is_certified():
    # A strong linear term puts the minimum over {0 <= x <= 1, sum x = 2} on a vertex, with more
    # active rows (d bounds + the sum) than coordinates: the least-squares row multipliers are not
    # unique, clipping them loses the certificate (a gap of 4.3 here), the support function does not.
    base = sc.ReLUICNN(D, (4,), dtype=F64, seed=0)
    g = torch.tensor([0.01, 10.0, 10.0, 10.0, -0.5, -0.6], dtype=F64)
    model = base.bind([{"v": g}])
    cons = Budget(2.0, equality=True)
    vertex = torch.tensor([[0.0, 0.0, 0.0, 0.0, 1.0, 1.0]], dtype=F64)
    f_star = exact_minimum(model, cons)
    assert abs(float(model(vertex).detach()) - f_star) <= 1e-8  # the vertex is the minimiser
    lower = sc.inference.certified_lower_bound(model, vertex, cons, 1e-9)
    assert float(model(vertex).detach() - lower) <= 1e-12
    res = minimize(model, cons, torch.full((D,), 1 / 3, dtype=F64))
    assert bool(res.converged) and float(res.value) - f_star <= 1e-7


def test_rows_left_uncertified_by_face_newton_are_finished_by_the_primal_dual_method():
    # max_iter = 0: no proximal step, every row (started away from the optimum) is handed over.
    model = sc.ReLUICNN(D, (16, 16), dtype=F64, seed=2)
    cons = Box(0.0, 1.0)
    x0 = torch.rand(4, D, dtype=F64, generator=torch.Generator().manual_seed(0))
    res = minimize(model, cons, x0, tol=1e-6, max_iter=0)
    assert int(res.iterations.max()) == 0
    assert_certified(res, model, cons, exact_minimum(model, cons), 1e-6, slack=1e-7)


@pytest.mark.parametrize("fraction", [0.0, 1e-6], ids=["frozen", "creeping"])
def test_a_slow_row_stops_its_proximal_steps_and_is_handed_over(monkeypatch, fraction):
    # A face Newton that moves each row by `fraction` of the way to a minimiser: never (frozen) or
    # a millionth (creeping: f decreases at every step, but by far less than SLOW times the gap over
    # STALL steps). Each row stops after STALL steps, not max_iter, and the primal-dual method still
    # certifies it.
    mz = importlib.import_module("socicnn.inference.minimize")  # the package's name is the function
    model = sc.SOCICNN(D, (8, 8), quad_dims=(2,), norm_dims=(3,), dtype=F64, seed=3)
    cons = Simplex(1.0)
    target = minimize(model, cons, tol=1e-9).x  # a minimiser
    calls = []

    def slow_step(model, x, beta, cons, **kw):
        calls.append(x.shape[0])
        y = x + fraction * (target - x)
        v = model(y)
        return SimpleNamespace(x=y, value=v, converged=torch.zeros_like(v, dtype=torch.bool),
                               gap_bound=torch.full_like(v, math.inf))

    monkeypatch.setattr(mz, "face_newton", slow_step)
    x0 = torch.eye(D, dtype=F64)[:3]  # vertices, away from the minimiser
    res = minimize(model, cons, x0, tol=1e-6, max_iter=50)
    assert calls == [3] * mz.STALL and res.iterations.tolist() == [mz.STALL] * 3
    assert_certified(res, model, cons, exact_minimum(model, cons), 1e-6, slack=1e-7)
