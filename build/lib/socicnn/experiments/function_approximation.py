"""Function approximation: SOC-ICNN against ReLU-, softplus-, Quad- and Norm-ICNNs (EXPERIMENTS.md G).

The sweep trains every parameter-matched model family (:mod:`socicnn.families`) on every
target (:mod:`socicnn.targets`) for each dimension and seed, under each training budget, and
returns a tidy table (one row per dimension, target, model, seed and budget). Two budgets:

- ``reference``: the reference scripts' own, Adam at a constant ``lr = 1e-3`` for 240 optimiser
  steps (120 epochs of 6000 samples at batch 4096), weight decay ``1e-6``, clipping at 1;
- ``converged``: an equal, much longer step budget for every model with a warm-up + cosine
  learning-rate schedule, long enough that the validation loss stops improving.

Metrics on the test split: MSE, relative L2 error ``||f_hat - f|| / ||f||``, and the same for
the trivial predictor (the training mean) as the floor any model must beat.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from itertools import product

import numpy as np
import pandas as pd
import torch

from .. import families as fam
from ..model import SOCICNN
from ..profiles import pick, resolve_device
from ..targets import get_target, make_dataset, target_names
from ..train import fit

__all__ = [
    "Budget",
    "SweepConfig",
    "SweepResult",
    "REFERENCE_BUDGET",
    "config_for",
    "run_sweep",
    "summarize",
    "advantage_table",
    "results_matrix",
    "verdict",
    "config_dict",
    "exact_soc_model",
    "trivial_ok",
]


@dataclass(frozen=True)
class Budget:
    """A training budget: optimiser steps and the optimiser settings that go with them."""

    name: str
    steps: int
    batch_size: int
    lr: float
    schedule: str = "constant"
    warmup: int = 0
    weight_decay: float = 1e-6
    clip_norm: float | None = 1.0
    eval_every: int | None = None


# The reference evaluates every 5 epochs (10 steps at 6000 samples and batch 4096).
REFERENCE_BUDGET = Budget("reference", steps=240, batch_size=4096, lr=1e-3, eval_every=10)


@dataclass(frozen=True)
class SweepConfig:
    """What the sweep runs: dims (with the SOC width for each), targets, families, seeds,
    budgets and split sizes."""

    dims: tuple[int, ...]
    widths: dict[int, int]
    targets: tuple[str, ...]
    seeds: tuple[int, ...]
    budgets: tuple[Budget, ...]
    n_train: int = 6000
    n_val: int = 1000
    n_test: int = 2000
    families: tuple[str, ...] = fam.FAMILIES
    soc_depth: int = 2
    block_init_scale: float = 0.01

    def describe(self) -> str:
        budgets = "; ".join(
            f"{b.name}: {b.steps} steps, batch {b.batch_size}, lr {b.lr:g} ({b.schedule})" for b in self.budgets
        )
        return (
            f"dims {list(self.dims)} (SOC widths {[self.widths[d] for d in self.dims]}), "
            f"{len(self.targets)} targets, {len(self.families)} models, seeds {list(self.seeds)}, "
            f"{self.n_train}/{self.n_val}/{self.n_test} train/val/test samples, block init scale "
            f"{self.block_init_scale:g}; budgets: {budgets}"
        )


def config_for(profile: str) -> SweepConfig:
    """The sweep of a profile: ``paper`` is EXPERIMENTS.md G in full; ``book`` fits a few
    minutes on 2 CPU cores; ``smoke`` touches every family and every target in seconds."""
    paper = SweepConfig(
        dims=(5, 10, 20, 50),
        widths={5: 16, 10: 20, 20: 24, 50: 32},
        targets=tuple(target_names()),
        seeds=(2026, 2027, 2028),
        budgets=(
            REFERENCE_BUDGET,
            Budget("converged", steps=10000, batch_size=4096, lr=1e-2, schedule="cosine", warmup=200, eval_every=50),
        ),
    )
    book = SweepConfig(
        dims=(10,),
        widths={10: 20},
        targets=("quad_iso", "norm_euclid", "mixed", "huber"),
        seeds=(2026, 2027),
        budgets=(
            replace(REFERENCE_BUDGET, batch_size=1024),
            Budget("converged", steps=1000, batch_size=1024, lr=1e-2, schedule="cosine", warmup=50, eval_every=20),
        ),
        n_train=1500,
        n_val=500,
        n_test=1000,
    )
    smoke = SweepConfig(
        dims=(3,),
        widths={3: 8},
        targets=tuple(target_names()),
        seeds=(2026,),
        budgets=(
            Budget("reference", steps=20, batch_size=256, lr=1e-3),
            Budget("converged", steps=100, batch_size=256, lr=3e-2, schedule="cosine", warmup=10, eval_every=10),
        ),
        n_train=256,
        n_val=128,
        n_test=128,
    )
    return pick(profile, smoke=smoke, book=book, paper=paper)


@dataclass
class SweepResult:
    """The tidy results ``table`` and the training ``logs`` keyed by
    ``(dim, target, family, seed, budget)``."""

    table: pd.DataFrame
    logs: dict[tuple, pd.DataFrame] = field(default_factory=dict)
    parameters: pd.DataFrame | None = None


def _late_improvement(log: pd.DataFrame, steps: int) -> float:
    """Relative drop of the best validation loss during the last 20% of the steps
    (0: flat at the end; large: still improving when the budget ran out)."""
    early = log.loc[log["step"] <= 0.8 * steps, "val_loss"].min()
    best = log["val_loss"].min()
    return float((early - best) / early) if early > 0 else 0.0


def _train_and_score(
    spec: fam.ModelSpec, budget: Budget, data, seed: int, dev: torch.device
) -> tuple[dict, pd.DataFrame]:
    """Train one model of ``spec`` under ``budget``; its test metrics and training log."""
    model = spec.build(dtype=torch.float32, device=dev, seed=seed)
    res = fit(
        model, data.X_train, data.y_train, data.X_val, data.y_val,
        steps=budget.steps, batch_size=budget.batch_size, lr=budget.lr, schedule=budget.schedule,
        warmup=budget.warmup, weight_decay=budget.weight_decay, clip_norm=budget.clip_norm,
        eval_every=budget.eval_every, device=dev, seed=seed, progress=False,
    )
    with torch.no_grad():
        err = res.model(data.X_test) - data.y_test
    row = dict(
        test_mse=float((err * err).mean()),
        rel_l2=float(torch.linalg.vector_norm(err) / torch.linalg.vector_norm(data.y_test)),
        train_time=res.train_time,
        best_step=res.best_step,
        late_improvement=_late_improvement(res.log, budget.steps),
    )
    return row, res.log


def run_sweep(
    cfg: SweepConfig, device: str | torch.device = "auto", progress: bool = False, cpu_threads: int | None = 1
) -> SweepResult:
    """Train every (dim, target, family, seed, budget) of ``cfg``; returns a :class:`SweepResult`.

    Data are float32 on ``device``; each model is initialised with the run's seed, and the
    batch order is seeded by it too, so a run is repeatable. On CPU the sweep runs with
    ``cpu_threads`` intra-op threads (restored afterwards): these small models are bound by
    per-operation overhead, and extra threads only contend with each other.
    """
    dev = device if isinstance(device, torch.device) else resolve_device(device)
    rows, logs, param_rows = [], {}, []
    total = len(cfg.dims) * len(cfg.targets) * len(cfg.seeds) * len(cfg.families) * len(cfg.budgets)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, desc="function approximation")
    threads = torch.get_num_threads()
    if dev.type == "cpu" and cpu_threads is not None:
        torch.set_num_threads(cpu_threads)
    try:
        for dim in cfg.dims:
            specs = fam.matched_specs(
                dim, cfg.widths[dim], cfg.soc_depth, families=cfg.families, block_init_scale=cfg.block_init_scale
            )
            params = fam.parameter_table(specs)
            params.insert(0, "dim", dim)
            param_rows.append(params)
            for target, seed in product(cfg.targets, cfg.seeds):
                data = make_dataset(target, dim, cfg.n_train, cfg.n_val, cfg.n_test, seed=seed, device=dev)
                const = data.y_train.mean()
                const_mse = float(((data.y_test - const) ** 2).mean())
                const_rel = float(torch.linalg.vector_norm(data.y_test - const) / torch.linalg.vector_norm(data.y_test))
                for (family, spec), budget in product(specs.items(), cfg.budgets):
                    row, log = _train_and_score(spec, budget, data, seed, dev)
                    rows.append(dict(
                        dim=dim, target=target, model=spec.label, family=family, seed=seed, budget=budget.name,
                        steps=budget.steps, params=spec.num_parameters(), depth=spec.depth, width=spec.width,
                        const_mse=const_mse, const_rel_l2=const_rel, **row,
                    ))
                    logs[(dim, target, family, seed, budget.name)] = log
                    if bar is not None:
                        bar.update(1)
    finally:
        torch.set_num_threads(threads)
        if bar is not None:
            bar.close()
    columns = ["dim", "target", "model", "family", "seed", "budget", "steps", "params", "depth", "width",
               "test_mse", "rel_l2", "const_mse", "const_rel_l2", "train_time", "best_step", "late_improvement"]
    return SweepResult(pd.DataFrame(rows)[columns], logs, pd.concat(param_rows, ignore_index=True))


_MODEL_ORDER = {fam.LABELS[f]: i for i, f in enumerate(fam.FAMILIES)}


def summarize(table: pd.DataFrame) -> pd.DataFrame:
    """Mean and sd over seeds of relative L2, with parameters and mean training time, one row
    per (budget, dim, target, model); models in the families' order."""
    g = table.groupby(["budget", "dim", "target", "model"], sort=False)
    out = g.agg(
        rel_l2_mean=("rel_l2", "mean"),
        rel_l2_sd=("rel_l2", "std"),
        params=("params", "first"),
        train_time=("train_time", "mean"),
        late_improvement=("late_improvement", "max"),
    ).reset_index()
    out["rel_l2_sd"] = out["rel_l2_sd"].fillna(0.0)
    out["_order"] = out["model"].map(_MODEL_ORDER)
    return out.sort_values(["budget", "dim", "target", "_order"]).drop(columns="_order").reset_index(drop=True)


