"""SOC-ICNN and ReLU-ICNN models: a backbone plus quadratic and norm blocks (MATH.md §1)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch import nn

from ._checks import as_input, check_choice
from .backbone import ACTIVATIONS, Backbone
from .blocks import ConvexBlock
from .norm import NormBlock
from .quadratic import QuadraticBlock
from .weights import SOCICNNWeights

__all__ = ["SOCICNN", "ReLUICNN"]


def _dims(name: str, dims: Sequence[int], allow_empty: bool) -> tuple[int, ...]:
    try:
        out = tuple(int(k) for k in dims)
    except TypeError as exc:
        raise TypeError(f"{name} must be a sequence of positive integers, got {dims!r}") from exc
    if (not out and not allow_empty) or any(k <= 0 for k in out):
        kind = "a" if allow_empty else "a non-empty"
        raise ValueError(f"{name} must be {kind} sequence of positive integers, got {dims!r}")
    return out


class SOCICNN(nn.Module):
    """Second-order-cone input convex neural network ``f = f_R + sum_h f_Q,h + sum_g f_N,g``.

    Convex in ``x`` by construction, trained or not. Evaluating ``f`` needs no solver.

    Args:
        in_dim: input dimension ``d``.
        hidden: backbone widths ``(m_1, ..., m_L)``, ``L >= 1``.
        quad_dims: rank ``k_h`` of each quadratic block ``(alpha_h/2) ||B_h x + e_h||^2``.
        norm_dims: rows ``n_g`` of each norm block ``lam_g ||A_g x + d_g||``.
        passthrough: whether backbone layers ``l >= 2`` see ``x`` through ``W_l x``.
        activation: backbone activation, ``"relu"`` (LP/SOCP-representable) or ``"softplus"``.
        dtype: parameter dtype (default: torch's default dtype).
        device: parameter device.
        seed: seed of a private generator for the initialisation (``None``: torch's global RNG).

    Shapes: ``forward`` maps ``(N, d) -> (N,)`` and ``(d,) -> ()``.
    """

    def __init__(
        self,
        in_dim: int,
        hidden: Sequence[int] = (32, 32),
        quad_dims: Sequence[int] = (),
        norm_dims: Sequence[int] = (),
        passthrough: bool = True,
        activation: str = "relu",
        *,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
        seed: int | None = None,
    ) -> None:
        super().__init__()
        if isinstance(in_dim, bool) or not isinstance(in_dim, int) or in_dim <= 0:
            raise ValueError(f"in_dim must be a positive integer, got {in_dim!r}")
        check_choice("activation", activation, ACTIVATIONS)
        if dtype is not None and not dtype.is_floating_point:
            raise TypeError(f"dtype must be a floating-point dtype, got {dtype}")
        hidden = _dims("hidden", hidden, allow_empty=False)
        quad_dims = _dims("quad_dims", quad_dims, allow_empty=True)
        norm_dims = _dims("norm_dims", norm_dims, allow_empty=True)
        gen = None
        if seed is not None:
            gen = torch.Generator().manual_seed(int(seed))
        kw = {"generator": gen, "dtype": dtype, "device": device}
        self.in_dim = in_dim
        self.backbone = Backbone(in_dim, hidden, bool(passthrough), activation, **kw)
        self.quad_blocks = nn.ModuleList([QuadraticBlock(in_dim, k, **kw) for k in quad_dims])
        self.norm_blocks = nn.ModuleList([NormBlock(in_dim, n, **kw) for n in norm_dims])

    # ----------------------------------------------------------------- structure
    @property
    def hidden(self) -> tuple[int, ...]:
        return self.backbone.hidden

    @property
    def passthrough(self) -> bool:
        return self.backbone.passthrough

    @property
    def activation(self) -> str:
        return self.backbone.activation

    @property
    def quad_dims(self) -> tuple[int, ...]:
        return tuple(b.dim for b in self.quad_blocks)

    @property
    def norm_dims(self) -> tuple[int, ...]:
        return tuple(b.dim for b in self.norm_blocks)

    @property
    def dtype(self) -> torch.dtype:
        return self.backbone.v.dtype

    @property
    def device(self) -> torch.device:
        return self.backbone.v.device

    def blocks(self) -> Iterator[ConvexBlock]:
        """The blocks whose values sum to ``f``: backbone, quadratic blocks, norm blocks."""
        yield self.backbone
        yield from self.quad_blocks
        yield from self.norm_blocks

    def num_parameters(self) -> int:
        """Number of trainable scalars."""
        return sum(p.numel() for p in self.parameters())

    def extra_repr(self) -> str:
        return (
            f"in_dim={self.in_dim}, hidden={self.hidden}, quad_dims={self.quad_dims}, "
            f"norm_dims={self.norm_dims}, passthrough={self.passthrough}, "
            f"activation={self.activation!r}"
        )

    # ----------------------------------------------------------------- evaluation
    def check_input(self, x, name: str = "x") -> tuple[torch.Tensor, bool]:
        """Validate ``x`` (``(N, d)`` or ``(d,)``); returns ``(x2d, was_vector)``."""
        return as_input(name, x, self.in_dim, self.dtype, self.device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x2, vector = self.check_input(x)
        out = self.backbone(x2)
        for block in (*self.quad_blocks, *self.norm_blocks):
            out = out + block(x2)
        return out[0] if vector else out

    # ----------------------------------------------------------------- weights
    @torch.no_grad()
    def weights(self) -> SOCICNNWeights:
        """Effective weights (``U, c, alpha, lam >= 0``) as detached tensors."""
        bb = self.backbone
        L = len(bb.hidden)

        def grab(t):
            return None if t is None else t.detach().clone()

        return SOCICNNWeights(
            W=[grab(bb.W_eff(l)) for l in range(L)],
            U=[grab(bb.U_eff(l)) for l in range(L)],
            b=[grab(bb.b[l]) for l in range(L)],
            c=grab(bb.c),
            v=grab(bb.v),
            b0=grab(bb.b0),
            quad=[(grab(q.alpha), grab(q.B), grab(q.e)) for q in self.quad_blocks],
            norm=[(grab(n.lam), grab(n.A), grab(n.d)) for n in self.norm_blocks],
            activation=bb.activation,
        )

    @classmethod
    @torch.no_grad()
    def from_weights(cls, w: SOCICNNWeights) -> SOCICNN:
        """Build a model computing exactly the function given by the effective weights ``w``."""
        if not isinstance(w, SOCICNNWeights):
            raise TypeError(f"expected SOCICNNWeights, got {type(w).__name__}")
        w.validate()
        model = cls(
            in_dim=w.in_dim,
            hidden=w.hidden,
            quad_dims=w.quad_dims,
            norm_dims=w.norm_dims,
            passthrough=w.passthrough,
            activation=w.activation,
            dtype=w.v.dtype,
            device=w.v.device,
        )
        bb = model.backbone
        for l in range(len(w.hidden)):
            if w.W[l] is not None:
                bb.W[l].copy_(w.W[l])
            if l > 0:
                bb.U_raw[l - 1].copy_(w.U[l])  # abs() is the identity on U >= 0
            bb.b[l].copy_(w.b[l])
        bb.c_raw.copy_(w.c)
        bb.v.copy_(w.v)
        bb.b0.copy_(w.b0)
        for blk, (alpha, B, e) in zip(model.quad_blocks, w.quad, strict=True):
            blk.alpha_raw.copy_(alpha)
            blk.B.copy_(B)
            blk.e.copy_(e)
        for blk, (lam, A, dvec) in zip(model.norm_blocks, w.norm, strict=True):
            blk.lam_raw.copy_(lam)
            blk.A.copy_(A)
            blk.d.copy_(dvec)
        return model


class ReLUICNN(SOCICNN):
    """ReLU-ICNN: an SOC-ICNN without quadratic or norm blocks (an LP value function).

    Args: as :class:`SOCICNN`, without blocks.
    """

    def __init__(
        self,
        in_dim: int,
        hidden: Sequence[int] = (32, 32),
        passthrough: bool = True,
        activation: str = "relu",
        *,
        quad_dims: Sequence[int] = (),
        norm_dims: Sequence[int] = (),
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
        seed: int | None = None,
    ) -> None:
        if tuple(quad_dims) or tuple(norm_dims):
            raise ValueError("ReLUICNN has no quadratic or norm blocks; use SOCICNN")
        super().__init__(
            in_dim, hidden, (), (), passthrough, activation, dtype=dtype, device=device, seed=seed
        )
