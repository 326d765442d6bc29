"""The five model families of the function-approximation benchmark, and parameter matching.

Every family is a configuration of the one :class:`~socicnn.model.SOCICNN` parameterisation
(paper A's experiment 2), so all share its code paths and are convex by construction:

========  ==============  ================================================================
key       label           configuration
========  ==============  ================================================================
relu      ReLU-ICNN       ReLU backbone only
softplus  Softplus-ICNN   softplus backbone only (``activation="softplus"``)
quad      Quad-ICNN       ReLU backbone + one quadratic block of rank ``rank``
norm      Norm-ICNN       ReLU backbone + one norm block of ``rank`` rows
soc       SOC-ICNN        ReLU backbone + one quadratic block + one norm block
========  ==============  ================================================================

Block initialisation: ``block_init_scale`` multiplies the initial affine maps of the blocks
(``B, e`` and ``A, d``). At 1 the blocks start as the library initialises them (unit-scale
maps, so they contribute ``O(d)`` to ``f`` at initialisation); the reference scripts start the
blocks near zero (scale 0.01), so a Quad/Norm/SOC-ICNN starts close to its backbone alone.

Parameter matching (the reference's rule): the SOC-ICNN has a fixed backbone depth; every
other family keeps the SOC width and takes the smallest depth whose parameter count is at
least the SOC-ICNN's.

Two parameterisations build these families. ``"library"`` (the default) is
:class:`~socicnn.model.SOCICNN`. ``"reference"`` is :class:`ReferenceICNN`, the reference
scripts' own model and initialisation, written out so that their run can be reproduced:

- backbone ``z_1 = act(W_1 x + b_1)``, ``z_l = act(W_l x + b_l + softplus(U_l) z_{l-1})``, output
  ``w_out^T x + b_out + softplus(u_out)^T z_L``;
- quadratic block ``(alpha/2) ||L^T x||^2`` (``L`` ``d x d``), norm block ``lam ||A x + c||``
  (``A`` ``d x d``), ``alpha = softplus(alpha_raw) + 1e-8``, ``lam = softplus(lam_raw) + 1e-8``;
- initialisation: ``W_l`` uniform on ``+-1/sqrt(d)``, biases 0, raw z-path weights ``U_l``,
  ``u_out`` ~ ``N(zpath_mean, 0.2^2)`` (the reference: ``-3.5``, so the weights start near
  0.03), ``w_out`` Xavier uniform, ``b_out = 0``; ``L, A`` ``0.01 N(0, 1)``, ``c = 0``,
  ``alpha_raw = lam_raw = 0``.

Both are convex in ``x`` for every value of their raw parameters (nonnegative z-path weights
through ``|.|`` or softplus, convex nondecreasing activations, nonnegative block weights).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from ._checks import check_choice
from .model import SOCICNN

__all__ = [
    "FAMILIES",
    "LABELS",
    "PARAMETERISATIONS",
    "ModelSpec",
    "ReferenceICNN",
    "family_spec",
    "matched_specs",
    "parameter_table",
]

PARAMETERISATIONS = ("library", "reference")
REFERENCE_ZPATH_MEAN = -3.5

FAMILIES = ("relu", "softplus", "quad", "norm", "soc")
LABELS = {
    "relu": "ReLU-ICNN",
    "softplus": "Softplus-ICNN",
    "quad": "Quad-ICNN",
    "norm": "Norm-ICNN",
    "soc": "SOC-ICNN",
}


class ReferenceICNN(nn.Module):
    """The reference scripts' ICNN with optional quadratic and norm blocks (module docstring).

    Args:
        in_dim: input dimension ``d``.
        width, depth: backbone width ``h`` and number of hidden layers ``L >= 1``.
        activation: ``"relu"`` or ``"softplus"``.
        quad, norm: add the quadratic block, the norm block (both of rank ``d``).
        zpath_mean: mean of the raw z-path weights at initialisation (sd 0.2).
        dtype, device: parameter placement; seed: seed of a private generator (``None``: the
            global RNG).

    ``forward`` maps ``(N, d) -> (N,)``; it has no data-dependent branches, so it runs under
    ``torch.func.vmap`` (the batched trainer).
    """

    def __init__(
        self,
        in_dim: int,
        width: int,
        depth: int,
        activation: str = "relu",
        quad: bool = False,
        norm: bool = False,
        *,
        zpath_mean: float = REFERENCE_ZPATH_MEAN,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
        seed: int | None = None,
    ) -> None:
        super().__init__()
        check_choice("activation", activation, ("relu", "softplus"))
        gen = None if seed is None else torch.Generator().manual_seed(int(seed))
        d, h = in_dim, width
        kw = {"dtype": dtype or torch.get_default_dtype(), "device": device}

        def uniform(*shape: int, bound: float) -> nn.Parameter:
            u = torch.rand(shape, generator=gen, dtype=torch.float64)
            return nn.Parameter(((2 * u - 1) * bound).to(**kw))

        def normal(*shape: int, mean: float, sd: float) -> nn.Parameter:
            return nn.Parameter((mean + sd * torch.randn(shape, generator=gen, dtype=torch.float64)).to(**kw))

        def zeros(*shape: int) -> nn.Parameter:
            return nn.Parameter(torch.zeros(shape, **kw))

        self.in_dim, self.width, self.depth, self.activation = d, h, depth, activation
        self.W = nn.ParameterList([uniform(h, d, bound=d**-0.5) for _ in range(depth)])
        self.b = nn.ParameterList([zeros(h) for _ in range(depth)])
        self.U_raw = nn.ParameterList([normal(h, h, mean=zpath_mean, sd=0.2) for _ in range(depth - 1)])
        self.u_out_raw = normal(h, mean=zpath_mean, sd=0.2)
        self.w_out = uniform(d, bound=math.sqrt(6.0 / (d + 1)))
        self.b_out = zeros()
        self.L = normal(d, d, mean=0.0, sd=0.01) if quad else None
        self.alpha_raw = zeros() if quad else None
        self.A = normal(d, d, mean=0.0, sd=0.01) if norm else None
        self.c = zeros(d) if norm else None
        self.lam_raw = zeros() if norm else None

    def num_parameters(self) -> int:
        """Trainable scalars."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 2 or x.shape[-1] != self.in_dim:
            raise ValueError(f"x must have shape (N, {self.in_dim}), got {tuple(x.shape)}")
        act = torch.relu if self.activation == "relu" else F.softplus
        z = act(torch.addmm(self.b[0], x, self.W[0].T))
        for l in range(1, self.depth):  # index, not slice: a sliced ParameterList re-wraps (and detaches)
            z = act(torch.addmm(self.b[l], x, self.W[l].T) + z @ F.softplus(self.U_raw[l - 1]).T)
        out = x @ self.w_out + self.b_out + z @ F.softplus(self.u_out_raw)
        if self.L is not None:
            q = x @ self.L
            out = out + 0.5 * (F.softplus(self.alpha_raw) + 1e-8) * (q * q).sum(-1)
        if self.A is not None:
            u = torch.addmm(self.c, x, self.A.T)
            out = out + (F.softplus(self.lam_raw) + 1e-8) * torch.linalg.vector_norm(u, dim=-1)
        return out


