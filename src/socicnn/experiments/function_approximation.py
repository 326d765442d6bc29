"""Function approximation: SOC-ICNN against ReLU-, softplus-, Quad- and Norm-ICNNs (paper A's experiment 2).

A sweep (:class:`SweepConfig`) trains every parameter-matched model family
(:mod:`socicnn.families`) on every target (:mod:`socicnn.targets`) for each dimension and seed,
and returns a tidy table (one row per configuration, dimension, target, model and seed). Models
of one family and dimension are trained together by :func:`socicnn.batched.fit_batched`
(``batched=False``: one at a time with :func:`socicnn.train.fit`, the same numbers up to
floating-point reassociation).

The configurations form a ladder (:func:`ladder_for`): the first rung is the reference run
(:func:`reference_config`, the public scripts' setup to the letter: their parameterisation and
initialisation, raw-scale targets, 240 Adam steps), and each further rung changes one thing:

1. ``standardised``: train on ``(y - mean) / sd`` of the training split (metrics stay raw);
2. ``movable z-path``: the z-path's raw weights start where the softplus lets them move
   (``softplus(raw) = 1/sqrt(width)`` instead of ``softplus(-3.5) = 0.03``);
3. ``long budget``: an equal, much longer step budget with warm-up and cosine decay;
4. ``library defaults``: the library's own :class:`~socicnn.model.SOCICNN` families and
   initialisation (parameter-matched by the same rule), on the long budget.

Metrics on the test split: MSE and relative L2 error ``||y - y_hat|| / ||y||`` (raw scale), and
the same for the constant predictor (the training mean), the floor every model must beat. A run
counts as *converged* when its best validation loss fell by less than :data:`CONVERGED_TOL`
(relative) during the last 20% of its steps, or early stopping ended it.
"""

from __future__ import annotations

import argparse
import math
import time
from dataclasses import asdict, dataclass, field, replace
from itertools import product

import numpy as np
import pandas as pd
import torch

from .. import families as fam
from ..batched import fit_batched
from ..model import SOCICNN
from ..profiles import pick, resolve_device
from ..results import mean_sd
from ..targets import GROUPS, REFERENCE_TARGETS, get_target, make_dataset
from ..train import fit

__all__ = [
    "Budget",
    "CONVERGED_TOL",
    "REFERENCE_BUDGET",
    "SweepConfig",
    "SweepResult",
    "advantage_table",
    "as_runs",
    "config_dict",
    "config_for",
    "DOUBLED_SUFFIX",
    "DOUBLING_TOL",
    "doubled",
    "doubling_comparison",
    "doubling_table",
    "exact_soc_model",
    "GAP_MIN_RATIO",
    "gap_table",
    "ladder_for",
    "long_budget_rows",
    "reference_config",
    "results_matrix",
    "run_ladder",
    "run_sweep",
    "summarize",
    "trivial_ok",
    "verdict",
]

CONVERGED_TOL = 0.01


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
    patience: int | None = None

    def describe(self) -> str:
        stop = f", patience {self.patience} checks" if self.patience else ""
        return (f"{self.name}: {self.steps} Adam steps at batch {self.batch_size}, lr {self.lr:g} ({self.schedule}"
                f"{f', {self.warmup} warm-up' if self.warmup else ''}), weight decay {self.weight_decay:g}, "
                f"clip {self.clip_norm}, validation every {self.eval_every} steps{stop}")


# The reference: 120 epochs of 6000 samples at batch 4096 (2 steps per epoch), validation every
# 5 epochs (10 steps), best state kept, early stopping after 8 checks without improvement.
REFERENCE_BUDGET = Budget("reference", steps=240, batch_size=4096, lr=1e-3, eval_every=10, patience=8)