def results_matrix(table: pd.DataFrame, budget: str) -> pd.DataFrame:
    """Relative L2 as ``"mean ± sd"`` strings over seeds: rows (dim, target), columns the
    models (families' order), for one budget."""
    summary = summarize(table[table["budget"] == budget])
    summary["cell"] = [f"{m:.2e} ± {s:.0e}" for m, s in zip(summary["rel_l2_mean"], summary["rel_l2_sd"], strict=True)]
    out = summary.pivot(index=["dim", "target"], columns="model", values="cell")
    return out[sorted(out.columns, key=_MODEL_ORDER.get)]


def advantage_table(table: pd.DataFrame) -> pd.DataFrame:
    """Per (budget, dim, target): SOC-ICNN's mean relative L2, the best baseline's, their
    ratio (best baseline / SOC; > 1 means SOC-ICNN is better) and whether SOC-ICNN ranks first."""
    means = table.groupby(["budget", "dim", "target", "family"])["rel_l2"].mean().unstack("family")
    baselines = [f for f in means.columns if f != "soc"]
    out = pd.DataFrame({
        "soc": means["soc"],
        "best_baseline": means[baselines].min(axis=1),
        "best_baseline_model": means[baselines].idxmin(axis=1).map(fam.LABELS),
    })
    out["ratio"] = out["best_baseline"] / out["soc"]
    out["soc_first"] = out["soc"] <= out["best_baseline"]
    return out.reset_index()


