"""The five model families of the function-approximation benchmark, and parameter matching.

Every family is a configuration of the one :class:`~socicnn.model.SOCICNN` parameterisation
(EXPERIMENTS.md G), so all share its code paths and are convex by construction:

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
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import pandas as pd
import torch

from ._checks import check_choice
from .model import SOCICNN

__all__ = ["FAMILIES", "LABELS", "ModelSpec", "family_spec", "matched_specs", "parameter_table"]

FAMILIES = ("relu", "softplus", "quad", "norm", "soc")
LABELS = {
    "relu": "ReLU-ICNN",
    "softplus": "Softplus-ICNN",
    "quad": "Quad-ICNN",
    "norm": "Norm-ICNN",
    "soc": "SOC-ICNN",
}


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

    @property
    def label(self) -> str:
        return LABELS[self.family]

    def build(
        self,
        *,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
        seed: int | None = None,
    ) -> SOCICNN:
        """A freshly initialised model of this configuration."""
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
    family: str, in_dim: int, width: int, depth: int, rank: int | None = None, block_init_scale: float = 1.0
) -> ModelSpec:
    """The configuration of ``family`` with the given backbone and block rank (default ``in_dim``)."""
    check_choice("family", family, FAMILIES)
    for name, value in (("in_dim", in_dim), ("width", width), ("depth", depth)):
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    rank = in_dim if rank is None else rank
    if isinstance(rank, bool) or not isinstance(rank, int) or rank <= 0:
        raise ValueError(f"rank must be a positive integer, got {rank!r}")
    if not (isinstance(block_init_scale, (int, float)) and block_init_scale > 0):
        raise ValueError(f"block_init_scale must be a positive number, got {block_init_scale!r}")
    quad = (rank,) if family in ("quad", "soc") else ()
    norm = (rank,) if family in ("norm", "soc") else ()
    activation = "softplus" if family == "softplus" else "relu"
    return ModelSpec(family, in_dim, width, depth, quad, norm, activation, float(block_init_scale))


def matched_specs(
    in_dim: int,
    width: int,
    soc_depth: int = 2,
    rank: int | None = None,
    families: tuple[str, ...] = FAMILIES,
    max_depth: int = 64,
    block_init_scale: float = 1.0,
) -> dict[str, ModelSpec]:
    """Parameter-matched configurations: the SOC-ICNN at ``soc_depth``; every other family at
    the SOC width and the smallest depth whose parameter count reaches the SOC-ICNN's."""
    soc = family_spec("soc", in_dim, width, soc_depth, rank, block_init_scale)
    budget = soc.num_parameters()
    out: dict[str, ModelSpec] = {}
    for family in families:
        if family == "soc":
            out[family] = soc
            continue
        spec = family_spec(family, in_dim, width, 1, rank, block_init_scale)
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
