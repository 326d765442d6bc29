"""LP-ICNN equivalence and expressivity (the chapter 'ReLU-ICNNs are LP value functions').

- :func:`affine_pieces` / :func:`piece_values`: a ReLU-ICNN is the maximum of the affine
  functions ``x -> dual objective at nu``, one per vertex ``nu`` of its dual polytope that is
  optimal somewhere; the canonical multipliers at a set of anchor points give those vertices.
- :func:`relu_width_sweep`: ReLU-ICNNs of increasing width fitted to such a target, whose error
  only decays with width (a ReLU-ICNN is piecewise linear, the targets are not);
  :func:`expressivity_sweep` repeats it over targets, dimensions and seeds.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pandas as pd
import torch

from ..model import SOCICNN, ReLUICNN
from ..profiles import one_thread_on_cpu, resolve_device
from ..readout import dual_objective, readout
from ..train import fit, mse

__all__ = [
    "TARGETS",
    "affine_pieces",
    "expressivity_sweep",
    "parameter_ratio",
    "piece_values",
    "relu_width_sweep",
]


def _half_squared_norm(X: torch.Tensor) -> torch.Tensor:
    return 0.5 * (X * X).sum(-1)


def _euclidean_norm(X: torch.Tensor) -> torch.Tensor:
    return torch.sqrt((X * X).sum(-1))


#: Targets ``(N, d) -> (N,)`` by name, with the block that represents each exactly
#: (``1/2 ||x||^2`` is a quadratic block with ``B = I``, ``||x||`` a norm block with ``A = I``).
TARGETS: dict[str, tuple[Callable[[torch.Tensor], torch.Tensor], str]] = {
    "half_squared_norm": (_half_squared_norm, "quadratic"),
    "norm": (_euclidean_norm, "norm"),
}


def _target(name: str) -> tuple[Callable[[torch.Tensor], torch.Tensor], str]:
    if name not in TARGETS:
        raise ValueError(f"unknown target {name!r}; choose one of {sorted(TARGETS)}")
    return TARGETS[name]


# --------------------------------------------------------------------------- affine pieces
@torch.no_grad()
def affine_pieces(model: SOCICNN, anchors: torch.Tensor) -> list[torch.Tensor]:
    """Distinct canonical backbone multipliers ``nu`` at the anchor points ``(N, d)``.

    Returns one ``(K, m_l)`` tensor per layer: the ``K`` distinct dual vertices met at the
    anchors (each one optimal at the anchors that produced it). ReLU-ICNNs only.
    """
    if model.quad_dims or model.norm_dims:
        raise ValueError("affine_pieces needs a ReLU-ICNN (no quadratic or norm blocks)")
    nu = readout(model, anchors).nu
    sizes = [n.shape[1] for n in nu]
    distinct = torch.unique(torch.cat(nu, dim=1), dim=0)
    return list(torch.split(distinct, sizes, dim=1))


@torch.no_grad()
def piece_values(model: SOCICNN, pieces: list[torch.Tensor], X: torch.Tensor) -> torch.Tensor:
    """``(K, N)``: the dual objective of each piece ``nu_k`` (affine in ``x``) at the points ``X``.

    Each row is a lower bound on ``f`` (weak duality); their maximum equals ``f`` wherever one
    of the pieces is optimal.
    """
    x2, _ = model.check_input(X)
    rows = []
    for k in range(pieces[0].shape[0]):
        nu_k = [n[k].expand(x2.shape[0], -1) for n in pieces]
        rows.append(dual_objective(model, x2, nu_k, [], []))
    return torch.stack(rows, 0)


# --------------------------------------------------------------------------- width sweep
def relu_width_sweep(
    target: str,
    in_dim: int,
    widths: Sequence[int],
    *,
    depth: int = 2,
    with_block_model: bool = True,
    n_train: int = 2000,
    n_val: int = 500,
    n_test: int = 2000,
    box: float = 2.0,
    steps: int = 1500,
    batch_size: int = 256,
    lr: float = 3e-2,
    seed: int = 0,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float64,
) -> pd.DataFrame:
    """Fit ReLU-ICNNs of each width (``depth`` layers, passthrough) to ``target`` on
    ``x ~ U[-box, box]^d`` with :func:`socicnn.train.fit` (Adam, cosine schedule, best
    validation state kept), and report the test error.

    With ``with_block_model``, an SOC-ICNN with the smallest backbone width plus the one block
    that represents ``target`` exactly (rank ``d``) is trained the same way, for contrast.

    Returns one row per model: ``model, width, params, test_mse, test_rel_l2``
    (``||pred - y|| / ||y||``), ``best_step, train_time``.
    """
    fn, block = _target(target)
    if not widths or any(int(w) <= 0 for w in widths):
        raise ValueError(f"widths must be a non-empty sequence of positive integers, got {widths!r}")
    dev = device if isinstance(device, torch.device) else resolve_device(device)
    gen = torch.Generator().manual_seed(int(seed))
    X = (2 * torch.rand(n_train + n_val + n_test, in_dim, generator=gen, dtype=torch.float64) - 1) * box
    X = X.to(dtype)
    y = fn(X)
    splits = torch.split(torch.arange(X.shape[0]), [n_train, n_val, n_test])
    (Xtr, ytr), (Xva, yva), (Xte, yte) = [(X[i], y[i]) for i in splits]
    models = [("relu-icnn", int(w), ReLUICNN(in_dim, (int(w),) * depth, dtype=dtype, seed=seed)) for w in widths]
    if with_block_model:
        dims = {"quad_dims": (in_dim,)} if block == "quadratic" else {"norm_dims": (in_dim,)}
        w0 = int(min(widths))
        models.append(("soc-icnn", w0, SOCICNN(in_dim, (w0,) * depth, dtype=dtype, seed=seed, **dims)))
    rows = []
    with one_thread_on_cpu(dev):
        for name, width, model in models:
            res = fit(
                model, Xtr, ytr, Xva, yva, steps=steps, batch_size=batch_size, lr=lr,
                schedule="cosine", device=dev, seed=seed,
            )
            trained = res.model.to("cpu")
            with torch.no_grad():
                rel = float(torch.linalg.vector_norm(trained(Xte) - yte) / torch.linalg.vector_norm(yte))
            rows.append(
                {
                    "model": name,
                    "width": width,
                    "params": trained.num_parameters(),
                    "test_mse": mse(trained, Xte, yte),
                    "test_rel_l2": rel,
                    "best_step": res.best_step,
                    "train_time": res.train_time,
                }
            )
    return pd.DataFrame(rows)


def expressivity_sweep(
    targets: Sequence[str], dims: Sequence[int], seeds: Sequence[int], widths: Sequence[int], **kwargs
) -> pd.DataFrame:
    """:func:`relu_width_sweep` for every target, input dimension and seed (``kwargs`` passed
    on), as one table with ``target, d, seed`` columns added."""
    if not targets or not dims or not seeds:
        raise ValueError("targets, dims and seeds must be non-empty")
    tables = [
        relu_width_sweep(t, int(d), widths, seed=int(s), **kwargs).assign(target=t, d=int(d), seed=int(s))
        for t in targets
        for d in dims
        for s in seeds
    ]
    return pd.concat(tables, ignore_index=True)


def parameter_ratio(table: pd.DataFrame) -> str:
    """A sentence with the range over ``(target, d)`` of an :func:`expressivity_sweep` table of the
    widest ReLU-ICNN's parameter count divided by the block model's (the SOC-ICNN)."""
    params = table.groupby(["target", "d", "model", "width"])["params"].first().reset_index()
    relu = params[params["model"] == "relu-icnn"].sort_values("width").groupby(["target", "d"])["params"].last()
    soc = params[params["model"] == "soc-icnn"].set_index(["target", "d"])["params"]
    ratio = (relu / soc).dropna()
    if ratio.empty:
        raise ValueError("the table has no (target, d) cell with both a ReLU-ICNN and the block model")
    return (f"the widest ReLU-ICNN has {ratio.min():.0f}x to {ratio.max():.0f}x the parameters of the block model "
            f"({int(soc.min())} to {int(soc.max())} parameters) over the {len(ratio)} (target, d) cells")
