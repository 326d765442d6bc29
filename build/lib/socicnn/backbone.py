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

from .blocks import BlockLift, ConvexBlock, DualSetLift, affine_image, to_numpy

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

        init = _initial_weights(in_dim, self.hidden, passthrough, activation, generator)

        def param(t: torch.Tensor) -> nn.Parameter:
            return nn.Parameter(t.to(dtype=dtype or torch.get_default_dtype(), device=device))

        self.W = nn.ParameterList([param(t) for t in init["W"]])
        self.U_raw = nn.ParameterList([param(t) for t in init["U"]])
        self.b = nn.ParameterList([param(t) for t in init["b"]])
        self.c_raw = param(init["c"])
        self.v = param(init["v"])
        self.b0 = param(init["b0"])

    @property
    def piecewise_linear(self) -> bool:
        return self.activation == "relu"

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
    def _preactivation(self, l: int, x: torch.Tensor, z: torch.Tensor | None, readout: bool) -> torch.Tensor:
        """``a_l = W_l x + U_l z_{l-1} + b_l`` ``(N, m_l)`` (0-based ``l``; ``z`` is ``None`` for ``l = 0``).

        ``readout=True`` is for the readout, which no autograd or ``torch.func`` transform traces:
        ``a_l`` is then a feature-major buffer (see ``affine_image``; every product of the readout
        then writes feature-major outputs, the orientation CPU BLAS runs fastest here) and
        ``U_l z_{l-1}`` is accumulated into it in place (``vmap`` has no batching rule for that).
        """
        W = self.W_eff(l)
        if readout:
            if W is None:
                return affine_image(z, self.U_eff(l), self.b[l])
            a = affine_image(x, W, self.b[l])
            return a if z is None else a.addmm_(z, self.U_eff(l).T)
        a = self.b[l] if W is None else torch.addmm(self.b[l], x, W.T)
        return a if z is None else torch.addmm(a, z, self.U_eff(l).T)

    def preactivations(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Pre-activations ``a_l`` at ``x`` ``(N, d)``: a list of ``(N, m_l)``."""
        return self._preactivations(x, readout=False)

    def _preactivations(self, x: torch.Tensor, readout: bool) -> list[torch.Tensor]:
        a_list: list[torch.Tensor] = []
        z = None
        for l in range(len(self.hidden)):
            a_list.append(self._preactivation(l, x, z, readout))
            if l + 1 < len(self.hidden):  # the last layer's activation is not an input to anything
                z = self._act(a_list[-1])
        return a_list

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = None
        for l in range(len(self.hidden)):
            z = self._act(self._preactivation(l, x, z, readout=False))
        return torch.addmv(torch.addmv(self.b0, x, self.v), z, self.c)

    # ----------------------------------------------------------------- readout
    def state(self, x: torch.Tensor, tol: float = 0.0) -> BackboneState:
        a_list = self._preactivations(x, readout=True)
        nu: list[torch.Tensor] = [None] * len(a_list)  # type: ignore[list-item]
        upper = self.c.expand_as(a_list[-1])
        for l in range(len(a_list) - 1, -1, -1):
            if self.activation == "relu":
                # upper_l = U_{l+1}^T nu_{l+1} is a fresh buffer for l < L: gate it in place.
                nu[l] = _gate(upper, a_list[l], tol, in_place=l < len(a_list) - 1)
            else:
                nu[l] = upper * torch.sigmoid(a_list[l])
            if l > 0:
                upper = affine_image(nu[l], self.U_eff(l).T)
        return BackboneState(a=a_list, nu=nu)

    def multipliers(self, st: BackboneState) -> list[torch.Tensor]:
        return st.nu

    def dual_slope(self, mult: list[torch.Tensor]) -> torch.Tensor:
        g = affine_image(mult[0], self.W[0].T, self.v)
        for l in range(1, len(mult)):
            W = self.W_eff(l)
            if W is not None:
                g.addmm_(mult[l], W)
        return g

    def optimal_dual_set(self, st: BackboneState, tol: float) -> DualSetLift:
        """Optimal ``nu`` at one point: ``nu_l = upper_l`` on active units, ``0`` on inactive
        ones, ``0 <= nu_l <= upper_l`` on ties, ``upper_l = U_{l+1}^T nu_{l+1}``, ``upper_L = c``:
        a polyhedron in all ``nu`` jointly."""
        self._require_relu("the optimal dual set")
        w = self.numpy_weights()
        nus = [cp.Variable(m) for m in self.hidden]
        constraints: list[cp.Constraint] = []
        upper = w["c"]
        for l in range(len(self.hidden) - 1, -1, -1):
            a = to_numpy(st.a[l][0])
            active, tied, inactive = (np.flatnonzero(mask) for mask in (a > tol, np.abs(a) <= tol, a < -tol))
            if active.size:
                constraints.append(nus[l][active] == upper[active])
            if inactive.size:
                constraints.append(nus[l][inactive] == 0)
            if tied.size:
                constraints += [nus[l][tied] >= 0, nus[l][tied] <= upper[tied]]
            if l > 0:
                upper = w["U"][l].T @ nus[l]
        slope = w["v"] + sum(w["W"][l].T @ nus[l] for l in range(len(self.hidden)) if w["W"][l] is not None)
        return DualSetLift(constraints, slope)

    def sample_optimal_duals(
        self, st: BackboneState, n: int, tol: float, generator: torch.Generator
    ) -> list[torch.Tensor]:
        """Random optimal ``nu``, chosen top-down: a tied unit takes ``t * upper`` with ``t``
        uniform on ``[0, 1]``, or an endpoint ``t in {0, 1}`` (a vertex) with probability 1/2."""
        self._require_relu("sampling optimal duals")
        upper = self.c.expand(n, -1)
        nu: list[torch.Tensor] = [None] * len(st.a)  # type: ignore[list-item]
        for l in range(len(st.a) - 1, -1, -1):
            a = st.a[l][0]
            t = torch.rand(n, a.shape[0], generator=generator, dtype=torch.float64)
            snap = torch.rand(n, a.shape[0], generator=generator, dtype=torch.float64) < 0.5
            t = torch.where(snap, t.round(), t).to(a.dtype).to(a.device)
            weight = (a > tol).to(a.dtype) + (a.abs() <= tol).to(a.dtype) * t
            nu[l] = upper * weight
            if l > 0:
                upper = nu[l] @ self.U_eff(l)
        return nu

    def hessian(self, st: BackboneState, out: torch.Tensor | None = None) -> torch.Tensor | None:
        self._require_relu("the local Hessian readout")
        return out  # locally affine away from ties: adds nothing

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
        return torch.stack([a.abs().amin(dim=1) for a in st.a], 0).amin(dim=0)

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


def _gate(values: torch.Tensor, a: torch.Tensor, tol: float, in_place: bool = False) -> torch.Tensor:
    """``values * 1[a > tol]`` ``(N, m)`` (into ``values`` when ``in_place``). ReLU's backward
    kernel computes exactly this in one fused pass; the spelled-out product with a boolean mask
    is an order of magnitude slower on CPU (a mixed-dtype product)."""
    if in_place:
        return torch.ops.aten.threshold_backward.grad_input(values, a, tol, grad_input=values)
    return torch.ops.aten.threshold_backward(values, a, tol)


def _initial_weights(
    in_dim: int,
    hidden: tuple[int, ...],
    passthrough: bool,
    activation: str,
    generator: torch.Generator | None,
) -> dict:
    """Random initial weights (float64, CPU), normalised so that deep random nets stay well scaled.

    ``W_l ~ N(0, 1/d)``, ``U_l = |N(0, 1)|``, ``c = |N(0, 1/m_L)|``, ``v ~ N(0, 1/d)``. Then a
    data-free normalisation on synthetic inputs ``x ~ N(0, I)``: each row of ``U_l`` is scaled
    by a positive factor (at most 1) so that its term ``U_l z_{l-1}`` has at most unit spread over the inputs, and
    each unit is centred. Positive row scaling keeps ``U >= 0`` (convexity); without it the
    nonnegative sums grow by about ``sqrt(m)`` per layer and deep nets reach values of 1e5.
    """

    def randn(*shape: int, scale: float = 1.0) -> torch.Tensor:
        return torch.randn(shape, generator=generator, dtype=torch.float64) * scale

    d, L = in_dim, len(hidden)
    W = [randn(m, d, scale=d**-0.5) for m in hidden[: L if passthrough else 1]]
    U = [randn(m, m_prev).abs() for m_prev, m in zip(hidden[:-1], hidden[1:], strict=True)]
    b = [randn(m, scale=0.5) for m in hidden]
    act = torch.relu if activation == "relu" else F.softplus
    xs = randn(512, d)
    z = act(xs @ W[0].T + b[0])
    for l in range(1, L):
        uz = z @ U[l - 1].T
        spread = uz.std(0).clamp_min(1.0)  # only shrink: a row fed by dead units stays as drawn
        U[l - 1] = U[l - 1] / spread[:, None]
        a = uz / spread + (xs @ W[l].T if l < len(W) else 0.0)
        b[l] = b[l] - a.mean(0)
        z = act(a + b[l])
    return {
        "W": W,
        "U": U,
        "b": b,
        "c": randn(hidden[-1], scale=hidden[-1] ** -0.5),
        "v": randn(d, scale=d**-0.5),
        "b0": torch.zeros((), dtype=torch.float64),
    }
