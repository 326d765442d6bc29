"""The cost of the external baseline lpcf's fit at the downstream-decisions paper profile's sizes.

lpcf's own training (full-batch Adam, then L-BFGS-B) is most of each case of that profile. For
each ``d``, the lpcf PCF parameter-matched to the SOC-ICNN (as the runner builds it) is fitted
to the task's paper-size training set three times: with 1 Adam and 1 L-BFGS-B iteration, with 11
and 1, and with 1 and 11. The differences give the seconds per Adam and per L-BFGS-B iteration
(compilation and setup cancel out), and with them the fit time at the profile's budget if
L-BFGS-B takes all its iterations at one function evaluation each (a lower estimate: its line
search may evaluate more often).

    python benchmarks/bench_lpcf.py [--dims 10 20 50] [--task budget_huber]

Needs the ``lpcf`` extra. Run it on one core with JAX single-threaded, as the runner is run:
``XLA_FLAGS="--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1" taskset -c 0 ...``.
"""

from __future__ import annotations

import argparse
import time

import torch

from socicnn.experiments import decision_tasks as dt
from socicnn.experiments import downstream as ds
from socicnn.experiments import lpcf_baseline as lb


def fit_seconds(x, th, y, shape, adam: int, lbfgs: int) -> float:
    t0 = time.perf_counter()
    lb.fit_lpcf(x, th, y, *shape, seed=0, adam_epochs=adam, lbfgs_epochs=lbfgs)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dims", type=int, nargs="+", default=[10, 20, 50])
    ap.add_argument("--task", default="budget_huber", choices=tuple(dt.TASKS))
    args = ap.parse_args()
    lb.require()
    torch.set_num_threads(1)
    cfg = ds.config_for("paper")
    print(f"lpcf fit budget at the paper profile: {cfg.lpcf_adam_epochs} Adam + at most {cfg.lpcf_lbfgs_epochs} "
          "L-BFGS-B iterations")
    for d in args.dims:
        budget = ds.build_models(d, dt.CONTEXT_DIM, cfg.width[d], 0, ("soc",))["soc"].num_parameters()
        shape = lb.matched_shape(d, dt.CONTEXT_DIM, budget, ds.LPCF_DEPTH)
        split = dt.make_split(dt.make_task(args.task, d), "train", cfg.n_train, cfg.n_train_candidates)
        keep = cfg.n_train - max(1, cfg.n_train // 10)  # the runner holds 10 % of the instances out
        x, th, y = dt.Split(split.theta[:keep], split.cand_x[:keep], split.cand_y[:keep]).flat()
        th, y = (th - th.mean(0)) / th.std(0), (y - y.mean()) / y.std()
        base = fit_seconds(x, th, y, shape, 1, 1)
        adam = (fit_seconds(x, th, y, shape, 11, 1) - base) / 10
        lbfgs = (fit_seconds(x, th, y, shape, 1, 11) - base) / 10
        nominal = cfg.lpcf_adam_epochs * adam + cfg.lpcf_lbfgs_epochs * lbfgs
        print(f"d = {d}: {len(y)} training rows, lpcf widths {shape[0]}, psi {shape[1]} "
              f"({lb.parameter_count(d, dt.CONTEXT_DIM, *shape)} parameters; SOC-ICNN {budget}): "
              f"{adam:.2f} s per Adam and {lbfgs:.2f} s per L-BFGS-B iteration; the full budget "
              f"at one evaluation per iteration: {nominal / 3600:.1f} h", flush=True)


if __name__ == "__main__":
    main()
