from __future__ import annotations

import torch

from ._checks import check_tol
from .blocks import affine_image
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


class Readout:
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

    def by_name(self, name: str) -> list:
        """The multipliers of every block whose multiplier is called ``name``, in block order."""
        return [m for n, m in zip(self.names, self.multipliers, strict=True) if n == name]

    @property
    def nu(self) -> list[torch.Tensor]:
        """Backbone multipliers, one ``(N, m_l)`` tensor per layer (empty without a backbone)."""
        found = self.by_name("nu")
        return list(found[0]) if found else []

    @property
    def p(self) -> list[torch.Tensor]:
        """Quadratic-block multipliers ``alpha q``, one ``(N, k_h)`` tensor per block."""
        return self.by_name("p")

    @property
    def r(self) -> list[torch.Tensor]:
        """Norm-block multipliers, one ``(N, n_g)`` tensor per block."""
        return self.by_name("r")

    def __repr__(self) -> str:
        return f"Readout(N={self.grad.shape[0]}, d={self.grad.shape[1]}, blocks={self.names})"


def _weights_stamp(model) -> tuple:
    """Identity and version of every parameter and bound datum: changes when any is modified."""
    stamp = [(p.data_ptr(), p._version) for p in model.parameters()]
    for block in model.blocks():
        for t in (block._bound or {}).values():
            stamp.append((t.data_ptr(), t._version))
    return tuple(stamp)


def check_model(model) -> None:
    """Raise ``TypeError`` unless ``model`` is a socicnn model (anything exposing blocks)."""
    if not (hasattr(model, "blocks") and hasattr(model, "check_input") and hasattr(model, "in_dim")):
        raise TypeError(f"expected a socicnn model (e.g. sc.SOCICNN), got {type(model).__name__}")


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
    """Per-block multipliers from either one sequence (one entry per block) or ``(nu, p, r)``."""
    check_model(model)
    blocks = list(model.blocks())
    if len(mults) == 1:
        per_block = list(mults[0])
    elif len(mults) == 3:
        named = {"nu": iter([mults[0]]), "p": iter(mults[1]), "r": iter(mults[2])}
        try:
            per_block = [next(named[b.multiplier_name]) for b in blocks]
        except (KeyError, StopIteration):
            raise ValueError(
                "(nu, p, r) do not match the model's blocks "
                f"{[b.multiplier_name for b in blocks]}; pass one multiplier per block instead"
            ) from None
    else:
        raise TypeError("pass the multipliers as one per-block sequence or as (nu, p, r)")
    if len(per_block) != len(blocks):
        raise ValueError(f"expected multipliers for {len(blocks)} blocks, got {len(per_block)}")
    kw = {"dtype": model.dtype, "device": model.device}

    def tensor(m):
        if isinstance(m, (list, tuple)):
            return [tensor(t) for t in m]
        if isinstance(m, torch.Tensor):
            if not m.is_floating_point():
                raise TypeError(f"multipliers must be floating-point tensors, got {m.dtype}")
            return m.to(**kw)
        try:
            return torch.as_tensor(m, **kw)
        except (TypeError, ValueError, RuntimeError) as exc:
            raise TypeError(f"multipliers must be tensors or arrays, got {type(m).__name__}") from exc

    return [tensor(m) for m in per_block]


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
    return sum(_blockwise(model, mults, lambda b, m: b.dual_value(x2, m)))


@torch.no_grad()
def dual_residual(model, *multipliers) -> torch.Tensor:
    """Largest violation ``(N,)`` of the dual feasibility constraints by the multipliers."""
    mults = _per_block(model, multipliers)
    return torch.stack(_blockwise(model, mults, lambda b, m: b.dual_residual(m)), 0).amax(0)
