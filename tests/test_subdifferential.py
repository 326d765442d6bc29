"""The optimal dual set D*(x) at planted ties: sampling, membership, minimum-norm subgradient and
the max-over-duals directional derivative f'(x; delta) = max over D*(x) of the dual slope times delta."""

from __future__ import annotations

import pytest
import torch
from witnesses import autograd_gradient

import socicnn as sc
from socicnn.experiments.degenerate import deep_planted_model, hand_built_model, plant_ties
from socicnn.subdifferential import OptimalDualSet, max_directional_derivative, min_norm_subgradient

TOL = 1e-9


@pytest.fixture(scope="module", params=[True, False], ids=["passthrough", "no-passthrough"])
def deep(request):
    return deep_planted_model(6, (8, 8, 8, 8), (3,), (4, 3), passthrough=request.param, ties_per_layer=2, seed=3)


def directions(d, n=40, seed=0):
    gen = torch.Generator().manual_seed(seed)
    s = torch.randn(n, d, generator=gen, dtype=torch.float64)
    return s / s.norm(dim=1, keepdim=True)


def test_planted_ties_are_ties(deep):
    model, x0 = deep
    a = model.backbone.preactivations(x0[None])
    assert all(int((layer.abs() <= TOL).sum()) >= 1 for layer in a)  # a tie in every layer, deepest included
    assert float(model.norm_blocks[0].state(x0[None]).norm[0].detach()) <= TOL


def test_directional_derivative_three_ways_at_deep_ties(deep):
    model, x0 = deep
    D = directions(model.in_dim)
    X0 = x0.expand_as(D)
    forward = sc.readout.directional_derivative(model, X0, D, tol=TOL)
    conic = max_directional_derivative(model, x0, D, tol=TOL)
    h = 1e-7
    one_sided = (model(X0 + h * D) - model(X0)).detach() / h
    scale = 1 + float(forward.abs().max())
    assert float((forward - conic).abs().max()) < 1e-6 * scale
    assert float((forward - one_sided).abs().max()) < 1e-5 * scale
    # the kink is real: f'(x0; d) + f'(x0; -d) > 0 for some d (not a linear function there)
    back = sc.readout.directional_derivative(model, X0, -D, tol=TOL)
    assert float((forward + back).max()) > 1e-3


def test_default_tie_tolerance_catches_ties_off_by_rounding(deep):
    """Planted ties come out of floating point as |a| ~ 1e-17 rather than 0. The default tie
    tolerance treats them as ties; trusting the computed coordinates (tol=0) misses the kink."""
    model, x0 = deep
    default_tol = sc.readout.default_tie_tol(model, x0[None])
    assert default_tol < TOL
    a = model.backbone.preactivations(x0[None])
    assert any(bool(((layer != 0) & (layer.abs() <= default_tol)).any()) for layer in a)
    D = directions(model.in_dim)
    X0 = x0.expand_as(D)
    h = 1e-7
    one_sided = (model(X0 + h * D) - model(X0)).detach() / h
    scale = 1 + float(one_sided.abs().max())
    default = sc.readout.directional_derivative(model, X0, D)
    assert float((default - one_sided).abs().max()) < 1e-5 * scale
    assert float((sc.readout.directional_derivative(model, X0, D, tol=0.0) - one_sided).abs().max()) > 0.1
    g = min_norm_subgradient(model, x0)
    torch.testing.assert_close(g, min_norm_subgradient(model, x0, tol=TOL), rtol=0, atol=1e-6)
    # tol=0 sees fewer ties, hence a smaller dual set: its minimum-norm point is another
    # subgradient, no shorter, and (missing the kink) a different one. How much longer it is
    # depends on the rounding of the planted ties (CPU-dependent), so only the distance is bounded.
    g0 = min_norm_subgradient(model, x0, tol=0.0)
    assert float(g.norm()) <= float(g0.norm()) + 1e-6
    assert float((g - g0).norm()) > 1e-2


