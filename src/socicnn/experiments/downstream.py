"""Downstream decisions (paper A, experiment 3): learn ``f(x, theta)``, decide, score on the true objective.

For each task of :mod:`.decision_tasks`, decision dimension ``d`` and seed: train every model of
the comparison on the training candidates (``theta`` and ``y`` standardised with training
statistics; standardising ``y`` by a positive scale does not move a minimiser), then decide on
**every** test instance

- exactly (:func:`socicnn.decisions.decide` with ``"socp"``: the lifted model plus the set, one
  compiled conic problem; an instance whose solve misses the 1e-6 certificate is decided again by
  the certified fast method, :func:`exact_decisions`) and with the certified fast method
  (``"auto"``) on the first
  ``fast_instances`` of the reference-protocol subset (it is slower than the conic solver at
  these sizes, see ``benchmarks/bench_decisions.py``);
- with the reference's protocol (projected Adam on the model, 5 restarts from points uniform on
  the set, 200 steps, learning rate 2e-3, best iterate kept, no optimality check) on a subset of
  20 test instances,

and score each decision ``x_hat`` on the true objective: regret ``f(theta, x_hat) - f*``, relative
regret ``regret / |f*|``, ``||x_hat - x*||``, set violation, decision time; plus the fit quality
(test relative L2 error on the test candidates, raw scale) and the certified surrogate gap.

Models (all convex in ``x`` for every ``theta``): the five families in the reference's ``"bias"``
context mode (SOC-ICNN at backbone depth 2; every other family at the smallest depth whose
count reaches the SOC-ICNN's at the SOC width, then at the narrowest width at that depth that
still reaches it), the SOC-ICNN in ``"picnn"`` mode (a context
trunk of width ``p`` and the widest backbone whose count does not exceed the bias SOC-ICNN's; no
trunk if none fits), and ``pcf``, the reference's parametric
quadratic-plus-norms model written as a :class:`~socicnn.parametric.ParametricSOCICNN`; and the
external baseline ``lpcf`` (:mod:`.lpcf_baseline`, the optional extra), trained by its own JAX
code on the same training instances, at the narrowest width whose parameter count reaches the
SOC-ICNN's, and decided exactly through its own CVXPY export (no fast or Adam protocol).
"""

from __future__ import annotations

import argparse
import time
from dataclasses import asdict, dataclass, replace

import numpy as np
import pandas as pd
import torch
from torch import nn

from .. import decisions
from ..families import LABELS as family_labels
from ..parametric import ParametricSOCICNN
from ..profiles import pick
from ..results import mean_sd
from ..train import fit
from . import decision_tasks as dt
from . import lpcf_baseline as lb

__all__ = [
    "FAMILIES",
    "MODELS",
    "LABELS",
    "DownstreamConfig",
    "adam_decisions",
    "build_models",
    "config_for",
    "lpcf_comparison",
    "model_cases",
    "run",
    "seed_counts",
    "summarize",
    "summarize_per_seed",
    "verdict",
]

FAMILIES = ("relu", "softplus", "quad", "norm", "soc", "soc_picnn", "pcf")  # ParametricSOCICNN models
MODELS = (*FAMILIES, "lpcf")
LABELS = {**family_labels, "soc_picnn": "SOC-ICNN (picnn)", "pcf": "pcf", "lpcf": "lpcf"}
F64 = torch.float64
LPCF_DEPTH = 2  # hidden layers of lpcf's main network (its default); its parameter network has one
LPCF_BOOK = (100, 300)  # lpcf's Adam and L-BFGS-B iterations at the book profile (minutes on 2 CPU cores)


@dataclass(frozen=True)
class DownstreamConfig:
    """Sizes of one run of the downstream-decisions experiment."""

    profile: str
    dims: tuple[int, ...]
    tasks: tuple[str, ...]
    seeds: tuple[int, ...]
    n_train: int
    n_train_candidates: int
    n_test: int
    n_test_candidates: int
    width: dict
    steps: int
    batch_size: int = 1024
    lr: float = 2e-3
    weight_decay: float = 1e-6
    patience: int | None = 5
    models: tuple[str, ...] = MODELS
    adam_instances: int = 20
    adam_restarts: int = 5
    adam_steps: int = 200
    adam_lr: float = 2e-3
    fast_instances: int = 20
    fast_models: tuple[str, ...] = FAMILIES
    lpcf_adam_epochs: int = 200
    lpcf_lbfgs_epochs: int = 2000

    def describe(self) -> str:
        return (
            f"{self.profile}: d in {list(self.dims)}, tasks {list(self.tasks)}, seeds {list(self.seeds)}, "
            f"{self.n_train} x {self.n_train_candidates} training / {self.n_test} x {self.n_test_candidates} test "
            f"(instances x candidates), widths {self.width}, at most {self.steps} Adam steps (batch "
            f"{self.batch_size}, lr {self.lr}, patience {self.patience} epochs); reference protocol on "
            f"{min(self.adam_instances, self.n_test)} instances, the certified fast method on "
            f"{min(self.fast_instances, self.adam_instances, self.n_test)} of them"
            + ("" if set(self.models) & set(FAMILIES) <= set(self.fast_models)
               else f" for {', '.join(LABELS[k] for k in self.fast_models)}")
            + (f"; lpcf trained by {self.lpcf_adam_epochs} full-batch Adam and at most {self.lpcf_lbfgs_epochs} "
               "L-BFGS-B iterations" if "lpcf" in self.models else "")
        )


