"""First-order readout: supporting slopes from optimal duals (the chapter 'First-order readout'; paper B).

The readout gradient ``G(nu, p, r)`` of :func:`socicnn.readout.readout` is compared, input by
input, with three witnesses: autograd (which shares the ``relu'(0) = 0`` convention, so it is not
independent at ties), central finite differences (independent, valid away from kinks), and the
slope ``G`` built from the duals that a conic solver returns for the lifted problem
(independent: the solver knows nothing of backpropagation).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch

from ..lifting import LiftedProblem
from ..model import SOCICNN
from ..readout import readout, supporting_slope
from .readout_timing import autograd_gradient, gradient_timing

__all__ = ["central_differences", "compare_gradients", "run_first_order"]


@torch.no_grad()
def central_differences(model, X: torch.Tensor, step: float = 1e-6) -> torch.Tensor:
    """``(N, d)`` central finite-difference gradients ``(f(x + h e_i) - f(x - h e_i)) / 2h``."""
    n, d = X.shape
    E = step * torch.eye(d, dtype=X.dtype, device=X.device)
    plus = model((X[:, None, :] + E).reshape(-1, d)).reshape(n, d)
    minus = model((X[:, None, :] - E).reshape(-1, d)).reshape(n, d)
    return (plus - minus) / (2 * step)


def _rel(a: torch.Tensor, b: torch.Tensor) -> np.ndarray:
    return ((a - b).norm(dim=-1) / b.norm(dim=-1).clamp_min(1e-300)).cpu().double().numpy()


def compare_gradients(
    model,
    X: torch.Tensor,
    *,
    n_solver: int = 10,
    fd_step: float = 1e-6,
    margin_threshold: float = 1e-4,
    solver: str = "auto",
) -> pd.DataFrame:
    """One row per input: readout gradient vs autograd, central differences and solver duals.

    Columns: ``margin`` (distance to the nearest tie), ``retained`` (``margin >
    margin_threshold``: no kink within the finite-difference stencil, and a unique optimal
    dual), ``rel_err_autograd, cos_autograd, rel_err_fd`` and ``rel_err_solver`` (the slope of
    the solver's duals; computed for the first ``n_solver`` inputs, NaN for the others).
    """
    ro = readout(model, X)
    g_auto = autograd_gradient(model, X).detach()
    g_fd = central_differences(model, X, fd_step)
    cos = torch.nn.functional.cosine_similarity(ro.grad, g_auto, dim=-1)
    solver_err = np.full(X.shape[0], np.nan)
    if n_solver > 0:
        lifted = LiftedProblem(model, solver)
        for i in range(min(n_solver, X.shape[0])):
            sol = lifted.solve(X[i])

            def batch(arrs):
                return [torch.as_tensor(a, dtype=X.dtype, device=X.device)[None] for a in arrs]

            g_solver = supporting_slope(model, batch(sol.nu), batch(sol.p), batch(sol.r))
            solver_err[i] = _rel(ro.grad[i : i + 1], g_solver)[0]
    margin = ro.margins.cpu().double().numpy()
    return pd.DataFrame(
        {
            "margin": margin,
            "retained": margin > margin_threshold,
            "rel_err_autograd": _rel(ro.grad, g_auto),
            "cos_autograd": cos.cpu().double().numpy(),
            "rel_err_fd": _rel(ro.grad, g_fd),
            "rel_err_solver": solver_err,
        }
    )


def run_first_order(
    *,
    n_models: int,
    d: int,
    hidden: Sequence[int],
    quad_dims: Sequence[int],
    norm_dims: Sequence[int],
    n_inputs: int,
    n_solver: int,
    seed: int = 0,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str = "cpu",
    timing_run_time: float = 0.1,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The first-order check over ``n_models`` random models (passthrough alternating on/off).

    Returns ``(per_input, per_model)``: the rows of :func:`compare_gradients` with a ``model``
    column, and per model the worst errors on retained inputs, the retained fraction and the
    median times of the readout and of autograd (forward + backward), timed separately.
    """
    per_input, per_model = [], []
    for k in range(n_models):
        model = SOCICNN(
            d, hidden, quad_dims, norm_dims, passthrough=(k % 2 == 0), dtype=dtype, device=device, seed=seed + k
        )
        gen = torch.Generator().manual_seed(seed + 1000 + k)
        X = torch.randn(n_inputs, d, generator=gen, dtype=torch.float64).to(dtype=dtype, device=device)
        rows = compare_gradients(model, X, n_solver=n_solver)
        rows.insert(0, "model", k)
        per_input.append(rows)
        kept = rows[rows.retained]
        timing = gradient_timing(model, X, timing_run_time)
        per_model.append(
            {
                "model": k,
                "passthrough": model.passthrough,
                "retained": len(kept) / len(rows),
                "max_rel_err_autograd": rows.rel_err_autograd.max(),
                "min_cos_autograd": rows.cos_autograd.min(),
                "max_rel_err_fd": kept.rel_err_fd.max(),
                "max_rel_err_solver": kept.rel_err_solver.max(),
                "readout_ms": 1e3 * timing["readout_s"],
                "autograd_ms": 1e3 * timing["autograd_s"],
                "speedup": timing["speedup"],
            }
        )
    return pd.concat(per_input, ignore_index=True), pd.DataFrame(per_model)
