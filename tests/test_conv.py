"""Convolutional SOC-ICNNs on the block protocol: readout against autograd, convexity in the image
(trained and untrained), the lifting as a witness on small images, matched parameter counts."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import socicnn as sc
from socicnn.conv_model import CONV_FAMILIES, ConvSOCICNN, conv_family, conv_parameter_count
from socicnn.convmaps import ConvMap

F64 = torch.float64
SETTINGS = settings(max_examples=8, deadline=None, derandomize=True)

configs = st.fixed_dictionaries(
    dict(
        size=st.integers(3, 6),
        channels=st.lists(st.integers(1, 3), min_size=1, max_size=3).map(tuple),
        quad_channels=st.integers(0, 2),
        norm_groups=st.integers(0, 2),
        activation=st.sampled_from(["relu", "softplus"]),
        seed=st.integers(0, 2**16),
    )
)


def build(config) -> ConvSOCICNN:
    s = config["size"]
    return ConvSOCICNN(
        (1, s, s),
        2,
        config["channels"],
        config["quad_channels"],
        config["norm_groups"],
        activation=config["activation"],
        dtype=F64,
        seed=config["seed"],
    )


def jensen_violation(cm: ConvSOCICNN, seed: int, n: int = 24) -> float:
    """Largest relative ``E(t a + (1-t) b, C) - (t E(a, C) + (1-t) E(b, C))`` over random images
    ``a, b``, contexts ``C`` and ``t``."""
    g = torch.Generator().manual_seed(seed)
    shape = cm.image_shape
    a = 2 * torch.randn(n, *shape, generator=g, dtype=F64)
    b = 2 * torch.randn(n, *shape, generator=g, dtype=F64)
    C = torch.randn(n, cm.context_channels, *shape[1:], generator=g, dtype=F64)
    t = torch.rand(n, 1, 1, 1, generator=g, dtype=F64)
    with torch.no_grad():
        fa, fb, fm = cm(a, C), cm(b, C), cm(t * a + (1 - t) * b, C)
    t = t.reshape(-1)
    return float(((fm - t * fa - (1 - t) * fb) / (1 + fa.abs() + fb.abs())).max())


def test_conv_map_adjoint_and_sparse_matrix_agree():
    m = ConvMap(2, 3, 3, 4, 5, generator=torch.Generator().manual_seed(0), dtype=F64)
    x, q = torch.randn(7, m.in_dim, dtype=F64), torch.randn(7, m.out_dim, dtype=F64)
    torch.testing.assert_close((m.apply(x) * q).sum(), (x * m.adjoint(q)).sum(), rtol=1e-13, atol=1e-12)
    dense = torch.as_tensor(m.sparse().toarray())
    torch.testing.assert_close(dense, m.dense(), rtol=0, atol=1e-14)
    nonneg = ConvMap(2, 3, 3, 4, 5, nonnegative=True, dtype=F64)
    assert bool((nonneg.weight >= 0).all())


@SETTINGS
@given(config=configs)
def test_untrained_conv_models_are_convex_in_the_image(config):
    assert jensen_violation(build(config), config["seed"]) <= 1e-12


@SETTINGS
@given(config=configs, steps=st.integers(8, 12))
def test_conv_models_stay_convex_after_adversarial_training(config, steps):
    """Adam pushing every raw weight negative cannot break convexity."""
    cm = build(config)
    g = torch.Generator().manual_seed(config["seed"])
    X = torch.randn(16, *cm.image_shape, generator=g, dtype=F64)
    C = torch.randn(16, 2, *cm.image_shape[1:], generator=g, dtype=F64)
    y = torch.randn(16, generator=g, dtype=F64)
    opt = torch.optim.Adam(cm.parameters(), lr=0.5)
    for _ in range(steps):
        opt.zero_grad()
        loss = torch.nn.functional.smooth_l1_loss(cm(X, C), y) + 1e3 * sum(p.sum() for p in cm.parameters())
        loss.backward()
        opt.step()
    raw = [m.raw for m in cm.backbone.z_maps] + [cm.backbone.c_raw]
    assert any(bool((r < 0).any()) for r in raw), "the loss failed to push a raw z-path weight negative"
    assert jensen_violation(cm, config["seed"] + 1) <= 1e-12


def images(n: int, size: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` images ``(n, 1, size, size)`` and contexts ``(n, 2, size, size)``, uniform on [0, 1)."""
    return (torch.rand(n, 1, size, size, generator=g, dtype=F64),
            torch.rand(n, 2, size, size, generator=g, dtype=F64))


