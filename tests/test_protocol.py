"""The block protocol is the only door into a model: a new block kind written as one file
(tests/toy_blocks.py) plugs into forward, lifting, readout, the optimal dual set and inference
with no edit elsewhere; per-row data make a model of ``(x, context)`` an ordinary model of ``x``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from toy_blocks import AbsBlock

import socicnn as sc
from socicnn.blocks import ConvexBlock
from socicnn.inference import Box, prox
from socicnn.model import BlockModel, ContextualModel
from socicnn.norm import NormBlock

F64 = torch.float64
D = 4


def toy_model(seed: int = 0) -> BlockModel:
    base = sc.SOCICNN(D, (8, 8), quad_dims=(2,), norm_dims=(3,), dtype=F64, seed=seed)
    return BlockModel(D, [*base.blocks(), AbsBlock(D, seed=seed)])


def autograd_grad(model, x):
    with torch.enable_grad():
        return torch.func.vmap(torch.func.grad(lambda v: model(v[None])[0]))(x)


# ----------------------------------------------------------------- the protocol itself
def test_a_block_missing_a_method_fails_when_its_class_is_defined():
    with pytest.raises(TypeError, match="does not implement the block protocol: missing .*face_rows"):

        class Broken(ConvexBlock):  # noqa: F841 - the definition itself must fail
            multiplier_name = "z"

            def forward(self, x):
                return x.sum(-1)

    class Helper(ConvexBlock, abstract=True):  # an explicit abstract base is allowed
        pass


def test_toy_block_forward_readout_and_lifting():
    model = toy_model()
    x = torch.randn(6, D, dtype=F64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(model(x), sum(b(x) for b in model.blocks()), rtol=0, atol=0)
    ro = sc.readout.readout(model, x)
    assert ro.names == ("nu", "p", "r", "rho") and len(ro.by_name("rho")) == 1
    assert len(ro.nu) == 2 and len(ro.p) == 1 and len(ro.r) == 1  # the derived views
    torch.testing.assert_close(ro.grad, autograd_grad(model, x), rtol=0, atol=1e-12)
    torch.testing.assert_close(ro.dual_value, ro.value, rtol=0, atol=1e-12)
    problem = sc.lifting.LiftedProblem(model, solver="clarabel")
    for i in range(3):
        sol = problem.solve(x[i])
        assert abs(sol.value - float(ro.value[i])) <= 1e-6 * max(1.0, abs(sol.value))
        assert sol.names == ro.names
        batched = [[torch.as_tensor(a)[None] for a in sol.multipliers[0]]]
        batched += [torch.as_tensor(m)[None] for m in sol.multipliers[1:]]
        slope = sc.readout.supporting_slope(model, batched)
        torch.testing.assert_close(slope[0], ro.grad[i], rtol=0, atol=1e-5)


def test_toy_block_kink_gives_an_interval_of_subgradients():
    model = toy_model()
    toy = list(model.blocks())[-1]
    x0 = torch.randn(D, dtype=F64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():  # move x0 onto the kink a^T x + c = 0
        x0 = x0 - (x0 @ toy.a + toy.c) / (toy.a @ toy.a) * toy.a
    ds = sc.subdifferential.OptimalDualSet(model, x0, tol=1e-10)
    assert not ds.singleton
    lam = float(toy.data("lam").detach())
    a = toy.a.detach()
    # Both ends of the interval are subgradients, nothing beyond them is.
    for rho, inside in ((lam, True), (-lam, True), (1.2 * lam, False)):
        g = ds.canonical + rho * a
        assert ds.contains(g, atol=1e-6) == inside
    delta = torch.randn(5, D, dtype=F64, generator=torch.Generator().manual_seed(3))
    forward = sc.readout.directional_derivative(model, x0.expand(5, -1), delta, tol=1e-10)
    torch.testing.assert_close(ds.max_directional_derivative(delta), forward, rtol=0, atol=1e-6)


def test_inference_on_the_toy_block_is_certified_at_its_kink():
    model = toy_model(seed=3)
    toy = list(model.blocks())[-1]
    with torch.no_grad():
        toy.lam_raw.fill_(6.0)  # a large weight pulls optima onto the kink
    y = torch.randn(20, D, dtype=F64, generator=torch.Generator().manual_seed(4))
    res = prox(model, y, 2.0, method="newton")
    ref = prox(model, y, 2.0, method="socp")
    assert bool(res.converged.all())
    assert float(((res.value - ref.value) / ref.value.abs().clamp(min=1)).max()) <= 1e-8
    on_kink = (res.x @ toy.a.detach() + toy.c.detach()).abs() <= 1e-9
    assert int(on_kink.sum()) >= 5  # the certificate covered the new kind of kink


# ----------------------------------------------------------------- contexts
class AffineContext(ContextualModel):
    """Offsets affine in the context and nonnegative scalings softplus of it (a PICNN-style
    modulation): convex in x for every context."""

    def __init__(self, context_dim: int = 3, seed: int = 0) -> None:
        super().__init__()
        self.base = sc.SOCICNN(D, (6, 6), quad_dims=(2,), norm_dims=(3,), dtype=F64, seed=seed)
        self.context_dim = context_dim
        g = torch.Generator().manual_seed(seed + 1)
        self.shapes = [b.data_shapes for b in self.base.blocks()]
        self.maps = torch.nn.ParameterList()
        self.names = []
        for shapes in self.shapes:
            for name, shape in shapes.items():
                size = int(np.prod(shape)) if shape else 1
                self.maps.append(torch.nn.Parameter(0.5 * torch.randn(context_dim, size, generator=g, dtype=F64)))
                self.names.append(name)

    def block_data(self, context):
        out, i = [], 0
        for shapes in self.shapes:
            data = {}
            for name, shape in shapes.items():
                value = context @ self.maps[i]
                i += 1
                if name in ("alpha", "lam") or name.startswith("zscale"):
                    value = F.softplus(value)
                data[name] = value.reshape(context.shape[0], *shape)
            out.append(data)
        return out


def test_at_context_is_the_model_of_x_and_every_tool_accepts_it():
    pm = AffineContext()
    x = torch.randn(5, D, dtype=F64, generator=torch.Generator().manual_seed(5))
    theta = torch.randn(5, 3, dtype=F64, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        rows = pm(x, theta)
        for i in range(5):
            torch.testing.assert_close(pm.at(theta[i])(x[i]), rows[i], rtol=0, atol=1e-13)
        batch = pm.at(theta)
        torch.testing.assert_close(batch(x), rows, rtol=0, atol=0)
    assert batch.rows == 5 and pm.at(theta[0]).rows is None
    # Readout of the per-row model = autograd of f(., theta_i), row by row.
    with torch.enable_grad():
        want = torch.stack([torch.func.grad(lambda v, i=i: pm(v[None], theta[i : i + 1])[0])(x[i]) for i in range(5)])
    torch.testing.assert_close(sc.readout.readout(batch, x).grad, want, rtol=0, atol=1e-12)
    # One compiled lifting serves every context (data are parameters), row by row.
    problem = sc.lifting.LiftedProblem(batch, solver="clarabel")
    for i in range(5):
        sol = problem.solve(x[i], row=i)
        assert abs(sol.value - float(rows[i])) <= 1e-6 * max(1.0, abs(float(rows[i])))
    with pytest.raises(ValueError, match="pass row=i"):
        problem.solve(x[0])
    # Inference on the per-row model: each query solved with its own context.
    res = prox(batch, x, 3.0, method="newton")
    ref = prox(batch, x, 3.0, method="socp")
    assert bool(res.converged.all())
    assert float(((res.value - ref.value) / ref.value.abs().clamp(min=1)).abs().max()) <= 1e-7
    with pytest.raises(ValueError, match="rows but the model carries per-row data for 5"):
        batch(x[:3])


def test_negative_scalings_are_refused():
    block = NormBlock(D, 2, dtype=F64)
    with pytest.raises(ValueError, match="must be >= 0"):
        block.bind({"lam": torch.tensor([1.0, -0.5], dtype=F64)})
    with pytest.raises(ValueError, match="has no datum 'nope'"):
        block.bind({"nope": torch.zeros(2, dtype=F64)})


@settings(max_examples=10, deadline=None, derandomize=True)
@given(seed=st.integers(0, 2**16))
def test_contextual_model_is_convex_in_x_for_every_context(seed):
    pm = AffineContext(seed=seed % 7)
    g = torch.Generator().manual_seed(seed)
    theta = 2 * torch.randn(1, 3, generator=g, dtype=F64).expand(64, -1)
    a, b = 3 * torch.randn(64, D, generator=g, dtype=F64), 3 * torch.randn(64, D, generator=g, dtype=F64)
    t = torch.rand(64, 1, generator=g, dtype=F64)
    with torch.no_grad():
        fa, fb, fm = pm(a, theta), pm(b, theta), pm(t * a + (1 - t) * b, theta)
    chord = t[:, 0] * fa + (1 - t[:, 0]) * fb
    assert float(((fm - chord) / (1 + fa.abs() + fb.abs())).max()) <= 1e-12


# ----------------------------------------------------------------- norm ties in inference
def soft_threshold_model() -> BlockModel:
    """``f(x) = ||x||``: the prox at ``y`` is 0 when ``||y|| < 1/beta`` (a norm tie u = 0)."""
    block = NormBlock(D, D, dtype=F64)
    with torch.no_grad():
        block.A.copy_(torch.eye(D, dtype=F64))
        block.d.zero_()
        block.lam_raw.fill_(1.0)
    return BlockModel(D, [block])


@pytest.mark.parametrize("method", ["newton", "gd", "lbfgs", "socp", "autograd-newton"])
def test_prox_at_a_norm_tie_is_certified(method):
    beta = 2.0
    y = 0.2 * torch.randn(8, D, dtype=F64, generator=torch.Generator().manual_seed(0))
    y[:2] *= 10  # two queries off the tie
    res = prox(soft_threshold_model(), y, beta, method=method)
    norm = y.norm(dim=1, keepdim=True)
    exact = torch.where(norm > 1 / beta, (1 - 1 / (beta * norm)) * y, torch.zeros_like(y))
    assert int((norm[:, 0] < 1 / beta).sum()) >= 5
    assert bool(res.converged.all())
    torch.testing.assert_close(res.x, exact, rtol=0, atol=1e-7 if method == "socp" else 1e-9)
    assert float(res.grad_norm.max()) <= (1e-6 if method == "socp" else 1e-8)
    # The conic solver's x is accurate to about 1e-8 (its own tolerance), L-BFGS stops at a gradient
    # norm of sqrt(eps), the Newton and gradient loops reach rounding level.
    assert float(res.gap_bound.max()) <= {"socp": 1e-7, "lbfgs": 1e-9}.get(method, 1e-12)


def test_newton_survives_small_beta_on_a_norm_model():
    # beta = 0.01 drives iterates onto the norm kink; the batch must not abort.
    y = torch.randn(16, D, dtype=F64, generator=torch.Generator().manual_seed(1))
    res = prox(soft_threshold_model(), y, 0.01, method="newton")
    assert bool(res.converged.all())
    assert float(res.x.abs().max()) <= 1e-9


def test_socp_reports_a_bad_query_on_that_query(monkeypatch):
    from socicnn.inference import socp as socp_mod

    model = sc.SOCICNN(D, (6,), quad_dims=(2,), norm_dims=(2,), dtype=F64, seed=0)
    y = torch.randn(4, D, dtype=F64, generator=torch.Generator().manual_seed(2))
    real = socp_mod.ProxSOCP.solve
    calls = {"n": 0}

    def flaky(self, yv, **kw):
        calls["n"] += 1
        if calls["n"] == 2:
            raise socp_mod.SolveStatusError("solver returned status 'user_limit'", "user_limit")
        return real(self, yv, **kw)

    monkeypatch.setattr(socp_mod.ProxSOCP, "solve", flaky)
    res = prox(model, y, 5.0, method="socp")
    assert res.status == ["optimal", "user_limit", "optimal", "optimal"]
    assert res.converged.tolist() == [True, False, True, True]
    assert bool(torch.isnan(res.x[1]).all()) and bool(torch.isfinite(res.x[[0, 2, 3]]).all())


def test_socp_answers_are_feasible_and_report_the_solvers_violation():
    model = sc.SOCICNN(D, (6, 6), quad_dims=(2,), norm_dims=(2,), dtype=F64, seed=1)
    y = 3 * torch.randn(6, D, dtype=F64, generator=torch.Generator().manual_seed(3))
    box = Box(-0.5, 0.5)
    res = prox(model, y, 1.0, method="socp", constraint=box)
    assert float(res.x.abs().max()) <= 0.5  # exactly inside after the projection
    assert res.infeasibility.shape == (6,) and float(res.infeasibility.max()) <= 1e-6
    newton = prox(model, y, 1.0, method="newton", constraint=box)
    assert float(((newton.value - res.value) / res.value.abs().clamp(min=1)).max()) <= 1e-7
    assert float(((res.value - newton.value) / res.value.abs().clamp(min=1)).max()) <= 1e-6


@pytest.mark.parametrize("method", ["newton", "gd", "autograd-gd", "autograd-newton", "lbfgs", "socp"])
def test_prox_of_an_empty_batch(method):
    model = sc.SOCICNN(D, (4,), dtype=F64, seed=0)
    res = prox(model, torch.zeros(0, D, dtype=F64), 1.0, method=method)
    assert res.x.shape == (0, D) and res.value.shape == (0,) and res.converged.shape == (0,)


def test_smooth_softplus_backbone_in_every_inference_method():
    # The softplus backbone is its own smooth block: newton (with its curvature), autograd-newton
    # and the exponential-cone SOCP agree (no norm block: plain autograd Newton would stall at its kink).
    model = sc.SOCICNN(D, (6, 6), quad_dims=(2,), activation="softplus", dtype=F64, seed=2)
    y = torch.randn(6, D, dtype=F64, generator=torch.Generator().manual_seed(4))
    newton = prox(model, y, 2.0, method="newton")
    auto = prox(model, y, 2.0, method="autograd-newton")
    ref = prox(model, y, 2.0, method="socp")
    assert bool(newton.converged.all()) and bool(auto.converged.all())
    # beta-strong convexity: ||x - x*|| <= sqrt(2 gap / beta) for each answer's certified gap.
    radius = (2 * newton.gap_bound / 2.0).sqrt() + (2 * auto.gap_bound / 2.0).sqrt()
    assert bool(((newton.x - auto.x).norm(dim=1) <= radius + 1e-12).all())
    assert float(((newton.value - ref.value) / ref.value.abs().clamp(min=1)).abs().max()) <= 1e-6


def test_a_readout_is_a_snapshot():
    model = sc.SOCICNN(D, (6, 6), quad_dims=(2,), norm_dims=(2,), dtype=F64, seed=5)
    x = torch.randn(4, D, dtype=F64, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        want = model(x)
    ro = sc.readout.readout(model, x)
    x -= 0.1 * ro.grad  # the caller moves on; the readout keeps describing the old point
    torch.testing.assert_close(ro.value, want, rtol=0, atol=0)
    torch.testing.assert_close(ro.dual_value, want, rtol=0, atol=1e-12)
    later = sc.readout.readout(model, x)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    model(x).sum().backward()
    opt.step()
    with pytest.raises(RuntimeError, match="weights changed since this readout"):
        _ = later.value


def test_lifting_accepts_context_data_built_under_autograd():
    # Per-row data computed from a context with autograd on are non-leaf tensors; the lifting's
    # float64 copy of the model must not try to deep-copy their graph.
    pm = AffineContext()
    theta = torch.randn(3, 3, dtype=F64, generator=torch.Generator().manual_seed(8))
    x = torch.randn(3, D, dtype=F64, generator=torch.Generator().manual_seed(9))
    batch = pm.at(theta)
    assert any(t.requires_grad for b in batch.blocks() for t in (b._bound or {}).values())
    problem = sc.lifting.LiftedProblem(batch, solver="clarabel")
    value = float(pm(x, theta)[2].detach())
    assert abs(problem.solve(x[2], row=2).value - value) <= 1e-6 * max(1.0, abs(value))
