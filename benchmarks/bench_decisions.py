"""Certified fast decisions vs Clarabel on the same lifted problems (the downstream-decisions speed target).

A picnn SOC-ICNN ``f(x, theta)`` (backbone widths ``(w, w)``, one quadratic block of rank ``d``,
two norm blocks of ``d`` rows, context dimension 8), ``N`` contexts ``theta ~ N(0, I)``, and the
budget set ``{0 <= x <= 1, sum x = 0.3 d}``. For every context, ``x = argmin_{x in C} f(x, theta)``
by

- ``socicnn.decisions.decide(..., method="socp")``: the lifted model plus the set, one compiled
  CVXPY problem; its time is Clarabel's **own** reported solve time per instance
  (``solver_time``, no CVXPY overhead), the strongest measure of the alternative;
- the library's certified batched minimisers, ``socicnn.inference.minimize(..., method=M)`` on
  ``f(., theta_i)`` row by row (``M = "face_newton"`` is what ``decide(..., method="auto")`` runs;
  ``"primal_dual"``, the matrix-free method, beside it): wall time of the whole batch divided by
  ``N``.

Reports, per method, the ratio of the per-instance times (target: >= 10x at d = 20 and 50, 200 contexts), the
largest relative difference of the two decisions' values, and whether every fast decision is
certified to ``<= 1e-6`` relative. Untrained weights: the solve times depend on the model's size,
not on what it has learned.

    python benchmarks/bench_decisions.py            # d = 20 and 50, 200 contexts
    python benchmarks/bench_decisions.py --quick    # d = 20, 50 contexts
    python benchmarks/bench_decisions.py --dims 50 --contexts 20 --repeat 1   # a cheaper d = 50 check
    python benchmarks/bench_decisions.py --methods face_newton   # decide(method="auto") only
"""

from __future__ import annotations

import argparse
import time

import pandas as pd
import torch

from socicnn.decisions import decide, violation
from socicnn.inference import Budget, minimize
from socicnn.inference.minimize import METHODS
from socicnn.parametric import ParametricSOCICNN


def run(d: int, n: int, width: int, seed: int, repeat: int, methods: list[str]) -> list[dict]:
    pm = ParametricSOCICNN(d, 8, (width, width), (d,), (d, d), context="picnn", dtype=torch.float64, seed=seed)
    theta = torch.randn(n, 8, generator=torch.Generator().manual_seed(seed + 1), dtype=torch.float64)
    C = Budget(0.3 * d, equality=True)
    exact = decide(pm, theta, C, method="socp")
    clarabel = float(exact.solver_time.mean())
    base = {
        "d": d,
        "contexts": n,
        "params": pm.num_parameters(),
        "clarabel ms/instance": 1e3 * clarabel,
        "cvxpy+clarabel ms/instance": 1e3 * float(exact.time[1:].mean()),
        "socp certified": f"{int(exact.converged.sum())}/{n}",
    }
    rows = []
    for method in methods:
        t_fast = float("inf")
        for _ in range(repeat):  # keep the fastest run: a burst of load on a shared machine does not decide
            t0 = time.perf_counter()
            fast = minimize(pm.at(theta), C, tol=1e-6, method=method)  # decide(method="auto") is face_newton
            t_fast = min(t_fast, (time.perf_counter() - t0) / n)
        rel = (fast.value - exact.value).abs() / exact.value.abs().clamp(min=1.0)
        certified = fast.converged & (fast.gap_bound <= 1e-6 * fast.value.abs().clamp(min=1.0))
        rows.append({
            **base,
            "fast method": method,
            "fast ms/instance": 1e3 * t_fast,
            "clarabel/fast": clarabel / t_fast,
            "max |fast - socp| rel": float(rel.max()),
            "fast certified <= 1e-6": f"{int(certified.sum())}/{n}",
            "max violation": float(violation(C, fast.x).max()),
            "target met": bool(clarabel / t_fast >= 10 and bool(certified.all())),
        })
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--width", type=int, default=32)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dims", type=int, nargs="+", default=[20, 50])
    ap.add_argument("--contexts", type=int, default=200)
    ap.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS),
                    help="certified minimisers to time (decide(method='auto') uses face_newton)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} thread(s), CPU")
    sizes = [(20, 50)] if args.quick else [(d, args.contexts) for d in args.dims]
    rows = [row for d, n in sizes for row in run(d, n, args.width, args.seed, args.repeat, args.methods)]
    with pd.option_context("display.width", 200, "display.max_columns", 30):
        print(pd.DataFrame(rows).to_string(index=False))


if __name__ == "__main__":
    main()
