"""White-box inference tutorial (paper B): every method against the exact SOCP.

``min_x f(x) + (beta/2)||x - y||^2`` on a random SOC-ICNN (d = 10, width 32, depth 3, one
quadratic block of dim 8, two norm blocks of dim 8), queries ``y ~ N(0, I)``, start at
``x = y``. The reference is the exact lifted SOCP (Clarabel), and every gap is measured against
the better of the reference and the method (``F`` evaluated at the SOCP's ``x``), so a method
that beats the solver's accuracy shows a gap <= 0 instead of a spurious positive one.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch

from ..inference import Budget, Constraint, ProxResult, Simplex, prox
from ..model import SOCICNN
from ..readout import readout

__all__ = [
    "TUTORIAL",
    "inference_scaling",
    "compare_methods",
    "default_constraints",
    "constrained_inference",
    "gap_curves",
    "newton_path",
    "queries",
    "relative_gap",
    "scaling_slopes",
    "tutorial_model",
]

TUTORIAL = {"in_dim": 10, "hidden": (32, 32, 32), "quad_dims": (8,), "norm_dims": (8, 8)}


def tutorial_model(seed: int = 0, in_dim: int = 10, **overrides) -> SOCICNN:
    """The tutorial's random SOC-ICNN in float64 (``overrides`` change the sizes)."""
    spec = {**TUTORIAL, "in_dim": in_dim, **overrides}
    return SOCICNN(dtype=torch.float64, seed=seed, **spec)


def queries(n: int, d: int, seed: int) -> torch.Tensor:
    """``n`` queries ``y ~ N(0, I_d)`` in float64 from a private generator."""
    return torch.randn(n, d, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))


