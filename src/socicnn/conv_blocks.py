"""Quadratic and grouped norm blocks whose linear map is a convolution (any :class:`ConvMap`).

- :class:`ConvQuadraticBlock` ``f_Q(x) = (alpha / 2) ||B x + e||^2`` with ``B`` a convolution,
  ``alpha >= 0``. Multiplier ``p = alpha (B x + e)``; slope ``B^T p``; Hessian ``alpha B^T B``.
- :class:`ConvGroupedNormBlock` ``f_N(x) = sum_g lam_g sum_pixels ||u_{g, :, pixel}||`` with
  ``u = A x + d``, ``A`` a convolution to ``G s`` channels read as ``G`` groups of ``s`` channels:
  one exact second-order cone ``||u_c|| <= t_c`` per (group, pixel) (no epsilon inside the norm),
  ``lam_g >= 0``. Multiplier ``r_c = lam_g u_c / ||u_c||`` off the cone's kink ``u_c = 0``, any
  ``||r_c|| <= lam_g`` on it (the canonical selector takes 0). Its kinks are per cone: a cone's
  ``s`` coordinates are released together.

Both are matrix-free (convolutions and transposed convolutions); dense Hessians and curvature
factors exist only for small images and otherwise refuse with an error pointing to ``hvp``.
The lifting uses the maps' sparse matrices. Per-row data: ``e`` / ``d`` (one per output
coordinate) and ``alpha`` / ``lam`` (``>= 0``).
"""

from __future__ import annotations

from dataclasses import dataclass

import cvxpy as cp
import numpy as np
import torch
from torch import nn

from .blocks import BlockLift, ConvexBlock, DualSetLift, FaceDuals, SmoothBlock, project_balls, to_numpy
from .convmaps import DENSE_MAP_LIMIT, ConvMap
from .quadratic import quadratic_lift

__all__ = ["ConvQuadraticBlock", "ConvGroupedNormBlock"]


#: Largest ``n d^2`` for which a dense Hessian is formed by ``d`` batched HVPs.
DENSE_HESSIAN_LIMIT = 2**22


def _hessian_from_hvp(hvp, n: int, d: int, like: torch.Tensor, out: torch.Tensor | None) -> torch.Tensor:
    """``(n, d, d)`` by ``d`` batched HVPs with the unit vectors (``hvp`` takes ``(n, k, d)``)."""
    if n * d * d > DENSE_HESSIAN_LIMIT:
        raise ValueError(
            f"the dense Hessian of {n} points of a convolutional block on {d} pixels would hold "
            f"{n * d * d:,} numbers (limit {DENSE_HESSIAN_LIMIT:,}); use socicnn.readout.hvp (matrix-free) instead"
        )
    eye = torch.eye(d, dtype=like.dtype, device=like.device).expand(n, d, d)
    H = hvp(eye)
    return H if out is None else out.add_(H)


# ============================================================================ quadratic
@dataclass
class ConvQuadraticState:
    """``q = B x + e`` and ``p = alpha q``, both ``(N, k)``."""

    q: torch.Tensor
    p: torch.Tensor


