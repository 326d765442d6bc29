"""Forward+backward time of SOC-ICNN vs a parameter-matched ReLU-ICNN (the function-approximation benchmark sizes).

Paper A claims the SOC blocks do not increase the order of the forward cost. For each benchmark
dimension ``d`` (SOC-ICNN: depth 2, width 16/20/24/32, one quadratic and one norm block of rank
``d``) this times one forward pass plus the backward pass to all parameters on a batch of 4096,
for the SOC-ICNN, the parameter-matched ReLU-ICNN (same width, the smallest depth reaching the
SOC-ICNN's parameter count) and the SOC-ICNN's own backbone alone (the
blocks' overhead). Prints the ratios; the target is SOC / matched ReLU <= 1.1.

    python benchmarks/bench_forward.py [--device cpu|cuda|auto] [--batch 4096] [--threads N]
"""

from __future__ import annotations

import argparse
import time

import torch
from torch.utils import benchmark

from socicnn.families import family_spec, matched_specs
from socicnn.profiles import resolve_device

SIZES = {5: 16, 10: 20, 20: 24, 50: 32}
TARGET_RATIO = 1.1


def step_fn(model: torch.nn.Module, x: torch.Tensor):
    """One forward pass plus the backward pass to all parameters."""

    def step() -> None:
        model.zero_grad(set_to_none=True)
        model(x).sum().backward()
        if x.is_cuda:
            torch.cuda.synchronize()

    return step


def fastest_times(steps: list, min_run_time: float, rounds: int, cpu_time: bool) -> list[float]:
    """Per step function, the smallest median seconds over ``rounds`` interleaved timings.

    Interleaving and the minimum make the ratio robust to drift; on CPU, ``cpu_time`` measures
    this process's CPU time rather than wall time, so load from other processes on a shared
    machine does not enter the ratio (one intra-op thread makes the two agree on a quiet one).
    """
    clock = time.process_time if cpu_time else time.perf_counter
    for step in steps:
        step()  # warm-up
    best = [float("inf")] * len(steps)
    for _ in range(rounds):
        for i, step in enumerate(steps):
            timer = benchmark.Timer(stmt="step()", globals={"step": step}, timer=clock)
            best[i] = min(best[i], timer.blocked_autorange(min_run_time=min_run_time / rounds).median)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--batch", type=int, default=4096)
    parser.add_argument("--threads", type=int, default=1, help="CPU intra-op threads (default 1)")
    parser.add_argument("--min-run-time", type=float, default=2.0, help="seconds per model and size")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds")
    args = parser.parse_args()
    dev = resolve_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    clock = "process CPU time" if dev.type == "cpu" else "wall time (synchronised)"
    print(f"device={dev} threads={torch.get_num_threads()} batch={args.batch} torch {torch.__version__}; {clock}")
    print(f"{'d':>3} {'width':>5} {'SOC params':>10} {'ReLU depth/params':>17} "
          f"{'SOC ms':>8} {'ReLU ms':>8} {'backbone ms':>11} {'SOC/ReLU':>9} {'SOC/backbone':>12}")
    worst = 0.0
    for d, width in SIZES.items():
        specs = matched_specs(d, width, soc_depth=2, families=("relu", "soc"))
        soc = specs["soc"].build(device=dev, seed=0)
        relu = specs["relu"].build(device=dev, seed=0)
        backbone = family_spec("relu", d, width, 2).build(device=dev, seed=0)
        x = 6 * torch.rand(args.batch, d, device=dev) - 3
        steps = [step_fn(m, x) for m in (soc, relu, backbone)]
        t_soc, t_relu, t_bb = fastest_times(steps, args.min_run_time, args.rounds, cpu_time=dev.type == "cpu")
        ratio = t_soc / t_relu
        worst = max(worst, ratio)
        print(f"{d:>3} {width:>5} {soc.num_parameters():>10} {specs['relu'].depth:>8}/{relu.num_parameters():<8} "
              f"{1e3 * t_soc:>8.3f} {1e3 * t_relu:>8.3f} {1e3 * t_bb:>11.3f} {ratio:>9.2f} {t_soc / t_bb:>12.2f}")
    verdict = "met" if worst <= TARGET_RATIO else "NOT met"
    print(f"worst SOC-ICNN / matched ReLU-ICNN ratio: {worst:.2f} (target <= {TARGET_RATIO}: {verdict})")


if __name__ == "__main__":
    main()
