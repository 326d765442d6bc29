"""The exact LP/SOCP lifting (socicnn.lifting) against the forward pass, and solver selection.

Measured with Clarabel's default tolerances over the shape grid below (depth 1..4, passthrough
on/off, 0..2 quadratic and 0..2 norm blocks, d = 3, widths 6): the worst relative difference
|solver value - model(x)| / max(1, |model(x)|) was 1.3e-8 and the worst relative duality gap 9e-9,
so the 1e-6 tolerance of the issue holds with two orders of magnitude to spare.
"""

import itertools

import cvxpy as cp
import numpy as np
import pytest
import torch

import socicnn as sc

F64 = torch.float64
VALUE_RTOL = 1e-6

SHAPES = [
    (depth, passthrough, n_quad, n_norm)
    for depth, passthrough, n_quad, n_norm in itertools.product((1, 2, 3, 4), (True, False), (0, 1, 2), (0, 2))
    # every depth/passthrough pair with and without blocks, one block count at a time in between
] + [(2, True, 1, 1), (3, False, 2, 1)]


def relative_error(a: float, b: float) -> float:
    return abs(a - b) / max(1.0, abs(b))


@pytest.mark.parametrize("depth, passthrough, n_quad, n_norm", SHAPES)
def test_solver_value_equals_forward_value(depth, passthrough, n_quad, n_norm):
    d = 3
    model = sc.SOCICNN(
        d, (6,) * depth, quad_dims=(2,) * n_quad, norm_dims=(3,) * n_norm, passthrough=passthrough,
        dtype=F64, seed=10 * depth + n_quad + 5 * n_norm + int(passthrough),
    )
    problem = sc.lifting.LiftedProblem(model, solver="clarabel")
    xs = torch.randn(3, d, dtype=F64)
    values = model(xs).detach()
    for x, f in zip(xs, values, strict=True):
        sol = problem.solve(x)  # one compiled problem, re-solved for every x
        assert sol.status == "optimal" and sol.solver == "CLARABEL"
        assert relative_error(sol.value, float(f)) < VALUE_RTOL, (sol.value, float(f))
        assert abs(sol.gap) < VALUE_RTOL * max(1.0, abs(float(f)))
        assert sol.primal_residual < 1e-6 and sol.dual_residual < 1e-6


@pytest.mark.parametrize("passthrough", [True, False])
def test_relu_icnn_is_an_lp(passthrough):
    model = sc.ReLUICNN(4, (8, 8, 8), passthrough=passthrough, dtype=F64, seed=3)
    prob, x = sc.lifting.to_cvxpy(model)
    assert prob.is_dcp() and all(not isinstance(c, cp.constraints.SOC) for c in prob.constraints)
    for x0 in torch.randn(4, 4, dtype=F64):
        sol = sc.lifting.solve(model, x0, solver="clarabel")
        assert relative_error(sol.value, float(model(x0).detach())) < VALUE_RTOL
        assert sol.p == [] and sol.r == [] and len(sol.nu) == 3


def test_float32_model_lifts_in_float64():
    model = sc.SOCICNN(3, (8, 8), quad_dims=(2,), norm_dims=(2,), dtype=torch.float32, seed=1)
    x0 = torch.randn(3)
    sol = sc.lifting.solve(model, x0, solver="clarabel")
    # The lifting reads the float32 weights exactly in float64; the forward pass rounds in float32.
    assert relative_error(sol.value, float(model(x0).detach())) < 1e-5


def test_to_cvxpy_parameter_reuse():
    model = sc.SOCICNN(3, (6, 6), quad_dims=(2,), norm_dims=(3,), dtype=F64, seed=2)
    prob, x = sc.lifting.to_cvxpy(model)
    assert isinstance(x, cp.Parameter) and x.shape == (3,)
    assert prob.is_dpp()  # x enters as a parameter: compiled once, re-solved by setting x.value
    for x0 in torch.randn(4, 3, dtype=F64):
        x.value = x0.numpy()
        prob.solve(solver="CLARABEL")
        assert prob.status == cp.OPTIMAL
        assert relative_error(prob.value, float(model(x0).detach())) < VALUE_RTOL


