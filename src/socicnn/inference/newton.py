"""Kink-aware (face) Newton for ``min_x F_y(x) = f(x) + (beta/2)||x - y||^2`` [``x in C``], batched.

Everything here asks the model's blocks (:class:`socicnn.blocks.ConvexBlock`), never a model
family: a block exposes *kink coordinates* (a ReLU unit's pre-activation, a norm block's
``u = A x + d``), the smooth piece it is on (its *pattern*), the piece's gradient plus
``J^T seeds`` for multipliers on kink coordinates, the kink coordinates' change along a step
(``J dx``), their gradients (rows of ``J``), its curvature ``Q`` with piece Hessian ``Q^T Q``
(or an HVP) and its part of a duality gap. On a *face* (some kink coordinates held at 0) ``F``
is smooth, and a Newton step on it solves ``[H + beta I, J^T; J, 0] [dx; mu] = [-g; -res]`` by
its Schur complement. A face multiplier that leaves the block's dual set (``0 <= nu_t <= upper_t``
for a ReLU unit, ``||r|| <= lam`` for a norm block) releases that kink to the side it says.

**Certificate.** At any ``x``, multipliers of the tied kinks are chosen by least squares
(``min ||g + J_T^T mu||``) and projected into the blocks' optimal dual sets, which makes the
whole multiplier dual feasible; with ``s`` its slope of ``F`` and ``eps`` its duality gap at
``x`` (the blocks' ``gap_slack``, plus complementary slackness of the constraint rows),
``F(z) >= F(x) - eps + s^T (z - x) + (beta/2)||z - x||^2`` for every feasible ``z``, hence
``F(x) - min F <= eps + ||s||^2 / (2 beta)``. This covers every kind of kink: a ReLU tie and a
norm tie ``u_g = 0`` (where any ``||r_g|| <= lam_g`` is optimal) alike.

**Curvature.** ``H + beta I = beta I + Q^T Q`` with ``Q`` stacked from the blocks' factors:
Cholesky of the ``d x d`` matrix when ``d <= rank``, of the Woodbury capacitance otherwise. When a
block offers only an HVP, or the factors would be too large, solves run matrix-free by
conjugate gradients on ``H + beta I`` (symmetric positive definite).
"""

from __future__ import annotations

import dataclasses
import math
import weakref
from collections.abc import Callable

import torch

from .constraints import Constraint, LinearRows
from .descent import ARMIJO, MAX_HALVINGS, LoopResult, objective

__all__ = ["certified_gap_bound", "certified_subgradient_norm", "face_newton"]

SLOW_FRACTION = 1e-3  # an iteration decreasing F by less than this share of the open gap also tries the stall escape
CERTIFICATE_REFINE = 50  # gradient steps on the tie multipliers of the stall escape (:func:`_certificate`)
# Iterations a query runs before the face of the kinks its Newton step crosses joins its candidates:
# from the first point (the query itself) the look-ahead step won on 187 of 200 paper-size queries
# at beta = 1 and that face on none, while costing most of the iteration. With constraint rows
# that face is not tried at all: on the box, simplex and budget sets at paper size the face of the
# reached ties (active rows included) did its work, the iteration counts were the same without it
# and the time per query 21-33 % lower (beta = 1 and 10).
CROSSED_FACE_AFTER = 1
# Iterations a query runs before the identification guesses join its candidates: from a query's
# fifth (paper size, prox from the query) unless the caller starts near the answer (see face_newton).
IDENTIFY_AFTER = 4
# Distances to a tie of the identification guesses in face_newton (at paper size a guess at 1e-1
# never won and, with faces of up to d rows, cost a quarter of the time at beta = 1).
IDENTIFY_TAUS = (1e-2, 1e-3, 1e-4)
LOOKAHEAD = 1  # pattern updates of the look-ahead Newton candidate (:func:`_pattern_lookahead`)
# Violated face multipliers released per round, worst first, among those at least RELEASE_FRACTION
# of the worst (measured at paper size: fewer iterations at beta = 1 and 0.1 than one per round).
RELEASES_PER_ROUND = 8
RELEASE_FRACTION = 0.25
GROUP_ABOVE = 16  # face solves are grouped by size only when some face has more rows than this
DENSE_JACOBIAN_LIMIT = 2**25  # numbers in a cached (n, K, d) kink Jacobian (256 MiB in float64)
DENSE_FACTOR_LIMIT = 2**27  # numbers in the stacked (n, r, d) curvature factors (1 GiB in float64) before CG
CG_MAX_ITER = 500
STRAIGHT_TOL = 1e-12  # a projected line-search step this close to half the previous one: the path is straight


def _subset_state(st, keep):
    """A block state restricted to rows ``keep``: states are dataclasses of batch-first tensors
    (or lists of them)."""
    if st is None:
        return None
    changes = {}
    for f in dataclasses.fields(st):
        v = getattr(st, f.name)
        if isinstance(v, torch.Tensor):
            changes[f.name] = v[keep]
        elif isinstance(v, list):
            changes[f.name] = [t[keep] if isinstance(t, torch.Tensor) else t for t in v]
    return dataclasses.replace(st, **changes)