def _geomean(x: pd.Series) -> float:
    return float(np.exp(np.log(x.to_numpy()).mean()))


def verdict(table: pd.DataFrame) -> list[str]:
    """Sentences, computed from ``table``, on whether SOC-ICNN's advantage survives convergence."""
    adv = advantage_table(table)
    lines = []
    for budget, sub in adv.groupby("budget", sort=False):
        wins = int(sub["soc_first"].sum())
        lines.append(
            f"Budget '{budget}': SOC-ICNN has the lowest mean relative L2 error in {wins} of {len(sub)} "
            f"(dimension, target) cases; the best baseline's error is on average (geometric mean) "
            f"{_geomean(sub['ratio']):.3g}x SOC-ICNN's (range {sub['ratio'].min():.3g}x to {sub['ratio'].max():.3g}x)."
        )
    names = list(adv["budget"].unique())
    if "reference" in names and "converged" in names:
        ref = adv[adv["budget"] == "reference"].set_index(["dim", "target"])
        conv = adv[adv["budget"] == "converged"].set_index(["dim", "target"])
        kept = ref["soc_first"] & conv["soc_first"]
        lost = ref["soc_first"] & ~conv["soc_first"]
        lines.append(
            f"Of the {int(ref['soc_first'].sum())} cases SOC-ICNN wins at the reference budget, it still wins "
            f"{int(kept.sum())} after convergence and loses {int(lost.sum())}"
            + (f" ({', '.join(f'd={d} {t}' for d, t in lost[lost].index)})." if lost.any() else ".")
        )
        exact = {t for t in conv.index.get_level_values("target") if get_target(t).soc_exact}
        for group, keep in (("SOC-representable", True), ("other", False)):
            sel = conv[[(t in exact) == keep for t in conv.index.get_level_values("target")]]
            if len(sel):
                lines.append(
                    f"After convergence, on {group} targets the best baseline's error is "
                    f"{_geomean(sel['ratio']):.3g}x SOC-ICNN's (geometric mean over {len(sel)} cases; "
                    f"SOC-ICNN first in {int(sel['soc_first'].sum())})."
                )
    return lines