def test_sampled_duals_are_optimal_and_bounded(deep):
    model, x0 = deep
    dset = OptimalDualSet(model, x0, TOL)
    sample = dset.sample(500, seed=1)
    assert sample.slopes.shape == (500, model.in_dim)
    resid = sc.readout.dual_residual(model, sample.nu, sample.p, sample.r)
    assert float(resid.max()) < 1e-12
    dual = sc.readout.dual_objective(model, x0.expand(500, -1), sample.nu, sample.p, sample.r)
    torch.testing.assert_close(dual, model(x0).detach().expand(500), rtol=1e-10, atol=1e-10)  # all optimal
    D = directions(model.in_dim, 60)
    forward = sc.readout.directional_derivative(model, x0.expand_as(D), D, tol=TOL)
    assert float(((D @ sample.slopes.T).amax(1) - forward).max()) <= 1e-9 * (1 + float(forward.abs().max()))
    assert all(dset.contains(g) for g in sample.slopes[:5])
    torch.testing.assert_close(dset.sample(3, seed=7).slopes, dset.sample(3, seed=7).slopes)  # same seed


def test_membership_accepts_canonical_and_rejects_outside(deep):
    model, x0 = deep
    dset = OptimalDualSet(model, x0, TOL)
    assert not dset.singleton
    canonical = sc.readout.readout(model, x0[None], tol=TOL).grad[0]
    assert dset.contains(canonical)
    far = canonical + 10 * (1 + canonical.norm()) * directions(model.in_dim, 1)[0]
    assert not dset.contains(far)
    assert dset.distance(far) > 1.0


def test_min_norm_subgradient_is_the_projection_of_zero(deep):
    model, x0 = deep
    dset = OptimalDualSet(model, x0, TOL)
    g = min_norm_subgradient(model, x0, tol=TOL)
    assert g.shape == (model.in_dim,)
    assert dset.contains(g)
    assert float(g.norm()) <= float(dset.canonical.norm()) + 1e-8
    # optimality of the projection: g . (s - g) >= 0 for every s in the set
    slopes = dset.sample(400, seed=2).slopes
    assert float(((slopes - g) @ g).min()) >= -1e-6 * (1 + float(g.norm()) ** 2)


def test_hand_built_net_min_norm_strictly_smaller():
    model, x0 = hand_built_model()
    dset = OptimalDualSet(model, x0, TOL)
    g = dset.min_norm_subgradient()
    assert float(g.norm()) < float(dset.canonical.norm()) - 0.1
    pts = dset.support_points(directions(2, 16))
    assert pts.shape == (16, 2) and all(dset.contains(p) for p in pts[:4])


def test_nondegenerate_point_is_a_singleton():
    model = sc.SOCICNN(4, (6, 6), (2,), (3,), dtype=torch.float64, seed=0)
    x0 = torch.randn(4, dtype=torch.float64)
    dset = OptimalDualSet(model, x0)
    grad = autograd_gradient(model, x0[None])[0]  # differentiable here: the subdifferential is {grad}
    assert dset.singleton and dset.contains(grad) and not dset.contains(grad + 1e-3)
    torch.testing.assert_close(dset.min_norm_subgradient(), grad, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(dset.sample(4).slopes, grad.expand(4, -1), rtol=1e-12, atol=1e-12)


def test_plant_ties_leaves_the_original_alone():
    model = sc.SOCICNN(3, (4, 4), (), (2,), dtype=torch.float64, seed=0)
    before = [b.clone() for b in model.backbone.b]
    x0 = torch.ones(3, dtype=torch.float64)
    tied = plant_ties(model, x0, [(1, 2)], [0])
    assert all(torch.equal(a, b) for a, b in zip(before, model.backbone.b, strict=True))
    assert abs(float(tied.backbone.preactivations(x0[None])[1][0, 2].detach())) < 1e-12


def test_bad_input():
    model, x0 = hand_built_model()
    with pytest.raises(ValueError, match="x0 must be one point"):
        OptimalDualSet(model, x0[None].expand(2, -1))
    with pytest.raises(ValueError, match="tol"):
        OptimalDualSet(model, x0, tol=-1.0)
    dset = OptimalDualSet(model, x0, TOL)
    with pytest.raises(ValueError, match="n must be a positive integer"):
        dset.sample(0)
    with pytest.raises(ValueError, match="g must have shape"):
        dset.contains(torch.zeros(3, 2, dtype=torch.float64))
    with pytest.raises(ValueError, match="features"):
        dset.max_directional_derivative(torch.zeros(3, dtype=torch.float64))
    with pytest.raises(ValueError, match="non-finite"):
        dset.distance(torch.tensor([float("nan"), 0.0], dtype=torch.float64))
