"""Recurrent SOC-ICNNs on the block protocol: the recurrence is a tied-weight backbone, the
temporal blocks are quadratic / grouped norm blocks with convolution matrices; readout, lifting
and inference see them through the protocol only."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import socicnn as sc
from socicnn.grouped_norm import GroupedNormBlock
from socicnn.inference import prox
from socicnn.model import BlockModel
from socicnn.norm import NormBlock
from socicnn.recurrent import RECURRENT_FAMILIES, RecurrentSOCICNN, recurrent_family
from socicnn.temporal import TemporalNormBlock, conv1d_matrix

F64 = torch.float64
T, P, PR = 6, 2, 3


def small(activation: str = "relu", seed: int = 0, **kw) -> RecurrentSOCICNN:
    kw = {"hidden": 5, "quad_channels": 3, "norm_groups": 2, **kw}
    return RecurrentSOCICNN(T, P, PR, activation=activation, dtype=F64, seed=seed, **kw)


def data(n: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    U = 2 * torch.rand(n, T, P, generator=g, dtype=F64) - 1
    R = 2 * torch.rand(n, T, PR, generator=g, dtype=F64) - 1
    return U, R


def autograd_rows(model, x):
    """Gradients and the Hessian of a per-row model, row by row, by autograd."""
    with torch.enable_grad():
        xg = x.clone().requires_grad_(True)
        grad = torch.autograd.grad(model(xg).sum(), xg)[0]
        hess = torch.stack(
            [
                torch.autograd.functional.hessian(lambda v, i=i: model.select(torch.tensor([i]))(v[None])[0], x[i])
                for i in range(x.shape[0])
            ]
        )
    return grad, hess


def test_conv1d_matrix_is_the_convolution():
    g = torch.Generator().manual_seed(0)
    kernel = torch.randn(3, P, 5, generator=g, dtype=F64)
    U = torch.randn(4, T, P, generator=g, dtype=F64)
    want = F.conv1d(U.transpose(1, 2), kernel, padding=2).reshape(4, -1)
    torch.testing.assert_close(U.reshape(4, -1) @ conv1d_matrix(kernel, T).T, want, rtol=0, atol=1e-13)


@pytest.mark.parametrize("activation", ["relu", "softplus"])
def test_shapes_contexts_and_readout_equal_autograd(activation):
    model = small(activation)
    U, R = data(4, 1)
    x = U.reshape(4, -1)
    with torch.no_grad():
        E = model(U, R)
        torch.testing.assert_close(model(x, R.reshape(4, -1)), E, rtol=0, atol=0)
        per_row = model.at(R)
        torch.testing.assert_close(per_row(x), E, rtol=0, atol=1e-14)
        for i in range(2):  # one context: an ordinary model of vec(U)
            torch.testing.assert_close(model.at(R[i])(x[i]), E[i], rtol=0, atol=1e-14)
    grad, hess = autograd_rows(per_row, x)
    ro = sc.readout.readout(per_row, x)
    torch.testing.assert_close(ro.grad, grad, rtol=0, atol=1e-12)
    torch.testing.assert_close(ro.dual_value, ro.value, rtol=0, atol=1e-12)
    w = torch.randn(4, T * P, dtype=F64, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(sc.readout.hvp(per_row, x, w), torch.einsum("nij,nj->ni", hess, w), rtol=0, atol=1e-12)
    torch.testing.assert_close(sc.readout.hessian(per_row, x), hess, rtol=0, atol=1e-12)
    dd = sc.readout.directional_derivative(per_row, x, w)
    torch.testing.assert_close(dd, (grad * w).sum(-1), rtol=0, atol=1e-12)


def test_torch_func_transforms_equal_the_readout():
    model = small("softplus")
    U, R = data(3, 5)
    x = U.reshape(3, -1)
    with torch.no_grad():
        one = model.at(R[0])
    G = torch.func.vmap(torch.func.grad(lambda v: one(v[None])[0]))(x)
    H = torch.func.vmap(torch.func.hessian(lambda v: one(v[None])[0]))(x)
    torch.testing.assert_close(G, sc.readout.readout(one, x).grad, rtol=0, atol=1e-12)
    torch.testing.assert_close(H, sc.readout.hessian(one, x), rtol=0, atol=1e-12)
    GU = torch.func.vmap(torch.func.grad(lambda u, r: model(u[None], r[None])[0]))(U, R[:1].expand_as(R))
    torch.testing.assert_close(GU.reshape(3, -1), G, rtol=0, atol=1e-12)


@pytest.mark.parametrize("activation", ["relu", "softplus"])
def test_lifting_witness_value_and_dual_gradient(activation):
    model = small(activation, seed=3)
    U, R = data(3, 4)
    x = U.reshape(3, -1)
    per_row = model.at(R)
    with torch.no_grad():
        E = model(U, R)
    ro = sc.readout.readout(per_row, x)
    problem = sc.lifting.LiftedProblem(per_row, solver="clarabel")
    for i in range(3):
        sol = problem.solve(x[i], row=i)
        assert sol.status == "optimal"
        assert abs(sol.value - float(E[i])) <= 1e-6 * max(1.0, abs(float(E[i])))
        mults = [[torch.as_tensor(a)[None] for a in sol.multipliers[0]]]
        mults += [torch.as_tensor(m)[None] for m in sol.multipliers[1:]]
        slope = sc.readout.supporting_slope(per_row.select(torch.tensor([i])), mults)
        torch.testing.assert_close(slope[0], ro.grad[i], rtol=0, atol=1e-5)


def _train_a_little(model: RecurrentSOCICNN, seed: int, steps: int = 5) -> None:
    U, R = data(16, seed)
    y = torch.randn(16, dtype=F64, generator=torch.Generator().manual_seed(seed))
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    for _ in range(steps):
        opt.zero_grad()
        F.mse_loss(model(U, R), y).backward()
        opt.step()


@settings(max_examples=8, deadline=None, derandomize=True)
@given(seed=st.integers(0, 2**16), trained=st.booleans(), family=st.sampled_from(sorted(RECURRENT_FAMILIES)))
def test_convex_in_the_whole_sequence(seed, trained, family):
    activation, quad, norm = RECURRENT_FAMILIES[family]
    model = small(activation, seed=seed % 5, quad_channels=3 if quad else 0, norm_groups=2 if norm else 0)
    if trained:
        _train_a_little(model, seed)
    g = torch.Generator().manual_seed(seed)
    R = (2 * torch.rand(1, T, PR, generator=g, dtype=F64) - 1).expand(64, -1, -1)
    a, b = 2 * torch.randn(64, T * P, generator=g, dtype=F64), 2 * torch.randn(64, T * P, generator=g, dtype=F64)
    t = torch.rand(64, 1, generator=g, dtype=F64)
    with torch.no_grad():
        fa, fb, fm = model(a, R), model(b, R), model(t * a + (1 - t) * b, R)
    chord = t[:, 0] * fa + (1 - t[:, 0]) * fb
    assert float(((fm - chord) / (1 + fa.abs() + fb.abs())).max()) <= 1e-12


def test_families_are_parameter_matched():
    counts = {name: recurrent_family(name, dtype=F64, seed=0).num_parameters() for name in RECURRENT_FAMILIES}
    soc = counts["RNN-SOC"]
    for name, n in counts.items():
        assert soc <= n <= 1.01 * soc, (name, n, soc)
    assert recurrent_family("RNN-ReLU", dtype=F64, seed=0).backbone.width > 20


def test_grouped_norm_block_is_a_sum_of_norm_blocks_with_ties():
    g = torch.Generator().manual_seed(5)
    block = GroupedNormBlock(4, 3, 2, generator=g, dtype=F64)
    parts = [NormBlock(4, 2, dtype=F64) for _ in range(3)]
    with torch.no_grad():
        block.lam_raw.fill_(2.0)
        for k, nb in enumerate(parts):
            nb.A.copy_(block.A[2 * k : 2 * k + 2])
            nb.d.copy_(block.d[2 * k : 2 * k + 2])
            nb.lam_raw.fill_(2.0)
    model, ref = BlockModel(4, [block]), BlockModel(4, parts)
    x = torch.randn(5, 4, dtype=F64, generator=g)
    # Put row 0 on the kink of cone 1 (A_1 x + d_1 = 0).
    with torch.no_grad():
        A1, d1 = block.A[2:4], block.d[2:4]
        x[0] = x[0] - torch.linalg.pinv(A1) @ (A1 @ x[0] + d1)
    torch.testing.assert_close(model(x), ref(x), rtol=0, atol=1e-13)
    for fn in (sc.readout.hessian,):
        torch.testing.assert_close(fn(model, x[1:]), fn(ref, x[1:]), rtol=0, atol=1e-12)
    torch.testing.assert_close(sc.readout.readout(model, x).grad, sc.readout.readout(ref, x).grad, rtol=0, atol=1e-12)
    delta = torch.randn(5, 4, dtype=F64, generator=g)
    dd, dref = (sc.readout.directional_derivative(m, x, delta, tol=1e-10) for m in (model, ref))
    torch.testing.assert_close(dd, dref, rtol=0, atol=1e-12)
    ds = sc.subdifferential.OptimalDualSet(model, x[0], tol=1e-10)
    assert not ds.singleton
    y = 3 * torch.randn(12, 4, dtype=F64, generator=g)
    # Inference sees the grouped block exactly as the sum of its cones' norm blocks.
    res, same = prox(model, y, 1.0, method="newton"), prox(ref, y, 1.0, method="newton")
    exact = prox(model, y, 1.0, method="socp")
    assert torch.equal(res.converged, same.converged) and bool(res.converged.all())
    torch.testing.assert_close(res.value, same.value, rtol=0, atol=1e-10)
    ok = res.converged
    assert float(((res.value - exact.value) / exact.value.abs().clamp(min=1))[ok].abs().max()) <= 1e-7


def test_temporal_norm_block_cones_are_channel_groups_per_step():
    block = TemporalNormBlock(T, P, groups=2, group_dim=2, generator=torch.Generator().manual_seed(0), dtype=F64)
    U = torch.randn(3, T, P, dtype=F64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        z = F.conv1d(U.transpose(1, 2), block.kernel, block.bias, padding=2)  # (3, 4, T)
        want = block.lam * torch.linalg.vector_norm(z.reshape(3, 2, 2, T), dim=2).sum((1, 2))
        torch.testing.assert_close(block(U.reshape(3, -1)), want, rtol=0, atol=1e-13)


def test_bad_inputs_are_named():
    model = small()
    U, R = data(2, 0)
    with pytest.raises(ValueError, match="U must have shape"):
        model(torch.zeros(2, T + 1, P, dtype=F64), R)
    with pytest.raises(ValueError, match="R must have shape"):
        model.at(torch.zeros(2, T, PR + 1, dtype=F64))
    with pytest.raises(ValueError, match=rf"R must have shape \({T}, {PR}\) or \(N, {T}, {PR}\)"):
        model.at(torch.zeros(T, PR + 1, dtype=F64))
    with pytest.raises(ValueError, match="U has 1 non-finite"):
        model(U.clone().index_put_((torch.tensor([0]),) * 3, torch.tensor(float("nan"), dtype=F64)), R)
    with pytest.raises(ValueError, match="U and R must have the same rows"):
        model(U, R[:1])
    with pytest.raises(ValueError, match="kernel_size must be odd"):
        RecurrentSOCICNN(T, P, PR, kernel_size=4)
    with pytest.raises(ValueError, match="hidden must be an integer"):
        RecurrentSOCICNN(T, P, PR, hidden=0)


def test_inference_accepts_the_per_row_model_unchanged():
    model = RecurrentSOCICNN(T, P, PR, hidden=5, quad_channels=3, norm_groups=2, dtype=F64, seed=1)
    g = torch.Generator().manual_seed(0)
    R = 2 * torch.rand(8, T, PR, generator=g, dtype=F64) - 1
    y = 2 * torch.randn(8, T * P, generator=g, dtype=F64)
    per_row = model.at(R)
    res, exact = prox(per_row, y, 2.0, method="newton"), prox(per_row, y, 2.0, method="socp")
    assert bool(res.converged.all())
    assert float(((res.value - exact.value) / exact.value.abs().clamp(min=1)).abs().max()) <= 1e-8
    box = sc.inference.minimize(per_row.select(torch.arange(3)), sc.inference.Box(-1.0, 1.0), tol=1e-6)
    assert bool(box.converged.all()) and float(box.x.abs().max()) <= 1.0
