"""Trajectory smoothing with recurrent SOC-ICNNs (paper A's recurrent appendix experiment).

A reference trajectory ``R`` ``(T, p)`` is smoothed by minimising a convex energy over
``U in [-1, 1]^{T x p}``:

    E(U; R) = (rho/2) mean (u - r)^2 + (beta/2) mean (Delta^2 u)^2
              + lam mean_t sqrt(||u_t - u_{t-1}||^2 + eps) + (gamma/2) mean u^2,

an SOCP, since ``sqrt(v^2 + eps) = ||(v, sqrt(eps))||``. A recurrent energy model is trained on
candidate trajectories labelled by ``E``, then minimised over the box; its minimiser is scored
on ``E`` against the exact optimum (a conic solve, cross-checked by a projected accelerated
gradient method with a Frank-Wolfe certificate).
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, replace

import cvxpy as cp
import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from ..blocks import SmoothBlock
from ..energy import ExactBoxSolve, box_gap_bounds, certified_gap, fit_energy
from ..ground_truth import box_gap_bound
from ..inference import Box, minimize
from ..lifting import LiftingError
from ..profiles import pick
from ..recurrent import RECURRENT_FAMILIES, recurrent_family
from ..results import mean_sd
from ..solvers import resolve_solver

__all__ = [
    "TrajectoryConfig",
    "candidates",
    "config",
    "exact_optimum",
    "first_order_optimum",
    "reference_protocol",
    "reference_sequences",
    "reference_table",
    "reference_versus_certified",
    "results_table",
    "run_seed",
    "seeds",
    "summarise",
    "true_energy",
]

#: Largest violation of dual feasibility (relative) for which the solver's multipliers certify a point.
DUAL_RESIDUAL_TOL = 1e-9

FAMILIES = tuple(RECURRENT_FAMILIES)


@dataclass(frozen=True)
class TrajectoryConfig:
    """Sizes, energy weights and protocols (defaults: the reference's ``paper`` sizes)."""

    steps: int = 40
    features: int = 4
    n_train: int = 1200
    n_val: int = 200
    n_test: int = 200
    n_candidates: int = 14
    rho: float = 1.0
    beta: float = 0.20
    lam: float = 0.18
    gamma: float = 0.02
    eps: float = 1e-5
    hidden: int = 20
    quad_channels: int = 24
    norm_groups: int = 12
    context_hidden: int = 64
    epochs: int = 50
    batch_size: int = 1200
    lr: float = 2e-3
    weight_decay: float = 1e-6
    clip_norm: float = 10.0
    # the reference's own decision protocol (fixed-step Adam)
    ref_steps: int = 400
    ref_lr: float = 0.04
    ref_restarts: int = 4
    ref_opt_steps: int = 900
    ref_opt_lr: float = 0.045
    # the exact optimum's first-order cross-check and the certificate tolerance
    fo_iters: int = 3000
    gap_tol: float = 1e-5

    def describe(self) -> str:
        """The sizes in one line (sequences, candidates, model sizes, training)."""
        return (f"T = {self.steps}, p = {self.features}, train/val/test sequences = {self.n_train}/{self.n_val}/"
                f"{self.n_test}, {self.n_candidates} candidates each; hidden {self.hidden}, quadratic channels "
                f"{self.quad_channels}, norm groups {self.norm_groups}; {self.epochs} epochs at batch "
                f"{self.batch_size}")

    @classmethod
    def from_dict(cls, config: dict) -> TrajectoryConfig:
        """The configuration recorded in a table's provenance (other keys, such as the seeds, ignored)."""
        return cls(**{k: v for k, v in config.items() if k in cls.__dataclass_fields__})


def seeds(profile: str, seed: int) -> list[int]:
    """The seeds of a run: three from ``seed`` (two at ``smoke``, a code-path check)."""
    return [seed + k for k in range(pick(profile, smoke=2, book=3, paper=3))]


def config(profile: str) -> TrajectoryConfig:
    """``smoke`` (seconds), ``book`` (about a minute on 2 cores) or ``paper`` (the reference's sizes)."""
    base = TrajectoryConfig()
    return pick(
        profile,
        smoke=replace(base, steps=8, features=2, n_train=24, n_val=8, n_test=2, hidden=6, quad_channels=4,
                      norm_groups=2, context_hidden=16, epochs=3, batch_size=336, ref_steps=30, ref_opt_steps=60,
                      fo_iters=1000),
        book=replace(base, steps=16, features=2, n_train=100, n_val=20, n_test=6, hidden=10, quad_channels=8,
                     norm_groups=4, context_hidden=32, epochs=20, batch_size=350, fo_iters=1500),
        paper=base,
    )  # fmt: skip


# ----------------------------------------------------------------------------- data
def reference_sequences(n: int, cfg: TrajectoryConfig, seed: int) -> torch.Tensor:
    """``n`` reference trajectories ``(n, T, p)`` in ``[-1, 1]`` (float64), deterministic in ``seed``:
    per feature a sine (amplitude 0.25-0.7, 1-3 periods) plus a cosine (0.1-0.35, 2-5 periods),
    1-3 step offsets of size ``0.15 N(0, 1)`` at times in ``[5, T - 5)``, AR(1) noise
    (``0.85``, innovations ``0.04 N(0, 1)``), clamped to the box."""
    g = torch.Generator().manual_seed(int(seed))
    T, p = cfg.steps, cfg.features
    shape = (n, 1, p)

    def unif(lo, hi):
        return lo + (hi - lo) * torch.rand(shape, generator=g, dtype=torch.float64)

    t = torch.linspace(0.0, 1.0, T, dtype=torch.float64)[None, :, None]
    amp1, amp2 = unif(0.25, 0.70), unif(0.10, 0.35)
    f1 = torch.randint(1, 4, shape, generator=g).double()
    f2 = torch.randint(2, 6, shape, generator=g).double()
    ph1, ph2 = unif(0, 2 * math.pi), unif(0, 2 * math.pi)
    base = amp1 * torch.sin(2 * math.pi * f1 * t + ph1) + amp2 * torch.cos(2 * math.pi * f2 * t + ph2)
    lo_jump, hi_jump = min(5, T - 1), max(min(5, T - 1) + 1, T - 5)
    jumps = torch.randint(1, 4, shape, generator=g)
    offset = torch.zeros(n, T, p, dtype=torch.float64)
    steps = torch.arange(T)[None, :, None]
    for k in range(3):
        at = torch.randint(lo_jump, hi_jump, shape, generator=g)
        size = 0.15 * torch.randn(shape, generator=g, dtype=torch.float64)
        offset = offset + (k < jumps) * (steps >= at) * size
    innov = 0.04 * torch.randn(n, T, p, generator=g, dtype=torch.float64)
    noise = torch.zeros_like(innov)
    noise[:, 0] = innov[:, 0]
    for k in range(1, T):
        noise[:, k] = 0.85 * noise[:, k - 1] + innov[:, k]
    return (base + offset + noise).clamp(-1.0, 1.0)


def moving_average(u: torch.Tensor, width: int = 5) -> torch.Tensor:
    """Centred moving average over time (zero padding) of ``u`` ``(n, T, p)``."""
    p = u.shape[-1]
    kernel = torch.full((p, 1, width), 1.0 / width, dtype=u.dtype)
    return F.conv1d(u.transpose(1, 2), kernel, padding=width // 2, groups=p).transpose(1, 2)


def true_energy(U: torch.Tensor, R: torch.Tensor, cfg: TrajectoryConfig) -> torch.Tensor:
    """``E(U; R)`` ``(n,)`` for ``U``, ``R`` ``(n, T, p)`` (module docstring)."""
    track = 0.5 * cfg.rho * (U - R).square().mean((1, 2))
    acc = 0.5 * cfg.beta * (U[:, 2:] - 2 * U[:, 1:-1] + U[:, :-2]).square().mean((1, 2))
    du = U[:, 1:] - U[:, :-1]
    tv = cfg.lam * (du.square().sum(-1) + cfg.eps).sqrt().mean(1)
    return track + acc + tv + 0.5 * cfg.gamma * U.square().mean((1, 2))


def candidates(refs: torch.Tensor, cfg: TrajectoryConfig, seed: int):
    """``n_candidates`` labelled candidates per reference: the reference, its moving average,
    zeros, uniform noise, noisy copies, and blends of these (as in the reference protocol).
    Returns ``U``, ``R`` ``(n K, T, p)`` and ``E`` ``(n K,)``."""
    g = torch.Generator().manual_seed(int(seed))
    n = refs.shape[0]
    smooth = moving_average(refs)

    def randn():
        return torch.randn(refs.shape, generator=g, dtype=refs.dtype)

    def unif():
        return 2 * torch.rand(refs.shape, generator=g, dtype=refs.dtype) - 1

    def weight():
        return torch.rand(n, 1, 1, generator=g, dtype=refs.dtype)

    out = []
    for j in range(cfg.n_candidates):
        if j < 6:
            cand = [refs, smooth, torch.zeros_like(refs), unif(), refs + 0.25 * randn(), smooth + 0.20 * randn()][j]
        elif j % 4 == 0:
            a = weight()
            cand = a * refs + (1 - a) * unif()
        elif j % 4 == 1:
            a = weight()
            cand = a * refs + (1 - a) * smooth
        elif j % 4 == 2:
            cand = moving_average(unif())
        else:
            a = weight()
            cand = a * smooth + (1 - a) * (refs + 0.30 * randn())
        out.append(cand.clamp(-1.0, 1.0))
    U = torch.cat(out)
    R = refs.repeat(cfg.n_candidates, 1, 1)
    return U, R, true_energy(U, R, cfg)


# ----------------------------------------------------------------------------- exact optimum
class TrueEnergySOCP:
    """``min_{U in [-1,1]^{T x p}} E(U; R)`` as one SOCP with ``R`` a parameter (compiled once):
    the smoothed-norm terms are the cones ``||(u_t - u_{t-1}, sqrt(eps))|| <= s_t``."""

    def __init__(self, cfg: TrajectoryConfig, solver: str = "clarabel") -> None:
        T, p = cfg.steps, cfg.features
        self.cfg, self.solver = cfg, resolve_solver(solver)
        self.R = cp.Parameter((T, p))
        self.U = cp.Variable((T, p))
        s = cp.Variable(T - 1)
        du = self.U[1:] - self.U[:-1]
        cone = cp.SOC(s, cp.hstack([du, np.full((T - 1, 1), math.sqrt(cfg.eps))]), axis=1)
        acc = self.U[2:] - 2 * self.U[1:-1] + self.U[:-2]
        obj = (
            0.5 * cfg.rho / (T * p) * cp.sum_squares(self.U - self.R)
            + 0.5 * cfg.beta / ((T - 2) * p) * cp.sum_squares(acc)
            + cfg.lam / (T - 1) * cp.sum(s)
            + 0.5 * cfg.gamma / (T * p) * cp.sum_squares(self.U)
        )
        self.problem = cp.Problem(cp.Minimize(obj), [cone, self.U >= -1, self.U <= 1])

    def solve(self, R: torch.Tensor) -> tuple[torch.Tensor, np.ndarray]:
        """Optimal ``U*`` ``(n, T, p)`` and the solver's own solve times ``(n,)``.

        Raises:
            socicnn.lifting.LiftingError: a status other than optimal."""
        xs, times = [], []
        for i in range(R.shape[0]):
            self.R.value = R[i].numpy()
            self.problem.solve(solver=self.solver)
            if self.problem.status != cp.OPTIMAL:
                raise LiftingError(
                    f"{self.solver} returned status {self.problem.status!r} on the true energy (row {i})"
                )
            xs.append(np.clip(self.U.value, -1.0, 1.0))
            times.append(float(self.problem.solver_stats.solve_time or float("nan")))
        return torch.as_tensor(np.stack(xs)), np.array(times)


def exact_optimum(R: torch.Tensor, cfg: TrajectoryConfig, solver: str = "clarabel"):
    """``U*`` ``(n, T, p)`` by the conic solver (status checked) and the solver times."""
    return TrueEnergySOCP(cfg, solver).solve(R)


def _energy_grad(U, R, cfg):
    with torch.enable_grad():
        U = U.detach().requires_grad_(True)
        E = true_energy(U, R, cfg)
        (g,) = torch.autograd.grad(E.sum(), U)
    return E.detach(), g


def first_order_optimum(R: torch.Tensor, cfg: TrajectoryConfig, iters: int | None = None):
    """Projected accelerated gradient (FISTA with adaptive restart, step ``1/L``) on ``E`` over the
    box, batched; returns ``U``, ``E(U)`` and the certified Frank-Wolfe bound
    ``g^T U - min_box g^T V >= E(U) - min E`` (``g = grad E(U)``) per row."""
    T, p = cfg.steps, cfg.features
    L = (cfg.rho + cfg.gamma) / (T * p) + 16 * cfg.beta / ((T - 2) * p) + 4 * cfg.lam / ((T - 1) * math.sqrt(cfg.eps))
    x = R.clone()
    y, t = x.clone(), 1.0
    for _ in range(iters or cfg.fo_iters):
        _, g = _energy_grad(y, R, cfg)
        x_new = (y - g / L).clamp(-1.0, 1.0)
        restart = ((y - x_new) * (x_new - x)).sum((1, 2)) > 0
        t_new = (1 + math.sqrt(1 + 4 * t * t)) / 2
        y = x_new + ((t - 1) / t_new) * (x_new - x)
        y[restart] = x_new[restart]
        x, t = x_new, t_new
    E, g = _energy_grad(x, R, cfg)
    fw = box_gap_bound(x.flatten(1), g.flatten(1), -1.0, 1.0)
    return x, E, fw


# ----------------------------------------------------------------------------- the reference protocol
def _adam_box(fn, starts: list[torch.Tensor], steps: int, lr: float):
    """Fixed-step Adam from every start, clamped to the box after each step; best start per row."""
    n = starts[0].shape[0]
    u = torch.cat(starts).detach().clone().requires_grad_(True)
    opt = torch.optim.Adam([u], lr=lr)
    with torch.enable_grad():
        for _ in range(steps):
            opt.zero_grad(set_to_none=True)
            fn(u).sum().backward()
            opt.step()
            with torch.no_grad():
                u.clamp_(-1.0, 1.0)
    with torch.no_grad():
        vals = fn(u).view(len(starts), n)
        best = vals.argmin(0)
        return u.detach().view(len(starts), n, *u.shape[1:])[best, torch.arange(n)]


def _starts(R: torch.Tensor, restarts: int, seed: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(int(seed))
    starts = [R.clamp(-1, 1), moving_average(R).clamp(-1, 1), torch.zeros_like(R)]
    starts += [2 * torch.rand(R.shape, generator=g, dtype=R.dtype) - 1 for _ in range(max(restarts - 3, 0))]
    return starts[:restarts] if restarts < 3 else starts


def reference_protocol(model, R: torch.Tensor, cfg: TrajectoryConfig, seed: int) -> tuple[torch.Tensor, float]:
    """The reference's smoothing: Adam (``ref_steps``, ``ref_lr``) on the surrogate from
    ``ref_restarts`` starts, clamped; returns ``U`` and the wall time per sequence."""
    n, T, p = R.shape
    Rf = R.reshape(n, -1)
    rep = len(_starts(R, cfg.ref_restarts, seed))
    t0 = time.perf_counter()
    U = _adam_box(lambda u: model(u, Rf.repeat(rep, 1)), [s.reshape(n, -1) for s in _starts(R, cfg.ref_restarts, seed)],
                  cfg.ref_steps, cfg.ref_lr)  # fmt: skip
    return U.reshape(n, T, p), (time.perf_counter() - t0) / n


def reference_optimum(R: torch.Tensor, cfg: TrajectoryConfig, seed: int) -> torch.Tensor:
    """The reference's "true optimum": Adam (``ref_opt_steps``, ``ref_opt_lr``) on ``E`` itself."""
    rep = len(_starts(R, cfg.ref_restarts, seed))
    return _adam_box(lambda u: true_energy(u, R.repeat(rep, 1, 1), cfg), _starts(R, cfg.ref_restarts, seed),
                     cfg.ref_opt_steps, cfg.ref_opt_lr)  # fmt: skip


# ----------------------------------------------------------------------------- one seed
@dataclass
class SeedRun:
    """Everything one seed produced: per-family rows, the test references, the exact optimum and
    each family's smoothed trajectories (for plots), and the checks' worst values."""

    rows: list[dict]
    R: torch.Tensor
    U_star: torch.Tensor
    smoothed: dict[str, torch.Tensor]
    checks: dict[str, float]


def run_seed(cfg: TrajectoryConfig, seed: int, families=FAMILIES, *, device: str = "cpu", log=print) -> SeedRun:
    """Data, exact optimum, training and smoothing for one seed (all families)."""
    T, p = cfg.steps, cfg.features
    R_tr, R_va, R_te = (reference_sequences(n, cfg, 1000 * seed + k) for k, n in
                        enumerate((cfg.n_train, cfg.n_val, cfg.n_test)))  # fmt: skip
    Utr, Rtr, Etr = candidates(R_tr, cfg, 1000 * seed + 10)
    Uva, Rva, Eva = candidates(R_va, cfg, 1000 * seed + 11)
    Ute, Rte, Ete = candidates(R_te, cfg, 1000 * seed + 12)

    U_star, solver_times = exact_optimum(R_te, cfg)
    E_star = true_energy(U_star, R_te, cfg)
    U_fo, E_fo, fw = first_order_optimum(R_te, cfg)
    U_adam = reference_optimum(R_te, cfg, seed)
    E_adam = true_energy(U_adam, R_te, cfg)
    checks = {
        "fo_fw_bound_max": float(fw.max()),
        "fo_minus_exact_max": float((E_fo - E_star).abs().max()),
        "exact_below_fo": float((E_star - E_fo).max()),
        "adam_opt_excess_mean": float((E_adam - E_star).mean()),
        "exact_solver_time_mean": float(solver_times.mean()),
    }
    log(f"seed {seed}: exact optimum by the conic solver; the first-order cross-check's certified gap is "
        f"<= {checks['fo_fw_bound_max']:.1e} and its energy differs from the conic one by <= "
        f"{checks['fo_minus_exact_max']:.1e}")

    flat = lambda t: t.reshape(t.shape[0], -1)  # noqa: E731
    steps_per_epoch = math.ceil(Utr.shape[0] / cfg.batch_size)
    rows, smoothed = [], {}
    for name in families:
        model = recurrent_family(name, steps=T, features=p, context_features=p, hidden=cfg.hidden,
                                 quad_channels=cfg.quad_channels, norm_groups=cfg.norm_groups,
                                 context_hidden=cfg.context_hidden, dtype=torch.float64, seed=seed)  # fmt: skip
        # Trained in float32 (as the reference), then evaluated, lifted and certified in float64.
        f32 = lambda t: flat(t).float()  # noqa: E731
        res, mean, std = fit_energy(
            model.float(), f32(Utr), f32(Rtr), Etr.float(), f32(Uva), f32(Rva), Eva.float(),
            steps=cfg.epochs * steps_per_epoch, batch_size=cfg.batch_size, lr=cfg.lr,
            weight_decay=cfg.weight_decay, clip_norm=cfg.clip_norm, eval_every=steps_per_epoch,
            device=device, seed=seed,
        )  # fmt: skip
        model = res.model.to("cpu", torch.float64)
        with torch.no_grad():
            pred = model(flat(Ute), flat(Rte)) * std + mean
        rel_err = float((pred - Ete).norm() / Ete.norm())

        # Certified smoothing. A model with kinks: its exact conic lifting (Clarabel), rows the
        # solver fails on by the library's certified minimiser. A smooth model (every block
        # without kinks): the certified minimiser directly, whose Newton steps converge fast on
        # it, while its exponential-cone lifting is slow to compile and solve. Every point is then
        # certified alike.
        m = model.at(R_te)
        n_te = R_te.shape[0]
        if any(not isinstance(b, SmoothBlock) for b in m.blocks()):
            sol = ExactBoxSolve(m, -1.0, 1.0, solver="clarabel").solve(accept_inaccurate=True, skip_failures=True)
            failed = torch.tensor([i for i, st in enumerate(sol.status) if st == "solver_error"], dtype=torch.long)
            if failed.numel():
                sol.x[failed] = minimize(m.select(failed), Box(-1.0, 1.0), tol=0.1 * cfg.gap_tol).x
            x_hat, mults, method = sol.x, sol.multipliers, "conic"
            times, solver_times, statuses = sol.time, sol.solver_time, sol.status
        else:
            res_min = minimize(m, Box(-1.0, 1.0), tol=0.1 * cfg.gap_tol)
            x_hat, mults, method, failed = res_min.x, None, "minimize", torch.zeros(0, dtype=torch.long)
            times, solver_times, statuses = res_min.time.numpy(), np.full(n_te, np.nan), []
        bounds = box_gap_bounds(m, x_hat, -1.0, 1.0, mults)
        gap = bounds["strict"]
        scale = torch.clamp(bounds["value"].abs(), min=1.0)
        strict = gap <= cfg.gap_tol * scale
        certified = certified_gap(bounds, DUAL_RESIDUAL_TOL) <= cfg.gap_tol * scale
        U_hat = x_hat.reshape(-1, T, p)
        E_hat = true_energy(U_hat, R_te, cfg)

        U_ref, ref_time = reference_protocol(model, R_te, cfg, seed)
        with torch.no_grad():
            surrogate_excess = m(flat(U_ref)) - m(x_hat)
        E_ref = true_energy(U_ref, R_te, cfg)
        regret = E_hat - E_star
        rows.append({
            "seed": seed, "family": name, "params": model.num_parameters(), "hidden": model.backbone.width,
            "train_time": res.train_time, "test_rel_err": rel_err,
            "regret": float(regret.mean()), "rel_regret": float((regret / E_star).mean()),
            "rmse_to_opt": float(((U_hat - U_star).square().mean((1, 2)).sqrt()).mean()),
            "at_bound": float((U_hat.abs() >= 1 - 1e-6).double().mean()),
            "opt_at_bound": float((U_star.abs() >= 1 - 1e-6).double().mean()),
            "method": method, "time_per_seq": float(np.mean(times)),
            "solver_time_per_seq": float(np.mean(solver_times)),
            "gap_bound_max": float(gap.max()), "fw_bound_max": float(bounds["frank_wolfe"].max()),
            "dual_bound_max": float(bounds["dual"].max()) if mults is not None else float("nan"),
            "dual_residual_max": float(bounds["dual_residual"].max()) if mults is not None else float("nan"),
            "certified": int(certified.sum()),
            "certified_strict": int(strict.sum()),
            "n_test": int(R_te.shape[0]), "inaccurate": sum(st == "optimal_inaccurate" for st in statuses),
            "solver_failed": int(failed.numel()),
            "min_regret": float(regret.min()),
            "ref_regret_exact": float((E_ref - E_star).mean()), "ref_regret_adam": float((E_ref - E_adam).mean()),
            "ref_rmse_to_opt": float(((U_ref - U_star).square().mean((1, 2)).sqrt()).mean()),
            "ref_surrogate_excess_mean": float(surrogate_excess.mean()), "ref_time_per_seq": ref_time,
        })  # fmt: skip
        smoothed[name] = U_hat
        log(f"  {name}: params {rows[-1]['params']}, regret {rows[-1]['regret']:.3e}, "
            f"certified {rows[-1]['certified']}/{rows[-1]['n_test']}")  # fmt: skip
    return SeedRun(rows, R_te, U_star, smoothed, checks)


def summarise(rows: list[dict]) -> pd.DataFrame:
    """Mean and sd (ddof 1) over seeds per family, in family order."""
    df = pd.DataFrame(rows)
    cols = ["regret", "rel_regret", "rmse_to_opt", "time_per_seq", "test_rel_err", "ref_regret_exact",
            "ref_regret_adam", "ref_rmse_to_opt"]  # fmt: skip
    agg = df.groupby("family", sort=False)[cols].agg(["mean", "std"])
    agg.columns = [f"{c}_{s}" for c, s in agg.columns]
    agg.insert(0, "params", df.groupby("family", sort=False)["params"].first())
    agg.insert(1, "seeds", df.groupby("family", sort=False)["seed"].nunique())
    return agg.reset_index()


def results_table(summary: pd.DataFrame) -> pd.DataFrame:
    """The results of a :func:`summarise` table, mean ± sd over seeds per family: regret, relative
    regret and RMSE to the exact optimum (true energy), wall time per smoothed sequence (ms) and the
    energy model's relative error on test candidates."""
    return pd.DataFrame({
        "family": summary.family, "params": summary.params, "seeds": summary.seeds,
        "regret": mean_sd(summary.regret_mean, summary.regret_std),
        "rel. regret": mean_sd(summary.rel_regret_mean, summary.rel_regret_std),
        "RMSE to opt.": mean_sd(summary.rmse_to_opt_mean, summary.rmse_to_opt_std),
        "time (ms)": [f"{1e3 * m:.1f}" for m in summary.time_per_seq_mean],
        "test rel. error": mean_sd(summary.test_rel_err_mean, summary.test_rel_err_std),
    })


def reference_table(summary: pd.DataFrame) -> pd.DataFrame:
    """The reference's protocol beside ours, from a :func:`summarise` table: its regret against its
    own Adam "optimum" and against the exact one, its RMSE to the optimum, and the certified regret."""
    return pd.DataFrame({
        "family": summary.family,
        "regret vs Adam 'optimum'": mean_sd(summary.ref_regret_adam_mean, summary.ref_regret_adam_std),
        "regret vs exact optimum": mean_sd(summary.ref_regret_exact_mean, summary.ref_regret_exact_std),
        "RMSE to opt.": mean_sd(summary.ref_rmse_to_opt_mean, summary.ref_rmse_to_opt_std),
        "certified regret (ours)": mean_sd(summary.regret_mean, summary.regret_std),
    })


def reference_versus_certified(summary: pd.DataFrame, tol: float = 0.01) -> str:
    """One sentence from a :func:`summarise` table: the families whose reference smoothing (fixed-step
    Adam on the learned energy) has a lower mean true-energy regret against the exact optimum than
    the certified minimiser of the same learned energy by more than ``tol`` of the latter (closer
    than that, the two count as equal), and whether the two protocols rank the families alike."""
    diff = (summary.regret_mean - summary.ref_regret_exact_mean) / summary.regret_mean
    lower, equal = summary[diff > tol], summary[diff.abs() <= tol]
    gaps = ", ".join(f"{f} {a:.3g} against {c:.3g} ({100 * (c - a) / c:.3g} % lower)" for f, a, c in
                     zip(lower.family, lower.ref_regret_exact_mean, lower.regret_mean, strict=True))
    ours = summary.sort_values("regret_mean").family.tolist()
    theirs = summary.sort_values("ref_regret_exact_mean").family.tolist()
    ranking = ("the same ranking of the families" if ours == theirs
               else f"a different ranking ({' < '.join(theirs)} against {' < '.join(ours)})")
    return (f"the reference's smoothing has a mean regret (against the exact optimum) lower by more than {tol:.0%} "
            f"for {len(lower)} of {len(summary)} families{': ' + gaps if gaps else ''}; within {tol:.0%} of the "
            f"certified one for {len(equal)}; both protocols give {ranking}.")


def config_dict(cfg: TrajectoryConfig) -> dict:
    return asdict(cfg)