@dataclass(frozen=True)
class SweepConfig:
    """What one sweep runs: dims (with the SOC width for each), targets, families, seeds, one
    budget, split sizes, and how models are built and targets scaled.

    ``parameterisation`` is ``"reference"`` (:class:`~socicnn.families.ReferenceICNN`, z-path
    raw weights at mean ``-3.5`` or, with ``zpath="movable"``, at ``softplus^-1(1/sqrt(width))``)
    or ``"library"`` (:class:`~socicnn.model.SOCICNN`, blocks scaled by ``block_init_scale``).
    """

    name: str
    dims: tuple[int, ...]
    widths: dict[int, int]
    targets: tuple[str, ...]
    seeds: tuple[int, ...]
    budget: Budget
    n_train: int = 6000
    n_val: int = 1000
    n_test: int = 2000
    families: tuple[str, ...] = fam.FAMILIES
    soc_depth: int = 2
    parameterisation: str = "reference"
    zpath: str = "reference"
    block_init_scale: float = 1.0
    standardize: bool = False
    sample_dtype: str = "float32"

    @classmethod
    def from_dict(cls, d: dict) -> SweepConfig:
        """The configuration :func:`config_dict` wrote (e.g. into a stored table's provenance)."""
        d = dict(d)
        d["budget"] = Budget(**d["budget"])
        d["widths"] = {int(k): int(v) for k, v in d["widths"].items()}
        for key in ("dims", "targets", "seeds", "families"):
            d[key] = tuple(d[key])
        return cls(**d)

    def zpath_mean(self, width: int) -> float:
        """Mean of the raw z-path weights at initialisation (reference parameterisation)."""
        if self.zpath == "reference":
            return fam.REFERENCE_ZPATH_MEAN
        return math.log(math.expm1(width**-0.5))

    def describe(self) -> str:
        model = (f"reference parameterisation, z-path init {self.zpath}" if self.parameterisation == "reference"
                 else f"library parameterisation, block init scale {self.block_init_scale:g}")
        return (
            f"[{self.name}] dims {list(self.dims)} (SOC widths {[self.widths[d] for d in self.dims]}), "
            f"{len(self.targets)} targets, {len(self.families)} models, seeds {list(self.seeds)}, "
            f"{self.n_train}/{self.n_val}/{self.n_test} samples, targets "
            f"{'standardised' if self.standardize else 'raw'}, {model}; {self.budget.describe()}"
        )


def reference_config(profile: str) -> SweepConfig:
    """The reference scripts' run at ``paper``; ``book`` keeps its settings on one dimension,
    four targets (quadratic, norm, exponential-cone, piecewise-linear) and two seeds; ``smoke``
    is a tiny code-path check."""
    paper = SweepConfig(
        name="reference",
        dims=(5, 10, 20, 50),
        widths={5: 16, 10: 20, 20: 24, 50: 32},
        targets=REFERENCE_TARGETS,
        seeds=(2026, 2027, 2028),
        budget=REFERENCE_BUDGET,
    )
    book = replace(paper, dims=(5,), widths={5: 16}, seeds=(2026, 2027),
                   targets=("quad_aniso", "norm_aniso", "logsumexp_quad", "kinks_quad"))
    smoke = replace(paper, dims=(3,), widths={3: 6}, seeds=(2026, 2027), n_train=256, n_val=64, n_test=64,
                    budget=replace(REFERENCE_BUDGET, steps=16, batch_size=128, eval_every=4))
    return pick(profile, smoke=smoke, book=book, paper=paper)


config_for = reference_config


def ladder_for(profile: str) -> list[SweepConfig]:
    """The reference configuration, then one change at a time (module docstring)."""
    ref = reference_config(profile)
    long = Budget("long", steps=pick(profile, smoke=40, book=400, paper=2000), batch_size=ref.budget.batch_size,
                  lr=3e-3, schedule="cosine", warmup=pick(profile, smoke=4, book=20, paper=100),
                  eval_every=pick(profile, smoke=4, book=20, paper=20))
    std = replace(ref, name="standardised", standardize=True)
    movable = replace(std, name="movable z-path", zpath="movable")
    longer = replace(movable, name="long budget", budget=long)
    library = replace(longer, name="library defaults", parameterisation="library", block_init_scale=1.0)
    return [ref, std, movable, longer, library]


DOUBLED_SUFFIX = " (2x steps)"
#: A long-budget run counts as converged by doubling when the same configuration with twice the
#: steps (and twice the warm-up) lowers the seed-mean best validation MSE by less than this (relative).
DOUBLING_TOL = 0.05


def doubled(cfg: SweepConfig) -> SweepConfig:
    """``cfg`` with twice the optimiser steps and warm-up (same schedule shape), renamed."""
    b = cfg.budget
    return replace(cfg, name=cfg.name + DOUBLED_SUFFIX, budget=replace(b, steps=2 * b.steps, warmup=2 * b.warmup))


