"""The block protocol: the one interface through which the library sees a model.

A model is a sum of convex blocks ``f(x) = sum_b f_b(x)`` (the ReLU backbone, quadratic blocks,
norm blocks, and any block a user adds). Each block is the one place that knows, for its own
term of ``f``:

- its value (``forward``) and its lifting: CVXPY variables and cone constraints whose optimal
  value is the block's value (``lift``), with the solver's duals read back in the model's
  convention;
- its canonical dual multiplier at a batch of points (``state``, ``multipliers``) and what a
  multiplier contributes to the supporting slope, the dual objective and dual feasibility;
- its local curvature (``hessian``, ``hvp``) and its exact one-sided directional derivative;
- its optimal dual set at one point (``optimal_dual_set``, ``sample_optimal_duals``);
- its *kinks*: affine coordinates (``kinks``) whose zeros are where the block is not
  differentiable, and what white-box inference needs to step onto them and to certify a point
  (``face_pattern``, ``face_duals``, ``face_jvp``, ``face_rows``, ``face_curvature``,
  ``face_hvp``, ``face_crossing``, ``release_group``, ``gap_slack``).

``socicnn.lifting``, ``socicnn.readout``, ``socicnn.subdifferential`` and
``socicnn.inference`` only sum what blocks say, so a new family is a new block file.

A subclass that leaves a required method unimplemented fails when the class is defined
(``TypeError``), not when a user first calls the missing method. Helper bases that are not
meant to be used alone pass ``abstract=True``: ``class MyBase(ConvexBlock, abstract=True)``.

**Per-row data (contexts).** Every block names the affine offsets (and nonnegative scalings)
it accepts as data (``data_shapes``). ``block.bind(data)`` returns the same block (sharing its
weights) with some of them replaced, either by one value shared by every row or by one value
per row (a leading batch dimension). A model of ``(x, context)`` is then an ordinary model whose
blocks carry per-row data; lifting turns the data into ``cp.Parameter`` values, so one compiled
problem serves every context.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

__all__ = [
    "BlockLift",
    "MultiplierViews",
    "ConvexBlock",
    "DualSetLift",
    "FaceDuals",
    "SmoothBlock",
    "affine_image",
    "per_row",
    "to_numpy",
]


@dataclass
class BlockLift:
    """A block's part of the lifted conic program.

    Attributes:
        objective: CVXPY expression, the block's term of the objective.
        constraints: list of CVXPY constraints (linear and cone constraints).
        read_multipliers: callable, after a solve, returning the block's optimal dual
            multipliers in the model's convention (a list of arrays or one array).
    """

    objective: Any
    constraints: list
    read_multipliers: Callable[[], Any]


@dataclass
class DualSetLift:
    """A block's part of the optimal dual set ``D*(x)`` at one point, for CVXPY.

    Attributes:
        constraints: CVXPY constraints on the block's multiplier variables (empty when the
            block's optimal multiplier is unique and enters as a constant).
        slope: CVXPY expression (or NumPy constant) of shape ``(d,)``, the block's term of
            ``G(xi)``, affine in the multipliers.
    """

    constraints: list
    slope: Any


@dataclass
class FaceDuals:
    """Multipliers of a block on a face, from :meth:`ConvexBlock.face_duals`.

    Attributes:
        slope: ``(n, d)`` the block's term of the slope ``G``.
        mult: the multipliers in the model's convention (as :meth:`ConvexBlock.multipliers`).
        violation: ``(n, K)`` how far each kink coordinate's multiplier lies outside the block's
            dual set (0 inside), scaled to be comparable across blocks.
        to_active: ``(n, K)`` bool, the side a violating coordinate is released to (its new
            pattern entry is 1 when True, 0 otherwise).
    """

    slope: torch.Tensor
    mult: Any
    violation: torch.Tensor
    to_active: torch.Tensor


class MultiplierViews:
    """Views of per-block multipliers by name, for results holding ``multipliers`` (one entry per
    block) and ``names`` (each block's ``multiplier_name``)."""

    multipliers: Any
    names: tuple[str, ...]

    def by_name(self, name: str) -> list:
        """The multipliers of every block whose multiplier is called ``name``, in block order."""
        return [m for n, m in zip(self.names, self.multipliers, strict=True) if n == name]

    @property
    def nu(self) -> list:
        """Backbone multipliers, one per layer (empty without a backbone)."""
        found = self.by_name("nu")
        return list(found[0]) if found else []

    @property
    def p(self) -> list:
        """Quadratic-block multipliers ``alpha q``, one per block."""
        return self.by_name("p")

    @property
    def r(self) -> list:
        """Norm-block multipliers, one per block."""
        return self.by_name("r")


REQUIRED = (
    "forward",
    "state",
    "multipliers",
    "dual_slope",
    "dual_value",
    "dual_residual",
    "hessian",
    "hvp",
    "directional",
    "margin",
    "lift",
    "optimal_dual_set",
    "sample_optimal_duals",
    "kinks",
    "face_pattern",
    "face_duals",
    "face_jvp",
    "face_rows",
    "face_curvature",
    "face_hvp",
    "face_crossing",
    "release_group",
    "gap_slack",
    "default_data",
)


class ConvexBlock(nn.Module):
    """Base class of the convex blocks whose sum is a model (see the module docstring).

    Class attributes a block sets:
        multiplier_name: what its multipliers are called in a readout (``"nu"``, ``"p"``,
            ``"r"``, or a new name); readouts keep per-block multipliers and derive the
            ``nu``/``p``/``r`` views from these names.
        piecewise_linear: ``True`` when the block is locally affine away from its kinks (its
            Hessian and HVP are zero), so curvature readouts may skip its state.
        data_shapes: per-row data the block accepts, ``name -> shape of one row``; offsets are
            free, entries listed in ``nonnegative_data`` (a name, or a prefix before ``.``) must
            stay ``>= 0`` (convexity).

    Shapes: ``x`` is ``(N, d)``; ``n`` is the number of rows of a state.
    """

    multiplier_name: ClassVar[str] = ""
    piecewise_linear: ClassVar[bool] = False
    nonnegative_data: ClassVar[tuple[str, ...]] = ()

    def __init_subclass__(cls, *, abstract: bool = False, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        if abstract:
            return
        missing = [name for name in REQUIRED if getattr(cls, name) is getattr(ConvexBlock, name)]
        if missing:
            raise TypeError(
                f"block class {cls.__name__} does not implement the block protocol: missing "
                f"{', '.join(missing)} (see socicnn.blocks.ConvexBlock)"
            )
        if not cls.multiplier_name:
            raise TypeError(f"block class {cls.__name__} must set multiplier_name")

    # ------------------------------------------------------------------ per-row data
    _bound: dict[str, torch.Tensor] | None = None

    @property
    def data_shapes(self) -> dict[str, tuple[int, ...]]:
        """``name -> shape`` of one row of each datum the block accepts (those of
        :meth:`default_data`, plus optional scalings whose default is the identity)."""
        return {k: tuple(v.shape) for k, v in self.default_data().items()}

    def default_data(self) -> dict[str, torch.Tensor]:
        """The block's own offsets and scalings (from its parameters), one shared value each."""
        raise NotImplementedError

    def data(self, name: str) -> torch.Tensor | None:
        """Datum ``name``: the bound value (shared, or ``(N, ...)`` per row), else the block's
        own, else ``None`` (an optional scaling left at the identity)."""
        if self._bound is not None and name in self._bound:
            return self._bound[name]
        return self.default_data().get(name)

    def _shapes(self) -> dict[str, tuple[int, ...]]:
        """:attr:`data_shapes`, computed once per block (shapes never change)."""
        cache = self.__dict__.get("_shape_cache")
        if cache is None:
            cache = self.data_shapes
            self.__dict__["_shape_cache"] = cache
        return cache

    @property
    def rows(self) -> int | None:
        """Number of rows of bound per-row data, ``None`` when every datum is shared."""
        return self.__dict__.get("_nrows")

    def _with_bound(self, bound: dict[str, torch.Tensor]) -> ConvexBlock:
        """A shallow copy holding ``bound`` as its data (and its number of rows)."""
        out = copy.copy(self)
        shapes = self._shapes()
        rows = next((int(t.shape[0]) for k, t in bound.items() if t.ndim > len(shapes[k])), None)
        object.__setattr__(out, "_bound", bound)
        out.__dict__["_nrows"] = rows
        return out

    def bind(self, data: dict[str, torch.Tensor]) -> ConvexBlock:
        """The same block (same weights) with data replaced: each value has the datum's shape
        (shared by every row) or a leading batch dimension (one value per row)."""
        shapes = self._shapes()
        bound = dict(self._bound or {})
        rows = None
        for name, value in data.items():
            if name not in shapes:
                raise ValueError(f"{type(self).__name__} has no datum {name!r}; it accepts {sorted(shapes)}")
            if not isinstance(value, torch.Tensor):
                raise TypeError(f"datum {name!r} must be a tensor, got {type(value).__name__}")
            want = shapes[name]
            got = tuple(value.shape)
            if got != want and got[1:] != want:
                raise ValueError(f"datum {name!r} must have shape {want} or (N, *{want}), got {got}")
            nonneg = any(name == p or name.startswith(p + ".") for p in self.nonnegative_data)
            if nonneg and not _transformed(value) and bool((value < 0).any()):
                raise ValueError(f"datum {name!r} of {type(self).__name__} must be >= 0 (convexity)")
            if got != want:
                if rows is not None and got[0] != rows:
                    raise ValueError(f"per-row data disagree on the number of rows ({rows} and {got[0]})")
                rows = got[0]
            bound[name] = value
        return self._with_bound(bound)

    def select(self, index: torch.Tensor) -> ConvexBlock:
        """The block with its per-row data restricted to the rows ``index`` (itself when shared)."""
        if self.rows is None:
            return self
        shapes = self._shapes()
        return self._with_bound({k: (v[index] if v.ndim > len(shapes[k]) else v) for k, v in self._bound.items()})

    # ------------------------------------------------------------------ values and readout
    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, d) -> (N,)
        raise NotImplementedError

    def state(self, x: torch.Tensor, tol: float = 0.0) -> Any:
        """Affine images and canonical multipliers at the points ``x`` ``(N, d)``; kinks within
        ``tol`` count as ties (the canonical selector then picks the multiplier ``relu'(0) = 0``
        / ``r = 0`` would)."""
        raise NotImplementedError

    def multipliers(self, st: Any) -> Any:
        """The canonical multipliers held in ``st`` (batched)."""
        raise NotImplementedError

    def slope(self, st: Any) -> torch.Tensor:
        """Contribution ``(N, d)`` of the canonical multipliers to the supporting slope ``G``."""
        return self.dual_slope(self.multipliers(st))

    def dual_slope(self, mult: Any) -> torch.Tensor:
        """Contribution ``(N, d)`` of batched multipliers ``mult`` to ``G`` (affine in ``mult``)."""
        raise NotImplementedError

    def dual_value(self, x: torch.Tensor, mult: Any) -> torch.Tensor:
        """The block's term ``(N,)`` of the dual objective at multipliers ``mult``."""
        raise NotImplementedError

    def dual_residual(self, mult: Any) -> torch.Tensor:
        """Largest violation ``(N,)`` of the block's dual feasibility constraints by ``mult``."""
        raise NotImplementedError

    def curvature_factor(self) -> torch.Tensor | None:
        """``F`` ``(k, d)`` when the block's Hessian is ``F^T F`` at every ``x`` and every row (a
        constant), else ``None``."""
        return None

    def hessian(self, st: Any, out: torch.Tensor | None = None) -> torch.Tensor | None:
        """Contribution ``(N, d, d)`` to the local Hessian, added into ``out`` when given."""
        raise NotImplementedError

    def hvp(self, st: Any, w: torch.Tensor) -> torch.Tensor | None:
        """Contribution ``(N, d)`` to the Hessian-vector product, or ``None`` when zero."""
        raise NotImplementedError

    def directional(self, st: Any, delta: torch.Tensor, tol: float) -> torch.Tensor:
        """Contribution ``(N,)`` to the exact one-sided directional derivative."""
        raise NotImplementedError

    def margin(self, st: Any) -> torch.Tensor | None:
        """Distance ``(N,)`` to this block's kinks, or ``None`` if it has none."""
        raise NotImplementedError

    # ------------------------------------------------------------------ lifting
    def lift(self, x: Any, data: dict[str, Any]) -> BlockLift:
        """The block as CVXPY variables and constraints, for a CVXPY expression ``x`` ``(d,)``;
        ``data`` maps each datum name to a CVXPY parameter (or constant) of its row shape."""
        raise NotImplementedError

    def optimal_dual_set(self, st: Any, tol: float) -> DualSetLift:
        """The block's optimal multipliers at one point (``st`` with ``N = 1``) as CVXPY
        constraints, and their contribution to ``G`` as a CVXPY expression."""
        raise NotImplementedError

    def sample_optimal_duals(self, st: Any, n: int, tol: float, generator: torch.Generator) -> Any:
        """``n`` random optimal multipliers (batched) at one point (``st`` with ``N = 1``)."""
        raise NotImplementedError

    # ------------------------------------------------------------------ kinks (inference)
    def kinks(self, st: Any) -> torch.Tensor:
        """``(n, K)`` kink coordinates: affine-on-a-piece residuals whose zeros are the block's
        kinks (``K = 0`` for a smooth block)."""
        raise NotImplementedError

    def tied(self, st: Any, tol: float) -> torch.Tensor:
        """``(n, K)`` bool, the kink coordinates that count as tied at ``tol``."""
        return self.kinks(st).abs() <= tol

    def face_pattern(self, st: Any, tied: torch.Tensor) -> torch.Tensor:
        """``(n, K)`` the smooth piece to work on: a float pattern per kink coordinate (for a
        ReLU unit ``1[a > 0]``; for a norm block 1 on its face ``u = 0``), given the ties."""
        raise NotImplementedError

    def face_duals(
        self, st: Any, pattern: torch.Tensor, seeds: torch.Tensor, clip: torch.Tensor | None = None
    ) -> FaceDuals:
        """Multipliers of the piece ``pattern`` plus ``seeds`` ``(n, K)`` on the kink coordinates
        (the face multipliers): the slope is the piece's gradient plus ``J^T seeds``. With ``clip``
        (``(n, K)`` bool) those coordinates' multipliers are projected into the optimal dual set,
        which makes the result dual feasible."""
        raise NotImplementedError

    def face_jvp(self, st: Any, pattern: torch.Tensor, dx: torch.Tensor) -> torch.Tensor:
        """``(n, K)`` change of the kink coordinates along ``dx`` ``(n, d)`` on the piece."""
        raise NotImplementedError

    def face_rows(self, st: Any, pattern: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """``(n, k, d)`` gradients on the piece of the kink coordinates ``index`` ``(n, k)``."""
        raise NotImplementedError

    def face_curvature(self, st: Any, pattern: torch.Tensor) -> torch.Tensor | None:
        """``Q`` ``(n, r, d)`` with the piece's Hessian ``Q^T Q`` (``r = 0`` when it is locally
        affine), or ``None`` when the block offers only :meth:`face_hvp` (matrix-free)."""
        raise NotImplementedError

    def face_hvp(self, st: Any, pattern: torch.Tensor, w: torch.Tensor) -> torch.Tensor | None:
        """``(n, d)`` the piece's Hessian times ``w``, or ``None`` when zero."""
        raise NotImplementedError

    def exact_cone(self, st: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
        """Optional: a block that is one cone ``lam ||A x + d||`` returns ``(A (k, d), u (n, k),
        lam (n,))`` at its state, so that face Newton can minimise its model with the cone kept
        exact (a trust-region subproblem in the cone's multiplier); ``None`` otherwise."""
        return None

    def face_crossing(self, st: Any, pattern: torch.Tensor, dk: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Whether the step changing the kink coordinates by ``dk`` ``(n, K)`` crosses each kink,
        and the fraction of the step at which it does (``(n, K)`` each; 1 where it does not)."""
        raise NotImplementedError

    def release_group(self, local: torch.Tensor) -> torch.Tensor:
        """``(n, K)`` bool: the coordinates released together with coordinate ``local`` ``(n,)``
        (a ReLU unit alone; every coordinate of a norm block)."""
        raise NotImplementedError

    def gap_slack(self, st: Any, mult: Any) -> torch.Tensor:
        """``(n,)`` ``f_b(x) - (dual term at mult)`` ``>= 0`` for dual-feasible ``mult``: the part
        of a duality gap the block is responsible for."""
        raise NotImplementedError

    def numpy_weights(self) -> dict[str, Any]:
        """Effective weights as float64 NumPy arrays (for the lifting)."""
        raise NotImplementedError

    # ------------------------------------------------------------------ primal-dual splitting
    # Optional: what :func:`socicnn.inference.minimize` with ``method="primal_dual"`` asks. A
    # block is ``h(K (x, w) + e)`` with its own auxiliary primal variables ``w`` (a lifting; none
    # for most blocks), dual variables ``y`` and a linear cost; or a smooth function of ``x``.
    # Duals and auxiliaries are lists of ``(n, .)`` tensors.
    def pd_aux(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Starting auxiliary primal variables at ``x`` (feasible for them); none by default."""
        return []

    def pd_project_aux(self, aux: list[torch.Tensor]) -> list[torch.Tensor]:
        """Projection of the auxiliaries onto their simple set."""
        return aux

    def pd_affine(self, x: torch.Tensor, aux: list[torch.Tensor]) -> list[torch.Tensor]:
        """The affine image ``K (x, w) + e`` the dual variables price (one tensor per dual)."""
        raise NotImplementedError(
            f"{type(self).__name__} has no primal-dual splitting; use minimize(..., method='face_newton')"
        )

    def pd_adjoint(self, dual: list[torch.Tensor]) -> tuple[torch.Tensor | None, list[torch.Tensor]]:
        """``K^T y``: the parts on ``x`` (``None``: zero) and on the auxiliaries."""
        return self.dual_slope(dual[0]), []

    def pd_prox(self, w: list[torch.Tensor], sigma: list[torch.Tensor]) -> list[torch.Tensor]:
        """``prox`` of ``h*`` at ``w`` in the metric of the dual steps ``sigma`` (shaped like ``w``,
        as :meth:`pd_dual_steps` returns them): the dual step."""
        raise NotImplementedError

    def pd_dual_steps(self, sigma: list[torch.Tensor]) -> list[torch.Tensor]:
        """Dual step sizes the block's :meth:`pd_prox` is exact for, at most ``sigma`` (default:
        ``sigma``; a cone's ball projection needs one step per cone)."""
        return sigma

    def pd_cost(self, x: torch.Tensor, aux: list[torch.Tensor]) -> tuple[torch.Tensor | None, list | None]:
        """Gradient of the block's own cost (linear in the lifting, or a smooth block's gradient)
        on ``x`` and on the auxiliaries (``None``: zero)."""
        return None, None

    def pd_abs_sums(self, x: torch.Tensor, aux: list[torch.Tensor]) -> tuple[list, torch.Tensor | None, list]:
        """Row sums of ``|K|`` per dual tensor, and its column sums on ``x`` and on each auxiliary
        (``(n, .)`` each; for diagonal preconditioning). Default: the block's ``_pd_map``
        (``M`` dense ``(k, d)`` or a :class:`~socicnn.convmaps.ConvMap`)."""
        rows, cols = abs_sums(self._pd_map())
        n = x.shape[0]
        return [rows.to(x.dtype).expand(n, -1)], cols.to(x.dtype).expand(n, -1), []

    def _pd_map(self):
        """The linear map ``K`` of an affine block (a dense ``(k, d)`` matrix or a map with
        ``abs_sums()``), for the default :meth:`pd_abs_sums`."""
        raise NotImplementedError(
            f"{type(self).__name__} has no primal-dual splitting; use minimize(..., method='face_newton')"
        )

    def pd_multipliers(self, x: torch.Tensor, dual: list[torch.Tensor]) -> Any:
        """Dual-feasible multipliers (this block's format) from the dual iterate: the projection
        of ``y`` onto the dual set, so that the affine minorant they define bounds ``f_b``."""
        return self.pd_prox(dual, [torch.zeros(()) for _ in dual])[0]


class SmoothBlock(ConvexBlock, abstract=True):
    """A block without kinks: its kink methods are the empty ones."""

    def kinks(self, st: Any) -> torch.Tensor:
        x = self._state_rows(st)
        return x.new_zeros(x.shape[0], 0)

    def _state_rows(self, st: Any) -> torch.Tensor:
        """A ``(n, ...)`` tensor of the state, to read ``n``, dtype and device from."""
        raise NotImplementedError

    def margin(self, st: Any) -> None:
        return None

    def face_pattern(self, st: Any, tied: torch.Tensor) -> torch.Tensor:
        return tied.to(self._state_rows(st).dtype)

    def face_duals(self, st, pattern, seeds, clip=None) -> FaceDuals:
        mult = self.multipliers(st)
        return FaceDuals(
            self.dual_slope(mult), mult, seeds.new_zeros(seeds.shape), seeds.new_zeros(seeds.shape, dtype=torch.bool)
        )

    def face_jvp(self, st, pattern, dx):
        return dx.new_zeros(dx.shape[0], 0)

    def face_rows(self, st, pattern, index):
        x = self._state_rows(st)
        return x.new_zeros(index.shape[0], index.shape[1], self.in_dim)

    def face_crossing(self, st, pattern, dk):
        return dk.new_zeros(dk.shape, dtype=torch.bool), torch.ones_like(dk)

    def release_group(self, local):
        return local.new_zeros(local.shape[0], 0, dtype=torch.bool)

    def gap_slack(self, st, mult):
        return self._state_rows(st).new_zeros(self._state_rows(st).shape[0])


def _transformed(t: torch.Tensor) -> bool:
    from ._checks import is_transformed

    return is_transformed(t)


def per_row(t: torch.Tensor, shape: tuple[int, ...]) -> bool:
    """Whether datum ``t`` carries one value per row (a leading dimension beyond ``shape``)."""
    return t.ndim > len(shape)


def dense_affine_parameters(
    in_dim: int,
    rows: int,
    generator: torch.Generator | None,
    dtype: torch.dtype | None,
    device: torch.device | str | None,
) -> tuple[nn.Parameter, nn.Parameter, nn.Parameter]:
    """A block's map ``M`` ``(rows, in_dim)`` with entries ``N(0, 1 / in_dim)``, its offset ``m0``
    ``(rows,)`` with entries ``N(0, 0.01)`` (one float64 draw from ``generator``, then cast) and
    its raw weight ``1``: the initial ``(M, m0, weight_raw)`` of the dense quadratic and norm blocks."""
    kw = {"dtype": dtype or torch.get_default_dtype(), "device": device}
    g = torch.randn(rows * in_dim + rows, generator=generator, dtype=torch.float64)
    M = nn.Parameter((g[: rows * in_dim].view(rows, in_dim) * in_dim**-0.5).to(**kw))
    return M, nn.Parameter((0.1 * g[rows * in_dim :]).to(**kw)), nn.Parameter(torch.ones((), **kw))


def affine_image(x: torch.Tensor, M: torch.Tensor, m0: torch.Tensor | None = None) -> torch.Tensor:
    """``x M^T + m0`` ``(N, k)`` for points ``x`` ``(N, d)``, ``M`` ``(k, d)``, ``m0`` ``(k,)``,
    ``(N, k)`` (per-row offsets) or ``None``.

    With a shared offset it is computed as the transpose of ``M x^T + m0`` in a feature-major
    ``(k, N)`` buffer: for thin maps MKL runs this orientation several times faster on the
    project's CPUs, and reductions over the ``k`` features then read contiguous memory.
    """
    if m0 is not None and m0.ndim == 2:
        return torch.addmm(m0, x, M.T)
    return (M @ x.T if m0 is None else torch.addmm(m0[:, None], M, x.T)).T


def abs_sums(M) -> tuple[torch.Tensor, torch.Tensor]:
    """Row and column sums of ``|M|`` for a dense ``(k, d)`` matrix or a map with ``abs_sums()``."""
    if isinstance(M, torch.Tensor):
        A = M.detach().abs()
        return A.sum(1), A.sum(0)
    return M.abs_sums()


def project_balls(cones: torch.Tensor, radius: torch.Tensor, dim: int) -> torch.Tensor:
    """Each cone's coordinates (along ``dim``) scaled into the ball of ``radius`` (broadcast
    against the cones' norms taken with ``dim`` kept): the dual set of ``radius ||.||``. (The norms
    are spelled out: ``vector_norm`` over a short strided axis, such as a convolution's channel
    groups, is tens of times slower on CPU.)"""
    norms = cones.square().sum(dim, keepdim=True).sqrt()
    return cones * torch.where(norms > radius, radius / norms.clamp(min=torch.finfo(norms.dtype).tiny), 1.0)


def to_numpy(t: torch.Tensor | None) -> np.ndarray | None:
    """Detach a tensor to a float64 NumPy array (``None`` passes through)."""
    if t is None:
        return None
    return t.detach().to("cpu", torch.float64).numpy()
