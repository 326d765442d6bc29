"""A block kind the library has never seen, written as one file against the block protocol:
``f(x) = lam |a^T x + c|`` (an absolute-value block).

Its kink is ``t = a^T x + c = 0``, where the multiplier ``rho`` may be anything in
``[-lam, lam]`` (a two-sided interval, unlike a ReLU unit's ``[0, upper]``); off the kink
``rho = lam sign(t)``. Lifting: ``min lam s`` s.t. ``s >= t``, ``s >= -t``. Its multipliers are
called ``"rho"``, a name no readout view knows.
"""

from __future__ import annotations

from dataclasses import dataclass

import cvxpy as cp
import numpy as np
import torch
from torch import nn

from socicnn.blocks import BlockLift, ConvexBlock, DualSetLift, FaceDuals, to_numpy


@dataclass
class AbsState:
    t: torch.Tensor  # (N,)
    rho: torch.Tensor  # (N, 1)


class AbsBlock(ConvexBlock):
    """``lam |a^T x + c|`` with ``lam = |lam_raw| >= 0``; per-row data: ``c`` and ``lam``."""

    multiplier_name = "rho"
    piecewise_linear = True
    nonnegative_data = ("lam",)

    def __init__(self, in_dim: int, *, seed: int = 0, dtype=torch.float64) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.in_dim = in_dim
        self.a = nn.Parameter(torch.randn(in_dim, generator=g, dtype=torch.float64).to(dtype))
        self.c = nn.Parameter(torch.zeros((), dtype=dtype))
        self.lam_raw = nn.Parameter(torch.tensor(1.5, dtype=dtype))

    def default_data(self):
        return {"c": self.c, "lam": self.lam_raw.abs()}

    def _t(self, x):
        return x @ self.a + self.data("c")

    def forward(self, x):
        return self.data("lam") * self._t(x).abs()

    def state(self, x, tol=0.0):
        t = self._t(x)
        rho = torch.where(t.abs() <= tol, 0.0, self.data("lam") * torch.sign(t))
        return AbsState(t=t, rho=rho[:, None])

    def multipliers(self, st):
        return st.rho

    def dual_slope(self, mult):
        return mult * self.a

    def dual_value(self, x, mult):
        return mult[:, 0] * self._t(x)

    def dual_residual(self, mult):
        return (mult[:, 0].abs() - self.data("lam")).clamp(min=0.0)

    def hessian(self, st, out=None):
        return out

    def hvp(self, st, w):
        return None

    def directional(self, st, delta, tol):
        ad = delta @ self.a
        return torch.where(st.t.abs() <= tol, self.data("lam") * ad.abs(), st.rho[:, 0] * ad)

    def margin(self, st):
        return st.t.abs()

    def lift(self, x, data):
        a = to_numpy(self.a)
        s = cp.Variable()
        t = a @ x + data["c"]
        up, down = s >= t, s >= -t

        def read():
            return np.array([float(up.dual_value) - float(down.dual_value)])

        return BlockLift(data["lam"] * s, [up, down], read)

    def optimal_dual_set(self, st, tol):
        a = to_numpy(self.a)
        if float(st.t[0].abs()) > tol:
            return DualSetLift([], a * float(st.rho[0, 0]))
        rho = cp.Variable()
        lam = float(self.data("lam").detach())
        return DualSetLift([rho >= -lam, rho <= lam], a * rho)

    def sample_optimal_duals(self, st, n, tol, generator):
        if float(st.t[0].abs()) > tol:
            return st.rho.expand(n, 1)
        u = torch.rand(n, 1, generator=generator, dtype=torch.float64).to(st.t.dtype)
        return (2 * u - 1) * self.data("lam")

    # kinks
    def kinks(self, st):
        return st.t[:, None]

    def face_pattern(self, st, tied):
        return (st.t > 0).to(st.t.dtype)[:, None]

    def face_duals(self, st, pattern, seeds, clip=None):
        lam = self.data("lam")
        rho = lam * (2 * pattern - 1) + seeds
        if clip is not None:
            rho = torch.where(clip, rho.clamp(-lam, lam), rho)
        viol = (rho.abs() - lam).clamp(min=0.0) / (1 + lam)
        return FaceDuals(self.dual_slope(rho), rho, viol, rho > lam)

    def face_jvp(self, st, pattern, dx):
        return (dx @ self.a)[:, None]

    def face_rows(self, st, pattern, index):
        return self.a.expand(index.shape[0], index.shape[1], -1)

    def face_curvature(self, st, pattern):
        return st.t.new_zeros(st.t.shape[0], 0, self.in_dim)

    def face_hvp(self, st, pattern, w):
        return None

    def face_crossing(self, st, pattern, dk):
        t = st.t[:, None]
        cross = (t * (t + dk)) < 0
        return cross, torch.where(cross, t.abs() / dk.abs().clamp(min=1e-300), torch.ones_like(t))

    def release_group(self, local):
        return torch.ones(local.shape[0], 1, dtype=torch.bool, device=local.device)

    def gap_slack(self, st, mult):
        return self.data("lam") * st.t.abs() - mult[:, 0] * st.t

    def numpy_weights(self):
        return {"a": to_numpy(self.a)}