@pytest.mark.parametrize("activation", ["relu", "softplus"])
def test_readout_of_at_context_equals_autograd(activation):
    cm = ConvSOCICNN((1, 6, 6), 2, (3, 3), 4, 2, activation=activation, dtype=F64, seed=1)
    g = torch.Generator().manual_seed(2)
    X, C = images(5, 6, g)
    with torch.no_grad():
        model = cm.at(C)
        torch.testing.assert_close(model(X.reshape(5, -1)), cm(X, C), rtol=0, atol=1e-13)
        torch.testing.assert_close(cm.at(C[1])(X[1].reshape(-1)), cm(X, C)[1], rtol=0, atol=1e-13)
    x = X.reshape(5, -1)
    xg = x.clone().requires_grad_(True)
    grad = torch.autograd.grad(model(xg).sum(), xg)[0]
    v = torch.randn(x.shape, generator=g, dtype=F64)
    hv = torch.autograd.functional.hvp(lambda z: model(z).sum(), x, v)[1]
    ro = sc.readout.readout(model, x)
    torch.testing.assert_close(ro.grad, grad, rtol=0, atol=1e-12)
    torch.testing.assert_close(ro.dual_value, ro.value, rtol=0, atol=1e-12)
    torch.testing.assert_close(sc.readout.hvp(model, x, v), hv, rtol=0, atol=1e-12)
    torch.testing.assert_close(torch.einsum("nij,nj->ni", sc.readout.hessian(model, x), v), hv, rtol=0, atol=1e-12)
    torch.testing.assert_close(sc.readout.directional_derivative(model, x, v), (grad * v).sum(1), rtol=0, atol=1e-12)


@pytest.mark.parametrize("activation", ["relu", "softplus"])
def test_torch_func_transforms_equal_the_readout(activation):
    # vmap, grad, jacrev and hessian (forward over reverse mode) through the exact cone norms,
    # on the model of the image and on the model of (image, context); a zero cone included.
    cm = ConvSOCICNN((1, 5, 5), 2, (3, 3), 2, 2, activation=activation, dtype=F64, seed=3)
    X, C = images(4, 5, torch.Generator().manual_seed(4))
    with torch.no_grad():
        model = cm.at(C[0])
    x = X.reshape(4, -1)
    x[0] = 0.0  # with the offsets zeroed below, every cone of the norm block is at its kink here
    with torch.no_grad():
        for block in model.blocks():
            if hasattr(block, "d"):
                block.d.zero_()
    G = torch.func.vmap(torch.func.grad(lambda v: model(v[None])[0]))(x)
    H = torch.func.vmap(torch.func.hessian(lambda v: model(v[None])[0]))(x)
    J = torch.func.jacrev(model)(x)
    torch.testing.assert_close(torch.diagonal(J, dim1=0, dim2=1).T, G)
    ro = sc.readout.readout(model, x)
    torch.testing.assert_close(G, ro.grad, rtol=0, atol=1e-12)
    torch.testing.assert_close(H, sc.readout.hessian(model, x), rtol=0, atol=1e-12)
    GX = torch.func.vmap(torch.func.grad(lambda a, c: cm(a[None], c[None])[0]))(X, C)
    torch.testing.assert_close(GX[0].reshape(-1), G[0], rtol=0, atol=1e-12)


def test_dense_hessian_of_a_large_image_points_to_hvp():
    cm = ConvSOCICNN((1, 64, 64), 2, (2,), 2, 1, dtype=F64, seed=0)
    with torch.no_grad():
        model = cm.at(torch.zeros(2, 64, 64, dtype=F64))
    x = torch.rand(2, 64 * 64, dtype=F64)
    with pytest.raises(ValueError, match="hvp"):
        sc.readout.hessian(model, x)
    assert sc.readout.hvp(model, x, x).shape == x.shape


