"""Norm (conic) blocks ``f_N(x) = lam ||A x + d||_2`` with ``lam >= 0``.

Lifting: an epigraph variable ``t`` with ``||u|| <= t`` (a second-order cone), objective
``lam * t``, where ``u = A x + d``. Multiplier: ``r = lam u / ||u||`` when ``u != 0``; any
``||r|| <= lam`` is optimal at ``u = 0``, where the canonical selector takes ``r = 0``.
Slope ``A^T r``; local Hessian ``(lam / ||u||) A^T (I - u_hat u_hat^T) A`` where ``u != 0``.
Its kink is ``u = 0`` (all ``n`` coordinates of ``u`` at once), where the multiplier may be any
``||r|| <= lam``; inference steps onto that face by the linear constraints ``u + A dx = 0``, and
face Newton may keep the cone exact in its model. Per-row data: the offset ``d`` and the scaling
``lam >= 0``. It is the grouped norm block (:mod:`socicnn.grouped_norm`) with one cone of
dimension ``n``.
"""

from __future__ import annotations

import torch

from .grouped_norm import GroupedNormBlock

__all__ = ["NormBlock"]


class NormBlock(GroupedNormBlock):
    """``lam ||A x + d||`` with ``lam = |lam_raw| >= 0`` by construction.

    Args:
        in_dim: input dimension ``d``.
        dim: number of rows ``n`` of ``A``.
        generator, dtype, device: initialisation and placement.
    """

    def __init__(
        self,
        in_dim: int,
        dim: int,
        *,
        generator: torch.Generator | None = None,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__(in_dim, 1, dim, generator=generator, dtype=dtype, device=device)
        self.dim = dim
