"""Exact projections onto box, simplex and capped budget set vs CVXPY's projections."""

from __future__ import annotations

import cvxpy as cp
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from socicnn.inference import Box, Budget, Simplex, project_budget, project_simplex

vectors = st.lists(st.floats(-3, 3, allow_nan=False), min_size=1, max_size=12).map(np.array)


def assert_matches(p: np.ndarray, ref: np.ndarray, v: np.ndarray) -> None:
    """Same point up to the solver's accuracy, and never farther from ``v`` than the solver's."""
    np.testing.assert_allclose(p, ref, atol=1e-5)
    assert np.sum((p - v) ** 2) <= np.sum((ref - v) ** 2) + 1e-9


def cvxpy_projection(v: np.ndarray, constraints) -> np.ndarray:
    x = cp.Variable(v.shape[0])
    cp.Problem(cp.Minimize(cp.sum_squares(x - v)), constraints(x)).solve(
        solver="CLARABEL", tol_gap_abs=1e-12, tol_gap_rel=1e-12, tol_feas=1e-12
    )
    return x.value


@settings(max_examples=25, deadline=None, derandomize=True)
@given(v=vectors, total=st.floats(0.1, 3.0))
def test_simplex_projection_matches_cvxpy(v, total):
    p = project_simplex(torch.tensor(v)[None], total)[0].numpy()
    ref = cvxpy_projection(v, lambda x: [x >= 0, cp.sum(x) == total])
    assert p.min() >= 0 and abs(p.sum() - total) <= 1e-12 * (1 + total)
    assert_matches(p, ref, v)


@settings(max_examples=25, deadline=None, derandomize=True)
@given(v=vectors, budget=st.floats(0.0, 6.0))
def test_budget_projection_matches_cvxpy(v, budget):
    p = project_budget(torch.tensor(v)[None], budget)[0].numpy()
    ref = cvxpy_projection(v, lambda x: [x >= 0, x <= 1, cp.sum(x) <= budget])
    assert p.min() >= 0 and p.max() <= 1 and p.sum() <= budget + 1e-12
    assert_matches(p, ref, v)


@settings(max_examples=25, deadline=None, derandomize=True)
@given(v=vectors, share=st.floats(0.0, 1.0))
def test_equality_budget_projection_matches_cvxpy(v, share):
    budget = share * v.shape[0]
    p = Budget(budget, equality=True).project(torch.tensor(v)[None])[0].numpy()
    ref = cvxpy_projection(v, lambda x: [x >= 0, x <= 1, cp.sum(x) == budget])
    assert p.min() >= 0 and p.max() <= 1 and abs(p.sum() - budget) <= 1e-12 * (1 + budget)
    assert_matches(p, ref, v)


def test_equality_budget_must_fit_the_dimension():
    with pytest.raises(ValueError, match="budget <= d"):
        Budget(5.0, equality=True).check(4)
    with pytest.raises(TypeError, match="True or False"):
        Budget(1.0, equality=1)


@pytest.mark.parametrize(
    "cons",
    [
        Box(-0.5, 2.0),
        Box([-1.0, 0.0, -2.0, 0.0, 0.5], [1.0, 3.0, -1.0, 0.0, 0.5]),
        Simplex(2.0),
        Budget(1.5),
        Budget(2.5, equality=True),
        Budget(0.0, equality=True),
    ],
    ids=["box", "box-vector", "simplex", "budget", "budget-eq", "budget-eq-0"],
)
def test_support_is_the_linear_programs_value(cons):
    # min_{z in C} g^T z in closed form vs the LP solved by a conic solver.
    g = torch.randn(6, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    got = cons.support(g)
    for i in range(g.shape[0]):
        z = cp.Variable(5)
        prob = cp.Problem(cp.Minimize(g[i].numpy() @ z), cons.cvxpy(z))
        prob.solve(solver="CLARABEL", tol_gap_abs=1e-12, tol_gap_rel=1e-12, tol_feas=1e-12)
        assert abs(float(got[i]) - prob.value) <= 1e-8


def test_support_of_a_free_side_is_unbounded_only_where_g_pulls():
    cons = Box(0.0, float("inf"))
    g = torch.tensor([[1.0, 2.0], [1.0, -1.0]], dtype=torch.float64)
    assert float(cons.support(g)[0]) == 0.0
    assert float(cons.support(g)[1]) == -float("inf")


@settings(max_examples=15, deadline=None, derandomize=True)
@given(v=vectors, lo=st.floats(-2, 0), width=st.floats(0, 2))
def test_box_projection_matches_cvxpy(v, lo, width):
    p = Box(lo, lo + width).project(torch.tensor(v)[None])[0].numpy()
    ref = cvxpy_projection(v, lambda x: [x >= lo, x <= lo + width])
    assert_matches(p, ref, v)


def test_budget_projection_is_exact_on_both_regimes():
    # Inactive sum: plain clipping. Active sum: KKT x = clip(v - theta, 0, 1), sum x = B exactly.
    v = torch.tensor([[0.2, -1.0, 1.7, 0.5], [0.9, 0.8, 0.7, 2.0]], dtype=torch.float64)
    p = project_budget(v, 2.0)
    assert torch.equal(p[0], v[0].clamp(0, 1))
    assert abs(float(p[1].sum()) - 2.0) <= 1e-15
    theta = float((v[1] - p[1])[(p[1] > 0) & (p[1] < 1)][0])
    torch.testing.assert_close(p[1], (v[1] - theta).clamp(0, 1), rtol=0, atol=1e-15)


def test_projections_are_batched_and_idempotent():
    v = torch.randn(50, 7, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * 2
    for cons in (Box(-0.5, 0.5), Simplex(2.0), Budget(1.5)):
        p = cons.project(v)
        assert p.shape == v.shape
        torch.testing.assert_close(cons.project(p), p, rtol=0, atol=1e-14)


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: Box(1.0, 0.0), "empty box"),
        (lambda: Budget(-1.0), "budget >= 0"),
        (lambda: Simplex(0.0), "> 0"),
        (lambda: Box([0.0, float("nan")], 1.0), "NaN"),
        (lambda: Box(float("inf"), float("inf")), "empty box: a lower bound is \\+inf"),
        (lambda: Box(-float("inf"), -float("inf")), "empty box: .* an upper bound is -inf"),
        (lambda: Box([0.0, float("inf")], [1.0, float("inf")]), "empty box"),
        (lambda: Box(np.zeros((2, 2)), 1.0), "1-D"),
    ],
    ids=["lo > hi", "budget < 0", "total 0", "NaN", "inf inf", "-inf -inf", "inf entry", "2-D"],
)
def test_empty_or_invalid_sets_are_rejected(make, match):
    with pytest.raises(ValueError, match=match):
        make()


@pytest.mark.parametrize("lo", ["a", [1.0, "b"], None, 1j], ids=["str", "mixed", "None", "complex"])
def test_box_bounds_must_be_real_numbers(lo):
    with pytest.raises(TypeError, match="Box lo must be"):
        Box(lo, 1.0)


def test_one_sided_boxes_are_not_empty():
    v = torch.tensor([[-5.0, 5.0]], dtype=torch.float64)
    torch.testing.assert_close(Box(0.0, float("inf")).project(v), torch.tensor([[0.0, 5.0]], dtype=torch.float64))
    torch.testing.assert_close(Box(-float("inf"), 0.0).project(v), torch.tensor([[-5.0, 0.0]], dtype=torch.float64))