@pytest.mark.parametrize("activation", ["relu", "softplus"])
def test_lifting_is_a_witness_on_small_images(activation):
    """On 5x5 images the conic lifting's value equals the forward value and its duals give the
    readout gradient."""
    cm = ConvSOCICNN((1, 5, 5), 2, (2, 2), 2, 1, activation=activation, dtype=F64, seed=3)
    g = torch.Generator().manual_seed(4)
    X, C = torch.rand(2, 1, 5, 5, generator=g, dtype=F64), torch.rand(2, 2, 5, 5, generator=g, dtype=F64)
    with torch.no_grad():
        model = cm.at(C)
    x = X.reshape(2, -1)
    ro = sc.readout.readout(model, x)
    problem = sc.lifting.LiftedProblem(model, solver="clarabel")
    for i in range(2):
        sol = problem.solve(x[i], row=i)
        assert abs(sol.value - float(ro.value[i])) <= 1e-6 * max(1.0, abs(sol.value))
        batched = [[torch.as_tensor(a)[None] for a in sol.multipliers[0]]]
        batched += [torch.as_tensor(m)[None] for m in sol.multipliers[1:]]
        slope = sc.readout.supporting_slope(model.select(torch.tensor([i])), batched)
        torch.testing.assert_close(slope[0], ro.grad[i], rtol=0, atol=1e-5)


def test_five_families_have_matched_parameter_counts():
    counts = {}
    for family in CONV_FAMILIES:
        cm = conv_family(family, (1, 8, 8), seed=0)
        assert cm.num_parameters() == conv_parameter_count(cm.backbone.channels, cm.quad_channels, cm.norm_groups)
        counts[family] = cm.num_parameters()
    target = counts["Conv-SOC"]
    assert all(abs(c - target) <= 0.01 * target for c in counts.values()), counts


def test_block_offsets_bound_per_row_match_their_own():
    cm = ConvSOCICNN((1, 4, 4), 2, (2,), 2, 1, dtype=F64, seed=5)
    x = torch.rand(3, 16, dtype=F64)
    with torch.no_grad():
        for block in list(cm.base.blocks())[1:]:
            name = "e" if hasattr(block, "e") else "d"
            own = block.default_data()[name]
            bound = block.bind({name: own.expand(3, -1) + 0.0})
            torch.testing.assert_close(bound(x), block(x), rtol=0, atol=1e-14)
            shifted = block.bind({name: own + 1.0})
            assert not torch.allclose(shifted(x), block(x))


def test_bad_inputs_name_the_image_and_the_context():
    cm = ConvSOCICNN((1, 4, 4), 2, (2,), 1, 1, dtype=F64, seed=0)
    X, C = torch.rand(2, 1, 4, 4, dtype=F64), torch.rand(2, 2, 4, 4, dtype=F64)
    with pytest.raises(ValueError, match="X has 32 non-finite"):
        cm(torch.full_like(X[:1], float("inf")).expand(2, -1, -1, -1), C)
    with pytest.raises(ValueError, match=r"C must have shape \(N, 2, 4, 4\)"):
        cm.at(C[:, :1])
    with pytest.raises(ValueError, match="X and C must have the same rows"):
        cm(X, C[:1])


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (dict(image_shape=8), TypeError, "image_shape must be a sequence of positive integers, got 8"),
        (dict(image_shape=(8, 8)), ValueError, r"image_shape must be \(channels, height, width\)"),
        (dict(image_shape=(1, 0, 8)), ValueError, "image_shape must be a non-empty sequence of positive"),
        (dict(channels=3), TypeError, "channels must be a sequence of positive integers, got 3"),
        (dict(channels=()), ValueError, "channels must be a non-empty sequence"),
    ],
)
def test_bad_constructor_arguments_are_named(kwargs, error, message):
    with pytest.raises(error, match=message):
        ConvSOCICNN(**({"image_shape": (1, 4, 4)} | kwargs))