@dataclass(frozen=True)
class ModelSpec:
    """An SOC-ICNN configuration: ``SOCICNN(in_dim, (width,) * depth, quad_dims, norm_dims, ...)``."""

    family: str
    in_dim: int
    width: int
    depth: int
    quad_dims: tuple[int, ...]
    norm_dims: tuple[int, ...]
    activation: str
    block_init_scale: float = 1.0
    parameterisation: str = "library"
    zpath_mean: float = REFERENCE_ZPATH_MEAN

    @property
    def label(self) -> str:
        return LABELS[self.family]

    def build(
        self,
        *,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
        seed: int | None = None,
    ) -> nn.Module:
        """A freshly initialised model of this configuration (:class:`~socicnn.model.SOCICNN`
        or :class:`ReferenceICNN`, by ``parameterisation``)."""
        if self.parameterisation == "reference":
            return ReferenceICNN(
                self.in_dim, self.width, self.depth, self.activation, bool(self.quad_dims), bool(self.norm_dims),
                zpath_mean=self.zpath_mean, dtype=dtype, device=device, seed=seed,
            )
        model = SOCICNN(
            self.in_dim,
            (self.width,) * self.depth,
            self.quad_dims,
            self.norm_dims,
            passthrough=True,
            activation=self.activation,
            dtype=dtype,
            device=device,
            seed=seed,
        )
        if self.block_init_scale != 1.0:
            with torch.no_grad():
                for blk in model.quad_blocks:
                    blk.B.mul_(self.block_init_scale)
                    blk.e.mul_(self.block_init_scale)
                for blk in model.norm_blocks:
                    blk.A.mul_(self.block_init_scale)
                    blk.d.mul_(self.block_init_scale)
        return model

    def num_parameters(self) -> int:
        """Trainable scalars of a model of this configuration."""
        return self.build(dtype=torch.float32, device="meta").num_parameters()


