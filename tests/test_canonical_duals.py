"""Closed-form canonical multipliers (socicnn.readout) against the conic solver's duals.

At a nondegenerate point (every |a_{l,i}| and ||u_g|| away from 0) the optimal duals are unique,
so the solver must return the canonical ``nu``, ``p = alpha q`` and ``r = lam u / ||u||``.

Measured with Clarabel's default tolerances (relative to max(1, max |dual|)), over depth 1..4,
passthrough on/off, 0..2 quadratic and norm blocks at points with margin > 1e-3:
``nu`` 6.6e-7, ``r`` 5e-9, but ``p`` 4.9e-5. The quadratic multiplier is only as accurate as
the square root of the duality gap: the dual objective ``p^T q - ||p||^2 / (2 alpha)`` is
quadratic in ``p``, so a gap of 1e-8 leaves ``p`` undetermined to about sqrt(2 alpha 1e-8) ~ 1e-4
(tightening Clarabel to 1e-10 only brought it to 9e-6). The tolerances below follow.
"""

import itertools

import numpy as np
import pytest
import torch
from witnesses import dual_objective_by_hand, dual_residual_by_hand

import socicnn as sc

F64 = torch.float64
NU_TOL, R_TOL, P_TOL = 1e-5, 1e-6, 1e-3
MIN_MARGIN = 1e-3


def max_relative_difference(closed: torch.Tensor, solver: np.ndarray) -> float:
    return float(np.max(np.abs(closed.numpy() - solver), initial=0.0)) / max(1.0, float(np.max(np.abs(solver))))


@pytest.mark.parametrize(
    "depth, passthrough, n_quad, n_norm",
    [(1, True, 0, 0), (2, False, 0, 0), (3, True, 1, 1), (4, False, 2, 2), (2, True, 2, 0), (3, False, 0, 2)],
)
def test_closed_form_duals_equal_solver_duals(depth, passthrough, n_quad, n_norm):
    d = 3
    model = sc.SOCICNN(
        d, (6,) * depth, quad_dims=(2,) * n_quad, norm_dims=(3,) * n_norm, passthrough=passthrough,
        dtype=F64, seed=depth + 7 * n_quad + 3 * n_norm,
    )
    problem = sc.lifting.LiftedProblem(model, solver="clarabel")
    xs = torch.randn(12, d, dtype=F64)
    ro = sc.readout.readout(model, xs)
    keep = ro.margins > MIN_MARGIN
    assert int(keep.sum()) >= 3, "too few nondegenerate points to test"
    for i in torch.nonzero(keep).flatten().tolist()[:4]:
        sol = problem.solve(xs[i])
        assert len(sol.nu) == depth and len(sol.p) == n_quad and len(sol.r) == n_norm
        for closed, solver in zip(ro.nu, sol.nu, strict=True):
            assert (solver >= -1e-7).all()  # the model's convention: nu >= 0
            assert max_relative_difference(closed[i], solver) < NU_TOL
        for closed, solver in zip(ro.p, sol.p, strict=True):
            assert max_relative_difference(closed[i], solver) < P_TOL
        for closed, solver in zip(ro.r, sol.r, strict=True):
            assert max_relative_difference(closed[i], solver) < R_TOL
        # primal = dual = solver
        f = float(ro.value[i])
        assert abs(float(ro.dual_value[i]) - f) < 1e-12 * max(1.0, abs(f))
        assert abs(sol.value - f) < 1e-6 * max(1.0, abs(f))
        assert abs(sol.gap) < 1e-6 * max(1.0, abs(f))
        assert sol.dual_residual < 1e-6 and sol.primal_residual < 1e-6


