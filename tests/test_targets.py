"""Benchmark targets: values at known points, convexity, deterministic sampling."""

from __future__ import annotations

import math

import pytest
import torch

from socicnn.targets import GROUPS, REFERENCE_TARGETS, TARGETS, get_target, make_dataset, target_names

EXPECTED = [  # (name, x, f(x)) computed by hand from the documented formulas
    ("quad_iso", [1.0, 2.0], 2.5),
    ("quad_aniso", [1.0, 1.0, 1.0], 0.5 * (0.5 + 1.5 + 2.5)),
    ("quad_aniso", [0.0, 2.0], 0.5 * 2.5 * 4),
    ("norm_euclid", [3.0, 4.0], 5.0),
    ("norm_aniso", [1.0, 1.0], math.sqrt(11.0)),
    ("norm_aniso", [0.0, 0.0, 0.0], 1e-6),  # sqrt(0 + 1e-12), the reference's guard
    ("mixed", [0.0, 0.0, 0.0], 0.4 + 0.7e-6),  # quad = 0, norm = 0.7 sqrt(1e-12), max(0.2, -0.1, 0.4)
    ("softplus_sum", [0.0, 0.0, 0.0], 3 * math.log(2.0)),
    ("logsumexp_quad", [0.0, 0.0, 0.0, 0.0], math.log(4.0)),
    ("logsumexp_quad", [1.0, 1.0], 1.0 + math.log(2.0) + 0.2),
    ("huber", [0.5, -2.0], 0.125 + 1.5),
    ("huber", [1.0], 0.5),
    ("l1", [1.0, -2.0, 3.0], 6.0),
    ("exp_sum", [0.0, 0.0], 2.0),
    ("exp_sum", [2.0], math.e),
    ("kinks_quad", [0.0, 0.0], 2.0),  # |0| + |1 - 0| per coordinate
    ("kinks_quad", [2.0, -1.0], (2 + 1) + (1 + 2) + 0.25 * (0.5 * 4 + 2.0 * 1)),
]


@pytest.mark.parametrize("name, x, value", EXPECTED)
def test_values_at_known_points(name, x, value):
    out = get_target(name)(torch.tensor([x], dtype=torch.float64))
    assert out.shape == (1,)
    assert float(out[0]) == pytest.approx(value, rel=1e-12, abs=1e-12)


def test_mixed_piecewise_part():
    # d = 2: a1 = (-1, 1), a2 = (cos 0, cos pi) = (1, -1), a3 = sign(-1 + 1e-8, 1 + 1e-8) = (-1, 1)
    x = torch.tensor([[2.0, 0.0]], dtype=torch.float64)
    quad = 0.25 * (0.5 * 4)
    norm = 0.7 * math.sqrt(2.0 * 4)
    assert float(get_target("mixed")(x)[0]) == pytest.approx(quad + norm + max(-2 + 0.2, 2 - 0.1, -2 + 0.4))


@pytest.mark.parametrize("name", target_names())
def test_every_target_is_convex_on_its_domain(name):
    t = get_target(name)
    g = torch.Generator().manual_seed(0)
    x, y = (t.low + (t.high - t.low) * torch.rand(500, 7, generator=g, dtype=torch.float64) for _ in range(2))
    lam = torch.rand(500, 1, generator=g, dtype=torch.float64)
    lhs = t(lam * x + (1 - lam) * y)
    rhs = lam[:, 0] * t(x) + (1 - lam[:, 0]) * t(y)
    assert bool((lhs <= rhs + 1e-10).all())


def test_registry_is_documented_and_complete():
    assert len(TARGETS) == 11
    assert len(REFERENCE_TARGETS) == 10 and set(REFERENCE_TARGETS) == set(TARGETS) - {"exp_sum"}
    assert {t.group for t in TARGETS.values()} == set(GROUPS)
    assert {n for n, t in TARGETS.items() if t.soc_exact} == {"quad_iso", "quad_aniso", "norm_euclid", "norm_aniso"}
    for t in TARGETS.values():
        assert t.formula and t.structure and (t.low, t.high) == (-3.0, 3.0)
    with pytest.raises(ValueError, match="target"):
        get_target("rosenbrock")
    with pytest.raises(ValueError, match=r"\(N, d\)"):
        get_target("l1")(torch.zeros(3))


def test_datasets_are_deterministic_given_a_seed():
    a = make_dataset("huber", 4, 50, 20, 30, seed=3)
    b = make_dataset("huber", 4, 50, 20, 30, seed=3)
    c = make_dataset("huber", 4, 50, 20, 30, seed=4)
    assert torch.equal(a.X_train, b.X_train) and torch.equal(a.y_test, b.y_test)
    assert not torch.equal(a.X_train, c.X_train)
    assert a.X_train.shape == (50, 4) and a.y_val.shape == (20,) and a.X_test.shape == (30, 4)
    assert a.X_train.dtype == torch.float32
    assert float(a.X_train.min()) >= -3 and float(a.X_train.max()) <= 3
    assert torch.allclose(a.y_train, get_target("huber")(a.X_train.double()).float(), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="dim"):
        make_dataset("huber", 0)


def test_float32_draws_are_shared_by_every_target_of_a_dim_and_seed():
    a = make_dataset("l1", 3, 40, 10, 10, seed=5, sample_dtype=torch.float32)
    b = make_dataset("kinks_quad", 3, 40, 10, 10, seed=5, sample_dtype=torch.float32)
    assert torch.equal(a.X_train, b.X_train) and torch.equal(a.X_test, b.X_test)
    g = torch.Generator().manual_seed(5)
    assert torch.equal(a.X_train, -3 + 6 * torch.rand(40, 3, generator=g, dtype=torch.float32))
    assert torch.equal(a.y_train, a.X_train.double().abs().sum(1).float())
