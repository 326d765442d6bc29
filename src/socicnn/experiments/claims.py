"""Claims versus evidence: small live checks, readers of stored tables, and the verdict rule.

Every check returns an :class:`Evidence`: an outcome (``"holds"``, ``"partial"`` or
``"fails"``; ``None`` when there is nothing to judge) and a sentence with the measured numbers.
:func:`verdict` turns the outcomes of the live run and of the stored paper-scale table into
*reproduced*, *partly reproduced*, *not reproduced* or *not yet judged* by one rule,
stated in its docstring (and in the claims chapter) before any number is seen.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from ..inference import prox
from ..model import SOCICNN, ReLUICNN
from ..profiles import one_thread_on_cpu
from ..readout import directional_derivative, hessian, readout
from ..subdifferential import max_directional_derivative
from . import expressivity, value_equivalence
from .first_order import central_differences

__all__ = [
    "Evidence",
    "approximation_ranking",
    "decision_quality",
    "degenerate_outcome",
    "directional_derivatives_at_ties",
    "doubling_outcome",
    "energy_regret",
    "expressivity_live",
    "expressivity_outcome",
    "first_order_outcome",
    "forward_cost_ratio",
    "hessian_outcome",
    "hessian_vs_autograd",
    "lp_value_equivalence",
    "prox_vs_socp",
    "slopes_vs_finite_differences",
    "value_equivalence_outcome",
    "verdict",
    "whitebox_outcome",
]

F64 = torch.float64
OUTCOMES = ("holds", "partial", "fails")


@dataclass(frozen=True)
class Evidence:
    """An outcome (``holds``/``partial``/``fails``, or ``None``: nothing to judge) and what was measured."""

    outcome: str | None
    measured: str

    def __post_init__(self):
        if self.outcome is not None and self.outcome not in OUTCOMES:
            raise ValueError(f"outcome must be one of {OUTCOMES} or None, got {self.outcome!r}")


NONE = Evidence(None, "")


def verdict(live: Evidence, stored: Evidence, *, needs_paper_table: bool) -> str:
    """The verdict from the live run's and the stored table's outcomes.

    - *not yet judged*: neither source gives an outcome (no live check, and the stored
      paper-scale table absent or partial);
    - *reproduced*: every available outcome is ``holds``, and, for a claim about paper-scale
      numbers (``needs_paper_table``), the stored paper-scale table is among them;
    - *not reproduced*: every available outcome is ``fails``;
    - *partly reproduced*: anything else (mixed or ``partial`` outcomes, or a paper-scale claim
      that holds live but has no stored paper-scale table).
    """
    outcomes = [e.outcome for e in (live, stored) if e.outcome is not None]
    if not outcomes:
        return "not yet judged"
    if all(o == "holds" for o in outcomes):
        return "partly reproduced" if needs_paper_table and stored.outcome is None else "reproduced"
    if all(o == "fails" for o in outcomes):
        return "not reproduced"
    return "partly reproduced"


def _holds(ok: bool) -> str:
    return "holds" if ok else "fails"


# --------------------------------------------------------------------------- value equivalence
def value_equivalence_outcome(table: pd.DataFrame, tol: float = 1e-6, dual_tol: float = 5e-5) -> Evidence:
    """Rows of :func:`~socicnn.experiments.value_equivalence.compare_with_solver`: holds when every
    relative value error and every relative duality gap is at most ``tol`` and, on the rows whose
    margin to the nearest tie allows a comparison (``duals_compared``), every relative error of the
    closed-form multipliers against the solver's duals is at most ``dual_tol``."""
    rel_gap = float((table["gap"].abs() / table["value"].abs().clip(lower=1.0)).max())
    worst = float(table["rel_err"].max())
    uncertified = int((table["status"] != "optimal").sum())
    compared = table[table["duals_compared"]]
    duals = [c for c in ("nu_rel_err", "p_rel_err", "r_rel_err") if c in table.columns]
    worst_dual = float(compared[duals].max().max()) if len(compared) else float("nan")
    return Evidence(
        _holds(worst <= tol and rel_gap <= tol and len(compared) > 0 and worst_dual <= dual_tol),
        f"{len(table)} solves: max relative value error {worst:.1e}, max relative gap {rel_gap:.1e}, "
        f"{uncertified} not certified optimal; duals compared on {len(compared)}: max relative error {worst_dual:.1e}",
    )