@pytest.mark.parametrize("passthrough", [True, False])
def test_canonical_multipliers_are_dual_feasible_and_tight(passthrough):
    model = sc.SOCICNN(4, (8, 8, 8), quad_dims=(3,), norm_dims=(2, 4), passthrough=passthrough, dtype=F64, seed=5)
    xs = torch.randn(64, 4, dtype=F64)
    ro = sc.readout.readout(model, xs)
    w = model.weights()
    # 0 up to rounding: ||lam u / ||u|| || may exceed lam by an ulp.
    assert float(sc.readout.dual_residual(model, ro.nu, ro.p, ro.r).max()) <= 1e-14
    assert float(dual_residual_by_hand(w, ro.nu, ro.r).max()) <= 1e-14
    dual = sc.readout.dual_objective(model, xs, ro.nu, ro.p, ro.r)
    torch.testing.assert_close(dual, dual_objective_by_hand(w, xs, ro.nu, ro.p, ro.r), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(dual, model(xs).detach(), rtol=1e-12, atol=1e-12)


@pytest.mark.filterwarnings("ignore:divide by zero:RuntimeWarning")  # CVXPY's SOC violation at u = 0
def test_canonical_multipliers_at_ties_are_still_optimal():
    """At a tied point (a norm block at u = 0) r = 0 is canonical and the dual value stays exact."""
    model = sc.SOCICNN(2, (5, 5), norm_dims=(2,), dtype=F64, seed=6)
    A, dvec = model.norm_blocks[0].A.detach(), model.norm_blocks[0].d.detach()
    x_tie = torch.linalg.solve(A, -dvec)[None]  # u = A x + d = 0
    ro = sc.readout.readout(model, x_tie, tol=1e-12)
    assert float(ro.margins[0]) < 1e-12 and torch.equal(ro.r[0], torch.zeros_like(ro.r[0]))
    assert float(sc.readout.dual_residual(model, ro.nu, ro.p, ro.r)[0]) == 0.0
    assert abs(float(ro.dual_value[0] - model(x_tie)[0].detach())) < 1e-12
    sol = sc.lifting.solve(model, x_tie[0], solver="clarabel")
    assert abs(sol.value - float(ro.value[0])) < 1e-6 * max(1.0, abs(float(ro.value[0])))


def test_solver_duals_evaluate_to_the_solver_dual_value():
    """LiftingSolution.dual_value and .dual_residual are the dual objective and the dual
    feasibility violation of its (nu, p, r), written out by hand from the weights (the SOCP lifting's dual)."""
    model = sc.SOCICNN(3, (6, 6), quad_dims=(2,), norm_dims=(3,), dtype=F64, seed=8)
    x0 = torch.randn(3, dtype=F64)
    sol = sc.lifting.solve(model, x0, solver="clarabel")

    def batch(arrays):
        return [torch.as_tensor(a)[None] for a in arrays]

    w = model.weights()
    dual = dual_objective_by_hand(w, x0[None], batch(sol.nu), batch(sol.p), batch(sol.r))
    assert abs(float(dual[0]) - sol.dual_value) < 1e-10
    residual = dual_residual_by_hand(w, batch(sol.nu), batch(sol.r))
    assert abs(float(residual[0]) - sol.dual_residual) < 1e-12


def test_wrong_multipliers_are_detected():
    """dual_residual and the dual value are not vacuous: perturbed multipliers fail them."""
    model = sc.SOCICNN(3, (6, 6), norm_dims=(3,), dtype=F64, seed=9)
    xs = torch.randn(8, 3, dtype=F64)
    ro = sc.readout.readout(model, xs)
    too_big_r = [2.0 * r for r in ro.r]  # ||r|| = 2 lam > lam
    lam = float(model.norm_blocks[0].lam.detach())
    res = sc.readout.dual_residual(model, ro.nu, ro.p, too_big_r)
    torch.testing.assert_close(res, torch.full((8,), lam, dtype=F64), rtol=1e-12, atol=0)
    negative_nu = [-nu for nu in ro.nu]
    assert bool((sc.readout.dual_residual(model, negative_nu, ro.p, ro.r) > 0).any())
    # A feasible but non-optimal choice (nu = 0, r = 0) gives a strictly smaller dual value.
    zeros = [torch.zeros_like(t) for t in ro.nu], [], [torch.zeros_like(ro.r[0])]
    assert bool((sc.readout.dual_objective(model, xs, *zeros) < ro.value - 1e-9).all())


@pytest.mark.parametrize("depth, passthrough", list(itertools.product((1, 3), (True, False))))
def test_readout_gradient_is_autograd_gradient(depth, passthrough):
    model = sc.SOCICNN(3, (6,) * depth, quad_dims=(2,), norm_dims=(2,), passthrough=passthrough, dtype=F64, seed=11)
    xs = torch.randn(16, 3, dtype=F64, requires_grad=True)
    (g_auto,) = torch.autograd.grad(model(xs).sum(), xs)
    ro = sc.readout.readout(model, xs.detach())
    keep = ro.margins > MIN_MARGIN
    torch.testing.assert_close(ro.grad[keep], g_auto[keep], rtol=1e-12, atol=1e-12)
