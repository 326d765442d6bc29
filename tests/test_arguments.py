"""Every public entry point treats its arguments alike: a non-model is a TypeError naming it,
NumPy scalars are numbers (bools are not), malformed multipliers are a clear TypeError or
ValueError, never a silent answer or a traceback from deep inside torch."""

import cvxpy as cp
import numpy as np
import pytest
import torch

import socicnn as sc
from socicnn.inference import Box, Budget, Simplex
from socicnn.subdifferential import OptimalDualSet, max_directional_derivative, min_norm_subgradient

F64 = torch.float64
D = 3


@pytest.fixture(scope="module")
def model():
    return sc.SOCICNN(D, (4, 4), quad_dims=(2,), norm_dims=(2,), dtype=F64, seed=0)


@pytest.fixture(scope="module")
def x():
    return torch.randn(4, D, dtype=F64, generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="module")
def ro(model, x):
    return sc.readout.readout(model, x)


# ----------------------------------------------------------------- a non-model argument

CALLS = {
    "readout": lambda m, x, ro: sc.readout.readout(m, x),
    "hessian": lambda m, x, ro: sc.readout.hessian(m, x),
    "hvp": lambda m, x, ro: sc.readout.hvp(m, x, x),
    "directional_derivative": lambda m, x, ro: sc.readout.directional_derivative(m, x, x),
    "default_tie_tol": lambda m, x, ro: sc.readout.default_tie_tol(m, x),
    "supporting_slope": lambda m, x, ro: sc.readout.supporting_slope(m, ro.nu, ro.p, ro.r),
    "dual_objective": lambda m, x, ro: sc.readout.dual_objective(m, x, ro.nu, ro.p, ro.r),
    "dual_residual": lambda m, x, ro: sc.readout.dual_residual(m, ro.nu, ro.p, ro.r),
    "min_norm_subgradient": lambda m, x, ro: min_norm_subgradient(m, x[0]),
    "max_directional_derivative": lambda m, x, ro: max_directional_derivative(m, x[0], x),
    "OptimalDualSet": lambda m, x, ro: OptimalDualSet(m, x[0]),
    "epigraph": lambda m, x, ro: sc.lifting.epigraph(m, cp.Variable(D)),
    "prox": lambda m, x, ro: sc.inference.prox(m, x),
    "lifting.solve": lambda m, x, ro: sc.lifting.solve(m, x[0]),
    "LiftedProblem": lambda m, x, ro: sc.lifting.LiftedProblem(m),
    "to_cvxpy": lambda m, x, ro: sc.lifting.to_cvxpy(m),
    "ProxSOCP": lambda m, x, ro: sc.inference.ProxSOCP(m, 1.0),
}


@pytest.mark.parametrize(
    "bad", [{}, torch.nn.Linear(D, 1).double(), lambda v: v.sum(-1)], ids=["dict", "Linear", "function"]
)
@pytest.mark.parametrize("name", list(CALLS))
def test_a_non_model_is_a_type_error(name, bad, x, ro):
    with pytest.raises(TypeError, match=r"socicnn model.*got (dict|Linear|function)"):
        CALLS[name](bad, x, ro)


# ----------------------------------------------------------------- NumPy scalars are numbers

SCALARS = [np.float64, np.float32, np.int64]


@pytest.mark.parametrize("kind", SCALARS, ids=lambda k: k.__name__)
def test_numpy_scalar_tolerances(model, x, kind):
    tol = kind(0)
    ref = sc.readout.readout(model, x)
    torch.testing.assert_close(sc.readout.readout(model, x, tol=tol).grad, ref.grad, rtol=0, atol=0)
    torch.testing.assert_close(sc.readout.hessian(model, x, tol=tol), sc.readout.hessian(model, x), rtol=0, atol=0)
    dd = sc.readout.directional_derivative(model, x, x, tol=tol)
    torch.testing.assert_close(dd, (ref.grad * x).sum(1), rtol=1e-12, atol=1e-12)
    dset = OptimalDualSet(model, x[0], tol=tol)
    assert dset.contains(ref.grad[0], atol=kind(1))


@pytest.mark.parametrize("kind", [int, np.int64, np.int32], ids=lambda k: k.__name__)
def test_numpy_integer_sample_size(model, x, kind):
    dset = OptimalDualSet(model, x[0])
    assert dset.sample(kind(3), seed=kind(2)).slopes.shape == (3, D)


@pytest.mark.parametrize("kind", SCALARS, ids=lambda k: k.__name__)
def test_numpy_scalar_prox_arguments(model, x, kind):
    if np.issubdtype(kind, np.integer):
        kw = dict(beta=kind(10), max_iter=kind(20))
    else:
        kw = dict(beta=kind(10), max_iter=20, rtol=kind(1e-9), tie_tol=kind(1e-8))
    ref = sc.inference.prox(model, x, **{k: (v.item() if isinstance(v, np.generic) else v) for k, v in kw.items()})
    torch.testing.assert_close(sc.inference.prox(model, x, **kw).x, ref.x, rtol=0, atol=0)
    gd = sc.inference.prox(model, x, beta=kind(10), method="gd", max_iter=5, gtol=kind(1))
    assert int(gd.iterations.max()) <= 5


