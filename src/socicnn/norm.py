"""Norm (conic) blocks ``f_N(x) = lam ||A x + d||_2`` with ``lam >= 0``.

Lifting: an epigraph variable ``t`` with ``||u|| <= t`` (a second-order cone), objective
``lam * t``, where ``u = A x + d``. Multiplier: ``r = lam u / ||u||`` when ``u != 0``; any
``||r|| <= lam`` is optimal at ``u = 0``, where the canonical selector takes ``r = 0``.
Slope ``A^T r``; local Hessian ``(lam / ||u||) A^T (I - u_hat u_hat^T) A`` where ``u != 0``.
Its kink is ``u = 0`` (all ``n`` coordinates of ``u`` at once), where the multiplier may be any
``||r|| <= lam``; inference steps onto that face by the linear constraints ``u + A dx = 0``.
Per-row data: the offset ``d`` and the scaling ``lam >= 0``.
"""

from __future__ import annotations

from dataclasses import dataclass

import cvxpy as cp
import numpy as np
import torch

from .blocks import (
    BlockLift,
    ConvexBlock,
    DualSetLift,
    FaceDuals,
    affine_image,
    dense_affine_parameters,
    project_balls,
    to_numpy,
)


@dataclass
class NormState:
    """``u = A x + d`` ``(N, n)``, ``||u||`` ``(N,)``, ``1 / ||u||`` (0 at ties) and ``r``."""

    u: torch.Tensor
    norm: torch.Tensor
    inv_norm: torch.Tensor  # (N,) 1 / ||u|| where ||u|| > tol, else 0.0
    smooth: torch.Tensor  # (N,) 1.0 where ||u|| > tol, else 0.0
    r: torch.Tensor

    @property
    def u_hat(self) -> torch.Tensor:
        """``u / ||u||`` ``(N, n)``, 0 at ties (formed on access; the readout rarely needs it)."""
        return self.u * self.inv_norm[:, None]


