"""Models as sums of convex blocks: the generic :class:`BlockModel`, :class:`SOCICNN`,
:class:`ReLUICNN`, models with per-row data (:class:`BoundModel`) and contextual models
(:class:`ContextualModel`, whose ``.at(context)`` is an ordinary model of ``x``)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch import nn

from ._checks import as_input, check_choice, check_dims, check_model_dtype
from .backbone import ACTIVATIONS, BACKBONES, Backbone
from .blocks import ConvexBlock
from .norm import NormBlock
from .quadratic import QuadraticBlock
from .weights import SOCICNNWeights

__all__ = ["BlockModel", "BoundModel", "ContextualModel", "ReLUICNN", "SOCICNN"]


class BlockModel(nn.Module):
    """``f(x) = sum_b f_b(x)``: a convex model given by its blocks (any :class:`ConvexBlock`).

    Lifting, readout, the optimal dual set and inference see a model only through
    :meth:`blocks`, :attr:`in_dim`, :meth:`check_input` and :meth:`select`, so a model built from
    new block kinds works with all of them.

    Args:
        in_dim: input dimension ``d``.
        blocks: the blocks (each maps ``(N, d) -> (N,)``).
    """

    def __init__(self, in_dim: int, blocks: Sequence[ConvexBlock]) -> None:
        super().__init__()
        if isinstance(in_dim, bool) or not isinstance(in_dim, int) or in_dim <= 0:
            raise ValueError(f"in_dim must be a positive integer, got {in_dim!r}")
        blocks = list(blocks)
        if not blocks or not all(isinstance(b, ConvexBlock) for b in blocks):
            raise TypeError("blocks must be a non-empty sequence of socicnn.blocks.ConvexBlock")
        self.in_dim = in_dim
        self.block_list = nn.ModuleList(blocks)

    def blocks(self) -> Iterator[ConvexBlock]:
        """The blocks whose values sum to ``f``."""
        yield from self.block_list

    @property
    def rows(self) -> int | None:
        """The number of rows of per-row data, or ``None`` when the model is one function of ``x``."""
        return None

    def select(self, index: torch.Tensor) -> BlockModel:
        """The model restricted to the rows ``index`` of its per-row data (itself when it has none)."""
        return self

    def bind(self, data: Sequence[dict[str, torch.Tensor]]) -> BoundModel:
        """The model with per-block data (one dict per block, see :meth:`ConvexBlock.bind`)."""
        return BoundModel(self, data)

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def num_parameters(self) -> int:
        """Number of trainable scalars."""
        return sum(p.numel() for p in self.parameters())

    def check_input(self, x, name: str = "x") -> tuple[torch.Tensor, bool]:
        """Validate ``x`` (``(N, d)`` or ``(d,)``); returns ``(x2d, was_vector)``."""
        check_model_dtype(self.dtype)
        x2, vector = as_input(name, x, self.in_dim, self.dtype, self.device)
        rows = self.rows
        if rows is not None and x2.shape[0] != rows:
            raise ValueError(f"{name} has {x2.shape[0]} rows but the model carries per-row data for {rows}")
        return x2, vector

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``f(x)``: ``(N, d)`` to ``(N,)`` (a single ``(d,)`` input gives a scalar), the sum of the blocks."""
        x2, vector = self.check_input(x)
        out = None
        for block in self.blocks():
            out = block(x2) if out is None else out + block(x2)
        return out[0] if vector else out


class _OnBase:
    """``dtype`` and ``device`` of the wrapped model ``base``."""

    base: BlockModel

    @property
    def dtype(self) -> torch.dtype:
        return self.base.dtype

    @property
    def device(self) -> torch.device:
        return self.base.device


class BoundModel(_OnBase, BlockModel):
    """A model whose blocks carry data (offsets, nonnegative scalings) shared or per row.

    With per-row data of ``N`` rows it is the function ``x_i -> f(x_i; data_i)`` row by row, so
    its inputs must have ``N`` rows; :meth:`select` restricts it to some rows. It shares the
    weights of the model it was bound from.
    """

    def __init__(self, model: BlockModel, data: Sequence[dict[str, torch.Tensor]]) -> None:
        blocks = list(model.blocks())
        data = list(data)
        if len(data) != len(blocks):
            raise ValueError(f"expected one data dict per block ({len(blocks)}), got {len(data)}")
        bound = [b.bind(dct) if dct else b for b, dct in zip(blocks, data, strict=True)]
        nn.Module.__init__(self)
        self.in_dim = model.in_dim
        self._blocks = bound
        self.base = model
        rows = {b.rows for b in bound} - {None}
        if len(rows) > 1:
            raise ValueError(f"per-row data of the blocks disagree on the number of rows: {sorted(rows)}")
        self._rows = rows.pop() if rows else None

    def blocks(self) -> Iterator[ConvexBlock]:
        yield from self._blocks

    @property
    def rows(self) -> int | None:
        return self._rows

    def select(self, index: torch.Tensor) -> BoundModel:
        if self._rows is None:
            return self
        out = object.__new__(BoundModel)
        nn.Module.__init__(out)
        out.in_dim, out.base = self.in_dim, self.base
        out._blocks = [b.select(index) for b in self._blocks]
        rows = {b.rows for b in out._blocks} - {None}
        out._rows = rows.pop() if rows else None
        return out

    def __getattr__(self, name: str):
        # Structure (hidden, norm_dims, ...) is the base model's; a block (or list of blocks) of
        # the base is returned as its bound counterpart, so model.backbone sees the data.
        try:
            return super().__getattr__(name)
        except AttributeError:
            pass
        base = self._modules["base"]
        value = getattr(base, name)
        originals = list(base.blocks())

        def bound(b):
            for orig, new in zip(originals, self._blocks, strict=True):
                if b is orig:
                    return new
            return b

        if isinstance(value, ConvexBlock):
            return bound(value)
        if isinstance(value, list) and value and all(isinstance(v, ConvexBlock) for v in value):
            return [bound(v) for v in value]
        return value