def lp_value_equivalence(n_inputs: int, seed: int = 0) -> Evidence:
    """A random ReLU-ICNN (``d = 6``, widths 16, 16) against the LP solver at ``n_inputs`` inputs."""
    model = ReLUICNN(6, (16, 16), dtype=F64, seed=seed)
    X = torch.randn(n_inputs, 6, generator=torch.Generator().manual_seed(seed), dtype=F64)
    return value_equivalence_outcome(value_equivalence.compare_with_solver(model, X, resolve={}))


# --------------------------------------------------------------------------- expressivity
def expressivity_outcome(table: pd.DataFrame) -> Evidence:
    """Rows of :func:`~socicnn.experiments.expressivity.expressivity_sweep`, seeds averaged.

    Per (target, d): ReLU-ICNN error must fall from the narrowest to the widest width; the
    SOC-ICNN (narrowest backbone + the target's block) must beat the widest ReLU-ICNN (holds in
    every cell), or at least the narrowest (partial)."""
    m = table.groupby(["target", "d", "model", "width"])["test_rel_l2"].mean().reset_index()
    relu = m[m["model"] == "relu-icnn"].sort_values("width").groupby(["target", "d"])["test_rel_l2"]
    narrow, wide = relu.first(), relu.last()
    soc = m[m["model"] == "soc-icnn"].set_index(["target", "d"])["test_rel_l2"].reindex(narrow.index)
    decays, beats_wide, beats_narrow = (wide < narrow), (soc < wide), (soc < narrow)
    if (decays & beats_wide).all():
        outcome = "holds"
    elif (decays & beats_narrow).all():
        outcome = "partial"
    else:
        outcome = "fails"
    return Evidence(
        outcome,
        f"{len(narrow)} (target, d) cells: ReLU error falls with width in {int(decays.sum())}; the one-block "
        f"SOC-ICNN beats the widest ReLU-ICNN in {int(beats_wide.sum())}, the narrowest in {int(beats_narrow.sum())}",
    )


def forward_cost_ratio(batch: int = 256, repeats: int = 15, seed: int = 0) -> Evidence:
    """Forward time of the paper-A-size SOC-ICNN (``d = 100``, six layers of 256, one quadratic
    and one norm block of 24) over the ReLU-ICNN with the same backbone: median of interleaved
    repeats, on one CPU thread. Holds when the ratio is at most 2 (the blocks add ``O((k + n) d)``
    work)."""
    soc = SOCICNN(100, (256,) * 6, (24,), (24,), dtype=F64, seed=seed)
    relu = ReLUICNN(100, (256,) * 6, dtype=F64, seed=seed)
    X = torch.randn(batch, 100, generator=torch.Generator().manual_seed(seed), dtype=F64)
    times: dict[str, list[float]] = {"soc": [], "relu": []}
    with torch.no_grad(), one_thread_on_cpu():
        for _ in range(repeats):
            for name, model in (("soc", soc), ("relu", relu)):
                t0 = time.perf_counter()
                model(X)
                times[name].append(time.perf_counter() - t0)
    ratio = float(np.median(times["soc"]) / np.median(times["relu"]))
    return Evidence(_holds(ratio <= 2.0), f"forward time SOC-ICNN / ReLU-ICNN at paper-A size: {ratio:.2f}")


# --------------------------------------------------------------------------- function approximation
def _column(table: pd.DataFrame, names: Sequence[str]) -> str:
    for name in names:
        if name in table.columns:
            return name
    raise ValueError(f"table has none of the columns {list(names)}; it has {list(table.columns)}")


def approximation_ranking(table: pd.DataFrame, share: float = 2 / 3) -> Evidence:
    """A function-approximation table (``target``, ``d`` or ``dim``, ``family``, optionally a
    ``config`` (rung of the ladder) or ``budget``, and a relative L2 error column). Per
    configuration and (target, d) cell, the family with the lowest mean relative L2 error wins.
    A configuration holds when an SOC-ICNN family wins at least ``share`` of its cells, is partial
    when it wins more cells than any other family, else fails. Overall: holds when every
    configuration holds; partial when at least half of them hold or are partial; else fails."""
    err = _column(table, ("rel_l2_mean", "rel_l2", "test_rel_l2"))
    family = _column(table, ("family", "model"))
    dim = _column(table, ("d", "dim"))
    setting = next((c for c in ("config", "budget") if c in table.columns), None)
    budgets = table[setting] if setting else pd.Series("all", index=table.index)
    parts, outcomes = [], []
    for budget, sub in table.groupby(budgets, sort=False):
        means = sub.groupby(["target", dim, family])[err].mean().reset_index()
        winners = means.loc[means.groupby(["target", dim])[err].idxmin(), family].astype(str)
        counts = winners.value_counts()
        soc = int(sum(n for f, n in counts.items() if "soc" in f.lower()))
        best_other = max((n for f, n in counts.items() if "soc" not in f.lower()), default=0)
        cells = len(winners)
        outcomes.append("holds" if soc >= share * cells else ("partial" if soc > best_other else "fails"))
        label = f"{setting or 'all'} {budget}"
        parts.append(f"{label}: SOC-ICNN best in {soc} of {cells} cells (next family: {best_other}; {outcomes[-1]})")
    if all(o == "holds" for o in outcomes):
        outcome = "holds"
    elif 2 * sum(o in ("holds", "partial") for o in outcomes) >= len(outcomes):
        outcome = "partial"
    else:
        outcome = "fails"
    return Evidence(outcome, "; ".join(parts))


