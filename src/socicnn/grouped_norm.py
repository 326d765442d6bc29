"""Grouped norm blocks ``f(x) = lam sum_k ||A_k x + d_k||_2`` with ``lam >= 0``: ``K`` second-order
cones of one dimension ``g`` sharing a weight ``lam`` (total variation, grouped sparsity, the
local norms of a convolution's channel groups).

``u = A x + d`` with ``A`` ``(K g, d)``; rows ``k g .. k g + g - 1`` are the cone ``u_k``. Each cone
is exact (no ``epsilon`` inside the norm). Multiplier ``r_k = lam u_k / ||u_k||`` off the kink, any
``||r_k|| <= lam`` at ``u_k = 0`` (the canonical selector takes ``r_k = 0``); slope ``A^T r``; local
Hessian ``sum_k (lam / ||u_k||) A_k^T (I - u_hat_k u_hat_k^T) A_k``. Lifting: ``u = A x + d``,
``||u_k|| <= t_k``, objective ``lam sum_k t_k``. Every cone is its own kink group: inference steps
onto ``u_k = 0`` cone by cone. With ``K = 1`` this is :class:`~socicnn.norm.NormBlock`, whose one cone
face Newton may also keep exact (:meth:`GroupedNormBase.exact_cone`).

Per-row data: the offset ``d`` and the scaling ``lam >= 0``. Subclasses may build ``A`` and
``d`` from other parameters (a convolution) by overriding the ``A`` and ``d`` attributes.
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

__all__ = ["GroupedNormBase", "GroupedNormBlock", "GroupedNormState"]


@dataclass
class GroupedNormState:
    """``u = A x + d`` ``(N, K g)``, cone norms ``(N, K)``, ``1/||u_k||`` (0 at ties), the
    smooth mask ``(N, K)`` and the multipliers ``r`` ``(N, K g)``."""

    u: torch.Tensor
    norm: torch.Tensor
    inv_norm: torch.Tensor
    smooth: torch.Tensor
    r: torch.Tensor


class GroupedNormBase(ConvexBlock, abstract=True):
    """The protocol of ``lam sum_k ||A_k x + d_k||`` for any ``A`` ``(K g, d)`` and ``d`` ``(K g,)``
    a subclass provides, with ``lam = |lam_raw|``, ``groups = K`` and ``group_dim = g``."""

    multiplier_name = "r"
    nonnegative_data = ("lam",)
    groups: int
    group_dim: int
    in_dim: int

    def default_data(self) -> dict[str, torch.Tensor]:
        return {"d": self.d, "lam": self.lam_raw.abs()}

    @property
    def lam(self) -> torch.Tensor:
        """The weight ``lam >= 0``, shared ``()`` or ``(N,)`` when bound per row."""
        return self.data("lam")

    def _lam_col(self, like: torch.Tensor) -> torch.Tensor:
        """``lam`` in ``like``'s dtype as a column, ``(n, 1)`` per row or ``(1, 1)`` shared (it
        broadcasts against per-cone ``(n, K)`` tensors)."""
        return self.lam.to(like.dtype).reshape(-1, 1)

    def _cones(self, t: torch.Tensor) -> torch.Tensor:
        return t.reshape(t.shape[0], self.groups, self.group_dim)

    def _spread(self, t: torch.Tensor) -> torch.Tensor:
        """A per-cone ``(n, K)`` tensor repeated over each cone's ``g`` coordinates ``(n, K g)``."""
        return t[:, :, None].expand(-1, -1, self.group_dim).reshape(t.shape[0], self.groups * self.group_dim)

    def _u(self, x: torch.Tensor) -> torch.Tensor:
        return affine_image(x, self.A, self.data("d"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lam * _cone_norms(self._cones(self._u(x))).sum(-1)

    def state(self, x: torch.Tensor, tol: float = 0.0) -> GroupedNormState:
        u = self._u(x)
        cones = self._cones(u)
        norm = _cone_norms(cones)
        smooth = norm > tol
        inv_norm = smooth / torch.where(smooth, norm, torch.ones_like(norm))
        r = (cones * (inv_norm * self._lam_col(u))[..., None]).reshape(u.shape)
        return GroupedNormState(u=u, norm=norm, inv_norm=inv_norm, smooth=smooth.to(u.dtype), r=r)

    def multipliers(self, st: GroupedNormState) -> torch.Tensor:
        return st.r

    def dual_slope(self, mult: torch.Tensor) -> torch.Tensor:
        return affine_image(mult, self.A.T)

    def _pd_map(self):
        return self.A

    def pd_affine(self, x, aux):
        return [self._u(x)]

    def pd_dual_steps(self, sigma):
        return [self._spread(self._cones(sigma[0]).amin(-1))]

    def pd_prox(self, w, sigma):
        radius = self._lam_col(w[0])[:, :, None]
        return [project_balls(self._cones(w[0]), radius, -1).reshape(w[0].shape)]

    def dual_value(self, x: torch.Tensor, mult: torch.Tensor) -> torch.Tensor:
        return torch.linalg.vecdot(mult, self._u(x))

    def dual_residual(self, mult: torch.Tensor) -> torch.Tensor:
        over = torch.linalg.vector_norm(self._cones(mult), dim=-1) - self._lam_col(mult)
        return torch.relu(over).amax(dim=1)

    # ----------------------------------------------------------------- curvature
    def _curvature(self, st: GroupedNormState) -> torch.Tensor:
        """``lam / ||u_k||`` where smooth, 0 at ties, ``(N, K)``."""
        return self._lam_col(st.u) * st.inv_norm

    def _projected(self, st: GroupedNormState, w: torch.Tensor, off: torch.Tensor | None = None) -> torch.Tensor:
        """``sum_k k_k A_k^T (I - u_hat_k u_hat_k^T) A_k w`` ``(N, d)`` (cones in ``off`` only)."""
        Aw = self._cones(affine_image(w, self.A))
        u = self._cones(st.u)
        k = self._curvature(st)
        if off is not None:
            k = k * off
        along = torch.linalg.vecdot(u, Aw) * st.inv_norm.square()
        proj = torch.addcmul(Aw, u, along[..., None], value=-1) * k[..., None]
        return affine_image(proj.reshape(w.shape[0], -1), self.A.T)

    def hessian(self, st: GroupedNormState, out: torch.Tensor | None = None) -> torch.Tensor:
        """``sum_k k_k (A_k^T A_k - (A_k^T u_hat_k)(A_k^T u_hat_k)^T)`` with ``k_k = lam / ||u_k||``."""
        k = self._curvature(st)
        Ak = self._cones_A()
        gram = (Ak.transpose(1, 2) @ Ak).reshape(self.groups, -1)  # (K, d d)
        u_hat = self._cones(st.u) * st.inv_norm[..., None]
        uA = (u_hat.transpose(0, 1) @ Ak).permute(1, 2, 0)  # (n, d, K): A_k^T u_hat_k
        H = (k @ gram).reshape(-1, self.in_dim, self.in_dim)
        H = torch.baddbmm(H, uA * k[:, None, :], uA.transpose(1, 2), alpha=-1)
        return H if out is None else out.add_(H)

    def _cones_A(self) -> torch.Tensor:
        return self.A.reshape(self.groups, self.group_dim, self.in_dim)

    def hvp(self, st: GroupedNormState, w: torch.Tensor) -> torch.Tensor:
        return self._projected(st, w)

    def directional(self, st: GroupedNormState, delta: torch.Tensor, tol: float) -> torch.Tensor:
        Ad = self._cones(delta @ self.A.T)
        smooth_part = (self._cones(st.r) * Ad).sum(-1)
        kink_part = self._lam_col(Ad) * torch.linalg.vector_norm(Ad, dim=-1)
        return torch.where(st.smooth > 0, smooth_part, kink_part).sum(-1)

    def margin(self, st: GroupedNormState) -> torch.Tensor:
        return st.norm.amin(dim=1)

    # ----------------------------------------------------------------- optimal duals
    def optimal_dual_set(self, st: GroupedNormState, tol: float) -> DualSetLift:
        """``r_k = lam u_k / ||u_k||`` (constants) on smooth cones; any ``||r_k|| <= lam`` on tied ones."""
        A = to_numpy(self.A)
        r0 = to_numpy(st.r[0])
        tied = np.flatnonzero(to_numpy(st.smooth[0]) <= 0)
        if tied.size == 0:
            return DualSetLift([], A.T @ r0)
        g = self.group_dim
        rows = (tied[:, None] * g + np.arange(g)[None, :]).reshape(-1)
        lam = self.lam
        lam = float(to_numpy(lam if lam.ndim == 0 else lam[0]))
        R = cp.Variable((tied.size, g))
        slope = A.T @ r0 + A[rows].T @ cp.reshape(R, (tied.size * g,), order="C")
        return DualSetLift([cp.SOC(cp.Constant(np.full(tied.size, lam)), R, axis=1)], slope)

    def sample_optimal_duals(self, st: GroupedNormState, n: int, tol: float, generator: torch.Generator):
        """On each tied cone ``r_k = lam rho s`` (``s`` uniform on the sphere, ``rho`` the ball's
        radial law, or 1 with probability 1/2); the unique ``r_k`` elsewhere."""
        K, g = self.groups, self.group_dim
        s = torch.randn(n, K, g, generator=generator, dtype=torch.float64)
        s = s / torch.linalg.vector_norm(s, dim=-1, keepdim=True)
        rho = torch.rand(n, K, 1, generator=generator, dtype=torch.float64) ** (1.0 / g)
        rho = torch.where(torch.rand(n, K, 1, generator=generator, dtype=torch.float64) < 0.5, 1.0, rho)
        lam = self.lam if self.lam.ndim == 0 else self.lam[0]
        ball = (rho * s).to(st.r.dtype).to(st.r.device) * lam
        tied = (st.smooth[0] <= 0)[None, :, None]
        out = torch.where(tied, ball, self._cones(st.r[:1]).expand(n, -1, -1))
        return out.reshape(n, K * g)

    # ----------------------------------------------------------------- kinks
    def kinks(self, st: GroupedNormState) -> torch.Tensor:
        return st.u

    def tied(self, st: GroupedNormState, tol: float) -> torch.Tensor:
        return self._spread(st.norm <= tol)

    def face_pattern(self, st: GroupedNormState, tied: torch.Tensor) -> torch.Tensor:
        """1 on the faces ``u_k = 0`` (every coordinate of a tied cone), 0 off them."""
        return tied.to(st.u.dtype)

    def _on(self, pattern: torch.Tensor) -> torch.Tensor:
        """``(n, K)`` bool: the cones on their face (read at each cone's first coordinate)."""
        return pattern[:, :: self.group_dim] > 0

    def face_duals(self, st: GroupedNormState, pattern, seeds, clip=None) -> FaceDuals:
        """Off the face ``r_k = lam u_k / ||u_k||``; on it ``r_k`` is the seed (projected onto the
        ball ``||r_k|| <= lam`` where ``clip``), whose excess norm is the violation."""
        n = st.u.shape[0]
        on = self._on(pattern)
        lam = self._lam_col(st.u)
        sd = self._cones(seeds)
        seed_norm = torch.linalg.vecdot(sd, sd).sqrt()
        if clip is not None:
            shrink = torch.where(self._on(clip) & (seed_norm > lam), lam / seed_norm.clamp(min=1e-300), 1.0)
            sd = sd * shrink[..., None]
        r = torch.where(on[..., None], sd, self._cones(st.r)).reshape(n, -1)
        excess = torch.where(on, (seed_norm - lam).clamp(min=0.0) / (1 + lam), 0.0)
        return FaceDuals(self.dual_slope(r), r, self._spread(excess), torch.zeros_like(st.u, dtype=torch.bool))

    def face_jvp(self, st: GroupedNormState, pattern, dx) -> torch.Tensor:
        return affine_image(dx, self.A)

    def face_rows(self, st: GroupedNormState, pattern, index) -> torch.Tensor:
        return self.A[index]

    def face_curvature(self, st: GroupedNormState, pattern) -> torch.Tensor:
        """Rows ``sqrt(lam / ||u_k||) (I - u_hat_k u_hat_k^T) A_k`` for cones off the face, 0 on it."""
        off = ~self._on(pattern) if pattern.shape[1] else torch.ones_like(st.norm, dtype=torch.bool)
        weight = torch.where(off, self._curvature(st), 0.0).sqrt()
        u_hat = self._cones(st.u) * st.inv_norm[..., None]
        Ak = self._cones_A()
        proj = Ak[None] - u_hat[..., None] * torch.einsum("nkg,kgd->nkd", u_hat, Ak)[:, :, None, :]
        return (weight[..., None, None] * proj).reshape(st.u.shape[0], -1, self.in_dim)

    def face_hvp(self, st: GroupedNormState, pattern, w) -> torch.Tensor:
        off = (~self._on(pattern)).to(w.dtype) if pattern.shape[1] else None
        return self._projected(st, w, off)

    def face_crossing(self, st: GroupedNormState, pattern, dk):
        """A step crosses cone ``k``'s kink when it carries ``u_k`` past the origin along
        ``u_hat_k`` (``u_k^T (u_k + du_k) <= 0``), at the fraction ``||u_k||^2 / (-u_k^T du_k)``."""
        along = (self._cones(st.u) * self._cones(dk)).sum(-1)
        sq = st.norm.square()
        on = self._on(pattern)
        cross = on | (sq + along <= 0)
        frac = torch.where(on, 0.0, torch.where(along < 0, sq / (-along).clamp(min=1e-300), 1.0)).clamp(max=1.0)
        return self._spread(cross), self._spread(frac)

    def exact_cone(self, st: GroupedNormState):
        """``(A, u, lam)`` when the block is one cone (``K = 1``), else ``None``."""
        if self.groups != 1:
            return None
        return self.A, st.u, self._lam_col(st.u).expand(st.u.shape[0], 1)[:, 0]

    def release_group(self, local: torch.Tensor) -> torch.Tensor:
        """Every coordinate of the cone holding coordinate ``local``."""
        cone = torch.div(local, self.group_dim, rounding_mode="floor")
        ids = torch.arange(self.groups, device=local.device)
        return self._spread(ids[None, :] == cone[:, None])

    def gap_slack(self, st: GroupedNormState, mult: torch.Tensor) -> torch.Tensor:
        """``lam sum_k ||u_k|| - r^T u >= 0`` for ``||r_k|| <= lam``."""
        return self.lam * st.norm.sum(-1) - torch.linalg.vecdot(mult, st.u)

    # ----------------------------------------------------------------- lifting
    def numpy_weights(self) -> dict:
        return {"A": to_numpy(self.A)}

    def lift(self, x, data) -> BlockLift:
        """``min lam sum_k t_k`` s.t. ``u = A x + d``, ``||u_k|| <= t_k``; the dual of the link is ``r``."""
        A = self.numpy_weights()["A"]
        u = cp.Variable(self.groups * self.group_dim)
        t = cp.Variable(self.groups)
        link = u == A @ x + data["d"]
        cones = cp.SOC(t, cp.reshape(u, (self.groups, self.group_dim), order="C"), axis=1)

        def read() -> np.ndarray:
            return -np.asarray(link.dual_value, dtype=float).reshape(-1)

        return BlockLift(data["lam"] * cp.sum(t), [link, cones], read)


class GroupedNormBlock(GroupedNormBase):
    """``lam sum_k ||A_k x + d_k||`` with free ``A`` ``(K g, d)``, ``d`` and ``lam = |lam_raw|``.

    Args:
        in_dim: input dimension ``d``.
        groups: number of cones ``K``.
        group_dim: dimension ``g`` of every cone.
        generator, dtype, device: initialisation and placement.
    """

    def __init__(
        self,
        in_dim: int,
        groups: int,
        group_dim: int,
        *,
        generator: torch.Generator | None = None,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        self.in_dim, self.groups, self.group_dim = in_dim, groups, group_dim
        self.A, self.d, self.lam_raw = dense_affine_parameters(in_dim, groups * group_dim, generator, dtype, device)


def _cone_norms(u: torch.Tensor) -> torch.Tensor:
    """Euclidean norms over the last axis, with gradient 0 at a zero cone (the canonical selector
    ``r_k = 0``, as ``torch.linalg.vector_norm``). Spelled out because ``vector_norm`` takes a slow
    strided path on the feature-major rows of :func:`~socicnn.blocks.affine_image`."""
    sq = torch.linalg.vecdot(u, u)
    nonzero = sq > 0
    return torch.where(nonzero, torch.where(nonzero, sq, torch.ones_like(sq)).sqrt(), torch.zeros_like(sq))