class ConvQuadraticBlock(SmoothBlock):
    """``(alpha / 2) ||B x + e||^2`` with ``B`` the convolution ``conv`` and ``alpha >= 0``.

    Args:
        conv: the map ``B`` (a :class:`ConvMap`).
        scale: fixed positive factor, ``alpha = scale * |alpha_raw|`` (e.g. ``1 / k`` for a mean
            over the ``k`` coordinates of ``B x``, so that ``alpha_raw`` trains at unit scale).
    """

    multiplier_name = "p"
    nonnegative_data = ("alpha",)

    def __init__(self, conv: ConvMap, scale: float = 1.0) -> None:
        super().__init__()
        self.conv, self.scale = conv, float(scale)
        self.in_dim, self.dim = conv.in_dim, conv.out_dim
        kw = {"dtype": conv.raw.dtype, "device": conv.raw.device}
        self.e = nn.Parameter(torch.zeros(conv.out_channels, **kw))
        self.alpha_raw = nn.Parameter(torch.ones((), **kw))

    def default_data(self) -> dict[str, torch.Tensor]:
        pixels = self.conv.height * self.conv.width
        return {"e": self.e.repeat_interleave(pixels), "alpha": self.scale * self.alpha_raw.abs()}

    @property
    def alpha(self) -> torch.Tensor:
        return self.data("alpha")

    def _col(self, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        return t if t.ndim == 0 else t.reshape(t.shape[0], *([1] * (like.ndim - 1)))

    def _state_rows(self, st: ConvQuadraticState) -> torch.Tensor:
        return st.q

    def _q(self, x: torch.Tensor) -> torch.Tensor:
        if self._bound and "e" in self._bound:
            return self.conv.apply(x) + self._bound["e"]
        return self.conv.apply(x, self.e)  # the block's own offsets: one per channel

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The block's value ``(alpha/2) ||B * X + e||^2`` per row of flattened images ``x``."""
        q = self._q(x)
        return 0.5 * self.alpha * torch.linalg.vecdot(q, q)

    def state(self, x: torch.Tensor, tol: float = 0.0) -> ConvQuadraticState:
        q = self._q(x)
        return ConvQuadraticState(q=q, p=self._col(self.alpha, q) * q)

    def multipliers(self, st: ConvQuadraticState) -> torch.Tensor:
        return st.p

    def dual_slope(self, mult: torch.Tensor) -> torch.Tensor:
        return self.conv.adjoint(mult)

    def dual_value(self, x: torch.Tensor, mult: torch.Tensor) -> torch.Tensor:
        alpha = self.alpha
        penalty = torch.where(alpha > 0, (mult * mult).sum(-1) / (2 * alpha.clamp_min(1e-300)), 0.0)
        return torch.linalg.vecdot(mult, self._q(x)) - penalty

    def dual_residual(self, mult: torch.Tensor) -> torch.Tensor:
        return torch.where(self.alpha > 0, 0.0, mult.abs().amax(dim=1))

    def _pd_map(self):
        return self.conv

    def pd_affine(self, x, aux):
        return [self._q(x)]

    def pd_prox(self, w, sigma):
        alpha = self._col(self.alpha, w[0])
        return [w[0] * torch.where(alpha > 0, alpha / (alpha + sigma[0]), 0.0)]

    def _hvp(self, w: torch.Tensor) -> torch.Tensor:
        """``alpha B^T B w`` for ``w`` ``(n, d)`` or ``(n, k, d)``."""
        return self.conv.adjoint(self._col(self.alpha, w) * self.conv.apply(w))

    def hvp(self, st: ConvQuadraticState, w: torch.Tensor) -> torch.Tensor:
        return self._hvp(w)

    def face_hvp(self, st, pattern, w) -> torch.Tensor:
        return self._hvp(w)

    def hessian(self, st: ConvQuadraticState, out: torch.Tensor | None = None) -> torch.Tensor:
        return _hessian_from_hvp(self._hvp, st.q.shape[0], self.in_dim, st.q, out)

    def face_curvature(self, st: ConvQuadraticState, pattern) -> torch.Tensor | None:
        """``sqrt(alpha) B`` per row on small images, else ``None`` (matrix-free)."""
        n = st.q.shape[0]
        if n * self.dim * self.in_dim > DENSE_MAP_LIMIT:
            return None
        return self._col(self.alpha, st.q[:, :1, None]).sqrt() * self.conv.dense().expand(n, -1, -1)

    def directional(self, st: ConvQuadraticState, delta: torch.Tensor, tol: float) -> torch.Tensor:
        return torch.linalg.vecdot(st.p, self.conv.apply(delta))

    def optimal_dual_set(self, st: ConvQuadraticState, tol: float) -> DualSetLift:
        """``p = alpha q`` is the unique optimal multiplier: a constant."""
        return DualSetLift([], to_numpy(self.dual_slope(st.p[:1])[0]))

    def sample_optimal_duals(self, st, n, tol, generator) -> torch.Tensor:
        return st.p.expand(n, -1)

    def numpy_weights(self) -> dict:
        return {"B": self.conv.sparse()}

    def lift(self, x, data) -> BlockLift:
        return quadratic_lift(self.numpy_weights()["B"], x, data)  # B: the convolution's sparse matrix


# ============================================================================ grouped norm
class _ConeNorm(torch.autograd.Function):
    """``||c||`` over the cone axis ``-2`` with the gradient ``c / ||c||`` (0 at a zero cone: the
    canonical selector ``r = 0``). The backward pass is written in differentiable operations, so
    second derivatives (Hessian-vector products by double backward) work too; forward-mode (``jvp``)
    and ``vmap`` make it usable under ``torch.func`` transforms."""

    generate_vmap_rule = True

    @staticmethod
    def forward(c: torch.Tensor) -> torch.Tensor:
        return (c * c).sum(-2).sqrt()

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        (c,) = inputs
        ctx.save_for_backward(c, output)
        ctx.save_for_forward(c, output)

    @staticmethod
    def _scale(norm: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """``t / ||c||`` where the cone is not zero, 0 where it is."""
        return torch.where(norm > 0, t / torch.where(norm > 0, norm, torch.ones_like(norm)), 0.0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        c, norm = ctx.saved_tensors
        return c * _ConeNorm._scale(norm, grad).unsqueeze(-2)

    @staticmethod
    def jvp(ctx, dc: torch.Tensor) -> torch.Tensor:
        c, norm = ctx.saved_tensors
        return _ConeNorm._scale(norm, (c * dc).sum(-2))


def _cone_norms(c: torch.Tensor) -> torch.Tensor:
    """Euclidean norms over the cone axis (``-2``) of ``(..., G, s, P)``, with gradient 0 at a zero
    cone (the canonical selector ``r = 0``). Spelled out: ``vector_norm`` over a short strided
    axis is an order of magnitude slower on CPU."""
    return _ConeNorm.apply(c)


@dataclass
class ConvGroupedNormState:
    """``u = A x + d`` ``(N, K)``; per cone ``(N, G, P)``: norms, ``1/||u_c||`` (0 at ties),
    smoothness; the multipliers ``r`` ``(N, K)``."""

    u: torch.Tensor
    norm: torch.Tensor
    inv_norm: torch.Tensor
    smooth: torch.Tensor
    r: torch.Tensor


class ConvGroupedNormBlock(ConvexBlock):
    """``sum_g lam_g sum_pixels ||u_{g,:,pixel}||``, ``u = A x + d`` (see the module docstring).

    Args:
        conv: the map ``A`` (a :class:`ConvMap` to ``G * group_size`` channels).
        group_size: channels ``s`` per group (the dimension of each cone).
        scale: fixed positive factor, ``lam_g = scale * |lam_raw_g|``.
    """

    multiplier_name = "r"
    nonnegative_data = ("lam",)

    def __init__(self, conv: ConvMap, group_size: int = 2, scale: float = 1.0) -> None:
        super().__init__()
        self.scale = float(scale)
        if conv.out_channels % group_size:
            raise ValueError(f"{conv.out_channels} channels do not split into groups of {group_size}")
        self.conv, self.group_size = conv, group_size
        self.groups = conv.out_channels // group_size
        self.pixels = conv.height * conv.width
        self.in_dim, self.dim = conv.in_dim, conv.out_dim
        kw = {"dtype": conv.raw.dtype, "device": conv.raw.device}
        self.d = nn.Parameter(torch.zeros(conv.out_channels, **kw))
        self.lam_raw = nn.Parameter(torch.ones(self.groups, **kw))

    def default_data(self) -> dict[str, torch.Tensor]:
        return {"d": self.d.repeat_interleave(self.pixels), "lam": self.scale * self.lam_raw.abs()}

    @property
    def lam(self) -> torch.Tensor:
        """The weights ``lam >= 0`` of the groups, ``(G,)`` shared or ``(N, G)`` per row."""
        return self.data("lam")

    # -------------------------------------------------------------- cone layout
    def _cones(self, u: torch.Tensor) -> torch.Tensor:
        """``(..., K) -> (..., G, s, P)``."""
        return u.reshape(*u.shape[:-1], self.groups, self.group_size, self.pixels)

    def _lam_cones(self, like: torch.Tensor) -> torch.Tensor:
        """``lam_g`` broadcast against per-cone ``(n, G, P)`` (or ``(n, k, G, P)``) tensors."""
        lam = self.lam
        if lam.ndim == 1:
            return lam[:, None]
        return lam.reshape(lam.shape[0], *([1] * (like.ndim - 3)), self.groups, 1)

    def _spread(self, t: torch.Tensor) -> torch.Tensor:
        """Per-cone ``(n, G, P)`` to per-coordinate ``(n, K)``."""
        return t[:, :, None, :].expand(-1, -1, self.group_size, -1).reshape(t.shape[0], self.dim)

    def _u(self, x: torch.Tensor) -> torch.Tensor:
        if self._bound and "d" in self._bound:
            return self.conv.apply(x) + self._bound["d"]
        return self.conv.apply(x, self.d)  # the block's own offsets: one per channel

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The block's value, the weighted sum of its cones' norms, per row of flattened images ``x``."""
        norms = _cone_norms(self._cones(self._u(x)))
        return (self._lam_cones(norms) * norms).sum((-2, -1))

    def state(self, x: torch.Tensor, tol: float = 0.0) -> ConvGroupedNormState:
        u = self._u(x)
        norm = _cone_norms(self._cones(u))
        smooth = norm > tol
        inv = smooth / torch.where(smooth, norm, torch.ones_like(norm))
        r = self._cones(u) * (self._lam_cones(norm) * inv)[:, :, None, :]
        return ConvGroupedNormState(u=u, norm=norm, inv_norm=inv, smooth=smooth.to(u.dtype), r=r.reshape(u.shape))

    def multipliers(self, st: ConvGroupedNormState) -> torch.Tensor:
        return st.r

    def dual_slope(self, mult: torch.Tensor) -> torch.Tensor:
        return self.conv.adjoint(mult)

    def dual_value(self, x: torch.Tensor, mult: torch.Tensor) -> torch.Tensor:
        return torch.linalg.vecdot(mult, self._u(x))

    def dual_residual(self, mult: torch.Tensor) -> torch.Tensor:
        norms = _cone_norms(self._cones(mult))
        return torch.relu(norms - self._lam_cones(norms)).amax(dim=(-2, -1))

    def _pd_map(self):
        return self.conv

    def pd_affine(self, x, aux):
        return [self._u(x)]

    def pd_dual_steps(self, sigma):
        return [self._spread(self._cones(sigma[0]).amin(-2))]

    def pd_prox(self, w, sigma):
        cones = self._cones(w[0])
        return [project_balls(cones, self._lam_cones(cones[:, :, 0])[..., None, :], -2).reshape(w[0].shape)]

    # -------------------------------------------------------------- curvature
    def _hvp(self, st: ConvGroupedNormState, w: torch.Tensor, off: torch.Tensor | None = None) -> torch.Tensor:
        """``sum_c (lam_g / ||u_c||) A_c^T (I - u_hat u_hat^T) A_c w`` for ``w`` ``(n, d)`` or
        ``(n, k, d)``; cones with ``off`` False (on a face) contribute 0."""
        Aw = self._cones(self.conv.apply(w))  # (n, [k,] G, s, P)
        lead = (slice(None),) + (None,) * (w.ndim - 2)
        k = self._lam_cones(st.norm) * st.inv_norm
        if off is not None:
            k = k * off
        k = k[lead]
        uh = self._cones(st.u * self._spread(st.inv_norm))[lead]  # u_hat per cone
        along = (uh * Aw).sum(-2, keepdim=True)
        proj = k[..., None, :] * (Aw - uh * along)
        return self.conv.adjoint(proj.reshape(*w.shape[:-1], self.dim))

    def hvp(self, st: ConvGroupedNormState, w: torch.Tensor) -> torch.Tensor:
        return self._hvp(st, w)

    def hessian(self, st: ConvGroupedNormState, out: torch.Tensor | None = None) -> torch.Tensor:
        return _hessian_from_hvp(lambda w: self._hvp(st, w), st.u.shape[0], self.in_dim, st.u, out)

    def _off_face(self, st: ConvGroupedNormState, pattern: torch.Tensor) -> torch.Tensor:
        return (self._cones(pattern)[:, :, 0, :] <= 0).to(st.u.dtype)

    def face_hvp(self, st: ConvGroupedNormState, pattern, w) -> torch.Tensor:
        return self._hvp(st, w, self._off_face(st, pattern))

    def face_curvature(self, st: ConvGroupedNormState, pattern) -> torch.Tensor | None:
        """``sqrt(lam_g / ||u_c||) (I - u_hat u_hat^T) A_c`` per cone off the face, on small
        images; ``None`` (matrix-free) otherwise."""
        n = st.u.shape[0]
        if n * self.dim * self.in_dim > DENSE_MAP_LIMIT:
            return None
        A = self._cones(self.conv.dense().T).movedim(0, -1)  # (G, s, P, d)
        weight = (self._lam_cones(st.norm) * st.inv_norm * self._off_face(st, pattern)).sqrt()
        uh = self._cones(st.u * self._spread(st.inv_norm))  # (n, G, s, P)
        along = torch.einsum("ngsp,gspd->ngpd", uh, A)
        Q = weight[:, :, None, :, None] * (A[None] - uh[..., None] * along[:, :, None])
        return Q.reshape(n, self.dim, self.in_dim)

    def directional(self, st: ConvGroupedNormState, delta: torch.Tensor, tol: float) -> torch.Tensor:
        Ad = self.conv.apply(delta)
        smooth_part = self._cones(st.r * Ad).sum(-2)
        kink_part = self._lam_cones(st.norm) * _cone_norms(self._cones(Ad))
        return torch.where(st.smooth > 0, smooth_part, kink_part).sum((-2, -1))

    def margin(self, st: ConvGroupedNormState) -> torch.Tensor:
        return st.norm.amin(dim=(-2, -1))

    # -------------------------------------------------------------- kinks
    def kinks(self, st: ConvGroupedNormState) -> torch.Tensor:
        return st.u

    def tied(self, st: ConvGroupedNormState, tol: float) -> torch.Tensor:
        return self._spread(st.norm <= tol)

    def face_pattern(self, st: ConvGroupedNormState, tied: torch.Tensor) -> torch.Tensor:
        """1 on the coordinates of cones on their face ``u_c = 0``, 0 elsewhere."""
        return tied.to(st.u.dtype)

    def face_duals(self, st: ConvGroupedNormState, pattern, seeds, clip=None) -> FaceDuals:
        """Off the face ``r_c = lam_g u_c / ||u_c||``; on it ``r_c`` is the seed (projected onto
        ``||r_c|| <= lam_g`` where ``clip``), whose excess norm is the violation."""
        on = self._cones(pattern)[:, :, 0, :] > 0  # (n, G, P)
        lam = self._lam_cones(st.norm).expand_as(st.norm)
        seed_norm = _cone_norms(self._cones(seeds))
        r = seeds
        if clip is not None:
            cl = self._cones(clip)[:, :, 0, :]
            shrink = torch.where(cl & (seed_norm > lam), lam / seed_norm.clamp(min=1e-300), 1.0)
            r = seeds * self._spread(shrink)
        r = torch.where(self._spread(on), r, st.r)
        excess = torch.where(on, (seed_norm - lam).clamp(min=0.0) / (1 + lam), 0.0)
        return FaceDuals(self.dual_slope(r), r, self._spread(excess), torch.zeros_like(st.u, dtype=torch.bool))

    def face_jvp(self, st: ConvGroupedNormState, pattern, dx) -> torch.Tensor:
        return self.conv.apply(dx)

    def face_rows(self, st: ConvGroupedNormState, pattern, index) -> torch.Tensor:
        n, k = index.shape
        seeds = st.u.new_zeros(n, k, self.dim)
        seeds.scatter_(-1, index[..., None], 1.0)
        return self.conv.adjoint(seeds)

    def face_crossing(self, st: ConvGroupedNormState, pattern, dk):
        """A step crosses a cone's kink when it carries ``u_c`` past the origin along ``u_hat``."""
        along = self._cones(st.u * dk).sum(-2)
        sq = st.norm.square()
        on = self._cones(pattern)[:, :, 0, :] > 0
        cross = on | (sq + along <= 0)
        frac = torch.where(on, 0.0, torch.where(along < 0, sq / (-along).clamp(min=1e-300), 1.0)).clamp(max=1.0)
        return self._spread(cross), self._spread(frac)

    def release_group(self, local: torch.Tensor) -> torch.Tensor:
        """The ``s`` coordinates of the cone holding coordinate ``local``."""
        S, P = self.group_size, self.pixels
        base = (local // (S * P)) * S * P + local % P
        idx = base[:, None] + P * torch.arange(S, device=local.device)
        out = torch.zeros(local.shape[0], self.dim, dtype=torch.bool, device=local.device)
        return out.scatter_(-1, idx, True)

    def gap_slack(self, st: ConvGroupedNormState, mult: torch.Tensor) -> torch.Tensor:
        """``sum_c lam_g ||u_c|| - r^T u >= 0`` for ``||r_c|| <= lam_g``."""
        return (self._lam_cones(st.norm) * st.norm).sum((-2, -1)) - torch.linalg.vecdot(mult, st.u)

    # -------------------------------------------------------------- optimal duals and lifting
    def _cone_index(self) -> np.ndarray:
        """``(s, G P)`` coordinate of entry ``j`` of cone ``g P + p`` in ``u``."""
        S, P, G = self.group_size, self.pixels, self.groups
        g, p = np.divmod(np.arange(G * P), P)
        return g[None] * S * P + np.arange(S)[:, None] * P + p[None]

    def optimal_dual_set(self, st: ConvGroupedNormState, tol: float) -> DualSetLift:
        """``r_c = lam_g u_c / ||u_c||`` (constants) on smooth cones; any ``||r_c|| <= lam_g`` on
        tied ones."""
        A = self.numpy_weights()["A"]
        smooth = to_numpy(st.smooth[0]).reshape(-1) > 0  # (G P,)
        if smooth.all():
            return DualSetLift([], A.T @ to_numpy(st.r[0]))
        idx = self._cone_index()
        r = cp.Variable(self.dim)
        lam = to_numpy(self.lam if self.lam.ndim == 1 else self.lam[0])
        lam_c = np.repeat(lam, self.pixels)
        tied = np.flatnonzero(~smooth)
        cons = [cp.SOC(cp.Constant(lam_c[tied]), cp.vstack([r[idx[j, tied]] for j in range(self.group_size)]), axis=0)]
        if smooth.any():
            fixed = idx[:, smooth].ravel()
            cons.append(r[fixed] == to_numpy(st.r[0])[fixed])
        return DualSetLift(cons, A.T @ r)

    def sample_optimal_duals(self, st: ConvGroupedNormState, n: int, tol: float, generator: torch.Generator):
        """At a tied cone, ``r_c = lam_g rho s`` with ``s`` uniform on the sphere and ``rho`` the
        ball's radial law, or ``rho = 1`` (the boundary) with probability 1/2."""
        G, S, P = self.groups, self.group_size, self.pixels
        s = torch.randn(n, G, S, P, generator=generator, dtype=torch.float64)
        s = s / torch.linalg.vector_norm(s, dim=2, keepdim=True)
        rho = torch.rand(n, G, 1, P, generator=generator, dtype=torch.float64) ** (1.0 / S)
        rho = torch.where(torch.rand(n, G, 1, P, generator=generator, dtype=torch.float64) < 0.5, 1.0, rho)
        lam = self.lam if self.lam.ndim == 1 else self.lam[0]
        tie = (rho * s).to(st.r.dtype).to(st.r.device) * lam[None, :, None, None]
        smooth = st.smooth[:1, :, None, :] > 0
        return torch.where(smooth, self._cones(st.r[:1]), tie).reshape(n, self.dim)

    def numpy_weights(self) -> dict:
        return {"A": self.conv.sparse()}

    def lift(self, x, data) -> BlockLift:
        """``min sum_g lam_g sum_p t_{g,p}`` s.t. ``u = A x + d``, ``||u_{g,:,p}|| <= t_{g,p}``.
        The dual of ``u = A x + d`` is ``r``."""
        A = self.numpy_weights()["A"]
        u = cp.Variable(self.dim)
        t = cp.Variable((self.groups, self.pixels))
        link = u == A @ x + data["d"]
        idx = self._cone_index()
        cone = cp.SOC(cp.reshape(t, (self.groups * self.pixels,), order="C"), cp.vstack([u[i] for i in idx]), axis=0)

        def read() -> np.ndarray:
            return -np.asarray(link.dual_value, dtype=float).reshape(-1)

        return BlockLift(data["lam"] @ cp.sum(t, axis=1), [link, cone], read)
