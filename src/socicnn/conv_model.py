"""Convolutional SOC-ICNNs of images given a context image: :class:`ConvSOCICNN` and the five
parameter-matched Conv families.

``E(X, C) = f_R(X; C) + f_Q(X) + f_N(X)``: a convolutional backbone (ReLU or softplus) whose
offsets ``b_l = V_l * C + beta_l`` and linear term ``v = (V_v * C) / (H W)`` are free
convolutions of the context (one convolution gives them all), a convolutional quadratic block and
a grouped norm block. The context enters only offsets, so ``E`` is convex in ``X`` for every
``C``; ``.at(C)`` is an ordinary model of the flattened image. The blocks' own offsets are not
functions of the context: with the context-dependent linear term ``v(C)^T X``, a quadratic block
already places its minimum anywhere, and the per-pixel context offsets would cost as much as the
backbone's (a tensor of ``N x channels x H x W`` per block).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ._checks import check_choice, check_dims, check_model_dtype
from .backbone import ACTIVATIONS
from .conv_backbone import CONV_BACKBONES, ConvBackbone
from .conv_blocks import ConvGroupedNormBlock, ConvQuadraticBlock
from .convmaps import ConvMap
from .model import BlockModel, BoundModel, ContextualModel

__all__ = ["ConvSOCICNN", "CONV_FAMILIES", "conv_family", "conv_parameter_count"]


class ConvSOCICNN(ContextualModel):
    """Convolutional SOC-ICNN ``E(X, C)``, convex in the image ``X`` for every context ``C``.

    Args:
        image_shape: ``(C_0, H, W)`` of ``X``.
        context_channels: channels of ``C`` (same ``H x W``).
        channels: backbone channels per layer (``k x k`` convolutions, ``kernel``).
        quad_channels: channels of the quadratic block's convolution (0: no quadratic block).
        norm_groups: groups of the norm block (0: no norm block), ``group_size`` channels each.
        activation: ``"relu"`` or ``"softplus"``.
        kernel, block_kernel, context_kernel: kernel sizes of the backbone, of the blocks' maps
            and of the context convolutions.
        dtype, device, seed: placement and a private generator for the initialisation.

    Shapes: ``model(X, C)`` maps ``X`` ``(N, C_0, H, W)`` (or flattened ``(N, C_0 H W)``) and
    ``C`` ``(N, context_channels, H, W)`` to ``(N,)``; ``model.at(C)`` takes one context
    ``(context_channels, H, W)`` or a batch and returns a model of flattened images.
    """

    input_names = ("X", "C")

    def __init__(
        self,
        image_shape: tuple[int, int, int] = (1, 64, 64),
        context_channels: int = 2,
        channels: Sequence[int] = (10, 10, 10),
        quad_channels: int = 16,
        norm_groups: int = 8,
        *,
        activation: str = "relu",
        group_size: int = 2,
        kernel: int = 3,
        block_kernel: int = 5,
        context_kernel: int = 3,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
        seed: int | None = None,
    ) -> None:
        super().__init__()
        check_choice("activation", activation, ACTIVATIONS)
        if dtype is not None:
            check_model_dtype(dtype)
        shape = check_dims("image_shape", image_shape, allow_empty=False)
        if len(shape) != 3:
            raise ValueError(f"image_shape must be (channels, height, width) of positive integers, got {image_shape!r}")
        channels = check_dims("channels", channels, allow_empty=False)
        if quad_channels < 0 or norm_groups < 0 or context_channels <= 0:
            raise ValueError("quad_channels and norm_groups must be >= 0 and context_channels > 0")
        C0, H, W = shape
        self.image_shape, self.context_channels = shape, int(context_channels)
        self.context_dim = self.context_channels * H * W
        gen = None if seed is None else torch.Generator().manual_seed(int(seed))
        kw = {"generator": gen, "dtype": dtype, "device": device}

        backbone = CONV_BACKBONES[activation](shape, channels, kernel, **kw)
        blocks: list = [backbone]
        self.quad_channels, self.norm_groups = int(quad_channels), int(norm_groups)
        if quad_channels:
            B = ConvMap(C0, quad_channels, block_kernel, H, W, **kw)
            blocks.append(ConvQuadraticBlock(B, scale=1.0 / B.out_dim))
        if norm_groups:
            A = ConvMap(C0, norm_groups * group_size, block_kernel, H, W, **kw)
            blocks.append(ConvGroupedNormBlock(A, group_size, scale=1.0 / (H * W)))
        # One convolution of the context gives the backbone's offsets b_l and its linear term v
        # (channel-major, so each is a contiguous slice).
        self.context_split = [*channels, C0]
        fan = self.context_channels * context_kernel**2
        self.context = ConvMap(
            self.context_channels, sum(self.context_split), context_kernel, H, W, scale=0.1 * fan**-0.5, **kw
        )
        self.base = BlockModel(C0 * H * W, blocks)

    # ----------------------------------------------------------------- structure
    @property
    def backbone(self) -> ConvBackbone:
        return self.base.block_list[0]

    @property
    def activation(self) -> str:
        return self.backbone.activation

    def num_parameters(self) -> int:
        """Number of trainable scalars."""
        return sum(p.numel() for p in self.parameters())

    # ----------------------------------------------------------------- contexts
    def block_data(self, context: torch.Tensor) -> list[dict[str, torch.Tensor]]:
        bb = self.backbone
        L = len(bb.channels)
        # the layers' own biases ride on the context convolution's per-channel bias (one pass)
        bias = torch.cat([*bb.bias, bb.b0.new_zeros(self.context_split[-1])])
        parts = torch.split(self.context.apply(context, bias), [c * bb.pixels for c in self.context_split], dim=-1)
        data = [{f"b.{l}": parts[l] for l in range(L)}]
        data[0]["v"] = parts[L] / bb.pixels
        return data + [{} for _ in list(self.base.blocks())[1:]]

    def _flat(self, t, channels: int, name: str):
        """``(N, c, H, W) -> (N, c H W)`` and ``(c, H, W) -> (c H W,)``; flat input passes."""
        if isinstance(t, torch.Tensor) and t.ndim in (3, 4):
            want = (channels, *self.image_shape[1:])
            if tuple(t.shape[-3:]) != want:
                raise ValueError(f"{name} must have shape (N, {', '.join(map(str, want))}), got {tuple(t.shape)}")
            return t.reshape(*t.shape[:-3], -1)
        return t

    def at(self, context) -> BoundModel:
        """The model of flattened images ``(N, C_0 H W)`` at one context or a batch of contexts."""
        return super().at(self._flat(context, self.context_channels, self.input_names[1]))

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        xname, cname = self.input_names
        images = self._flat(x, self.image_shape[0], xname)
        return super().forward(images, self._flat(context, self.context_channels, cname))


#: The five Conv families: backbone activation, quadratic block, norm block.
CONV_FAMILIES = {
    "Conv-ReLU": ("relu", False, False),
    "Conv-softplus": ("softplus", False, False),
    "Conv-Quad": ("relu", True, False),
    "Conv-Norm": ("relu", False, True),
    "Conv-SOC": ("relu", True, True),
}


def conv_parameter_count(
    channels: Sequence[int],
    quad_channels: int,
    norm_groups: int,
    *,
    image_channels: int = 1,
    context_channels: int = 2,
    group_size: int = 2,
    kernel: int = 3,
    block_kernel: int = 5,
    context_kernel: int = 3,
) -> int:
    """Trainable scalars of a :class:`ConvSOCICNN` (independent of the image size)."""
    C0, Cc, k2, kb2, kc2 = image_channels, context_channels, kernel**2, block_kernel**2, context_kernel**2
    prev = [C0, *channels[:-1]]
    count = sum(C0 * c * k2 + c + Cc * c * kc2 for c in channels)
    count += sum(p * c * k2 for p, c in zip(prev[1:], channels[1:], strict=True))
    count += channels[-1] + 1 + Cc * C0 * kc2
    if quad_channels:
        count += quad_channels * (C0 * kb2 + 1) + 1
    if norm_groups:
        count += norm_groups * group_size * (C0 * kb2 + 1) + norm_groups
    return count


def conv_family(
    family: str,
    image_shape: tuple[int, int, int],
    context_channels: int = 2,
    *,
    channels: Sequence[int] = (10, 10, 10),
    quad_channels: int = 16,
    norm_groups: int = 8,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
    seed: int | None = None,
) -> ConvSOCICNN:
    """The Conv family ``family`` (a key of :data:`CONV_FAMILIES`) with as many parameters as the
    Conv-SOC model of ``channels``, ``quad_channels``, ``norm_groups`` as the matching allows: its
    backbone channels ``(c_1, ..., c_L)`` are the widths (each within ``[2, 4 max(channels)]``,
    non-increasing) whose count is within 1% of the Conv-SOC count
    with the most even widths."""
    check_choice("family", family, tuple(CONV_FAMILIES))
    activation, quad, norm = CONV_FAMILIES[family]
    kw = {"context_channels": context_channels, "image_channels": image_shape[0]}
    target = conv_parameter_count(channels, quad_channels, norm_groups, **kw)
    q, n = quad_channels if quad else 0, norm_groups if norm else 0
    best = tuple(channels)
    if (quad, norm) != (True, True):
        best = _match_widths(len(channels), 4 * max(channels), lambda ch: conv_parameter_count(ch, q, n, **kw), target)
    return ConvSOCICNN(
        image_shape, context_channels, best, q, n, activation=activation, dtype=dtype, device=device, seed=seed
    )


def _match_widths(depth: int, top: int, count, target: int) -> tuple[int, ...]:
    """Non-increasing widths of ``depth`` layers in ``[2, top]`` whose ``count`` is within 1% of
    ``target`` with the most even widths (else the closest count)."""
    best_key, best = None, None

    def rec(prefix: tuple[int, ...]) -> None:
        nonlocal best_key, best
        if len(prefix) == depth:
            gap = abs(count(prefix) - target)
            key = (gap > 0.01 * target, prefix[0] - prefix[-1], gap)
            if best_key is None or key < best_key:
                best_key, best = key, prefix
            return
        for w in range(2, (prefix[-1] if prefix else top) + 1):
            rec(prefix + (w,))

    rec(())
    return best