def doubling_table(summary: pd.DataFrame, doubled_summary: pd.DataFrame) -> pd.DataFrame:
    """Per (config, dim, target, model) present in both :func:`summarize` tables (the second run
    at twice the steps, :func:`doubled`): the seed-mean best validation MSE at each budget, the
    relative drop ``1 - val(2T) / val(T)`` and ``converged`` (drop below :data:`DOUBLING_TOL`)."""
    keys = ["dim", "target", "model"]
    base = summary.copy()
    other = doubled_summary.assign(config=doubled_summary["config"].str.removesuffix(DOUBLED_SUFFIX))
    merged = base.merge(other[["config", *keys, "val_mse_mean", "steps"]], on=["config", *keys], suffixes=("", "_2x"))
    out = merged[["config", *keys, "steps", "val_mse_mean", "steps_2x", "val_mse_mean_2x"]].copy()
    out["drop"] = 1.0 - out["val_mse_mean_2x"] / out["val_mse_mean"]
    out["converged"] = out["drop"] < DOUBLING_TOL
    return out


@dataclass
class SweepResult:
    """The tidy results ``table`` and the training ``logs`` keyed by
    ``(config, dim, target, family, seed)``; ``wall_time`` seconds per configuration."""

    table: pd.DataFrame
    logs: dict[tuple, pd.DataFrame] = field(default_factory=dict)
    parameters: pd.DataFrame | None = None
    wall_time: dict[str, float] = field(default_factory=dict)


def _late_improvement(log: pd.DataFrame, steps: int) -> float:
    """Relative drop of the best validation loss during the last 20% of the steps
    (0: flat at the end; large: still improving when the budget ran out)."""
    early = log.loc[log["step"] <= 0.8 * steps, "val_loss"].min()
    best = log["val_loss"].min()
    return float((early - best) / early) if early > 0 else 0.0


def _specs(cfg: SweepConfig, dim: int) -> dict[str, fam.ModelSpec]:
    width = cfg.widths[dim]
    return fam.matched_specs(
        dim, width, cfg.soc_depth, families=cfg.families, block_init_scale=cfg.block_init_scale,
        parameterisation=cfg.parameterisation, zpath_mean=cfg.zpath_mean(width),
        max_depth=8 if cfg.parameterisation == "reference" else 64,
    )


def run_sweep(
    cfg: SweepConfig,
    device: str | torch.device = "auto",
    progress: bool = False,
    cpu_threads: int | None = 1,
    batched: bool = True,
) -> SweepResult:
    """Train every (dim, target, family, seed) of ``cfg``; returns a :class:`SweepResult`.

    Data are float32 on ``device``; a model is initialised with its run's seed and its batch
    order is seeded by it too, so a sweep is repeatable. On CPU the sweep runs with
    ``cpu_threads`` intra-op threads (restored afterwards).
    """
    dev = device if isinstance(device, torch.device) else resolve_device(device)
    b = cfg.budget
    opts = dict(steps=b.steps, batch_size=b.batch_size, lr=b.lr, schedule=b.schedule, warmup=b.warmup,
                weight_decay=b.weight_decay, clip_norm=b.clip_norm, eval_every=b.eval_every, patience=b.patience,
                device=dev)
    rows, logs, param_rows = [], {}, []
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(cfg.dims) * len(cfg.families), desc=cfg.name)
    threads = torch.get_num_threads()
    if dev.type == "cpu" and cpu_threads is not None:
        torch.set_num_threads(cpu_threads)
    t_start = time.perf_counter()
    try:
        for dim in cfg.dims:
            specs = _specs(cfg, dim)
            params = fam.parameter_table(specs)
            params.insert(0, "dim", dim)
            param_rows.append(params)
            cases = list(product(cfg.targets, cfg.seeds))
            data = [make_dataset(t, dim, cfg.n_train, cfg.n_val, cfg.n_test, seed=s, device=dev,
                                 sample_dtype=getattr(torch, cfg.sample_dtype)) for t, s in cases]
            mu = torch.stack([ds.y_train.mean() for ds in data]) if cfg.standardize else torch.zeros(len(data))
            sd = torch.stack([ds.y_train.std() for ds in data]) if cfg.standardize else torch.ones(len(data))
            mu, sd = mu.to(dev), sd.to(dev)
            Y = (torch.stack([ds.y_train for ds in data]) - mu[:, None]) / sd[:, None]
            Yv = (torch.stack([ds.y_val for ds in data]) - mu[:, None]) / sd[:, None]
            X, Xv = torch.stack([ds.X_train for ds in data]), torch.stack([ds.X_val for ds in data])
            seeds = [s for _, s in cases]
            for family, spec in specs.items():
                models = [spec.build(dtype=torch.float32, device=dev, seed=s) for s in seeds]
                t0 = time.perf_counter()
                if batched:
                    results = fit_batched(models, X, Y, Xv, Yv, seeds=seeds, **opts)
                else:
                    results = [fit(mdl, X[i], Y[i], Xv[i], Yv[i], seed=seeds[i], progress=False, **opts)
                               for i, mdl in enumerate(models)]
                group_time = time.perf_counter() - t0
                for i, ((target, seed), ds, res) in enumerate(zip(cases, data, results, strict=True)):
                    with torch.no_grad():
                        err = mu[i] + sd[i] * res.model(ds.X_test) - ds.y_test
                    const = ds.y_train.mean()
                    late = _late_improvement(res.log, b.steps)
                    rows.append(dict(
                        config=cfg.name, dim=dim, target=target, group=get_target(target).group, model=spec.label,
                        family=family, seed=seed, budget=b.name, steps=res.steps, params=spec.num_parameters(),
                        depth=spec.depth, width=spec.width,
                        test_mse=float((err * err).mean()),
                        rel_l2=float(torch.linalg.vector_norm(err) / torch.linalg.vector_norm(ds.y_test)),
                        const_mse=float(((ds.y_test - const) ** 2).mean()),
                        const_rel_l2=float(torch.linalg.vector_norm(ds.y_test - const)
                                           / torch.linalg.vector_norm(ds.y_test)),
                        val_mse=float(res.best_val_loss * sd[i] ** 2),
                        best_step=res.best_step, late_improvement=late,
                        converged=bool(res.stopped_early or late < CONVERGED_TOL),
                        train_time=group_time / len(models), group_time=group_time, group_size=len(models),
                    ))
                    logs[(cfg.name, dim, target, family, seed)] = res.log
                if bar is not None:
                    bar.update(1)
    finally:
        torch.set_num_threads(threads)
        if bar is not None:
            bar.close()
    wall = time.perf_counter() - t_start
    return SweepResult(pd.DataFrame(rows), logs, pd.concat(param_rows, ignore_index=True), {cfg.name: wall})


