"""Matrix-free certified minimisation over a set with an exact projection: a batched,
restarted primal-dual hybrid gradient method.

``min_{x in C} sum_b f_b(x)`` is split block by block (the ``pd_*`` methods of
:class:`~socicnn.blocks.ConvexBlock`): a ReLU backbone by its LP lifting (auxiliaries
``z_l >= 0``, rows ``a_l(x, z_{l-1}) <= z_l`` priced by ``nu_l >= 0``, cost ``c^T z_L + v^T x``),
a quadratic or norm block as ``h(K x + e)`` with the proximal map of ``sigma h*`` (a shrinkage,
a projection onto the cones' balls), a smooth block (softplus backbone) by its gradient. The
iteration is Chambolle and Pock's (2011; with a smooth term, Condat 2013 and Vu 2013)

    (x, w)+ = P_C x P_w((x, w) - tau (cost' + K^T y)),    y+ = prox_{sigma h*}(y + sigma K(2 (x, w)+ - (x, w))),

with diagonal steps (Pock and Chambolle, 2011): ``tau_j = 0.9 / (omega sum_i |K_ij|)`` per primal
coordinate and ``sigma_i = 0.9 omega / sum_j |K_ij|`` per dual one (the blocks report the sums of
``|K|``), and PDLP's devices (Applegate et al., 2021): adaptive restarts, to the running average or
the current iterate, whichever has the smaller certified gap, when that gap has fallen to 0.2 of
its value at the last restart (or to 0.8 without progress since the previous check, or after a
run of 0.36 of all iterations), and the primal weight ``omega`` updated at restarts from the
distances the primal and dual iterates travelled. Every operation is a block's map or its
adjoint (convolutions for the Conv families): no matrix, no factorisation.

**Certificate (independent of the iteration's convergence).** At each check the dual iterate
is projected onto each block's dual set (:meth:`~socicnn.blocks.ConvexBlock.pd_multipliers`:
``nu`` clipped top-down under ``c`` and ``s_l U_l^T nu_l``, cone multipliers projected into
their balls, a smooth block's tangent at ``x``), and the affine minorant these multipliers
define, minimised over ``C`` by the set's support function, is a lower bound on ``min_C f``
whatever the iterate (weak duality); ``f(x)`` at the projected primal iterate is an upper
bound. The best of each over the checks is kept, and a row stops when their difference is at
most ``tol * max(1, |f(x)|)``.

**Working precision.** The iterations may run on a lower-precision copy of the model (``work``,
e.g. float32: about twice as fast for a 64x64 convolutional model on a CPU) while every check
casts the iterates to the model's own precision, projects the primal one onto the set again and
computes value and lower bound there: the certificate is as valid as in full precision, and the
gap the iterates can reach is limited by the working precision's rounding (float32's machine
epsilon is about ``1.2e-7``).
"""

from __future__ import annotations

import math

import torch

from .. import readout
from .constraints import Box, Constraint

__all__ = ["primal_dual"]

ETA = 0.9  # ||Sigma^(1/2) K T^(1/2)|| <= ETA
POWER_ITERATIONS = 30
THETA = 0.5  # primal-weight smoothing at restarts (PDLP's)
RESTART_SUFFICIENT, RESTART_NECESSARY, RESTART_ARTIFICIAL = 0.2, 0.8, 0.36


class _Split:
    """The model's blocks with their splitting; lists of per-block lists of tensors."""

    def __init__(self, model) -> None:
        self.model = model
        self.blocks = list(model.blocks())
        self.smooth = [getattr(b, "pd_smooth", False) for b in self.blocks]

    def aux(self, x):
        return [b.pd_aux(x) for b in self.blocks]

    def affine(self, x, aux):
        return [b.pd_affine(x, a) for b, a in zip(self.blocks, aux, strict=True)]

    def adjoint(self, dual, x_like):
        gx = torch.zeros_like(x_like)
        gaux = []
        for b, y in zip(self.blocks, dual, strict=True):
            if y:
                g, ga = b.pd_adjoint(y)
                if g is not None:
                    gx = gx + g
                gaux.append(ga)
            else:
                gaux.append([])
        return gx, gaux

    def gradient(self, x, aux, dual):
        gx, gaux = self.adjoint(dual, x)
        for i, (b, a) in enumerate(zip(self.blocks, aux, strict=True)):
            cx, caux = b.pd_cost(x, a)
            if cx is not None:
                gx = gx + cx
            if caux is not None:
                gaux[i] = [c if g is None else (g if c is None else g + c) for g, c in zip(gaux[i], caux, strict=True)]
        return gx, gaux

    def multipliers(self, x, dual):
        return [b.pd_multipliers(x, y) for b, y in zip(self.blocks, dual, strict=True)]

    def select(self, keep):
        return _Split(self.model.select(keep))