def exact_soc_model(target: str, dim: int, width: int, depth: int = 2) -> SOCICNN:
    """The benchmark SOC-ICNN architecture (float64) with weights equal to an SOC-representable
    target: the backbone's output is switched off (``c = 0``, ``v = 0``, ``b0 = 0``), the
    target's block gets ``M`` with weight 1, the other block weight 0."""
    tgt = get_target(target)
    if tgt.soc_block is None:
        raise ValueError(f"target {target!r} is not exactly representable by the benchmark SOC-ICNN")
    kind, matrix = tgt.soc_block
    model = fam.family_spec("soc", dim, width, depth).build(dtype=torch.float64, seed=0)
    w = model.weights()
    M, zeros, one = matrix(dim), torch.zeros(dim, dtype=torch.float64), torch.ones((), dtype=torch.float64)
    w.c, w.v, w.b0 = torch.zeros_like(w.c), torch.zeros_like(w.v), torch.zeros_like(w.b0)
    w.quad = [(one if kind == "quad" else 0 * one, M, zeros)]
    w.norm = [(one if kind == "norm" else 0 * one, M, zeros)]
    return SOCICNN.from_weights(w)


def config_dict(cfg: SweepConfig) -> dict:
    """``cfg`` as plain JSON-friendly data (for provenance)."""
    d = asdict(cfg)
    d["widths"] = {str(k): v for k, v in cfg.widths.items()}
    return d


def trivial_ok(table: pd.DataFrame) -> pd.Series:
    """Per row: the test MSE is finite and below the trivial (training-mean) predictor's."""
    return np.isfinite(table["test_mse"]) & (table["test_mse"] < table["const_mse"])

