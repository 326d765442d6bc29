"""Independent witnesses for the readout's derivatives: autograd and finite differences.

Written here, not imported from the library under test, so that a bug shared by the library's
own helpers cannot make a test agree with itself.
"""

from __future__ import annotations

import torch


def autograd_gradient(model, X: torch.Tensor) -> torch.Tensor:
    """``(N, d)`` gradients by one forward and one backward pass."""
    Xr = X.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        (g,) = torch.autograd.grad(model(Xr).sum(), Xr)
    return g


def autograd_hessian(model, X: torch.Tensor) -> torch.Tensor:
    """``(N, d, d)`` Hessians by double backward, one row of one point at a time."""
    Xr = X.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        (g,) = torch.autograd.grad(model(Xr).sum(), Xr, create_graph=True)
        rows = []
        for i in range(X.shape[1]):
            # a piecewise-linear model's gradient may not depend on x at all: its row is zero
            (h,) = torch.autograd.grad(g[:, i].sum(), Xr, retain_graph=True, allow_unused=True)
            rows.append(torch.zeros_like(X) if h is None else h)
    return torch.stack(rows, 1)


def autograd_hvp(model, X: torch.Tensor, V: torch.Tensor) -> torch.Tensor:
    """``(N, d)`` Hessian-vector products by double backward."""
    Xr = X.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        (g,) = torch.autograd.grad(model(Xr).sum(), Xr, create_graph=True)
        (hv,) = torch.autograd.grad((g * V).sum(), Xr)
    return hv


@torch.no_grad()
def central_differences(model, X: torch.Tensor, step: float = 1e-6) -> torch.Tensor:
    """``(N, d)`` central finite-difference gradients ``(f(x + h e_i) - f(x - h e_i)) / 2h``."""
    n, d = X.shape
    E = step * torch.eye(d, dtype=X.dtype, device=X.device)
    plus = model((X[:, None, :] + E).reshape(-1, d)).reshape(n, d)
    minus = model((X[:, None, :] - E).reshape(-1, d)).reshape(n, d)
    return (plus - minus) / (2 * step)


def dual_objective_by_hand(w, x: torch.Tensor, nu, p, r) -> torch.Tensor:
    """``(N,)`` the dual objective of the lifted program written out from the effective weights
    ``w`` (an ``SOCICNNWeights``, ReLU backbone): ``v^T x + b0 + sum_l nu_l^T (W_l x + b_l)
    + sum_h [p_h^T q_h - ||p_h||^2 / (2 alpha_h)] + sum_g r_g^T u_g``."""
    val = x @ w.v + w.b0
    for l, n in enumerate(nu):
        aff = w.b[l] + (x @ w.W[l].T if w.W[l] is not None else 0.0)
        val = val + (n * aff).sum(-1)
    for (alpha, B, e), ph in zip(w.quad, p, strict=True):
        val = val + (ph * (x @ B.T + e)).sum(-1) - (ph**2).sum(-1) / (2 * alpha)
    for (_, A, d), rg in zip(w.norm, r, strict=True):
        val = val + (rg * (x @ A.T + d)).sum(-1)
    return val


def dual_residual_by_hand(w, nu, r) -> torch.Tensor:
    """``(N,)`` the largest violation of ``0 <= nu_L <= c``, ``0 <= nu_l <= U_{l+1}^T nu_{l+1}``
    and ``||r_g|| <= lam_g`` (0 when all hold)."""
    parts = [(-nu[-1]).amax(-1), (nu[-1] - w.c).amax(-1)]
    for l in range(len(nu) - 1):
        parts += [(-nu[l]).amax(-1), (nu[l] - nu[l + 1] @ w.U[l + 1]).amax(-1)]
    parts += [torch.linalg.vector_norm(rg, dim=-1) - lam for (lam, _, _), rg in zip(w.norm, r, strict=True)]
    return torch.stack(parts, 0).amax(0).clamp(min=0.0)