def _lower_bound(split: _Split, x, dual, cons: Constraint) -> tuple[torch.Tensor, torch.Tensor]:
    """Certified lower bound on ``min_C f`` from the dual iterate, and the multipliers' largest
    dual-feasibility violation (rounding only)."""
    mult = split.multipliers(x, dual)
    G = readout.supporting_slope(split.model, mult)
    low = readout.dual_objective(split.model, x, mult) - (G * x).sum(-1) + cons.support(G)
    return low, readout.dual_residual(split.model, mult)


class _Steps:
    """Diagonal step sizes (Pock and Chambolle, 2011, with ``alpha = 1``): ``tau_j = eta / (omega
    sum_i |K_ij|)`` per primal coordinate (plus the smooth blocks' curvature ``lip`` on ``x``) and
    ``sigma_i = eta omega / sum_j |K_ij|`` per dual coordinate, made constant where a block or the
    set needs it (a cone's ball projection, and the projection onto a simplex or budget set, is
    the proximal map only for one step per cone or per row), so that
    ``||Sigma^(1/2) K T^(1/2)|| <= eta < 1`` without an operator norm. ``sums`` are the blocks'
    :meth:`~socicnn.blocks.ConvexBlock.pd_abs_sums`, ``col_x`` their column sums on ``x``."""

    def __init__(self, split: _Split, sums: list, col_x, lip: torch.Tensor, separable: bool, omega=None) -> None:
        self.split, self.sums, self.col_x = split, sums, col_x
        self.lip, self.separable, self.omega = lip, separable, omega

    @classmethod
    def of(cls, split: _Split, x, aux, lip: torch.Tensor, separable: bool) -> _Steps:
        sums = [b.pd_abs_sums(x, a) for b, a in zip(split.blocks, aux, strict=True)]
        col_x = torch.zeros_like(x)
        for _, cx, _ in sums:
            if cx is not None:
                col_x = col_x + cx
        return cls(split, sums, col_x, lip, separable)

    def steps(self):
        w = self.omega[:, None]
        tau = 1.0 / (w * self.col_x / ETA + self.lip[:, None]).clamp(min=1e-300)
        if not self.separable:  # the Euclidean projection is the proximal map for one step per row only
            tau = tau.amin(-1, keepdim=True)
        tau_aux = [[ETA / (_col(w, c) * c).clamp(min=1e-300) for c in cz] for _, _, cz in self.sums]
        sigma = [
            b.pd_dual_steps([ETA * _col(w, r) / r.clamp(min=1e-300) for r in rs])
            for b, (rs, _, _) in zip(self.split.blocks, self.sums, strict=True)
        ]
        return tau.clamp(max=1e12), tau_aux, sigma

    def select(self, keep, split):
        sums = [(_rows(r, keep), None if c is None else c[keep], _rows(cz, keep)) for r, c, cz in self.sums]
        return _Steps(split, sums, self.col_x[keep], self.lip[keep], self.separable, self.omega[keep])


def _smooth_lipschitz(split: _Split, x: torch.Tensor) -> torch.Tensor:
    """A curvature estimate ``(n,)`` of the smooth blocks at ``x`` (power iteration on their HVPs,
    doubled); adapted upwards during the run when a step violates the descent lemma."""
    n = x.shape[0]
    out = x.new_zeros(n)
    for b, smooth in zip(split.blocks, split.smooth, strict=True):
        if not smooth:
            continue
        st = b.state(x)
        v = torch.randn(x.shape, generator=torch.Generator(device=x.device).manual_seed(1), dtype=x.dtype,
                        device=x.device)  # fmt: skip
        lam = x.new_zeros(n)
        for _ in range(POWER_ITERATIONS):
            v = v / torch.linalg.vector_norm(v, dim=-1, keepdim=True).clamp(min=1e-300)
            hv = b.hvp(st, v)
            lam = (hv * v).sum(-1)
            v = hv
        out = out + 2.0 * lam.clamp(min=0.0)
    return out


def _cast(t, dtype: torch.dtype):
    """Nested lists of tensors in ``dtype``."""
    return [_cast(s, dtype) for s in t] if isinstance(t, list) else t.to(dtype)


def _smooth_value(split: _Split, x: torch.Tensor) -> torch.Tensor:
    out = x.new_zeros(x.shape[0])
    for b, smooth in zip(split.blocks, split.smooth, strict=True):
        if smooth:
            out = out + b(x)
    return out


