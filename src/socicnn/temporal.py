"""Temporal blocks: quadratic and grouped norm blocks whose affine maps are 1-D convolutions over
time, for inputs ``x = vec(U)``, ``U`` ``(T, p)`` (time-major, so ``x[t p + j] = U[t, j]``).

A 1-D convolution with ``C`` output channels, kernel ``k`` and zero padding ``k // 2`` ("same"
length) is the linear map ``x -> M x`` with the banded (block-Toeplitz) matrix ``M`` ``(C T, T p)``
of :func:`conv1d_matrix`. The blocks are :class:`~socicnn.quadratic.QuadraticBlock` and
:class:`~socicnn.grouped_norm.GroupedNormBase` with ``B`` / ``A`` built from the kernel, so every
protocol method (readout, lifting, inference) is theirs unchanged. The structured matrix is
rebuilt under autograd (training) and cached otherwise (readout and inference loops).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ._checks import is_transformed
from .grouped_norm import GroupedNormBase
from .quadratic import QuadraticBlock

__all__ = ["TemporalNormBlock", "TemporalQuadraticBlock", "conv1d_matrix"]


def conv1d_matrix(kernel: torch.Tensor, steps: int) -> torch.Tensor:
    """The matrix ``(C T, T p)`` of ``conv1d(U^T, kernel, padding=k // 2)`` on ``vec(U)``.

    Args:
        kernel: ``(C, p, k)`` with ``k`` odd.
        steps: sequence length ``T``.

    Rows are ordered ``(c, t)`` (channel-major), columns ``(s, j)`` (time-major input).
    ``M[(c, t), (s, j)] = kernel[c, j, s - t + k // 2]`` inside the band, 0 outside.
    """
    C, p, k = kernel.shape
    t = torch.arange(steps, device=kernel.device)
    lag = t[None, :] - t[:, None] + k // 2  # (t, s)
    idx = torch.where((lag >= 0) & (lag < k), lag, k)
    padded = F.pad(kernel, (0, 1))  # index k reads a zero
    M = padded[:, :, idx]  # (C, p, T, T) = [c, j, t, s]
    return M.permute(0, 2, 3, 1).reshape(C * steps, steps * p)


def _kernel(C: int, p: int, k: int, gain: float, generator, kw) -> nn.Parameter:
    w = torch.randn(C, p, k, generator=generator, dtype=torch.float64) * (gain / (p * k) ** 0.5)
    return nn.Parameter(w.to(**kw))


class _Structured:
    """Cache of matrices built from parameters, valid while their versions are unchanged."""

    def _structured(self, name: str, build: Callable[[], torch.Tensor], *sources: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() or any(is_transformed(s) for s in sources):
            return build()
        cache = self.__dict__.setdefault("_structured_cache", {})
        key = tuple((s.data_ptr(), s._version, s.dtype, s.device) for s in sources)
        hit = cache.get(name)
        if hit is None or hit[0] != key:
            hit = (key, build().detach())
            cache[name] = hit
        return hit[1]


class TemporalQuadraticBlock(_Structured, QuadraticBlock):
    """``(alpha / 2) ||conv(U) + e||^2`` over all channels and times (``alpha = |alpha_raw|``).

    Args:
        steps, features: ``T`` and ``p``; the input is ``vec(U)`` of dimension ``T p``.
        channels: output channels ``C`` (the rank of ``B`` is ``C T``).
        kernel_size: odd ``k``.
        generator, dtype, device: initialisation and placement.

    Per-row data as :class:`QuadraticBlock`: ``e`` ``(C T,)`` (channel-major) and ``alpha``.
    """

    def __init__(
        self,
        steps: int,
        features: int,
        channels: int,
        kernel_size: int = 5,
        *,
        generator: torch.Generator | None = None,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        super(QuadraticBlock, self).__init__()
        self.steps, self.features, self.channels = steps, features, channels
        self.in_dim, self.dim = steps * features, channels * steps
        kw = {"dtype": dtype or torch.get_default_dtype(), "device": device}
        self.kernel = _kernel(channels, features, kernel_size, 0.45, generator, kw)
        self.bias = nn.Parameter(torch.zeros(channels, **kw))
        self.alpha_raw = nn.Parameter(torch.full((), 0.55 / self.dim, **kw))

    @property
    def B(self) -> torch.Tensor:
        return self._structured("B", lambda: conv1d_matrix(self.kernel, self.steps), self.kernel)

    @property
    def e(self) -> torch.Tensor:
        return self.bias.repeat_interleave(self.steps)


class TemporalNormBlock(_Structured, GroupedNormBase):
    """``lam sum_{g, t} ||(conv(U)_{c, t})_{c in group g}||``: ``G`` groups of ``g`` channels, one
    second-order cone per group and time step (``G T`` cones of dimension ``g``), exact.

    Args:
        steps, features: ``T`` and ``p``.
        groups: ``G``; the convolution has ``G g`` output channels.
        group_dim: channels per group ``g``.
        kernel_size: odd ``k``.
        generator, dtype, device: initialisation and placement.

    Per-row data: ``d`` ``(G T g,)`` ordered ``(group, time, channel in group)``, and ``lam``.
    """

    def __init__(
        self,
        steps: int,
        features: int,
        groups: int,
        group_dim: int = 2,
        kernel_size: int = 5,
        *,
        generator: torch.Generator | None = None,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        self.steps, self.features, self.channel_groups = steps, features, groups
        self.in_dim, self.groups, self.group_dim = steps * features, groups * steps, group_dim
        kw = {"dtype": dtype or torch.get_default_dtype(), "device": device}
        self.kernel = _kernel(groups * group_dim, features, kernel_size, 0.45, generator, kw)
        self.bias = nn.Parameter(torch.zeros(groups * group_dim, **kw))
        self.lam_raw = nn.Parameter(torch.full((), 0.55 / self.groups, **kw))

    def cone_order(self, t: torch.Tensor) -> torch.Tensor:
        """Channel-major rows ``(..., G g T)`` of a convolution's output reordered to the cones'
        order ``(group, time, channel in group)``."""
        lead = t.shape[:-1]
        G, g, T = self.channel_groups, self.group_dim, self.steps
        return t.reshape(*lead, G, g, T).transpose(-1, -2).reshape(*lead, G * T * g)

    @property
    def A(self) -> torch.Tensor:
        return self._structured("A", lambda: self.cone_order(conv1d_matrix(self.kernel, self.steps).T).T, self.kernel)

    @property
    def d(self) -> torch.Tensor:
        return self.cone_order(self.bias.repeat_interleave(self.steps))
