"""The ICNN backbone ``f_R(x) = c^T z_L + v^T x + b_0`` (MATH.md §1-3).

``a_1 = W_1 x + b_1``, ``a_l = W_l x + U_l z_{l-1} + b_l`` (the ``W_l x`` passthrough is
optional for ``l >= 2``), ``z_l = act(a_l)``. Convexity needs ``U_l >= 0`` and ``c >= 0``:
they are stored as unconstrained raw parameters and used through ``abs``, so every backbone
is convex whatever an optimiser does, and ``abs`` is the identity on the effective weights,
so ``from_weights`` round-trips exactly.

With ``activation="relu"`` the backbone is the value function of the LP of MATH.md §2 and its
canonical multipliers are ``nu_L = c * 1[a_L > tol]``, ``nu_l = (U_{l+1}^T nu_{l+1}) * 1[a_l > tol]``.
``activation="softplus"`` gives the smooth softplus-ICNN baseline (forward value and gradient
readout only; it is not LP/SOCP-representable).
"""

from __future__ import annotations

from dataclasses import dataclass

import cvxpy as cp
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .blocks import BlockLift, ConvexBlock, to_numpy

ACTIVATIONS = ("relu", "softplus")


@dataclass
class BackboneState:
    """Pre-activations ``a`` (list of ``(N, m_l)``) and canonical multipliers ``nu``."""

    a: list[torch.Tensor]
    nu: list[torch.Tensor]


