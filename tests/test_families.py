"""Model families: one parameterisation, the parameter-matching rule, convexity after training."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from socicnn import SOCICNN
from socicnn.families import FAMILIES, LABELS, family_spec, matched_specs, parameter_table
from socicnn.train import fit

# EXPERIMENTS.md G: SOC-ICNN depth 2 at widths 16/20/24/32 for d = 5/10/20/50, blocks of rank d.
DOCUMENTED_DEPTHS = {
    (5, 16): dict(relu=3, softplus=3, quad=3, norm=3, soc=2),
    (10, 20): dict(relu=3, softplus=3, quad=3, norm=3, soc=2),
    (20, 24): dict(relu=3, softplus=3, quad=3, norm=3, soc=2),
    (50, 32): dict(relu=4, softplus=4, quad=3, norm=3, soc=2),
}


def _count(d, width, depth, k_quad, k_norm):
    """Independent count from MATH.md §1: W_l, b_l per layer, U_l for l >= 2, c, v, b0; blocks."""
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
