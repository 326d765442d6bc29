"""Image restoration with convolutional SOC-ICNNs (paper A, appendix).

Offline patches (:mod:`socicnn.images`) are corrupted (:mod:`socicnn.restoration`); the five
parameter-matched Conv families are trained as energies on 16 candidates per training image
labelled by the true energy (:mod:`socicnn.energy_training`); each learned energy is minimised
over ``[0, 1]`` pixels and the restoration is scored against the exact optimum of the true
energy (a conic solve, cross-checked by a certified first-order method).

Restoration of a learned energy is exact: its conic lifting with the box, solved by Clarabel
(status checked), with the library's certified gap at the solution. Beside it runs the reference
protocol (Adam, 350 steps, lr 0.035, 3 restarts, clamping), whose distance from the learned
energy's optimum is bounded by the Frank-Wolfe bound from a readout subgradient
(:func:`certificate`).
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass

import cvxpy as cp
import numpy as np
import pandas as pd
import torch

from .. import readout
from ..conv_model import CONV_FAMILIES, ConvSOCICNN, conv_family
from ..energy import ExactBoxSolve, box_gap_bounds, certified_gap
from ..energy_training import EnergyFit, fit_energy
from ..ground_truth import box_gap_bound
from ..images import image_patches
from ..inference import Box, minimize
from ..restoration import Corrupted, ExactRestoration, candidates, corrupt, first_order_optimum, true_energy
from ..results import mean_sd

__all__ = [
    "PROFILES",
    "Data",
    "adam_box",
    "certificate",
    "main",
    "make_data",
    "prepare",
    "recorded_reference_scores",
    "reference_scores",
    "restore_certified",
    "restore_primal_dual",
    "restore_reference",
    "run",
    "run_case",
    "summarize",
    "train_family",
]

#: ``certify``: how each restoration is solved and certified, ``"exact conic"`` (the lifting,
#: Clarabel) or ``"primal-dual"`` (matrix-free, :func:`restore_primal_dual`; the lifting of a 64 x 64
#: energy does not fit in memory); ``cross_check``: the other method on the first seed.
PROFILES = {
    "smoke": dict(size=4, n_train=4, n_test=2, epochs=3, seeds=(0, 1, 2), steps=20, restarts=3, optimum_steps=60,
                  certify="exact conic", cross_check=True),  # fmt: skip
    "book": dict(size=6, n_train=12, n_test=2, epochs=40, seeds=(0, 1, 2), steps=100, restarts=3, optimum_steps=700,
                 certify="exact conic", cross_check=True),  # fmt: skip
    "paper": dict(
        size=64, n_train=280, n_test=60, epochs=50, seeds=(0, 1, 2), steps=350, restarts=3, optimum_steps=700,
        certify="primal-dual", cross_check=False,
    ),
}
LR, RESTORE_LR, BATCH = 2e-3, 0.035, 280
CERTIFY_TOL = 1e-5  # relative certified gap of a restoration (at an interior-point solution)
#: Largest violation of dual feasibility (relative) for which the solver's multipliers count: the
#: interior-point solver's own feasibility tolerance (its multipliers miss the ReLU units' dual
#: constraints by about 1e-9 at these sizes); the affine minorant is a lower bound up to it.
DUAL_RESIDUAL_TOL = 1e-8
METHODS = ("exact conic", "primal-dual", "reference Adam")
PD_MAX_ITER = 100_000  # iterations of the primal-dual method per restoration batch


@dataclass
class Data:
    """Training rows (candidates, contexts, true energies) and the test set with its exact optima
    ``x_star`` ``(n, H, W)``, their conic solve times and the first-order cross-check."""

    train_x: torch.Tensor
    train_context: torch.Tensor
    train_energy: torch.Tensor
    test: Corrupted
    x_star: torch.Tensor
    e_star: torch.Tensor
    conic_time: float
    cross_check_gap: torch.Tensor
    cross_check_diff: torch.Tensor


def make_data(size: int, n_train: int, n_test: int, seed: int = 0, dtype=torch.float64) -> Data:
    """Patches, corruption, labelled candidates and the exact test optima."""
    train = corrupt(torch.as_tensor(image_patches("train", n_train, size, seed=seed), dtype=dtype), seed=seed + 100)
    test = corrupt(torch.as_tensor(image_patches("test", n_test, size, seed=seed), dtype=dtype), seed=seed + 200)
    cand = candidates(train, seed=seed + 300)  # (n, 16, H, W)
    k = cand.shape[1]
    Y, M = (t[:, None].expand_as(cand).reshape(-1, size, size) for t in (train.Y, train.M))
    energy = true_energy(cand.reshape(-1, size, size), Y, M)
    context = train.context[:, None].expand(-1, k, -1, -1, -1).reshape(-1, 2, size, size)
    exact = ExactRestoration(size, size)
    sols = [exact.solve(test.Y[i], test.M[i]) for i in range(n_test)]
    x_star = torch.stack([x for x, _ in sols])
    e_star = true_energy(x_star, test.Y, test.M)
    fo = first_order_optimum(test)
    return Data(
        train_x=cand.reshape(-1, 1, size, size),
        train_context=context,
        train_energy=energy,
        test=test,
        x_star=x_star,
        e_star=e_star,
        conic_time=float(sum(s.solve_time for _, s in sols)),
        cross_check_gap=fo.gap_bound,
        cross_check_diff=(fo.value - e_star).abs(),
    )


def train_family(family: str, data: Data, epochs: int, seed: int, device="cpu") -> tuple[ConvSOCICNN, EnergyFit]:
    """A freshly initialised, parameter-matched ``family`` trained by the reference protocol (in
    float32, the reference's precision and several times faster on CPU) on ``device``, returned
    in float64 (on ``device``) for restoration and certificates."""
    size = data.test.X.shape[-1]
    f32 = torch.float32
    cm = conv_family(family, (1, size, size), dtype=f32, seed=seed, device=device)
    x, c, e = (t.to(device=device, dtype=f32) for t in (data.train_x, data.train_context, data.train_energy))
    fit = fit_energy(cm, x, c, e, epochs=epochs, batch=BATCH, lr=LR, seed=seed)
    return cm.double(), fit


def adam_box(f, starts: list[torch.Tensor], steps: int, lr: float = RESTORE_LR) -> torch.Tensor:
    """The reference protocol: Adam on ``f`` (rows ``(N, d) -> (N,)``) from each start, clamped to
    ``[0, 1]`` after every step, keeping per row the end point of lowest ``f``."""
    best, best_val = None, None
    for x0 in starts:
        x = x0.clone().requires_grad_(True)
        opt = torch.optim.Adam([x], lr=lr)
        for _ in range(steps):
            opt.zero_grad()
            f(x).sum().backward()
            opt.step()
            with torch.no_grad():
                x.clamp_(0.0, 1.0)
        with torch.no_grad():
            val = f(x)
        if best is None:
            best, best_val = x.detach(), val
        else:
            better = val < best_val
            best = torch.where(better[:, None], x.detach(), best)
            best_val = torch.minimum(val, best_val)
    return best


@torch.no_grad()
def certificate(cm: ConvSOCICNN, context: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``(N,)`` certified bound on ``E_learned(x) - min_[0,1] E_learned`` (Frank-Wolfe bound from
    the readout subgradient of ``cm.at(context)`` at ``x``)."""
    return box_gap_bound(x, readout.readout(cm.at(context), x).grad, 0.0, 1.0)


def restore_certified(cm: ConvSOCICNN, test: Corrupted, solver: str = "clarabel") -> dict:
    """Minimise the learned energy over ``[0, 1]`` for every test observation exactly: the
    learned energy's conic lifting plus the box, compiled once (the contexts are parameters) and
    solved per image (:class:`~socicnn.energy.ExactBoxSolve`); any status but optimal raises,
    except ``optimal_inaccurate`` (the exponential cones of a softplus backbone), counted in
    ``inaccurate``: the certificate decides whether such an answer is certified.

    The certificate (:func:`~socicnn.energy.box_gap_bounds`) is the smaller of two bounds on
    ``E(x) - min E``: the solver-free one (``"strict"``: a Frank-Wolfe bound from the readout
    subgradient, or dual-feasible multipliers fitted on the tied kinks) and the affine minorant
    of the solver's own multipliers (``"dual"``), which the library checks for dual feasibility
    (counted only where their largest violation ``dual_residual`` is at most
    :data:`DUAL_RESIDUAL_TOL` relative). At a cone sitting at its kink ``u_c = 0`` any multiplier
    in a ball is optimal and the solver's interior point lies inside it, where a least-squares
    fit need not. Returns ``x`` ``(n, HW)``, the lifted optimal values, ``gap_bound``,
    ``converged`` (gap within :data:`CERTIFY_TOL` relative), how many rows the solver-free bound
    certifies alone (``certified_strict``), the solver's own solve time and the wall time.

    (``socicnn.inference.minimize`` is the library's certified minimiser, but its face Newton
    handles the kink rows densely and does not finish on these models' thousands of kinks in a
    chapter's budget.)"""
    with torch.no_grad():
        model = cm.at(test.context)
    t0 = time.perf_counter()
    sol = ExactBoxSolve(model, 0.0, 1.0, solver=solver).solve(accept_inaccurate=True)
    elapsed = time.perf_counter() - t0
    X = sol.x.to(test.Y.dtype)
    bounds = box_gap_bounds(model, X, 0.0, 1.0, sol.multipliers, tie_tol=1e-9)
    scale = bounds["value"].abs().clamp(min=1.0)
    gap = certified_gap(bounds, DUAL_RESIDUAL_TOL)
    return {
        "x": X,
        "lifted_value": torch.as_tensor(sol.solver_value, dtype=X.dtype),
        "gap_bound": gap,
        "converged": gap <= CERTIFY_TOL * scale,
        "certified_strict": int((bounds["strict"] <= CERTIFY_TOL * scale).sum()),
        "solver_time": float(np.sum(sol.solver_time)),
        "inaccurate": sum(st != cp.OPTIMAL for st in sol.status),
        "time": elapsed,
    }


def restore_primal_dual(cm: ConvSOCICNN, test: Corrupted) -> dict:
    """Minimise the learned energy over ``[0, 1]`` for every test observation with the matrix-free
    primal-dual method (``socicnn.inference.minimize(..., method="primal_dual")``, batched, from the
    observations) to a certified relative gap of :data:`CERTIFY_TOL`; its certificate comes from
    the dual iterate projected onto the blocks' dual sets (no solver output). The iterations run
    on a float32 copy of the energy (the precision it was trained in; about twice as fast on a
    CPU), the values and certificates in float64. Same keys as :func:`restore_certified`
    (``certified_strict`` counts every certified row: the bound trusts nothing but the model)."""
    test = _on_device(test, cm)
    n = test.Y.shape[0]
    with torch.no_grad():
        model = cm.at(test.context)
        work = copy.deepcopy(cm).float().at(test.context.float())
    t0 = time.perf_counter()
    res = minimize(model, Box(0.0, 1.0), test.Y.reshape(n, -1), tol=CERTIFY_TOL, method="primal_dual",
                   max_iter=PD_MAX_ITER, work_model=work)  # fmt: skip
    elapsed = time.perf_counter() - t0
    return {
        "x": res.x.cpu(),
        "gap_bound": res.gap_bound.cpu(),
        "converged": res.converged.cpu(),
        "certified_strict": int(res.converged.sum()),
        "iterations": int(res.iterations.max()),
        "time": elapsed,
    }


def restore_reference(cm: ConvSOCICNN, test: Corrupted, steps: int, restarts: int, seed: int) -> dict:
    """The reference's restoration: Adam (``steps``, lr 0.035) from the observation, a perturbed
    observation and uniform random images (``restarts`` starts), clamped to ``[0, 1]``; its
    Frank-Wolfe ``gap_bound`` (:func:`certificate`) says how far from optimal it stopped."""
    n = test.Y.shape[0]
    y = test.Y.reshape(n, -1)
    g = torch.Generator().manual_seed(seed)
    starts = [y, (y + 0.1 * torch.randn(y.shape, generator=g, dtype=y.dtype)).clamp(0, 1)]
    starts += [torch.rand(y.shape, generator=g, dtype=y.dtype) for _ in range(restarts - 2)]
    test = _on_device(test, cm)
    starts = [s.to(test.Y.device) for s in starts[:restarts]]
    t0 = time.perf_counter()
    x = adam_box(lambda z: cm(z, test.context), starts, steps)
    elapsed = time.perf_counter() - t0
    gap = certificate(cm, test.context, x)
    return {"x": x.cpu(), "gap_bound": gap.cpu(), "converged": (gap <= CERTIFY_TOL).cpu(), "time": elapsed}


def _on_device(test: Corrupted, cm: ConvSOCICNN) -> Corrupted:
    dev = next(cm.parameters()).device
    return Corrupted(test.X.to(dev), test.M.to(dev), test.Y.to(dev))


def _psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return 10 * torch.log10(1.0 / ((a - b) ** 2).mean((-2, -1)).clamp(min=1e-20))


def scores(x: torch.Tensor, data: Data) -> dict:
    """Per-image regret, relative regret, PSNR against the clean image and the optimum, RMSE."""
    test = data.test
    X = x.reshape(test.X.shape)
    e = true_energy(X, test.Y, test.M)
    regret = e - data.e_star
    return {
        "regret": regret,
        "relative_regret": regret / data.e_star,
        "psnr_clean": _psnr(X, test.X),
        "psnr_optimum": _psnr(X, data.x_star),
        "rmse_optimum": ((X - data.x_star) ** 2).mean((-2, -1)).sqrt(),
    }


def prepare(cfg: dict, data_seed: int = 0, log=print) -> tuple[Data, torch.Tensor]:
    """The data set of a profile's sizes and the reference's "optimum" energies (Adam on the true
    energy from the observation, no convergence check)."""
    data = make_data(cfg["size"], cfg["n_train"], cfg["n_test"], seed=data_seed)
    log(
        f"data: {cfg['n_train']} training and {cfg['n_test']} test patches of {cfg['size']}x{cfg['size']}, "
        f"{data.train_x.shape[0]} labelled candidates; exact optima in {data.conic_time:.3g} s of conic solves"
    )
    n, size = cfg["n_test"], cfg["size"]
    y = data.test.Y.reshape(n, -1)
    ref_opt = adam_box(
        lambda z: true_energy(z.reshape(n, size, size), data.test.Y, data.test.M), [y], cfg["optimum_steps"]
    )
    return data, true_energy(ref_opt.reshape(n, size, size), data.test.Y, data.test.M)


def run_case(cfg: dict, data: Data, e_ref_opt: torch.Tensor, family: str, seed: int, cross_check: bool,
             device="cpu", log=None) -> dict:  # fmt: skip
    """Train ``family`` with ``seed`` and restore every test image by the profile's certified
    method (and the other one with ``cross_check``) and the reference protocol. Returns the
    table rows, per-image scores, the cross-check row (or ``None``), the certified restorations
    and the trained model (on the CPU). ``log(message)``, if given, hears the end of each phase."""
    n, size = cfg["n_test"], cfg["size"]
    cm, fit = train_family(family, data, cfg["epochs"], seed, device=device)
    methods = [cfg["certify"]]
    if cross_check:
        methods += [m for m in ("exact conic", "primal-dual") if m != cfg["certify"]]
    log = log or (lambda message: None)
    log(f"{family} seed {seed}: trained in {fit.time / 60:.1f} min")
    done = {"reference Adam": restore_reference(cm, data.test, cfg["steps"], cfg["restarts"], seed)}
    if "primal-dual" in methods:
        done["primal-dual"] = restore_primal_dual(cm, data.test)
    cm = cm.cpu()  # the conic lifting and the scores run on the CPU
    if "exact conic" in methods:
        done["exact conic"] = restore_certified(cm, data.test)
    for method, res in done.items():
        counts = "" if method == "reference Adam" else f", {int(res['converged'].sum())} of {n} certified"
        counts += f", {res['iterations']} iterations" if "iterations" in res else ""
        log(f"{family} seed {seed}: {method} restorations in {res['time'] / 60:.1f} min{counts}")
    restorations = {m: done[m] for m in [*methods, "reference Adam"]}
    with torch.no_grad():  # the learned energy at every method's restoration
        e = {m: cm(res["x"], data.test.context) for m, res in restorations.items()}
    cross = None
    if {"exact conic", "primal-dual"} <= set(restorations):
        pd_ = restorations["primal-dual"]
        cross = {
            "family": family, "seed": seed,
            "certified": int(pd_["converged"].sum()), "iterations": pd_["iterations"],
            "max_gap_bound": float(pd_["gap_bound"].max()),
            "energy_diff": float(((e["primal-dual"] - e["exact conic"]).abs()
                                  / e["exact conic"].abs().clamp(min=1.0)).max()),
            "time": pd_["time"], "exact_time": restorations["exact conic"]["time"],
        }  # fmt: skip
    rows, per_image = [], []
    for method, res in restorations.items():
        sc_ = scores(res["x"], data)
        e_hat = data.e_star + sc_["regret"]
        with torch.no_grad():
            lifting_gap = (
                float((res["lifted_value"] - cm(res["x"], data.test.context)).abs().max())
                if "lifted_value" in res
                else float("nan")
            )
        rows.append(
            {
                "family": family,
                "seed": seed,
                "method": method,
                "parameters": cm.num_parameters(),
                "train_loss": fit.losses[-1],
                "train_time": fit.time,
                "restore_time": res["time"],
                "max_gap_bound": float(res["gap_bound"].max()),
                "max_gap_vs_certified": float((e[method] - e[cfg["certify"]]).max()),
                "certified": int(res["converged"].sum()),
                "certified_strict": res.get("certified_strict", 0),
                "inaccurate": res.get("inaccurate", 0),
                "iterations": res.get("iterations", 0),
                "lifting_vs_forward": lifting_gap,
                **{k: float(v.mean()) for k, v in sc_.items()},
                "regret_vs_reference_optimum": float((e_hat - e_ref_opt).mean()),
                "min_regret_vs_reference_optimum": float((e_hat - e_ref_opt).min()),
            }
        )
        for i in range(n):
            scores_i = {k: float(v[i]) for k, v in sc_.items()}
            per_image.append({"family": family, "seed": seed, "method": method, "image": i} | scores_i)
    return {
        "rows": rows,
        "per_image": per_image,
        "cross": cross,
        "example": restorations[cfg["certify"]]["x"].reshape(n, size, size),
        "model": cm,
        "summary": f"{family} seed {seed}: {cm.num_parameters()} parameters, regret "
        + ", ".join(f"{r['method']} {r['regret']:.2e}" for r in rows),
    }


def run(
    profile: str = "smoke", families=tuple(CONV_FAMILIES), seeds=None, data_seed: int = 0, log=print, device="cpu"
) -> dict:
    """The experiment: one data set, every family trained and restored for every seed. Returns
    the per-(family, seed) table, per-image scores, the reference protocol's own accounting,
    example restorations and the trained models of the first seed (on the CPU). Training, the
    primal-dual restorations and the reference protocol run on ``device``; the data, the conic
    solves and the scores on the CPU."""
    cfg = PROFILES[profile]
    seeds = cfg["seeds"] if seeds is None else seeds
    t0 = time.perf_counter()
    data, e_ref_opt = prepare(cfg, data_seed, log)
    rows, per_image, examples, models, cross = [], [], {}, {}, []
    for family in families:
        for seed in seeds:
            case = run_case(cfg, data, e_ref_opt, family, seed, cfg["cross_check"] and seed == seeds[0], device)
            rows += case["rows"]
            per_image += case["per_image"]
            if case["cross"] is not None:
                cross.append(case["cross"])
            if seed == seeds[0]:
                examples[family], models[family] = case["example"], case["model"]
            log(case["summary"])
    return {
        "config": {**cfg, "seeds": tuple(seeds), "profile": profile},
        "data": data,
        "table": pd.DataFrame(rows),
        "per_image": pd.DataFrame(per_image),
        "cross_check": pd.DataFrame(cross),
        "reference_optimum_gap": (e_ref_opt - data.e_star),
        "examples": examples,
        "models": models,
        "time": time.perf_counter() - t0,
    }


def main(argv: list[str] | None = None) -> None:
    """Run a profile (family, seed) by (family, seed), saving the table of the cases finished so
    far, with provenance, after each (``python -m socicnn.experiments.image_restoration paper
    --device cuda``); ``--resume`` keeps the cases an earlier run of the profile saved at ``--out``.
    Processes sharing the run: ``--families`` (or ``--skip N``, ``--limit K``) give each its own
    cases and its own ``--out``, and ``--merge A.csv B.csv`` joins their tables."""
    import argparse
    from functools import cache

    from ..results import add_share_arguments, output_dir, run_or_merge

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("profile", choices=tuple(PROFILES))
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", default=None, help="CSV path (default: image_restoration.csv in ./results-local or "
                    "$SOCICNN_OUT; pass the stored-results path to add to the tables shipped with the package)")
    ap.add_argument("--resume", action="store_true", help="keep the cases already saved at --out")
    ap.add_argument("--families", nargs="+", choices=tuple(CONV_FAMILIES), default=tuple(CONV_FAMILIES),
                    help="run only these families' cases, in this order, seed by seed (the table still counts "
                    "the whole profile's cases)")
    add_share_arguments(ap)
    args = ap.parse_args(argv)
    cfg = PROFILES[args.profile]

    checks: dict = {}  # run-wide records: the observation's and the exact optimum's scores

    @cache
    def data():  # built once, and only when a case is left to run
        built = prepare(cfg, 0, lambda m: print(m, flush=True))
        checks.setdefault("reference_scores", reference_scores(built[0]).to_dict(orient="index"))
        return built

    def run_one(case):
        family, seed = case
        res = run_case(cfg, *data(), family, seed, cfg["cross_check"] and seed == cfg["seeds"][0], args.device,
                       log=lambda m: print(m, flush=True))  # fmt: skip
        return pd.DataFrame(res["rows"]), res["summary"]

    config = {k: (list(v) if isinstance(v, tuple) else v) for k, v in cfg.items()}
    todo = [(f, s) for s in cfg["seeds"] for f in dict.fromkeys(args.families)]
    run_or_merge(ap, args, args.out or output_dir() / "image_restoration.csv", todo, run_one, _merge_checks,
                 profile=args.profile, device=args.device, resume=args.resume, checks=checks,
                 cases_total=len(cfg["seeds"]) * len(CONV_FAMILIES), **config)  # fmt: skip


def _merge_checks(into: dict, other: dict) -> None:
    """Parts of one run record the same data-wide scores (one data seed); keep the first recorded."""
    for key, value in other.items():
        into.setdefault(key, value)


def reference_scores(data: Data) -> pd.DataFrame:
    """The scores of :func:`scores` for the observation ``Y`` itself and for the exact optimum
    ``X*`` of the true energy (a row each, means over the test images): what a restoration is
    measured between."""
    rows = {"observation Y": data.test.Y.reshape(data.test.X.shape[0], -1), "exact optimum X*": data.x_star}
    out = pd.DataFrame({name: {k: float(v.mean()) for k, v in scores(x, data).items()} for name, x in rows.items()}).T
    out.loc["exact optimum X*", "psnr_optimum"] = float("inf")  # identical images (the score clamps the error)
    return out


def recorded_reference_scores(stored) -> pd.DataFrame | None:
    """The :func:`reference_scores` a runner recorded with a stored table
    (:class:`~socicnn.results.StoredTable`), or ``None`` where its runs did not record them."""
    scores_ = stored.meta["config"].get("checks", {}).get("reference_scores")
    return None if scores_ is None else pd.DataFrame.from_dict(scores_, orient="index")


def summarize(table: pd.DataFrame, method: str = "exact conic") -> pd.DataFrame:
    """Mean ± sd over seeds per family of the scores, times and certificate of ``method``."""
    cols = ["regret", "relative_regret", "psnr_clean", "psnr_optimum", "rmse_optimum", "restore_time", "max_gap_bound"]
    grouped = table[table["method"] == method].groupby("family", sort=False)
    out = pd.DataFrame({"parameters": grouped["parameters"].first()})
    for c in cols:
        out[c] = mean_sd(grouped[c].mean(), grouped[c].std(ddof=1))
    return out


def to_numpy(t: torch.Tensor) -> np.ndarray:
    """A float64 NumPy copy (for figures)."""
    return t.detach().to("cpu", torch.float64).numpy()


if __name__ == "__main__":
    main()