def run_ladder(configs: list[SweepConfig], device: str | torch.device = "auto", **kw) -> SweepResult:
    """:func:`run_sweep` for each configuration; one table (column ``config``) in ladder order."""
    parts = [run_sweep(cfg, device, **kw) for cfg in configs]
    return SweepResult(
        pd.concat([p.table for p in parts], ignore_index=True),
        {k: v for p in parts for k, v in p.logs.items()},
        pd.concat([p.parameters.assign(config=cfg.name) for p, cfg in zip(parts, configs, strict=True)],
                  ignore_index=True),
        {k: v for p in parts for k, v in p.wall_time.items()},
    )


_MODEL_ORDER = {fam.LABELS[f]: i for i, f in enumerate(fam.FAMILIES)}


def summarize(table: pd.DataFrame) -> pd.DataFrame:
    """Mean and sd (ddof 1) over seeds of test MSE and relative L2, one row per (config, dim,
    target, model), with parameters, the constant predictor, convergence (every seed) and the
    mean amortised training time per model; ladder and families' order kept."""
    keys = ["config", "dim", "target", "group", "model", "family"]
    g = table.groupby(keys, sort=False)
    out = g.agg(
        params=("params", "first"),
        depth=("depth", "first"),
        seeds=("seed", "nunique"),
        test_mse_mean=("test_mse", "mean"),
        test_mse_sd=("test_mse", "std"),
        rel_l2_mean=("rel_l2", "mean"),
        rel_l2_sd=("rel_l2", "std"),
        const_mse=("const_mse", "mean"),
        const_rel_l2=("const_rel_l2", "mean"),
        converged=("converged", "all"),
        late_improvement=("late_improvement", "max"),
        **({"val_mse_mean": ("val_mse", "mean")} if "val_mse" in table.columns else {}),
        best_step=("best_step", "mean"),
        steps=("steps", "max"),
        train_time=("train_time", "mean"),
    ).reset_index()
    order = {c: i for i, c in enumerate(table["config"].unique())}
    out["_c"], out["_m"] = out["config"].map(order), out["model"].map(_MODEL_ORDER)
    return out.sort_values(["_c", "dim", "target", "_m"]).drop(columns=["_c", "_m"]).reset_index(drop=True)


