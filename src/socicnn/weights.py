"""Effective (constraint-satisfying) weights of an SOC-ICNN as plain tensors.

:class:`SOCICNNWeights` is registered with ``torch.serialization.add_safe_globals`` when this
module is imported (``import socicnn`` does it), so ``torch.save(model.weights(), path)`` can be
read back with ``torch.load(path, weights_only=True)``, PyTorch's safe default loader.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class SOCICNNWeights:
    """The effective weights of an SOC-ICNN ``f(x) = c^T z_L + v^T x + b0 + sum_h (alpha_h/2)
    ||B_h x + e_h||^2 + sum_g lam_g ||A_g x + d_g||`` with ``z_1 = sigma(W_1 x + b_1)``,
    ``z_l = sigma(W_l x + U_l z_{l-1} + b_l)`` and ``sigma`` the activation; layers are indexed
    ``l = 0..L-1`` here.

    Attributes:
        W: ``(m_l, d)`` tensors; ``W[l]`` is ``None`` for ``l >= 1`` without passthrough.
        U: ``(m_l, m_{l-1})`` tensors, all entries ``>= 0``; ``U[0]`` is ``None``.
        b: ``(m_l,)`` tensors.
        c: ``(m_L,)`` tensor ``>= 0``.
        v: ``(d,)`` tensor.
        b0: scalar tensor.
        quad: ``(alpha, B, e)`` per quadratic block: ``alpha >= 0`` scalar, ``B (k, d)``, ``e (k,)``.
        norm: ``(lam, A, dvec)`` per norm block: ``lam >= 0`` scalar, ``A (n, d)``, ``dvec (n,)``.
        activation: the backbone's activation, ``"relu"`` or ``"softplus"``.
    """

    W: list[torch.Tensor | None]
    U: list[torch.Tensor | None]
    b: list[torch.Tensor]
    c: torch.Tensor
    v: torch.Tensor
    b0: torch.Tensor
    quad: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = field(default_factory=list)
    norm: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = field(default_factory=list)
    activation: str = "relu"

    @property
    def in_dim(self) -> int:
        return int(self.v.shape[0])

    @property
    def hidden(self) -> tuple[int, ...]:
        return tuple(int(b.shape[0]) for b in self.b)

    @property
    def passthrough(self) -> bool:
        return len(self.W) > 1 and self.W[1] is not None

    @property
    def quad_dims(self) -> tuple[int, ...]:
        return tuple(int(B.shape[0]) for _, B, _ in self.quad)

    @property
    def norm_dims(self) -> tuple[int, ...]:
        return tuple(int(A.shape[0]) for _, A, _ in self.norm)

    def _named_tensors(self) -> list[tuple[str, torch.Tensor]]:
        """Every weight tensor with its name (``"W[0]"``, ``"norm[1].A"``, ...), ``None`` entries left out."""
        out = [(f"{k}[{l}]", t) for k in ("W", "U", "b") for l, t in enumerate(getattr(self, k)) if t is not None]
        out += [("c", self.c), ("v", self.v), ("b0", self.b0)]
        for kind, names, blocks in (("quad", ("alpha", "B", "e"), self.quad), ("norm", ("lam", "A", "d"), self.norm)):
            for i, blk in enumerate(blocks):
                if not isinstance(blk, (tuple, list)) or len(blk) != 3:
                    raise ValueError(f"{kind}[{i}] must be a triple {names}, got {type(blk).__name__}")
                out += [(f"{kind}[{i}].{n}", t) for n, t in zip(names, blk, strict=True)]
        return out

    def validate(self) -> None:
        """Raise ``TypeError`` for a non-tensor or non-float entry and ``ValueError`` if shapes
        disagree, an entry is NaN or infinite, the tensors mix dtypes or devices, or a convexity
        constraint is violated."""
        named = self._named_tensors()
        for name, t in named:
            if not isinstance(t, torch.Tensor):
                raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
            if not t.is_floating_point():
                raise TypeError(f"{name} must be a floating-point tensor, got dtype {t.dtype}")
            # NaN would pass every ">= 0" test below, and an infinite weight makes f infinite.
            if not bool(torch.isfinite(t).all()):
                raise ValueError(f"{name} has non-finite entries (NaN or inf); all weights must be finite")
        kinds = {(t.dtype, t.device) for _, t in named}
        if len(kinds) > 1:
            raise ValueError(
                f"the weights mix dtypes/devices {sorted(str(k) for k in kinds)}; convert them to one "
                "(from_weights builds the model in v's dtype and device and would cast the others silently)"
            )
        d, hidden = self.in_dim, self.hidden
        L = len(hidden)
        if len(self.W) != L or len(self.U) != L:
            raise ValueError(f"W and U must have one entry per layer ({L}); got {len(self.W)}, {len(self.U)}")
        if self.W[0] is None:
            raise ValueError("W[0] is required (the first layer always sees x)")
        if any((w is None) != (self.W[1] is None) for w in self.W[1:]):
            raise ValueError("W[1:] must be all tensors (passthrough) or all None")
        if self.U[0] is not None:
            raise ValueError("U[0] must be None (the first layer has no previous layer)")
        for l in range(L):
            W = self.W[l]
            if W is not None and tuple(W.shape) != (hidden[l], d):
                raise ValueError(f"W[{l}] has shape {tuple(W.shape)}, expected {(hidden[l], d)}")
            if l > 0:
                U = self.U[l]
                if U is None or tuple(U.shape) != (hidden[l], hidden[l - 1]):
                    raise ValueError(f"U[{l}] must have shape {(hidden[l], hidden[l - 1])}")
                if bool((U < 0).any()):
                    raise ValueError(f"U[{l}] has negative entries; the model would not be convex")
        if tuple(self.c.shape) != (hidden[-1],):
            raise ValueError(f"c has shape {tuple(self.c.shape)}, expected {(hidden[-1],)}")
        if bool((self.c < 0).any()):
            raise ValueError("c has negative entries; the model would not be convex")
        for name, blocks in (("quad", self.quad), ("norm", self.norm)):
            for i, (scale, M, off) in enumerate(blocks):
                if float(scale) < 0:
                    raise ValueError(f"{name}[{i}] has a negative scale; the model would not be convex")
                if M.ndim != 2 or M.shape[1] != d or tuple(off.shape) != (M.shape[0],):
                    raise ValueError(f"{name}[{i}] has inconsistent shapes {tuple(M.shape)}, {tuple(off.shape)}")


# Safe to allow-list: unpickling only sets the dataclass fields (tensors, lists, tuples and a
# string); nothing runs until from_weights, which validates them.
torch.serialization.add_safe_globals([SOCICNNWeights])
