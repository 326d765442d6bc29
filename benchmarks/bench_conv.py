"""Convolutional SOC-ICNN: forward+backward cost, and restoration time against the conic solver.

1. One forward pass plus the backward pass to all parameters, batch 64 of 64x64 images with
   their 2-channel contexts (float32), for Conv-SOC and the parameter-matched Conv-ReLU (same
   parameter count within 1%). Target: Conv-SOC / Conv-ReLU <= 1.2.
2. Certified restoration of a batch of test images (minimise the learned energy over [0, 1]
   pixels, one observation each): a Conv-SOC trained ``--epochs`` epochs on the image-restoration
   chapter's data at ``--size`` (``--epochs 0``: untrained), restored by
   ``socicnn.inference.minimize`` (``--method``, default ``primal_dual``, its iterations on a
   float32 copy of the energy as in the image-restoration chapter, ``--work float64`` for full
   precision; certified to a relative gap of 1e-5 in float64, from the observations; ``--images``
   of them, time scaled to 60), against the conic
   solver's own solve time (Clarabel's reported time, compilation excluded) on the learned
   energy's exact lifting with the box (``socicnn.energy.ExactBoxSolve``: contexts as CVXPY
   parameters). The lifting stops at about 24x24 on a 24 GB machine (CVXPY's parameterised
   problem runs out of memory at 32x32; at 64x64 it has about 1.5e5 variables), so the conic
   time of 60 images is extrapolated from ``--conic-images`` solves, and says so.

    python benchmarks/bench_conv.py [--threads 1] [--device cpu|cuda] [--size 16] [--conic-images 3]
        [--images 60] [--epochs 5] [--method primal_dual] [--work float32|float64] [--skip-forward]
        [--skip-restoration]

On a GPU (``--device cuda``) the forward+backward times are wall-clock times with the device
synchronised after each step.
"""

from __future__ import annotations

import argparse
import copy
import time

import torch
from bench_forward import fastest_times, step_fn

import socicnn as sc
from socicnn.conv_model import conv_family
from socicnn.energy import ExactBoxSolve
from socicnn.experiments.image_restoration import make_data, train_family
from socicnn.profiles import resolve_device

TARGET_RATIO = 1.2
TOL = 1e-5  # relative certified gap of a restoration (the image-restoration chapter's)


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
    data = make_data(s, args.train, n, seed=0)
    if args.epochs:
        cm, _ = train_family("Conv-SOC", data, args.epochs, seed=0)
    else:
        cm = conv_family("Conv-SOC", (1, s, s), dtype=torch.float64, seed=0)
    state = f"trained {args.epochs} epochs on {args.train} patches" if args.epochs else "untrained"
    print(f"2. certified restoration of {n} images of {s}x{s} over [0, 1], Conv-SOC {state} (times scaled to 60)")
    work_dtype = getattr(torch, args.work)
    with torch.no_grad():
        model = cm.at(data.test.context)
        work = None
        if args.method == "primal_dual" and work_dtype != model.dtype:
            work = copy.deepcopy(cm).to(work_dtype).at(data.test.context.to(work_dtype))
    t0 = time.perf_counter()
    res = sc.inference.minimize(model, sc.inference.Box(0.0, 1.0), data.test.Y.reshape(n, -1), tol=TOL,
                                method=args.method, work_model=work)  # fmt: skip
    t_min = (time.perf_counter() - t0) * 60 / n
    iterating = f", iterations in {args.work}" if args.method == "primal_dual" else ""
    its = f"{int(res.iterations.min())}-{int(res.iterations.max())}"
    print(f"  minimize ({args.method}{iterating}): {t_min:.1f} s per 60 images, {int(res.converged.sum())} of {n} "
          f"certified to {TOL:g} relative, iterations {its}")  # fmt: skip
    k = min(args.conic_images, n)
    with torch.no_grad():
        sub = cm.at(data.test.context[:k])
    sol = ExactBoxSolve(sub, 0.0, 1.0).solve(accept_inaccurate=True)
    ref = torch.as_tensor(sol.solver_value)
    rel = (res.value[:k] - ref) / ref.abs().clamp(min=1.0)
    conic60 = 60 * float(sol.solver_time.mean())
    print(f"  Clarabel: {float(sol.solver_time.mean()):.2f} s per image (its own solve time; statuses "
          f"{sorted(set(sol.status))}), {conic60:.1f} s for 60 images (extrapolated from {k} solves); minimize's "
          f"values minus Clarabel's, relative: {float(rel.min()):+.1e} .. {float(rel.max()):+.1e}")  # fmt: skip
    ratio = conic60 / t_min
    met = ratio > 1 and bool(res.converged.all())
    print(f"  conic solve time / minimize time = {ratio:.2f} -> target (certified batch faster than the solver) "
          f"{'met' if met else 'NOT met'}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu", choices=["auto", "cpu", "cuda"],
                        help="device of the forward+backward timing (restoration runs on the CPU)")
    parser.add_argument("--skip-restoration", action="store_true")
    parser.add_argument("--size", type=int, default=16, help="image side for the restoration comparison")
    parser.add_argument("--conic-images", type=int, default=3)
    parser.add_argument("--images", type=int, default=60, help="images restored by minimize")
    parser.add_argument("--epochs", type=int, default=5, help="training epochs of the restored energy (0: untrained)")
    parser.add_argument("--train", type=int, default=40, help="training patches")
    parser.add_argument("--method", default="primal_dual", choices=["primal_dual", "face_newton"])
    parser.add_argument("--work", default="float32", choices=["float32", "float64"],
                        help="precision of the primal-dual iterations (values and certificates are float64)")
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