# --------------------------------------------------------------------------- learned energies
def energy_regret(table: pd.DataFrame, soc: str, margin: float = 1.1) -> Evidence:
    """A learned-energy table (one row per seed and family: ``family``, ``regret``, the true
    energy of each family's certified minimiser minus the exact optimum). The SOC family holds
    when its mean regret over seeds is at most ``margin`` times the best other family's, is
    partial when it beats at least half of the other families, and fails otherwise."""
    means = table.groupby("family")["regret"].mean()
    if soc not in means.index or len(means) < 2:
        return Evidence(None, f"no {soc} row beside another family")
    others = means.drop(soc)
    beaten = int((means[soc] < others).sum())
    if means[soc] <= margin * others.min():
        outcome = "holds"
    else:
        outcome = "partial" if 2 * beaten >= len(others) else "fails"
    seeds = table["seed"].nunique() if "seed" in table.columns else 1
    return Evidence(
        outcome,
        f"{soc} mean regret {means[soc]:.3g} against the best other family's "
        f"{others.min():.3g} ({others.idxmin()}); beats {beaten} of {len(others)} families; "
        f"{seeds} seed(s)",
    )


# --------------------------------------------------------------------------- downstream decisions
DECISION_RIVALS = ("relu", "softplus", "quad", "norm", "lpcf")
"""The models SOC-ICNN's decisions are compared with: the four other bias-mode families and lpcf."""


def decision_quality(table: pd.DataFrame, margin: float = 1.1, share: float = 2 / 3) -> Evidence:
    """A downstream-decision table (per seed, as stored by
    :mod:`~socicnn.experiments.downstream`: ``task``, ``dim``, ``key``, ``protocol``,
    ``regret_mean``). Per (task, d) case, the SOC-ICNN (the paper's bias-mode model) is
    competitive when its mean regret of the exact decisions, averaged over seeds, is at most
    ``margin`` times the best of the other parameter-matched models': the four other bias-mode
    families and, where the table has it, the external baseline ``lpcf``. Holds when it is
    competitive in at least ``share`` of the cases, partial in at least one, else fails. Only the
    cases holding the SOC-ICNN and at least one of the others are judged (a stored run that has not
    finished may hold some models of a case only)."""
    ex = table[table["protocol"] == "exact"]
    means = ex.groupby(["task", "dim", "key"])["regret_mean"].mean().unstack("key")
    if "soc" not in means.columns:
        return Evidence(None, "no (task, d) case holds the SOC-ICNN")
    others = means[[k for k in DECISION_RIVALS if k in means.columns]].min(axis=1)
    judged = means["soc"].notna() & others.notna()
    if not judged.any():
        return Evidence(None, "no (task, d) case holds the SOC-ICNN and another parameter-matched model")
    ok = means.loc[judged, "soc"] <= margin * others[judged]
    means, others = means[judged], others[judged]
    n, wins = len(ok), int(ok.sum())
    outcome = "holds" if wins >= share * n else ("partial" if wins else "fails")
    ratio = float(np.exp(np.log(means["soc"] / others).mean()))
    return Evidence(
        outcome,
        f"SOC-ICNN's mean regret within {margin:g}x of the best other parameter-matched model in {wins} of {n} "
        f"(task, d) cases; geometric-mean ratio SOC / best other {ratio:.2f}",
    )