def config_for(profile: str) -> DownstreamConfig:
    """The sizes of each profile (``paper``: the reference's grid and training budget)."""
    return pick(
        profile,
        smoke=DownstreamConfig(
            "smoke", (5,), ("budget_huber",), (2024, 2025), 40, 16, 6, 16, {5: 8}, steps=20,
            batch_size=256, patience=None, adam_instances=3, adam_restarts=2, adam_steps=10, fast_instances=1,
            fast_models=("soc", "soc_picnn"), lpcf_adam_epochs=0, lpcf_lbfgs_epochs=30,
        ),
        book=DownstreamConfig(
            "book", (10,), ("budget_twocone_socp",), (2024, 2025, 2026), 200, 64, 40, 128,
            {10: 24}, steps=300, batch_size=512, patience=5, fast_instances=1, fast_models=("soc", "soc_picnn"),
            lpcf_adam_epochs=LPCF_BOOK[0], lpcf_lbfgs_epochs=LPCF_BOOK[1],
        ),
        paper=DownstreamConfig(
            "paper", (10, 20, 50), tuple(dt.TASKS), (2024, 2025, 2026), 1000, 64, 200, 128,
            {10: 128, 20: 128, 50: 256}, steps=120 * 57, patience=5,
        ),
    )


# ----------------------------------------------------------------- models
def _blocks(family: str, d: int) -> tuple[tuple[int, ...], tuple[int, ...], str]:
    quad = (d,) if family in ("quad", "soc") else ()
    norm = (d, d) if family in ("norm", "soc") else ()
    return quad, norm, "softplus" if family == "softplus" else "relu"


def _family_model(family: str, d: int, p: int, width: int, depth: int, seed: int, **kw) -> ParametricSOCICNN:
    quad, norm, act = _blocks(family, d)
    return ParametricSOCICNN(d, p, (width,) * depth, quad, norm, activation=act, seed=seed, **kw)


def pcf_model(d: int, p: int, seed: int, norm_atoms: int = 2, atom_dim: int = 8, **kw) -> ParametricSOCICNN:
    """The reference's ``pcf`` baseline in the library's terms: ``c(theta)^T x + b(theta) + (1/2)
    sum_i q_i(theta) (x_i - m_i(theta))^2 + sum_j lam_j(theta) ||A_j x + t_j(theta)||`` with
    ``q, lam >= 0``: ``d`` rank-one quadratic blocks whose rows are the fixed unit vectors (curvature
    ``alpha_i(theta)``, offset ``-m_i(theta)``), ``norm_atoms`` norm blocks of ``atom_dim`` rows, the
    linear term from a one-unit backbone, everything affine in ``theta`` (``"picnn"`` mode, no trunk)."""
    model = ParametricSOCICNN(
        d, p, (1,), (1,) * d, (atom_dim,) * norm_atoms, context="picnn", context_hidden=0, seed=seed, **kw
    )
    with torch.no_grad():
        for i, blk in enumerate(model.base.quad_blocks):
            blk.B.zero_()
            blk.B[0, i] = 1.0
            blk.B.requires_grad_(False)
    return model


def _picnn_within(d: int, p: int, width: int, depth: int, seed: int, budget: int, **kw) -> ParametricSOCICNN:
    """The picnn SOC-ICNN with the most parameters not above ``budget``: a context trunk of width
    ``p`` and the widest backbone (at most ``width``) that fits, else no trunk; width 1 without a
    trunk when nothing fits."""
    for trunk in (p, 0):
        for w in range(width, 0, -1):
            m = _family_model("soc", d, p, w, depth, seed, context="picnn", context_hidden=trunk, **kw)
            if m.num_parameters() <= budget:
                return m
    return m