def family_spec(
    family: str,
    in_dim: int,
    width: int,
    depth: int,
    rank: int | None = None,
    block_init_scale: float = 1.0,
    parameterisation: str = "library",
    zpath_mean: float = REFERENCE_ZPATH_MEAN,
) -> ModelSpec:
    """The configuration of ``family`` with the given backbone and block rank (default ``in_dim``).

    ``parameterisation="reference"`` builds :class:`ReferenceICNN` (its blocks have rank ``d``;
    ``zpath_mean`` sets its z-path initialisation); ``block_init_scale`` applies to ``"library"``.
    """
    check_choice("family", family, FAMILIES)
    check_choice("parameterisation", parameterisation, PARAMETERISATIONS)
    for name, value in (("in_dim", in_dim), ("width", width), ("depth", depth)):
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    rank = in_dim if rank is None else rank
    if isinstance(rank, bool) or not isinstance(rank, int) or rank <= 0:
        raise ValueError(f"rank must be a positive integer, got {rank!r}")
    if parameterisation == "reference" and rank != in_dim:
        raise ValueError(f"the reference parameterisation has blocks of rank d = {in_dim}, got rank={rank}")
    if not (isinstance(block_init_scale, (int, float)) and block_init_scale > 0):
        raise ValueError(f"block_init_scale must be a positive number, got {block_init_scale!r}")
    quad = (rank,) if family in ("quad", "soc") else ()
    norm = (rank,) if family in ("norm", "soc") else ()
    activation = "softplus" if family == "softplus" else "relu"
    return ModelSpec(
        family, in_dim, width, depth, quad, norm, activation, float(block_init_scale), parameterisation,
        float(zpath_mean),
    )


def matched_specs(
    in_dim: int,
    width: int,
    soc_depth: int = 2,
    rank: int | None = None,
    families: tuple[str, ...] = FAMILIES,
    max_depth: int = 64,
    block_init_scale: float = 1.0,
    parameterisation: str = "library",
    zpath_mean: float = REFERENCE_ZPATH_MEAN,
) -> dict[str, ModelSpec]:
    """Parameter-matched configurations: the SOC-ICNN at ``soc_depth``; every other family at
    the SOC width and the smallest depth whose parameter count reaches the SOC-ICNN's."""
    soc = family_spec("soc", in_dim, width, soc_depth, rank, block_init_scale, parameterisation, zpath_mean)
    budget = soc.num_parameters()
    out: dict[str, ModelSpec] = {}
    for family in families:
        if family == "soc":
            out[family] = soc
            continue
        spec = family_spec(family, in_dim, width, 1, rank, block_init_scale, parameterisation, zpath_mean)
        while spec.num_parameters() < budget:
            if spec.depth >= max_depth:
                raise ValueError(f"{LABELS[family]} cannot reach {budget} parameters within depth {max_depth}")
            spec = replace(spec, depth=spec.depth + 1)
        out[family] = spec
    return out


def parameter_table(specs: dict[str, ModelSpec]) -> pd.DataFrame:
    """One row per family: label, width, depth, block ranks, parameters and ratio to SOC-ICNN."""
    rows = [
        dict(
            model=s.label,
            width=s.width,
            depth=s.depth,
            quad_dims=s.quad_dims,
            norm_dims=s.norm_dims,
            params=s.num_parameters(),
        )
        for s in specs.values()
    ]
    table = pd.DataFrame(rows)
    if "soc" in specs:
        table["ratio_to_soc"] = table["params"] / specs["soc"].num_parameters()
    return table
