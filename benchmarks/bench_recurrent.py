"""Recurrent SOC-ICNNs (trajectory smoothing): two measurements in one run.

1. **Certified smoothing of a batch** of contexts, ``min_{U in [-1,1]^{T x p}} f(U; R_i)``:
   ``socicnn.inference.minimize`` (batched, certified gap, no solver) against the conic path
   (the model's lifting with the box, compiled once by CVXPY, solved row by row by Clarabel;
   Clarabel's own reported solve time and the wall time with CVXPY's parameter updates), plus
   the time to certify the conic points (``socicnn.energy.box_gap_bounds``).
2. **Forward+backward** of the RNN-SOC against the parameter-matched RNN-ReLU (the same
   recurrence, widened to at least the RNN-SOC's parameter count) at the reference's batch.

    python benchmarks/bench_recurrent.py [--steps 16 --features 2 --hidden 10 --rows 4]
        [--family RNN-SOC] [--batch 1200] [--threads 1]

Models are at their (seeded) initialisation; sizes are printed. Times are process CPU time for
the forward+backward ratio (robust to other load) and wall time for the solves.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

import socicnn as sc
from socicnn.energy import ExactBoxSolve, box_gap_bounds
from socicnn.experiments.trajectory import TrajectoryConfig, reference_sequences
from socicnn.recurrent import recurrent_family


def smoothing(args) -> None:
    cfg = TrajectoryConfig(steps=args.steps, features=args.features)
    R = reference_sequences(args.rows, cfg, 7)
    kw = dict(steps=args.steps, features=args.features, context_features=args.features, hidden=args.hidden,
              quad_channels=args.quad_channels, norm_groups=args.norm_groups, dtype=torch.float64, seed=0)  # fmt: skip
    energy = recurrent_family(args.family, **kw)
    model = energy.at(R)
    print(f"[smoothing] {args.family}, T={args.steps}, p={args.features}, hidden {energy.backbone.width}, "
          f"{args.rows} contexts, d={model.in_dim}")  # fmt: skip

    t0 = time.perf_counter()
    conic = ExactBoxSolve(model, -1.0, 1.0, solver="clarabel")
    compile_s = time.perf_counter() - t0
    sol = conic.solve(accept_inaccurate=True)
    t0 = time.perf_counter()
    bounds = box_gap_bounds(model, sol.x, -1.0, 1.0, sol.multipliers)
    cert_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    res = sc.inference.minimize(model, sc.inference.Box(-1.0, 1.0), tol=1e-6)
    mini_s = time.perf_counter() - t0
    with torch.no_grad():
        diff = float((res.value - model(sol.x)).abs().max())
    clarabel = float(np.nansum(sol.solver_time))
    print(f"  conic path: compile {compile_s:.2f} s, Clarabel's own solve time {clarabel:.3f} s "
          f"({1e3 * clarabel / args.rows:.1f} ms/row), wall with CVXPY {sol.time.sum():.3f} s; statuses "
          f"{sorted(set(sol.status))}; certifying the points {cert_s:.3f} s (strict gap <= "
          f"{float(bounds['strict'].max()):.1e}, dual-minorant gap <= {float(bounds['dual'].max()):.1e})")  # fmt: skip
    print(f"  inference.minimize: {mini_s:.2f} s ({mini_s / args.rows:.2f} s/row), converged "
          f"{int(res.converged.sum())}/{args.rows}, gap <= {float(res.gap_bound.max()):.1e}, "
          f"iterations {res.iterations.tolist()}, |value - conic value| <= {diff:.1e}")  # fmt: skip
    print(f"  ratio minimize / Clarabel's solve time: {mini_s / clarabel:.0f}x "
          f"(target: < 1x, i.e. certified smoothing faster than the solver) -> "
          f"{'met' if mini_s < clarabel else 'NOT met'}")  # fmt: skip


def forward_backward(args) -> None:
    kw = dict(steps=40, features=4, context_features=4, hidden=20, quad_channels=24, norm_groups=12,
              dtype=torch.float32, seed=0)  # fmt: skip
    soc, relu = recurrent_family("RNN-SOC", **kw), recurrent_family("RNN-ReLU", **kw)
    g = torch.Generator().manual_seed(0)
    U = 2 * torch.rand(args.batch, 40, 4, generator=g) - 1
    R = 2 * torch.rand(args.batch, 40, 4, generator=g) - 1

    def step(model):
        def run():
            model.zero_grad(set_to_none=True)
            model(U, R).sum().backward()

        return run

    steps = [step(soc), step(relu)]
    for s in steps:
        s()
    best = [float("inf"), float("inf")]
    for _ in range(args.rounds):  # interleaved; the fastest round counts
        for i, s in enumerate(steps):
            t0 = time.process_time()
            for _ in range(args.reps):
                s()
            best[i] = min(best[i], (time.process_time() - t0) / args.reps)
    print(f"[forward+backward] T=40, p=4, batch {args.batch}: RNN-SOC ({soc.num_parameters()} params, hidden 20) "
          f"{1e3 * best[0]:.1f} ms, RNN-ReLU ({relu.num_parameters()} params, hidden {relu.backbone.width}) "
          f"{1e3 * best[1]:.1f} ms; ratio {best[0] / best[1]:.2f}")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=16)
    ap.add_argument("--features", type=int, default=2)
    ap.add_argument("--hidden", type=int, default=10)
    ap.add_argument("--quad-channels", type=int, default=8)
    ap.add_argument("--norm-groups", type=int, default=4)
    ap.add_argument("--rows", type=int, default=4)
    ap.add_argument("--family", default="RNN-SOC")
    ap.add_argument("--batch", type=int, default=1200)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), CPU")
    forward_backward(args)
    smoothing(args)


if __name__ == "__main__":
    main()