def build_models(d: int, p: int, width: int, seed: int, models=FAMILIES, soc_depth: int = 2, **kw) -> dict:
    """Parameter-matched models (see the module docstring), freshly initialised from ``seed`` (the
    :data:`FAMILIES` among ``models``; ``lpcf`` is trained by its own code in :func:`run_case`)."""
    soc = _family_model("soc", d, p, width, soc_depth, seed, **kw)
    budget = soc.num_parameters()
    out: dict[str, ParametricSOCICNN] = {}
    for key in (k for k in models if k in FAMILIES):
        if key == "soc":
            out[key] = soc
        elif key == "pcf":
            out[key] = pcf_model(d, p, seed, **kw)
        elif key == "soc_picnn":
            out[key] = _picnn_within(d, p, width, soc_depth, seed, budget, **kw)
        else:
            depth = 1
            while _family_model(key, d, p, width, depth, seed, **kw).num_parameters() < budget:
                depth += 1
            lo, hi = 1, width  # the narrowest width at that depth still reaching the budget
            while lo < hi:
                mid = (lo + hi) // 2
                if _family_model(key, d, p, mid, depth, seed, **kw).num_parameters() >= budget:
                    hi = mid
                else:
                    lo = mid + 1
            out[key] = _family_model(key, d, p, lo, depth, seed, **kw)
    return out


def parameter_table(models: dict, lpcf: bool = False) -> pd.DataFrame:
    """Per model: hidden widths, blocks, context mode and trainable parameters (ratio to SOC-ICNN);
    with ``lpcf``, also the row of the ``lpcf`` PCF matched to the SOC-ICNN (``hidden``: its main
    network's widths; ``context``: its parameter network's)."""
    soc = models["soc"].num_parameters() if "soc" in models else np.nan
    rows = [
        dict(model=LABELS[k], hidden=m.base.hidden, quad_blocks=len(m.base.quad_dims),
             norm_blocks=len(m.base.norm_dims), context=m.context, params=m.num_parameters(),
             ratio_to_soc=m.num_parameters() / soc)
        for k, m in models.items()
    ]
    if lpcf:
        if "soc" not in models:
            raise ValueError("lpcf is matched to the SOC-ICNN's parameter count: include 'soc' in the models")
        d, p = models["soc"].in_dim, models["soc"].context_dim
        widths, widths_psi = lb.matched_shape(d, p, soc, LPCF_DEPTH)
        count = lb.parameter_count(d, p, widths, widths_psi)
        rows.append(dict(model=LABELS["lpcf"], hidden=widths, quad_blocks=0, norm_blocks=0,
                         context=f"psi {widths_psi}", params=count, ratio_to_soc=count / soc))
    return pd.DataFrame(rows)


class _Joint(nn.Module):
    """``(N, d + p) -> (N,)``: a contextual model as a regression model of ``[x, theta]``."""

    def __init__(self, model: ParametricSOCICNN) -> None:
        super().__init__()
        self.model = model

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        d = self.model.in_dim
        return self.model(z[:, :d], z[:, d:])


# ----------------------------------------------------------------- the reference's decision protocol
def adam_decisions(model, theta: torch.Tensor, constraint, starts: torch.Tensor, steps: int, lr: float) -> torch.Tensor:
    """Projected Adam on ``model(., theta_i)`` from ``starts`` ``(N, R, d)``, the best iterate (by
    model value) over restarts and steps kept; batched over instances and restarts."""
    n, r, d = starts.shape
    th = theta.repeat_interleave(r, dim=0)
    x = starts.reshape(n * r, d).clone().requires_grad_(True)
    opt = torch.optim.Adam([x], lr=lr)
    best_val = torch.full((n,), float("inf"), dtype=starts.dtype)
    best_x = starts[:, 0].clone()
    for _ in range(steps):
        opt.zero_grad()
        model(x, th).sum().backward()
        opt.step()
        with torch.no_grad():
            x.copy_(constraint.project(x))
            val = model(x, th).reshape(n, r)
            v, j = val.min(dim=1)
            better = v < best_val
            best_val = torch.where(better, v, best_val)
            best_x[better] = x.reshape(n, r, d)[better, j[better]]
    return best_x.detach()


# ----------------------------------------------------------------- one (task, d, seed)
def _scores(task, constraint, x_hat: torch.Tensor, theta_raw: np.ndarray, x_star, f_star) -> dict:
    f_hat = task.objective(x_hat, theta_raw).numpy()
    regret = f_hat - f_star
    return dict(
        regret=regret,
        rel_regret=regret / (np.abs(f_star) + 1e-8),
        x_err=np.linalg.norm(x_hat.numpy() - x_star, axis=1),
        violation=decisions.violation(constraint, x_hat).numpy(),
    )


def _protocol_rows(base: dict, protocols: list, task, C, test, surrogate) -> list[dict]:
    """One row per (protocol, instance): ``protocols`` of ``(name, x_hat, times, gaps, idx)``,
    scored on the true objective; ``surrogate(x_hat, idx)`` the model's values."""
    rows = []
    for name, x_hat, times, gaps, idx in protocols:
        sc = _scores(task, C, x_hat, test.theta[idx], test.x_star[idx], test.f_star[idx])
        values = surrogate(x_hat, idx)
        for j, i in enumerate(idx):
            rows.append(dict(base, protocol=name, instance=int(i), f_star=float(test.f_star[i]),
                             regret=sc["regret"][j], rel_regret=sc["rel_regret"][j], x_err=sc["x_err"][j],
                             violation=sc["violation"][j], time=float(times[j]),
                             surrogate=float(values[j]), surrogate_gap=float(gaps[j])))
    return rows