# --------------------------------------------------------------------------- curvature
class _Curvature:
    """``H + beta I`` on the current pieces, at a batch of points, with batched solves."""

    def __init__(self, pt: _Point, exclude: int | None = None) -> None:
        self.beta, self.pt, self.exclude = pt.beta, None, exclude
        n, d = pt.x.shape
        factors = []
        for i, (block, st, P) in enumerate(pt.parts()):
            if i == exclude:
                continue
            Q = block.face_curvature(st, P)
            if Q is None:
                factors = None
                break
            if Q.shape[1]:
                factors.append(Q)
        self.Q = self.L = self._pt = None
        self.free = False
        if factors is None or sum(Q.shape[1] for Q in factors) * n * d > DENSE_FACTOR_LIMIT:
            self.free, self.pt = True, pt  # matrix-free: HVPs and conjugate gradients
            return
        if not factors:
            return  # H = 0: (beta I)^{-1}
        Q = torch.cat(factors, dim=1)
        r = Q.shape[1]
        eye = torch.eye(min(r, d), dtype=Q.dtype, device=Q.device)
        if r >= d:
            self.L = _cholesky(Q.transpose(1, 2) @ Q + self.beta[:, None, None] * eye)
        else:
            self.Q, self.L = Q, _cholesky(Q @ Q.transpose(1, 2) + self.beta[:, None, None] * eye)

    @property
    def pt(self) -> _Point | None:
        """The point whose HVPs the matrix-free path applies. Held weakly (the point holds its
        curvature), so no reference cycle keeps a point's tensors alive after its last use."""
        return None if self._pt is None else self._pt()

    @pt.setter
    def pt(self, value: _Point | None) -> None:
        self._pt = None if value is None else weakref.ref(value)

    def subset(self, keep, pt: _Point) -> _Curvature:
        out = object.__new__(_Curvature)
        out.beta, out.free, out.exclude = self.beta[keep], self.free, self.exclude
        out.pt = pt if self.free else None
        out.Q = None if self.Q is None else self.Q[keep]
        out.L = None if self.L is None else self.L[keep]
        return out

    def _apply(self, w: torch.Tensor) -> torch.Tensor:
        """``(H + beta I) w`` for ``w`` ``(n, d)``."""
        out = self.beta[:, None] * w
        for i, (block, st, P) in enumerate(self.pt.parts()):
            if i == self.exclude:
                continue
            part = block.face_hvp(st, P, w)
            if part is not None:
                out = out + part
        return out

    def solve(self, b: torch.Tensor) -> torch.Tensor:
        """``(H + beta I)^{-1} b`` for ``b`` ``(n, d)`` or ``(n, d, k)``."""
        if self.free:
            if b.ndim == 2:
                return _cg(self._apply, b, self.beta)
            return torch.stack([_cg(self._apply, b[..., j], self.beta) for j in range(b.shape[-1])], dim=-1)
        vec = b.ndim == 2
        B = b[..., None] if vec else b
        if self.L is None:
            out = B / self.beta[:, None, None]
        elif self.Q is None:
            out = torch.cholesky_solve(B, self.L)
        else:  # Woodbury: (beta I + Q^T Q)^{-1} = (I - Q^T (beta I + Q Q^T)^{-1} Q) / beta
            out = (B - self.Q.transpose(1, 2) @ torch.cholesky_solve(self.Q @ B, self.L)) / self.beta[:, None, None]
        return out[..., 0] if vec else out

    def schur(self, J: torch.Tensor) -> torch.Tensor:
        """``J (H + beta I)^{-1} J^T`` ``(n, k, k)`` for rows ``J`` ``(n, k, d)``."""
        if self.free or self.L is None or self.Q is None:
            return J @ self.solve(J.transpose(1, 2))
        P = self.Q @ J.transpose(1, 2)  # (n, r, k)
        return (J @ J.transpose(1, 2) - P.transpose(1, 2) @ torch.cholesky_solve(P, self.L)) / self.beta[:, None, None]


def _cholesky(A: torch.Tensor) -> torch.Tensor:
    """Cholesky factor of SPD matrices ``beta I + PSD``; a failure (rounding on huge curvature
    near a norm kink) retries with a relative ridge instead of aborting the batch."""
    L, info = torch.linalg.cholesky_ex(A)
    if bool((info > 0).any()):
        ridge = 1e-12 * torch.diagonal(A, dim1=-2, dim2=-1).amax(-1).clamp(min=1.0)
        L, info = torch.linalg.cholesky_ex(
            A + ridge[:, None, None] * torch.eye(A.shape[-1], dtype=A.dtype, device=A.device)
        )
        if bool((info > 0).any()):
            raise FloatingPointError("the Newton matrix H + beta I is not numerically positive definite")
    return L