def doubling_outcome(summary: pd.DataFrame, doubled_summary: pd.DataFrame) -> Evidence:
    """A stored ladder and its doubled-budget run (:func:`~socicnn.experiments.function_approximation.doubling_table`):
    holds when every doubled (dimension, target, model) result converged, partial when at least half did."""
    from .function_approximation import DOUBLING_TOL, doubling_table

    table = doubling_table(summary, doubled_summary)
    conv, n = int(table["converged"].sum()), len(table)
    if n == 0:
        return Evidence(None, "no result in both runs")
    outcome = "holds" if conv == n else ("partial" if 2 * conv >= n else "fails")
    dims = ", ".join(map(str, sorted(table["dim"].unique())))
    return Evidence(outcome, f"d = {dims}: {conv} of {n} results converged (twice the steps lower the best validation "
                             f"MSE by < {DOUBLING_TOL:.0%}); largest drop {float(table['drop'].max()):.1%}")


# --------------------------------------------------------------------------- dual readout
def _random_model(d: int, seed: int) -> SOCICNN:
    return SOCICNN(d, (32, 32, 32), quad_dims=(d // 2,), norm_dims=(d // 2, d // 2), dtype=F64, seed=seed)


def slopes_vs_finite_differences(n_inputs: int, seed: int = 0, d: int = 10) -> Evidence:
    """Readout gradient vs central finite differences (``h = 1e-6``) at inputs whose margin
    exceeds 1e-3 (there ``f`` is smooth on the stencil). Holds at relative error <= 1e-6."""
    model = _random_model(d, seed)
    X = torch.randn(n_inputs, d, generator=torch.Generator().manual_seed(seed), dtype=F64)
    ro = readout(model, X)
    keep = ro.margins > 1e-3
    g, fd = ro.grad[keep], central_differences(model, X[keep], 1e-6)
    rel = float(((g - fd).norm(dim=1) / g.norm(dim=1).clamp_min(1.0)).max())
    return Evidence(
        _holds(rel <= 1e-6 and int(keep.sum()) > 0),
        f"{int(keep.sum())} of {n_inputs} inputs: max relative error {rel:.1e}",
    )


def hessian_vs_autograd(n_inputs: int, seed: int = 0, d: int = 10) -> Evidence:
    """Readout Hessian vs ``torch.func.hessian`` of the forward pass at inputs with margin > 1e-3.
    Holds at relative Frobenius error <= 1e-10."""
    model = _random_model(d, seed)
    X = torch.randn(n_inputs, d, generator=torch.Generator().manual_seed(seed), dtype=F64)
    keep = readout(model, X).margins > 1e-3
    H = hessian(model, X[keep]).detach()
    auto = torch.stack([torch.func.hessian(lambda x: model(x[None])[0])(x) for x in X[keep]]).detach()
    rel = float(((H - auto).flatten(1).norm(dim=1) / auto.flatten(1).norm(dim=1).clamp_min(1.0)).max())
    return Evidence(
        _holds(rel <= 1e-10 and int(keep.sum()) > 0),
        f"{int(keep.sum())} inputs: max relative Frobenius error {rel:.1e}",
    )


def directional_derivatives_at_ties(n_dirs: int, seed: int = 0, d: int = 6) -> Evidence:
    """At an input with a planted ReLU tie and a planted norm-block tie (``u = 0``): the forward
    directional pass, the maximum over the optimal dual set (a conic program) and one-sided
    finite differences (``t = 1e-7``) must agree within 1e-5 relative in every direction, and
    differ from the canonical slope's ``g . delta`` in some direction (the kink is real)."""
    model = SOCICNN(d, (8, 8), quad_dims=(2,), norm_dims=(2,), dtype=F64, seed=seed)
    w = model.weights()
    gen = torch.Generator().manual_seed(seed)
    _, A, dvec = w.norm[0]
    M = torch.cat([A, w.W[0][:1]])  # the norm block's u = A x + d and the first unit of layer 1
    rhs = torch.cat([-dvec, -w.b[0][:1]])
    x = torch.randn(d, generator=gen, dtype=F64)
    x0 = x + torch.linalg.lstsq(M, rhs - M @ x).solution
    deltas = torch.randn(n_dirs, d, generator=gen, dtype=F64)
    X0 = x0.expand(n_dirs, -1)
    forward = directional_derivative(model, X0, deltas, tol=1e-9)
    t = 1e-7
    with torch.no_grad():
        fd = (model(X0 + t * deltas) - model(X0)) / t
    conic = torch.stack([max_directional_derivative(model, x0, dl, tol=1e-9) for dl in deltas])
    slope = (readout(model, x0[None]).grad @ deltas.T)[0]
    scale = forward.abs().clamp_min(1.0)
    err_fd = float(((forward - fd).abs() / scale).max())
    err_conic = float(((forward - conic).abs() / scale).max())
    kinked = int(((forward - slope).abs() > 1e-6 * scale).sum())
    ok = err_fd <= 1e-5 and err_conic <= 1e-5 and kinked > 0
    return Evidence(
        _holds(ok),
        f"{n_dirs} directions at a double tie: vs finite differences {err_fd:.1e}, vs the "
        f"conic maximum {err_conic:.1e}; {kinked} directions where g.delta is not f'",
    )


def prox_vs_socp(n_queries: int, seed: int = 0, d: int = 10, beta: float = 10.0) -> Evidence:
    """Readout Newton on ``min f(x) + beta/2 ||x - y||^2`` vs the exact SOCP (conic solver):
    holds when every Newton query is converged (certified) and, on every query the conic solver
    solves to optimality, within 1e-6 relative of the SOCP value; queries where the solver fails
    are counted and not judged (``None`` when it fails on all)."""
    model = SOCICNN(d, (32, 32, 32), quad_dims=(8,), norm_dims=(8, 8), dtype=F64, seed=seed)
    Y = torch.randn(n_queries, d, generator=torch.Generator().manual_seed(seed), dtype=F64)
    newton, socp = prox(model, Y, beta, method="newton"), prox(model, Y, beta, method="socp")
    solved = torch.tensor([s == "optimal" for s in socp.status])
    conv = int(newton.converged.sum())
    measured = f"{conv} of {n_queries} Newton queries certified; conic solver optimal on {int(solved.sum())}"
    if not solved.any():
        return Evidence(None, measured)
    rel = float(((newton.value - socp.value).abs() / socp.value.abs().clamp_min(1.0))[solved].max())
    return Evidence(
        _holds(conv == n_queries and rel <= 1e-6),
        f"{measured}, where the largest relative difference from its value is {rel:.1e}",
    )


# --------------------------------------------------------------------------- stored tables of C-F
def first_order_outcome(table: pd.DataFrame, tol: float = 1e-6) -> Evidence:
    """The first-order chapter's per-model table: holds when, on every model, the readout gradient
    agrees with central finite differences within ``tol`` relative (inputs past the margin threshold)."""
    fd, solver = float(table["max_rel_err_fd"].max()), float(table["max_rel_err_solver"].max())
    return Evidence(_holds(fd <= tol), f"{len(table)} models: max relative error vs finite differences {fd:.1e}, "
                                       f"vs the solver's duals {solver:.1e}")


def hessian_outcome(table: pd.DataFrame, tol: float = 1e-10) -> Evidence:
    """The local-Hessian chapter's table (per model and radius): holds when every model's readout
    Hessian agrees with autograd within ``tol`` relative Frobenius error."""
    per_model = table.groupby("model")["max_frob_rel_err"].max()
    order = float(table["order"].iloc[0])
    return Evidence(_holds(float(per_model.max()) <= tol),
                    f"{len(per_model)} models: max relative Frobenius error {float(per_model.max()):.1e}; "
                    f"Taylor residual order {order:.2f}")


def degenerate_outcome(table: pd.DataFrame, tol: float = 1e-5) -> Evidence:
    """The degenerate-inputs chapter's table (one row per degenerate point): holds when the forward
    directional pass agrees with the conic maximum and with one-sided differences within ``tol``
    at every point (the table has no column for the ``g . delta`` part, judged live)."""
    conic, fd = float(table["forward_vs_conic"].max()), float(table["forward_vs_fd"].max())
    return Evidence(_holds(conic <= tol and fd <= tol),
                    f"{len(table)} degenerate points: forward vs conic maximum {conic:.1e}, vs one-sided "
                    f"differences {fd:.1e}")


def whitebox_outcome(table: pd.DataFrame, tol: float = 1e-6) -> Evidence:
    """The white-box chapter's methods table: holds when face Newton converged (certified) on every
    query and its largest relative gap to the SOCP optimum is at most ``tol``."""
    rows = table.set_index("method")
    n = int(rows.loc["socp", "queries within 1e-7"])  # the reference is within any tolerance of itself
    face = rows.loc["newton (face)"]
    conv, gap = int(face["converged"]), float(face["max rel. gap"])
    return Evidence(_holds(conv == n and gap <= tol),
                    f"face Newton certified on {conv} of {n} queries, largest relative gap to the SOCP {gap:.1e}")


def expressivity_live(steps: int, seed: int = 0) -> Evidence:
    """A small live expressivity sweep (``d = 2``, both targets, widths 4 and 32)."""
    table = expressivity.expressivity_sweep(
        list(expressivity.TARGETS), (2,), (seed,), (4, 32), steps=steps, n_train=512, n_val=128, n_test=512
    )
    return expressivity_outcome(table)