def exact_decisions(
    model, theta: torch.Tensor, C, label: str, **solver_options
) -> tuple[decisions.DecisionResult, int]:
    """Every instance decided by the exact lifting (the conic solver), certified to 1e-6; where a
    solve misses that certificate (Clarabel ends some exponential-cone solves of the softplus
    family as ``optimal_inaccurate`` a few 1e-6 short), the instance is decided again by the
    certified fast method (its time added to the solve's). Returns the decisions and how many the
    fast method took over; raises if an instance is left uncertified."""
    exact = decisions.decide(model, theta, C, method="socp", **solver_options)
    bad = (~exact.converged).nonzero().squeeze(1)
    taken = bad[:0]
    if bad.numel():
        redo = decisions.decide(model, theta[bad], C, method="auto")
        taken, ok = bad[redo.converged], redo.converged
        x, value, gap, conv, times = (t.clone() for t in (exact.x, exact.value, exact.gap_bound, exact.converged,
                                                          exact.time))  # fmt: skip
        x[taken], value[taken], gap[taken], conv[taken] = redo.x[ok], redo.value[ok], redo.gap_bound[ok], True
        times[taken] += redo.time[ok].to(times.dtype)
        status = list(exact.status)
        for i in taken.tolist():
            status[i] = f"{status[i]}; certified by the fast method"
        infeas = exact.infeasibility.clone()
        infeas[taken] = decisions.violation(C, redo.x[ok]).to(infeas.dtype)
        exact = replace(exact, x=x, value=value, gap_bound=gap, converged=conv, time=times, status=status,
                        infeasibility=infeas)  # fmt: skip
    _check_exact(exact, label)
    return exact, int(taken.numel())


def _check_exact(exact, label: str) -> None:
    if not bool(exact.converged.all()):
        bad = [(s, float(g)) for s, g, ok in zip(exact.status, exact.gap_bound, exact.converged, strict=True) if not ok]
        raise RuntimeError(f"{label}: {len(bad)} exact decisions not certified (status, gap): {bad[:3]}")


