"""Kink-aware (face) Newton for ``min_x F_y(x) = f(x) + (beta/2)||x - y||^2`` [``x in C``], batched.

Every iteration works on the still-running queries only and costs a fixed handful of batched
tensor operations, whatever the number of tied units:

- one forward pass of the backbone and one forward-mode Jacobian pass through the activation
  pattern ``s = 1[a > 0]``: ``dA_1/dx = W_1``, ``dA_l/dx = W_l + U_l diag(s_{l-1}) dA_{l-1}/dx``,
  giving the gradients of all ``M`` pre-activations at once, ``(n, M, d)``; the gradient of any
  tied unit or of the pattern's ``F`` is then a gather or a matrix product;
- ``H + beta I`` as ``beta I + Q^T Q`` with ``Q`` ``(n, r, d)`` built from the public attributes
  of the quadratic (``sqrt(alpha) B``) and norm blocks (``sqrt(lam/||u||) (I - u_hat u_hat^T) A``);
  solves use a Cholesky factor of the ``d x d`` matrix when ``d <= r`` and of the ``r x r``
  Woodbury capacitance ``beta I + Q Q^T`` otherwise;
- one Schur-complement solve for every face, padded to the largest number of rows in the batch;
- one stacked forward pass for all line-search candidates.

Pre-activations are exactly affine along a step as long as no unit changes sign, and with the
pattern ``1[a > 0]`` (``z = relu(a)`` moves with ``a`` until the kink) the linearised constraint
``a_t + J_t dx = 0`` of a face is exact. Tied units keep their pattern entry: the step on a face
does not depend on that choice (the rows differ by combinations of lower tied rows), only the
multipliers shift, by ``nu_t = mu_t + upper_t s_t`` (see :func:`_duals`).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from .. import readout as ro
from .constraints import Constraint, LinearRows
from .descent import ARMIJO, MAX_HALVINGS, LoopResult, objective

__all__ = ["certified_gap_bound", "certified_subgradient_norm", "face_newton"]

LOOKAHEAD = 1  # pattern updates of the look-ahead Newton candidate (:func:`_pattern_lookahead`)
GROUP_ABOVE = 16  # face solves are grouped by size only when some face has more rows than this


# --------------------------------------------------------------------------- curvature
class _Curvature:
    """``H + beta I = beta I + Q^T Q`` at a batch of points, with batched Cholesky solves.

    ``Q`` stacks ``sqrt(alpha_h) B_h`` (quadratic blocks) and ``sqrt(lam_g / ||u_g||) (I - u_hat
    u_hat^T) A_g`` (norm blocks, zero at a tie ``u_g = 0``, the readout's canonical selector), read
    from the blocks' public attributes. A model with another curved block falls back on the dense
    readout Hessian.
    """

    def __init__(self, model, x: torch.Tensor, beta: float) -> None:
        self.beta = beta
        n, d = x.shape
        eye = torch.eye(d, dtype=x.dtype, device=x.device)
        factors = _hessian_factors(model, x)
        if factors is None:  # unknown curved block: dense readout Hessian
            self.Q, self.L = None, torch.linalg.cholesky(ro.hessian(model, x) + beta * eye)
        elif factors.shape[1] >= d:
            self.Q, self.L = None, torch.linalg.cholesky(factors.transpose(1, 2) @ factors + beta * eye)
        else:
            r = factors.shape[1]
            cap = factors @ factors.transpose(1, 2) + beta * torch.eye(r, dtype=x.dtype, device=x.device)
            self.Q, self.L = factors, torch.linalg.cholesky(cap)

    def subset(self, keep) -> _Curvature:
        """The factors of the queries ``keep`` (indices or mask)."""
        out = object.__new__(_Curvature)
        out.beta, out.L = self.beta, self.L[keep]
        out.Q = None if self.Q is None else self.Q[keep]
        return out

    def solve(self, b: torch.Tensor) -> torch.Tensor:
        """``(H + beta I)^{-1} b`` for ``b`` ``(n, d)`` or ``(n, d, k)``."""
        vec = b.ndim == 2
        B = b[..., None] if vec else b
        if self.Q is None:
            out = torch.cholesky_solve(B, self.L)
        else:  # Woodbury: (beta I + Q^T Q)^{-1} = (I - Q^T (beta I + Q Q^T)^{-1} Q) / beta
            out = (B - self.Q.transpose(1, 2) @ torch.cholesky_solve(self.Q @ B, self.L)) / self.beta
        return out[..., 0] if vec else out

    def schur(self, J: torch.Tensor) -> torch.Tensor:
        """``J (H + beta I)^{-1} J^T`` ``(n, k, k)`` for rows ``J`` ``(n, k, d)``."""
        if self.Q is None:
            return J @ torch.cholesky_solve(J.transpose(1, 2), self.L)
        P = self.Q @ J.transpose(1, 2)  # (n, r, k)
        return (J @ J.transpose(1, 2) - P.transpose(1, 2) @ torch.cholesky_solve(P, self.L)) / self.beta


def _hessian_factors(model, x: torch.Tensor) -> torch.Tensor | None:
    """``Q`` ``(n, r, d)`` with ``nabla^2 f = Q^T Q`` (ReLU backbone), or ``None`` for unknown blocks."""
    n, d = x.shape
    parts = []
    for block in model.blocks():
        if block is model.backbone:
            continue
        if block.kind == "p":
            parts.append((block.alpha.sqrt() * block.B).expand(n, -1, -1))
        elif block.kind == "r":
            u = x @ block.A.T + block.d
            norm = torch.linalg.vector_norm(u, dim=-1)
            smooth = norm > 0
            safe = torch.where(smooth, norm, torch.ones_like(norm))
            u_hat = u / safe[:, None]
            weight = torch.where(smooth, (block.lam / safe).sqrt(), torch.zeros_like(norm))
            proj = block.A - u_hat[:, :, None] * (u_hat @ block.A)[:, None, :]
            parts.append(weight[:, None, None] * proj)
        else:
            return None
    if not parts:
        return x.new_zeros(n, 0, d)
    return torch.cat(parts, dim=1)


# --------------------------------------------------------------------------- backbone on a pattern
def _layer_slices(widths: tuple[int, ...]) -> list[slice]:
    ends = [sum(widths[: l + 1]) for l in range(len(widths))]
    return [slice(e - m, e) for e, m in zip(ends, widths, strict=True)]


def _jacobian(bb, s: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Gradients of all pre-activations through the 0/1 pattern ``s`` ``(n, M)``, in the layout
    ``(M, n, d)`` so that each layer is one GEMM ``U_l @ (s_{l-1} * J_{l-1})`` written in place."""
    n, d = x.shape
    M = sum(bb.hidden)
    J = x.new_empty(M, n, d)
    prev = None
    for l, sl in enumerate(_layer_slices(bb.hidden)):
        m = sl.stop - sl.start
        Jl, W = J[sl], bb.W_eff(l)
        if prev is None:  # the first layer always has W
            Jl.copy_(W[:, None, :].expand(m, n, d))
        else:
            src = J[prev] * s[:, prev].T[:, :, None]
            torch.matmul(bb.U_eff(l), src.view(prev.stop - prev.start, n * d), out=Jl.view(m, n * d))
            if W is not None:
                Jl.add_(W[:, None, :])
        prev = sl
    return J


def _directional(bb, s: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    """Change ``(n, M)`` of every pre-activation along ``delta`` ``(n, d)`` through the pattern ``s``."""
    out, prev, prev_sl = [], None, None
    for l, sl in enumerate(_layer_slices(bb.hidden)):
        W = bb.W_eff(l)
        da = delta @ W.T if W is not None else delta.new_zeros(delta.shape[0], sl.stop - sl.start)
        if prev is not None:
            da = da + (prev * s[:, prev_sl]) @ bb.U_eff(l).T
        out.append(da)
        prev, prev_sl = da, sl
    return torch.cat(out, dim=-1)


def _duals(bb, s: torch.Tensor, seeds: torch.Tensor, clip: torch.Tensor | None = None):
    """Top-down pass ``q_l = upper_l * s_l + seed_l``, ``upper_{l-1} = q_l U_l``, ``upper_L = c``.

    ``q`` is the backbone multiplier ``nu`` and ``upper`` its bound in the optimal dual set
    (``0 <= nu_t <= upper_t`` at a tie); with ``clip`` (bool ``(n, M)``) those entries are clipped
    into ``[0, upper]`` as the pass goes down, which makes any guess dual feasible. Returns
    ``q``, ``upper`` (``(n, M)``) and the slope ``sum_l W_l^T q_l`` ``(n, d)`` (``v`` excluded).
    """
    q, upper = torch.empty_like(seeds), torch.empty_like(seeds)
    up = bb.c.expand(seeds.shape[0], -1)
    slope = None
    slices = _layer_slices(bb.hidden)
    for l in range(len(slices) - 1, -1, -1):
        sl = slices[l]
        ql = up * s[:, sl] + seeds[:, sl]
        if clip is not None:
            ql = torch.where(clip[:, sl], torch.minimum(ql.clamp(min=0.0), up), ql)
        q[:, sl], upper[:, sl] = ql, up
        W = bb.W_eff(l)
        if W is not None:
            slope = ql @ W if slope is None else slope + ql @ W
        if l > 0:
            up = ql @ bb.U_eff(l)
    return q, upper, slope


class _Point:
    """Face-Newton data at a batch of iterates ``x`` ``(n, d)``: pre-activations, the pattern
    Jacobian, the pattern gradient ``g``, the curvature and the constraint residuals ``C x - h``.

    The Jacobian ``J`` ``(M, N0, d)`` is computed once and shared by every :meth:`subset` (query
    ``i`` reads column ``jq[i]``); pattern flips add per-query rank-one corrections
    ``(effect (n, M), grad (n, d))`` instead of copying it.
    """

    def __init__(self, model, x, y, beta, rows: LinearRows | None, *, curvature: bool = True):
        self.bb = bb = model.backbone
        self.M = sum(bb.hidden)
        self.x, self.y, self.beta, self.rows = x, y, beta, rows
        self.af = torch.cat(bb.preactivations(x), dim=-1)
        g = bb.v + beta * (x - y)
        for b in model.blocks():
            if b is not bb:
                g = g + b.slope(b.state(x))
        self.g_rest = g  # gradient of everything but c^T z_L
        self.cres = x @ rows.C.T - rows.h if rows is not None else x.new_zeros(x.shape[0], 0)
        self.s = (self.af > 0).to(x.dtype)
        self.J = _jacobian(bb, self.s, x)
        self.jq = torch.arange(x.shape[0], device=x.device)
        self.corr: list[tuple[torch.Tensor, torch.Tensor]] = []
        self._set_gradient()
        self.curv = _Curvature(model, x, beta) if curvature else None

    def _set_gradient(self):
        self.g = self.g_rest + _duals(self.bb, self.s, torch.zeros_like(self.s))[2]

    def subset(self, keep) -> _Point:
        """The same data for the queries ``keep`` (indices or mask); ``J`` is shared."""
        out = object.__new__(_Point)
        out.__dict__.update(self.__dict__)
        for name in ("x", "y", "af", "s", "g_rest", "cres", "g", "jq"):
            setattr(out, name, getattr(self, name)[keep])
        out.corr = [(e[keep], v[keep]) for e, v in self.corr]
        out.curv = None if self.curv is None else self.curv.subset(keep)
        return out

    def unit_rows(self, unit: torch.Tensor, qi: torch.Tensor) -> torch.Tensor:
        """Gradients ``(n, k, d)`` of the units ``unit`` ``(n, k)`` of the queries ``qi`` ``(n,)``."""
        J = self.J[unit, self.jq[qi][:, None]]
        for e, v in self.corr:
            J = J + e[qi].gather(-1, unit)[..., None] * v[qi][:, None, :]
        return J

    def flip(self, unit: torch.Tensor, new: torch.Tensor) -> None:
        """Set the pattern entry ``s[i, unit[i]] = new[i]`` (``unit = -1``: no change): flipping
        ``s_t`` by ``delta`` adds ``delta (da_j / dz_t) grad a_t`` to the gradient of every unit
        ``j`` above ``t`` (a rank-one correction per query) and changes ``g``."""
        n = self.x.shape[0]
        ar = torch.arange(n, device=self.x.device)
        t = unit.clamp(min=0)
        delta = torch.where(unit >= 0, new - self.s[ar, t], torch.zeros_like(new))
        if not bool((delta != 0).any()):
            return
        seed = torch.zeros_like(self.s)
        seed[ar, t] = delta
        effect, carry = [], None
        for l, sl in enumerate(_layer_slices(self.bb.hidden)):
            e = carry @ self.bb.U_eff(l).T if carry is not None else torch.zeros_like(seed[:, sl])
            effect.append(e)
            carry = self.s[:, sl] * e + seed[:, sl]
        grad_t = self.unit_rows(t[:, None], ar)[:, 0]  # unaffected by the flip
        self.corr = [*self.corr, (torch.cat(effect, dim=-1), grad_t)]
        self.s = self.s + seed
        self._set_gradient()

    def residuals(self) -> torch.Tensor:
        """``(n, M + K)``: pre-activations, then ``C x - h``."""
        return torch.cat([self.af, self.cres], dim=-1)

    def rows_of(self, sel, priority, kmax, qi=None):
        """Rows of the selected units/constraints (``sel`` ``(n, M+K)``, for the queries ``qi``
        of this point, default all), at most ``kmax``, highest ``priority`` first. Returns
        ``idx``, ``valid`` ``(n, k)``, ``J`` ``(n, k, d)`` (zero where invalid) and the residuals
        ``(n, k)``; ``None`` when nothing is selected."""
        k = int(min(int(sel.sum(-1).max()), kmax)) if sel.shape[0] else 0
        if k == 0:
            return None
        if qi is None:
            qi = torch.arange(sel.shape[0], device=sel.device)
        score = torch.where(sel, priority, torch.full_like(priority, -math.inf))
        idx = torch.topk(score, k, dim=-1).indices
        valid = sel.gather(-1, idx)
        vf = valid.to(self.x.dtype)
        J = self.unit_rows(idx.clamp(max=self.M - 1), qi)
        if self.rows is not None:
            J = torch.where((idx < self.M)[..., None], J, self.rows.C[(idx - self.M).clamp(min=0)])
        return idx, valid, J * vf[..., None], self.residuals()[qi].gather(-1, idx) * vf


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
def _certificate(pt: _Point, tie_tol: float, eq) -> tuple[torch.Tensor, torch.Tensor]:
    """A certified subgradient ``s`` ``(n, d)`` and slack ``eps`` ``(n,)`` with
    ``F(z) >= F(x) - eps + s^T (z - x) + (beta/2)||z - x||^2`` for every feasible ``z``, hence
    ``F(x) - F* <= eps + ||s||^2 / (2 beta)``.

    Units with ``|a| <= tie_tol`` and constraint rows within ``tie_tol`` of equality are tied;
    their least-squares multipliers ``min ||g + J_T^T mu||`` are clipped into the optimal dual set
    from the top layer down (``0 <= nu_t <= upper_t``; ``lambda >= 0`` for inequality rows), so
    ``nu`` is dual feasible for the lifted LP. ``eps`` is its duality gap at ``x``,
    ``sum_t (upper_t - nu_t) relu(a_t) + nu_t relu(-a_t)`` (zero off the ties), plus the
    complementary-slackness term ``lambda^T (h - C x)`` of the constraint rows.
    """
    M = pt.M
    tied_u = pt.af.abs() <= tie_tol
    tied_c = (pt.cres >= -tie_tol) | eq
    sel = torch.cat([tied_u, tied_c], dim=-1)
    seeds = torch.zeros_like(pt.af)
    lam = torch.zeros_like(pt.cres)
    got = pt.rows_of(sel, torch.zeros_like(pt.residuals()), kmax=sel.shape[-1])
    if got is not None:
        idx, valid, J, _ = got
        mu = _regularised_solve(J @ J.transpose(-1, -2), -(J @ pt.g[..., None])[..., 0], valid)
        spread = _scatter(idx, valid, mu, sel.shape[-1])
        seeds, lam = spread[:, :M], spread[:, M:]
    q, upper, slope = _duals(pt.bb, pt.s, seeds, clip=tied_u)
    s = pt.g_rest + slope
    eps = ((upper - q) * pt.af.clamp(min=0.0) + q * (-pt.af).clamp(min=0.0)).sum(-1)
    if pt.rows is not None:
        lam = torch.where(eq, lam, lam.clamp(min=0.0)) * tied_c
        s = s + lam @ pt.rows.C
        eps = eps + torch.where(eq, (lam * pt.cres).abs(), lam * (-pt.cres).clamp(min=0.0)).sum(-1)
    return s, eps


def _rows_and_eq(constraint: Constraint | None, d, dtype, device):
    rows = None if constraint is None else constraint.rows(d, dtype, device)
    eq = rows.equality if rows is not None else torch.zeros(0, dtype=torch.bool, device=device)
    return rows, eq


@torch.no_grad()
def certified_gap_bound(model, x, y, beta, constraint: Constraint | None, tie_tol: float):
    """``(||s||, eps + ||s||^2 / (2 beta))`` ``(N,)`` each at ``x`` ``(N, d)``: the certified
    subgradient norm and the bound on ``F_y(x) - min_C F_y`` of :func:`_certificate`."""
    rows, eq = _rows_and_eq(constraint, x.shape[-1], x.dtype, x.device)
    s, eps = _certificate(_Point(model, x, y, beta, rows, curvature=False), tie_tol, eq)
    norm = torch.linalg.vector_norm(s, dim=-1)
    return norm, eps + norm**2 / (2 * beta)


@torch.no_grad()
def certified_subgradient_norm(model, x, y, beta, constraint: Constraint | None, tie_tol: float) -> torch.Tensor:
    """Norm ``(N,)`` of the certified subgradient of :func:`_certificate` at ``x`` (``(N, d)``)."""
    return certified_gap_bound(model, x, y, beta, constraint, tie_tol)[0]


# --------------------------------------------------------------------------- face steps
def _face_direction(pt: _Point, cand, priority, eq, rounds: int, kmax: int):
    """Newton step on the face of the candidate ties ``cand`` ``(n, M+K)``, with the tied set
    corrected by dual feasibility for up to ``rounds`` rounds.

    On the face (tied units ``a_t = 0``, active constraint rows at equality, every other unit in
    its pattern) ``F`` is smooth; the step solves ``[H + beta I, J^T; J, 0] [dx; mu] = [-g; -res]``
    by its Schur complement. A tied unit whose ``nu_t`` leaves ``[0, upper_t]`` is released to the
    side the sign says (``nu < 0``: inactive; ``nu > upper``: active), an inequality row with
    ``lambda < 0`` is released, one row per query and round (the most violated), as in a primal
    active-set method; only the queries with a violation go on to the next round, with the
    released unit's pattern entry set to its side (:meth:`_Point.flip`).
    """
    dx = torch.zeros_like(pt.x)
    todo = torch.arange(pt.x.shape[0], device=pt.x.device)
    cand = cand.clone()
    sub = pt
    for r in range(rounds):
        step, release, to_active = _face_round(sub, cand[todo], priority[todo], eq, kmax)
        dx[todo] = step
        if release is None or r == rounds - 1:
            break
        more = release.any(-1)
        cand[todo] &= ~release
        unit = torch.where(release[:, : pt.M].any(-1), release[:, : pt.M].to(torch.int8).argmax(-1), -1)
        keep = more.nonzero().squeeze(1)
        todo = todo[keep]
        sub = sub.subset(keep)
        side = to_active[keep].gather(-1, unit[keep].clamp(min=0)[:, None])[:, 0]
        sub.flip(unit[keep], side.to(pt.x.dtype))
    return dx


def _face_round(pt: _Point, cand, priority, eq, kmax):
    """One KKT solve on the face ``cand`` per query; returns the step, the rows to release
    (``None`` when every multiplier is dual feasible) and, for released units, whether they turn
    active. With more than ``GROUP_ABOVE`` rows somewhere, queries are grouped by their number of
    rows (powers of two) so that padding to the largest face in a group wastes little."""
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
        curv = pt.curv.subset(qi)
        mu = _regularised_solve(curv.schur(J), res - (J @ Hg[qi, :, None])[..., 0], valid)
        dx[qi] = -curv.solve(pt.g[qi] + (J.transpose(1, 2) @ mu[..., None])[..., 0])
        mu_all[qi] = _scatter(idx, valid, mu, cand.shape[-1])
        on_face[qi] = _scatter(idx, valid, torch.ones_like(mu), cand.shape[-1]) > 0  # beyond kmax: left out
    M = pt.M
    sel_u = on_face[:, :M]
    q, upper, _ = _duals(pt.bb, pt.s, mu_all[:, :M] * sel_u)
    scale = 1 + upper
    zero = torch.zeros_like(q)
    low = torch.where(sel_u, -q / scale, zero)
    high = torch.where(sel_u, (q - upper) / scale, zero)
    bad_c = torch.where(on_face[:, M:] & ~eq, -mu_all[:, M:], torch.zeros_like(mu_all[:, M:]))
    worst, at = torch.cat([torch.maximum(low, high), bad_c], dim=-1).max(dim=-1)
    drop = worst > 1e3 * torch.finfo(pt.x.dtype).eps
    if not bool(drop.any()):
        return dx, None, None
    release = torch.zeros_like(cand)
    release[drop, at[drop]] = True
    return dx, release, high > low


def _pattern_lookahead(pt: _Point, dn: torch.Tensor, steps: int) -> list[torch.Tensor]:
    """A Newton direction from ``x`` on the smooth piece met at the end of the previous step.

    The pattern ``s'`` of ``x + d`` (``d = dn`` first) defines a smooth minorant ``F_{s'} <= F``
    (``relu(a) >= s' a`` and ``U >= 0``) that agrees with ``F`` where ``s'`` is the pattern; its
    Newton direction from ``x`` is ``d' = -(H + beta I)^{-1} grad F_{s'}(x)`` (the same
    curvature: the backbone adds none). After ``steps`` such updates the last ``d'`` is returned
    (as a one-element list). When the optimum lies across several kinks this jumps over them at
    once, where the face and first-kink steps cross about one per iteration; like every candidate
    it is only accepted on strict decrease of ``F``.
    """
    d = dn
    for _ in range(steps):
        s_new = (torch.cat(pt.bb.preactivations(pt.x + d), dim=-1) > 0).to(pt.x.dtype)
        d = -pt.curv.solve(pt.g_rest + _duals(pt.bb, s_new, torch.zeros_like(s_new))[2])
    return [d]


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
) -> LoopResult:
    """Kink-aware Newton: damped Newton plus a Newton step on the predicted optimal face.

    Each iteration, on the queries still running:

    1. certificate (:func:`_certificate`): a subgradient ``s`` and slack ``eps`` with
       ``F - F* <= eps + ||s||^2 / (2 beta)``; the query stops, converged, when this certified
       bound is ``<= rtol * max(1, |F|)``;
    2. the plain Newton direction ``dn`` with the pattern gradient and the readout Hessian;
    3. the candidate ties: units already tied or whose kink ``dn`` crosses (``a + J dn`` changes
       sign), and constraint rows active or crossed;
    4. face directions (:func:`_face_direction`) on the candidates and on the reached ties;
    5. backtracking over ``alpha = 1, 1/2, ...`` on the face directions (accepted on strict
       decrease), the step to the first kink along ``dn`` and ``dn`` itself (Armijo), all
       candidates in one forward pass; the lowest accepted candidate wins (projected onto ``C``
       when constrained). A query also stops at ``max_iter`` or after three iterations without
       decrease (both reported as not converged unless the certificate holds).
    """
    rows, eq_all = _rows_and_eq(constraint, y.shape[-1], y.dtype, y.device)
    x = y.clone() if constraint is None else constraint.project(y)
    n, d = y.shape
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
        pt = _Point(model, x, ya, beta, rows, curvature=not last)
        s, eps = _certificate(pt, tie_tol, eq_all)
        gn = torch.linalg.vector_norm(s, dim=-1)
        bound = eps + gn**2 / (2 * beta)
        grad_norm[idx], gap_bound[idx] = gn, bound
        done = bound <= rtol * F.abs().clamp(min=1.0)
        converged[idx[done]] = True
        running[idx[done]] = False
        if last or bool(done.all()):
            break
        keep = (~done).nonzero().squeeze(1)
        idx, x, ya, F, pt = idx[keep], x[keep], ya[keep], F[keep], pt.subset(keep)
        iterations[idx] += 1
        dn = -pt.curv.solve(pt.g)
        da = _directional(pt.bb, pt.s, dn)
        af = pt.af
        after = af + da
        tied = af.abs() <= tie_tol
        cross_u = tied | ((af > 0) & (after < 0)) | ((af < 0) & (after > 0))
        # Kinks reached first along dn come first when there are more candidates than fit.
        frac_u = torch.where(tied, torch.zeros_like(da), af.abs() / da.abs().clamp(min=1e-300))
        if rows is not None:
            c_after = pt.cres + dn @ rows.C.T
            cross_c = eq_all | (pt.cres >= -tie_tol) | (c_after > 0)
            frac_c = torch.where(c_after > pt.cres, (-pt.cres).clamp(min=0) / (c_after - pt.cres), 0 * c_after)
        else:
            cross_c = frac_c = x.new_zeros(x.shape[0], 0)
        cand = torch.cat([cross_u, cross_c.bool()], dim=-1)
        priority = -torch.cat([frac_u, frac_c], dim=-1)
        # Three guesses of the optimal face: the kinks dn crosses, the ties already reached, and
        # the first kink along dn (the step of a primal active-set method).
        ties = torch.cat([tied, (pt.cres >= -tie_tol) | eq_all], dim=-1)
        face_dirs = [_face_direction(pt, cand, priority, eq_all, rounds, kmax=d), dn.clone()]
        # Without ties that face step is dn itself; when no kink is crossed it is the first one.
        same = ties.any(-1) & (ties == cand).all(-1)
        face_dirs[1][same] = face_dirs[0][same]
        has_ties = (ties.any(-1) & ~same).nonzero().squeeze(1)
        if has_ties.numel():
            face_dirs[1][has_ties] = _face_direction(
                pt.subset(has_ties), ties[has_ties], priority[has_ties], eq_all, rounds, kmax=d
            )
        first = torch.where(cross_u & ~tied, frac_u, torch.ones_like(frac_u)).amin(-1).clamp(max=1.0)
        face_dirs.append(first[:, None] * dn)
        face_dirs.extend(_pattern_lookahead(pt, dn, LOOKAHEAD))
        slope = (pt.g * dn).sum(-1)
        x_new, F_new, moved = _candidate_search(model, ya, beta, x, F, face_dirs, dn, slope, constraint)
        # Below sqrt(eps) the objective cannot see progress any more: without a decrease the face
        # step on the reached ties may still polish x to rounding level (its certificate is
        # checked at the next iteration); three iterations in a row without decrease is a stall.
        polish = (~moved).nonzero().squeeze(1)
        if polish.numel():
            xp = x[polish] + face_dirs[1][polish]
            if constraint is not None:
                xp = constraint.project(xp)
            Fp = objective(model, xp, y[idx[polish]], beta)
            fine = Fp <= F[polish] + slack * (1 + F[polish].abs())
            x_new[polish[fine]], F_new[polish[fine]] = xp[fine], Fp[fine]
        stuck[idx] = torch.where(moved, torch.zeros_like(stuck[idx]), stuck[idx] + 1)
        X[idx], Fv[idx] = x_new, F_new
        running[idx[stuck[idx] >= 3]] = False
        history.append(Fv.clone())
    return LoopResult(X, Fv, grad_norm, iterations, converged, history, gap_bound)


def _candidate_search(model, y, beta, x, F, face_dirs, dn, slope, constraint):
    """Backtrack ``alpha`` on all directions at once; keep the lowest accepted candidate.

    Face directions are accepted on strict decrease, the Newton direction on the Armijo
    condition; every halving evaluates all directions of the pending queries in one forward
    pass. Returns the new points and values and whether each query moved.
    """
    dirs = torch.stack([*face_dirs, dn], dim=0)  # (D, n, d)
    D = dirs.shape[0]
    alpha = torch.ones_like(F)
    x_new, F_new = x.clone(), F.clone()
    moved = torch.zeros_like(F, dtype=torch.bool)
    project: Callable = (lambda t: t) if constraint is None else constraint.project
    p = torch.arange(F.shape[0], device=F.device)
    for _ in range(MAX_HALVINGS):
        if p.numel() == 0:
            break
        a = alpha[p]
        trials = project((x[p][None] + a[None, :, None] * dirs[:, p]).reshape(-1, x.shape[1]))
        values = objective(model, trials, y[p].repeat(D, 1), beta).view(D, -1)
        Fp = F[p]
        ok = torch.cat([values[:-1] < Fp, (values[-1] <= Fp + ARMIJO * a * slope[p])[None]], dim=0)
        best, which = torch.where(ok, values, torch.full_like(values, math.inf)).min(dim=0)
        good = torch.isfinite(best)
        if bool(good.any()):
            g = good.nonzero().squeeze(1)
            xb = trials.view(D, -1, x.shape[1])[which[g], g]
            x_new[p[g]], F_new[p[g]] = xb, best[g]
            moved[p[g]] = True
        p = p[~good]
        alpha[p] *= 0.5
    return x_new, F_new, moved
