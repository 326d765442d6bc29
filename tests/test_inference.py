"""White-box inference: every method, every constraint set, every bad input."""

from __future__ import annotations

import cvxpy as cp
import numpy as np
import pytest
import torch

import socicnn as sc
from socicnn.inference import Box, Budget, Simplex, prox
from socicnn.solvers import solve_with_retries

BETA = 10.0


@pytest.fixture(scope="module")
def model():
    return sc.SOCICNN(6, (16, 16, 16), quad_dims=(4,), norm_dims=(4, 4), dtype=torch.float64, seed=3)


@pytest.fixture(scope="module")
def y():
    return torch.randn(12, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="module")
def reference(model, y):
    return prox(model, y, BETA, method="socp")


def rel_gap(res, ref):
    return (res.value - ref.value) / ref.value.abs().clamp(min=1.0)


def test_socp_reference_is_certified(reference):
    assert reference.status == ["optimal"] * 12
    assert float(reference.certificate.max()) <= 1e-6
    assert reference.x.shape == (12, 6)


def test_newton_reaches_the_exact_optimum_on_every_query(model, y, reference):
    res = prox(model, y, BETA, method="newton")
    assert bool(res.converged.all())
    assert float(rel_gap(res, reference).max()) <= 1e-8
    # The certified bound eps + ||s||^2 / (2 beta) holds (up to the solver's own accuracy) and met rtol.
    assert bool((res.value - reference.value <= res.gap_bound + 1e-8).all())
    assert bool((res.gap_bound <= 1e-11 * res.value.abs().clamp(min=1.0)).all())
    assert int(res.iterations.max()) <= 30


def test_optima_on_kinks_are_common_and_newton_lands_on_them(model, y, reference):
    res = prox(model, y, BETA, method="newton")
    a = torch.cat(model.backbone.preactivations(res.x), 1).abs()
    on_kink = (a <= 1e-12).any(1)
    assert int(on_kink.sum()) >= 3  # several optima lie exactly on a ReLU kink


def test_readout_and_autograd_loops_agree(model, y):
    for first, second in (("newton", "autograd-newton"), ("gd", "autograd-gd")):
        kw = {"faces": False} if first == "newton" else {}
        a = prox(model, y[:4], BETA, method=first, max_iter=5, **kw)
        b = prox(model, y[:4], BETA, method=second, max_iter=5)
        torch.testing.assert_close(a.x, b.x, rtol=0, atol=1e-9)


@pytest.mark.parametrize("method", ["gd", "autograd-gd", "autograd-newton", "lbfgs"])
def test_baselines_descend_and_stay_close(model, y, reference, method):
    res = prox(model, y[:6], BETA, method=method, max_iter=60)
    gap = (res.value - reference.value[:6]) / reference.value[:6].abs().clamp(min=1.0)
    assert float(gap.min()) >= -1e-7  # nobody beats the exact optimum
    assert float(gap.max()) <= 1e-2
    start = prox(model, y[:6], BETA, method=method, max_iter=1).history[0]
    assert bool((res.value <= start + 1e-12).all())
    assert res.time.shape == (6,) and bool((res.time > 0).all())


def test_plain_newton_stalls_on_kinks_where_face_newton_converges(model, y, reference):
    plain = prox(model, y, BETA, method="newton", faces=False, max_iter=40)
    assert int((~plain.converged).sum()) >= 1


@pytest.mark.parametrize("cons", [Box(-0.3, 0.4), Simplex(1.0), Budget(1.5)], ids=["box", "simplex", "budget"])
def test_constrained_newton_and_projected_gd_match_socp(model, y, cons):
    ref = prox(model, y, BETA, method="socp", constraint=cons)
    newton = prox(model, y, BETA, method="newton", constraint=cons)
    gd = prox(model, y, BETA, method="gd", constraint=cons, max_iter=300)
    # Certified: F - F* <= eps + ||s||^2 / (2 beta), whether or not it reached rtol on every query.
    assert float(newton.gap_bound.max()) <= 1e-9
    assert int(newton.converged.sum()) >= 10
    assert float(rel_gap(newton, ref).abs().max()) <= 1e-7
    assert float(rel_gap(gd, ref).max()) <= 1e-3
    for res in (newton, gd):
        torch.testing.assert_close(cons.project(res.x), res.x, rtol=0, atol=1e-12)


