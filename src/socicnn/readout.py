"""Dual readout: canonical multipliers, supporting slopes, local Hessians and HVPs, directional
derivatives, and the dual objective at given multipliers, all in closed form (no solver).

Every function here runs under ``torch.no_grad()``: its outputs are plain tensors without an
autograd graph, even when ``x`` or the model's parameters require grad, and a :class:`Readout`
is a snapshot of the point and weights it was taken at. To differentiate *through* ``f`` (for
training, say), apply autograd to ``model(x)`` itself.
"""

from __future__ import annotations

import numpy as np
import torch

from ._checks import check_finite, check_model, check_tol
from .blocks import MultiplierViews, affine_image
from .subdifferential import min_norm_subgradient

__all__ = [
    "Readout",
    "default_tie_tol",
    "directional_derivative",
    "dual_objective",
    "dual_residual",
    "hessian",
    "hvp",
    "min_norm_subgradient",
    "readout",
    "supporting_slope",
]


DENSE_HESSIAN_LIMIT = 2**28  # numbers in an (N, d, d) Hessian batch: 2 GiB in float64


class Readout(MultiplierViews):
    """Canonical multipliers and what they give at a batch of ``N`` points, as of the call to
    :func:`readout` (a snapshot: changing ``x`` in place afterwards does not change it).

    Attributes:
        grad: ``(N, d)`` the readout gradient ``G``, a subgradient everywhere.
        multipliers: one entry per block of ``model.blocks()``: that block's multipliers.
        names: the blocks' multiplier names (``"nu"``, ``"p"``, ``"r"``, ...), aligned with them.
        margins: ``(N,)`` distance to degeneracy: the smallest of the blocks' margins
            (``min |a_{l,i}|`` and ``min_g ||u_g||``; ``inf`` when no block has kinks).
        value: ``(N,)`` the model's value ``f(x)``, and ``dual_value`` ``(N,)`` the dual objective
            at the canonical multipliers (equal to ``value``): both computed on first access from
            the saved ``x``; if the model's weights changed since the readout, that access raises
            ``RuntimeError`` instead of describing another model.
    """

    def __init__(self, model, x, grad, multipliers, names, margins) -> None:
        self.grad, self.multipliers, self.names, self.margins = grad, tuple(multipliers), tuple(names), margins
        self._model, self._x = model, x.clone()
        self._stamp = _weights_stamp(model)
        self._cache: dict[str, torch.Tensor] = {}

    def _checked(self, name: str, compute) -> torch.Tensor:
        if name not in self._cache:
            if _weights_stamp(self._model) != self._stamp:
                raise RuntimeError(
                    f"the model's weights changed since this readout was taken, so its {name} would describe "
                    "another model; call socicnn.readout.readout again"
                )
            with torch.no_grad():
                self._cache[name] = compute()
        return self._cache[name]

    @property
    def value(self) -> torch.Tensor:
        return self._checked("value", lambda: sum(b(self._x) for b in self._model.blocks()))

    @property
    def dual_value(self) -> torch.Tensor:
        blocks = list(self._model.blocks())
        return self._checked(
            "dual_value",
            lambda: sum(b.dual_value(self._x, m) for b, m in zip(blocks, self.multipliers, strict=True)),
        )


    def __repr__(self) -> str:
        return f"Readout(N={self.grad.shape[0]}, d={self.grad.shape[1]}, blocks={self.names})"


def _weights_stamp(model) -> tuple:
    """Identity and version of every parameter and bound datum: changes when any is modified."""
    stamp = [(p.data_ptr(), p._version) for p in model.parameters()]
    for block in model.blocks():
        for t in (block._bound or {}).values():
            stamp.append((t.data_ptr(), t._version))
    return tuple(stamp)