def _cg(apply: Callable, b: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
    """Batched conjugate gradients for ``A x = b`` (``A`` SPD with smallest eigenvalue ``>= beta``),
    to a relative residual of ``100 eps``."""
    x = b / beta[:, None]
    r = b - apply(x)
    p = r.clone()
    rr = (r * r).sum(-1)
    target = (1e2 * torch.finfo(b.dtype).eps) ** 2 * (b * b).sum(-1).clamp(min=1e-300)
    for _ in range(CG_MAX_ITER):
        if bool((rr <= target).all()):
            break
        Ap = apply(p)
        alpha = rr / (p * Ap).sum(-1).clamp(min=1e-300)
        x = x + alpha[:, None] * p
        r = r - alpha[:, None] * Ap
        rr_new = (r * r).sum(-1)
        p = r + (rr_new / rr.clamp(min=1e-300))[:, None] * p
        rr = rr_new
    return x


# --------------------------------------------------------------------------- the point
class _Point:
    """Face-Newton data at a batch of iterates ``x`` ``(n, d)`` (rows ``index`` of the queries):
    the blocks' states and patterns, kink coordinates and ties, the piece gradient ``g`` of ``F``,
    the curvature and the constraint residuals ``C x - h``."""

    def __init__(self, model, index, x, y, beta, rows: LinearRows | None, tie_tol: float, *, curvature: bool = True):
        self.model = model.select(index)
        self.index, self.x, self.y, self.beta, self.rows = index, x, y, _per_row(beta, x), rows
        self.blocks = list(self.model.blocks())
        self.states = [b.state(x) for b in self.blocks]
        kinks = [b.kinks(st) for b, st in zip(self.blocks, self.states, strict=True)]
        self.sizes = [k.shape[1] for k in kinks]
        self.K = sum(self.sizes)
        self.k = torch.cat(kinks, dim=-1)
        self.tied = torch.cat([b.tied(st, tie_tol) for b, st in zip(self.blocks, self.states, strict=True)], dim=-1)
        self.P = torch.cat(
            [b.face_pattern(st, t) for b, st, t in zip(self.blocks, self.states, self._split(self.tied), strict=True)],
            dim=-1,
        )
        self.cres = x @ rows.C.T - rows.h if rows is not None else x.new_zeros(x.shape[0], 0)
        self._set_gradient()
        self._stale = None  # kinks released since the gradient and curvature were computed
        self.curv = _Curvature(self) if curvature else None
        # Dense kink Jacobians are computed once, at this (root) point, and shared by subsets.
        # (_root is None at the root itself: no reference cycle, so a point is freed with its last use)
        self._root, self._jq, self._jac, self._jac_base = None, torch.arange(x.shape[0], device=x.device), {}, {}

    def _split(self, t: torch.Tensor) -> list[torch.Tensor]:
        return list(torch.split(t, self.sizes, dim=-1))

    def parts(self):
        """``(block, state, pattern)`` per block."""
        return zip(self.blocks, self.states, self._split(self.P), strict=True)

    def duals(self, seeds: torch.Tensor, clip: torch.Tensor | None = None, pattern: torch.Tensor | None = None):
        """Sum over blocks of :meth:`ConvexBlock.face_duals`: slope ``(n, d)`` (the prox term
        excluded), multipliers per block, violation and release side ``(n, K)``."""
        P = self.P if pattern is None else pattern
        clips = [None] * len(self.blocks) if clip is None else self._split(clip)
        parts = [
            b.face_duals(st, p, s, c)
            for b, st, p, s, c in zip(self.blocks, self.states, self._split(P), self._split(seeds), clips, strict=True)
        ]
        slope = parts[0].slope
        for part in parts[1:]:
            slope = slope + part.slope
        viol = torch.cat([p.violation for p in parts], dim=-1)
        side = torch.cat([p.to_active for p in parts], dim=-1)
        return slope, [p.mult for p in parts], viol, side

    def _set_gradient(self):
        self.g = self.duals(torch.zeros_like(self.k))[0] + self.beta[:, None] * (self.x - self.y)

    def minorant_slack(self) -> torch.Tensor:
        """``(n,)`` slack of the pattern gradient ``g`` as a subgradient: the blocks' gap slack of
        their canonical multipliers on the current pattern (nonzero where a near-tie is not an
        exact one), so ``F(z) >= F(x) - slack + g^T (z - x) + (beta/2)||z - x||^2``."""
        return self.gap_slack(self.duals(torch.zeros_like(self.k))[1])

    def gap_slack(self, mults) -> torch.Tensor:
        """``(n,)`` sum of the blocks' gap slack of multipliers ``mults`` (one entry per block)."""
        eps = self.x.new_zeros(self.x.shape[0])
        for b, st, m in zip(self.blocks, self.states, mults, strict=True):
            eps = eps + b.gap_slack(st, m)
        return eps.clamp(min=0.0)

    def jvp(self, dx: torch.Tensor) -> torch.Tensor:
        """``(n, K)`` change of every kink coordinate along ``dx`` on the current pieces."""
        return torch.cat([b.face_jvp(st, p, dx) for b, st, p in self.parts()], dim=-1)

    def kink_rows(self, index: torch.Tensor) -> torch.Tensor:
        """``(n, k, d)`` gradients of the kink coordinates ``index`` ``(n, k)`` (global indices):
        gathered from a block's dense Jacobian when it offers one that fits (computed once per
        point, shared by every subset, kept valid across pattern flips by rank-one terms), else
        by the block's ``face_rows``."""
        n, k, d = index.shape[0], index.shape[1], self.x.shape[1]
        out = self.x.new_zeros(n, k, d)
        start = 0
        for i, ((b, st, p), size) in enumerate(zip(self.parts(), self.sizes, strict=True)):
            if size:
                mine = (index >= start) & (index < start + size)
                if bool(mine.any()):
                    local = (index - start).clamp(0, size - 1)
                    cached = self._dense(i, b, st, p, size)
                    rows = cached.rows(local) if cached is not None else b.face_rows(st, p, local)
                    out = torch.where(mine[..., None], rows, out)
            start += size
        return out

    def _dense(self, i, block, st, pattern, size):
        if i not in self._jac:
            root = self if self._root is None else self._root
            dense = getattr(root.blocks[i], "face_jacobian", None)
            if dense is None or root.x.shape[0] * size * root.x.shape[1] > DENSE_JACOBIAN_LIMIT:
                return None
            if i not in root._jac_base:
                root._jac_base[i] = dense(root.states[i], root._split(root.P)[i])
            self._jac[i] = _Jacobian(root._jac_base[i], self._jq)
        return self._jac[i]

    def subset(self, keep) -> _Point:
        """The same data for the queries ``keep`` (indices or mask)."""
        out = object.__new__(_Point)
        out.__dict__.update(self.__dict__)
        out._root = self if self._root is None else self._root
        if keep.dtype == torch.bool:
            keep = keep.nonzero().squeeze(1)
        out.model = self.model.select(keep)
        out.blocks = list(out.model.blocks())
        out.states = [_subset_state(st, keep) for st in self.states]
        for name in ("index", "x", "y", "beta", "k", "tied", "P", "cres", "g"):
            setattr(out, name, getattr(self, name)[keep])
        out._jq = self._jq[keep]
        out._jac = {i: J.subset(keep) for i, J in self._jac.items()}
        out.curv = None if self.curv is None else self.curv.subset(keep, out)
        return out

    def release(self, at: torch.Tensor, side: torch.Tensor, refresh: bool = True) -> torch.Tensor:
        """Set the pattern of the kink group of coordinate ``at`` ``(n,)`` (``-1``: none) to
        ``side``; returns the released coordinates ``(n, K)``. With ``refresh=False`` the gradient
        and the curvature are left for :meth:`refresh` (one update after several releases)."""
        group = torch.zeros_like(self.tied)
        start = 0
        for b, size in zip(self.blocks, self.sizes, strict=True):
            if size:
                mine = (at >= start) & (at < start + size)
                if bool(mine.any()):
                    local = (at - start).clamp(0, size - 1)
                    group[:, start : start + size] = b.release_group(local) & mine[:, None]
            start += size
        if bool(group.any()):
            self._update_jacobians(at, side)
            self.P = torch.where(group, side[:, None].to(self.P.dtype), self.P)
            self._stale = group if self._stale is None else self._stale | group
            if refresh:
                self.refresh()
        return group

    def refresh(self) -> None:
        """The gradient and the curvature after the releases since the last refresh."""
        stale, self._stale = self._stale, None
        if stale is None:
            return
        self._set_gradient()
        curved = [
            not b.piecewise_linear and bool(part.any()) for b, part in zip(self.blocks, self._split(stale), strict=True)
        ]
        if self.curv is not None and not self.curv.free and any(curved):
            self.curv = _Curvature(self)
        elif self.curv is not None and self.curv.free:
            self.curv.pt = self

    def _update_jacobians(self, at: torch.Tensor, side: torch.Tensor) -> None:
        """Keep the cached dense Jacobians valid across a pattern flip of coordinate ``at``: by
        the block's rank-one ``face_flip_effect`` when it has one, else by dropping the cache."""
        jac = self._jac
        start = 0
        for i, ((b, st, p), size) in enumerate(zip(self.parts(), self.sizes, strict=True)):
            mine = (at >= start) & (at < start + size)
            flip = getattr(b, "face_flip_effect", None)
            if size and flip is not None and bool(mine.any()):
                self._dense(i, b, st, p, size)  # the flip corrects the root Jacobian
            if size and i in jac and bool(mine.any()):
                if flip is None:
                    del jac[i]
                else:
                    local = (at - start).clamp(0, size - 1)
                    rows = torch.arange(at.shape[0], device=at.device)
                    delta = torch.where(mine, side.to(p.dtype) - p[rows, local], 0.0)
                    grad_t = jac[i].rows(local[:, None])[:, 0]  # unaffected by its own flip
                    jac[i] = jac[i].corrected(flip(st, p, local, delta), grad_t)
            start += size

    def residuals(self) -> torch.Tensor:
        """``(n, K + K_c)``: kink coordinates, then ``C x - h``."""
        return torch.cat([self.k, self.cres], dim=-1)

    def rows_of(self, sel, priority, kmax, qi=None):
        """Rows of the selected kink coordinates / constraints (``sel`` ``(n, K+K_c)``, for the
        queries ``qi`` of this point, default all), at most ``kmax``, highest ``priority`` first.
        Returns ``idx``, ``valid`` ``(n, k)``, ``J`` ``(n, k, d)`` (zero where invalid) and the
        residuals ``(n, k)``; ``None`` when nothing is selected."""
        k = int(min(int(sel.sum(-1).max()), kmax)) if sel.shape[0] else 0
        if k == 0:
            return None
        sub = self if qi is None else self.subset(qi)
        score = torch.where(sel, priority, torch.full_like(priority, -math.inf))
        idx = torch.topk(score, k, dim=-1).indices
        valid = sel.gather(-1, idx)
        vf = valid.to(self.x.dtype)
        J = sub.kink_rows(idx.clamp(max=max(self.K - 1, 0))) if self.K else sub.x.new_zeros(*idx.shape, sub.x.shape[1])
        if self.rows is not None:
            J = torch.where((idx < self.K)[..., None], J, self.rows.C[(idx - self.K).clamp(min=0)])
        return idx, valid, J * vf[..., None], sub.residuals().gather(-1, idx) * vf


class _Jacobian:
    """A dense kink Jacobian ``(n0, K, d)`` shared by the subsets of a point (row ``i`` of a
    subset reads ``base[jq[i]]``), plus rank-one corrections ``(effect (n, K), grad (n, d))`` from
    pattern flips, so neither a subset nor a flip copies the ``(n, K, d)`` tensor."""

    def __init__(self, base: torch.Tensor, jq: torch.Tensor, corr: list | None = None) -> None:
        self.base, self.jq, self.corr = base, jq, corr or []

    def subset(self, keep) -> _Jacobian:
        return _Jacobian(self.base, self.jq[keep], [(e[keep], v[keep]) for e, v in self.corr])

    def corrected(self, effect: torch.Tensor, grad: torch.Tensor) -> _Jacobian:
        return _Jacobian(self.base, self.jq, [*self.corr, (effect, grad)])

    def rows(self, local: torch.Tensor) -> torch.Tensor:
        """``(n, k, d)`` rows ``local`` ``(n, k)``."""
        J = self.base[self.jq[:, None], local]
        for e, v in self.corr:
            J = J + e.gather(-1, local)[..., None] * v[:, None, :]
        return J


def _scatter(idx, valid, vals, width):
    out = vals.new_zeros(idx.shape[0], width)
    return out.scatter(-1, idx, vals * valid)


def _regularised_solve(S, rhs, valid):
    """Solve ``S mu = rhs`` on the valid rows (identity elsewhere), with a tiny ridge for dependent rows."""
    vf = valid.to(S.dtype)
    S = S * vf[..., :, None] * vf[..., None, :]
    scale = torch.diagonal(S, dim1=-2, dim2=-1).amax(-1).clamp(min=1.0)
    ridge = 1e3 * torch.finfo(S.dtype).eps * scale
    S = S + torch.diag_embed((1 - vf) + vf * ridge[:, None])
    return torch.linalg.solve(S, (rhs * vf)[..., None])[..., 0]


# --------------------------------------------------------------------------- certificate
def _certificate(pt: _Point, tie_tol: float, eq, refine: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A certified subgradient ``s`` ``(n, d)`` and slack ``eps`` ``(n,)`` with
    ``F(z) >= F(x) - eps + s^T (z - x) + (beta/2)||z - x||^2`` for every feasible ``z``, hence
    ``F(x) - F* <= eps + ||s||^2 / (2 beta)`` (see the module docstring).

    The tie multipliers are the least-squares fit of ``s = 0`` on the tied kinks and active rows,
    made dual feasible by the blocks' clipping (a ReLU multiplier into its interval, a cone's into
    its ball). Clipping can leave ``s`` far from the least-norm subgradient (then ``-s`` need not
    even descend); ``refine > 0`` takes that many gradient steps on ``||s||^2 / 2`` from the fit
    (step ``1 / ||J J^T||``, clipping after each) and keeps the smallest bound per query. Every
    iterate is dual feasible, so each bound is valid."""
    K = pt.K
    tied_c = (pt.cres >= -tie_tol) | eq
    sel = torch.cat([pt.tied, tied_c], dim=-1)

    def evaluate(spread):
        seeds, lam = (spread[:, :K], spread[:, K:]) if spread is not None else (torch.zeros_like(pt.k), None)
        slope, mults, _, _ = pt.duals(seeds, clip=pt.tied)
        s = slope + pt.beta[:, None] * (pt.x - pt.y)
        eps = pt.gap_slack(mults)
        if pt.rows is not None:
            lam = torch.zeros_like(pt.cres) if lam is None else lam
            lam = torch.where(eq, lam, lam.clamp(min=0.0)) * tied_c
            s = s + lam @ pt.rows.C
            eps = eps + torch.where(eq, (lam * pt.cres).abs(), lam * (-pt.cres).clamp(min=0.0)).sum(-1)
        return s, eps

    got = pt.rows_of(sel, torch.zeros_like(pt.residuals()), kmax=sel.shape[-1])
    if got is None:
        return evaluate(None)
    idx, valid, J, _ = got
    S = J @ J.transpose(-1, -2)
    mu = _regularised_solve(S, -(J @ pt.g[..., None])[..., 0], valid)
    s, eps = evaluate(_scatter(idx, valid, mu, sel.shape[-1]))
    if refine <= 0:
        return s, eps
    best_s, best_eps = s, eps
    bound = eps + (s * s).sum(-1) / (2 * pt.beta)
    step = 1.0 / torch.linalg.matrix_norm(S, ord=2).clamp(min=torch.finfo(S.dtype).tiny)
    for _ in range(refine):
        mu = mu - step[:, None] * (J @ s[..., None])[..., 0] * valid
        s, eps = evaluate(_scatter(idx, valid, mu, sel.shape[-1]))
        new = eps + (s * s).sum(-1) / (2 * pt.beta)
        better = new < bound
        best_s = torch.where(better[:, None], s, best_s)
        best_eps, bound = torch.where(better, eps, best_eps), torch.where(better, new, bound)
    return best_s, best_eps


def _per_row(beta, x: torch.Tensor) -> torch.Tensor:
    """The proximal weight as one value per row of ``x`` ``(n,)`` (from a number or a tensor)."""
    return torch.as_tensor(beta, dtype=x.dtype, device=x.device).expand(x.shape[0]).clone()


def _rows_and_eq(constraint: Constraint | None, d, dtype, device):
    rows = None if constraint is None else constraint.rows(d, dtype, device)
    eq = rows.equality if rows is not None else torch.zeros(0, dtype=torch.bool, device=device)
    return rows, eq


@torch.no_grad()
def certified_gap_bound(model, x, y, beta, constraint: Constraint | None, tie_tol: float):
    """``(||s||, eps + ||s||^2 / (2 beta))`` ``(N,)`` each at ``x`` ``(N, d)``: the certified
    subgradient norm and the certified bound on ``F_y(x) - min_C F_y`` (module docstring)."""
    rows, eq = _rows_and_eq(constraint, x.shape[-1], x.dtype, x.device)
    index = torch.arange(x.shape[0], device=x.device)
    beta = _per_row(beta, x)
    s, eps = _certificate(_Point(model, index, x, y, beta, rows, tie_tol, curvature=False), tie_tol, eq)
    norm = torch.linalg.vector_norm(s, dim=-1)
    return norm, eps + norm**2 / (2 * beta)


@torch.no_grad()
def certified_subgradient_norm(model, x, y, beta, constraint: Constraint | None, tie_tol: float) -> torch.Tensor:
    """Norm ``(N,)`` of the certified subgradient of :func:`certified_gap_bound` at ``x``."""
    return certified_gap_bound(model, x, y, beta, constraint, tie_tol)[0]


# --------------------------------------------------------------------------- face steps
def _face_direction(pt: _Point, cand, priority, eq, rounds: int, kmax: int):
    """Newton step on the face of the candidate ties ``cand`` ``(n, K+K_c)``, with the tied set
    corrected by dual feasibility for up to ``rounds`` rounds: the most violated multipliers per
    query (kink groups, or inequality rows with ``lambda < 0``; up to ``RELEASES_PER_ROUND``, worst
    first) are released to the side they say, as in a primal-dual active-set method, and only
    those queries go on to the next round."""
    dx = torch.zeros_like(pt.x)
    todo = torch.arange(pt.x.shape[0], device=pt.x.device)
    cand = cand.clone()
    sub = pt
    for r in range(rounds):
        step, at, side = _face_round(sub, cand[todo], priority[todo], eq, kmax)
        dx[todo] = step
        if at is None or r == rounds - 1:
            break
        more = (at >= 0).any(-1)
        keep = more.nonzero().squeeze(1)
        if keep.numel() == 0:
            break
        todo, sub = todo[keep], sub.subset(keep)
        at, side = at[keep], side[keep]
        released = torch.zeros_like(cand[todo])
        for j in range(at.shape[1]):  # the worst first: a release moves the duals below it
            aj, sj = at[:, j], side[:, j]
            is_kink = (aj >= 0) & (aj < pt.K)
            group = sub.release(torch.where(is_kink, aj, -1), sj, refresh=False)
            released[:, : pt.K] |= group
            row = torch.where((aj >= pt.K), aj, -1)
            released[torch.arange(row.shape[0], device=row.device)[row >= 0], row[row >= 0]] = True
        sub.refresh()
        cand[todo] &= ~released
    return dx


def _face_round(pt: _Point, cand, priority, eq, kmax):
    """One KKT solve on the face ``cand`` per query; returns the step, the coordinate to release
    per query (``-1``: none; ``None`` when no query has one) and the side to release it to.
    With more than ``GROUP_ABOVE`` rows somewhere, queries are grouped by their number of rows
    (powers of two) so that padding to the largest face in a group wastes little."""
    Hg = pt.curv.solve(pt.g)
    count = cand.sum(-1).clamp(max=kmax)
    if not bool((count > 0).any()):
        return -Hg, None, None
    dx = -Hg
    mu_all = torch.zeros_like(cand, dtype=pt.x.dtype)
    on_face = torch.zeros_like(cand)
    level = torch.ceil(torch.log2(count.clamp(min=1).to(torch.float64))).long()
    if int(count.max()) <= GROUP_ABOVE:
        level = torch.zeros_like(level)
    for lev in torch.unique(level[count > 0]).tolist():
        qi = ((level == lev) & (count > 0)).nonzero().squeeze(1)
        idx, valid, J, res = pt.rows_of(cand[qi], priority[qi], kmax, qi)
        sub = pt.subset(qi) if pt.curv.free else None  # held here: the curvature refers to it weakly
        curv = pt.curv.subset(qi, sub)
        mu = _regularised_solve(curv.schur(J), res - (J @ Hg[qi, :, None])[..., 0], valid)
        dx[qi] = -curv.solve(pt.g[qi] + (J.transpose(1, 2) @ mu[..., None])[..., 0])
        mu_all[qi] = _scatter(idx, valid, mu, cand.shape[-1])
        on_face[qi] = _scatter(idx, valid, torch.ones_like(mu), cand.shape[-1]) > 0  # beyond kmax: left out
    K = pt.K
    sel_k = on_face[:, :K]
    _, _, viol, side = pt.duals(mu_all[:, :K] * sel_k)
    viol = torch.where(sel_k, viol, 0.0)
    bad_c = torch.where(on_face[:, K:] & ~eq, -mu_all[:, K:], torch.zeros_like(mu_all[:, K:]))
    allv = torch.cat([viol, bad_c], dim=-1)
    r = min(RELEASES_PER_ROUND, allv.shape[-1])
    top, at = torch.topk(allv, r, dim=-1)
    worst = top[:, :1]
    drop = (top > 1e3 * torch.finfo(pt.x.dtype).eps) & (top >= RELEASE_FRACTION * worst)
    if not bool(drop.any()):
        return dx, None, None
    at = torch.where(drop, at, -1)
    side = torch.cat([side, torch.zeros_like(bad_c, dtype=torch.bool)], dim=-1).gather(-1, at.clamp(min=0))
    return dx, at, side


def _ball_maximiser(M: torch.Tensor, c: torch.Tensor, radius: torch.Tensor) -> torch.Tensor:
    """``argmax_{||r|| <= radius} r^T c - r^T M r / 2`` ``(n, k)`` for PSD ``M`` ``(n, k, k)``:
    ``r = (M + mu I)^{-1} c`` with ``mu = 0`` if that is inside the ball, else ``||r|| = radius``
    (``mu`` by bisection on the eigenvalues of ``M``)."""
    evals, Q = torch.linalg.eigh(0.5 * (M + M.transpose(1, 2)))
    evals = evals.clamp(min=0.0)
    qc = (Q.transpose(1, 2) @ c[..., None])[..., 0]
    tiny = torch.finfo(c.dtype).tiny

    def norm_at(mu):
        return torch.linalg.vector_norm(qc / (evals + mu[:, None]).clamp(min=tiny), dim=-1)

    inside = norm_at(torch.zeros_like(radius)) <= radius
    lo, hi = torch.zeros_like(radius), torch.linalg.vector_norm(c, dim=-1) / radius.clamp(min=tiny)
    for _ in range(100):  # ||r(mu)|| decreases in mu; at hi it is <= radius
        mid = 0.5 * (lo + hi)
        big = norm_at(mid) > radius
        lo, hi = torch.where(big, mid, lo), torch.where(big, hi, mid)
    mu = torch.where(inside, torch.zeros_like(hi), hi)
    return (Q @ (qc / (evals + mu[:, None]).clamp(min=tiny))[..., None])[..., 0]


def _exact_cone_steps(pt: _Point, faces: list[torch.Tensor]) -> list[torch.Tensor]:
    """For each block that is one cone (:meth:`~socicnn.blocks.ConvexBlock.exact_cone`), the
    minimiser of the model ``g_o^T D + D^T H_o D / 2 + lam ||u + A D||`` (the other blocks'
    gradient ``g_o`` and curvature ``H_o`` on the current pieces, the cone kept exact), free and
    on each of ``faces`` ``(n, K)`` (the other blocks' kinks in the face tied: ``J D = -k``; the
    loop passes the reached ties and its identification guesses). Newton's quadratic model of a cone is
    poor within about ``||u||`` of its apex, where face Newton's iterates otherwise creep towards
    an optimum near, but not at, the apex. With ``W = H_o^{-1} - H_o^{-1} J^T S^{-1} J H_o^{-1}``
    (``S = J H_o^{-1} J^T``; ``W = H_o^{-1}`` without ties) the model's minimiser on the face is
    ``D(r) = D_0 - W A^T r``, ``D_0 = -W g_o - H_o^{-1} J^T S^{-1} k``, at the maximiser over
    ``||r|| <= lam`` of ``r^T c - r^T M r / 2``, ``M = A W A^T``, ``c = u + A D_0`` (a
    trust-region subproblem, :func:`_ball_maximiser`)."""
    steps = []
    start = 0
    for i, ((block, st, _), size) in enumerate(zip(pt.parts(), pt.sizes, strict=True)):
        cone = block.exact_cone(st)
        if cone is not None:
            A, u, lam = cone
            curv = _Curvature(pt, exclude=i)
            g_o = pt.g - block.dual_slope(block.multipliers(st))
            HA = curv.solve(A.T.expand(pt.x.shape[0], -1, -1).contiguous())  # (n, d, k)
            Hg = curv.solve(g_o)
            steps.append(_cone_model_step(A, u, lam, HA, -Hg))
            for face in faces:
                others = face[:, : pt.K].clone()
                others[:, start : start + size] = False
                got = pt.rows_of(others, torch.zeros_like(pt.k), kmax=pt.x.shape[1]) if bool(others.any()) else None
                if got is None:
                    continue
                _, valid, J, res = got
                HJ = curv.solve(J.transpose(1, 2).contiguous())  # (n, d, t)
                vf = valid.to(J.dtype)
                S = (J @ HJ) * vf[:, :, None] * vf[:, None, :]
                ridge = 1e3 * torch.finfo(S.dtype).eps * torch.diagonal(S, dim1=-2, dim2=-1).amax(-1).clamp(min=1.0)
                S = S + torch.diag_embed((1 - vf) + vf * ridge[:, None])

                def project(V, J=J, HJ=HJ, S=S, vf=vf):  # W-projection of H_o^{-1} V: V - HJ S^{-1} J V
                    return V - HJ @ torch.linalg.solve(S, (J @ V) * vf[..., None])

                D0 = -project(Hg[..., None])[..., 0] - (HJ @ torch.linalg.solve(S, (res * vf)[..., None]))[..., 0]
                steps.append(_cone_model_step(A, u, lam, project(HA), D0))
        start += size
    return steps


def _cone_model_step(A, u, lam, WA, D0) -> torch.Tensor:
    """``D_0 - W A^T r`` at ``r = argmax_{||r|| <= lam} r^T (u + A D_0) - r^T A W A^T r / 2``."""
    M = A @ WA
    r = _ball_maximiser(M, u + D0 @ A.T, lam)
    return D0 - (WA @ r[..., None])[..., 0]


def _pattern_lookahead(pt: _Point, dn: torch.Tensor, steps: int) -> list[torch.Tensor]:
    """A Newton direction from ``x`` on the smooth piece met at the end of the previous step.

    The pattern ``P'`` of ``x + d`` (``d = dn`` first) defines a smooth minorant ``F_{P'} <= F``
    that agrees with ``F`` where ``P'`` is the pattern; its Newton direction from ``x`` is
    ``d' = -(H + beta I)^{-1} grad F_{P'}(x)`` (the current curvature). After ``steps`` such
    updates the last ``d'`` is returned (as a one-element list). When the optimum lies across
    several kinks this jumps over them at once; like every candidate it is only accepted on
    strict decrease of ``F``.
    """
    d, out = dn, []
    for _ in range(steps):
        states = [b.state(pt.x + d) for b in pt.blocks]
        P_new = torch.cat(
            [
                b.face_pattern(st, torch.zeros_like(b.kinks(st), dtype=torch.bool))
                for b, st in zip(pt.blocks, states, strict=True)
            ],
            dim=-1,
        )
        g_new = pt.duals(torch.zeros_like(pt.k), pattern=P_new)[0] + pt.beta[:, None] * (pt.x - pt.y)
        d = -pt.curv.solve(g_new)
        out.append(d)
    return out


# --------------------------------------------------------------------------- the loop
@torch.no_grad()
def face_newton(
    model,
    y,
    beta,
    constraint: Constraint | None,
    *,
    max_iter: int,
    rtol: float,
    tie_tol: float,
    rounds: int = 4,
    identify_after: int = IDENTIFY_AFTER,
) -> LoopResult:
    """Kink-aware Newton: damped Newton plus Newton steps on predicted optimal faces.

    ``beta`` is one number or one value per query ``(N,)``. ``identify_after``: iterations a
    query runs before the identification guesses (below) join its candidates; a caller whose
    ``y`` is a previous iterate near the answer (the proximal-point steps of
    :func:`~socicnn.inference.minimize`) passes a smaller value, since its optimal face is usually
    close to the ties already reached.

    Each iteration, on the queries still running:

    1. certificate (:func:`_certificate`): the query stops, converged, when its certified bound
       ``eps + ||s||^2 / (2 beta)`` is ``<= rtol * max(1, |F|)``;
    2. the plain Newton direction ``dn`` on the current pieces;
    3. the candidate ties: kinks already tied or that ``dn`` crosses (the blocks'
       ``face_crossing``), constraint rows active or crossed;
    4. face directions (:func:`_face_direction`) on the candidates (from a query's second
       iteration) and on the reached ties;
    5. backtracking over ``alpha = 1, 1/2, ...`` on the face directions (accepted on strict
       decrease), the step to the first kink along ``dn``, a look-ahead step and ``dn`` itself
       (Armijo), all candidates in one forward pass; the lowest accepted candidate wins
       (projected onto ``C`` when constrained). A query also stops at ``max_iter`` or after three
       iterations without decrease (both reported as not converged unless the certificate holds).
    """
    rows, eq_all = _rows_and_eq(constraint, y.shape[-1], y.dtype, y.device)
    x = y.clone() if constraint is None else constraint.project(y)
    n, d = y.shape
    beta = _per_row(beta, y)
    X, Fv = x.clone(), objective(model, x, y, beta)
    kw = {"dtype": y.dtype, "device": y.device}
    grad_norm = torch.full((n,), math.inf, **kw)
    gap_bound = torch.full((n,), math.inf, **kw)
    iterations = torch.zeros(n, dtype=torch.long, device=y.device)
    converged = torch.zeros(n, dtype=torch.bool, device=y.device)
    running = torch.ones(n, dtype=torch.bool, device=y.device)
    stuck = torch.zeros(n, dtype=torch.long, device=y.device)
    history = [Fv.clone()]
    slack = 8 * torch.finfo(y.dtype).eps
    for it in range(max_iter + 1):
        idx = running.nonzero().squeeze(1)
        if idx.numel() == 0:
            break
        x, ya, F = X[idx], y[idx], Fv[idx]
        last = it == max_iter
        pt = _Point(model, idx, x, ya, beta[idx], rows, tie_tol, curvature=not last)
        s, eps = _certificate(pt, tie_tol, eq_all)
        gn = torch.linalg.vector_norm(s, dim=-1)
        bound = eps + gn**2 / (2 * beta[idx])
        grad_norm[idx], gap_bound[idx] = gn, bound
        done = bound <= rtol * F.abs().clamp(min=1.0)
        converged[idx[done]] = True
        running[idx[done]] = False
        if last or bool(done.all()):
            break
        keep = (~done).nonzero().squeeze(1)
        idx, x, ya, F, pt, s = idx[keep], x[keep], ya[keep], F[keep], pt.subset(keep), s[keep]
        bound = bound[keep]
        iterations[idx] += 1
        dn = -pt.curv.solve(pt.g)
        dk = pt.jvp(dn)
        crossings = [b.face_crossing(st, p, part) for (b, st, p), part in zip(pt.parts(), pt._split(dk), strict=True)]
        cross_k = torch.cat([c for c, _ in crossings], dim=-1) | pt.tied
        frac_k = torch.where(pt.tied, 0.0, torch.cat([f for _, f in crossings], dim=-1))
        if rows is not None:
            c_after = pt.cres + dn @ rows.C.T
            cross_c = eq_all | (pt.cres >= -tie_tol) | (c_after > 0)
            frac_c = torch.where(c_after > pt.cres, (-pt.cres).clamp(min=0) / (c_after - pt.cres), 0 * c_after)
        else:
            cross_c = frac_c = x.new_zeros(x.shape[0], 0)
        cand = torch.cat([cross_k, cross_c.bool()], dim=-1)
        # Kinks reached first along dn come first when there are more candidates than fit.
        priority = -torch.cat([frac_k, frac_c], dim=-1)
        # Three guesses of the optimal face: the kinks dn crosses, the ties already reached, and
        # the first kink along dn (the step of a primal active-set method).
        ties = torch.cat([pt.tied, (pt.cres >= -tie_tol) | eq_all], dim=-1)
        face_dirs = [torch.zeros_like(dn), dn.clone()]  # a zero direction is not searched
        past_first = (iterations[idx] > CROSSED_FACE_AFTER) & (rows is None)
        later = past_first.nonzero().squeeze(1)
        if later.numel():
            face_dirs[0][later] = _face_direction(
                pt.subset(later), cand[later], priority[later], eq_all, rounds, kmax=d
            )
        # Without ties that face step is dn itself; when no kink is crossed it is the first one.
        same = ties.any(-1) & (ties == cand).all(-1) & past_first
        face_dirs[1][same] = face_dirs[0][same]
        has_ties = (ties.any(-1) & ~same).nonzero().squeeze(1)
        if has_ties.numel():
            face_dirs[1][has_ties] = _face_direction(
                pt.subset(has_ties), ties[has_ties], priority[has_ties], eq_all, rounds, kmax=d
            )
        if frac_k.shape[1]:
            first = torch.where(cross_k & ~pt.tied, frac_k, torch.ones_like(frac_k)).amin(-1).clamp(max=1.0)
        else:
            first = torch.ones_like(F)
        face_dirs.append(first[:, None] * dn)
        face_dirs.extend(_pattern_lookahead(pt, dn, LOOKAHEAD))
        # Identification guesses: the kinks within tau of their tie (and the rows within tau of
        # active), for a ladder of tau, each as one face; near a degenerate optimum (many ties)
        # one of them is the optimal face, found in one step instead of one tie per iteration.
        # Only for queries past identify_after iterations: most queries at large beta are solved
        # sooner by the steps above, and the guesses cost one face solve each.
        near = torch.cat([pt.k.abs(), (-pt.cres).clamp(min=0.0)], dim=-1)
        late = iterations[idx] > identify_after
        guesses = [ties]
        for tau in IDENTIFY_TAUS if bool(late.any()) else ():
            guess = ties | (near <= tau)
            guesses.append(guess)
            fresh = ((guess & ~ties).any(-1) & late).nonzero().squeeze(1)
            step = torch.zeros_like(dn)
            if fresh.numel():
                step[fresh] = _face_direction(pt.subset(fresh), guess[fresh], -near[fresh], eq_all, rounds, kmax=d)
            face_dirs.append(step)
        # The certified subgradient's Newton step: it uses the best multipliers of the ties (a
        # descent direction at kinks where the pattern gradient g is not) and escapes stalls.
        face_dirs.append(-pt.curv.solve(s))
        # Steps that keep a single cone exact, on the reached ties and on each guess: an optimum
        # near (not at) a cone's apex with many tied units needs both (paper size, beta = 0.1).
        # (Late queries only, like the guesses: a query's candidates do not depend on the others.)
        late_idx = late.nonzero().squeeze(1)
        if rows is None and late_idx.numel():
            for step in _exact_cone_steps(pt.subset(late_idx), [g[late_idx] for g in guesses]):
                face_dirs.append(torch.zeros_like(dn).index_copy_(0, late_idx, step))
        slope = (pt.g * dn).sum(-1)
        minorant = (pt.g, pt.minorant_slack())
        x_new, F_new, moved = _candidate_search(
            model, idx, ya, beta[idx], x, F, face_dirs, dn, slope, constraint, minorant
        )
        # Where nothing decreased, a plain step -s / beta along a subgradient refined towards the
        # least-norm one (steepest descent): it can leave a tie that the curvature of the pieces
        # around it does not see, such as a cone sitting at its apex.
        # Also where the decrease is negligible next to the certified gap still open: a zigzag
        # next to such a tie decreases by tiny amounts for many iterations.
        slow = moved & (F - F_new <= SLOW_FRACTION * bound)
        still = (~moved | slow).nonzero().squeeze(1)
        if still.numel():
            s_ref, _ = _certificate(pt.subset(still), tie_tol, eq_all, refine=CERTIFICATE_REFINE)
            xs, Fs, ms = _candidate_search(
                model, idx[still], ya[still], beta[idx[still]], x[still], F[still],
                [-s_ref / beta[idx[still], None]], dn[still], slope[still], constraint,
                (minorant[0][still], minorant[1][still]),
            )  # fmt: skip
            take = ms & (Fs < F_new[still])
            x_new[still[take]], F_new[still[take]] = xs[take], Fs[take]
            moved[still] |= ms
        # Below sqrt(eps) the objective cannot see progress any more: without a decrease the face
        # step on the reached ties may still polish x to rounding level (its certificate is
        # checked at the next iteration); three iterations in a row without decrease is a stall.
        polish = (~moved).nonzero().squeeze(1)
        if polish.numel():
            xp = x[polish] + face_dirs[1][polish]
            if constraint is not None:
                xp = constraint.project(xp)
            Fp = objective(model.select(idx[polish]), xp, y[idx[polish]], beta[idx[polish]])
            fine = Fp <= F[polish] + slack * (1 + F[polish].abs())
            x_new[polish[fine]], F_new[polish[fine]] = xp[fine], Fp[fine]
        stuck[idx] = torch.where(moved, torch.zeros_like(stuck[idx]), stuck[idx] + 1)
        X[idx], Fv[idx] = x_new, F_new
        running[idx[stuck[idx] >= 3]] = False
        history.append(Fv.clone())
    return LoopResult(X, Fv, grad_norm, iterations, converged, history, gap_bound)


def _candidate_search(model, idx, y, beta, x, F, face_dirs, dn, slope, constraint, minorant):
    """Backtrack ``alpha`` on every direction separately; keep the lowest accepted candidate.

    Each direction halves its own ``alpha`` from 1 until it is accepted (face directions on
    strict decrease, the Newton direction on the Armijo condition), so a short safe step on one
    direction does not stop a long productive one on another; every halving evaluates the
    pending (direction, query) pairs in one forward pass. Returns the new points and values and
    whether each query moved.

    ``minorant = (g, eps)``: a subgradient ``g`` ``(n, d)`` of ``F`` at ``x`` up to a slack
    ``eps`` ``(n,)``, so ``F(x + D) >= F(x) - eps + g^T D + (beta/2)||D||^2`` for every step
    ``D`` (strong convexity). A trial whose bound is not below the best value reached so far
    (``F(x)`` at first) cannot be accepted, or cannot win: it is not evaluated. Without a
    constraint the bound along a direction only grows as ``alpha`` falls below its minimiser
    ``alpha* = -g^T d / (beta ||d||^2)``, so such a direction is dropped there (at once when
    ``g^T d >= 0``: it is no descent direction at all). With one the path ``P(x + alpha d) - x``
    bends, but the sets here are polyhedral, so it is straight for small ``alpha`` (the projection
    onto the tangent cone at ``x``): once a halving halves the step ``s`` (to rounding) the path
    is taken as straight from there down and the same rule applies along ``s`` (a check at two
    points, not a proof; dropping a direction only leaves out candidates, the certificate does not
    depend on it); a zero step stays zero for every smaller ``alpha`` (``||s||`` does not decrease
    with ``alpha``).
    """
    dirs = torch.stack([*face_dirs, dn], dim=0)  # (D, n, d)
    D, n, d = dirs.shape
    project: Callable = (lambda t: t) if constraint is None else constraint.project
    g, eps = minorant
    eps = eps + 1e2 * torch.finfo(F.dtype).eps * (1 + F.abs())  # and rounding in the values
    gd = (g[None] * dirs).sum(-1)  # (D, n)
    a_star = -gd / (beta[None] * (dirs * dirs).sum(-1)).clamp(min=torch.finfo(F.dtype).tiny)
    alpha = torch.ones(D, n, dtype=F.dtype, device=F.device)
    best = torch.full((D, n), math.inf, dtype=F.dtype, device=F.device)
    best_x = x[None].expand(D, n, d).clone()
    pending = dirs.abs().amax(-1) > 0  # a zero direction (a guess a query did not take) cannot decrease F
    if constraint is None:
        pending &= gd < 0
    else:
        last = torch.full_like(best_x, math.nan)  # each pending pair's step at the previous halving
    is_newton = torch.zeros(D, 1, dtype=torch.bool, device=F.device)
    is_newton[-1] = True
    for _ in range(MAX_HALVINGS):
        pd, pq = pending.nonzero(as_tuple=True)
        if pd.numel() == 0:
            break
        a = alpha[pd, pq]
        trials = project(x[pq] + a[:, None] * dirs[pd, pq])
        step = trials - x[pq]
        gs, ss = (g[pq] * step).sum(-1), (step * step).sum(-1)
        lower = F[pq] - eps[pq] + gs + 0.5 * beta[pq] * ss
        hope = lower < torch.minimum(F, best.amin(0))[pq]
        if constraint is None:  # below alpha*, smaller steps only raise the bound
            drop = ~hope & (a <= a_star[pd, pq])
        else:
            # Along the straight path t s (t <= 1) the bound is lowest at t = 1 when
            # g^T s + beta ||s||^2 <= 0; with g^T s >= 0 it is no descent direction (as without a set).
            straight = (step - 0.5 * last[pd, pq]).abs().amax(-1) <= STRAIGHT_TOL * (1 + x[pq].abs().amax(-1))
            drop = (ss == 0) | (~hope & straight & ((gs >= 0) | (gs + beta[pq] * ss <= 0)))
            last[pd, pq] = step
        pending[pd[drop], pq[drop]] = False
        alpha[pd[~hope], pq[~hope]] *= 0.5
        pd, pq, a, trials = pd[hope], pq[hope], a[hope], trials[hope]
        if pd.numel() == 0:
            continue
        values = objective(model.select(idx[pq]), trials, y[pq], beta[pq])
        armijo = values <= F[pq] + ARMIJO * a * slope[pq]
        ok = torch.where(is_newton[pd, 0], armijo, values < F[pq])
        hit_d, hit_q = pd[ok], pq[ok]
        best[hit_d, hit_q], best_x[hit_d, hit_q] = values[ok], trials[ok]
        pending[hit_d, hit_q] = False
        alpha[pd[~ok], pq[~ok]] *= 0.5
    value, which = best.min(dim=0)
    moved = torch.isfinite(value)
    cols = torch.arange(n, device=F.device)
    x_new = torch.where(moved[:, None], best_x[which, cols], x)
    F_new = torch.where(moved, value, F)
    return x_new, F_new, moved
