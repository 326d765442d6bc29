"""Exact Euclidean projections onto the constraint sets of constrained inference (batched).

Every function maps ``v`` of shape ``(N, d)`` to the nearest point of the set, row by row, in
closed form up to one sort (no iterative solver, so the result is exact to rounding and runs
on a GPU as well as on a CPU):

- box ``{lo <= x <= hi}``: clipping;
- probability simplex ``{x >= 0, sum x = t}``: the sort-based algorithm of
  :cite:`duchi2008efficient` (threshold ``theta`` with ``x = max(v - theta, 0)``);
- capped budget set ``{0 <= x <= 1, sum x <= B}``: ``x = clip(v - theta, 0, 1)`` with
  ``theta = 0`` when ``sum clip(v, 0, 1) <= B`` (the sum constraint is inactive) and otherwise
  the root of the piecewise-linear, nonincreasing ``phi(theta) = sum clip(v - theta, 0, 1) = B``,
  found exactly on the segment between two consecutive sorted breakpoints ``{v_i, v_i - 1}``;
  with ``sum x = B`` (``0 <= B <= d``) the same root, of either sign.
"""

from __future__ import annotations

import torch

__all__ = ["project_box", "project_budget", "project_simplex"]


def project_box(v: torch.Tensor, lo: torch.Tensor | float, hi: torch.Tensor | float) -> torch.Tensor:
    """Projection ``(N, d)`` onto ``{lo <= x <= hi}`` (``lo``, ``hi`` scalars or ``(d,)``)."""
    lo_t = torch.as_tensor(lo, dtype=v.dtype, device=v.device)
    hi_t = torch.as_tensor(hi, dtype=v.dtype, device=v.device)
    return torch.minimum(torch.maximum(v, lo_t), hi_t)


def project_simplex(v: torch.Tensor, total: float = 1.0) -> torch.Tensor:
    """Projection ``(N, d)`` onto ``{x >= 0, sum x = total}`` (``total > 0``), by sorting."""
    u, _ = torch.sort(v, dim=-1, descending=True)
    css = torch.cumsum(u, dim=-1) - total
    j = torch.arange(1, v.shape[-1] + 1, dtype=v.dtype, device=v.device)
    # rho = the largest j with u_j > (sum_{i<=j} u_i - total) / j; it always exists (j = 1).
    rho = (u * j > css).to(v.dtype).mul(j).argmax(dim=-1, keepdim=True)
    theta = css.gather(-1, rho) / (rho + 1).to(v.dtype)
    return torch.clamp(v - theta, min=0.0)


def _capped_sum(vs: torch.Tensor, cs: torch.Tensor, theta: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """For sorted rows ``vs`` (ascending, ``(N, d)``) with prefix sums ``cs`` (``(N, d+1)``) and
    thresholds ``theta`` ``(N, K)``: counts and sums of the sets ``{v >= theta + 1}`` (top) and
    ``{theta < v < theta + 1}`` (middle), so ``phi(theta) = top + mid_sum - theta * mid_count``."""
    n_le = torch.searchsorted(vs, theta.contiguous(), right=True)
    n_lt1 = torch.searchsorted(vs, (theta + 1).contiguous(), right=False)
    top = (vs.shape[-1] - n_lt1).to(vs.dtype)
    mid_count = (n_lt1 - n_le).to(vs.dtype)
    mid_sum = cs.gather(-1, n_lt1) - cs.gather(-1, n_le)
    return top, mid_sum, mid_count


def project_budget(v: torch.Tensor, budget: float, *, equality: bool = False) -> torch.Tensor:
    """Projection ``(N, d)`` onto ``{0 <= x <= 1, sum x <= budget}`` (``budget >= 0``), or onto
    ``{0 <= x <= 1, sum x = budget}`` with ``equality=True`` (``0 <= budget <= d``).

    KKT: ``x = clip(v - theta, 0, 1)`` with ``theta >= 0`` and ``theta (sum x - budget) = 0``
    (with the equality: any real ``theta`` and ``sum x = budget``).
    """
    clipped = v.clamp(0.0, 1.0)
    vs, _ = torch.sort(v, dim=-1)
    cs = torch.nn.functional.pad(torch.cumsum(vs, dim=-1), (1, 0))
    if equality:
        inactive = torch.zeros_like(clipped[:, 0], dtype=torch.bool)
        breaks, _ = torch.sort(torch.cat([v, v - 1], dim=-1), dim=-1)
    else:
        inactive = clipped.sum(-1) <= budget
        zero = torch.zeros_like(v[:, :1])
        breaks, _ = torch.sort(torch.cat([zero, v, v - 1], dim=-1).clamp(min=0.0), dim=-1)
    top, mid_sum, mid_count = _capped_sum(vs, cs, breaks)
    phi = top + mid_sum - breaks * mid_count
    # phi is nonincreasing; phi(0) > budget on the active rows and phi(max v) = 0 <= budget,
    # so the root lies on the segment [b_j, b_{j+1}] with j the last index where phi > budget.
    j = ((phi > budget).sum(-1, keepdim=True) - 1).clamp(0, breaks.shape[-1] - 2)
    mid = 0.5 * (breaks.gather(-1, j) + breaks.gather(-1, j + 1))
    top, mid_sum, mid_count = _capped_sum(vs, cs, mid)
    theta = (top + mid_sum - budget) / mid_count.clamp(min=1.0)
    theta = torch.where(inactive[:, None], torch.zeros_like(theta), theta)
    if equality and budget >= v.shape[-1]:
        return torch.ones_like(v)  # the set is the single point x = 1
    return (v - theta).clamp(0.0, 1.0)
