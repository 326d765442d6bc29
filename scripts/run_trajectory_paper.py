"""Run the trajectory-smoothing experiment seed by seed and save the table after every seed.

    python scripts/run_trajectory_paper.py OUT_DIR [--profile paper] [--seeds 0 1 2]

Each save is the table of the seeds finished so far, with provenance (socicnn.results), so an
interrupted run keeps what it produced.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pandas as pd
import torch

from socicnn.experiments import trajectory as tj
from socicnn.results import checkout_state, save_table


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--profile", default="paper")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = ap.parse_args()
    cfg = tj.config(args.profile)
    checkout_state()  # the commit this run starts from (cached), recorded with every save
    rows, done, checks, t0 = [], [], {}, time.perf_counter()
    for seed in args.seeds:
        torch.manual_seed(seed)
        run = tj.run_seed(cfg, seed, log=lambda s: print(s, flush=True))
        rows += run.rows
        done.append(seed)
        checks[seed] = run.checks
        path = save_table(pd.DataFrame(rows), Path(args.out) / "trajectory_smoothing.csv", profile=args.profile,
                          device="cpu", wall_time=time.perf_counter() - t0, **tj.config_dict(cfg), seeds=done,
                          checks=checks)  # fmt: skip
        print(f"saved {path} with seeds {done}", flush=True)


if __name__ == "__main__":
    main()
