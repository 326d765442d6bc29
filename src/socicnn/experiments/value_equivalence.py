"""Value-function equivalence: forward pass vs the lifted LP/SOCP (paper A, experiment 1).

A model's closed-form forward value and canonical multipliers (:mod:`socicnn.readout`) are
compared, input by input, with the optimal value and the dual variables that an external conic
solver returns for the lifted problem (:mod:`socicnn.lifting`). The solver is the independent
witness: nothing here is computed twice by the same formula.

Multipliers are unique only away from ties (``|a_{l,i}| > 0`` and ``||u_g|| > 0``): at a near-tie
an interior-point solver returns a point strictly inside the optimal dual set, so dual errors are
reported for every input but flagged by ``duals_compared = margin > margin_threshold``.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch

from ..lifting import LiftedProblem, LiftingError
from ..model import SOCICNN
from ..readout import readout

__all__ = ["compare_with_solver", "run_value_equivalence", "summarize", "summary_rows"]


def _dual_error(solver_mults: list[np.ndarray], closed_form: list[torch.Tensor], i: int) -> tuple[float, float]:
    """``(max abs difference, that difference / max(1, max |closed form|))`` over a list of
    multipliers at input ``i``; NaNs for an empty list (a model without such blocks)."""
    if not solver_mults:
        return float("nan"), float("nan")
    exact = [c[i].cpu().numpy() for c in closed_form]
    err = max(float(np.max(np.abs(s - c), initial=0.0)) for s, c in zip(solver_mults, exact, strict=True))
    scale = max(float(np.max(np.abs(c), initial=0.0)) for c in exact)
    return err, err / max(scale, 1.0)


@torch.no_grad()
def compare_with_solver(
    model: SOCICNN,
    X: torch.Tensor,
    solver: str = "auto",
    *,
    margin_threshold: float = 1e-6,
    resolve: dict | None = None,
    **solver_options,
) -> pd.DataFrame:
    """Forward value and closed-form duals vs the lifted problem's solution, one row per input.

    Args:
        model: a ReLU-backbone SOC-ICNN or ReLU-ICNN.
        X: ``(N, d)`` inputs, in the model's dtype and device.
        solver: conic solver (``"auto"``: MOSEK if licensed, else Clarabel).
        margin_threshold: dual errors count as compared only where the input's margin
            (distance to the nearest tie) exceeds this.
        resolve: solver options for a second, cold-started solve of only those inputs where
            the first stops short of 'optimal' (a :class:`~socicnn.lifting.LiftingError`, e.g.
            Clarabel's ``optimal_inaccurate``); if the second solve is not certified either,
            its inaccurate solution is kept. The row's ``settings`` (``"first"`` or
            ``"re-solved"``) and ``status`` columns say which solve it shows and how it ended.
            With ``resolve=None`` the error propagates.
        **solver_options: passed to the first solve (none: the solver's defaults).

    Returns:
        DataFrame with columns ``input, value, solver_value, abs_err, rel_err`` (relative to
        ``max(|value|, 1)``), ``nu_err, nu_rel_err, p_err, p_rel_err, r_err, r_rel_err`` (max abs
        difference of solver and closed-form multipliers, and the same divided by
        ``max(1, max |closed form|)``; NaN without such blocks), ``gap, primal_residual,
        dual_residual, margin, duals_compared, forward_time, solve_time, status, solver,
        settings``.
    """
    x2, _ = model.check_input(X)
    lifted = LiftedProblem(model, solver)
    ro = readout(model, x2)
    rows = []
    for i in range(x2.shape[0]):
        t0 = time.perf_counter()
        value = float(model(x2[i]))
        forward_time = time.perf_counter() - t0
        settings = "first"
        with warnings.catch_warnings():
            # CVXPY warns before the status check; the status is handled here.
            warnings.filterwarnings("ignore", message="Solution may be inaccurate")
            try:
                sol = lifted.solve(x2[i], **solver_options)
            except LiftingError:
                if resolve is None:
                    raise
                sol = lifted.solve(x2[i], accept_inaccurate=True, warm_start=False, **resolve)
                settings = "re-solved"
        margin = float(ro.margins[i])
        errors = {}
        for name, solver_mults, closed_form in (("nu", sol.nu, ro.nu), ("p", sol.p, ro.p), ("r", sol.r, ro.r)):
            errors[f"{name}_err"], errors[f"{name}_rel_err"] = _dual_error(solver_mults, closed_form, i)
        rows.append(
            {
                "input": i,
                "value": value,
                "solver_value": sol.value,
                "abs_err": abs(sol.value - value),
                "rel_err": abs(sol.value - value) / max(abs(value), 1.0),
                **errors,
                "gap": sol.gap,
                "primal_residual": sol.primal_residual,
                "dual_residual": sol.dual_residual,
                "margin": margin,
                "duals_compared": margin > margin_threshold,
                "forward_time": forward_time,
                "solve_time": sol.solve_time,
                "status": sol.status,
                "solver": sol.solver,
                "settings": settings,
            }
        )
    return pd.DataFrame(rows)


def run_value_equivalence(
    in_dim: int,
    hidden: Sequence[int],
    quad_dims: Sequence[int] = (),
    norm_dims: Sequence[int] = (),
    *,
    seeds: Sequence[int] = (0,),
    n_inputs: int = 10,
    passthrough: Sequence[bool] = (True, False),
    solver: str = "auto",
    margin_threshold: float = 1e-6,
    resolve: dict | None = None,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str = "cpu",
    **solver_options,
) -> pd.DataFrame:
    """Paper A, experiment 1: random untrained models, inputs ``x ~ N(0, I)``, forward vs solver.

    For each passthrough setting and seed, builds ``SOCICNN(in_dim, hidden, quad_dims,
    norm_dims, passthrough, seed=seed)`` and draws ``n_inputs`` inputs from a generator seeded
    by ``seed`` (same seed => same numbers). Returns the rows of :func:`compare_with_solver`
    with ``passthrough`` and ``seed`` columns added.
    """
    if n_inputs <= 0:
        raise ValueError(f"n_inputs must be positive, got {n_inputs}")
    if not seeds or not passthrough:
        raise ValueError("seeds and passthrough must be non-empty")
    tables = []
    for pt in passthrough:
        for seed in seeds:
            model = SOCICNN(
                in_dim, hidden, quad_dims, norm_dims, passthrough=bool(pt), dtype=dtype, device=device, seed=seed
            )
            gen = torch.Generator().manual_seed(int(seed) + 1)
            X = torch.randn(n_inputs, in_dim, generator=gen, dtype=torch.float64).to(dtype=dtype, device=device)
            table = compare_with_solver(
                model, X, solver, margin_threshold=margin_threshold, resolve=resolve, **solver_options
            )
            tables.append(table.assign(passthrough=bool(pt), seed=int(seed)))
    return pd.concat(tables, ignore_index=True)


def summarize(results: pd.DataFrame, by: str | Sequence[str] = "passthrough") -> pd.DataFrame:
    """Max/mean errors, gaps, residuals and mean timings of :func:`run_value_equivalence` rows.

    Dual errors are aggregated over the rows with ``duals_compared`` only; ``inputs`` and
    ``duals_compared`` count the rows behind each group, ``re_solved`` the rows whose first
    solve was not certified optimal, ``inaccurate`` the rows whose kept solution is not.
    """
    compared = results[results["duals_compared"]]
    grouped = results.groupby(by)
    out = pd.DataFrame(
        {
            "inputs": grouped.size(),
            "duals_compared": compared.groupby(by).size(),
            "max_abs_err": grouped["abs_err"].max(),
            "mean_abs_err": grouped["abs_err"].mean(),
            "max_rel_err": grouped["rel_err"].max(),
            "mean_rel_err": grouped["rel_err"].mean(),
            **{
                f"max_{name}_{kind}": compared.groupby(by)[f"{name}_{kind}"].max()
                for name in ("nu", "p", "r")
                for kind in ("err", "rel_err")
            },
            "max_abs_gap": grouped["gap"].apply(lambda g: g.abs().max()),
            "max_primal_res": grouped["primal_residual"].max(),
            "max_dual_res": grouped["dual_residual"].max(),
            "forward_ms": grouped["forward_time"].mean() * 1e3,
            "solve_ms": grouped["solve_time"].mean() * 1e3,
            "re_solved": grouped["settings"].apply(lambda s: int((s == "re-solved").sum())),
            "inaccurate": grouped["status"].apply(lambda s: int((s != "optimal").sum())),
        }
    )
    out["duals_compared"] = out["duals_compared"].fillna(0).astype(int)
    return out


def summary_rows(summary: pd.DataFrame) -> pd.DataFrame:
    """:func:`summarize`'s table turned for display (one row per statistic): counts as integers,
    everything else in scientific notation (a transposed numeric frame would print counts as
    floats); statistics with no value in any group (the multipliers of blocks the model does not
    have) are left out."""
    summary = summary.dropna(axis=1, how="all")
    rows = {}
    for name in summary.columns:
        col = summary[name]
        if pd.api.types.is_integer_dtype(col):
            rows[name] = [f"{int(v)}" for v in col]
        else:
            rows[name] = [f"{v:.3e}" for v in col]
    return pd.DataFrame(rows, index=summary.index).T
