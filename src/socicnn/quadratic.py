"""Quadratic blocks ``f_Q(x) = (alpha / 2) ||B x + e||^2`` with ``alpha >= 0``.

Lifting: an epigraph variable ``s`` with ``||q||^2 <= 2 s`` (a rotated second-order cone),
objective ``alpha * s``, where ``q = B x + e``. Multiplier: ``p = alpha * q`` (unique), dual
term ``p^T q - ||p||^2 / (2 alpha)``; slope ``B^T p``; Hessian ``alpha B^T B``. Per-row data:
the offset ``e`` and the scaling ``alpha >= 0``.
"""

from __future__ import annotations

from dataclasses import dataclass

import cvxpy as cp
import numpy as np
import torch

from .blocks import BlockLift, DualSetLift, SmoothBlock, affine_image, dense_affine_parameters, to_numpy


@dataclass
class QuadraticState:
    """``q = B x + e`` and ``p = alpha q``, both ``(N, k)``."""

    q: torch.Tensor
    p: torch.Tensor


def _col(t: torch.Tensor) -> torch.Tensor:
    """A scalar or per-row ``(N,)`` scaling, shaped to multiply ``(N, k)`` rows."""
    return t if t.ndim == 0 else t[:, None]


class QuadraticBlock(SmoothBlock):
    """``(alpha / 2) ||B x + e||^2`` with ``alpha = |alpha_raw| >= 0`` by construction.

    Args:
        in_dim: input dimension ``d``.
        dim: rank ``k`` of ``B`` (rows).
        generator, dtype, device: initialisation and placement.
    """

    multiplier_name = "p"
    nonnegative_data = ("alpha",)

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
        self.B, self.e, self.alpha_raw = dense_affine_parameters(in_dim, dim, generator, dtype, device)

    def default_data(self) -> dict[str, torch.Tensor]:
        return {"e": self.e, "alpha": self.alpha_raw.abs()}

    @property
    def alpha(self) -> torch.Tensor:
        """``alpha >= 0``: shared ``()``, or ``(N,)`` when bound per row."""
        return self.data("alpha")

    def _state_rows(self, st: QuadraticState) -> torch.Tensor:
        return st.q

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q = affine_image(x, self.B, self.data("e"))
        return (0.5 * self.alpha) * torch.linalg.vecdot(q, q)

    def state(self, x: torch.Tensor, tol: float = 0.0) -> QuadraticState:
        q = affine_image(x, self.B, self.data("e"))
        return QuadraticState(q=q, p=_col(self.alpha) * q)

    def multipliers(self, st: QuadraticState) -> torch.Tensor:
        return st.p

    def dual_slope(self, mult: torch.Tensor) -> torch.Tensor:
        return affine_image(mult, self.B.T)

    def optimal_dual_set(self, st: QuadraticState, tol: float) -> DualSetLift:
        """``p = alpha q`` is the unique optimal multiplier: a constant."""
        return DualSetLift([], to_numpy(self.B).T @ to_numpy(st.p[0]))

    def sample_optimal_duals(self, st: QuadraticState, n: int, tol: float, generator: torch.Generator) -> torch.Tensor:
        return st.p.expand(n, -1)

    def curvature_factor(self) -> torch.Tensor | None:
        """``sqrt(alpha) B`` ``(k, d)`` when ``alpha`` is shared by every row, else ``None``."""
        alpha = self.alpha
        return None if alpha.ndim else alpha.sqrt() * self.B

    def _factors(self, n: int) -> torch.Tensor:
        """``sqrt(alpha) B`` per row, ``(n, k, d)``."""
        alpha = self.alpha
        if alpha.ndim == 0:
            return (alpha.sqrt() * self.B).expand(n, -1, -1)
        return alpha.sqrt()[:, None, None] * self.B

    def hessian(self, st: QuadraticState, out: torch.Tensor | None = None) -> torch.Tensor:
        alpha = self.alpha
        BtB = self.B.T @ self.B
        H = (alpha * BtB).expand(st.q.shape[0], -1, -1) if alpha.ndim == 0 else alpha[:, None, None] * BtB
        return H if out is None else out.add_(H)

    def hvp(self, st: QuadraticState, w: torch.Tensor) -> torch.Tensor:
        return affine_image(_col(self.alpha) * affine_image(w, self.B), self.B.T)

    def directional(self, st: QuadraticState, delta: torch.Tensor, tol: float) -> torch.Tensor:
        return torch.linalg.vecdot(st.p, affine_image(delta, self.B))

    def dual_value(self, x: torch.Tensor, mult: torch.Tensor) -> torch.Tensor:
        q = affine_image(x, self.B, self.data("e"))
        alpha = self.alpha
        # alpha = 0 forces p = 0 (dual_residual reports otherwise); its conjugate term is 0.
        penalty = torch.where(alpha > 0, (mult * mult).sum(-1) / (2 * alpha.clamp_min(1e-300)), 0.0)
        return torch.linalg.vecdot(mult, q) - penalty

    def dual_residual(self, mult: torch.Tensor) -> torch.Tensor:
        return torch.where(self.alpha > 0, 0.0, mult.abs().amax(dim=1))

    def _pd_map(self):
        return self.B

    def pd_affine(self, x, aux):
        return [affine_image(x, self.B, self.data("e"))]

    def pd_prox(self, w, sigma):
        alpha = _col(self.alpha).to(w[0].dtype)
        return [w[0] * torch.where(alpha > 0, alpha / (alpha + sigma[0]), 0.0)]

    def face_curvature(self, st: QuadraticState, pattern: torch.Tensor) -> torch.Tensor:
        return self._factors(st.q.shape[0])

    def face_hvp(self, st: QuadraticState, pattern: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return self.hvp(st, w)

    def numpy_weights(self) -> dict:
        return {"B": to_numpy(self.B)}

    def lift(self, x, data) -> BlockLift:
        return quadratic_lift(self.numpy_weights()["B"], x, data)


def quadratic_lift(B, x, data) -> BlockLift:
    """``min alpha s`` s.t. ``q = B x + e``, ``||q||^2 <= 2 s`` as the SOC
    ``||(2 q, 2 s - 1)|| <= 2 s + 1``, for a dense or sparse ``B``; the dual of ``q = B x + e``
    is ``p``."""
    q = cp.Variable(B.shape[0])
    s = cp.Variable()
    link = q == B @ x + data["e"]
    cone = cp.SOC(2 * s + 1, cp.hstack([2 * q, cp.reshape(2 * s - 1, (1,), order="C")]))

    def read() -> np.ndarray:
        return -np.asarray(link.dual_value, dtype=float).reshape(-1)

    return BlockLift(data["alpha"] * s, [link, cone], read)
