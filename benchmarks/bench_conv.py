"""Convolutional SOC-ICNN: forward+backward cost, and restoration time against the conic solver.

1. One forward pass plus the backward pass to all parameters, batch 64 of 64x64 images with
   their 2-channel contexts (float32), for Conv-SOC and the parameter-matched Conv-ReLU (same
   parameter count within 1%). Target: Conv-SOC / Conv-ReLU <= 1.2.
2. Restoration of 60 images (minimise the learned energy over [0, 1] pixels, one context each)
   by ``socicnn.inference.minimize`` (certified; ``--images`` of them, time scaled to 60), against
   the conic solver's own solve time (Clarabel's reported time, compilation excluded) on the learned
   energy's exact lifting with the box, at ``--size`` (the 64x64 lifting has about 1.5e5
   variables and is out of reach on a 2-core CPU; the conic time of 60 images is extrapolated
   from ``--conic-images`` solves, and says so). Untrained Conv-SOC weights (timing only).

    python benchmarks/bench_conv.py [--threads 1] [--device cpu|cuda] [--size 8] [--conic-images 3]
        [--images 60] [--max-iter 50] [--skip-forward] [--skip-restoration]

On a GPU (``--device cuda``) the forward+backward times are wall-clock times with the device
synchronised after each step.
"""

from __future__ import annotations

import argparse
import time

import cvxpy as cp
import torch
from bench_forward import fastest_times, step_fn

import socicnn as sc
from socicnn.conv_model import conv_family
from socicnn.lifting import epigraph
from socicnn.profiles import resolve_device

TARGET_RATIO = 1.2


def forward_backward(args) -> None:
    dev = resolve_device(args.device)
    clock = "process CPU time" if dev.type == "cpu" else f"wall time on {torch.cuda.get_device_name(dev)}"
    print(f"1. forward+backward, batch 64 of 64x64 (float32, {clock})")
    g = torch.Generator().manual_seed(0)
    X = torch.rand(64, 1, 64, 64, generator=g).to(dev)
    C = torch.rand(64, 2, 64, 64, generator=g).to(dev)
    models = {f: conv_family(f, (1, 64, 64), dtype=torch.float32, seed=0).to(dev) for f in ("Conv-SOC", "Conv-ReLU")}

    class WithContext(torch.nn.Module):
        def __init__(self, cm):
            super().__init__()
            self.cm = cm

        def forward(self, x):
            return self.cm(x, C)

    steps = [step_fn(WithContext(m), X) for m in models.values()]
    t_soc, t_relu = fastest_times(steps, args.min_run_time, args.rounds, cpu_time=dev.type == "cpu")
    for (name, m), t in zip(models.items(), (t_soc, t_relu), strict=True):
        print(f"  {name:10s} channels {m.backbone.channels} params {m.num_parameters():6d}  {1e3 * t:8.1f} ms")
    ratio = t_soc / t_relu
    verdict = "met" if ratio <= TARGET_RATIO else "NOT met"
    print(f"  Conv-SOC / Conv-ReLU = {ratio:.2f} (target <= {TARGET_RATIO}: {verdict})")


def restoration(args) -> None:
    s, n = args.size, args.images
    print(f"2. restoration of {n} images of {s}x{s} over [0, 1] (times scaled to 60 images)")
    g = torch.Generator().manual_seed(1)
    cm = conv_family("Conv-SOC", (1, s, s), dtype=torch.float64, seed=0)
    C = torch.rand(n, 2, s, s, generator=g, dtype=torch.float64)
    with torch.no_grad():
        model = cm.at(C)
    y = C[:, 0].reshape(n, -1)
    t0 = time.perf_counter()
    res = sc.inference.minimize(model, sc.inference.Box(0.0, 1.0), x0=y, max_iter=args.max_iter)
    t_min = (time.perf_counter() - t0) * 60 / n
    print(
        f"  minimize (max_iter={args.max_iter}): {t_min:.1f} s per 60 images, {int(res.converged.sum())} of {n} "
        f"certified, largest certified gap {float(res.gap_bound.max()):.2e}"
    )
    x = cp.Variable(s * s)
    times = []
    for i in range(args.conic_images):
        expr, cons = epigraph(model.select(torch.tensor([i])), x, row=0)
        prob = cp.Problem(cp.Minimize(expr), cons + [x >= 0, x <= 1])
        prob.solve(solver="CLARABEL")
        if prob.status != cp.OPTIMAL:
            raise RuntimeError(f"Clarabel returned {prob.status!r} on image {i}")
        times.append(prob.solver_stats.solve_time)
        print(f"  Clarabel on image {i}: {prob.solver_stats.num_iters} iterations, {times[-1]:.2f} s solve time")
    conic60 = 60 * sum(times) / len(times)
    print(f"  Clarabel: {conic60:.1f} s for 60 images (extrapolated from {len(times)} solves)")
    print(f"  conic solve time / minimize time = {conic60 / t_min:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu", choices=["auto", "cpu", "cuda"],
                        help="device of the forward+backward timing (restoration runs on the CPU)")
    parser.add_argument("--skip-restoration", action="store_true")
    parser.add_argument("--size", type=int, default=8, help="image side for the restoration comparison")
    parser.add_argument("--conic-images", type=int, default=3)
    parser.add_argument("--images", type=int, default=60, help="images restored by minimize")
    parser.add_argument("--max-iter", type=int, default=50, help="proximal steps of minimize")
    parser.add_argument("--min-run-time", type=float, default=4.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--skip-forward", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"threads={torch.get_num_threads()} torch {torch.__version__}")
    if not args.skip_forward:
        forward_backward(args)
    if not args.skip_restoration:
        restoration(args)


if __name__ == "__main__":
    main()
