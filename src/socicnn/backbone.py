"""ICNN backbones ``f_R(x) = c^T z_L + v^T x + b_0``.

``a_1 = W_1 x + b_1``, ``a_l = W_l x + U_l (s_l * z_{l-1}) + b_l`` (the ``W_l x`` passthrough is
optional for ``l >= 2``; the z-path scalings ``s_l >= 0`` are per-row data, the identity unless
bound), ``z_l = act(a_l)``. Convexity needs ``U_l >= 0``, ``c >= 0`` and a convex nondecreasing
activation (Amos, Xu and Kolter, 2017): ``U`` and ``c`` are stored as unconstrained raw
parameters and used through ``abs``, so every backbone is convex whatever an optimiser does, and
``abs`` is the identity on the effective weights, so ``from_weights`` round-trips exactly.

- :class:`ReLUBackbone` is the value function of the linear program
  ``min c^T z_L + v^T x + b_0`` s.t. ``z_l >= a_l(x, z_{l-1})``, ``z_l >= 0``; its canonical
  multipliers are ``nu_L = c * 1[a_L > tol]``, ``nu_l = (s_{l+1} * U_{l+1}^T nu_{l+1}) * 1[a_l > tol]``
  and its kinks are the pre-activations ``a``.
- :class:`SoftplusBackbone` is smooth: its multipliers ``nu_l = upper_l * sigmoid(a_l)`` are the
  maximisers of the conjugate form ``softplus(a) = max_{0<=t<=1} t a - H(t)`` (``H`` the negative
  binary entropy), and its Hessian is ``sum_t w_t softplus''(a_t) grad a_t grad a_t^T`` with
  the nonnegative adjoints ``w_t = upper_t``.

Per-row data: the offsets ``v``, ``b0``, ``b.l`` (``l = 0..L-1``) and the z-path scalings
``zscale.l >= 0`` (``l = 1..L-1``).
"""

from __future__ import annotations

from dataclasses import dataclass

import cvxpy as cp
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ._checks import is_transformed
from .blocks import BlockLift, ConvexBlock, DualSetLift, FaceDuals, SmoothBlock, abs_sums, affine_image, to_numpy

ACTIVATIONS = ("relu", "softplus")


@dataclass
class BackboneState:
    """Pre-activations ``a`` (list of ``(N, m_l)``) and canonical multipliers ``nu``."""

    a: list[torch.Tensor]
    nu: list[torch.Tensor]
    upper: list[torch.Tensor] | None = None


def _scale(values: torch.Tensor, zscale: torch.Tensor | None) -> torch.Tensor:
    return values if zscale is None else values * zscale