@pytest.mark.parametrize("kind", SCALARS, ids=lambda k: k.__name__)
def test_numpy_scalar_constraint_sets(kind):
    v = torch.tensor([[-2.0, 0.5, 3.0]], dtype=F64)
    torch.testing.assert_close(Box(kind(-1), kind(1)).project(v), Box(-1.0, 1.0).project(v), rtol=0, atol=0)
    torch.testing.assert_close(Simplex(kind(2)).project(v), Simplex(2.0).project(v), rtol=0, atol=0)
    torch.testing.assert_close(Budget(kind(1)).project(v), Budget(1.0).project(v), rtol=0, atol=0)


@pytest.mark.parametrize("flag", [True, np.bool_(True)], ids=["bool", "np.bool_"])
def test_a_bool_is_not_a_number(model, x, flag):
    with pytest.raises(TypeError, match="tol must be a real number"):
        sc.readout.readout(model, x, tol=flag)
    with pytest.raises(TypeError, match="total must be a real number"):
        Simplex(flag)
    with pytest.raises(TypeError, match="Box lo"):
        Box(flag, 2.0)


def test_a_bool_beta_is_not_a_number(model, x):
    with pytest.raises(TypeError, match="beta"):
        sc.inference.prox(model, x, beta=True)


# ----------------------------------------------------------------- malformed multipliers

MALFORMED = [
    ("one int", lambda ro: (5,), TypeError, "pass the multipliers as one per-block sequence"),
    ("nothing", lambda ro: (), TypeError, "pass the multipliers"),
    ("two lists", lambda ro: (ro.nu, ro.p), TypeError, "pass the multipliers"),
    ("strings", lambda ro: (ro.nu, ro.p, ["a"]), TypeError, "tensors or arrays"),
    ("integer tensor", lambda ro: (ro.nu, [ro.p[0].long()], ro.r), TypeError, "floating-point"),
    ("p of a missing block", lambda ro: (ro.nu, [], ro.r), ValueError, "do not match|hold"),
    ("per-block list too short", lambda ro: (list(ro.multipliers)[:2],), ValueError, "multipliers for 3 blocks"),
    ("p too narrow", lambda ro: (ro.nu, [ro.p[0][:, :1]], ro.r), ValueError, "shape"),
    ("nu of one layer for two", lambda ro: (ro.nu[:1], ro.p, ro.r), ValueError, r"nu \(block 0\) must be a list of 2"),
    ("p of two blocks for one", lambda ro: (ro.nu, ro.p * 2, ro.r), ValueError, "hold 1 backbone, 2 quadratic"),
    ("rows disagree", lambda ro: (ro.nu, [ro.p[0][:2]], ro.r), ValueError, "disagree on the number of rows"),
    ("NaN multiplier", lambda ro: (ro.nu, [ro.p[0] * float("nan")], ro.r), ValueError, "non-finite"),
]
FUNCTIONS = ["supporting_slope", "dual_objective", "dual_residual"]


@pytest.mark.parametrize(
    "fn, make, error, match",
    [
        pytest.param(fn, m, e, r, id=f"{fn}-{i}")
        for fn in FUNCTIONS
        for i, m, e, r in MALFORMED
    ],
)
def test_malformed_multipliers(model, x, ro, fn, make, error, match):
    mults = make(ro)
    call = {
        "supporting_slope": lambda: sc.readout.supporting_slope(model, *mults),
        "dual_objective": lambda: sc.readout.dual_objective(model, x, *mults),
        "dual_residual": lambda: sc.readout.dual_residual(model, *mults),
    }[fn]
    with pytest.raises(error, match=match):
        call()


def test_dual_objective_needs_as_many_points_as_multipliers(model, x, ro):
    with pytest.raises(ValueError, match="x has 2 rows but the multipliers have 4"):
        sc.readout.dual_objective(model, x[:2], ro.nu, ro.p, ro.r)


def test_well_formed_multipliers_in_both_forms_agree(model, x, ro):
    per_block = sc.readout.supporting_slope(model, list(ro.multipliers))
    named = sc.readout.supporting_slope(model, ro.nu, ro.p, ro.r)
    as_arrays = sc.readout.supporting_slope(model, [n.numpy() for n in ro.nu], [p.numpy() for p in ro.p], ro.r)
    torch.testing.assert_close(per_block, named, rtol=0, atol=0)
    torch.testing.assert_close(as_arrays, named, rtol=0, atol=0)
    torch.testing.assert_close(named, ro.grad, rtol=1e-12, atol=1e-12)
