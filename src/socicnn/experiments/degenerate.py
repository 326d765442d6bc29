"""Degenerate inputs and set-valued geometry (the chapter 'Degenerate inputs'; paper B).

At a point ``x0`` where a ReLU unit has ``a = 0`` or a norm block has ``u = 0`` the model is
not differentiable and its subdifferential ``∂f(x0) = G(D*(x0))`` is a set. The checks:

(a) the directional derivative three ways: the forward pass of directional derivatives
    (:func:`socicnn.readout.directional_derivative`), the max over optimal duals as a conic
    program (:class:`socicnn.subdifferential.OptimalDualSet`), and one-sided finite differences;
(b) slopes of randomly sampled optimal duals never exceed it: ``G(xi)^T delta <= f'(x0; delta)``;
(c) the canonical readout satisfies the support inequality ``f(y) >= f(x0) + G^T (y - x0)``;
(d) the minimum-norm subgradient vs the canonical selector.

Ties are planted by construction (:func:`plant_ties`) so that they are exact up to rounding,
on a hand-built 2-D net and on deep random nets.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from ..model import SOCICNN
from ..readout import directional_derivative, readout
from ..subdifferential import OptimalDualSet
from ..weights import SOCICNNWeights

__all__ = [
    "DegenerateReport",
    "check_degenerate_point",
    "deep_planted_model",
    "hand_built_model",
    "plant_ties",
    "subdifferential_outline",
]


def hand_built_model(dtype: torch.dtype = torch.float64) -> tuple[SOCICNN, torch.Tensor]:
    """A 2-D SOC-ICNN with one ReLU tie and one norm-block tie (``u = 0``) at ``x0 = (0, 0)``.

    ``f(x) = relu(x_1 - x_2) + relu(x_1 + x_2 + 1) + 0.3 x_2 + 0.5 ||(x_1, 2 x_2)||
    + 0.1 ||x - (1, -1)||^2 / 2``: at ``x0`` the first unit is tied, the second active, and
    ``∂f(x0)`` is a parallelogram-like set (a segment swept by an ellipse).
    """
    kw = {"dtype": dtype}
    w = SOCICNNWeights(
        W=[torch.tensor([[1.0, -1.0], [1.0, 1.0]], **kw)],
        U=[None],
        b=[torch.tensor([0.0, 1.0], **kw)],
        c=torch.tensor([1.0, 1.0], **kw),
        v=torch.tensor([0.0, 0.3], **kw),
        b0=torch.tensor(0.0, **kw),
        quad=[(torch.tensor(0.1, **kw), torch.eye(2, **kw), torch.tensor([-1.0, 1.0], **kw))],
        norm=[(torch.tensor(0.5, **kw), torch.tensor([[1.0, 0.0], [0.0, 2.0]], **kw), torch.zeros(2, **kw))],
    )
    return SOCICNN.from_weights(w), torch.zeros(2, **kw)


@torch.no_grad()
def plant_ties(
    model: SOCICNN, x0: torch.Tensor, relu_units: Sequence[tuple[int, int]] = (), norm_blocks: Sequence[int] = ()
) -> SOCICNN:
    """A copy of ``model`` with exact ties at ``x0``: unit ``i`` of layer ``l`` (0-based) gets
    ``a_{l,i}(x0) = 0`` by shifting its bias, norm block ``g`` gets ``u_g(x0) = 0`` by setting
    ``d_g = -A_g x0``. Layers are tied bottom-up, since a tie changes the layers above it."""
    out = copy.deepcopy(model)
    bb = out.backbone
    for l, i in sorted(relu_units):
        a = bb.preactivations(x0[None])[l][0]
        bb.b[l][i] -= a[i]
    for g in norm_blocks:
        blk = out.norm_blocks[g]
        blk.d.copy_(-(x0[None] @ blk.A.T)[0])
    return out


@torch.no_grad()
def deep_planted_model(
    d: int,
    hidden: Sequence[int],
    quad_dims: Sequence[int] = (),
    norm_dims: Sequence[int] = (),
    *,
    passthrough: bool = True,
    ties_per_layer: int = 1,
    tie_norm: bool = True,
    seed: int = 0,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
) -> tuple[SOCICNN, torch.Tensor]:
    """A random deep model and a point ``x0`` with planted ties: in every layer, the
    ``ties_per_layer`` units whose tie matters most (largest canonical ``upper``), and, if
    ``tie_norm``, ``u = 0`` in the first norm block. Returns ``(model, x0)``."""
    base = SOCICNN(d, hidden, quad_dims, norm_dims, passthrough, dtype=dtype, device=device, seed=seed)
    gen = torch.Generator().manual_seed(seed + 1)
    x0 = torch.randn(d, generator=gen, dtype=torch.float64).to(dtype=dtype, device=base.device)
    model = base
    units: list[tuple[int, int]] = []
    for l in range(len(hidden)):
        # The bound upper_l = U_{l+1}^T nu_{l+1} at the current point: ties where it is largest
        # change the slope the most.
        st = model.backbone.state(x0[None])
        upper = model.backbone.c if l == len(hidden) - 1 else (st.nu[l + 1] @ model.backbone.U_eff(l + 1))[0]
        units += [(l, int(i)) for i in torch.argsort(upper, descending=True)[:ties_per_layer]]
        model = plant_ties(base, x0, units)
    norm = [0] if (tie_norm and len(norm_dims)) else []
    return plant_ties(base, x0, units, norm), x0


@dataclass
class DegenerateReport:
    """What :func:`check_degenerate_point` measured at one degenerate point.

    Attributes:
        directions: per direction ``forward, conic, finite_diff`` (one-sided, step ``h``) and
            ``sampled_max`` (the largest ``G(xi)^T delta`` over the sampled duals).
        support: per test point ``y``: ``radius`` and ``slack = f(y) - f(x0) - G^T (y - x0)``.
        summary: one row of headline numbers (max discrepancies, norms, counts).
        sampled_slopes: ``(n_duals, d)`` slopes of the sampled optimal duals.
        canonical: ``(d,)`` the canonical readout slope; ``min_norm``: ``(d,)`` the min-norm one.
    """

    directions: pd.DataFrame
    support: pd.DataFrame
    summary: pd.DataFrame
    sampled_slopes: np.ndarray
    canonical: np.ndarray
    min_norm: np.ndarray


@torch.no_grad()
def check_degenerate_point(
    model: SOCICNN,
    x0: torch.Tensor,
    *,
    tol: float = 1e-9,
    n_directions: int = 1000,
    n_duals: int = 5000,
    n_support: int = 5000,
    fd_step: float = 1e-7,
    seed: int = 0,
) -> DegenerateReport:
    """Run checks (a)-(d) of the chapter at ``x0`` ``(d,)`` (see the module docstring).

    Directions are uniform on the unit sphere; support points are ``y = x0 + rho s`` with
    ``s`` on the sphere and ``rho`` log-uniform in ``[1e-6, 10]``.
    """
    d = model.in_dim
    kw = {"dtype": model.dtype, "device": model.device}
    gen = torch.Generator().manual_seed(seed)
    dset = OptimalDualSet(model, x0, tol)

    deltas = torch.randn(n_directions, d, generator=gen, dtype=torch.float64)
    deltas = (deltas / deltas.norm(dim=1, keepdim=True)).to(**kw)
    X0 = x0.expand(n_directions, d)
    forward = directional_derivative(model, X0, deltas, tol)
    conic = dset.max_directional_derivative(deltas)
    finite_diff = (model(X0 + fd_step * deltas) - model(X0)) / fd_step
    slopes = dset.sample(n_duals, seed=seed).slopes
    sampled_max = (deltas @ slopes.T).amax(dim=1)

    s = torch.randn(n_support, d, generator=gen, dtype=torch.float64)
    rho = 10.0 ** torch.empty(n_support, 1, dtype=torch.float64).uniform_(-6.0, 1.0, generator=gen)
    Y = (x0.to(torch.float64) + rho * s / s.norm(dim=1, keepdim=True)).to(**kw)
    ro = readout(model, x0[None], tol)
    slack = model(Y) - ro.value - (Y - x0) @ ro.grad[0]
    min_norm = dset.min_norm_subgradient()

    def arr(t: torch.Tensor) -> np.ndarray:
        return t.detach().to("cpu", torch.float64).numpy()

    directions = pd.DataFrame(
        {"forward": arr(forward), "conic": arr(conic), "finite_diff": arr(finite_diff), "sampled_max": arr(sampled_max)}
    )
    support = pd.DataFrame({"radius": arr(rho[:, 0]), "slack": arr(slack)})
    scale = 1.0 + directions["forward"].abs().max()
    summary = pd.DataFrame(
        [
            {
                "margin": dset.margin,
                "forward_vs_conic": (directions.forward - directions.conic).abs().max() / scale,
                "forward_vs_fd": (directions.forward - directions.finite_diff).abs().max() / scale,
                "sampled_excess": (directions.sampled_max - directions.forward).max() / scale,
                "support_min_slack": support.slack.min(),
                "canonical_norm": float(np.linalg.norm(arr(ro.grad[0]))),
                "min_norm": float(np.linalg.norm(arr(min_norm))),
                "canonical_in_set": dset.contains(ro.grad[0]),
                "min_norm_in_set": dset.contains(min_norm),
            }
        ]
    )
    return DegenerateReport(directions, support, summary, arr(slopes), arr(ro.grad[0]), arr(min_norm))


def subdifferential_outline(model: SOCICNN, x0: torch.Tensor, tol: float = 1e-9, n_angles: int = 180) -> np.ndarray:
    """Boundary of ``∂f(x0)`` for a 2-D model: ``(n_angles, 2)`` points ``argmax_{g ∈ ∂f} g^T delta``
    (one conic program each) as ``delta`` turns once around the circle."""
    if model.in_dim != 2:
        raise ValueError(f"the outline is drawn for 2-D models; this one has in_dim={model.in_dim}")
    dset = OptimalDualSet(model, x0, tol)
    theta = np.linspace(0.0, 2 * np.pi, n_angles, endpoint=False)
    dirs = torch.as_tensor(np.stack([np.cos(theta), np.sin(theta)], 1), dtype=model.dtype, device=model.device)
    return dset.support_points(dirs).cpu().double().numpy()
