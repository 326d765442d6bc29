"""SOCICNN / ReLUICNN: shapes, weight round trip, determinism, dtypes and torch.func transforms."""

import itertools

import pytest
import torch

import socicnn as sc

F64 = torch.float64
D = 3

SHAPES = [
    dict(hidden=(5,) * depth, quad_dims=(2,) * n_quad, norm_dims=(3,) * n_norm, passthrough=passthrough)
    for depth, passthrough, (n_quad, n_norm) in itertools.product(
        (1, 2, 4), (True, False), ((0, 0), (1, 0), (0, 2), (2, 1))
    )
]


def shape_id(shape: dict) -> str:
    counts = (len(shape[k]) for k in ("hidden", "quad_dims", "norm_dims"))
    return "L{}-q{}-n{}".format(*counts) + f"-pt{int(shape['passthrough'])}"


@pytest.mark.parametrize("dtype", [torch.float32, F64])
@pytest.mark.parametrize("shape", SHAPES, ids=shape_id)
def test_weights_round_trip_is_bitwise_exact(shape, dtype):
    model = sc.SOCICNN(D, **shape, dtype=dtype, seed=1)
    # Push some raw parameters negative so that abs() is really exercised by the round trip.
    with torch.no_grad():
        for p in model.parameters():
            p.neg_()
    w = model.weights()
    w.validate()
    clone = sc.SOCICNN.from_weights(w)
    assert clone.dtype == dtype
    structure = ("in_dim", "hidden", "quad_dims", "norm_dims", "activation")
    assert all(getattr(clone, k) == getattr(model, k) for k in structure)
    if len(model.hidden) > 1:  # passthrough only means something from the second layer on
        assert clone.passthrough == model.passthrough
    x = torch.randn(32, D, dtype=dtype)
    with torch.no_grad():
        assert torch.equal(clone(x), model(x))
    w2 = clone.weights()
    for a, b in zip(_flatten(w), _flatten(w2), strict=True):
        assert (a is None and b is None) or torch.equal(a, b)


def _flatten(w: sc.SOCICNNWeights) -> list:
    out = [*w.W, *w.U, *w.b, w.c, w.v, w.b0]
    for block in (*w.quad, *w.norm):
        out.extend(block)
    return out


def test_weights_fields_match_the_api():
    model = sc.SOCICNN(D, (4, 6), quad_dims=(2,), norm_dims=(3, 1), passthrough=False, dtype=F64, seed=0)
    w = model.weights()
    assert [t.shape for t in w.W[:1]] == [(4, D)] and w.W[1] is None and not w.passthrough
    assert w.U[0] is None and w.U[1].shape == (6, 4) and bool((w.U[1] >= 0).all())
    assert [t.shape for t in w.b] == [(4,), (6,)] and w.c.shape == (6,) and w.v.shape == (D,) and w.b0.shape == ()
    assert [(a.shape, B.shape, e.shape) for a, B, e in w.quad] == [((), (2, D), (2,))]
    assert [B.shape for _, B, _ in w.norm] == [(3, D), (1, D)]
    assert (w.in_dim, w.hidden, w.quad_dims, w.norm_dims) == (D, (4, 6), (2,), (3, 1))
    assert not any(t.requires_grad for t in _flatten(w) if t is not None)


def test_weights_load_with_torch_safe_loader(tmp_path):
    """torch.load(weights_only=True), PyTorch's default loader, reads saved effective weights."""
    model = sc.SOCICNN(D, (5, 4), quad_dims=(2,), norm_dims=(3,), passthrough=False, dtype=F64, seed=3)
    path = tmp_path / "weights.pt"
    torch.save(model.weights(), path)
    w = torch.load(path, weights_only=True)
    assert isinstance(w, sc.SOCICNNWeights)
    clone = sc.SOCICNN.from_weights(w)
    x = torch.randn(16, D, dtype=F64)
    with torch.no_grad():
        assert torch.equal(clone(x), model(x))


def test_relu_icnn_round_trip_and_is_socicnn_without_blocks():
    model = sc.ReLUICNN(D, (5, 5), passthrough=True, dtype=F64, seed=2)
    assert isinstance(model, sc.SOCICNN) and model.quad_dims == () and model.norm_dims == ()
    assert [type(b).__name__ for b in model.blocks()] == ["ReLUBackbone"]
    clone = sc.ReLUICNN.from_weights(model.weights())
    assert type(clone) is sc.ReLUICNN
    x = torch.randn(8, D, dtype=F64)
    with torch.no_grad():
        assert torch.equal(clone(x), model(x))


def test_blocks_sum_to_the_model():
    model = sc.SOCICNN(D, (5, 5), quad_dims=(2, 2), norm_dims=(3,), dtype=F64, seed=3)
    assert [b.multiplier_name for b in model.blocks()] == ["nu", "p", "p", "r"]
    x = torch.randn(8, D, dtype=F64)
    with torch.no_grad():
        torch.testing.assert_close(sum(b(x) for b in model.blocks()), model(x), rtol=0, atol=0)