def as_runs(summary: pd.DataFrame) -> pd.DataFrame:
    """A :func:`summarize` table (e.g. a stored one) in the per-run layout that
    :func:`results_matrix`, :func:`advantage_table`, :func:`gap_table` and :func:`verdict` read:
    one row per (config, dim, target, model) carrying the seed means (``rel_l2``, ``test_mse``)
    and sds; counts of runs then count (case, model) means."""
    out = summary.rename(columns={"rel_l2_mean": "rel_l2", "test_mse_mean": "test_mse"}).copy()
    out["seed"] = 0
    return out


def results_matrix(table: pd.DataFrame, config: str, value: str = "rel_l2") -> pd.DataFrame:
    """``value`` as ``"mean ± sd"`` strings over seeds: rows (dim, target), columns the models
    (families' order), plus the constant predictor, for one configuration. ``table`` is per-run
    (:func:`run_sweep`) or already a :func:`summarize` table (a stored one)."""
    sub = table[table["config"] == config]
    summary = sub.copy() if f"{value}_mean" in sub.columns else summarize(sub)
    summary["cell"] = mean_sd(summary[f"{value}_mean"], summary[f"{value}_sd"])
    out = summary.pivot(index=["dim", "target"], columns="model", values="cell")
    out = out[sorted(out.columns, key=_MODEL_ORDER.get)]
    const = summary.groupby(["dim", "target"])[f"const_{value}"].first()
    out["constant"] = [f"{v:.3g}" for v in const.loc[out.index]]
    return out


def advantage_table(table: pd.DataFrame) -> pd.DataFrame:
    """Per (config, dim, target): SOC-ICNN's mean relative L2, the best baseline's, their
    ratio (best baseline / SOC; > 1 means SOC-ICNN is better) and whether SOC-ICNN ranks first."""
    keys = ["config", "dim", "target", "group"]
    means = table.groupby([*keys, "family"], sort=False)["rel_l2"].mean().unstack("family")
    baselines = [f for f in means.columns if f != "soc"]
    out = pd.DataFrame({
        "soc": means["soc"],
        "best_baseline": means[baselines].min(axis=1),
        "best_baseline_model": means[baselines].idxmin(axis=1).map(fam.LABELS),
        "relu": means["relu"] if "relu" in means else np.nan,
    })
    out["ratio"] = out["best_baseline"] / out["soc"]
    out["soc_first"] = out["soc"] <= out["best_baseline"]
    return out.reset_index()


def _geomean(x) -> float:
    return float(np.exp(np.log(np.asarray(x, dtype=float)).mean()))


GAP_MIN_RATIO = 1.1


def gap_table(table: pd.DataFrame) -> pd.DataFrame:
    """The ladder per target group, configurations in ladder order.

    Columns: ``best_baseline_over_soc`` and ``relu_over_soc``, the geometric mean over (dim,
    target) cases of the best baseline's (the ReLU-ICNN's) mean relative L2 error over
    SOC-ICNN's (the gap; > 1: SOC-ICNN ahead); ``gap_closed``, the share of the first
    configuration's best-baseline gap that this configuration's change closes,
    ``(log r_prev - log r) / log r_first`` (defined only where ``r_first >= GAP_MIN_RATIO``, a
    gap worth closing); ``soc_over_constant`` and ``relu_over_constant``, the geometric-mean ratio
    of their relative L2 errors to the constant predictor's (>= 1: no better than the mean); and
    ``baselines_worse_than_constant``, the share of baseline runs whose test MSE is not below the
    constant predictor's.
    """
    adv = advantage_table(table)
    const = table.groupby(["config", "dim", "target"], sort=False)["const_rel_l2"].first()
    adv["const"] = [const.loc[(c, d, t)] for c, d, t in zip(adv["config"], adv["dim"], adv["target"], strict=True)]
    base = table[table["family"] != "soc"]
    worse = (base["test_mse"] >= base["const_mse"]).groupby([base["config"], base["group"]]).mean()
    rows = []
    for group in sorted(table["group"].unique(), key=GROUPS.index):
        first = prev = None
        for config in table["config"].unique():
            cur = adv[(adv["group"] == group) & (adv["config"] == config)]
            if cur.empty:
                continue
            r = _geomean(cur["best_baseline"] / cur["soc"])
            first = r if first is None else first
            closed = np.nan
            if prev is not None and first >= GAP_MIN_RATIO:
                closed = (math.log(prev) - math.log(r)) / math.log(first)
            rows.append(dict(
                group=group, config=config, cases=len(cur), best_baseline_over_soc=r,
                relu_over_soc=_geomean(cur["relu"] / cur["soc"]), gap_closed=closed,
                soc_over_constant=_geomean(cur["soc"] / cur["const"]),
                relu_over_constant=_geomean(cur["relu"] / cur["const"]),
                baselines_worse_than_constant=float(worse.get((config, group), np.nan)),
            ))
            prev = r
    return pd.DataFrame(rows)


