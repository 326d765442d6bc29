"""The interface every convex block of an SOC-ICNN answers.

An SOC-ICNN is a sum of blocks (MATH.md §1): the ReLU backbone, quadratic blocks and norm
blocks. Each block is the one place that knows, for its own term of ``f``:

- its value ``forward(x)``;
- its lifting: CVXPY variables and cone constraints whose optimal value is the block's value
  (``lift``), and how to read the solver's dual variables back in the model's convention;
- its canonical dual multiplier at a batch of points (``state``) and what that multiplier
  contributes to the gradient, Hessian, Hessian-vector product and directional derivative;
- its dual objective and dual feasibility, so primal = dual can be checked for any multiplier.

``socicnn.lifting`` and ``socicnn.readout`` only sum what the blocks say; they never branch
on the model family.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn


@dataclass
class BlockLift:
    """A block's part of the lifted conic program.

    Attributes:
        objective: CVXPY expression, the block's term of the objective.
        constraints: list of CVXPY constraints (linear and cone constraints).
        read_multipliers: callable, after a solve, returning the block's optimal dual
            multipliers in the model's convention (``nu`` list, ``p`` or ``r`` array).
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


class ConvexBlock(nn.Module):
    """Base class of the blocks whose sum is an SOC-ICNN.

    ``kind`` names what the block's multipliers are called in the readout: ``"nu"`` for the
    backbone (a list over layers), ``"p"`` for quadratic blocks and ``"r"`` for norm blocks.
    ``state`` objects are block-specific; the other methods accept what ``state`` returned.
    """

    kind: str = ""
    #: True when the block is piecewise linear (zero Hessian away from ties), so Hessians and
    #: HVPs need not evaluate its state.
    piecewise_linear: bool = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, d) -> (N,)
        raise NotImplementedError

    def state(self, x: torch.Tensor, tol: float = 0.0) -> Any:
        """Affine images and canonical multipliers at the points ``x`` of shape ``(N, d)``."""
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

    def optimal_dual_set(self, st: Any, tol: float) -> DualSetLift:
        """The block's optimal multipliers at one point (``st`` from ``state`` with ``N = 1``)
        as CVXPY constraints, and their contribution to ``G`` as a CVXPY expression."""
        raise NotImplementedError

    def sample_optimal_duals(self, st: Any, n: int, tol: float, generator: torch.Generator) -> Any:
        """``n`` random optimal multipliers (batched) at one point (``st`` with ``N = 1``)."""
        raise NotImplementedError

    def curvature_factor(self) -> torch.Tensor | None:
        """``F`` ``(k, d)`` when the block's Hessian is ``F^T F`` at every ``x`` (a constant), else
        ``None``. Hessian-vector products of such blocks need no state and can be summed over
        blocks before they touch the batch."""
        return None

    def hessian(self, st: Any, out: torch.Tensor | None = None) -> torch.Tensor | None:
        """Contribution ``(N, d, d)`` to the local Hessian, or ``None`` when it is zero.
        With ``out`` ``(N, d, d)``, the contribution is added to ``out`` in place (no
        ``(N, d, d)`` temporaries) and ``out`` is returned."""
        raise NotImplementedError

    def hvp(self, st: Any, w: torch.Tensor) -> torch.Tensor | None:
        """Contribution ``(N, d)`` to the Hessian-vector product, or ``None`` when zero."""
        raise NotImplementedError

    def directional(self, st: Any, delta: torch.Tensor, tol: float) -> torch.Tensor:
        """Contribution ``(N,)`` to the exact one-sided directional derivative."""
        raise NotImplementedError

    def margin(self, st: Any) -> torch.Tensor | None:
        """Distance ``(N,)`` to this block's degeneracy set, or ``None`` if it has none."""
        raise NotImplementedError

    def dual_value(self, x: torch.Tensor, mult: Any) -> torch.Tensor:
        """The block's term ``(N,)`` of the dual objective at multipliers ``mult``."""
        raise NotImplementedError

    def dual_residual(self, mult: Any) -> torch.Tensor:
        """Largest violation ``(N,)`` of the block's dual feasibility constraints by ``mult``."""
        raise NotImplementedError

    def lift(self, x: Any) -> BlockLift:
        """The block as CVXPY variables and constraints, for a CVXPY expression ``x``."""
        raise NotImplementedError

    def numpy_weights(self) -> dict[str, Any]:
        """Effective weights as float64 NumPy arrays (for the lifting)."""
        raise NotImplementedError


def affine_image(x: torch.Tensor, M: torch.Tensor, m0: torch.Tensor | None = None) -> torch.Tensor:
    """``x M^T + m0`` ``(N, k)`` for points ``x`` ``(N, d)``, ``M`` ``(k, d)``, ``m0`` ``(k,)`` or ``None``.

    Computed as the transpose of ``M x^T + m0`` in a feature-major ``(k, N)`` buffer. For thin
    maps (small ``k`` and ``d``, large ``N``) MKL runs this orientation up to 6x faster on the
    project's CPUs (at ``k = d = 5``), and about 1.2-2x for the readout's ``(N, 64) x (64, 20)``
    products; reductions over the ``k`` features then read contiguous memory.
    """
    return (M @ x.T if m0 is None else torch.addmm(m0[:, None], M, x.T)).T


def to_numpy(t: torch.Tensor | None) -> np.ndarray | None:
    """Detach a tensor to a float64 NumPy array (``None`` passes through)."""
    if t is None:
        return None
    return t.detach().to("cpu", torch.float64).numpy()

