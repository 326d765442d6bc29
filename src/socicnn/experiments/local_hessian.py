"""Local Hessians from the readout (the chapter 'Local Hessians'; paper B).

Away from ties the backbone is locally affine, so the Hessian is that of the quadratic and norm
blocks alone. Checked against the autograd Hessian (``torch.func``), for positive
semidefiniteness, and by the second-order Taylor residual
``|f(x + δ) - f(x) - gᵀδ - ½ δᵀHδ|``, which must decay like ``‖δ‖³`` wherever the ReLU
activation pattern is the same at ``x`` and ``x + δ``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch

from ..model import SOCICNN
from ..readout import hessian, readout
from .readout_timing import autograd_hessian

__all__ = ["compare_hessians", "fitted_order", "taylor_residuals"]


@torch.no_grad()
def compare_hessians(model: SOCICNN, X: torch.Tensor) -> pd.DataFrame:
    """One row per input: relative Frobenius error of the readout Hessian vs autograd, its
    smallest and largest eigenvalues, and the input's margin."""
    H = hessian(model, X)
    H_auto = autograd_hessian(model, X).detach()
    err = torch.linalg.matrix_norm(H - H_auto) / torch.linalg.matrix_norm(H_auto).clamp_min(1e-300)
    eig = torch.linalg.eigvalsh(0.5 * (H + H.transpose(1, 2)))
    return pd.DataFrame(
        {
            "frob_rel_err": err.cpu().double().numpy(),
            "min_eig": eig[:, 0].cpu().double().numpy(),
            "max_eig": eig[:, -1].cpu().double().numpy(),
            "asymmetry": (H - H.transpose(1, 2)).abs().amax(dim=(1, 2)).cpu().double().numpy(),
            "margin": readout(model, X).margins.cpu().double().numpy(),
        }
    )


@torch.no_grad()
def taylor_residuals(
    model: SOCICNN, X: torch.Tensor, radii: Sequence[float], n_samples: int, seed: int = 0
) -> pd.DataFrame:
    """Second-order Taylor residuals at ``n_samples`` random ``(x, δ)`` per radius.

    ``x`` is drawn from the rows of ``X``, ``δ = radius * s`` with ``s`` uniform on the unit
    sphere; the same ``(x, s)`` pairs are used at every radius.
    Columns: ``radius, residual, pattern_same`` (the ReLU activation pattern is identical at
    ``x`` and ``x + δ``; only then is the local Hessian the whole second-order story).
    """
    gen = torch.Generator().manual_seed(seed)
    # The same (x, direction) pairs at every radius, so that the decay is measured sample by
    # sample rather than blurred by a fresh random draw per radius.
    idx = torch.randint(0, X.shape[0], (n_samples,), generator=gen)
    x = X[idx.to(X.device)]
    s = torch.randn(n_samples, model.in_dim, generator=gen, dtype=torch.float64)
    s = (s / s.norm(dim=1, keepdim=True)).to(dtype=X.dtype, device=X.device)
    ro = readout(model, x)
    H = hessian(model, x)
    rows = []
    for radius in radii:
        delta = radius * s
        quad = 0.5 * torch.einsum("ni,nij,nj->n", delta, H, delta)
        residual = (model(x + delta) - ro.value - (ro.grad * delta).sum(1) - quad).abs()
        before = model.backbone.preactivations(x)
        after = model.backbone.preactivations(x + delta)
        same = torch.stack([((a > 0) == (b > 0)).all(dim=1) for a, b in zip(before, after, strict=True)]).all(0)
        rows.append(
            pd.DataFrame(
                {
                    "radius": radius,
                    "residual": residual.cpu().double().numpy(),
                    "pattern_same": same.cpu().numpy(),
                }
            )
        )
    return pd.concat(rows, ignore_index=True)


def fitted_order(residuals: pd.DataFrame) -> tuple[float, pd.DataFrame]:
    """Least-squares slope of ``log(median residual)`` vs ``log(radius)`` over the samples with
    an unchanged pattern, and the per-radius table it was fitted to."""
    kept = residuals[residuals.pattern_same]
    table = kept.groupby("radius").residual.agg(["median", "max", "count"]).reset_index()
    table["kept_fraction"] = table["count"].to_numpy() / residuals.groupby("radius").size().to_numpy()
    slope = float(np.polyfit(np.log(table["radius"]), np.log(table["median"]), 1)[0])
    return slope, table