def verdict(table: pd.DataFrame, ladder: bool = True) -> list[str]:
    """Sentences computed from ``table``: SOC-ICNN's rank per configuration, the constant-
    predictor floor, the results still improving at the end of their budget (the late-improvement
    flag: a result it flags has not converged; one it passes may still improve with more steps,
    which only a longer run shows, :func:`doubling_table`) and, with ``ladder``, how the gap to
    the baselines moves along the ladder (the first configuration is the reference)."""
    adv = advantage_table(table)
    unit = "seed-averaged results" if "rel_l2_sd" in table.columns else "runs"  # as_runs() tables hold means
    lines = []
    for config, sub in adv.groupby("config", sort=False):
        runs = table[table["config"] == config]
        base = runs[runs["family"] != "soc"]
        worse = base["test_mse"] >= base["const_mse"]
        lines.append(
            f"'{config}': SOC-ICNN has the lowest mean relative L2 error in {int(sub['soc_first'].sum())} of "
            f"{len(sub)} (dimension, target) cases; the best baseline's error is {_geomean(sub['ratio']):.3g}x "
            f"SOC-ICNN's (geometric mean; range {sub['ratio'].min():.3g}x to {sub['ratio'].max():.3g}x); "
            f"{int(worse.sum())} of {len(base)} baseline {unit} are no better than the constant predictor; "
            f"{int((~runs['converged']).sum())} of {len(runs)} {unit} were still improving by at least "
            f"{CONVERGED_TOL:.0%} in their last 20% of steps (not converged)."
        )
    gaps = gap_table(table)
    configs = list(table["config"].unique())
    if ladder and len(configs) > 1:
        first, last = configs[0], configs[-1]
        for group, sub in gaps.groupby("group", sort=False):
            sub = sub.set_index("config")
            if first not in sub.index or last not in sub.index:
                continue
            r0, r1 = sub.loc[first, "best_baseline_over_soc"], sub.loc[last, "best_baseline_over_soc"]
            cases = int(sub.loc[first, "cases"])
            closing = sub["gap_closed"].dropna()
            if r0 < GAP_MIN_RATIO:
                how = f"SOC-ICNN is not ahead by {GAP_MIN_RATIO:g}x in '{first}', so there is no gap to close"
            else:
                how = (f"the change that closes most of the gap is '{closing.idxmax()}' ({closing.max():.0%} of it)"
                       if closing.max() > 0 else "no change closes any of the gap")
            lines.append(
                f"{group} targets ({cases} case{'' if cases == 1 else 's'}): "
                f"the best baseline's error is {r0:.3g}x "
                f"SOC-ICNN's in '{first}' and {r1:.3g}x in '{last}'; {how}."
            )
    return lines


def long_budget_rows(summary: pd.DataFrame, doubled_summary: pd.DataFrame | None = None) -> pd.DataFrame:
    """The rows of the paper ladder's long-budget configurations from a stored ladder
    (:func:`summarize` table) and, if given, its doubled-budget run: the fair comparison at ``T``
    and ``2T`` steps, one ``config`` per configuration and budget."""
    long_configs = [c.name for c in ladder_for("paper") if c.budget.name == "long"]
    parts = [t for t in (summary, doubled_summary) if t is not None]
    table = pd.concat(parts, ignore_index=True)
    return table[table["config"].str.removesuffix(DOUBLED_SUFFIX).isin(long_configs)]