def run_case(cfg: DownstreamConfig, task_name: str, d: int, seed: int, progress=None) -> tuple[pd.DataFrame, dict]:
    """Train the models of ``cfg.models`` on one (task, d, seed) and score their decisions; one row
    per (model, instance, protocol) and the case's parameter table (with the SOC-ICNN, which sets
    the budgets) and checks."""
    task = dt.make_task(task_name, d)
    C = task.constraint()
    train = dt.make_split(task, "train", cfg.n_train, cfg.n_train_candidates)
    test = dt.make_split(task, "test", cfg.n_test, cfg.n_test_candidates)
    # 10 % of the training *instances* held out for validation (a different split per seed).
    rng = np.random.default_rng(seed)
    order = rng.permutation(cfg.n_train)
    n_val = max(1, cfg.n_train // 10)
    val_idx, tr_idx = order[:n_val], order[n_val:]
    x_tr, th_tr, y_tr = dt.Split(train.theta[tr_idx], train.cand_x[tr_idx], train.cand_y[tr_idx]).flat()
    x_va, th_va, y_va = dt.Split(train.theta[val_idx], train.cand_x[val_idx], train.cand_y[val_idx]).flat()
    th_mu, th_sd = th_tr.mean(0), th_tr.std(0) + 1e-8
    y_mu, y_sd = y_tr.mean(), y_tr.std() + 1e-8

    def joint(x, th):
        return torch.as_tensor(np.concatenate([x, (th - th_mu) / th_sd], axis=1), dtype=torch.float32)

    Z_tr, Z_va = joint(x_tr, th_tr), joint(x_va, th_va)
    t_tr = torch.as_tensor((y_tr - y_mu) / y_sd, dtype=torch.float32)
    t_va = torch.as_tensor((y_va - y_mu) / y_sd, dtype=torch.float32)
    x_te, th_te, y_te = test.flat()
    theta_std = torch.as_tensor((test.theta - th_mu) / th_sd, dtype=F64)
    adam_n = min(cfg.adam_instances, cfg.n_test)
    adam_idx = np.sort(rng.choice(cfg.n_test, size=adam_n, replace=False))
    starts = torch.as_tensor(
        np.stack([task.sample_candidates(rng, cfg.adam_restarts) for _ in range(adam_n)]), dtype=F64
    )
    steps_per_epoch = -(-len(t_tr) // cfg.batch_size)
    if "lpcf" in cfg.models:
        lb.require()  # the install hint before any training
    # The SOC-ICNN sets every parameter budget, so it is built even when it is not trained here.
    built = build_models(d, dt.CONTEXT_DIM, cfg.width[d], seed, (*cfg.models, "soc"), dtype=torch.float32)
    params = parameter_table(built, lpcf="lpcf" in cfg.models)
    models = {k: m for k, m in built.items() if k in cfg.models}
    rows, checks = [], _no_checks()

    def report(key, rel_l2):
        if progress is not None:
            regret = np.mean([r["regret"] for r in rows if r["key"] == key and r["protocol"] == "exact"])
            progress(f"{task_name} d={d} seed={seed} {LABELS[key]}: rel L2 {rel_l2:.3g}, mean regret {regret:.3g}")

    for key, model in models.items():
        torch.manual_seed(seed)
        res = fit(
            _Joint(model), Z_tr, t_tr, Z_va, t_va, steps=cfg.steps, batch_size=cfg.batch_size, lr=cfg.lr,
            weight_decay=cfg.weight_decay, patience=cfg.patience, eval_every=steps_per_epoch, device="cpu",
            seed=seed, progress=False,
        )
        model = res.model.model.to(F64)
        with torch.no_grad():
            pred = model(torch.as_tensor(x_te, dtype=F64), torch.as_tensor((th_te - th_mu) / th_sd, dtype=F64))
            pred = pred.numpy() * y_sd + y_mu
            # pm.at(theta) is the model of x: equal to pm(., theta) on the decisions' contexts.
            xs = torch.as_tensor(test.cand_x[:, 0], dtype=F64)
            gap = (model.at(theta_std)(xs) - model(xs, theta_std)).abs().max()
            checks["at_equals_forward"] = max(checks["at_equals_forward"], float(gap))
        rel_l2 = float(np.linalg.norm(y_te - pred) / np.linalg.norm(y_te))
        base = dict(task=task_name, dim=d, seed=seed, model=LABELS[key], key=key, params=model.num_parameters(),
                    rel_l2=rel_l2, train_time=res.train_time, best_step=res.best_step, steps=res.steps)
        exact, by_fast = exact_decisions(model, theta_std, C, f"{task_name} d={d} {key}")
        checks["exact_by_fast"] += by_fast
        protocols = [("exact", exact.x, exact.time.numpy(), exact.gap_bound.numpy(), np.arange(cfg.n_test))]
        if key in cfg.fast_models:
            fast_idx = adam_idx[: cfg.fast_instances]
            fast = decisions.decide(model, theta_std[fast_idx], C, method="auto")
            checks["fast_uncertified"] += int((~fast.converged).sum())
            ok = fast.converged
            if bool(ok.any()):
                ref = exact.value[fast_idx][ok]
                rel = ((fast.value[ok] - ref).abs() / ref.abs().clamp(min=1.0)).max()
                checks["auto_socp_rel"] = max(float(rel), checks["auto_socp_rel"])
            protocols.append(("fast", fast.x, fast.time.numpy(), fast.gap_bound.numpy(), fast_idx))
        t0 = time.perf_counter()
        x_adam = adam_decisions(model, theta_std[adam_idx], C, starts, cfg.adam_steps, cfg.adam_lr)
        t_adam = (time.perf_counter() - t0) / adam_n
        with torch.no_grad():
            surrogate_excess = (model(x_adam, theta_std[adam_idx]) - exact.value[adam_idx]).numpy()
        protocols.append(("adam", x_adam, np.full(adam_n, t_adam), surrogate_excess, adam_idx))

        def surrogate(x_hat, idx, model=model):
            with torch.no_grad():
                return model(x_hat, theta_std[idx]).numpy()

        rows += _protocol_rows(base, protocols, task, C, test, surrogate)
        report(key, rel_l2)
    if "lpcf" in cfg.models:
        rows += _lpcf_rows(cfg, task, C, test, seed, (x_tr, th_tr, y_tr), (th_mu, th_sd, y_mu, y_sd),
                           built["soc"].num_parameters(), checks)
        report("lpcf", rows[-1]["rel_l2"])
    params.insert(0, "dim", d)
    params.insert(0, "task", task_name)
    return pd.DataFrame(rows), {"params": params, **checks}


def _lpcf_rows(cfg, task, C, test, seed, train, stats, budget: int, checks: dict) -> list[dict]:
    """Fit ``lpcf`` on the training instances ``train`` = ``(x, theta, y)`` (raw), standardised by
    ``stats`` = ``(theta_mu, theta_sd, y_mu, y_sd)`` as the other models, at the narrowest width
    reaching ``budget`` parameters; decide every test instance through its CVXPY export (each
    certified, else an error); record the largest relative disagreement of the export and the
    forward function in ``checks["lpcf_export"]``; return the scored rows."""
    th_mu, th_sd, y_mu, y_sd = stats
    label = f"{task.name} d={task.dim} lpcf"
    widths, widths_psi = lb.matched_shape(task.dim, dt.CONTEXT_DIM, budget, LPCF_DEPTH)
    x, th, y = train
    model = lb.fit_lpcf(x, (th - th_mu) / th_sd, (y - y_mu) / y_sd, widths, widths_psi, seed,
                        cfg.lpcf_adam_epochs, cfg.lpcf_lbfgs_epochs)
    count = lb.parameter_count(task.dim, dt.CONTEXT_DIM, widths, widths_psi)
    if model.num_parameters() != count:
        raise RuntimeError(f"{label}: {model.num_parameters()} parameters, the count formula says {count}")
    x_te, th_te, y_te = test.flat()
    pred = model(x_te, (th_te - th_mu) / th_sd) * y_sd + y_mu
    theta_std = (test.theta - th_mu) / th_sd
    exact, export_gap = lb.decide_lpcf(model, theta_std, C)
    _check_exact(exact, label)
    rel = export_gap / np.maximum(1.0, exact.value.abs().numpy())
    checks["lpcf_export"] = max(checks["lpcf_export"], float(rel.max()))
    base = dict(task=task.name, dim=task.dim, seed=seed, model=LABELS["lpcf"], key="lpcf", params=count,
                rel_l2=float(np.linalg.norm(y_te - pred) / np.linalg.norm(y_te)), train_time=model.train_time,
                best_step=np.nan, steps=cfg.lpcf_adam_epochs + cfg.lpcf_lbfgs_epochs)
    protocols = [("exact", exact.x, exact.time.numpy(), exact.gap_bound.numpy(), np.arange(cfg.n_test))]
    return _protocol_rows(base, protocols, task, C, test, lambda x_hat, idx: model(x_hat.numpy(), theta_std[idx]))


def run(cfg: DownstreamConfig, progress=print) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """Every (task, d, seed) of ``cfg``: the per-instance table, the parameter table (per task and
    d, from the first seed) and the checks over all cases: the largest ``|pm.at(theta)(x) - pm(x,
    theta)|``, the largest relative difference of certified fast and exact decision values, and the
    number of fast decisions left uncertified (``minimize`` stopped at its iteration cap)."""
    tables, params, checks = [], [], _no_checks()
    for task, d, seed in cases(cfg):
        table, info = run_case(cfg, task, d, seed, progress)
        tables.append(table)
        if seed == cfg.seeds[0]:
            params.append(info["params"])
        _merge_checks(checks, info)
    return pd.concat(tables, ignore_index=True), pd.concat(params, ignore_index=True), checks


def cases(cfg: DownstreamConfig) -> list[tuple[str, int, int]]:
    """The ``(task, d, seed)`` cases of ``cfg``, smallest ``d`` first (an interrupted run has
    whole dimensions done)."""
    return [(task, d, seed) for d in cfg.dims for task in cfg.tasks for seed in cfg.seeds]


def model_cases(cfg: DownstreamConfig) -> list[tuple[str, int, int, str]]:
    """The ``(task, d, seed, model)`` cases of the case-by-case runner (:func:`main`): every model
    but ``lpcf`` over the whole grid first (smallest ``d`` first, the models of one ``(task, d,
    seed)`` together), then ``lpcf``, whose own training costs many times the other seven models'
    together, over the grid in the same order. A model's rows do not depend on which other models
    run in the same call of :func:`run_case`, so a table stored model by model is the table of one
    run of every model."""
    grid = cases(cfg)
    first = [(*case, key) for case in grid for key in cfg.models if key != "lpcf"]
    return first + [(*case, "lpcf") for case in grid if "lpcf" in cfg.models]


def _no_checks() -> dict:
    return {"at_equals_forward": 0.0, "auto_socp_rel": 0.0, "fast_uncertified": 0, "lpcf_export": 0.0,
            "exact_by_fast": 0}  # fmt: skip


def _merge_checks(checks: dict, info: dict) -> None:
    """Fold one case's (or one stored part's) checks into ``checks``; a key a part saved before it
    existed counts as 0."""
    for name in ("at_equals_forward", "auto_socp_rel", "lpcf_export"):
        checks[name] = max(checks.get(name, 0.0), float(info.get(name, 0.0)))
    for name in ("fast_uncertified", "exact_by_fast"):
        checks[name] = checks.get(name, 0) + int(info.get(name, 0))


# ----------------------------------------------------------------- summaries
def per_seed(table: pd.DataFrame) -> pd.DataFrame:
    """Per (task, d, model, protocol, seed): metrics over the instances decided."""
    keys = ["task", "dim", "model", "key", "protocol", "seed"]
    return table.groupby(keys, sort=False).agg(
        instances=("instance", "nunique"), params=("params", "first"), rel_l2=("rel_l2", "first"),
        regret_mean=("regret", "mean"), regret_median=("regret", "median"), regret_max=("regret", "max"),
        rel_regret_mean=("rel_regret", "mean"), rel_regret_median=("rel_regret", "median"),
        rel_regret_max=("rel_regret", "max"), x_err=("x_err", "mean"), violation_max=("violation", "max"),
        time=("time", "mean"), surrogate_gap_max=("surrogate_gap", "max"), train_time=("train_time", "first"),
    ).reset_index()


def summarize(table: pd.DataFrame) -> pd.DataFrame:
    """Mean and sd (ddof 1) over seeds of :func:`per_seed`, one row per (task, d, model, protocol)."""
    return summarize_per_seed(per_seed(table))


def summarize_per_seed(ps: pd.DataFrame) -> pd.DataFrame:
    """:func:`summarize` from a :func:`per_seed` table (e.g. a stored one)."""
    keys = ["task", "dim", "model", "key", "protocol"]
    metrics = [c for c in ps.columns if c not in (*keys, "seed", "instances", "params")]
    g = ps.groupby(keys, sort=False)
    out = g.agg(seeds=("seed", "nunique"), instances=("instances", "first"), params=("params", "first"))
    for m in metrics:
        out[f"{m}_mean"] = g[m].mean()
        out[f"{m}_sd"] = g[m].std()
    return out.reset_index()


def cells(summary: pd.DataFrame, metric: str, protocol: str = "exact") -> pd.DataFrame:
    """``metric`` as ``"mean ± sd"`` over seeds (``"mean (1 seed)"`` where a case has one seed, "—"
    where the table holds no run of the model): rows (task, d), columns the models."""
    sub = summary[summary["protocol"] == protocol].copy()
    sub["cell"] = mean_sd(sub[f"{metric}_mean"], sub[f"{metric}_sd"])
    out = sub.pivot(index=["task", "dim"], columns="model", values="cell").fillna("—")
    return out[[LABELS[k] for k in MODELS if LABELS[k] in out.columns]]


def seed_counts(summary: pd.DataFrame) -> pd.DataFrame:
    """The ``seeds`` column of a :func:`summarize` table (exact decisions) as rows (task, d),
    columns the models, 0 where a model has none (a stored run that has not finished)."""
    ex = summary[summary["protocol"] == "exact"]
    out = ex.pivot(index=["task", "dim"], columns="model", values="seeds").fillna(0).astype(int)
    return out[[LABELS[k] for k in MODELS if LABELS[k] in out.columns]]


def lpcf_comparison(summary: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """Per (task, d) of a :func:`summarize` table with ``lpcf`` rows: its parameter count, fit
    (test relative L2), mean regret and training time beside the SOC-ICNN's (bias and picnn) and
    the best other family's; and one sentence per case with the ratios and lpcf's rank. Cases
    without lpcf, the SOC-ICNN or another family (a stopped run's) are left out."""
    ex = summary[summary["protocol"] == "exact"]
    rows, lines = [], []
    for (task, d), g in ex.groupby(["task", "dim"], sort=False):
        g = g.set_index("key")
        regret = g["regret_mean_mean"]
        fam = regret.drop(index=[k for k in ("soc", "soc_picnn", "pcf", "lpcf") if k in regret.index])
        if not {"lpcf", "soc"} <= set(regret.index) or fam.empty:  # a case a stopped run holds in part
            continue
        r = dict(task=task, dim=d, lpcf_params=int(g.loc["lpcf", "params"]), soc_params=int(g.loc["soc", "params"]),
                 lpcf_rel_l2=g.loc["lpcf", "rel_l2_mean"], soc_rel_l2=g.loc["soc", "rel_l2_mean"],
                 lpcf_regret=regret["lpcf"], soc_regret=regret["soc"], picnn_regret=regret.get("soc_picnn", np.nan),
                 best_family=LABELS[fam.idxmin()], best_family_regret=fam.min(),
                 lpcf_train_s=g.loc["lpcf", "train_time_mean"], soc_train_s=g.loc["soc", "train_time_mean"])
        rows.append(r)
        rank = int((regret < regret["lpcf"]).sum()) + 1
        lines.append(
            f"{task}, d = {d}: lpcf ({r['lpcf_params']} parameters, {r['lpcf_params'] / r['soc_params']:.2f}x the "
            f"SOC-ICNN's) has mean regret {regret['lpcf']:.3g}, {regret['lpcf'] / regret['soc']:.2f}x the SOC-ICNN's, "
            f"{regret['lpcf'] / r['picnn_regret']:.2f}x the picnn SOC-ICNN's and {regret['lpcf'] / fam.min():.2f}x the "
            f"best other family's ({r['best_family']}); rank {rank} of {len(regret)} models. Its test relative L2 "
            f"error is {r['lpcf_rel_l2']:.3g} (SOC-ICNN {r['soc_rel_l2']:.3g}); a fit takes {r['lpcf_train_s']:.1f} s "
            f"(SOC-ICNN {r['soc_train_s']:.1f} s)."
        )
    return pd.DataFrame(rows), lines


def verdict(summary: pd.DataFrame, scope: str = "at this profile") -> list[str]:
    """Sentences computed from the exact decisions of a :func:`summarize` table: per (task, d) the
    model with the lowest mean regret, the SOC-ICNN's, the best of the models it is judged against
    (:data:`~socicnn.experiments.claims.DECISION_RIVALS`), the picnn variant's and pcf's; then
    paper A's claim judged by :func:`~socicnn.experiments.claims.decision_quality` (``scope`` says
    which cases the table covers) and whether the picnn mode improves on the bias mode. A case
    holding no SOC-ICNN or none of the models it is judged against (a stopped run's) is named as
    not compared."""
    from .claims import DECISION_RIVALS, decision_quality

    ex = summary[summary["protocol"] == "exact"]
    out = []
    picnn_better = picnn_cases = 0
    for (task, d), g in ex.groupby(["task", "dim"], sort=False):
        g = g.set_index("key")["regret_mean_mean"]
        best = g.idxmin()
        rivals = g[[k for k in DECISION_RIVALS if k in g.index]]
        if "soc" not in g.index or rivals.empty:  # a case a stopped run holds in part
            out.append(f"{task}, d = {d}: not compared (the table holds only {', '.join(LABELS[k] for k in g.index)}).")
            continue
        rival = rivals.idxmin()
        line = (f"{task}, d = {d}: lowest mean regret {LABELS[best]} ({g[best]:.3g}); SOC-ICNN {g['soc']:.3g}; "
                f"best other family{' or lpcf' if 'lpcf' in g.index else ''}: {LABELS[rival]} ({rivals[rival]:.3g})")
        if "soc_picnn" in g.index:
            line += "" if best == "soc_picnn" else f"; SOC-ICNN (picnn) {g['soc_picnn']:.3g}"
            picnn_better += bool(g["soc_picnn"] < g["soc"])
            picnn_cases += 1
        if "pcf" in g.index:
            line += f"; pcf {g['pcf']:.3g}"
        out.append(line + ".")
    ev = decision_quality(ex.rename(columns={"regret_mean_mean": "regret_mean"}))
    word = {"holds": "holds", "partial": "holds only in part", "fails": "does not hold",
            None: "cannot be judged"}[ev.outcome]
    out.append(f"Paper A's claim of competitive decisions (SOC-ICNN's mean regret within 1.1x of the best other "
               f"parameter-matched model's, the four other families and lpcf, in at least 2/3 of the cases) {word} "
               f"{scope}: {ev.measured}.")
    if picnn_cases:
        out.append(f"Letting the curvature and cone weights depend on the context (picnn mode, no more parameters) "
                   f"lowers the SOC-ICNN's mean regret in {picnn_better} of {picnn_cases} cases.")
    return out


def main(argv: list[str] | None = None) -> None:
    """Run a profile case by case (``python -m socicnn.experiments.downstream paper``), one case
    per ``(task, d, seed, model)`` in the order of :func:`model_cases`, saving the per-seed table of
    the cases finished so far, with provenance, after every case; ``--resume`` skips the cases an
    earlier run of the same profile saved at ``--out``. A second process can take later cases
    (``--skip N --out part.csv``), ``--limit K`` stops a process after ``K`` new cases, and
    ``--merge A.csv B.csv`` then joins the parts."""
    from ..results import add_share_arguments, output_dir, run_or_merge

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("profile", choices=("smoke", "book", "paper"))
    ap.add_argument("--out", default=None, help="CSV path (default: downstream_decisions.csv in ./results-local "
                    "or $SOCICNN_OUT; pass the stored-results path to add to the tables shipped with the package)")
    ap.add_argument("--resume", action="store_true", help="keep the cases already saved at --out")
    add_share_arguments(ap)
    args = ap.parse_args(argv)
    out = args.out or output_dir() / "downstream_decisions.csv"
    torch.set_num_threads(1)
    cfg = config_for(args.profile)
    config = {k: v for k, v in asdict(cfg).items() if k != "profile"}
    config["width"] = {str(k): v for k, v in cfg.width.items()}
    checks = _no_checks()

    def run_one(case):
        *grid_case, key = case
        table, info = run_case(replace(cfg, models=(key,)), *grid_case, progress=lambda s: print(s, flush=True))
        _merge_checks(checks, info)
        return per_seed(table), f"{case} done"

    run_or_merge(ap, args, out, model_cases(cfg), run_one, _merge_checks, profile=args.profile, device="cpu",
                 resume=args.resume, checks=checks, **config)  # fmt: skip


if __name__ == "__main__":
    main()
