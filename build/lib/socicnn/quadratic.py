"""Quadratic blocks ``f_Q(x) = (alpha / 2) ||B x + e||^2`` with ``alpha >= 0`` (MATH.md §1-3).

Lifting: an epigraph variable ``s`` with ``||q||^2 <= 2 s`` (a rotated second-order cone),
objective ``alpha * s``, where ``q = B x + e``. Multiplier: ``p = alpha * q`` (unique), dual
term ``p^T q - ||p||^2 / (2 alpha)``; slope ``B^T p``; Hessian ``alpha B^T B``.
"""

from __future__ import annotations

from dataclasses import dataclass

import cvxpy as cp
import numpy as np
import torch
from torch import nn

from .blocks import BlockLift, ConvexBlock, DualSetLift, affine_image, to_numpy


@dataclass
class QuadraticState:
    """``q = B x + e`` and ``p = alpha q``, both ``(N, k)``."""

    q: torch.Tensor
    p: torch.Tensor


class QuadraticBlock(ConvexBlock):
    """``(alpha / 2) ||B x + e||^2`` with ``alpha = |alpha_raw| >= 0`` by construction.

    Args:
        in_dim: input dimension ``d``.
        dim: rank ``k`` of ``B`` (rows).
        generator, dtype, device: initialisation and placement.
    """

    kind = "p"

    def __init__(
        self,
        in_dim: int,
        dim: int,
        *,
        generator: torch.Generator | None = None,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        self.in_dim, self.dim = in_dim, dim
        kw = {"dtype": dtype or torch.get_default_dtype(), "device": device}
        g = torch.randn(dim * in_dim + dim, generator=generator, dtype=torch.float64)
        self.B = nn.Parameter((g[: dim * in_dim].view(dim, in_dim) * in_dim**-0.5).to(**kw))
        self.e = nn.Parameter((0.1 * g[dim * in_dim :]).to(**kw))
        self.alpha_raw = nn.Parameter(torch.ones((), **kw))

    @property
    def alpha(self) -> torch.Tensor:
        return self.alpha_raw.abs()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q = affine_image(x, self.B, self.e)
        return (0.5 * self.alpha) * torch.linalg.vecdot(q, q)

    def state(self, x: torch.Tensor, tol: float = 0.0) -> QuadraticState:
        q = affine_image(x, self.B, self.e)
        return QuadraticState(q=q, p=self.alpha * q)

    def multipliers(self, st: QuadraticState) -> torch.Tensor:
        return st.p

    def dual_slope(self, mult: torch.Tensor) -> torch.Tensor:
        return affine_image(mult, self.B.T)

    def optimal_dual_set(self, st: QuadraticState, tol: float) -> DualSetLift:
        """``p = alpha q`` is the unique optimal multiplier: a constant."""
        return DualSetLift([], to_numpy(self.B).T @ to_numpy(st.p[0]))

    def sample_optimal_duals(
        self, st: QuadraticState, n: int, tol: float, generator: torch.Generator
    ) -> torch.Tensor:
        return st.p.expand(n, -1)

    def curvature_factor(self) -> torch.Tensor:
        """``sqrt(alpha) B`` ``(k, d)``: the Hessian ``alpha B^T B`` is the same at every ``x``."""
        return self.alpha.sqrt() * self.B

    def hessian(self, st: QuadraticState, out: torch.Tensor | None = None) -> torch.Tensor:
        F = self.curvature_factor()
        H = F.T @ F
        return H.expand(st.q.shape[0], -1, -1) if out is None else out.add_(H)

    def hvp(self, st: QuadraticState, w: torch.Tensor) -> torch.Tensor:
        F = self.curvature_factor()
        return affine_image(w, F) @ F

    def directional(self, st: QuadraticState, delta: torch.Tensor, tol: float) -> torch.Tensor:
        return torch.linalg.vecdot(st.p, affine_image(delta, self.B))

    def margin(self, st: QuadraticState) -> None:
        return None  # smooth everywhere

    def dual_value(self, x: torch.Tensor, mult: torch.Tensor) -> torch.Tensor:
        q = affine_image(x, self.B, self.e)
        alpha = self.alpha
        # alpha = 0 forces p = 0 (dual_residual reports otherwise); its conjugate term is 0.
        penalty = torch.where(alpha > 0, (mult * mult).sum(-1) / (2 * alpha.clamp_min(1e-300)), 0.0)
        return torch.linalg.vecdot(mult, q) - penalty

    def dual_residual(self, mult: torch.Tensor) -> torch.Tensor:
        if float(self.alpha) > 0:
            return torch.zeros(mult.shape[0], dtype=mult.dtype, device=mult.device)
        return mult.abs().amax(dim=1)

    def numpy_weights(self) -> dict:
        return {"alpha": float(to_numpy(self.alpha)), "B": to_numpy(self.B), "e": to_numpy(self.e)}

    def lift(self, x) -> BlockLift:
        """``min alpha s`` s.t. ``q = B x + e``, ``||q||^2 <= 2 s`` as the SOC
        ``||(2 q, 2 s - 1)|| <= 2 s + 1``. The dual of ``q = B x + e`` is ``p``."""
        w = self.numpy_weights()
        q = cp.Variable(self.dim)
        s = cp.Variable()
        link = q == w["B"] @ x + w["e"]
        cone = cp.SOC(2 * s + 1, cp.hstack([2 * q, cp.reshape(2 * s - 1, (1,), order="C")]))

        def read() -> np.ndarray:
            return -np.asarray(link.dual_value, dtype=float).reshape(-1)

        return BlockLift(w["alpha"] * s, [link, cone], read)
