"""Convolutions as linear maps of flattened images, for blocks whose weights are convolutions.

An image with ``C`` channels of ``H x W`` pixels is a vector of length ``C H W`` (channel-major,
as ``tensor.reshape``). :class:`ConvMap` is the ``same``-padded, stride-1 convolution from
``C_in`` to ``C_out`` channels as such a map: :meth:`ConvMap.apply` (``K x``),
:meth:`ConvMap.adjoint` (``K^T q``, a transposed convolution with the same kernel), both batched
over any leading dimensions, and :meth:`ConvMap.sparse` (the matrix, for the conic lifting).
With ``nonnegative=True`` the kernel is ``|raw|`` (entrywise ``>= 0`` whatever an optimiser
does), which is what the z-path of an input convex network needs.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch import nn

from .blocks import to_numpy

__all__ = ["ConvMap", "DENSE_MAP_LIMIT"]

#: Largest number of entries a dense copy of a map (or a stack of per-row dense factors) may hold.
DENSE_MAP_LIMIT = 2**25


class ConvMap(nn.Module):
    """``same``-padded convolution ``C_in -> C_out`` channels on ``H x W`` images, as a linear map
    ``R^{C_in H W} -> R^{C_out H W}``.

    Args:
        in_channels, out_channels: channel counts.
        kernel: odd kernel size ``k`` (``k x k`` kernels, padding ``k // 2``).
        height, width: image size.
        nonnegative: store a raw kernel and use ``|raw|``.
        scale: standard deviation of the initial (raw) kernel entries.
        generator, dtype, device: initialisation and placement.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel: int,
        height: int,
        width: int,
        *,
        nonnegative: bool = False,
        scale: float | None = None,
        generator: torch.Generator | None = None,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        if kernel % 2 != 1 or kernel <= 0:
            raise ValueError(f"kernel must be a positive odd integer, got {kernel}")
        self.in_channels, self.out_channels, self.kernel = in_channels, out_channels, kernel
        self.height, self.width = height, width
        self.nonnegative = nonnegative
        fan_in = in_channels * kernel * kernel
        std = fan_in**-0.5 if scale is None else scale
        raw = torch.randn(out_channels, in_channels, kernel, kernel, generator=generator, dtype=torch.float64) * std
        self.raw = nn.Parameter(raw.to(dtype=dtype or torch.get_default_dtype(), device=device))

    @property
    def in_dim(self) -> int:
        return self.in_channels * self.height * self.width

    @property
    def out_dim(self) -> int:
        return self.out_channels * self.height * self.width

    @property
    def weight(self) -> torch.Tensor:
        """The kernel ``(C_out, C_in, k, k)`` (``|raw|`` when nonnegative)."""
        return self.raw.abs() if self.nonnegative else self.raw

    def apply(self, x: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        """``K x`` ``(..., C_out H W)`` for ``x`` ``(..., C_in H W)``, plus ``bias`` ``(C_out,)``
        (one offset per output channel) when given."""
        lead = x.shape[:-1]
        img = x.reshape(-1, self.in_channels, self.height, self.width)
        out = F.conv2d(img, self.weight, bias, padding=self.kernel // 2)
        return out.reshape(*lead, self.out_dim)

    def adjoint(self, q: torch.Tensor) -> torch.Tensor:
        """``K^T q`` ``(..., C_in H W)`` for ``q`` ``(..., C_out H W)``."""
        lead = q.shape[:-1]
        img = q.reshape(-1, self.out_channels, self.height, self.width)
        if 1 < self.in_channels and self.out_channels <= self.in_channels:
            # the same map as a convolution with the flipped, transposed kernel: faster on CPUs
            # when it does not widen the channels (up to 7x for 20 -> 10), slower when it does
            out = F.conv2d(img, self.weight.transpose(0, 1).flip(-2, -1), padding=self.kernel // 2)
        else:
            out = F.conv_transpose2d(img, self.weight, padding=self.kernel // 2)
        return out.reshape(*lead, self.in_dim)

    def abs_sums(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Row and column sums of ``|K|`` ``((C_out H W,), (C_in H W,))``: the convolution and its
        adjoint with ``|kernel|`` applied to ones (for diagonal preconditioning)."""
        w = self.weight.detach().abs()
        kw = {"dtype": w.dtype, "device": w.device}
        rows = F.conv2d(torch.ones(1, self.in_channels, self.height, self.width, **kw), w, padding=self.kernel // 2)
        cols = F.conv_transpose2d(
            torch.ones(1, self.out_channels, self.height, self.width, **kw), w, padding=self.kernel // 2
        )
        return rows.reshape(-1), cols.reshape(-1)

    def dense(self) -> torch.Tensor:
        """The matrix ``(C_out H W, C_in H W)`` as a dense tensor (small maps only)."""
        if self.in_dim * self.out_dim > DENSE_MAP_LIMIT:
            raise ValueError(
                f"a dense copy of this {self.out_dim} x {self.in_dim} convolution would exceed "
                f"{DENSE_MAP_LIMIT:,} entries; use apply/adjoint (matrix-free) instead"
            )
        eye = torch.eye(self.in_dim, dtype=self.raw.dtype, device=self.raw.device)
        return self.apply(eye).T

    def sparse(self) -> sp.csr_matrix:
        """The matrix as a SciPy sparse matrix (float64), for the conic lifting."""
        w = to_numpy(self.weight)
        H, W, k, p = self.height, self.width, self.kernel, self.kernel // 2
        ys, xs = np.meshgrid(np.arange(H), np.arange(W), indexing="ij")
        ys, xs = ys.ravel(), xs.ravel()
        rows, cols, vals = [], [], []
        for ky in range(k):
            for kx in range(k):
                yy, xx = ys + ky - p, xs + kx - p
                ok = (yy >= 0) & (yy < H) & (xx >= 0) & (xx < W)
                out_pix, in_pix = (ys * W + xs)[ok], (yy * W + xx)[ok]
                for o in range(self.out_channels):
                    for i in range(self.in_channels):
                        rows.append(o * H * W + out_pix)
                        cols.append(i * H * W + in_pix)
                        vals.append(np.full(out_pix.shape, w[o, i, ky, kx]))
        return sp.csr_matrix(
            (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(self.out_dim, self.in_dim)
        )

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels} -> {self.out_channels} channels, {self.kernel}x{self.kernel}, "
            f"{self.height}x{self.width} images, nonnegative={self.nonnegative}"
        )
