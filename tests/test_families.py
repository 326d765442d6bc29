"""Model families: one parameterisation, the parameter-matching rule, convexity after training."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from socicnn import SOCICNN
from socicnn.families import FAMILIES, LABELS, ReferenceICNN, family_spec, matched_specs, parameter_table
from socicnn.train import fit

# The function-approximation benchmark: SOC-ICNN depth 2 at widths 16/20/24/32 for d = 5/10/20/50, blocks of rank d.
DOCUMENTED_DEPTHS = {
    (5, 16): dict(relu=3, softplus=3, quad=3, norm=3, soc=2),
    (10, 20): dict(relu=3, softplus=3, quad=3, norm=3, soc=2),
    (20, 24): dict(relu=3, softplus=3, quad=3, norm=3, soc=2),
    (50, 32): dict(relu=4, softplus=4, quad=3, norm=3, soc=2),
}


def _count(d, width, depth, k_quad, k_norm):
    """Independent count of the model's parameters: W_l, b_l per layer, U_l for l >= 2, c, v, b0; blocks."""
    backbone = depth * (width * d + width) + (depth - 1) * width * width + width + d + 1
    return backbone + sum(k * d + k + 1 for k in (k_quad, k_norm) if k)


@pytest.mark.parametrize("d, width", list(DOCUMENTED_DEPTHS))
def test_parameter_matching_picks_the_documented_depths(d, width):
    specs = matched_specs(d, width, soc_depth=2)
    assert {f: s.depth for f, s in specs.items()} == DOCUMENTED_DEPTHS[(d, width)]
    soc = _count(d, width, 2, d, d)
    assert specs["soc"].num_parameters() == soc
    for family, spec in specs.items():
        kq = d if family in ("quad", "soc") else 0
        kn = d if family in ("norm", "soc") else 0
        assert spec.num_parameters() == _count(d, width, spec.depth, kq, kn)
        assert spec.num_parameters() >= soc
        if family != "soc":  # the smallest such depth
            assert _count(d, width, spec.depth - 1, kq, kn) < soc
    table = parameter_table(specs)
    assert table["model"].tolist() == [LABELS[f] for f in FAMILIES]
    assert (table["ratio_to_soc"] >= 1).all()


def test_families_are_configurations_of_one_model():
    for family in FAMILIES:
        m = family_spec(family, 4, 6, 2).build(dtype=torch.float64, seed=0)
        assert type(m) is SOCICNN
        assert m.activation == ("softplus" if family == "softplus" else "relu")
        assert m.quad_dims == ((4,) if family in ("quad", "soc") else ())
        assert m.norm_dims == ((4,) if family in ("norm", "soc") else ())
    with pytest.raises(ValueError, match="family"):
        family_spec("kan", 4, 6, 2)


def test_block_init_scale_scales_the_initial_block_maps():
    full = family_spec("soc", 4, 6, 2).build(dtype=torch.float64, seed=0)
    small = family_spec("soc", 4, 6, 2, block_init_scale=0.01).build(dtype=torch.float64, seed=0)
    assert torch.allclose(small.quad_blocks[0].B, 0.01 * full.quad_blocks[0].B)
    assert torch.allclose(small.norm_blocks[0].d, 0.01 * full.norm_blocks[0].d)
    assert torch.equal(small.backbone.W[0], full.backbone.W[0])


@settings(max_examples=8, deadline=None)
@given(family=st.sampled_from(FAMILIES), seed=st.integers(0, 10_000))
def test_every_family_stays_convex_after_training(family, seed):
    g = torch.Generator().manual_seed(seed)
    X = 6 * torch.rand(128, 3, generator=g, dtype=torch.float64) - 3
    y = torch.sin(X).sum(1) * 5  # a non-convex target pushes the weights hard
    model = family_spec(family, 3, 8, 2).build(dtype=torch.float64, seed=seed)
    fit(model, X, y, X, y, steps=30, batch_size=64, lr=0.1, seed=seed)
    a, b = (6 * torch.rand(300, 3, generator=g, dtype=torch.float64) - 3 for _ in range(2))
    lam = torch.rand(300, generator=g, dtype=torch.float64)
    with torch.no_grad():
        lhs = model(lam[:, None] * a + (1 - lam[:, None]) * b)
        rhs = lam * model(a) + (1 - lam) * model(b)
    assert bool((lhs <= rhs + 1e-9 * (1 + rhs.abs())).all())