def _col(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A per-row ``(n,)`` or ``(n, 1)`` tensor shaped to broadcast against ``like`` ``(n, ...)``."""
    return t.reshape(-1, *([1] * (like.ndim - 1)))


def _where(mask: torch.Tensor, a, b):
    """Row-wise select on nested lists of ``(n, .)`` tensors."""
    if isinstance(a, list):
        return [_where(mask, s, t) for s, t in zip(a, b, strict=True)]
    return torch.where(_col(mask, a), a, b)


def _rows(t, keep):
    if isinstance(t, list):
        return [_rows(s, keep) for s in t]
    return t[keep]


def _lerp_rows(avg, new, w: torch.Tensor):
    """``avg += w (new - avg)`` per row, in place (``avg`` holds copies, never the iterates)."""
    if isinstance(avg, list):
        return [_lerp_rows(a, b, w) for a, b in zip(avg, new, strict=True)]
    return avg.lerp_(new, _col(w, avg))


def _copy(t):
    return [_copy(s) for s in t] if isinstance(t, list) else t.clone()


def _flat_sq(t, n: int, like: torch.Tensor) -> torch.Tensor:
    if isinstance(t, list):
        out = like.new_zeros(n)
        for s in t:
            out = out + _flat_sq(s, n, like)
        return out
    return t.reshape(n, -1).pow(2).sum(-1)


def _sub(a, b):
    if isinstance(a, list):
        return [_sub(s, t) for s, t in zip(a, b, strict=True)]
    return a - b


@torch.no_grad()
def primal_dual(
    model,
    cons: Constraint,
    x: torch.Tensor,
    *,
    tol: float,
    max_iter: int,
    check_every: int = 64,
    omega: float | None = None,
    work=None,
):
    """The method of the module docstring from feasible ``x`` ``(N, d)`` (one row per row of the
    model), iterating on ``work`` (the same function in another precision; default ``model``).
    Returns ``x`` (the best certified point per row), ``value``, ``lower_bound`` (in the model's
    precision), ``iterations`` (per row) and the largest dual residual of the multipliers used in a
    bound."""
    n = x.shape[0]
    best_x, best_up = x.clone(), model(x)
    best_lo = torch.full_like(best_up, -math.inf)
    iterations = torch.zeros(n, dtype=torch.long, device=x.device)
    worst_residual = 0.0
    exact = _Split(model)  # values and certificates
    split = exact if work is None else _Split(work)  # the iterations
    x = x.to(split.model.dtype)
    slack = max(1e-12, 10 * torch.finfo(x.dtype).eps)  # rounding allowance of the descent-lemma test
    aux = split.aux(x)
    # Warm start: the canonical multipliers at x as the first dual iterate of the lifted blocks.
    ro = readout.readout(split.model, x)
    dual = [
        (list(m) if isinstance(m, (list, tuple)) else [m]) if b.pd_affine(x, a) else []
        for b, a, m in zip(split.blocks, aux, ro.multipliers, strict=True)
    ]
    st = _Steps.of(split, x, aux, _smooth_lipschitz(split, x), isinstance(cons, Box))
    if omega is None:
        ysq = _flat_sq(dual, n, x)
        w0 = (ysq / _flat_sq([x], n, x).clamp(min=1e-300)).sqrt()
        st.omega = torch.where(ysq > 0, w0, torch.ones_like(w0)).clamp(1e-8, 1e8)
    else:
        st.omega = torch.full((n,), float(omega), dtype=x.dtype, device=x.device)

    active = torch.arange(n, device=x.device)
    tau, tau_aux, sigma = st.steps()
    anchor = (x, aux, dual)
    avg, count = _copy([x, aux, dual]), x.new_zeros(n)
    gap_restart = torch.full_like(best_up, math.inf)
    gap_prev = gap_restart.clone()
    since = torch.zeros(n, dtype=torch.long, device=x.device)
    k = 0
    while active.numel() and k < max_iter:
        k += 1
        gx, gaux = split.gradient(x, aux, dual)
        x_new = cons.project(torch.addcmul(x, tau, gx, value=-1.0))
        aux_new = [
            b.pd_project_aux([torch.addcmul(z, t, g, value=-1.0) for z, t, g in zip(a, ta, ga, strict=True)])
            for b, a, ta, ga in zip(split.blocks, aux, tau_aux, gaux, strict=True)
        ]
        if any(split.smooth):  # the descent lemma on the smooth part, per row: else double its curvature
            s0, s1 = _smooth_value(split, x), _smooth_value(split, x_new)
            smooth_g = gx - split.adjoint(dual, x)[0]
            dx = x_new - x
            bad = s1 > s0 + (smooth_g * dx).sum(-1) + 0.5 * st.lip * dx.pow(2).sum(-1) + slack * s0.abs()
            if bool(bad.any()):
                st.lip = torch.where(bad, 2.0 * st.lip.clamp(min=1e-12), st.lip)
                tau, tau_aux, sigma = st.steps()
        xb = torch.lerp(x, x_new, 2.0)  # 2 x_new - x
        auxb = [
            [torch.lerp(t, s, 2.0) for s, t in zip(a1, a0, strict=True)] for a1, a0 in zip(aux_new, aux, strict=True)
        ]
        rows = split.affine(xb, auxb)
        dual = [
            b.pd_prox([torch.addcmul(y, sg, r) for y, sg, r in zip(ys, sgs, rs, strict=True)], sgs) if rs else []
            for b, ys, sgs, rs in zip(split.blocks, dual, sigma, rows, strict=True)
        ]
        x, aux = x_new, aux_new
        count = count + 1
        avg = _lerp_rows(list(avg), [x, aux, dual], 1.0 / count)
        since += 1
        if k % check_every and k < max_iter:
            continue
        iterations[active] += check_every if k % check_every == 0 else k % check_every
        # --- certificate at the current and the average iterate
        cands = [(x, aux, dual), tuple(avg)]
        gaps = []
        for cx, _, cy in cands:
            if exact is not split:
                cx, cy = cons.project(cx.to(best_x.dtype)), _cast(cy, best_x.dtype)
            up = exact.model(cx)
            low, res = _lower_bound(exact, cx, cy, cons)
            worst_residual = max(worst_residual, float(res.max()) if res.numel() else 0.0)
            better = up < best_up[active]
            best_x[active] = torch.where(better[:, None], cx, best_x[active])
            best_up[active] = torch.minimum(best_up[active], up)
            best_lo[active] = torch.maximum(best_lo[active], low)
            gaps.append(up - low)
        use_avg = gaps[1] < gaps[0]
        cand_gap = torch.minimum(gaps[0], gaps[1])
        # --- adaptive restarts (PDLP's criteria, on the certified gap): sufficient decay, or
        # necessary decay without progress since the last check, or a long run since the last one
        restart = (
            (cand_gap <= RESTART_SUFFICIENT * gap_restart)
            | ((cand_gap <= RESTART_NECESSARY * gap_restart) & (cand_gap > gap_prev))
            | (since >= RESTART_ARTIFICIAL * k)
        )
        gap_prev = cand_gap
        if bool(restart.any()):
            pick = use_avg & restart
            x, aux, dual = _where(pick, avg[0], x), _where(pick, avg[1], aux), _where(pick, avg[2], dual)
            # primal weight from the distances travelled since the last restart (PDLP)
            dprim = (_flat_sq(_sub([x, aux], [anchor[0], anchor[1]]), x.shape[0], x)).sqrt()
            ddual = (_flat_sq(_sub(dual, anchor[2]), x.shape[0], x)).sqrt()
            move = restart & (dprim > 1e-12) & (ddual > 1e-12)
            st.omega = torch.where(
                move, torch.exp(THETA * torch.log(ddual.clamp(min=1e-300) / dprim.clamp(min=1e-300))
                                + (1 - THETA) * torch.log(st.omega)), st.omega,
            ).clamp(1e-8, 1e8)  # fmt: skip
            anchor = _where(restart, [x, aux, dual], list(anchor))
            avg = _where(restart, [x, aux, dual], list(avg))
            count = torch.where(restart, 0.0, count)
            gap_restart = torch.where(restart, cand_gap, gap_restart)
            since = torch.where(restart, 0, since)
            tau, tau_aux, sigma = st.steps()
        # --- drop the rows that are certified
        gap = best_up[active] - best_lo[active]
        done = gap <= tol * best_up[active].abs().clamp(min=1.0)
        if bool(done.any()):
            keep = (~done).nonzero().squeeze(1)
            active = active[keep]
            exact = exact.select(keep)
            split = exact if work is None else split.select(keep)
            x, aux, dual = x[keep], _rows(aux, keep), _rows(dual, keep)
            anchor, avg = _rows(list(anchor), keep), _rows(list(avg), keep)
            st, count = st.select(keep, split), count[keep]
            gap_restart, gap_prev, since = gap_restart[keep], gap_prev[keep], since[keep]
            tau, tau_aux, sigma = st.steps()
    return best_x, best_up, best_lo, iterations, worst_residual