class Backbone(ConvexBlock, abstract=True):
    """Weights and affine structure shared by the ICNN backbones (see the module docstring).

    Args:
        in_dim: input dimension ``d``.
        hidden: widths ``(m_1, ..., m_L)``.
        passthrough: whether layers ``l >= 2`` see the input through ``W_l x``.
        generator: random generator for the initialisation (CPU).
        dtype, device: of the parameters.
    """

    multiplier_name = "nu"
    nonnegative_data = ("zscale",)
    activation: str = ""

    def __init__(
        self,
        in_dim: int,
        hidden: tuple[int, ...],
        passthrough: bool = True,
        *,
        generator: torch.Generator | None = None,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        self.in_dim = in_dim
        self.hidden = tuple(hidden)
        self.passthrough = passthrough

        init = _initial_weights(in_dim, self.hidden, passthrough, self._act, generator)

        def param(t: torch.Tensor) -> nn.Parameter:
            return nn.Parameter(t.to(dtype=dtype or torch.get_default_dtype(), device=device))

        self.W = nn.ParameterList([param(t) for t in init["W"]])
        self.U_raw = nn.ParameterList([param(t) for t in init["U"]])
        self.b = nn.ParameterList([param(t) for t in init["b"]])
        self.c_raw = param(init["c"])
        self.v = param(init["v"])
        self.b0 = param(init["b0"])

    @staticmethod
    def _act(a: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    # ----------------------------------------------------------------- weights and data
    def W_eff(self, l: int) -> torch.Tensor | None:
        """``W_l`` (0-based ``l``), or ``None`` for ``l >= 1`` without passthrough."""
        return self.W[l] if l < len(self.W) else None

    def U_eff(self, l: int) -> torch.Tensor | None:
        """``U_l >= 0`` (0-based ``l``); ``None`` for the first layer.

        Outside autograd the result is cached until the raw weight changes (its version counter),
        so the readout and inference loops do not recompute ``abs`` at every call."""
        if l == 0:
            return None
        raw = self.U_raw[l - 1]
        if torch.is_grad_enabled() or is_transformed(raw):
            return raw.abs()
        cache = self.__dict__.setdefault("_U_cache", {})
        key = (l, raw.data_ptr(), raw._version)
        hit = cache.get(l)
        if hit is None or hit[0] != key:
            hit = (key, raw.detach().abs())
            cache[l] = hit
        return hit[1]

    @property
    def c(self) -> torch.Tensor:
        return self.c_raw.abs()

    def default_data(self) -> dict[str, torch.Tensor]:
        out = {"v": self.v, "b0": self.b0}
        out.update({f"b.{l}": b for l, b in enumerate(self.b)})
        return out

    @property
    def data_shapes(self) -> dict[str, tuple[int, ...]]:
        shapes = super().data_shapes
        shapes.update({f"zscale.{l}": (self.hidden[l - 1],) for l in range(1, len(self.hidden))})
        return shapes

    def _offset(self, l: int) -> torch.Tensor:
        return self.b[l] if self._bound is None else self.data(f"b.{l}")

    def _zscale(self, l: int) -> torch.Tensor | None:
        return None if self._bound is None else self._bound.get(f"zscale.{l}")

    def _v(self) -> torch.Tensor:
        return self.v if self._bound is None else self.data("v")

    def _b0(self) -> torch.Tensor:
        return self.b0 if self._bound is None else self.data("b0")

    # ----------------------------------------------------------------- linear maps (hooks)
    # The generic dual algebra below reaches the weights only through these four maps (batched
    # over leading dimensions), so a backbone whose ``W_l`` and ``U_l`` are structured linear
    # maps (convolutions) overrides them instead of copying the algebra.
    dense_maps: bool = True

    def _map_x(self, l: int, x: torch.Tensor) -> torch.Tensor | None:
        """``W_l x`` ``(..., m_l)`` for ``x`` ``(..., d)``; ``None`` without passthrough."""
        W = self.W_eff(l)
        return None if W is None else x @ W.T

    def _adjoint_x(self, l: int, q: torch.Tensor) -> torch.Tensor | None:
        """``W_l^T q`` ``(..., d)`` for ``q`` ``(..., m_l)``; ``None`` without passthrough."""
        W = self.W_eff(l)
        return None if W is None else q @ W

    def _map_z(self, l: int, z: torch.Tensor) -> torch.Tensor:
        """``U_l z`` ``(..., m_l)`` for ``z`` ``(..., m_{l-1})`` (``l >= 1``)."""
        return z @ self.U_eff(l).T

    def _adjoint_z(self, l: int, q: torch.Tensor) -> torch.Tensor:
        """``U_l^T q`` ``(..., m_{l-1})`` for ``q`` ``(..., m_l)`` (``l >= 1``)."""
        return q @ self.U_eff(l)

    def _abs_sums_x(self, l: int) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Row and column sums of ``|W_l|`` ``((m_l,), (d,))``; ``None`` without passthrough."""
        W = self.W_eff(l)
        return None if W is None else abs_sums(W)

    # ----------------------------------------------------------------- forward
    def _preactivation(self, l: int, x: torch.Tensor, z: torch.Tensor | None, readout: bool) -> torch.Tensor:
        """``a_l = W_l x + U_l (s_l z_{l-1}) + b_l`` ``(N, m_l)`` (0-based ``l``; ``z`` is ``None``
        for ``l = 0``).

        ``readout=True`` is for the readout, which no autograd or ``torch.func`` transform traces:
        ``a_l`` is then a feature-major buffer (see ``affine_image``) and ``U_l z_{l-1}`` is
        accumulated into it in place (``vmap`` has no batching rule for that).
        """
        W, b = self.W_eff(l), self._offset(l)
        if z is not None:
            z = _scale(z, self._zscale(l))
        if readout and b.ndim == 1:
            if W is None:
                return affine_image(z, self.U_eff(l), b)
            a = affine_image(x, W, b)
            return a if z is None else a.addmm_(z, self.U_eff(l).T)
        a = b.expand(x.shape[0], -1) if W is None else affine_image(x, W, b) if b.ndim == 2 else torch.addmm(b, x, W.T)
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
        v, b0 = self._v(), self._b0()
        lin = torch.addmv(b0, x, v) if v.ndim == 1 else b0 + torch.linalg.vecdot(x, v)
        return torch.addmv(lin, z, self.c)

    # ----------------------------------------------------------------- shared dual algebra
    def _up(self, l: int, nu_l: torch.Tensor) -> torch.Tensor:
        """``upper_{l-1} = s_l * (U_l^T nu_l)`` for the layer below ``l`` (batched over leading dims)."""
        return _scale(self._adjoint_z(l, nu_l), self._zscale(l) if nu_l.ndim == 2 else _lead(self._zscale(l), nu_l))

    def _backprop(self, gates: list[torch.Tensor], seeds: list[torch.Tensor], top: torch.Tensor | None):
        """Top-down ``q_l = upper_l * gate_l + seed_l``, ``upper_{l-1} = s_l U_l^T q_l``,
        ``upper_L = top`` (``c``, or 0 for a plain vector-Jacobian product). Leading dims of the
        seeds are batch dims. Returns ``q``, ``upper`` (lists) and ``sum_l W_l^T q_l``."""
        L = len(self.hidden)
        q: list[torch.Tensor] = [None] * L  # type: ignore[list-item]
        uppers: list[torch.Tensor] = [None] * L  # type: ignore[list-item]
        up = torch.zeros_like(seeds[-1]) if top is None else top.expand_as(seeds[-1])
        slope = None
        for l in range(L - 1, -1, -1):
            g = gates[l] if gates[l].ndim == seeds[l].ndim else _lead(gates[l], seeds[l])
            ql = torch.addcmul(seeds[l], up, g)
            q[l], uppers[l] = ql, up
            Wq = self._adjoint_x(l, ql)
            if Wq is not None:
                slope = Wq if slope is None else slope + Wq
            if l > 0:
                up = self._up(l, ql)
        return q, uppers, slope

    def _forward_directional(self, gates: list[torch.Tensor], dx: torch.Tensor) -> list[torch.Tensor]:
        """Change of every pre-activation along ``dx`` ``(n, d)`` through the gates ``dz = gate * da``."""
        out, prev = [], None
        for l in range(len(self.hidden)):
            da = self._map_x(l, dx)
            if da is None:
                da = dx.new_zeros(dx.shape[0], self.hidden[l])
            if prev is not None:
                da = da + self._map_z(l, _scale(prev * gates[l - 1], self._zscale(l)))
            out.append(da)
            prev = da
        return out

    def _forward_jacobian(self, gates: list[torch.Tensor]) -> list[torch.Tensor]:
        """``d a_l / dx`` ``(n, m_l, d)`` per layer through the gates ``dz = gate * da`` (forward
        mode): ``dA_1/dx = W_1``, ``dA_l/dx = W_l + U_l diag(s_l gate_{l-1}) dA_{l-1}/dx``."""
        n, d = gates[0].shape[0], self.in_dim
        out, prev = [], None
        for l, m in enumerate(self.hidden):
            W = self.W_eff(l)
            Jl = W.expand(n, m, d) if W is not None else gates[0].new_zeros(n, m, d)
            if prev is not None:
                gate = _scale(gates[l - 1], self._zscale(l))
                Jl = Jl + torch.matmul(self.U_eff(l), gate[:, :, None] * prev)
            out.append(Jl)
            prev = Jl
        return out

    def _split(self, t: torch.Tensor) -> list[torch.Tensor]:
        return list(torch.split(t, self.hidden, dim=-1))

    def dual_slope(self, mult: list[torch.Tensor]) -> torch.Tensor:
        v = self._v()
        W0 = self.W_eff(0)
        g = affine_image(mult[0], W0.T, v) if v.ndim == 1 else torch.addmm(v, mult[0], W0)
        for l in range(1, len(mult)):
            W = self.W_eff(l)
            if W is not None:
                g.addmm_(mult[l], W)
        return g

    def _affine_terms(self, x: torch.Tensor) -> list[torch.Tensor]:
        """``W_l x + b_l`` (``b_l`` alone without passthrough) per layer, ``(N, m_l)``."""
        out = []
        for l in range(len(self.hidden)):
            Wx, b = self._map_x(l, x), self._offset(l)
            out.append(b.expand(x.shape[0], -1) if Wx is None else Wx + b)
        return out

    def _linear_value(self, x: torch.Tensor) -> torch.Tensor:
        v = self._v()
        return self._b0() + (x @ v if v.ndim == 1 else torch.linalg.vecdot(x, v))

    def _uppers(self, mult: list[torch.Tensor]) -> list[torch.Tensor]:
        upper = [self.c.expand_as(mult[-1])]
        for l in range(len(mult) - 1, 0, -1):
            upper.insert(0, self._up(l, mult[l]))
        return upper

    def dual_residual(self, mult: list[torch.Tensor]) -> torch.Tensor:
        worst = torch.zeros(mult[0].shape[0], dtype=mult[0].dtype, device=mult[0].device)
        for nu, upper in zip(mult, self._uppers(mult), strict=True):
            viol = torch.maximum(torch.relu(-nu), torch.relu(nu - upper)).amax(dim=1)
            worst = torch.maximum(worst, viol)
        return worst

    def numpy_weights(self) -> dict:
        L = len(self.hidden)
        return {
            "W": [to_numpy(self.W_eff(l)) for l in range(L)],
            "U": [to_numpy(self.U_eff(l)) for l in range(L)],
            "c": to_numpy(self.c),
        }

    def _lift_cover(self, x, data, cover_rhs):
        """The covering constraints ``z_l >= act-epigraph(a_l)`` shared by the liftings."""
        w = self.numpy_weights()
        zs = [cp.Variable(m) for m in self.hidden]
        cover: list[cp.Constraint] = []
        for l, z in enumerate(zs):
            rhs = data[f"b.{l}"]
            if w["W"][l] is not None:
                rhs = rhs + w["W"][l] @ x
            if l > 0:
                prev = zs[l - 1] if data.get(f"zscale.{l}") is None else cp.multiply(data[f"zscale.{l}"], zs[l - 1])
                rhs = rhs + w["U"][l] @ prev
            cover.append(cover_rhs(z, rhs))
        objective = w["c"] @ zs[-1] + data["v"] @ x + data["b0"]
        return zs, cover, objective


def _lead(t: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor | None:
    """A per-row ``(n, m)`` tensor broadcast against ``(n, k, m)`` batched seeds."""
    if t is None or t.ndim == 1:
        return t
    return t.reshape(t.shape[0], *([1] * (like.ndim - 2)), t.shape[-1])


class ReLUBackbone(Backbone):
    """ReLU backbone: the value function of an LP, piecewise linear, kinks at ``a = 0``."""

    activation = "relu"
    piecewise_linear = True

    @staticmethod
    def _act(a: torch.Tensor) -> torch.Tensor:
        return torch.relu(a)

    # ----------------------------------------------------------------- readout
    def state(self, x: torch.Tensor, tol: float = 0.0) -> BackboneState:
        a_list = self._preactivations(x, readout=True)
        nu: list[torch.Tensor] = [None] * len(a_list)  # type: ignore[list-item]
        upper = self.c.expand_as(a_list[-1])
        for l in range(len(a_list) - 1, -1, -1):
            # upper_l = s U_{l+1}^T nu_{l+1} is a fresh buffer for l < L: gate it in place.
            nu[l] = _gate(upper, a_list[l], tol, in_place=l < len(a_list) - 1)
            if l > 0:
                dense = self.dense_maps and not self._bound
                upper = affine_image(nu[l], self.U_eff(l).T) if dense else self._up(l, nu[l])
        return BackboneState(a=a_list, nu=nu)

    def multipliers(self, st: BackboneState) -> list[torch.Tensor]:
        return st.nu

    def optimal_dual_set(self, st: BackboneState, tol: float) -> DualSetLift:
        """Optimal ``nu`` at one point: ``nu_l = upper_l`` on active units, ``0`` on inactive
        ones, ``0 <= nu_l <= upper_l`` on ties, ``upper_l = s_{l+1} U_{l+1}^T nu_{l+1}``,
        ``upper_L = c``: a polyhedron in all ``nu`` jointly."""
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
                zs = self._zscale(l)
                if zs is not None:
                    upper = cp.multiply(to_numpy(zs if zs.ndim == 1 else zs[0]), upper)
        v = self._v()
        slope = to_numpy(v if v.ndim == 1 else v[0])
        slope = slope + sum(w["W"][l].T @ nus[l] for l in range(len(self.hidden)) if w["W"][l] is not None)
        return DualSetLift(constraints, slope)

    def sample_optimal_duals(
        self, st: BackboneState, n: int, tol: float, generator: torch.Generator
    ) -> list[torch.Tensor]:
        """Random optimal ``nu``, chosen top-down: a tied unit takes ``t * upper`` with ``t``
        uniform on ``[0, 1]``, or an endpoint ``t in {0, 1}`` (a vertex) with probability 1/2."""
        upper = self.c.expand(n, -1)
        nu: list[torch.Tensor] = [None] * len(st.a)  # type: ignore[list-item]
        one = self.select(torch.zeros(n, dtype=torch.long, device=self.c.device))
        for l in range(len(st.a) - 1, -1, -1):
            a = st.a[l][0]
            t = torch.rand(n, a.shape[0], generator=generator, dtype=torch.float64)
            snap = torch.rand(n, a.shape[0], generator=generator, dtype=torch.float64) < 0.5
            t = torch.where(snap, t.round(), t).to(a.dtype).to(a.device)
            weight = (a > tol).to(a.dtype) + (a.abs() <= tol).to(a.dtype) * t
            nu[l] = upper * weight
            if l > 0:
                upper = one._up(l, nu[l])
        return nu

    def hessian(self, st: BackboneState, out: torch.Tensor | None = None) -> torch.Tensor | None:
        return out  # locally affine away from ties: adds nothing

    def hvp(self, st: BackboneState, w: torch.Tensor) -> None:
        return None

    def directional(self, st: BackboneState, delta: torch.Tensor, tol: float) -> torch.Tensor:
        dz = None
        for l, a in enumerate(st.a):
            da = torch.zeros_like(a)
            Wd = self._map_x(l, delta)
            if Wd is not None:
                da = da + Wd
            if dz is not None:
                da = da + self._map_z(l, _scale(dz, self._zscale(l)))
            active = (a > tol).to(a.dtype)
            tied = (a.abs() <= tol).to(a.dtype)
            dz = active * da + tied * torch.relu(da)
        v = self._v()
        return dz @ self.c + (delta @ v if v.ndim == 1 else torch.linalg.vecdot(delta, v))

    def margin(self, st: BackboneState) -> torch.Tensor:
        return torch.stack([a.abs().amin(dim=1) for a in st.a], 0).amin(dim=0)

    def dual_value(self, x: torch.Tensor, mult: list[torch.Tensor]) -> torch.Tensor:
        val = self._linear_value(x)
        for nu, aff in zip(mult, self._affine_terms(x), strict=True):
            val = val + (nu * aff).sum(-1)
        return val

    # ----------------------------------------------------------------- kinks
    def kinks(self, st: BackboneState) -> torch.Tensor:
        return torch.cat(st.a, dim=-1)

    def face_pattern(self, st: BackboneState, tied: torch.Tensor) -> torch.Tensor:
        """``1[a > 0]``: tied units keep their side (the face step does not depend on it)."""
        return (self.kinks(st) > 0).to(st.a[0].dtype)

    def face_duals(self, st: BackboneState, pattern, seeds, clip=None) -> FaceDuals:
        """``nu_l = upper_l * pattern_l + seed_l`` top-down; with ``clip`` those entries are
        clipped into ``[0, upper]`` as the pass goes down, which makes any guess dual feasible."""
        gates, sd = self._split(pattern), self._split(seeds)
        clips = None if clip is None else self._split(clip)
        L = len(self.hidden)
        q: list[torch.Tensor] = [None] * L  # type: ignore[list-item]
        uppers: list[torch.Tensor] = [None] * L  # type: ignore[list-item]
        up = self.c.expand_as(sd[-1])
        for l in range(L - 1, -1, -1):
            ql = torch.addcmul(sd[l], up, gates[l])
            if clips is not None:
                ql = torch.where(clips[l], torch.minimum(ql.clamp(min=0.0), up), ql)
            q[l], uppers[l] = ql, up
            if l > 0:
                up = self._up(l, ql)
        qc, upc = torch.cat(q, -1), torch.cat(uppers, -1)
        scale = 1 + upc
        low, high = (-qc).clamp(min=0) / scale, (qc - upc).clamp(min=0) / scale
        return FaceDuals(self.dual_slope(q), q, torch.maximum(low, high), high > low)

    def face_jvp(self, st: BackboneState, pattern, dx) -> torch.Tensor:
        return torch.cat(self._forward_directional(self._split(pattern), dx), dim=-1)

    def face_rows(self, st: BackboneState, pattern, index) -> torch.Tensor:
        """Gradients of the units ``index`` through the pattern: a vector-Jacobian product per
        row seeded by one-hot vectors (``(n, k, M)`` seeds, one backward pass)."""
        n, k = index.shape
        seeds = pattern.new_zeros(n, k, pattern.shape[1])
        seeds.scatter_(-1, index[..., None], 1.0)
        _, _, slope = self._backprop(self._split(pattern), self._split(seeds), None)
        return slope

    def face_jacobian(self, st: BackboneState, pattern) -> torch.Tensor:
        """Gradients ``(n, M, d)`` of every unit through the pattern, by forward mode:
        ``dA_1/dx = W_1``, ``dA_l/dx = W_l + U_l diag(s_l p_{l-1}) dA_{l-1}/dx`` (an optional
        protocol method: the dense path of inference uses it when it fits in memory)."""
        return torch.cat(self._forward_jacobian(self._split(pattern)), dim=1)

    def face_flip_effect(self, st: BackboneState, pattern, local: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
        """``(n, M)``: ``d a_j / d z_t`` times ``delta`` for every unit ``j``, where unit
        ``t = local`` changes its pattern entry by ``delta`` ``(n,)`` (an optional protocol method):
        the rows of :meth:`face_jacobian` then change by the rank-one term ``effect_j grad a_t``,
        which the dense path of inference applies instead of a new pass."""
        n = pattern.shape[0]
        seed = torch.zeros_like(pattern)
        seed[torch.arange(n, device=pattern.device), local] = delta
        gates, seeds = self._split(pattern), self._split(seed)
        effect, carry = [], None
        for l in range(len(self.hidden)):
            e = torch.zeros_like(seeds[l]) if carry is None else self._map_z(l, _scale(carry, self._zscale(l)))
            effect.append(e)
            carry = gates[l] * e + seeds[l]
        return torch.cat(effect, dim=-1)

    def face_curvature(self, st: BackboneState, pattern) -> torch.Tensor:
        return pattern.new_zeros(pattern.shape[0], 0, self.in_dim)

    def face_hvp(self, st: BackboneState, pattern, w) -> None:
        return None

    def face_crossing(self, st: BackboneState, pattern, dk):
        a = self.kinks(st)
        after = a + dk
        cross = ((a > 0) & (after < 0)) | ((a < 0) & (after > 0))
        frac = torch.where(cross, a.abs() / dk.abs().clamp(min=1e-300), torch.ones_like(a))
        return cross, frac

    def release_group(self, local: torch.Tensor) -> torch.Tensor:
        out = torch.zeros(local.shape[0], sum(self.hidden), dtype=torch.bool, device=local.device)
        return out.scatter_(-1, local[:, None], True)

    def gap_slack(self, st: BackboneState, mult: list[torch.Tensor]) -> torch.Tensor:
        """``sum_t (upper_t - nu_t) relu(a_t) + nu_t relu(-a_t)``: zero off the ties."""
        out = None
        for a, nu, upper in zip(st.a, mult, self._uppers(mult), strict=True):
            part = ((upper - nu) * a.clamp(min=0.0) + nu * (-a).clamp(min=0.0)).sum(-1)
            out = part if out is None else out + part
        return out

    # ----------------------------------------------------------------- lifting
    # ----------------------------------------------------------------- primal-dual splitting
    # The LP lifting: auxiliaries z_l >= 0, rows a_l(x, z_{l-1}) - z_l <= 0 priced by nu_l >= 0,
    # cost c^T z_L + v^T x.
    def pd_aux(self, x):
        return [torch.relu(a) for a in self._preactivations(x, readout=False)]

    def pd_project_aux(self, aux):
        return [z.clamp(min=0.0) for z in aux]

    def pd_affine(self, x, aux):
        return [self._preactivation(l, x, aux[l - 1] if l else None, readout=False) - aux[l] for l in range(len(aux))]

    def pd_adjoint(self, dual):
        gz = []
        for l, nu in enumerate(dual):
            gz.append(-nu if l + 1 == len(dual) else self._up(l + 1, dual[l + 1]) - nu)
        gx = None
        for l, nu in enumerate(dual):
            Wq = self._adjoint_x(l, nu)
            if Wq is not None:
                gx = Wq if gx is None else gx + Wq
        return gx, gz

    def pd_prox(self, w, sigma):
        return [t.clamp(min=0.0) for t in w]

    def pd_cost(self, x, aux):
        v = self._v()
        gz = [None] * (len(aux) - 1) + [self.c.expand_as(aux[-1])]
        return v.expand_as(x), gz

    def pd_abs_sums(self, x, aux):
        n = x.shape[0]
        rows, col_x, col_z = [], torch.zeros_like(x), [torch.ones_like(z) for z in aux]  # -z_l in row l
        for l, z in enumerate(aux):
            r = torch.ones_like(z)
            sums = self._abs_sums_x(l)
            if sums is not None:
                r = r + sums[0].to(x.dtype)
                col_x = col_x + sums[1].to(x.dtype)
            if l > 0:  # U_l >= 0: row sums U_l s_l, column sums s_l U_l^T 1
                s_l = self._zscale(l)
                r = r + self._map_z(l, torch.ones_like(aux[l - 1]) if s_l is None else s_l.expand(n, -1))
                col_z[l - 1] = col_z[l - 1] + self._up(l, torch.ones_like(z))
            rows.append(r)
        return rows, col_x, col_z

    def pd_multipliers(self, x, dual):
        """``nu`` clipped into the dual set top-down: ``0 <= nu_L <= c``, ``0 <= nu_{l-1} <= s_l U_l^T nu_l``."""
        out = list(dual)
        up = self.c.expand_as(out[-1])
        for l in range(len(out) - 1, -1, -1):
            out[l] = torch.minimum(out[l].clamp(min=0.0), up)
            if l > 0:
                up = self._up(l, out[l])
        return out

    def lift(self, x, data) -> BlockLift:
        """``min c^T z_L + v^T x + b0`` s.t. ``z_l >= a_l(x, z_{l-1})``, ``z >= 0`` (an LP)."""
        zs, cover, objective = self._lift_cover(x, data, lambda z, rhs: z >= rhs)

        def read() -> list[np.ndarray]:
            return [np.asarray(con.dual_value, dtype=float).reshape(-1) for con in cover]

        return BlockLift(objective, cover + [z >= 0 for z in zs], read)


class SoftplusBackbone(SmoothBlock, Backbone):
    """Softplus backbone: smooth, with closed-form gradient, Hessian and HVP readouts, and an
    exponential-cone lifting (``z >= log(1 + exp(a))``)."""

    pd_smooth = True  # minimize(method='primal_dual') takes gradient steps on it

    activation = "softplus"

    @staticmethod
    def _act(a: torch.Tensor) -> torch.Tensor:
        return F.softplus(a)

    def _state_rows(self, st: BackboneState) -> torch.Tensor:
        return st.a[0]

    def state(self, x: torch.Tensor, tol: float = 0.0) -> BackboneState:
        a_list = self._preactivations(x, readout=True)
        nu: list[torch.Tensor] = [None] * len(a_list)  # type: ignore[list-item]
        uppers: list[torch.Tensor] = [None] * len(a_list)  # type: ignore[list-item]
        upper = self.c.expand_as(a_list[-1])
        for l in range(len(a_list) - 1, -1, -1):
            uppers[l] = upper
            nu[l] = upper * torch.sigmoid(a_list[l])
            if l > 0:
                upper = self._up(l, nu[l])
        return BackboneState(a=a_list, nu=nu, upper=uppers)

    def multipliers(self, st: BackboneState) -> list[torch.Tensor]:
        return st.nu

    def dual_value(self, x: torch.Tensor, mult: list[torch.Tensor]) -> torch.Tensor:
        """``v^T x + b0 + sum_l [nu_l^T (W_l x + b_l) - sum_t upper_t H(nu_t / upper_t)]`` with
        ``H(t) = t log t + (1 - t) log(1 - t)``: the conjugate form of softplus."""
        val = self._linear_value(x)
        for nu, aff, upper in zip(mult, self._affine_terms(x), self._uppers(mult), strict=True):
            t = torch.where(upper > 0, nu / upper.clamp(min=1e-300), 0.0).clamp(0.0, 1.0)
            entropy = torch.special.xlogy(t, t) + torch.special.xlogy(1 - t, 1 - t)
            val = val + (nu * aff).sum(-1) - (upper * entropy).sum(-1)
        return val

    # ----------------------------------------------------------------- primal-dual splitting
    # Smooth: a gradient step, no duals; its multipliers are the canonical ones at x (tangent).
    def pd_affine(self, x, aux):
        return []

    def pd_adjoint(self, dual):
        return None, []

    def pd_prox(self, w, sigma):
        return []

    def pd_abs_sums(self, x, aux):
        return [], None, []

    def pd_cost(self, x, aux):
        return self.dual_slope(self.multipliers(self.state(x))), None

    def pd_multipliers(self, x, dual):
        return self.multipliers(self.state(x))

    def _jacobians(self, st: BackboneState) -> list[torch.Tensor]:
        """``d a_l / dx`` ``(n, m_l, d)`` per layer, forward through the gates ``sigmoid(a)``."""
        return self._forward_jacobian([torch.sigmoid(a) for a in st.a])

    def _curvature_weights(self, st: BackboneState) -> list[torch.Tensor]:
        """``upper_t softplus''(a_t) >= 0`` per layer."""
        return [u * torch.sigmoid(a) * torch.sigmoid(-a) for a, u in zip(st.a, st.upper, strict=True)]

    def face_curvature(self, st: BackboneState, pattern) -> torch.Tensor:
        """``Q`` ``(n, M, d)``: rows ``sqrt(upper_t softplus''(a_t)) grad a_t``."""
        parts = [
            w.sqrt()[:, :, None] * J for w, J in zip(self._curvature_weights(st), self._jacobians(st), strict=True)
        ]
        return torch.cat(parts, dim=1)

    def hessian(self, st: BackboneState, out: torch.Tensor | None = None) -> torch.Tensor:
        Q = self.face_curvature(st, None)
        H = Q.transpose(1, 2) @ Q
        return H if out is None else out.add_(H)

    def hvp(self, st: BackboneState, w: torch.Tensor) -> torch.Tensor:
        gates = [torch.sigmoid(a) for a in st.a]
        da = self._forward_directional(gates, w)
        seeds = [k * d for k, d in zip(self._curvature_weights(st), da, strict=True)]
        return self._backprop(gates, seeds, None)[2]

    def face_hvp(self, st: BackboneState, pattern, w) -> torch.Tensor:
        return self.hvp(st, w)

    def directional(self, st: BackboneState, delta: torch.Tensor, tol: float) -> torch.Tensor:
        return torch.linalg.vecdot(self.slope(st), delta)

    def optimal_dual_set(self, st: BackboneState, tol: float) -> DualSetLift:
        """Smooth: the canonical multipliers are the unique optimal ones (a constant)."""
        return DualSetLift([], to_numpy(self.slope(st)[0]))

    def sample_optimal_duals(self, st: BackboneState, n: int, tol: float, generator: torch.Generator):
        return [nu.expand(n, -1) for nu in st.nu]

    def lift(self, x, data) -> BlockLift:
        """``min c^T z_L + v^T x + b0`` s.t. ``z_l >= log(1 + exp(a_l(x, z_{l-1})))`` (exponential
        cones). The dual ``w_l`` of a covering constraint is the adjoint ``upper_l``, so the
        multipliers read back are ``nu_l = w_l * sigmoid(a_l)``."""
        rhs_list: list = []

        def cover_rhs(z, rhs):
            rhs_list.append(rhs)
            return z >= cp.logistic(rhs)

        _, cover, objective = self._lift_cover(x, data, cover_rhs)

        def read() -> list[np.ndarray]:
            out = []
            for con, rhs in zip(cover, rhs_list, strict=True):
                w = np.asarray(con.dual_value, dtype=float).reshape(-1)
                out.append(w / (1 + np.exp(-np.asarray(rhs.value, dtype=float).reshape(-1))))
            return out

        return BlockLift(objective, cover, read)


def _gate(values: torch.Tensor, a: torch.Tensor, tol: float, in_place: bool = False) -> torch.Tensor:
    """``values * 1[a > tol]`` ``(N, m)`` (into ``values`` when ``in_place``). ReLU's backward
    kernel computes exactly this in one fused pass; the spelled-out product with a boolean mask
    is an order of magnitude slower on CPU (a mixed-dtype product)."""
    if in_place:
        return torch.ops.aten.threshold_backward.grad_input(values, a, tol, grad_input=values)
    return torch.ops.aten.threshold_backward(values, a, tol)


BACKBONES = {"relu": ReLUBackbone, "softplus": SoftplusBackbone}


def _initial_weights(
    in_dim: int,
    hidden: tuple[int, ...],
    passthrough: bool,
    act,
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