def test_user_cvxpy_constraint_via_socp(model, y):
    res = prox(model, y[:3], BETA, method="socp", constraint=lambda x: [cp.norm(x, 2) <= 0.5])
    assert bool((res.x.norm(dim=1) <= 0.5 + 1e-6).all())
    box = prox(model, y[:3], BETA, method="socp", constraint=Box(-0.2, 0.2))
    same = prox(model, y[:3], BETA, method="socp", constraint=lambda x: [x >= -0.2, x <= 0.2])
    torch.testing.assert_close(box.value, same.value, rtol=1e-7, atol=1e-7)


def test_vector_query_and_float32(model, y):
    one = prox(model, y[0], BETA)
    assert one.x.shape == (6,) and one.value.ndim == 0 and bool(one.converged)
    m32 = sc.SOCICNN(6, (16, 16), quad_dims=(4,), dtype=torch.float32, seed=0)
    res = prox(m32, y.float(), BETA)
    ref = prox(m32.double(), y, BETA, method="socp")
    assert float((res.value.double() - ref.value).abs().max()) <= 1e-4


def test_same_seed_same_numbers(model, y):
    a, b = prox(model, y, BETA), prox(model, y, BETA)
    assert torch.equal(a.x, b.x)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"beta": 0.0}, ValueError, "beta"),
        ({"beta": -1.0}, ValueError, "beta"),
        ({"beta": float("nan")}, ValueError, "beta"),
        ({"beta": "10"}, TypeError, "beta"),
        ({"method": "bfgs"}, ValueError, "unknown method"),
        ({"y": torch.zeros(3, 5, dtype=torch.float64)}, ValueError, "features"),
        ({"y": torch.zeros(2, 3, 6, dtype=torch.float64)}, ValueError, "shape"),
        ({"y": torch.full((2, 6), float("nan"), dtype=torch.float64)}, ValueError, "non-finite"),
        ({"y": torch.zeros(2, 6, dtype=torch.float32)}, TypeError, "dtype"),
        ({"constraint": Box([0.0] * 5, 1.0)}, ValueError, "dimension"),
        ({"constraint": "simplex"}, TypeError, "constraint"),
        ({"constraint": Simplex(), "method": "lbfgs"}, ValueError, "does not handle constraints"),
        ({"constraint": lambda x: [x >= 0], "method": "newton"}, ValueError, "only supported"),
        ({"max_iter": -1}, ValueError, "max_iter"),
        ({"max_iter": 2.5}, TypeError, "max_iter"),
        ({"gtol": -1.0}, ValueError, "gtol"),
        ({"rtol": 0.0}, ValueError, "rtol"),
    ],
)
def test_bad_input_is_rejected(model, y, kwargs, error, match):
    args = {"y": y[:2], **kwargs}
    with pytest.raises(error, match=match):
        prox(model, **args)


@pytest.mark.parametrize("make", [lambda: Box(1.0, 0.0), lambda: Budget(-0.5), lambda: Simplex(-1.0)])
def test_empty_sets_are_rejected(make):
    with pytest.raises(ValueError):
        make()


def test_infeasible_user_constraint_reports_socp_status(model, y):
    with pytest.raises(sc.lifting.LiftingError, match="infeasible"):
        prox(model, y[:1], BETA, method="socp", constraint=lambda x: [x >= 1, x <= 0])