class NormBlock(ConvexBlock):
    """``lam ||A x + d||`` with ``lam = |lam_raw| >= 0`` by construction.

    Args:
        in_dim: input dimension ``d``.
        dim: number of rows ``n`` of ``A``.
        generator, dtype, device: initialisation and placement.
    """

    multiplier_name = "r"
    nonnegative_data = ("lam",)

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
        self.A, self.d, self.lam_raw = dense_affine_parameters(in_dim, dim, generator, dtype, device)

    def default_data(self) -> dict[str, torch.Tensor]:
        return {"d": self.d, "lam": self.lam_raw.abs()}

    @property
    def lam(self) -> torch.Tensor:
        """``lam >= 0``: shared ``()``, or ``(N,)`` when bound per row."""
        return self.data("lam")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lam * _row_norms(affine_image(x, self.A, self.data("d")))

    def state(self, x: torch.Tensor, tol: float = 0.0) -> NormState:
        u = affine_image(x, self.A, self.data("d"))
        norm = _row_norms(u)
        smooth = norm > tol
        # Guarded division: at ties u_hat = 0, so r = 0 (the canonical selector).
        inv_norm = smooth / torch.where(smooth, norm, torch.ones_like(norm))
        r = u * (self.lam * inv_norm)[:, None]
        return NormState(u=u, norm=norm, inv_norm=inv_norm, smooth=smooth.to(u.dtype), r=r)

    def multipliers(self, st: NormState) -> torch.Tensor:
        return st.r

    def dual_slope(self, mult: torch.Tensor) -> torch.Tensor:
        return affine_image(mult, self.A.T)

    def optimal_dual_set(self, st: NormState, tol: float) -> DualSetLift:
        """``r = lam u / ||u||`` (a constant) where ``||u|| > tol``; any ``||r|| <= lam`` at a tie."""
        A = to_numpy(self.A)
        if float(st.smooth[0]) > 0:
            return DualSetLift([], A.T @ to_numpy(st.r[0]))
        r = cp.Variable(self.dim)
        lam = self.lam
        lam = float(to_numpy(lam if lam.ndim == 0 else lam[0]))
        return DualSetLift([cp.SOC(cp.Constant(lam), r)], A.T @ r)

    def sample_optimal_duals(self, st: NormState, n: int, tol: float, generator: torch.Generator) -> torch.Tensor:
        """At a tie, ``r = lam * rho * s`` with ``s`` uniform on the sphere and ``rho``
        uniform in the ball's radial law, or ``rho = 1`` (the boundary) with probability 1/2."""
        if float(st.smooth[0]) > 0:
            return st.r.expand(n, -1)
        s = torch.randn(n, self.dim, generator=generator, dtype=torch.float64)
        s = s / torch.linalg.vector_norm(s, dim=1, keepdim=True)
        rho = torch.rand(n, 1, generator=generator, dtype=torch.float64) ** (1.0 / self.dim)
        rho = torch.where(torch.rand(n, 1, generator=generator, dtype=torch.float64) < 0.5, 1.0, rho)
        lam = self.lam if self.lam.ndim == 0 else self.lam[0]
        return (rho * s).to(st.r.dtype).to(st.r.device) * lam

    def _curvature(self, st: NormState) -> torch.Tensor:
        """``lam / ||u||`` where smooth, 0 at ties, ``(N,)``."""
        return self.lam * st.inv_norm

    def hessian(self, st: NormState, out: torch.Tensor | None = None) -> torch.Tensor:
        k = self._curvature(st)
        uA = st.u_hat @ self.A  # (N, d)
        if out is None:
            out = torch.zeros(k.shape[0], self.in_dim, self.in_dim, dtype=k.dtype, device=k.device)
        out.addcmul_(k[:, None, None], (self.A.T @ self.A)[None])
        return out.addcmul_((k[:, None] * uA)[:, :, None], uA[:, None, :], value=-1)

    def hvp(self, st: NormState, w: torch.Tensor) -> torch.Tensor:
        Aw = affine_image(w, self.A)
        k = self._curvature(st)
        # k (I - u_hat u_hat^T) A w = k A w - (k / ||u||^2) (u^T A w) u, then A^T of it.
        along = k * st.inv_norm.square() * torch.linalg.vecdot(st.u, Aw)
        kproj = torch.addcmul(Aw * k[:, None], st.u, along[:, None], value=-1)
        return affine_image(kproj, self.A.T)

    def directional(self, st: NormState, delta: torch.Tensor, tol: float) -> torch.Tensor:
        Ad = affine_image(delta, self.A)
        smooth_part = torch.linalg.vecdot(st.r, Ad)
        kink_part = self.lam * torch.linalg.vector_norm(Ad, dim=-1)
        return torch.where(st.smooth > 0, smooth_part, kink_part)

    def margin(self, st: NormState) -> torch.Tensor:
        return st.norm

    def _pd_map(self):
        return self.A

    def pd_affine(self, x, aux):
        return [affine_image(x, self.A, self.data("d"))]

    def pd_dual_steps(self, sigma):
        return [sigma[0].amin(-1, keepdim=True).expand_as(sigma[0])]

    def pd_prox(self, w, sigma):
        lam = self.lam.to(w[0].dtype)
        return [project_balls(w[0], lam.expand(w[0].shape[0])[:, None], -1)]

    def dual_value(self, x: torch.Tensor, mult: torch.Tensor) -> torch.Tensor:
        return torch.linalg.vecdot(mult, affine_image(x, self.A, self.data("d")))

    def dual_residual(self, mult: torch.Tensor) -> torch.Tensor:
        return torch.relu(torch.linalg.vector_norm(mult, dim=-1) - self.lam)

    # ----------------------------------------------------------------- kinks
    def kinks(self, st: NormState) -> torch.Tensor:
        return st.u

    def tied(self, st: NormState, tol: float) -> torch.Tensor:
        return (st.norm <= tol)[:, None].expand_as(st.u)

    def face_pattern(self, st: NormState, tied: torch.Tensor) -> torch.Tensor:
        """1 on the face ``u = 0`` (every coordinate of a tied block), 0 off it."""
        return tied.to(st.u.dtype)

    def face_duals(self, st: NormState, pattern, seeds, clip=None) -> FaceDuals:
        """Off the face ``r = lam u / ||u||``; on it ``r`` is the seed (projected onto the ball
        ``||r|| <= lam`` where ``clip``), whose excess norm is the violation."""
        on = pattern[:, 0] > 0 if pattern.shape[1] else st.norm.new_zeros(0, dtype=torch.bool)
        lam = self.lam.expand_as(st.norm)
        seed_norm = torch.linalg.vector_norm(seeds, dim=-1)
        r = seeds
        if clip is not None:
            shrink = torch.where(clip[:, 0] & (seed_norm > lam), lam / seed_norm.clamp(min=1e-300), 1.0)
            r = seeds * shrink[:, None]
        r = torch.where(on[:, None], r, st.r)
        excess = torch.where(on, (seed_norm - lam).clamp(min=0.0) / (1 + lam), 0.0)
        return FaceDuals(
            slope=self.dual_slope(r),
            mult=r,
            violation=excess[:, None].expand_as(st.u),
            to_active=torch.zeros_like(st.u, dtype=torch.bool),
        )

    def face_jvp(self, st: NormState, pattern, dx) -> torch.Tensor:
        return affine_image(dx, self.A)

    def face_rows(self, st: NormState, pattern, index) -> torch.Tensor:
        return self.A[index]

    def exact_cone(self, st: NormState):
        lam = self.lam.to(st.u.dtype)
        return self.A, st.u, lam.expand(st.u.shape[0])

    def face_curvature(self, st: NormState, pattern) -> torch.Tensor:
        """``sqrt(lam / ||u||) (I - u_hat u_hat^T) A`` off the face, 0 on it (and at ties)."""
        off = (pattern[:, 0] <= 0) if pattern.shape[1] else torch.ones_like(st.norm, dtype=torch.bool)
        weight = torch.where(off, self._curvature(st), 0.0).sqrt()
        u_hat = st.u_hat
        proj = self.A - u_hat[:, :, None] * (u_hat @ self.A)[:, None, :]
        return weight[:, None, None] * proj

    def face_hvp(self, st: NormState, pattern, w) -> torch.Tensor:
        off = (pattern[:, 0] <= 0) if pattern.shape[1] else torch.ones_like(st.norm, dtype=torch.bool)
        return self.hvp(st, w) * off[:, None]

    def face_crossing(self, st: NormState, pattern, dk):
        """A step crosses the kink when it carries ``u`` past the origin along ``u_hat``
        (``u^T (u + du) <= 0``), at the fraction ``||u||^2 / (-u^T du)``."""
        along = torch.linalg.vecdot(st.u, dk)
        sq = st.norm.square()
        on = pattern[:, 0] > 0 if pattern.shape[1] else torch.zeros_like(sq, dtype=torch.bool)
        cross = on | (sq + along <= 0)
        frac = torch.where(on, 0.0, torch.where(along < 0, sq / (-along).clamp(min=1e-300), 1.0)).clamp(max=1.0)
        return cross[:, None].expand_as(st.u), frac[:, None].expand_as(st.u)

    def release_group(self, local: torch.Tensor) -> torch.Tensor:
        return torch.ones(local.shape[0], self.dim, dtype=torch.bool, device=local.device)

    def gap_slack(self, st: NormState, mult: torch.Tensor) -> torch.Tensor:
        """``lam ||u|| - r^T u >= 0`` for ``||r|| <= lam``."""
        return self.lam * st.norm - torch.linalg.vecdot(mult, st.u)

    # ----------------------------------------------------------------- lifting
    def numpy_weights(self) -> dict:
        return {"A": to_numpy(self.A)}

    def lift(self, x, data) -> BlockLift:
        """``min lam t`` s.t. ``u = A x + d``, ``||u|| <= t``. The dual of ``u = A x + d`` is ``r``."""
        A = self.numpy_weights()["A"]
        u = cp.Variable(self.dim)
        t = cp.Variable()
        link = u == A @ x + data["d"]

        def read() -> np.ndarray:
            return -np.asarray(link.dual_value, dtype=float).reshape(-1)

        return BlockLift(data["lam"] * t, [link, cp.SOC(t, u)], read)


def _row_norms(u: torch.Tensor) -> torch.Tensor:
    """Euclidean norms ``(N,)`` of the rows of ``u`` ``(N, n)``, with gradient 0 at a zero row
    (the canonical selector ``r = 0``, as ``torch.linalg.vector_norm``). Spelled out because
    ``vector_norm`` takes a slow strided path on the feature-major rows of ``affine_image``."""
    sq = torch.linalg.vecdot(u, u)
    nonzero = sq > 0
    return torch.where(nonzero, torch.where(nonzero, sq, torch.ones_like(sq)).sqrt(), torch.zeros_like(sq))
