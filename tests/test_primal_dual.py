"""The matrix-free primal-dual method of ``sc.inference.minimize`` (``method="primal_dual"``):
certified against a conic solver, on dense and convolutional models, on every compact set."""

from __future__ import annotations

import copy

import pytest
import torch
from test_minimize import assert_certified, exact_minimum

import socicnn as sc
from socicnn.conv_model import CONV_FAMILIES, conv_family
from socicnn.energy import ExactBoxSolve
from socicnn.inference import Box, Budget, Simplex, minimize
from socicnn.inference.primal_dual import primal_dual
from socicnn.readout import dual_residual

F64 = torch.float64
D = 6


def _dense(family: str):
    if family == "soc":
        return sc.SOCICNN(D, (16, 16), quad_dims=(3,), norm_dims=(3, 2), dtype=F64, seed=1)
    if family == "softplus-soc":  # a smooth backbone (gradient steps) beside lifted blocks
        return sc.SOCICNN(D, (8, 8), quad_dims=(3,), norm_dims=(2,), activation="softplus", dtype=F64, seed=4)
    return sc.ReLUICNN(D, (16, 16), dtype=F64, seed=2)


@pytest.mark.parametrize(
    "cons", [Box(0.0, 1.0), Simplex(1.0), Budget(0.3 * D, equality=True)], ids=["box", "simplex", "budget-eq"]
)
@pytest.mark.parametrize("family", ["soc", "relu", "softplus-soc"])
def test_primal_dual_is_certified_and_brackets_the_conic_optimum(cons, family):
    model = _dense(family)
    x0 = cons.project(torch.rand(4, D, dtype=F64, generator=torch.Generator().manual_seed(0)))
    res = minimize(model, cons, x0, tol=1e-6, method="primal_dual", max_iter=30000)
    assert_certified(res, model, cons, exact_minimum(model, cons), 1e-6, slack=1e-8)


def _conv_case(family: str, size: int = 5, n: int = 2):
    """A Conv energy at ``n`` random contexts: the network, the contexts, its bound model and a start."""
    cm = conv_family(family, (1, size, size), dtype=F64, seed=0)
    ctx = torch.rand(n, 2, size, size, dtype=F64, generator=torch.Generator().manual_seed(1))
    return cm, ctx, cm.at(ctx), torch.full((n, size * size), 0.5, dtype=F64)


def _box_optimum(model) -> torch.Tensor:
    return torch.as_tensor(ExactBoxSolve(model, 0.0, 1.0).solve(accept_inaccurate=True).solver_value)


@pytest.mark.parametrize("family", list(CONV_FAMILIES))
def test_primal_dual_restores_conv_energies_like_the_exact_lifting(family):
    _, _, model, x0 = _conv_case(family)
    res = minimize(model, Box(0.0, 1.0), x0, tol=1e-6, method="primal_dual", max_iter=40000)
    f_star = _box_optimum(model)
    assert bool(res.converged.all()), res.gap_bound
    assert float((res.lower_bound - f_star).max()) <= 1e-8
    assert float((res.value - f_star).abs().max()) <= 1.1e-6


@pytest.mark.parametrize("family", ["Conv-SOC", "Conv-Quad"])
def test_iterations_in_float32_keep_a_float64_certificate(family):
    # The iterations on a float32 copy, values and bounds in float64: as certified as before, the
    # bound still below the exact optimum, the answer in float64 and in the box.
    cm, ctx, model, x0 = _conv_case(family)
    work = copy.deepcopy(cm).float().at(ctx.float())
    res = minimize(model, Box(0.0, 1.0), x0, tol=1e-5, method="primal_dual", max_iter=40000, work_model=work)
    f_star = _box_optimum(model)
    assert res.x.dtype == F64 and bool(((res.x >= 0) & (res.x <= 1)).all())
    assert bool(res.converged.all()), res.gap_bound
    assert float((res.lower_bound - f_star).max()) <= 1e-8
    assert float((res.value - f_star).abs().max()) <= 1.1e-5
    torch.testing.assert_close(res.value, model(res.x), rtol=0, atol=0)  # valued by the float64 model


def test_a_work_model_must_be_the_same_function_and_is_for_the_primal_dual_method():
    cm, ctx, model, _ = _conv_case("Conv-SOC", size=3)
    with pytest.raises(ValueError, match="same function"):
        minimize(model, Box(0, 1), method="primal_dual", work_model=cm.at(ctx[:1]))
    with pytest.raises(ValueError, match='method="primal_dual" only'):
        minimize(model, Box(0, 1), work_model=model)
    with pytest.raises(TypeError, match="work_model must be a socicnn model"):
        minimize(model, Box(0, 1), method="primal_dual", work_model=torch.nn.Linear(9, 1))


def test_the_bound_holds_after_a_few_iterations_and_the_multipliers_are_dual_feasible():
    # Far from convergence the certificate is loose but valid: the lower bound stays below the
    # optimum, and the projected multipliers satisfy every block's dual constraints.
    model = _dense("soc")
    cons = Box(-1.0, 0.5)
    x0 = cons.project(torch.rand(5, D, dtype=F64, generator=torch.Generator().manual_seed(3)))
    x, value, lower, iterations, residual = primal_dual(model, cons, x0, tol=1e-12, max_iter=64)
    f_star = exact_minimum(model, cons)
    assert bool((lower <= f_star + 1e-9).all()) and bool((value >= f_star - 1e-9).all())
    assert bool((iterations == 64).all()) and residual <= 1e-15
    assert float((f_star - lower).max()) <= 1.0  # a useful bound already (measured: within 0.5 of f*)


def test_the_projected_multipliers_of_each_block_are_dual_feasible():
    model = _dense("soc")
    x = torch.rand(3, D, dtype=F64, generator=torch.Generator().manual_seed(5))
    g = torch.Generator().manual_seed(6)
    blocks = list(model.blocks())
    dual = []
    for b in blocks:
        rows = b.pd_affine(x, b.pd_aux(x))
        dual.append([3.0 * torch.randn(r.shape, dtype=F64, generator=g) for r in rows])
    mult = [b.pd_multipliers(x, y) for b, y in zip(blocks, dual, strict=True)]
    assert float(dual_residual(model, mult).max()) <= 1e-14


def test_method_is_checked():
    model = _dense("relu")
    with pytest.raises(ValueError, match="unknown method"):
        minimize(model, Box(0, 1), method="pdhg")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_primal_dual_runs_on_cuda_like_on_the_cpu():  # pragma: no cover - runs on GPU machines only
    cm, ctx, model, x0 = _conv_case("Conv-SOC")
    cpu = minimize(model, Box(0.0, 1.0), x0, tol=1e-6, method="primal_dual")
    cm_gpu = cm.to("cuda")
    gpu = minimize(cm_gpu.at(ctx.cuda()), Box(0.0, 1.0), x0.cuda(), tol=1e-6, method="primal_dual")
    assert gpu.x.is_cuda and bool(gpu.converged.all())
    torch.testing.assert_close(gpu.value.cpu(), cpu.value, rtol=0, atol=2e-6)
    assert float((gpu.lower_bound.cpu() - cpu.value).max()) <= 1e-6  # each bound below the other's value