def _check(model, x, tol: float) -> tuple[torch.Tensor, float]:
    check_model(model)
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
    """Canonical multipliers, readout gradient and margins at ``x`` ``(N, d)``, and the value and
    dual value on demand (a snapshot; see :class:`Readout`)."""
    x2, states = _states(model, x, tol)
    mults = [block.multipliers(st) for block, st in states]
    grad = None
    for block, st in states:
        slope = block.slope(st)
        grad = slope if grad is None else grad + slope
    return Readout(
        model, x2, grad, mults, [block.multiplier_name for block, _ in states], _margins(x2, states)
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
    check_model(model)
    d = model.in_dim
    n = x.shape[0] if isinstance(x, torch.Tensor) and x.ndim == 2 else 1
    if n * d * d > DENSE_HESSIAN_LIMIT:
        raise ValueError(
            f"the dense Hessian of {n} points of dimension {d} would hold {n * d * d:,} numbers "
            f"(limit {DENSE_HESSIAN_LIMIT:,}); use socicnn.readout.hvp (matrix-free) instead"
        )
    x2, states, F = _curvature(model, x, tol)
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


def default_tie_tol(model, x: torch.Tensor) -> float:
    """The default tie tolerance at ``x`` ``(N, d)``: ``1e3 eps max(1, max|x|, max|kink|)``.

    A kink coordinate (a pre-activation ``a_{l,i}``, a norm block's ``u_g``) that should be 0 is
    computed with a rounding error of a few ``eps`` times the size of the terms summed into it;
    this default treats everything within a thousand times that (about ``2e-13`` times the
    scale in float64, ``1e-4`` in float32) as a tie. The margins of :func:`readout` show how far
    the points are from their kinks.
    """
    x2, _ = _check(model, x, 0.0)
    scale = 1.0
    if x2.numel():
        scale = max(scale, float(x2.abs().max()))
        with torch.no_grad():
            for block in model.blocks():
                k = block.kinks(block.state(x2))
                if k.numel():
                    scale = max(scale, float(k.abs().max()))
    return 1e3 * torch.finfo(x2.dtype).eps * scale


@torch.no_grad()
def directional_derivative(model, x: torch.Tensor, delta: torch.Tensor, tol: float | None = None) -> torch.Tensor:
    """Exact one-sided directional derivative ``f'(x; delta)`` ``(N,)`` at ties of any depth.

    Computed by a forward pass of directional derivatives: tied units (``|a| <= tol``) pass
    ``max(delta_a, 0)``, tied norm blocks (``||u|| <= tol``) give ``lam ||A delta||``. The
    default ``tol`` is :func:`default_tie_tol` (ties off by rounding count as ties); ``tol=0``
    trusts the computed kink coordinates exactly.
    """
    if tol is None:
        tol = default_tie_tol(model, x)
    x2, states = _states(model, x, tol)
    d2 = _rows_like(model, x2, delta, "delta")
    return sum(block.directional(st, d2, tol) for block, st in states)


def _per_block(model, mults: tuple) -> list:
    """Per-block multipliers from either one sequence (one entry per block) or ``(nu, p, r)``,
    checked against the structure of the model's own multipliers: every entry a finite
    floating-point tensor (or array) of shape ``(N, ...)`` with the block's trailing shape and
    one ``N`` for all."""
    check_model(model)
    blocks = list(model.blocks())
    if len(mults) == 1 and isinstance(mults[0], (list, tuple)):
        per_block = list(mults[0])
    elif len(mults) == 3 and all(isinstance(m, (list, tuple)) for m in mults):
        names = [b.multiplier_name for b in blocks]
        nu, p, r = mults
        named = {"nu": [nu] if (nu or "nu" in names) else [], "p": list(p), "r": list(r)}
        if any(n not in named for n in names) or any(len(v) != names.count(k) for k, v in named.items()):
            raise ValueError(
                f"(nu, p, r) hold {len(named['nu'])} backbone, {len(named['p'])} quadratic and "
                f"{len(named['r'])} norm multipliers but the model's blocks are {names}; "
                "pass one multiplier per block instead"
            )
        per_block = [named[b.multiplier_name].pop(0) for b in blocks]
    else:
        raise TypeError(
            "pass the multipliers as one per-block sequence (a list, one entry per block) or as "
            f"(nu, p, r) (three lists); got {len(mults)} argument(s) of types {[type(m).__name__ for m in mults]}"
        )
    if len(per_block) != len(blocks):
        raise ValueError(f"expected multipliers for {len(blocks)} blocks, got {len(per_block)}")
    kw = {"dtype": model.dtype, "device": model.device}
    # The structure each block expects: its own canonical multipliers at one point.
    rows = getattr(model, "rows", None)
    probe = model if rows is None else model.select(torch.zeros(1, dtype=torch.long))
    with torch.no_grad():
        x1 = torch.zeros(1, model.in_dim, **kw)
        templates = [b.multipliers(b.state(x1)) for b in probe.blocks()]
    sizes: set[int] = set()

    def tensor(m, t, where: str):
        if isinstance(t, (list, tuple)):
            if not isinstance(m, (list, tuple)) or len(m) != len(t):
                got = f"{len(m)} entries" if isinstance(m, (list, tuple)) else type(m).__name__
                raise ValueError(f"multipliers {where} must be a list of {len(t)} tensors, got {got}")
            return [tensor(mi, ti, f"{where}[{i}]") for i, (mi, ti) in enumerate(zip(m, t, strict=True))]
        if isinstance(m, torch.Tensor):
            if not m.is_floating_point():
                raise TypeError(f"multipliers {where} must be floating-point, got {m.dtype}")
            m = m.to(**kw)
        else:
            try:
                m = torch.as_tensor(np.asarray(m, dtype=float), **kw)
            except (TypeError, ValueError) as exc:
                raise TypeError(f"multipliers {where} must be tensors or arrays, got {type(m).__name__}") from exc
        if m.ndim != t.ndim or tuple(m.shape[1:]) != tuple(t.shape[1:]):
            want = ", ".join(["N", *map(str, t.shape[1:])])
            raise ValueError(f"multipliers {where} must have shape ({want}), got {tuple(m.shape)}")
        check_finite(f"multipliers {where}", m)
        sizes.add(int(m.shape[0]))
        return m

    out = [
        tensor(m, t, f"{b.multiplier_name} (block {i})")
        for i, (b, m, t) in enumerate(zip(blocks, per_block, templates, strict=True))
    ]
    if len(sizes) > 1:
        raise ValueError(f"the multipliers disagree on the number of rows N: {sorted(sizes)}")
    return out


def _blockwise(model, mults, fn):
    try:
        return [fn(b, m) for b, m in zip(model.blocks(), mults, strict=True)]
    except (RuntimeError, IndexError) as exc:
        raise ValueError(f"the multipliers do not have the shapes of the model's blocks: {exc}") from exc


@torch.no_grad()
def supporting_slope(model, *multipliers) -> torch.Tensor:
    """The slope ``G = v + sum W_l^T nu_l + sum B_h^T p_h + sum A_g^T r_g`` ``(N, d)`` of batched
    multipliers (e.g. a conic solver's duals), given per block or as ``(nu, p, r)``: a
    subgradient when they are optimal."""
    mults = _per_block(model, multipliers)
    return sum(_blockwise(model, mults, lambda b, m: b.dual_slope(m)))


@torch.no_grad()
def dual_objective(model, x: torch.Tensor, *multipliers) -> torch.Tensor:
    """The dual objective of the lifted program at batched multipliers (per block or
    ``(nu, p, r)``): ``(N,)``. For dual-feasible multipliers it is a lower bound on ``f(x)``, with
    equality at optimal ones."""
    check_model(model)
    x2, _ = model.check_input(x)
    mults = _per_block(model, multipliers)
    n = next(_leaves(mults)).shape[0]
    if x2.shape[0] != n:
        raise ValueError(f"x has {x2.shape[0]} rows but the multipliers have {n}; they must match")
    return sum(_blockwise(model, mults, lambda b, m: b.dual_value(x2, m)))


def _leaves(m):
    """The tensors of a nested list of multipliers, in order."""
    if isinstance(m, (list, tuple)):
        for item in m:
            yield from _leaves(item)
    else:
        yield m


@torch.no_grad()
def dual_residual(model, *multipliers) -> torch.Tensor:
    """Largest violation ``(N,)`` of the dual feasibility constraints by the multipliers."""
    mults = _per_block(model, multipliers)
    return torch.stack(_blockwise(model, mults, lambda b, m: b.dual_residual(m)), 0).amax(0)