def relative_gap(value: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """``(F - F_ref) / max(1, |F_ref|)`` per query."""
    return (value - reference) / reference.abs().clamp(min=1.0)


def compare_methods(
    model, y: torch.Tensor, beta: float, methods: Sequence[str], max_iter: dict[str, int] | None = None
) -> tuple[pd.DataFrame, dict[str, ProxResult]]:
    """Run each method on its own (timed alone) and tabulate it against the exact SOCP.

    Returns the table (one row per method) and the raw results keyed by method; the
    ``"socp"`` result is always computed and is the reference.
    """
    max_iter = max_iter or {}
    results = {"socp": prox(model, y, beta, method="socp")}
    for method in methods:
        if method != "socp":
            results[method] = prox(model, y, beta, method=method, max_iter=max_iter.get(method))
    ref = results["socp"].value
    rows = []
    for method, res in results.items():
        gap = relative_gap(res.value, ref)
        rows.append(
            {
                "method": method,
                "max rel. gap": float(gap.max()),
                "median rel. gap": float(gap.median()),
                "queries within 1e-7": int((gap <= 1e-7).sum()),
                "converged": int(res.converged.sum()),
                "max grad norm": float(res.grad_norm.max()),
                "mean iterations": float(res.iterations.double().mean()),
                "max iterations": int(res.iterations.max()),
                "ms per query": 1e3 * float(res.time.mean()),
            }
        )
    return pd.DataFrame(rows).set_index("method"), results


def gap_curves(results: dict[str, ProxResult]) -> dict[str, np.ndarray]:
    """Per method, the relative gap to the SOCP optimum at each iteration, ``(iterations, N)``."""
    ref = results["socp"].value
    return {
        m: torch.stack([relative_gap(h, ref) for h in r.history]).numpy()
        for m, r in results.items()
        if r.history
    }


def newton_path(model, y: torch.Tensor, beta: float, iterations: int) -> pd.DataFrame:
    """Diagnostics along the ``"newton"`` path of each query: objective, certified subgradient
    norm and gap bound, margin to degeneracy (``min |a|`` and ``min ||u||``) and number of near-kink units."""
    rows = []
    for k in range(iterations + 1):
        res = prox(model, y, beta, method="newton", max_iter=k)
        ro = readout(model, res.x)
        a = torch.cat(model.backbone.preactivations(res.x), dim=1).abs()
        for i in range(y.shape[0]):
            rows.append(
                {
                    "query": i,
                    "iteration": k,
                    "objective": float(res.value[i]),
                    "certified grad norm": float(res.grad_norm[i]),
                    "certified gap bound": float(res.gap_bound[i]),
                    "margin": float(ro.margins[i]),
                    "units within 1e-8 of a kink": int((a[i] <= 1e-8).sum()),
                }
            )
    return pd.DataFrame(rows)


def constrained_inference(
    model, y: torch.Tensor, beta: float, constraints: dict[str, Constraint], max_iter_gd: int
) -> pd.DataFrame:
    """``"newton"`` and projected ``"gd"`` with each constraint set, against the exact SOCP.

    Beside each row: the reference's own accuracy, its largest constraint violation before the
    library projects its answer onto the set, and its largest duality gap as the solver reports it.
    """
    rows = []
    for name, cons in constraints.items():
        ref = prox(model, y, beta, method="socp", constraint=cons)
        for method in ("newton", "gd"):
            res = prox(model, y, beta, method=method, constraint=cons, max_iter=max_iter_gd if method == "gd" else None)
            gap = relative_gap(res.value, ref.value)
            rows.append(
                {
                    "set": name,
                    "method": method,
                    "max rel. gap": float(gap.max()),
                    "max infeasibility": _infeasibility(cons, res.x),
                    "converged": int(res.converged.sum()),
                    "max iterations": int(res.iterations.max()),
                    "ms per query": 1e3 * float(res.time.mean()),
                    "SOCP ms per query": 1e3 * float(ref.time.mean()),
                    "SOCP max infeasibility": float(ref.infeasibility.max()),
                    "SOCP max duality gap": float(ref.certificate.max()),
                }
            )
    return pd.DataFrame(rows).set_index(["set", "method"])


def _infeasibility(cons: Constraint, x: torch.Tensor) -> float:
    """Largest violation of the set's linear rows at ``x`` ``(N, d)``."""
    rows = cons.rows(x.shape[-1], x.dtype, x.device)
    r = x @ rows.C.T - rows.h
    r = torch.where(rows.equality, r.abs(), r.clamp(min=0.0))
    return float(r.max())


def default_constraints(d: int) -> dict[str, Constraint]:
    """The chapter's sets: the probability simplex and the budget set with ``B = d / 4``."""
    return {"simplex": Simplex(1.0), "budget": Budget(d / 4)}


def inference_scaling(
    grid: dict[str, Sequence[int]], base: dict[str, int], beta: float = 10.0, seed: int = 0
) -> pd.DataFrame:
    """Per-query time of batched ``"newton"`` as one size grows at a time.

    ``base`` holds ``n`` (queries), ``d``, ``width`` and ``depth``; ``grid`` maps some of these
    names to the values to sweep (the others stay at ``base``). Each model has one quadratic and
    one norm block of dim 8. Returns one row per run: the knob, its value, the sizes, the time per
    query and the fraction of queries that converged (certified).
    """
    import time

    rows = []
    for knob, values in grid.items():
        for v in values:
            cfg = dict(base, **{knob: v})
            model = SOCICNN(
                cfg["d"], (cfg["width"],) * cfg["depth"], quad_dims=(8,), norm_dims=(8,), dtype=torch.float64, seed=seed
            )
            y = queries(cfg["n"], cfg["d"], seed + 1)
            t0 = time.perf_counter()
            res = prox(model, y, beta, method="newton")
            elapsed = time.perf_counter() - t0
            rows.append(
                {"knob": knob, "value": v, **cfg, "ms per query": 1e3 * elapsed / cfg["n"],
                 "converged": float(res.converged.float().mean())}
            )
    return pd.DataFrame(rows)


def scaling_slopes(scaling: pd.DataFrame) -> tuple[dict[str, float], str]:
    """Least-squares slopes of log(time per query) against log(size) per knob of an
    :func:`inference_scaling` table, and one sentence that reads them: per knob, whether the time
    per query falls (slope < -0.2), stays about flat (|slope| <= 0.2), grows sublinearly (up to
    0.8), about linearly (0.8 to 1.2) or faster, over how many sizes, and whether the times are
    monotone in the size (a slope through a few points that go up and down says little)."""
    groups = {k: p.sort_values("value") for k, p in scaling.groupby("knob", sort=False)}
    slopes = {k: float(np.polyfit(np.log(p["value"]), np.log(p["ms per query"]), 1)[0]) for k, p in groups.items()}

    def reading(slope: float) -> str:
        if slope < -0.2:
            return "falls"
        if slope <= 0.2:
            return "stays about flat"
        if slope <= 0.8:
            return "grows sublinearly"
        return "grows about linearly" if slope <= 1.2 else "grows faster than linearly"

    names = {"n": "the number of queries", "d": "the input dimension", "width": "the width", "depth": "the depth"}
    def shape(p: pd.DataFrame) -> str:
        steps = np.diff(p["ms per query"].to_numpy(float))
        return "" if (steps >= 0).all() or (steps <= 0).all() else ", not monotone"

    parts = [f"with {names.get(k, k)} it {reading(v)} (slope {v:.2f} over {len(groups[k])} sizes{shape(groups[k])})"
             for k, v in slopes.items()]
    return slopes, "time per query: " + "; ".join(parts) + "."
