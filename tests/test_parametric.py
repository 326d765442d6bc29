"""Parametric SOC-ICNNs: ``pm.at(theta)`` is the model ``pm(., theta)`` for every family and both
context modes, lifting/readout accept it unchanged, and ``f(., theta)`` is convex in ``x`` for
every ``theta``, trained or not."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import socicnn as sc
from socicnn.parametric import ParametricSOCICNN

F64 = torch.float64
D, P = 4, 3
# the five families as (quad_dims, norm_dims, activation)
FAMILIES = {
    "relu": ((), (), "relu"),
    "softplus": ((), (), "softplus"),
    "quad": ((D,), (), "relu"),
    "norm": ((), (D, 2), "relu"),
    "soc": ((D,), (D, 2), "relu"),
}
CASES = [(f, mode) for f in FAMILIES for mode in ("bias", "picnn")]


def make(family: str, mode: str, seed: int = 0) -> ParametricSOCICNN:
    quad, norm, act = FAMILIES[family]
    return ParametricSOCICNN(D, P, (6, 5), quad, norm, context=mode, activation=act, dtype=F64, seed=seed)


def data(n: int = 5, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, D, generator=g, dtype=F64), torch.randn(n, P, generator=g, dtype=F64)


@pytest.mark.parametrize("family,mode", CASES)
def test_at_equals_forward_readout_and_lifting(family, mode):
    pm = make(family, mode)
    x, theta = data()
    with torch.no_grad():
        rows = pm(x, theta)
        batch = pm.at(theta)
        torch.testing.assert_close(batch(x), rows, rtol=0, atol=1e-13)
        for i in range(3):
            torch.testing.assert_close(pm.at(theta[i])(x[i]), rows[i], rtol=0, atol=1e-13)
        problem = sc.lifting.LiftedProblem(batch, solver="clarabel")  # one compiled problem, every row
    with torch.enable_grad():
        want = torch.stack([torch.func.grad(lambda v, i=i: pm(v[None], theta[i : i + 1])[0])(x[i]) for i in range(5)])
    torch.testing.assert_close(sc.readout.readout(batch, x).grad, want, rtol=0, atol=1e-11)
    for i in range(5):
        # Clarabel flags some exponential-cone solves (softplus units far below zero) as
        # "optimal_inaccurate" while the value is right: the value is what is checked.
        sol = problem.solve(x[i], row=i, accept_inaccurate=family == "softplus")
        assert abs(sol.value - float(rows[i])) <= 1e-6 * max(1.0, abs(float(rows[i])))


def test_context_modes_differ_in_what_depends_on_theta():
    bias, picnn = make("soc", "bias"), make("soc", "picnn")
    _, theta = data()
    data_bias = bias.block_data(theta)
    assert "alpha" not in data_bias[1] and "lam" not in data_bias[2] and "v" not in data_bias[0]
    assert "zscale.1" not in data_bias[0] and "b.0" in data_bias[0] and "e" in data_bias[1]
    with torch.no_grad():
        data_picnn = picnn.block_data(theta)
    assert {"alpha", "e"} <= set(data_picnn[1]) and {"zscale.1", "v"} <= set(data_picnn[0])
    assert float(data_picnn[1]["alpha"].min()) >= 0 and float(data_picnn[0]["zscale.1"].min()) >= 0
    assert float(data_picnn[1]["alpha"].std()) > 0  # the curvature follows the context
    assert picnn.num_parameters() > bias.num_parameters() > bias.base.num_parameters()


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="unknown context 'film'"):
        ParametricSOCICNN(D, P, context="film")
    with pytest.raises(ValueError, match="context_dim must be a positive integer"):
        ParametricSOCICNN(D, 0)
    with pytest.raises(ValueError, match="context_hidden must be 0"):
        ParametricSOCICNN(D, P, context="bias", context_hidden=4)
    pm = make("soc", "bias")
    with pytest.raises(ValueError, match="context"):
        pm(torch.zeros(2, D, dtype=F64), torch.zeros(2, P + 1, dtype=F64))


def _trained(pm: ParametricSOCICNN, seed: int) -> ParametricSOCICNN:
    """A few Adam steps on a random regression: weights far from their initialisation."""
    g = torch.Generator().manual_seed(seed)
    x, theta = torch.randn(64, D, generator=g, dtype=F64), torch.randn(64, P, generator=g, dtype=F64)
    y = torch.randn(64, generator=g, dtype=F64) * 5
    opt = torch.optim.Adam(pm.parameters(), lr=0.1)
    for _ in range(15):
        opt.zero_grad()
        ((pm(x, theta) - y) ** 2).mean().backward()
        opt.step()
    return pm


@settings(max_examples=12, deadline=None, derandomize=True)
@given(seed=st.integers(0, 2**16), case=st.sampled_from(CASES), trained=st.booleans())
def test_convex_in_x_for_every_theta(seed, case, trained):
    family, mode = case
    pm = make(family, mode, seed % 5)
    if trained:
        pm = _trained(pm, seed)
    g = torch.Generator().manual_seed(seed)
    theta = 3 * torch.randn(1, P, generator=g, dtype=F64).expand(128, -1)
    a, b = 3 * torch.randn(128, D, generator=g, dtype=F64), 3 * torch.randn(128, D, generator=g, dtype=F64)
    t = torch.rand(128, 1, generator=g, dtype=F64)
    with torch.no_grad():
        fa, fb, fm = pm(a, theta), pm(b, theta), pm(t * a + (1 - t) * b, theta)
    chord = t[:, 0] * fa + (1 - t[:, 0]) * fb
    assert float(((fm - chord) / (1 + fa.abs() + fb.abs())).max()) <= 1e-12