def test_certificate_is_a_valid_gap_bound(model, y, reference):
    # At a point that is not optimal the certified norm still bounds the gap.
    x = y + 0.01
    s = sc.inference.certified_subgradient_norm(model, x, y, BETA, None, 1e-9)
    gap = sc.inference.objective(model, x, y, BETA) - reference.value
    assert bool((gap <= s**2 / (2 * BETA) + 1e-7).all())
    assert np.isfinite(s.numpy()).all()
    # Near the optimum, with a loose tie tolerance, the slack eps of the clipped multipliers
    # is what keeps the bound valid: perturb the exact optimum off its kinks.
    res = prox(model, y, BETA)
    xp = res.x + 1e-4 * torch.randn(res.x.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    norm, bound = sc.inference.certified_gap_bound(model, xp, y, BETA, None, 1e-3)
    gap = sc.inference.objective(model, xp, y, BETA) - reference.value
    assert bool((gap <= bound + 1e-8).all())
    assert bool((bound >= norm**2 / (2 * BETA)).all())


@pytest.mark.parametrize("in_dim, hidden", [(6, (16, 16, 16)), (40, (12, 12))])
@torch.no_grad()
def test_kink_rows_gradient_and_curvature_match_autograd(in_dim, hidden):
    # The blocks' kink rows (one-hot vector-Jacobian products), the piece gradient, the Hessian
    # factor Q (low rank when d > r) and its solves, against autograd and dense linear algebra.
    from socicnn.inference.newton import _Point

    m = sc.SOCICNN(in_dim, hidden, quad_dims=(4,), norm_dims=(4, 4), dtype=torch.float64, seed=2)
    x = torch.randn(5, in_dim, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    pt = _Point(m, torch.arange(5), x, torch.zeros_like(x), BETA, None, 1e-9)
    with torch.enable_grad():
        jac = torch.func.vmap(torch.func.jacrev(lambda v: torch.cat(m.backbone.preactivations(v[None]), 1)[0]))(x)
        u = torch.func.vmap(torch.func.jacrev(lambda v: m.norm_blocks[1].A @ v + m.norm_blocks[1].d))(x)
    M = sum(hidden)
    every = torch.arange(M + 8).expand(5, -1)
    rows = pt.kink_rows(every)
    torch.testing.assert_close(rows[:, :M], jac, rtol=0, atol=1e-12)
    torch.testing.assert_close(rows[:, M + 4 :], u, rtol=0, atol=1e-12)
    with torch.enable_grad():
        grad = torch.func.vmap(torch.func.grad(lambda v: m(v[None])[0] + 0.5 * BETA * (v**2).sum()))(x)
        H = torch.func.vmap(torch.func.hessian(lambda v: m(v[None])[0]))(x)
    torch.testing.assert_close(pt.g, grad, rtol=0, atol=1e-12)
    H = H + BETA * torch.eye(in_dim, dtype=torch.float64)
    assert (pt.curv.Q is not None) == (in_dim > 12)  # r = 4 + 4 + 4 rows
    b = torch.randn(5, in_dim, 3, dtype=torch.float64)
    torch.testing.assert_close(pt.curv.solve(b), torch.linalg.solve(H, b), rtol=0, atol=1e-11)
    J = b.transpose(1, 2)
    torch.testing.assert_close(pt.curv.schur(J), J @ torch.linalg.solve(H, b), rtol=0, atol=1e-11)
    # After a pattern flip the rows are those of the new pattern: autograd of the pre-activations
    # of a model whose flipped unit is replaced by its new side (gate 0: dead, 1: linear).
    sub = pt.subset(torch.arange(5))
    unit = torch.tensor([0, 3, -1, hidden[0] + 1, 1])
    side = sub.P[torch.arange(5), unit.clamp(min=0)] < 0.5
    sub.release(unit, side)
    got = sub.kink_rows(every)[:, :M]
    for i in range(5):
        if unit[i] < 0:
            torch.testing.assert_close(got[i], rows[i, :M], rtol=0, atol=0)
            continue
        with torch.enable_grad():
            want = torch.func.jacrev(lambda v, i=i: _forced(m, v, int(unit[i]), float(side[i])))(x[i])
        torch.testing.assert_close(got[i], want, rtol=0, atol=1e-12)


def _forced(m, v, unit, side):
    """Pre-activations of ``m`` at ``v`` with ``unit``'s activation forced to its linear
    (side 1) or dead (side 0) branch, every other unit on its own pattern at ``v``."""
    bb = m.backbone
    pattern = [(a > 0).to(v.dtype) for a in bb.preactivations(v.detach()[None])]
    out, z, start = [], None, 0
    for l, width in enumerate(bb.hidden):
        a = bb.b[l] + (bb.W_eff(l) @ v if bb.W_eff(l) is not None else 0)
        if z is not None:
            a = a + bb.U_eff(l) @ z
        out.append(a)
        gate = pattern[l][0]
        if start <= unit < start + width:
            gate = gate.clone()
            gate[unit - start] = side
        z = gate * a
        start += width
    return torch.cat(out)


@torch.no_grad()
def test_face_steps_of_a_batch_equal_those_of_each_query_alone(model):
    # Each query's face step (with its releases and pattern flips) must not depend on the
    # other queries of the batch: a regression test for a misaligned release side.
    from socicnn.inference.newton import _face_direction, _Point

    y = torch.randn(40, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(7))
    x = prox(model, y, BETA, max_iter=1).x
    pt = _Point(model, torch.arange(40), x, y, BETA, None, 1e-9)
    dn = -pt.curv.solve(pt.g)
    after = pt.k + pt.jvp(dn)
    cand = (pt.k.abs() <= 1e-9) | (torch.sign(pt.k) != torch.sign(after))
    priority = torch.zeros_like(pt.k)
    eq = torch.zeros(0, dtype=torch.bool)
    batch = _face_direction(pt, cand, priority, eq, 4, kmax=6)
    alone = [
        _face_direction(pt.subset(torch.tensor([i])), cand[i : i + 1], priority[i : i + 1], eq, 4, 6) for i in range(40)
    ]
    assert int(cand.sum(-1).ge(2).sum()) >= 10  # enough queries with faces that need releases
    torch.testing.assert_close(batch, torch.cat(alone), rtol=0, atol=1e-10)


def test_matrix_free_path_gives_the_dense_answers(model, y, monkeypatch):
    # With the factors declared too large, solves run by conjugate gradients on H + beta I
    # (HVPs only): the same optima and certificates as the Cholesky path.
    from socicnn.inference import newton

    dense = prox(model, y, BETA, method="newton")
    monkeypatch.setattr(newton, "DENSE_FACTOR_LIMIT", 0)
    free = prox(model, y, BETA, method="newton")
    assert bool(free.converged.all())
    torch.testing.assert_close(free.x, dense.x, rtol=0, atol=1e-8)
    assert bool((free.gap_bound <= 1e-11 * free.value.abs().clamp(min=1.0)).all())


def test_socp_reports_the_solvers_own_time(model, y, reference):
    assert reference.solver_time.shape == (12,)
    assert bool((reference.solver_time > 0).all()) and bool((reference.solver_time <= reference.time).all())


@pytest.mark.parametrize("radius", [0.05, 50.0], ids=["on-sphere", "inside"])
def test_ball_maximiser_matches_a_conic_solver(radius):
    from socicnn.inference.newton import _ball_maximiser

    g = torch.Generator().manual_seed(7)
    B = torch.randn(3, 5, 5, dtype=torch.float64, generator=g)
    M = B @ B.transpose(1, 2)
    c = torch.randn(3, 5, dtype=torch.float64, generator=g)
    r = _ball_maximiser(M, c, torch.full((3,), radius, dtype=torch.float64))
    for i in range(3):
        v = cp.Variable(5)
        prob = cp.Problem(cp.Maximize(c[i].numpy() @ v - 0.5 * cp.quad_form(v, M[i].numpy())), [cp.norm(v) <= radius])
        status = solve_with_retries(prob, cp.CLARABEL, tol_gap_abs=1e-10, tol_gap_rel=1e-10, tol_feas=1e-10)
        assert status == cp.OPTIMAL
        ours = float(c[i] @ r[i] - 0.5 * r[i] @ M[i] @ r[i])
        assert abs(ours - prob.value) <= 1e-8 * max(1.0, abs(prob.value))
        assert float(torch.linalg.vector_norm(r[i])) <= radius * (1 + 1e-12)


@torch.no_grad()
def test_the_exact_cone_step_solves_a_quadratic_plus_cone_prox_in_one_step():
    # With a quadratic and one cone the face model is exact: its step lands on the optimum from
    # anywhere, including an optimum at the cone's apex (a large cone weight).
    from socicnn.inference.newton import _exact_cone_steps, _Point
    from socicnn.model import BlockModel
    from socicnn.norm import NormBlock
    from socicnn.quadratic import QuadraticBlock

    d = 6
    for lam in (0.3, 30.0):
        quad = QuadraticBlock(d, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
        cone = NormBlock(d, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
        cone.lam_raw.fill_(lam)
        model = BlockModel(d, [quad, cone])
        y = torch.randn(4, d, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
        pt = _Point(model, torch.arange(4), y.clone(), y, BETA, None, 1e-9)
        step = _exact_cone_steps(pt, [pt.tied])[0]
        ref = prox(model, y, BETA, method="socp")
        got = sc.inference.objective(model, y + step, y, BETA)
        assert float(((got - ref.value) / ref.value.abs().clamp(min=1.0)).abs().max()) <= 1e-8
        apex = cone.state(torch.as_tensor(ref.x)).norm <= 1e-6
        assert bool(apex.any()) == (lam == 30.0)  # the large weight puts some row's optimum at the apex


@torch.no_grad()
def test_newton_certifies_a_paper_size_query_near_a_cone_apex_with_many_ties():
    # Paper A's experiment-1 model (d = 100, six layers of width 256, one quadratic and one norm
    # block of dim 24) at beta = 0.1: this query's optimum has its norm block about 4e-5 from the
    # apex and about 20 tied ReLU units. Face Newton used to creep along it (one tie per few
    # iterations) and stop at the 100-iteration cap with a bound of 5e-6; the exact-cone step on
    # the identification guesses' faces reaches it.
    from socicnn.experiments.whitebox import queries

    model = sc.SOCICNN(100, (256,) * 6, quad_dims=(24,), norm_dims=(24,), dtype=torch.float64, seed=0)
    y = queries(200, 100, 1)[[16]]
    res = prox(model, y, 0.1, method="newton")
    assert bool(res.converged.all())
    assert float(res.gap_bound.max()) <= 1e-9 * max(1.0, float(res.value.abs().max()))
    assert int(res.iterations.max()) <= 40


@torch.no_grad()
def test_the_line_search_minorant_bounds_the_objective_below():
    # The candidate search skips trials by F(z) >= F(x) - slack + g^T (z - x) + (beta/2)||z - x||^2
    # with g the pattern gradient; with a loose tie tolerance many near-ties get a side that is
    # not theirs (the blocks' gap slack is then positive somewhere, asserted below); the bound is
    # checked at random points around x at three scales.
    from socicnn.inference.newton import _Point

    model = sc.SOCICNN(6, (16, 16), quad_dims=(3,), norm_dims=(4,), dtype=torch.float64, seed=3)
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(40, 6, dtype=torch.float64, generator=gen)
    y = torch.randn(40, 6, dtype=torch.float64, generator=gen)
    pt = _Point(model, torch.arange(40), x, y, BETA, None, 0.3)
    slack = pt.minorant_slack()
    assert bool((slack > 0).any())
    F_x = sc.inference.objective(model, x, y, BETA)
    for scale in (1e-3, 1e-1, 1.0):
        z = x + scale * torch.randn(40, 6, dtype=torch.float64, generator=gen)
        step = z - x
        lower = F_x - slack + (pt.g * step).sum(-1) + 0.5 * BETA * (step * step).sum(-1)
        F_z = sc.inference.objective(model, z, y, BETA)
        assert bool((F_z >= lower - 1e-12 * (1 + F_z.abs())).all())


@torch.no_grad()
def test_the_constrained_line_search_drops_a_rising_direction_once_its_path_is_straight():
    # Every point sits on the face x_0 = 1 of the box [-1, 1]^6 and the direction leaves the box
    # there (d_0 = 1), so the projection bends every trial; its projected step is a d' (d' = d
    # without d_0), which raises F's strong-convexity bound (g^T d' > 0). After one halving the
    # step has halved too: the path is straight, no shorter step can decrease F, and the direction
    # is dropped after two projections instead of forty. Along -d' the same search moves.
    from socicnn.inference import newton as nw

    model = sc.SOCICNN(6, (16, 16), quad_dims=(3,), norm_dims=(4,), dtype=torch.float64, seed=3)
    gen = torch.Generator().manual_seed(5)
    n = 20
    x = 0.5 * torch.rand(n, 6, dtype=torch.float64, generator=gen) - 0.25
    x[:, 0] = 1.0
    y = torch.randn(n, 6, dtype=torch.float64, generator=gen)
    box = sc.inference.Box(-1.0, 1.0)
    calls = []

    class Counted(sc.inference.Box):
        def project(self, z):
            calls.append(z.shape[0])
            return super().project(z)

    counted = Counted(-1.0, 1.0)
    idx = torch.arange(n)
    pt = nw._Point(model, idx, x, y, BETA, None, 1e-9)
    tangent = pt.g.clone()
    tangent[:, 0] = 0.0
    tangent = 0.1 * tangent / torch.linalg.vector_norm(tangent, dim=-1, keepdim=True)
    beta = torch.full((n,), BETA, dtype=torch.float64)
    F = sc.inference.objective(model, x, y, BETA)
    minorant = (pt.g, pt.minorant_slack())
    none = torch.zeros_like(x)
    rising = tangent.clone()
    rising[:, 0] = 1.0
    x_new, F_new, moved = nw._candidate_search(model, idx, y, beta, x, F, [rising], none, F, counted, minorant)
    assert len(calls) == 2 and not bool(moved.any()) and torch.equal(x_new, x)
    calls.clear()
    x_new, F_new, moved = nw._candidate_search(model, idx, y, beta, x, F, [-tangent], none, F, counted, minorant)
    assert bool(moved.all()) and bool((F_new < F).all()) and len(calls) < 40
    assert bool((box.project(x_new) == x_new).all())


def test_scaling_slopes_read_the_fitted_exponents():
    import pandas as pd

    from socicnn.experiments.whitebox import scaling_slopes

    v = [10.0, 20.0, 40.0]
    table = pd.DataFrame({
        "knob": ["n"] * 3 + ["d"] * 3 + ["width"] * 3 + ["depth"] * 3,
        "value": v * 4,
        "ms per query": [100 / x for x in v] + [5.0] * 3 + [x**0.5 for x in v] + [x**1.5 for x in v],
    })
    slopes, sentence = scaling_slopes(table)
    assert slopes["n"] == pytest.approx(-1) and slopes["d"] == pytest.approx(0, abs=1e-12)
    assert "number of queries it falls (slope -1.00 over 3 sizes)" in sentence
    assert "input dimension it stays about flat" in sentence and "width it grows sublinearly" in sentence
    assert "depth it grows faster than linearly (slope 1.50 over 3 sizes)" in sentence
    bumpy = table.assign(**{"ms per query": [1.0, 3.0, 2.0] * 4})
    assert "not monotone" in scaling_slopes(bumpy)[1]