class ContextualModel(_OnBase, nn.Module):
    """A model of ``(x, context)`` convex in ``x`` for every context: a :class:`BlockModel` (the
    ``base``) whose block data are functions of the context (:meth:`block_data`).

    ``model(x, context)`` evaluates ``f(x_i, context_i)`` row by row and ``model.at(context)``
    returns the ordinary model of ``x`` for one context ``(p,)`` (shared data) or for a batch
    ``(N, p)`` (per-row data), which lifting, readout and inference accept unchanged.
    Subclasses set ``self.base`` and ``self.context_dim`` and implement :meth:`block_data`;
    ``input_names`` are the names of the two arguments in error messages.
    """

    base: BlockModel
    context_dim: int
    input_names: tuple[str, str] = ("x", "context")

    def block_data(self, context: torch.Tensor) -> list[dict[str, torch.Tensor]]:
        """Per-block data for contexts ``(N, p)``: one dict per block of ``base``, values ``(N, ...)``."""
        raise NotImplementedError

    @property
    def in_dim(self) -> int:
        return self.base.in_dim

    def check_context(self, context, name: str = "context") -> tuple[torch.Tensor, bool]:
        return as_input(name, context, self.context_dim, self.base.dtype, self.base.device)

    def at(self, context) -> BoundModel:
        """The model of ``x`` at ``context`` ``(p,)`` (one function) or ``(N, p)`` (row by row)."""
        c2, vector = self.check_context(context, self.input_names[1])
        data = self.block_data(c2)
        if vector:
            data = [{k: v[0] for k, v in dct.items()} for dct in data]
        return self.base.bind(data)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        xname, cname = self.input_names
        x2, vector = self.base.check_input(x, xname)
        c2, cvec = self.check_context(context, cname)
        if vector != cvec or x2.shape[0] != c2.shape[0]:
            raise ValueError(
                f"{xname} and {cname} must have the same rows, got {tuple(x2.shape)} and {tuple(c2.shape)}"
            )
        out = self.base.bind(self.block_data(c2))(x2)
        return out[0] if vector else out


class SOCICNN(BlockModel):
    """Second-order-cone input convex neural network ``f = f_R + sum_h f_Q,h + sum_g f_N,g``.

    Convex in ``x`` by construction, trained or not. Evaluating ``f`` needs no solver.

    Args:
        in_dim: input dimension ``d``.
        hidden: backbone widths ``(m_1, ..., m_L)``, ``L >= 1``.
        quad_dims: rank ``k_h`` of each quadratic block ``(alpha_h/2) ||B_h x + e_h||^2``.
        norm_dims: rows ``n_g`` of each norm block ``lam_g ||A_g x + d_g||``.
        passthrough: whether backbone layers ``l >= 2`` see ``x`` through ``W_l x``.
        activation: backbone activation, ``"relu"`` (LP/SOCP-representable) or ``"softplus"``
            (smooth; exponential-cone representable).
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
        if isinstance(in_dim, bool) or not isinstance(in_dim, int) or in_dim <= 0:
            raise ValueError(f"in_dim must be a positive integer, got {in_dim!r}")
        check_choice("activation", activation, ACTIVATIONS)
        if dtype is not None:
            check_model_dtype(dtype)
        hidden = check_dims("hidden", hidden, allow_empty=False)
        quad_dims = check_dims("quad_dims", quad_dims, allow_empty=True)
        norm_dims = check_dims("norm_dims", norm_dims, allow_empty=True)
        gen = None
        if seed is not None:
            gen = torch.Generator().manual_seed(int(seed))
        kw = {"generator": gen, "dtype": dtype, "device": device}
        backbone = BACKBONES[activation](in_dim, hidden, bool(passthrough), **kw)
        quad = [QuadraticBlock(in_dim, k, **kw) for k in quad_dims]
        norm = [NormBlock(in_dim, n, **kw) for n in norm_dims]
        super().__init__(in_dim, [backbone, *quad, *norm])

    @property
    def backbone(self) -> Backbone:
        return self.block_list[0]

    @property
    def quad_blocks(self) -> list[QuadraticBlock]:
        return [b for b in self.block_list if isinstance(b, QuadraticBlock)]

    @property
    def norm_blocks(self) -> list[NormBlock]:
        return [b for b in self.block_list if isinstance(b, NormBlock)]

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

    def extra_repr(self) -> str:
        return (
            f"in_dim={self.in_dim}, hidden={self.hidden}, quad_dims={self.quad_dims}, "
            f"norm_dims={self.norm_dims}, passthrough={self.passthrough}, "
            f"activation={self.activation!r}"
        )

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

    Args: as :class:`SOCICNN`, without blocks: ``quad_dims`` and ``norm_dims`` are accepted only
    empty (so that code building every family with the same keywords works), and anything else
    raises ``ValueError``.
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
        super().__init__(in_dim, hidden, (), (), passthrough, activation, dtype=dtype, device=device, seed=seed)
