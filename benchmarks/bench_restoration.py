"""Certified image restoration by a learned Conv energy: the matrix-free primal-dual method
against the conic solver on the energy's lifting, in one run.

A Conv family is trained briefly on ``--size`` x ``--size`` patches (the image-restoration
chapter's data and protocol), then every test observation's energy is minimised over
``[0, 1]`` pixels:

- ``socicnn.inference.minimize(..., method="primal_dual")`` on the whole batch (``--images``),
  started at the observations, to a certified relative gap of ``--tol``;
- the exact lifting with the box (``socicnn.energy.ExactBoxSolve``: one CVXPY problem, contexts
  as parameters, Clarabel) on the first ``--solver-images`` of them; Clarabel's own reported
  solve time per image, times the batch size, is the conic path's time for the batch.

    python benchmarks/bench_restoration.py [--size 16 --images 60 --solver-images 3]
        [--family Conv-SOC] [--epochs 5] [--tol 1e-5] [--threads 1]

Target: certified restoration of a batch of 60 images faster than the conic solver's own solve
time. The conic lifting stops at about 24 x 24 pixels on a 24 GB machine (CVXPY's parameterised
problem runs out of memory at 32 x 32), so it is measured where it still runs; the primal-dual
method's cost per iteration grows linearly with the pixels.
"""

from __future__ import annotations

import argparse
import time

import torch

from socicnn.energy import ExactBoxSolve
from socicnn.experiments.image_restoration import make_data, train_family
from socicnn.inference import Box, minimize


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=16)
    ap.add_argument("--images", type=int, default=60)
    ap.add_argument("--solver-images", type=int, default=3)
    ap.add_argument("--family", default="Conv-SOC")
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--train", type=int, default=40, help="training patches")
    ap.add_argument("--tol", type=float, default=1e-5)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    data = make_data(args.size, args.train, args.images, seed=0)
    cm, _ = train_family(args.family, data, args.epochs, seed=0)
    test = data.test
    n, d = args.images, args.size * args.size
    with torch.no_grad():
        model = cm.at(test.context)
    print(f"{args.family}, {args.size}x{args.size} images, {cm.num_parameters()} parameters, trained "
          f"{args.epochs} epochs on {args.train} patches; {n} test images")  # fmt: skip

    t0 = time.perf_counter()
    pd = minimize(model, Box(0.0, 1.0), test.Y.reshape(n, d), tol=args.tol, method="primal_dual", max_iter=50000)
    t_pd = time.perf_counter() - t0

    k = min(args.solver_images, n)
    with torch.no_grad():
        sub = cm.at(test.context[:k])
    sol = ExactBoxSolve(sub, 0.0, 1.0).solve(accept_inaccurate=True)
    per_image = float(sol.solver_time.mean())
    rel = (pd.value[:k] - torch.as_tensor(sol.solver_value)) / torch.as_tensor(sol.solver_value).abs().clamp(min=1.0)
    print(f"primal-dual: {int(pd.converged.sum())}/{n} certified to {args.tol:g} relative, "
          f"{t_pd:.1f} s for the batch ({t_pd / n:.2f} s per image), iterations {int(pd.iterations.min())}-"
          f"{int(pd.iterations.max())}, worst certified gap {float(pd.gap_bound.max()):.2e}")  # fmt: skip
    print(f"Clarabel on {k} images: {per_image:.2f} s per image (its own solve time; wall with CVXPY "
          f"{float(sol.time.mean()):.2f} s), statuses {sorted(set(sol.status))}; "
          f"primal-dual value minus Clarabel's, relative: {float(rel.min()):+.1e} .. "
          f"{float(rel.max()):+.1e}")  # fmt: skip
    ratio = per_image * n / t_pd
    met = ratio > 1 and bool(pd.converged.all())
    print(f"batch of {n}: Clarabel's own time {per_image * n:.1f} s vs primal-dual {t_pd:.1f} s: {ratio:.1f}x "
          f"-> target (certified batch faster than the solver) {'met' if met else 'NOT met'}")  # fmt: skip


if __name__ == "__main__":
    main()
