"""Dual readout: gradients, Hessians, HVPs and directional derivatives from multipliers (MATH.md §3).

Everything is batched over ``x`` of shape ``(N, d)`` and computed in closed form from the
canonical multipliers (``relu'(0) = 0``; ``r = 0`` where ``u = 0``), block by block: each block
of the model says what its multiplier contributes, and this module adds them up. ``tol``
decides what counts as a tie: ``|a_{l,i}| <= tol`` or ``||u_g|| <= tol``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property

import torch

from ._checks import check_tol
from .blocks import affine_image
from .lifting import split_multipliers
from .subdifferential import min_norm_subgradient

__all__ = [
    "Readout",
    "directional_derivative",
    "dual_objective",
    "dual_residual",
    "hessian",
    "hvp",
    "min_norm_subgradient",
    "readout",
    "supporting_slope",
]


@dataclass
class Readout:
    """Canonical multipliers and what they give at a batch of ``N`` points.

    Attributes:
        value: ``(N,)`` the model's value ``f(x)`` (computed on first access).
        grad: ``(N, d)`` the readout gradient ``G(nu, p, r)``, a subgradient everywhere.
        nu: backbone multipliers, one ``(N, m_l)`` tensor per layer.
        p: quadratic-block multipliers ``alpha q``, one ``(N, k_h)`` tensor per block.
        r: norm-block multipliers, one ``(N, n_g)`` tensor per block.
        margins: ``(N,)`` distance to degeneracy, ``min(min_{l,i} |a_{l,i}|, min_g ||u_g||)``
            (computed on first access).
        dual_value: ``(N,)`` the dual objective at the canonical multipliers (equals ``value``;
            computed on first access).

    The lazy attributes are computed on first access, so a caller that only wants slopes does
    not pay for them.
    """

    grad: torch.Tensor
    nu: list[torch.Tensor]
    p: list[torch.Tensor]
    r: list[torch.Tensor]
    _value: Callable[[], torch.Tensor] = field(repr=False)
    _dual_value: Callable[[], torch.Tensor] = field(repr=False)
    _margins: Callable[[], torch.Tensor] = field(repr=False)

    @cached_property
    def value(self) -> torch.Tensor:
        with torch.no_grad():
            return self._value()

    @cached_property
    def margins(self) -> torch.Tensor:
        with torch.no_grad():
            return self._margins()

    @cached_property
    def dual_value(self) -> torch.Tensor:
        with torch.no_grad():
            return self._dual_value()


def _check(model, x, tol: float) -> tuple[torch.Tensor, float]:
    if not hasattr(model, "blocks"):
        raise TypeError(f"expected a socicnn model, got {type(model).__name__}")
    tol = check_tol(tol)
    x2, vector = model.check_input(x)
    if vector:
        raise ValueError(f"x must have shape (N, {model.in_dim}) (a batch), got {tuple(x2.shape[1:])}; use x[None]")
    return x2, tol


def _states(model, x, tol: float):
    x2, tol = _check(model, x, tol)
    return x2, [(block, block.state(x2, tol)) for block in model.blocks()]


def _curvature(model, x, tol: float):
    """``(x2, states, F)``: the states of the blocks whose curvature depends on ``x``, and the
    stacked curvature factors ``F`` ``(K, d)`` of the blocks whose Hessian is a constant
    ``F_h^T F_h`` (``None`` when there are none). Piecewise-linear blocks add nothing to
    Hessians or HVPs, and constant-curvature blocks need no state: their (costly) states are
    skipped."""
    x2, tol = _check(model, x, tol)
    states, factors = [], []
    for block in model.blocks():
        if (F := block.curvature_factor()) is not None:
            factors.append(F)
        elif not block.piecewise_linear:
            states.append((block, block.state(x2, tol)))
    return x2, states, (torch.cat(factors) if factors else None)


def _rows_like(model, x2: torch.Tensor, v, name: str) -> torch.Tensor:
    """``v`` as ``(N, d)`` matching ``x2``: a ``(d,)`` vector is shared by every row."""
    v2, vector = model.check_input(v, name)
    if not vector and v2.shape[0] != x2.shape[0]:
        raise ValueError(f"{name} has {v2.shape[0]} rows but x has {x2.shape[0]}; they must match")
    return v2.expand_as(x2)


@torch.no_grad()
def readout(model, x: torch.Tensor, tol: float = 0.0) -> Readout:
    """Canonical multipliers, readout gradient, margins and dual value at ``x`` ``(N, d)``."""
    x2, states = _states(model, x, tol)
    blocks = [block for block, _ in states]
    mults = [block.multipliers(st) for block, st in states]
    nu, p, r = split_multipliers(model, mults)
    slopes = [block.slope(st) for block, st in states]
    grad = slopes[0]
    for slope in slopes[1:]:
        grad = grad + slope
    return Readout(
        grad=grad,
        nu=nu,
        p=p,
        r=r,
        _value=lambda: sum(block(x2) for block in blocks),
        _dual_value=lambda: sum(block.dual_value(x2, m) for block, m in zip(blocks, mults, strict=True)),
        _margins=lambda: _margins(x2, states),
    )


def _margins(x2: torch.Tensor, states) -> torch.Tensor:
    """``(N,)`` the smallest of the blocks' margins (``inf`` when no block has one)."""
    margins = [m for block, st in states if (m := block.margin(st)) is not None]
    return torch.stack(margins, 0).amin(0) if margins else torch.full_like(x2[:, 0], float("inf"))