def doubling_comparison(summary: pd.DataFrame, doubled_summary: pd.DataFrame) -> list[str]:
    """Per doubled configuration of ``doubled_summary`` (:func:`doubled`) and target group: the gap
    (geometric mean over cases of the best baseline's error over SOC-ICNN's) and the cases SOC-ICNN
    leads, at ``T`` steps (the configuration in ``summary``) and at ``2T``, on the same (dimension,
    target) cases: those the doubled run holds."""
    runs_t, runs_2t = as_runs(summary), as_runs(doubled_summary)
    lines = []
    for name in doubled_summary["config"].unique():
        base = name.removesuffix(DOUBLED_SUFFIX)
        at_2t = advantage_table(runs_2t[runs_2t["config"] == name])
        cases = at_2t[["dim", "target"]].drop_duplicates()
        at_t = advantage_table(runs_t[runs_t["config"] == base]).merge(cases, on=["dim", "target"])
        if at_t.empty:
            continue
        dims = ", ".join(map(str, sorted(cases["dim"].unique())))
        for group in [g for g in GROUPS if g in set(at_2t["group"])]:
            a, b = at_t[at_t["group"] == group], at_2t[at_2t["group"] == group]
            lines.append(
                f"'{base}', {group} targets ({len(b)} case{'' if len(b) == 1 else 's'}, d = {dims}): the best "
                f"baseline's error is {_geomean(a['ratio']):.3g}x SOC-ICNN's at T steps and "
                f"{_geomean(b['ratio']):.3g}x at 2T; SOC-ICNN lowest in {int(a['soc_first'].sum())} and "
                f"{int(b['soc_first'].sum())} of them."
            )
    return lines


def exact_soc_model(target: str, dim: int, width: int, depth: int = 2) -> SOCICNN:
    """The benchmark SOC-ICNN architecture (library parameterisation, float64) with weights
    equal to an SOC-representable target: the backbone's output is switched off (``c = 0``,
    ``v = 0``, ``b0 = 0``), the target's block gets ``M`` with weight 1, the other block weight 0."""
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
    """Per row: the test MSE is finite and below the constant (training-mean) predictor's."""
    return np.isfinite(table["test_mse"]) & (table["test_mse"] < table["const_mse"])


def _run_job(cfg: SweepConfig, device: str) -> tuple[pd.DataFrame, float]:
    res = run_sweep(cfg, device)
    return res.table, res.wall_time[cfg.name]


