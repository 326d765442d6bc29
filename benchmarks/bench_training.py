"""Optimiser steps per second: the batched trainer against one model at a time (function-approximation sizes).

For each dimension of the function-approximation grid (d = 5, 10, 20, 50 with the SOC widths
16/20/24/32) and each of the five parameter-matched families (the reference
parameterisation), this trains ``M`` models (default 30: ten targets x three seeds, one group of
the sweep) on one shared-input dataset per seed at batch 4096, for the same number of optimiser
steps, twice in one run: one model after another with :func:`socicnn.train.fit` (autograd,
``torch.optim.Adam``), and all ``M`` together with :func:`socicnn.batched.fit_batched` (one
parameter buffer, a hand-written forward and backward pass for these reference-parameterised
families, Adam and clipping on the buffer; on a CPU the models go through in cache-sized chunks).
Both runs include what a sweep pays per step
(batch gather, clipping, Adam, the learning-rate schedule) and validate only at the end.
Prints model-steps per second for both and their ratio; the target is a ratio >= 10 on the CPU.

What batching can remove is the per-step overhead, not the arithmetic. To show where the ceiling
is, the script also times one model at batch 64 (about the per-step overhead alone) and prints
``ceiling = t(4096) / (t(4096) - t(64))``, the speed-up of a trainer that removed every overhead
and kept the one-at-a-time arithmetic rate (a hand-written pass can pass it slightly by making
fewer passes over the activations). On a GPU a one-at-a-time step at batch 4096 is itself mostly
launch overhead, so the ceiling is not defined there and is printed as ``-``.

    python benchmarks/bench_training.py [--device cpu|cuda|auto] [--models 30] [--steps 20] [--threads 1]

On CPU the times are this process's CPU time (``time.process_time``, one intra-op thread), so
other processes on a shared machine do not enter the ratio; on CUDA they are wall-clock times.
"""

from __future__ import annotations

import argparse
import time

import torch

from socicnn.batched import fit_batched
from socicnn.families import FAMILIES, matched_specs
from socicnn.profiles import resolve_device
from socicnn.targets import REFERENCE_TARGETS, make_dataset
from socicnn.train import fit

SIZES = {5: 16, 10: 20, 20: 24, 50: 32}
TARGET_RATIO = 10.0
SEEDS = (2026, 2027, 2028)


def group_data(d: int, m: int, dev: torch.device):
    """``m`` (target, seed) datasets of dimension ``d`` as the sweep stacks them."""
    pairs = [(t, s) for s in SEEDS for t in REFERENCE_TARGETS][:m]
    data = [make_dataset(t, d, 6000, 1000, 10, seed=s, device=dev, sample_dtype=torch.float32) for t, s in pairs]
    return data, [s for _, s in pairs]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--models", type=int, default=30)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--dims", type=int, nargs="*", default=list(SIZES))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    dev = resolve_device(args.device)
    clock = time.perf_counter if dev.type == "cuda" else time.process_time
    print(f"torch {torch.__version__}, device {dev}, {torch.get_num_threads()} intra-op threads, "
          f"M = {args.models} models per group, {args.steps} steps each, batch 4096, "
          f"clock: {'wall' if dev.type == 'cuda' else 'process CPU time'}")
    opts = dict(steps=args.steps, batch_size=4096, lr=1e-3, weight_decay=1e-6, clip_norm=1.0,
                eval_every=args.steps, device=dev)
    ratios = []
    print(f"{'d':>3} {'family':>9} {'params':>6} {'one-at-a-time':>14} {'batched':>10} {'ratio':>7} {'ceiling':>8}"
          "   (model-steps/s)")
    for d in args.dims:
        data, seeds = group_data(d, args.models, dev)
        specs = matched_specs(d, SIZES[d], 2, parameterisation="reference")
        for family in FAMILIES:
            spec = specs[family]
            build = [lambda i=i, spec=spec: spec.build(dtype=torch.float32, device=dev, seed=1000 + i)
                     for i in range(args.models)]
            fit(build[0](), data[0].X_train, data[0].y_train, data[0].X_val, data[0].y_val, seed=seeds[0],
                **{**opts, "steps": 2, "eval_every": 2})  # warm-up
            t0 = clock()
            for i, ds in enumerate(data):
                fit(build[i](), ds.X_train, ds.y_train, ds.X_val, ds.y_val, seed=seeds[i], **opts)
            single = args.models * args.steps / (clock() - t0)
            ceiling = "-"
            if dev.type == "cpu":
                t0 = clock()
                for i, ds in enumerate(data[:3]):
                    fit(build[i](), ds.X_train, ds.y_train, ds.X_val, ds.y_val, seed=seeds[i],
                        **{**opts, "batch_size": 64})
                overhead = (clock() - t0) / (3 * args.steps)
                ceiling = f"{(1 / single) / max(1 / single - overhead, 1e-12):.1f}x"
            stack = [build[i]() for i in range(args.models)]
            X = torch.stack([ds.X_train for ds in data])
            Xv = torch.stack([ds.X_val for ds in data])
            Y = torch.stack([ds.y_train for ds in data])
            Yv = torch.stack([ds.y_val for ds in data])
            t0 = clock()
            fit_batched(stack, X, Y, Xv, Yv, seeds=seeds, **opts)
            batched = args.models * args.steps / (clock() - t0)
            ratios.append(batched / single)
            print(f"{d:>3} {family:>9} {spec.num_parameters():>6} {single:>14.1f} {batched:>10.1f} {ratios[-1]:>6.1f}x"
                  f" {ceiling:>8}")
    geo = torch.tensor(ratios).log().mean().exp().item()
    print(f"speed-up: geometric mean {geo:.1f}x, range {min(ratios):.1f}x to {max(ratios):.1f}x; "
          f"target >= {TARGET_RATIO:g}x: {'met' if min(ratios) >= TARGET_RATIO else 'NOT met'} for every size "
          f"({sum(r >= TARGET_RATIO for r in ratios)} of {len(ratios)} sizes)")


if __name__ == "__main__":
    main()
