"""Parametric SOC-ICNNs ``f(x, theta)``: convex in the decision ``x`` for every context ``theta``.

A :class:`ParametricSOCICNN` is an :class:`~socicnn.model.SOCICNN` of ``x`` (the ``base``) whose
block data (see :mod:`socicnn.blocks`) are functions of the context. Two context modes:

- ``"bias"``: ``theta`` enters every affine offset only, linearly: the backbone offsets
  ``b_l(theta) = b_l + P_l theta`` and ``b_0(theta)``, the quadratic blocks' ``e(theta)`` and the
  norm blocks' ``d(theta)`` (a restricted partially input-convex network; ``alpha``, ``lam``
  and the z-path weights do not depend on ``theta``).
- ``"picnn"``: the offsets read features ``u = [theta, tanh(G theta + g)]`` of a context trunk,
  the linear term ``v(theta)`` depends on them too, and every nonnegative scaling is modulated by
  a nonnegative function of the context, ``alpha(theta) = alpha * softplus(a^T u + a_0)``,
  ``lam(theta) = lam * softplus(.)`` and the z-path scalings ``s_l(theta) = softplus(S_l u +
  s_l) >= 0`` (in the spirit of the partially input-convex networks of :cite:`amos2017icnn`).

Either way ``f(., theta)`` is an SOC-ICNN of ``x`` (nonnegative z-path weights and scalings,
convex nondecreasing activations), so ``pm.at(theta)`` is an ordinary model that lifting,
readout and inference accept unchanged: for a batch of contexts the data are per row, and the
lifting's data are ``cp.Parameter`` objects (one compiled problem for every context).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ._checks import check_choice
from .model import SOCICNN, ContextualModel

__all__ = ["CONTEXT_MODES", "ParametricSOCICNN"]

CONTEXT_MODES = ("bias", "picnn")
_SOFTPLUS_ONE = math.log(math.e - 1.0)  # softplus(_SOFTPLUS_ONE) = 1


class ParametricSOCICNN(ContextualModel):
    """``f(x, theta)``, an SOC-ICNN of ``x`` whose offsets (and, in ``"picnn"`` mode, scalings)
    depend on the context ``theta`` (see the module docstring).

    Args:
        in_dim: decision dimension ``d``.
        context_dim: context dimension ``p``.
        hidden, quad_dims, norm_dims, passthrough, activation: the base model's structure, as
            :class:`~socicnn.model.SOCICNN` (the five families are configurations of these).
        context: ``"bias"`` or ``"picnn"``.
        context_hidden: width of the context trunk in ``"picnn"`` mode (``0``: the features are
            ``theta`` itself); must be 0 in ``"bias"`` mode.
        dtype, device, seed: as :class:`~socicnn.model.SOCICNN` (``seed`` also seeds the context maps).

    ``pm(x, theta)`` maps ``(N, d), (N, p) -> (N,)``; ``pm.at(theta)`` is a model of ``x``.
    """

    def __init__(
        self,
        in_dim: int,
        context_dim: int,
        hidden: Sequence[int] = (64, 64),
        quad_dims: Sequence[int] = (),
        norm_dims: Sequence[int] = (),
        context: str = "bias",
        activation: str = "relu",
        *,
        context_hidden: int | None = None,
        passthrough: bool = True,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
        seed: int | None = None,
    ) -> None:
        super().__init__()
        check_choice("context", context, CONTEXT_MODES)
        if isinstance(context_dim, bool) or not isinstance(context_dim, int) or context_dim <= 0:
            raise ValueError(f"context_dim must be a positive integer, got {context_dim!r}")
        if context_hidden is None:
            context_hidden = 32 if context == "picnn" else 0
        if isinstance(context_hidden, bool) or not isinstance(context_hidden, int) or context_hidden < 0:
            raise ValueError(f"context_hidden must be an integer >= 0, got {context_hidden!r}")
        if context == "bias" and context_hidden:
            raise ValueError("context='bias' uses theta itself as the offsets' input: context_hidden must be 0")
        self.base = SOCICNN(
            in_dim, hidden, quad_dims, norm_dims, passthrough, activation, dtype=dtype, device=device, seed=seed
        )
        self.context_dim = context_dim
        self.context = context
        self.context_hidden = context_hidden
        dtype = self.base.dtype
        device = self.base.device
        gen = torch.Generator().manual_seed(0 if seed is None else int(seed) + 7919)

        def init(*shape: int, scale: float) -> nn.Parameter:
            u = 2 * torch.rand(shape, generator=gen, dtype=torch.float64) - 1
            return nn.Parameter((scale * u).to(dtype=dtype, device=device))

        p = context_dim
        if context_hidden:
            self.trunk_W = init(context_hidden, p, scale=p**-0.5)
            self.trunk_b = init(context_hidden, scale=p**-0.5)
        k = p + context_hidden
        # One map per datum: an offset gets base + u @ M, a scaling base * softplus(u @ M + s).
        self.maps = nn.ParameterDict()
        self.shifts = nn.ParameterDict()
        self._plan: list[list[tuple[str, str, tuple[int, ...], bool]]] = []
        for i, block in enumerate(self.base.blocks()):
            plan = []
            nonneg = block.nonnegative_data
            for name, shape in block.data_shapes.items():
                scaling = any(name == q or name.startswith(q + ".") for q in nonneg)
                if context == "bias" and (scaling or name == "v"):
                    continue
                key = f"{i}_{name.replace('.', '_')}"
                size = math.prod(shape)
                self.maps[key] = init(k, size, scale=(0.1 if scaling else 1.0) * k**-0.5)
                if scaling:
                    self.shifts[key] = nn.Parameter(torch.full((size,), _SOFTPLUS_ONE, dtype=dtype, device=device))
                plan.append((key, name, shape, scaling))
            self._plan.append(plan)

    def features(self, context: torch.Tensor) -> torch.Tensor:
        """The features ``u`` ``(N, k)`` the data maps read: ``theta``, plus the trunk's in ``"picnn"`` mode."""
        if not self.context_hidden:
            return context
        return torch.cat([context, torch.tanh(torch.addmm(self.trunk_b, context, self.trunk_W.T))], dim=1)

    def block_data(self, context: torch.Tensor) -> list[dict[str, torch.Tensor]]:
        u = self.features(context)
        n = context.shape[0]
        out = []
        for block, plan in zip(self.base.blocks(), self._plan, strict=True):
            own = block.default_data()
            data = {}
            for key, name, shape, scaling in plan:
                lin = u @ self.maps[key]
                if scaling:
                    s = F.softplus(lin + self.shifts[key]).reshape(n, *shape)
                    data[name] = s if name not in own else own[name] * s
                else:
                    data[name] = own[name] + lin.reshape(n, *shape)
            out.append(data)
        return out

    def num_parameters(self) -> int:
        """Trainable scalars (the base model's and the context maps'; frozen weights excluded)."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def extra_repr(self) -> str:
        return f"context={self.context!r}, context_dim={self.context_dim}, context_hidden={self.context_hidden}"
