"""Dual readout vs autograd: gradient, Hessian and Hessian-vector products, in one run.

Prints one table of median times and speedups (autograd time / readout time) and checks them
against the targets of issue 3 (measured on this machine's CPU cores):

- gradient (readout vs forward + backward autograd) at N = 1, 100, 10 000: speedup >= 1;
- Hessian vs ``torch.func.vmap(torch.func.hessian)`` at d = 10, 50, 100, N = 1000: >= 30 at d >= 50;
- HVP vs double-backward HVP at the same sizes: >= 3.

Usage: ``python benchmarks/bench_readout.py [--csv results.csv] [--quick] [--threads 2]``.
Exit status 1 when a target is missed (the table is printed either way).
"""

from __future__ import annotations

import argparse
import platform
import sys

import pandas as pd
import torch

import socicnn as sc
from socicnn.experiments.readout_timing import gradient_timing, hessian_timing, hvp_timing

TARGETS = {"gradient": 1.0, "hessian": 30.0, "hvp": 3.0}


def target_for(what: str, d: int) -> float | None:
    if what == "hessian" and d < 50:
        return None  # no target below d = 50
    return TARGETS[what]


def run(quick: bool = False, seed: int = 0) -> pd.DataFrame:
    dt = torch.float64
    min_time = 0.1 if quick else 0.5
    rows = []
    # Gradient: the model of the first-order readout experiment (d=20, width 64, depth 4, 2+2 blocks of dim 20).
    model = sc.SOCICNN(20, (64,) * 4, (20, 20), (20, 20), dtype=dt, seed=seed)
    gen = torch.Generator().manual_seed(seed)
    for n in (1, 100, 10_000):
        X = torch.randn(n, 20, generator=gen, dtype=dt)
        rows.append({"d": 20, "N": n, **gradient_timing(model, X, min_time)})
    # Hessian and HVP: the model of the local-Hessian experiment (width 32, depth 3, 2+2 blocks of dim d).
    for d in (10, 50, 100):
        model = sc.SOCICNN(d, (32,) * 3, (d, d), (d, d), dtype=dt, seed=seed)
        X = torch.randn(1000, d, generator=gen, dtype=dt)
        V = torch.randn(1000, d, generator=gen, dtype=dt)
        rows.append({"d": d, "N": 1000, **hessian_timing(model, X, min_time)})
        rows.append({"d": d, "N": 1000, **hvp_timing(model, X, V, min_time)})
    table = pd.DataFrame(rows)
    table["target"] = [target_for(w, d) for w, d in zip(table["what"], table["d"], strict=True)]
    table["met"] = [pd.isna(t) or s >= t for s, t in zip(table["speedup"], table["target"], strict=True)]
    return table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--csv", help="also write the results table to this CSV file")
    parser.add_argument("--quick", action="store_true", help="shorter timing runs (noisier)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    cpu = platform.processor() or platform.machine()
    print(f"torch {torch.__version__} | {cpu} | threads={torch.get_num_threads()}")
    table = run(quick=args.quick)
    with pd.option_context("display.width", 160, "display.float_format", "{:.3g}".format):
        print(table.to_string(index=False))
    if args.csv:
        table.to_csv(args.csv, index=False)
    missed = table[~table["met"]]
    if len(missed):
        print(f"\n{len(missed)} target(s) missed:")
        print(missed[["what", "d", "N", "speedup", "target"]].to_string(index=False))
        return 1
    print("\nall targets met")
    return 0


if __name__ == "__main__":
    sys.exit(main())