def test_epigraph_embedded_in_a_prox_problem():
    """argmin_x model(x) + ||x - y||^2 by CVXPY is a global minimum of the torch objective."""
    d = 2
    model = sc.SOCICNN(d, (8, 8), quad_dims=(1,), norm_dims=(2,), dtype=F64, seed=4)
    y = torch.tensor([0.7, -0.4], dtype=F64)

    def objective(x: torch.Tensor) -> torch.Tensor:  # (N, d) -> (N,)
        return model(x) + ((x - y) ** 2).sum(-1)

    x_var = cp.Variable(d)
    expr, constraints = sc.lifting.epigraph(model, x_var)
    prob = cp.Problem(cp.Minimize(expr + cp.sum_squares(x_var - y.numpy())), constraints)
    prob.solve(solver="CLARABEL")
    assert prob.status == cp.OPTIMAL
    x_star = torch.as_tensor(x_var.value, dtype=F64)
    with torch.no_grad():
        f_star = float(objective(x_star[None]))
        assert relative_error(prob.value, f_star) < VALUE_RTOL
        # Optimality: no nearby point (random directions, radii 1e-4..1e-1) is better.
        dirs = torch.nn.functional.normalize(torch.randn(200, d, dtype=F64), dim=1)
        radii = torch.logspace(-4, -1, 200, dtype=F64)[:, None]
        assert float(objective(x_star + radii * dirs).min()) >= f_star - 1e-7
    # A torch reference: L-BFGS from several starts never beats the conic optimum, and gets close.
    best = float("inf")
    for start in 2.0 * torch.randn(5, d, dtype=F64):
        x = start.clone().requires_grad_(True)
        opt = torch.optim.LBFGS([x], max_iter=200, line_search_fn="strong_wolfe")

        def closure(x=x, opt=opt):
            opt.zero_grad()
            loss = objective(x)
            loss.backward()
            return loss

        opt.step(closure)
        best = min(best, float(objective(x.detach()).detach()))
    assert best >= f_star - 1e-7
    assert best - f_star < 1e-3


def test_inputs_beyond_the_solver_range_are_rejected_up_front():
    """Huge finite inputs used to come back as "infeasible ... try another solver" although the
    lifted problem has no constraint that could be infeasible."""
    model = sc.SOCICNN(3, (6,), quad_dims=(2,), norm_dims=(2,), dtype=F64, seed=0)
    with pytest.raises(ValueError, match=r"^x0 reaches 1e\+300 in absolute value, beyond 1e\+04"):
        sc.lifting.solve(model, np.full(3, 1e300), solver="clarabel")
    # |x0| = 5e3 is within range, but the quadratic block's value (about |x0|^2) is not.
    x0 = np.array([5e3, -5e3, 5e3])
    assert float(model.quad_blocks[0](torch.as_tensor(x0)[None]).detach()) > 1e4
    with pytest.raises(ValueError, match=r"^a block's value f_b\(x0\) reaches .* beyond 1e\+04.*rescale"):
        sc.lifting.solve(model, x0, solver="clarabel")


def test_epigraph_rejects_wrong_shape():
    model = sc.SOCICNN(3, (4,), dtype=F64, seed=0)
    with pytest.raises(ValueError, match="x must be a CVXPY expression of shape"):
        sc.lifting.epigraph(model, cp.Variable(4))


@pytest.mark.parametrize("x0", [np.zeros(4), np.zeros((1, 3)), np.zeros(())], ids=["d+1", "2-D", "scalar"])
def test_solve_rejects_wrong_x0_shape(x0):
    model = sc.SOCICNN(3, (4,), dtype=F64, seed=0)
    with pytest.raises(ValueError, match="x0 must have shape"):
        sc.lifting.solve(model, x0, solver="clarabel")


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_solve_rejects_non_finite_x0(bad):
    model = sc.SOCICNN(3, (4,), dtype=F64, seed=0)
    with pytest.raises(ValueError, match="x0 has 1 non-finite"):
        sc.lifting.solve(model, np.array([0.0, bad, 1.0]), solver="clarabel")


