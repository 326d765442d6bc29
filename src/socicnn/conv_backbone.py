"""Convolutional ICNN backbones: a :class:`~socicnn.backbone.Backbone` whose linear maps are
convolutions.

For an image ``x`` (flattened, ``C_0 H W`` entries) and layers of ``C_l`` channels,
``a_1 = W_1 * x + b_1``, ``a_l = W_l * x + U_l * (s_l z_{l-1}) + b_l``, ``z_l = act(a_l)`` and
``f_R(x) = c^T z_L + v^T x + b_0``: ``W_l`` are free ``k x k`` convolutions, ``U_l`` convolutions
with kernels ``|raw| >= 0`` (the z-path), ``c >= 0`` one weight per channel of the last layer
averaged over pixels (``c_t = |c_raw[channel(t)]| / (H W)``), ``b_l`` one bias per channel. Every
layer is a convolution followed by a convex nondecreasing activation, so ``f_R`` is convex in ``x``.

The dual algebra (multipliers, slopes, directional derivatives, HVPs, the optimal dual set and
the lifting) is the backbone's own: it reaches the weights only through the four linear maps
``W_l x``, ``W_l^T q``, ``U_l z`` and ``U_l^T q``, which are convolutions and transposed
convolutions here, and the lifting through their sparse matrices.

Per-row data (contexts): the offsets ``b.l`` (one per unit, ``C_l H W``), ``v`` (``C_0 H W``),
``b0`` and the z-path scalings ``zscale.l >= 0``, as for the dense backbones.
"""

from __future__ import annotations

import torch
from torch import nn

from .backbone import Backbone, BackboneState, ReLUBackbone, SoftplusBackbone, _scale
from .blocks import ConvexBlock
from .convmaps import DENSE_MAP_LIMIT, ConvMap

__all__ = ["ConvBackbone", "ConvReLUBackbone", "ConvSoftplusBackbone", "CONV_BACKBONES"]