def main(argv: list[str] | None = None) -> None:
    """Run the ladder at a profile and store its tables (the paper-scale run).

    ``python -m socicnn.experiments.function_approximation --profile paper [--dims 5 10 20 50]
    [--long-dims 5 10] [--configs NAME ...] [--targets NAME ...] [--double NAME ...] [--workers 2]
    [--device cpu]``. ``--configs`` may name doubled configurations too (``"long budget (2x
    steps)"``, with ``--double "long budget"``) to run only those. Jobs are one (configuration,
    dimension) each, run by ``--workers`` processes.
    Whenever a job completes, ``function_approximation_reference`` (per-seed rows of the reference
    configuration), ``function_approximation_fair`` (mean and sd over seeds of every completed job)
    and, with ``--double``, ``function_approximation_doubled`` (the named configurations again at
    twice the steps: :func:`doubled`, the convergence check of :func:`doubling_table`) are rewritten
    under ``--out`` with provenance listing the completed and pending jobs and their wall times, so
    the tables only ever hold what finished. A job that raises is listed under ``failed`` (with
    its error) while the others go on, and the command then exits non-zero.
    """
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from multiprocessing import get_context

    from ..results import output_dir, save_table

    parser = argparse.ArgumentParser(
        description="Function approximation (paper A, experiment 2): the reference run and the ladder")
    parser.add_argument("--profile", default="paper", choices=["smoke", "book", "paper"])
    parser.add_argument("--device", default="cpu", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--dims", type=int, nargs="*", default=None, help="dims of every configuration")
    parser.add_argument("--long-dims", type=int, nargs="*", default=None,
                        help="dims of the long-budget configurations (default: --dims)")
    parser.add_argument("--configs", nargs="*", default=None, help="a subset of the ladder, by name")
    parser.add_argument("--targets", nargs="*", default=None, help="a subset of the profile's targets")
    parser.add_argument("--double", nargs="*", default=(), metavar="CONFIG",
                        help="also run these configurations with twice the steps (the convergence check)")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--out", default=None,
                        help="directory for the tables (default: ./results-local or $SOCICNN_OUT; pass the "
                             "stored-results directory to replace the tables shipped with the package)")
    args = parser.parse_args(argv)
    args.out = str(output_dir()) if args.out is None else args.out
    ladder = ladder_for(args.profile)
    names = [c.name for c in ladder]
    if set(args.double) - set(names):
        parser.error(f"unknown configuration(s) {sorted(set(args.double) - set(names))} to double; choose from {names}")
    doubled_names = [n + DOUBLED_SUFFIX for n in names if n in args.double]
    if args.configs and set(args.configs) - set(names + doubled_names):
        parser.error(f"unknown configuration(s) {sorted(set(args.configs) - set(names + doubled_names))}; "
                     f"choose from {names + doubled_names}")
    grid = ladder[0].dims
    dims = tuple(args.dims or grid)
    long_dims = tuple(args.long_dims or dims)
    off_grid = sorted(set(dims + long_dims) - set(grid))
    if off_grid:
        parser.error(f"dims {off_grid} are not in the {args.profile} grid {list(grid)}")
    if args.targets:
        if set(args.targets) - set(ladder[0].targets):
            parser.error(f"targets {sorted(set(args.targets) - set(ladder[0].targets))} are not in the "
                         f"{args.profile} grid {list(ladder[0].targets)}")
        ladder = [replace(c, targets=tuple(t for t in c.targets if t in args.targets)) for c in ladder]
    twice = [doubled(c) for c in ladder if c.name in args.double]
    jobs = [replace(c, dims=(d,)) for c in [*ladder, *twice] if not args.configs or c.name in args.configs
            for d in (long_dims if c.budget.name == "long" else dims)]
    names += [c.name for c in twice]
    # cheapest first, so that an interrupted run has stored the most: the short configurations
    # (reference first), then the long ones by dim (each with its doubled run), those of the library
    # parameterisation (autograd, the slowest) last
    jobs.sort(key=lambda c: (c.budget.name == "long", c.parameterisation == "library",
                             c.dims[0] if c.budget.name == "long" else 0, c.name.endswith(DOUBLED_SUFFIX),
                             names.index(c.name)))
    done: dict[tuple[str, int], tuple[pd.DataFrame, float]] = {}
    failed: list[dict] = []
    order = {(c.name, c.dims[0]): i for i, c in enumerate(sorted(jobs, key=lambda c: (names.index(c.name), c.dims)))}
    t0 = time.perf_counter()
    with ProcessPoolExecutor(args.workers, mp_context=get_context("spawn")) as pool:
        futures = {pool.submit(_run_job, cfg, args.device): cfg for cfg in jobs}
        for fut in as_completed(futures):
            cfg = futures[fut]
            try:
                table, wall = fut.result()
            except Exception as exc:  # one failed job is reported and the others go on
                failed.append(dict(config=cfg.name, dim=cfg.dims[0], error=f"{type(exc).__name__}: {exc}"))
                print(f"[{time.perf_counter() - t0:7.0f} s] {cfg.name} d={cfg.dims[0]} FAILED: {failed[-1]['error']}",
                      flush=True)
                continue
            done[(cfg.name, cfg.dims[0])] = (table, wall)
            print(f"[{time.perf_counter() - t0:7.0f} s] {cfg.name} d={cfg.dims[0]}: {wall:.0f} s", flush=True)
            keys = sorted(done, key=order.get)
            prov = dict(
                jobs=[dict(config=k[0], dim=k[1], wall_time_s=round(done[k][1], 1)) for k in keys],
                configs={c.name: config_dict(replace(c, dims=tuple(sorted(d for n, d in keys if n == c.name))))
                         for c in [*ladder, *twice] if any(n == c.name for n, _ in keys)},
                pending=[dict(config=c.name, dim=c.dims[0]) for c in jobs if (c.name, c.dims[0]) not in done
                         and not any(f["config"] == c.name and f["dim"] == c.dims[0] for f in failed)],
                failed=list(failed),
                trainer="socicnn.batched.fit_batched", workers=args.workers,
            )
            full = pd.concat([done[k][0] for k in keys], ignore_index=True)
            ref = full[full["config"] == "reference"]
            twice_rows = full["config"].str.endswith(DOUBLED_SUFFIX)
            if len(ref):
                save_table(ref, f"{args.out}/function_approximation_reference.csv", profile=args.profile,
                           device=args.device, **prov)
            if (~twice_rows).any():
                save_table(summarize(full[~twice_rows]), f"{args.out}/function_approximation_fair.csv",
                           profile=args.profile, device=args.device, **prov)
            if twice_rows.any():
                save_table(summarize(full[twice_rows]), f"{args.out}/function_approximation_doubled.csv",
                           profile=args.profile, device=args.device, **prov)
    if failed:
        raise SystemExit(f"{len(failed)} of {len(jobs)} jobs failed: "
                         + "; ".join(f"{f['config']} d={f['dim']}: {f['error']}" for f in failed))


if __name__ == "__main__":
    main()