def test_softplus_model_lifts_to_an_exponential_cone_program():
    # z >= log(1 + exp(a)): the solver's value is the forward value, and its duals (adjoints
    # times sigmoid(a)) give the autograd gradient, to the solver's accuracy.
    model = sc.SOCICNN(3, (5, 5), quad_dims=(2,), norm_dims=(2,), activation="softplus", dtype=F64, seed=4)
    problem = sc.lifting.LiftedProblem(model, solver="clarabel")
    for x in torch.randn(3, 3, dtype=F64, generator=torch.Generator().manual_seed(2)):
        sol = problem.solve(x)
        assert sol.status == "optimal"
        assert relative_error(sol.value, float(model(x).detach())) <= VALUE_RTOL
        slope = sc.readout.supporting_slope(model, [[torch.as_tensor(a)[None] for a in sol.nu], *[
            torch.as_tensor(m)[None] for m in sol.multipliers[1:]]])
        with torch.enable_grad():
            grad = torch.func.grad(lambda v: model(v))(x)
        torch.testing.assert_close(slope[0], grad, rtol=0, atol=1e-5)


# ----------------------------------------------------------------- solver selection


def test_auto_uses_mosek_only_when_licensed(monkeypatch):
    monkeypatch.setattr(sc.solvers, "mosek_status", lambda: (False, "no licence"))
    assert sc.solvers.resolve_solver("auto") == "CLARABEL"
    monkeypatch.setattr(sc.solvers, "mosek_status", lambda: (True, "licensed"))
    assert sc.solvers.resolve_solver("auto") == "MOSEK"
    assert sc.solvers.resolve_solver("Mosek") == "MOSEK"


def test_auto_solver_solves_here():
    """Whatever "auto" resolves to on this machine is installed, usable and solves a lifting."""
    model = sc.SOCICNN(2, (4,), quad_dims=(1,), norm_dims=(2,), dtype=F64, seed=0)
    x0 = torch.tensor([0.3, -0.2], dtype=F64)
    sol = sc.lifting.solve(model, x0)
    assert sol.solver in sc.solvers.available_solvers()
    assert sol.status == "optimal" and relative_error(sol.value, float(model(x0).detach())) < VALUE_RTOL


def test_mosek_without_licence_says_how_to_fix(monkeypatch):
    usable, reason = sc.solvers.mosek_status()
    if usable:  # this machine has MOSEK: simulate one without it
        reason = ("MOSEK is not installed: pip install mosek "
                  "(or the mosek extra, pip install -e '.[mosek]' in a checkout)")
        monkeypatch.setattr(sc.solvers, "mosek_status", lambda: (False, reason))
    else:  # the real reason says how to fix it
        assert "pip install" in reason or "licence" in reason
    model = sc.SOCICNN(2, (3,), dtype=F64, seed=0)
    with pytest.raises(sc.solvers.SolverUnavailableError, match="MOSEK") as info:
        sc.lifting.solve(model, np.zeros(2), solver="mosek")
    assert str(info.value) == reason


def test_unknown_solver_is_a_value_error():
    model = sc.SOCICNN(2, (3,), dtype=F64, seed=0)
    with pytest.raises(ValueError, match="unknown solver 'gurobi'"):
        sc.lifting.solve(model, np.zeros(2), solver="gurobi")
    with pytest.raises(TypeError, match="solver must be a string"):
        sc.solvers.resolve_solver(None)
    with pytest.raises(TypeError, match=r"chosen when the problem is built .*LiftedProblem\(model, solver='scs'\)"):
        sc.lifting.LiftedProblem(model, solver="clarabel").solve(np.zeros(2), solver="scs")


def test_non_optimal_status_raises_and_does_not_leak_options():
    model = sc.SOCICNN(3, (6, 6), quad_dims=(2,), norm_dims=(3,), dtype=F64, seed=0)
    problem = sc.lifting.LiftedProblem(model, solver="clarabel")
    x0 = torch.randn(3, dtype=F64)
    with pytest.warns(UserWarning), pytest.raises(sc.lifting.LiftingError, match="status 'user_limit'"):
        problem.solve(x0, max_iter=1)
    # The same compiled problem solves normally afterwards (max_iter must not stick).
    sol = problem.solve(x0)
    assert sol.status == "optimal" and relative_error(sol.value, float(model(x0).detach())) < VALUE_RTOL


def test_infeasible_status_raises(monkeypatch):
    """Any status other than optimal is reported, whatever the solver says."""
    model = sc.SOCICNN(2, (3,), dtype=F64, seed=0)
    problem = sc.lifting.LiftedProblem(model, solver="clarabel")

    def fake_solve(*args, **kwargs):
        problem.problem._status = cp.INFEASIBLE

    monkeypatch.setattr(problem.problem, "solve", fake_solve)
    with pytest.raises(sc.lifting.LiftingError, match="infeasible"):
        problem.solve(np.zeros(2))