class ConvBackbone(Backbone, abstract=True):
    """Shared structure of the convolutional backbones (see the module docstring).

    Args:
        image_shape: ``(C_0, H, W)``.
        channels: ``(C_1, ..., C_L)``.
        kernel: odd kernel size of every convolution.
        generator, dtype, device: initialisation and placement.
    """

    dense_maps = False

    def __init__(
        self,
        image_shape: tuple[int, int, int],
        channels: tuple[int, ...],
        kernel: int = 3,
        *,
        generator: torch.Generator | None = None,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        ConvexBlock.__init__(self)
        C0, H, W = image_shape
        self.image_shape, self.channels, self.kernel = (C0, H, W), tuple(channels), kernel
        self.pixels = H * W
        self.in_dim = C0 * H * W
        self.hidden = tuple(c * H * W for c in self.channels)
        self.passthrough = True
        dtype = dtype or torch.get_default_dtype()
        kw = {"generator": generator, "dtype": dtype, "device": device}
        self.x_maps = nn.ModuleList([ConvMap(C0, c, kernel, H, W, **kw) for c in self.channels])
        # z-path: |raw| with raw ~ N(0, 1/fan_in) keeps U z of the order of z at initialisation.
        self.z_maps = nn.ModuleList(
            [
                ConvMap(cp, c, kernel, H, W, nonnegative=True, scale=(cp * kernel * kernel) ** -0.5 * 0.5, **kw)
                for cp, c in zip(self.channels[:-1], self.channels[1:], strict=True)
            ]
        )
        self.bias = nn.ParameterList([nn.Parameter(torch.zeros(c, dtype=dtype, device=device)) for c in self.channels])
        self.c_raw = nn.Parameter(torch.full((self.channels[-1],), 1.0 / self.channels[-1], dtype=dtype, device=device))
        self.b0 = nn.Parameter(torch.zeros((), dtype=dtype, device=device))

    @property
    def v(self) -> torch.Tensor:
        """The backbone's own linear term: zero (a context supplies one as data). Not stored, so
        the weights (kernels, biases) do not depend on the image size."""
        return self.b0.new_zeros(self.in_dim)

    # ----------------------------------------------------------------- weights and data
    @property
    def c(self) -> torch.Tensor:
        """``c >= 0`` per unit of the last layer: channel weights averaged over the pixels."""
        return (self.c_raw.abs() / self.pixels).repeat_interleave(self.pixels)

    def unit_bias(self, l: int) -> torch.Tensor:
        """The layer's own offsets ``b_l`` per unit ``(C_l H W,)``."""
        return self.bias[l].repeat_interleave(self.pixels)

    def default_data(self) -> dict[str, torch.Tensor]:
        out = {"v": self.v, "b0": self.b0}
        out.update({f"b.{l}": self.unit_bias(l) for l in range(len(self.channels))})
        return out

    def _offset(self, l: int) -> torch.Tensor:
        return self.data(f"b.{l}")

    def W_eff(self, l: int) -> None:
        raise TypeError("a convolutional backbone has no dense W; use _map_x / _adjoint_x or numpy_weights")

    def U_eff(self, l: int) -> None:
        raise TypeError("a convolutional backbone has no dense U; use _map_z / _adjoint_z or numpy_weights")

    # ----------------------------------------------------------------- the four maps
    def _map_x(self, l: int, x: torch.Tensor) -> torch.Tensor:
        return self.x_maps[l].apply(x)

    def _adjoint_x(self, l: int, q: torch.Tensor) -> torch.Tensor:
        return self.x_maps[l].adjoint(q)

    def _abs_sums_x(self, l: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.x_maps[l].abs_sums()

    def _map_z(self, l: int, z: torch.Tensor) -> torch.Tensor:
        return self.z_maps[l - 1].apply(z)

    def _adjoint_z(self, l: int, q: torch.Tensor) -> torch.Tensor:
        return self.z_maps[l - 1].adjoint(q)

    # ----------------------------------------------------------------- forward and slopes
    def _preactivation(self, l: int, x: torch.Tensor, z: torch.Tensor | None, readout: bool) -> torch.Tensor:
        a = self._map_x(l, x) + self._offset(l)
        if z is not None:
            a = a + self._map_z(l, _scale(z, self._zscale(l)))
        return a

    def dual_slope(self, mult: list[torch.Tensor]) -> torch.Tensor:
        g = self._v() + self._adjoint_x(0, mult[0])
        for l in range(1, len(mult)):
            g = g + self._adjoint_x(l, mult[l])
        return g

    def _forward_jacobian(self, gates: list[torch.Tensor]) -> list[torch.Tensor]:
        """``d a_l / dx`` ``(n, m_l, d)`` (small images only: the dense Jacobians)."""
        n, d = gates[0].shape[0], self.in_dim
        if n * sum(self.hidden) * d > DENSE_MAP_LIMIT:
            raise ValueError(
                f"dense Jacobians of {n} points would hold {n * sum(self.hidden) * d:,} numbers "
                f"(limit {DENSE_MAP_LIMIT:,}); use the matrix-free readouts (hvp) instead"
            )
        eye = torch.eye(d, dtype=gates[0].dtype, device=gates[0].device)
        out, prev = [], None
        for l in range(len(self.hidden)):
            Jl = self._map_x(l, eye).T.expand(n, -1, -1)
            if prev is not None:
                gate = _scale(gates[l - 1], self._zscale(l))
                Jl = Jl + self._map_z(l, (gate[:, :, None] * prev).transpose(1, 2)).transpose(1, 2)
            out.append(Jl)
            prev = Jl
        return out

    def numpy_weights(self) -> dict:
        L = len(self.channels)
        return {
            "W": [self.x_maps[l].sparse() for l in range(L)],
            "U": [None] + [self.z_maps[l - 1].sparse() for l in range(1, L)],
            "c": self.c.detach().to("cpu", torch.float64).numpy(),
        }


class ConvReLUBackbone(ConvBackbone, ReLUBackbone):
    """Convolutional ReLU backbone: piecewise linear, the value function of an LP."""


class ConvSoftplusBackbone(ConvBackbone, SoftplusBackbone):
    """Convolutional softplus backbone: smooth; its curvature is matrix-free on large images."""

    def _dense_fits(self, st: BackboneState) -> bool:
        return st.a[0].shape[0] * sum(self.hidden) * self.in_dim <= DENSE_MAP_LIMIT

    def face_curvature(self, st: BackboneState, pattern) -> torch.Tensor | None:
        """Dense factors on small images, ``None`` (matrix-free: :meth:`face_hvp`) otherwise."""
        return super().face_curvature(st, pattern) if self._dense_fits(st) else None

    def hessian(self, st: BackboneState, out: torch.Tensor | None = None) -> torch.Tensor:
        if not self._dense_fits(st):
            raise ValueError(
                f"the dense Hessian of a convolutional backbone on {self.in_dim}-pixel inputs is too "
                "large to form; use socicnn.readout.hvp (matrix-free) instead"
            )
        return super().hessian(st, out)


CONV_BACKBONES = {"relu": ConvReLUBackbone, "softplus": ConvSoftplusBackbone}