@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_batched_and_single_input_shapes(dtype):
    model = sc.SOCICNN(D, (5, 5), quad_dims=(2,), norm_dims=(3,), dtype=dtype, seed=4)
    x = torch.randn(7, D, dtype=dtype)
    out = model(x)
    assert out.shape == (7,) and out.dtype == dtype
    single = model(x[2])
    assert single.shape == () and single.dtype == dtype
    torch.testing.assert_close(single, out[2])
    assert model(x[:0]).shape == (0,)


def test_float32_agrees_with_float64():
    m64 = sc.SOCICNN(D, (8, 8), quad_dims=(2,), norm_dims=(3,), dtype=F64, seed=5)
    m32 = sc.SOCICNN(D, (8, 8), quad_dims=(2,), norm_dims=(3,), dtype=torch.float32, seed=5)
    x = torch.randn(16, D, dtype=F64)
    with torch.no_grad():
        # Same seed: the float32 weights are the float64 initialisation rounded.
        torch.testing.assert_close(m32(x.float()).double(), m64(x), rtol=1e-5, atol=1e-5)


def test_same_seed_same_weights_and_outputs():
    kw = dict(hidden=(6, 6), quad_dims=(2,), norm_dims=(3,), dtype=F64)
    a, b = sc.SOCICNN(D, **kw, seed=7), sc.SOCICNN(D, **kw, seed=7)
    c = sc.SOCICNN(D, **kw, seed=8)
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb)
    x = torch.randn(8, D, dtype=F64)
    with torch.no_grad():
        assert not torch.equal(a(x), c(x))


def test_seed_does_not_touch_the_global_rng():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    sc.SOCICNN(D, (6,), seed=0)
    assert torch.equal(torch.rand(3), expected)


def test_seed_none_uses_the_global_rng():
    torch.manual_seed(9)
    a = sc.SOCICNN(D, (6,), dtype=F64)
    torch.manual_seed(9)
    b = sc.SOCICNN(D, (6,), dtype=F64)
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb)


def test_num_parameters_counts_raw_parameters():
    d, m1, m2 = 3, 4, 5
    model = sc.SOCICNN(d, (m1, m2), quad_dims=(2,), norm_dims=(3,), passthrough=True)
    backbone = (m1 * d + m1) + (m2 * d + m2 * m1 + m2) + m2 + d + 1
    quad = 2 * d + 2 + 1
    norm = 3 * d + 3 + 1
    assert model.num_parameters() == backbone + quad + norm


# ----------------------------------------------------------------- torch.func


@pytest.mark.parametrize("activation", ["relu", "softplus"])
def test_torch_func_transforms(activation):
    model = sc.SOCICNN(D, (6, 6), quad_dims=(2,), norm_dims=(2,), activation=activation, dtype=F64, seed=6)
    x = torch.randn(10, D, dtype=F64)
    H = torch.func.vmap(torch.func.hessian(model))(x)
    G = torch.func.vmap(torch.func.grad(model))(x)
    J = torch.func.jacrev(model)(x)
    assert H.shape == (10, D, D) and G.shape == (10, D) and J.shape == (10, 10, D)
    torch.testing.assert_close(torch.diagonal(J, dim1=0, dim2=1).T, G)
    torch.testing.assert_close(torch.func.grad(model)(x[3]), G[3])
    torch.testing.assert_close(H, H.transpose(1, 2))
    assert bool((torch.linalg.eigvalsh(H) > -1e-10).all())  # convex: PSD Hessians
    xr = x.clone().requires_grad_(True)
    (g_autograd,) = torch.autograd.grad(model(xr).sum(), xr)
    torch.testing.assert_close(G, g_autograd)
    if activation == "relu":
        ro = sc.readout.readout(model, x)
        keep = ro.margins > 1e-6
        torch.testing.assert_close(H[keep], sc.readout.hessian(model, x)[keep])
        torch.testing.assert_close(G[keep], ro.grad[keep])


@pytest.mark.parametrize("activation", ["relu", "softplus"])
def test_forward_compiles_as_one_graph_and_exports(activation):
    """The input checks do not break torch.compile(fullgraph=True) or torch.export: value checks
    (finiteness) are skipped while tracing, shape checks are static."""
    model = sc.SOCICNN(D, (6, 6), quad_dims=(2,), norm_dims=(2,), activation=activation, dtype=F64, seed=6)
    x = torch.randn(5, D, dtype=F64)
    with torch.no_grad():
        expected = model(x)
        torch._dynamo.reset()
        # The "eager" backend runs Dynamo's graph capture (what fullgraph=True checks) without a
        # C++ compiler, so the test is fast and needs no toolchain.
        compiled = torch.compile(model, fullgraph=True, backend="eager")
        torch.testing.assert_close(compiled(x), expected, rtol=0, atol=0)
        exported = torch.export.export(model, (x,))
        torch.testing.assert_close(exported.module()(x), expected, rtol=0, atol=0)
    torch._dynamo.reset()
    bad = x.clone()
    bad[0, 0] = float("nan")
    with pytest.raises(ValueError, match="non-finite"):  # still checked outside tracing
        model(bad)


def test_torch_func_still_checks_shapes():
    model = sc.SOCICNN(D, (4,), dtype=F64, seed=0)
    with pytest.raises(ValueError, match="x has 4 features"):
        torch.func.vmap(torch.func.grad(model))(torch.randn(5, D + 1, dtype=F64))
