"""Recurrent SOC-ICNNs: energies ``E(U; R)`` of a sequence ``U`` ``(T, p)``, convex in the whole
sequence for every context sequence ``R`` ``(T, p_R)``.

The recurrence ``z_t = act(W_u u_t + W_r r_t + U_z z_{t-1} + b)`` (``z_0 = 0``) with ``U_z >= 0``
and ``act`` convex nondecreasing, read out as ``c^T z_T`` with ``c >= 0``, unrolled over ``T``
steps is a ``T``-layer ICNN of ``x = vec(U)`` whose layers share their weights: layer ``t`` sees
the input through ``W_t = W_u S_t`` (``S_t`` selects ``u_t``) and the layer below through ``U_z``;
the context enters the offsets ``b_t(R) = b + W_r r_t``. So the recurrence *is* a
:class:`~socicnn.backbone.Backbone` (ReLU or softplus) with tied weights
(:class:`RecurrentReLUBackbone`, :class:`RecurrentSoftplusBackbone`) and every protocol method
(readout, lifting as an LP or an exponential-cone program, inference) is the backbone's own.

:class:`RecurrentSOCICNN` adds a term linear in ``U`` with context-dependent coefficients
``v(R)^T vec(U) + b_0(R)`` (a small network of ``R``), a temporal quadratic block and a temporal
grouped norm block (:mod:`socicnn.temporal`) whose offsets are convolutions of ``R``. For a fixed
context every term is convex in ``U``; ``.at(R)`` gives that model of ``vec(U)`` alone.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ._checks import as_input, check_choice, check_model_dtype, is_transformed
from .backbone import ACTIVATIONS, Backbone, ReLUBackbone, SoftplusBackbone
from .model import BlockModel, ContextualModel
from .temporal import TemporalNormBlock, TemporalQuadraticBlock

__all__ = [
    "RECURRENT_FAMILIES",
    "RecurrentReLUBackbone",
    "RecurrentSOCICNN",
    "RecurrentSoftplusBackbone",
    "recurrent_family",
]


class _TiedRecurrence:
    """Weights of a recurrence as a backbone with tied layers (mixed into a :class:`Backbone`).

    Layer ``t`` (0-based) has ``W_t = [0 .. W_u .. 0]`` (``W_u`` in the columns of ``u_t``),
    ``U_t = |U_raw|`` (``t >= 1``) and offset ``b``; ``c = |c_raw|``; ``v``, ``b0`` the linear term.
    """

    def __init__(
        self,
        steps: int,
        features: int,
        width: int,
        *,
        generator: torch.Generator | None = None,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        nn.Module.__init__(self)
        self.steps, self.features, self.width = steps, features, width
        self.in_dim = steps * features
        self.hidden = (width,) * steps
        self.passthrough = True
        kw = {"dtype": dtype or torch.get_default_dtype(), "device": device}

        def randn(*shape: int, scale: float) -> nn.Parameter:
            return nn.Parameter((torch.randn(shape, generator=generator, dtype=torch.float64) * scale).to(**kw))

        self.W_u = randn(width, features, scale=0.7 * (2.0 / (width + features)) ** 0.5)
        # Row sums of U_z near 0.8: the recurrence neither dies out nor blows up over T steps.
        self.U_raw_z = nn.Parameter(
            ((0.8 / width) * (1 + 0.15 * torch.randn(width, width, generator=generator, dtype=torch.float64)).abs()).to(
                **kw
            )
        )
        self.bias = nn.Parameter(torch.zeros(width, **kw))
        self.c_raw = nn.Parameter(torch.full((width,), 0.127 / width, **kw))
        self.v = nn.Parameter(torch.zeros(self.in_dim, **kw))
        self.b0 = nn.Parameter(torch.zeros((), **kw))

    @property
    def b(self) -> list[torch.Tensor]:
        """The offsets ``b_t``, one (shared) per step."""
        return [self.bias] * self.steps

    def _cached(self, key: str, raw: torch.Tensor, build):
        if torch.is_grad_enabled() or is_transformed(raw):
            return build()
        cache = self.__dict__.setdefault("_tied_cache", {})
        stamp = (raw.data_ptr(), raw._version, raw.dtype, raw.device)
        hit = cache.get(key)
        if hit is None or hit[0] != stamp:
            hit = (stamp, build().detach())
            cache[key] = hit
        return hit[1]

    def W_eff(self, l: int) -> torch.Tensor:
        p = self.features
        return self._cached(f"W{l}", self.W_u, lambda: F.pad(self.W_u, (l * p, (self.steps - 1 - l) * p)))

    def U_eff(self, l: int) -> torch.Tensor | None:
        if l == 0:
            return None
        return self._cached("U", self.U_raw_z, self.U_raw_z.abs)


class RecurrentReLUBackbone(_TiedRecurrence, ReLUBackbone):
    """ReLU recurrence as a tied-weight ReLU backbone (an LP value function of ``vec(U)``).

    Args:
        steps, features: ``T`` and ``p``; the input is ``vec(U)`` of dimension ``T p``.
        width: hidden size.
        generator, dtype, device: initialisation and placement.
    """


class RecurrentSoftplusBackbone(_TiedRecurrence, SoftplusBackbone):
    """Softplus recurrence as a tied-weight softplus backbone (smooth). Args as
    :class:`RecurrentReLUBackbone`."""


RECURRENT_BACKBONES = {"relu": RecurrentReLUBackbone, "softplus": RecurrentSoftplusBackbone}

#: The five recurrent families: activation, quadratic block, norm block.
RECURRENT_FAMILIES = {
    "RNN-ReLU": ("relu", False, False),
    "RNN-Softplus": ("softplus", False, False),
    "RNN-Quad": ("relu", True, False),
    "RNN-Norm": ("relu", False, True),
    "RNN-SOC": ("relu", True, True),
}


class RecurrentSOCICNN(ContextualModel):
    """``E(U; R)``: a recurrent ICNN of ``U`` plus a linear term, a temporal quadratic block and a
    temporal grouped norm block, with the context ``R`` in the offsets (module docstring).

    Args:
        steps: sequence length ``T``.
        features: ``p``, features of ``U`` per step.
        context_features: ``p_R``, features of ``R`` per step.
        hidden: width of the recurrence.
        quad_channels: channels ``C`` of the temporal quadratic block (0: no quadratic block).
        norm_groups: groups ``G`` of the temporal norm block (0: no norm block).
        activation: ``"relu"`` or ``"softplus"``.
        group_dim: channels per norm group.
        kernel_size: odd temporal kernel of both blocks.
        context_hidden: width of the networks giving the linear term's coefficients from ``R``.
        dtype, device: of the parameters.
        seed: seed of a private generator for the initialisation (``None``: torch's global RNG).

    Shapes: ``model(U, R)`` with ``U`` ``(N, T, p)`` or ``(N, T p)`` and ``R`` ``(N, T, p_R)`` or
    ``(N, T p_R)`` gives ``(N,)``; ``model.at(R)`` with ``R`` ``(T, p_R)`` (one context) or
    ``(N, T, p_R)`` (one per row) is a model of ``vec(U)`` ``(N, T p)``.
    """

    input_names = ("U", "R")

    def __init__(
        self,
        steps: int = 40,
        features: int = 4,
        context_features: int = 4,
        hidden: int = 20,
        quad_channels: int = 24,
        norm_groups: int = 12,
        activation: str = "relu",
        *,
        group_dim: int = 2,
        kernel_size: int = 5,
        context_hidden: int = 64,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
        seed: int | None = None,
    ) -> None:
        super().__init__()
        for name, value, low in (
            ("steps", steps, 1),
            ("features", features, 1),
            ("context_features", context_features, 1),
            ("hidden", hidden, 1),
            ("quad_channels", quad_channels, 0),
            ("norm_groups", norm_groups, 0),
            ("group_dim", group_dim, 1),
            ("kernel_size", kernel_size, 1),
            ("context_hidden", context_hidden, 1),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
        if kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd (a centred 'same' convolution), got {kernel_size}")
        check_choice("activation", activation, ACTIVATIONS)
        if dtype is not None:
            check_model_dtype(dtype)
        gen = None if seed is None else torch.Generator().manual_seed(int(seed))
        kw = {"generator": gen, "dtype": dtype, "device": device}
        self.steps, self.features, self.context_features = steps, features, context_features
        self.context_dim = steps * context_features
        T, p, pr = steps, features, context_features
        blocks: list = [RECURRENT_BACKBONES[activation](T, p, hidden, **kw)]
        if quad_channels:
            blocks.append(TemporalQuadraticBlock(T, p, quad_channels, kernel_size, **kw))
        if norm_groups:
            blocks.append(TemporalNormBlock(T, p, norm_groups, group_dim, kernel_size, **kw))
        self.base = BlockModel(T * p, blocks)
        pkw = {"dtype": dtype or torch.get_default_dtype(), "device": device}

        def randn(*shape: int, scale: float) -> nn.Parameter:
            return nn.Parameter((torch.randn(shape, generator=gen, dtype=torch.float64) * scale).to(**pkw))

        self.W_r = randn(hidden, pr, scale=0.7 * (2.0 / (hidden + pr)) ** 0.5)
        self.coef_net = _mlp(T * pr, context_hidden, T * p, nn.Tanh(), randn)
        self.offset_net = _mlp(T * pr, context_hidden, 1, nn.ReLU(), randn)
        self.context_convs = nn.ParameterList(
            [randn(b.kernel.shape[0], pr, kernel_size, scale=0.45 / (pr * kernel_size) ** 0.5) for b in blocks[1:]]
        )

    # ----------------------------------------------------------------- structure
    @property
    def backbone(self) -> Backbone:
        return self.base.block_list[0]

    @property
    def quad_block(self) -> TemporalQuadraticBlock | None:
        return next((b for b in self.base.blocks() if isinstance(b, TemporalQuadraticBlock)), None)

    @property
    def norm_block(self) -> TemporalNormBlock | None:
        return next((b for b in self.base.blocks() if isinstance(b, TemporalNormBlock)), None)

    @property
    def activation(self) -> str:
        return self.backbone.activation

    def num_parameters(self) -> int:
        """Number of trainable scalars."""
        return sum(p.numel() for p in self.parameters())

    # ----------------------------------------------------------------- context
    def _flat(self, t, per_step: int, name: str):
        """``(N, T, k)`` -> ``(N, T k)`` and ``(T, k)`` -> ``(T k,)``; flat rows ``(N, T k)`` and
        vectors pass (checked later); any other 2-D or 3-D shape is an error naming both forms."""
        if not isinstance(t, torch.Tensor):
            return t
        shape = (self.steps, per_step)
        if t.ndim == 3 and tuple(t.shape[1:]) == shape:
            return t.reshape(t.shape[0], -1)
        if tuple(t.shape) == shape:
            return t.reshape(-1)
        if t.ndim == 3 or (t.ndim == 2 and t.shape[1] != self.steps * per_step):
            raise ValueError(
                f"{name} must have shape {shape} or (N, {self.steps}, {per_step}) (or flat rows "
                f"(N, {self.steps * per_step})), got {tuple(t.shape)}"
            )
        return t

    def check_context(self, context, name: str = "context") -> tuple[torch.Tensor, bool]:
        return as_input(
            name, self._flat(context, self.context_features, name), self.context_dim, self.base.dtype, self.base.device
        )

    def block_data(self, context: torch.Tensor) -> list[dict[str, torch.Tensor]]:
        n, T = context.shape[0], self.steps
        R = context.reshape(n, T, self.context_features)
        bb = self.backbone
        drive = bb.bias + R @ self.W_r.T  # (n, T, h)
        data = {f"b.{t}": drive[:, t] for t in range(T)}
        data["v"] = bb.v + self.coef_net(context) / (T * self.features)
        data["b0"] = bb.b0 + self.offset_net(context)[:, 0]
        out = [data]
        channels_first = R.transpose(1, 2)
        for block, w in zip(list(self.base.blocks())[1:], self.context_convs, strict=True):
            conv = F.conv1d(channels_first, w, padding=w.shape[-1] // 2).reshape(n, -1)  # (n, C T)
            if isinstance(block, TemporalQuadraticBlock):
                out.append({"e": block.e + conv})
            else:
                out.append({"d": block.d + block.cone_order(conv)})
        return out

    def at(self, context):
        """The model of ``vec(U)`` at ``R`` ``(T, p_R)`` (one function) or ``(N, T, p_R)`` (row by row).

        Its data (offsets and the linear term) are a detached snapshot of the context networks:
        the model is for readout, lifting and inference; train through ``model(U, R)``."""
        with torch.no_grad():
            return super().at(context)

    def forward(self, U: torch.Tensor, R: torch.Tensor) -> torch.Tensor:
        return super().forward(self._flat(U, self.features, self.input_names[0]), R)

    def extra_repr(self) -> str:
        return (
            f"steps={self.steps}, features={self.features}, context_features={self.context_features}, "
            f"hidden={self.backbone.width}, activation={self.activation!r}, "
            f"quad={self.quad_block is not None}, norm={self.norm_block is not None}"
        )


def _mlp(d_in: int, width: int, d_out: int, act: nn.Module, randn) -> nn.Sequential:
    """``Linear -> act -> Linear`` initialised from the model's generator (zero biases)."""
    first, second = nn.Linear(d_in, width), nn.Linear(width, d_out)
    for layer in (first, second):
        fan_in = layer.weight.shape[1]
        layer.weight = randn(*layer.weight.shape, scale=fan_in**-0.5)
        layer.bias = nn.Parameter(torch.zeros_like(layer.bias, dtype=layer.weight.dtype, device=layer.weight.device))
    return nn.Sequential(first, act, second)


def recurrent_family(
    name: str,
    *,
    steps: int = 40,
    features: int = 4,
    context_features: int = 4,
    hidden: int = 20,
    quad_channels: int = 24,
    norm_groups: int = 12,
    match: bool = True,
    **kw,
) -> RecurrentSOCICNN:
    """One of the five families (:data:`RECURRENT_FAMILIES`). With ``match`` every family but
    RNN-SOC widens its recurrence to the smallest hidden size whose parameter count is at least
    the RNN-SOC's (the RNN-SOC keeps ``hidden``)."""
    check_choice("name", name, tuple(RECURRENT_FAMILIES))
    activation, quad, norm = RECURRENT_FAMILIES[name]
    shape = {"steps": steps, "features": features, "context_features": context_features}

    def build(width: int) -> RecurrentSOCICNN:
        return RecurrentSOCICNN(
            **shape,
            hidden=width,
            quad_channels=quad_channels if quad else 0,
            norm_groups=norm_groups if norm else 0,
            activation=activation,
            **kw,
        )

    if not match or (quad and norm):
        return build(hidden)
    soc = RecurrentSOCICNN(**shape, hidden=hidden, quad_channels=quad_channels, norm_groups=norm_groups, **kw)
    target, width = soc.num_parameters(), hidden
    while build(width).num_parameters() < target:
        width += 1
    return build(width)