@torch.no_grad()
def hessian(model, x: torch.Tensor, tol: float = 0.0) -> torch.Tensor:
    """Local Hessian ``(N, d, d)``: ``sum alpha B^T B + sum lam/||u|| A^T (I - u_hat u_hat^T) A``.

    Exact at nondegenerate points (the backbone is locally affine); at ties the canonical
    selector is used (tied norm blocks contribute 0).
    """
    x2, states, F = _curvature(model, x, tol)
    d = model.in_dim
    H = (F.T @ F if F is not None else x2.new_zeros(d, d)).expand(x2.shape[0], d, d).contiguous()
    for block, st in states:
        block.hessian(st, out=H)
    return H


@torch.no_grad()
def hvp(model, x: torch.Tensor, v: torch.Tensor, tol: float = 0.0) -> torch.Tensor:
    """Hessian-vector products ``(N, d)`` of the local Hessian at ``x`` with ``v`` (``(N, d)``
    or ``(d,)``), without forming per-point ``d x d`` Hessians.

    The blocks with a constant Hessian ``F^T F`` are summed first: through the ``d x d`` matrix
    ``F^T F`` when that is cheaper than the two thin products ``(v F^T) F``.
    """
    x2, states, F = _curvature(model, x, tol)
    v2 = _rows_like(model, x2, v, "v")
    if F is None:
        out = torch.zeros_like(x2)
    else:
        (K, d), N = F.shape, x2.shape[0]
        out = affine_image(v2, F.T @ F) if d * (N + K) < 2 * N * K else affine_image(affine_image(v2, F), F.T)
    for block, st in states:
        part = block.hvp(st, v2)
        if part is not None:
            out.add_(part)  # out is a fresh buffer
    return out


@torch.no_grad()
def directional_derivative(
    model, x: torch.Tensor, delta: torch.Tensor, tol: float = 0.0
) -> torch.Tensor:
    """Exact one-sided directional derivative ``f'(x; delta)`` ``(N,)`` at ties of any depth.

    Computed by a forward pass of directional derivatives (MATH.md §3): tied units
    (``|a| <= tol``) pass ``max(delta_a, 0)``, tied norm blocks (``||u|| <= tol``) give
    ``lam ||A delta||``.
    """
    x2, states = _states(model, x, tol)
    d2 = _rows_like(model, x2, delta, "delta")
    return sum(block.directional(st, d2, tol) for block, st in states)


def _per_block(model, nu, p, r) -> list:
    quad, norm = iter(p), iter(r)
    out = []
    for block in model.blocks():
        out.append(nu if block.kind == "nu" else next(quad if block.kind == "p" else norm))
    return out


@torch.no_grad()
def supporting_slope(model, nu, p, r) -> torch.Tensor:
    """The slope ``G(nu, p, r) = v + sum W_l^T nu_l + sum B_h^T p_h + sum A_g^T r_g`` ``(N, d)``
    of batched multipliers (e.g. a conic solver's duals): a subgradient when they are optimal."""
    mults = _per_block(model, nu, p, r)
    return sum(b.dual_slope(m) for b, m in zip(model.blocks(), mults, strict=True))


@torch.no_grad()
def dual_objective(model, x: torch.Tensor, nu, p, r) -> torch.Tensor:
    """The dual objective of MATH.md §2 at batched multipliers ``(nu, p, r)``: ``(N,)``.

    For dual-feasible multipliers it is a lower bound on ``f(x)``, with equality at optimal ones.
    """
    x2, _ = model.check_input(x)
    mults = _per_block(model, nu, p, r)
    return sum(b.dual_value(x2, m) for b, m in zip(model.blocks(), mults, strict=True))


@torch.no_grad()
def dual_residual(model, nu, p, r) -> torch.Tensor:
    """Largest violation ``(N,)`` of the dual feasibility constraints by ``(nu, p, r)``."""
    mults = _per_block(model, nu, p, r)
    parts = [b.dual_residual(m) for b, m in zip(model.blocks(), mults, strict=True)]
    return torch.stack(parts, 0).amax(0)