# The function-approximation benchmark, reference configuration: (depth, params) per dimension and family.
REFERENCE_COUNTS = {
    5: dict(soc=(2, 527), relu=(3, 822), softplus=(3, 822), quad=(3, 848), norm=(3, 853)),
    10: dict(soc=(2, 1083), relu=(3, 1491), softplus=(3, 1491), quad=(3, 1592), norm=(3, 1602)),
    20: dict(soc=(2, 2451), relu=(3, 2709), softplus=(3, 2709), quad=(3, 3110), norm=(3, 3130)),
    50: dict(soc=(2, 9423), relu=(4, 9683), softplus=(4, 9683), quad=(3, 9528), norm=(3, 9578)),
}
REFERENCE_WIDTHS = {5: 16, 10: 20, 20: 24, 50: 32}


@pytest.mark.parametrize("d", list(REFERENCE_COUNTS))
def test_reference_parameterisation_has_the_documented_depths_and_counts(d):
    specs = matched_specs(d, REFERENCE_WIDTHS[d], 2, parameterisation="reference", max_depth=8)
    got = {f: (s.depth, s.num_parameters()) for f, s in specs.items()}
    assert got == REFERENCE_COUNTS[d]
    for family, spec in specs.items():
        model = spec.build(dtype=torch.float32, seed=0)
        assert isinstance(model, ReferenceICNN) and model.num_parameters() == REFERENCE_COUNTS[d][family][1]


def test_reference_initialisation_follows_the_reference():
    d, h = 20, 24
    m = family_spec("soc", d, h, 3, parameterisation="reference").build(dtype=torch.float64, seed=1)
    m.requires_grad_(False)
    bound = d**-0.5
    for W in m.W:
        assert W.shape == (h, d) and float(W.abs().max()) <= bound and float(W.abs().max()) > 0.9 * bound
    assert all(float(b.abs().max()) == 0 for b in m.b) and float(m.b_out) == 0 and float(m.c.abs().max()) == 0
    raw = torch.cat([u.flatten() for u in m.U_raw] + [m.u_out_raw])
    assert abs(float(raw.mean()) + 3.5) < 0.02 and abs(float(raw.std()) - 0.2) < 0.02
    assert abs(float(torch.nn.functional.softplus(raw).mean()) - 0.03) < 0.003  # "start near 0.03"
    xavier = (6 / (d + 1)) ** 0.5
    assert float(m.w_out.abs().max()) <= xavier and float(m.w_out.abs().max()) > 0.5 * xavier
    assert m.L.shape == m.A.shape == (d, d)
    assert abs(float(m.L.std()) - 0.01) < 0.002 and abs(float(m.A.std()) - 0.01) < 0.002
    assert float(m.alpha_raw) == float(m.lam_raw) == 0.0
    # f = backbone + (alpha/2)||L^T x||^2 + lam ||A x + c|| with alpha = lam = softplus(0) + 1e-8
    x = torch.randn(5, d, dtype=torch.float64)
    w = math.log(2.0) + 1e-8
    with torch.no_grad():
        blocks = 0.5 * w * ((x @ m.L) ** 2).sum(1) + w * (x @ m.A.T).norm(dim=1)
    backbone = family_spec("relu", d, h, 3, parameterisation="reference").build(dtype=torch.float64, seed=1)
    with torch.no_grad():
        for name, p in backbone.named_parameters():
            p.copy_(dict(m.named_parameters())[name])
        torch.testing.assert_close(m(x), backbone(x) + blocks, rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match=r"\(N, 20\)"):
        m(torch.zeros(3, 4, dtype=torch.float64))
    with pytest.raises(ValueError, match="rank"):
        family_spec("soc", 4, 6, 2, rank=2, parameterisation="reference")


@settings(max_examples=8, deadline=None)
@given(family=st.sampled_from(FAMILIES), seed=st.integers(0, 10_000), zpath=st.floats(-4.0, 1.0))
def test_reference_models_are_convex_for_any_raw_parameters(family, seed, zpath):
    g = torch.Generator().manual_seed(seed)
    model = family_spec(family, 3, 8, 3, parameterisation="reference", zpath_mean=zpath).build(
        dtype=torch.float64, seed=seed)
    with torch.no_grad():
        for p in model.parameters():  # arbitrary raw values: convexity must not depend on them
            p.copy_(3 * torch.randn(p.shape, generator=g, dtype=torch.float64))
    a, b = (6 * torch.rand(300, 3, generator=g, dtype=torch.float64) - 3 for _ in range(2))
    lam = torch.rand(300, 1, generator=g, dtype=torch.float64)
    with torch.no_grad():
        lhs = model(lam * a + (1 - lam) * b)
        rhs = lam[:, 0] * model(a) + (1 - lam[:, 0]) * model(b)
    assert bool((lhs <= rhs + 1e-9 * (1 + rhs.abs())).all())