class Backbone(ConvexBlock):
    """Input-convex backbone with nonnegative ``U`` and ``c`` by construction.

    Args:
        in_dim: input dimension ``d``.
        hidden: widths ``(m_1, ..., m_L)``.
        passthrough: whether layers ``l >= 2`` see the input through ``W_l x``.
        activation: ``"relu"`` (LP-representable) or ``"softplus"``.
        generator: random generator for the initialisation (CPU).
        dtype, device: of the parameters.
    """

    kind = "nu"

    def __init__(
        self,
        in_dim: int,
        hidden: tuple[int, ...],
        passthrough: bool = True,
        activation: str = "relu",
        *,
        generator: torch.Generator | None = None,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        self.in_dim = in_dim
        self.hidden = tuple(hidden)
        self.passthrough = passthrough
        self.activation = activation

        def randn(*shape: int, scale: float) -> torch.Tensor:
            t = torch.randn(shape, generator=generator, dtype=torch.float64) * scale
            return t.to(dtype=dtype or torch.get_default_dtype(), device=device)

        d = in_dim
        n_w = len(self.hidden) if passthrough else 1
        self.W = nn.ParameterList(
            [nn.Parameter(randn(m, d, scale=d**-0.5)) for m in self.hidden[:n_w]]
        )
        self.U_raw = nn.ParameterList(
            [
                nn.Parameter(randn(m, m_prev, scale=m_prev**-0.5))
                for m_prev, m in zip(self.hidden[:-1], self.hidden[1:], strict=True)
            ]
        )
        # Centre layers l >= 2: U z has a positive mean (U >= 0, z >= 0), about
        # 0.4 * rowsum(U) when the previous pre-activations are roughly standard normal.
        biases = [randn(self.hidden[0], scale=0.5)]
        for U in self.U_raw:
            biases.append(randn(U.shape[0], scale=0.5) - 0.4 * U.detach().abs().sum(1))
        self.b = nn.ParameterList([nn.Parameter(t) for t in biases])
        m_last = self.hidden[-1]
        self.c_raw = nn.Parameter(randn(m_last, scale=m_last**-0.5))
        self.v = nn.Parameter(randn(d, scale=d**-0.5))
        self.b0 = nn.Parameter(randn(scale=0.0))

    # ----------------------------------------------------------------- weights
    def W_eff(self, l: int) -> torch.Tensor | None:
        """``W_l`` (0-based ``l``), or ``None`` for ``l >= 1`` without passthrough."""
        return self.W[l] if l < len(self.W) else None

    def U_eff(self, l: int) -> torch.Tensor | None:
        """``U_l >= 0`` (0-based ``l``); ``None`` for the first layer."""
        return None if l == 0 else self.U_raw[l - 1].abs()

    @property
    def c(self) -> torch.Tensor:
        return self.c_raw.abs()

    def _act(self, a: torch.Tensor) -> torch.Tensor:
        return torch.relu(a) if self.activation == "relu" else F.softplus(a)

    def _require_relu(self, what: str) -> None:
        if self.activation != "relu":
            raise NotImplementedError(
                f"{what} needs a piecewise-linear (ReLU) backbone; this model uses "
                f"activation={self.activation!r}"
            )

    # ----------------------------------------------------------------- forward
    def preactivations(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Pre-activations ``a_l`` at ``x`` ``(N, d)``: a list of ``(N, m_l)``."""
        a_list: list[torch.Tensor] = []
        z = None
        for l in range(len(self.hidden)):
            a = self.b[l]
            W = self.W_eff(l)
            if W is not None:
                a = a + x @ W.T
            if z is not None:
                a = a + z @ self.U_eff(l).T
            a_list.append(a)
            z = self._act(a)
        return a_list

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self._act(self.preactivations(x)[-1])
        return z @ self.c + x @ self.v + self.b0

    # ----------------------------------------------------------------- readout
    def state(self, x: torch.Tensor, tol: float = 0.0) -> BackboneState:
        a_list = self.preactivations(x)
        nu: list[torch.Tensor] = [None] * len(a_list)  # type: ignore[list-item]
        upper = self.c.expand_as(a_list[-1])
        for l in range(len(a_list) - 1, -1, -1):
            if self.activation == "relu":
                nu[l] = upper * (a_list[l] > tol).to(upper.dtype)
            else:
                nu[l] = upper * torch.sigmoid(a_list[l])
            if l > 0:
                upper = nu[l] @ self.U_eff(l)
        return BackboneState(a=a_list, nu=nu)

    def multipliers(self, st: BackboneState) -> list[torch.Tensor]:
        return st.nu

    def slope(self, st: BackboneState) -> torch.Tensor:
        g = self.v.expand(st.nu[0].shape[0], -1)
        for l, nu in enumerate(st.nu):
            W = self.W_eff(l)
            if W is not None:
                g = g + nu @ W
        return g

    def hessian(self, st: BackboneState) -> None:
        self._require_relu("the local Hessian readout")
        return None  # locally affine away from ties

    def hvp(self, st: BackboneState, w: torch.Tensor) -> None:
        self._require_relu("the Hessian-vector product readout")
        return None

    def directional(self, st: BackboneState, delta: torch.Tensor, tol: float) -> torch.Tensor:
        self._require_relu("the exact directional derivative")
        dz = None
        for l, a in enumerate(st.a):
            da = torch.zeros_like(a)
            W = self.W_eff(l)
            if W is not None:
                da = da + delta @ W.T
            if dz is not None:
                da = da + dz @ self.U_eff(l).T
            active = (a > tol).to(a.dtype)
            tied = (a.abs() <= tol).to(a.dtype)
            dz = active * da + tied * torch.relu(da)
        return dz @ self.c + delta @ self.v

    def margin(self, st: BackboneState) -> torch.Tensor:
        return torch.cat([a.abs() for a in st.a], dim=1).amin(dim=1)

    def dual_value(self, x: torch.Tensor, mult: list[torch.Tensor]) -> torch.Tensor:
        val = x @ self.v + self.b0
        for l, nu in enumerate(mult):
            aff = self.b[l].expand_as(nu)
            W = self.W_eff(l)
            if W is not None:
                aff = aff + x @ W.T
            val = val + (nu * aff).sum(-1)
        return val

    def dual_residual(self, mult: list[torch.Tensor]) -> torch.Tensor:
        upper = self.c.expand_as(mult[-1])
        worst = torch.zeros(mult[0].shape[0], dtype=mult[0].dtype, device=mult[0].device)
        for l in range(len(mult) - 1, -1, -1):
            nu = mult[l]
            viol = torch.maximum(torch.relu(-nu), torch.relu(nu - upper)).amax(dim=1)
            worst = torch.maximum(worst, viol)
            if l > 0:
                upper = nu @ self.U_eff(l)
        return worst

    # ----------------------------------------------------------------- lifting
    def numpy_weights(self) -> dict:
        L = len(self.hidden)
        return {
            "W": [to_numpy(self.W_eff(l)) for l in range(L)],
            "U": [to_numpy(self.U_eff(l)) for l in range(L)],
            "b": [to_numpy(self.b[l]) for l in range(L)],
            "c": to_numpy(self.c),
            "v": to_numpy(self.v),
            "b0": float(to_numpy(self.b0)),
        }

    def lift(self, x) -> BlockLift:
        """LP of MATH.md §2: ``min c^T z_L + v^T x + b0`` s.t. ``z_l >= a_l(x, z_{l-1})``, ``z >= 0``."""
        self._require_relu("the LP lifting")
        w = self.numpy_weights()
        zs = [cp.Variable(m) for m in self.hidden]
        cover: list[cp.Constraint] = []
        for l, z in enumerate(zs):
            rhs = w["b"][l]
            if w["W"][l] is not None:
                rhs = rhs + w["W"][l] @ x
            if l > 0:
                rhs = rhs + w["U"][l] @ zs[l - 1]
            cover.append(z >= rhs)
        constraints = cover + [z >= 0 for z in zs]
        objective = w["c"] @ zs[-1] + w["v"] @ x + w["b0"]

        def read() -> list[np.ndarray]:
            return [np.asarray(con.dual_value, dtype=float).reshape(-1) for con in cover]

        return BlockLift(objective, constraints, read)
