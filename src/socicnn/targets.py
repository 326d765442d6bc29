"""Convex target functions of the function-approximation benchmark (paper A's experiment 2).

A registry ``name -> Target``: each target is a convex function ``R^d -> R`` evaluated on a
batch ``(N, d) -> (N,)``, with its sampling domain (the box ``[low, high]^d``, ``[-3, 3]^d``
for all), its formula, and whether the SOC-ICNN of the benchmark (a ReLU backbone plus one
quadratic and one norm block of rank ``d``) represents it exactly. The formulas follow the
reference scripts of paper A (fixed weight profiles such as ``w = linspace(0.5, 2.5, d)``, so a
target has no random parameters); the smooth non-SOC-representable target ``exp_sum`` is ours, and
:data:`REFERENCE_TARGETS` lists the reference's own ten (its tenth is ``kinks_quad``).
:func:`make_dataset` samples inputs uniformly on the domain, deterministically given a seed.

Below ``w[a, b]`` is the vector ``linspace(a, b, d)`` and ``softplus(t) = log(1 + e^t)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ._checks import check_choice

__all__ = ["GROUPS", "REFERENCE_TARGETS", "Target", "TARGETS", "Dataset", "get_target", "make_dataset", "target_names"]


def _lin(x: torch.Tensor, a: float, b: float) -> torch.Tensor:
    return torch.linspace(a, b, x.shape[1], dtype=x.dtype, device=x.device)


QUAD_ANISO_W = (0.5, 2.5)
NORM_ANISO_W = (1.0, 10.0)
SQRT_EPS = 1e-12  # the reference adds it under the square roots of the anisotropic norms


def _quad_iso(x):
    return 0.5 * (x * x).sum(1)


def _quad_aniso(x):
    return 0.5 * (_lin(x, *QUAD_ANISO_W) * x * x).sum(1)


def _norm_euclid(x):
    return torch.linalg.vector_norm(x, dim=1)


def _norm_aniso(x):
    return torch.sqrt((_lin(x, *NORM_ANISO_W) * x * x).sum(1) + SQRT_EPS)


def _sqrt_diag(lo: float, hi: float) -> Callable[[int], torch.Tensor]:
    return lambda d: torch.diag(torch.linspace(lo, hi, d, dtype=torch.float64).sqrt())


def _identity(d: int) -> torch.Tensor:
    return torch.eye(d, dtype=torch.float64)


def _mixed(x):
    quad = 0.25 * (_lin(x, 0.5, 2.0) * x * x).sum(1)
    norm = 0.7 * torch.sqrt((_lin(x, 2.0, 0.5) * x * x).sum(1) + SQRT_EPS)
    a1 = _lin(x, -1.0, 1.0)
    a2 = torch.cos(_lin(x, 0.0, math.pi))
    a3 = torch.sign(_lin(x, -1.0, 1.0) + 1e-8)
    cpwl = torch.maximum(torch.maximum(x @ a1 + 0.2, x @ a2 - 0.1), x @ a3 + 0.4)
    return quad + norm + cpwl


def _softplus_sum(x):
    return F.softplus(x).sum(1)


def _logsumexp_quad(x):
    return torch.logsumexp(x, dim=1) + 0.1 * (x * x).sum(1)


def _huber(x):
    a = x.abs()
    return torch.where(a <= 1.0, 0.5 * x * x, a - 0.5).sum(1)


def _l1(x):
    return x.abs().sum(1)


def _exp_sum(x):
    return torch.exp(0.5 * x).sum(1)


def _kinks_quad(x):
    return (x.abs() + (1.0 - x).abs()).sum(1) + 0.25 * (_lin(x, 0.5, 2.0) * x * x).sum(1)


@dataclass(frozen=True)
class Target:
    """A convex benchmark function.

    Attributes:
        name: registry key.
        formula: LaTeX formula of ``f(x)``.
        fn: ``(N, d) -> (N,)`` tensor function.
        low, high: the sampling box ``[low, high]^d``.
        structure: what the function is made of, in words (which block or backbone fits it).
        group: the target's family (one of :data:`GROUPS`), for summaries per kind of target.
        soc_block: for targets that one block of the benchmark SOC-ICNN equals exactly,
            ``(kind, M)`` with ``kind`` ``"quad"`` (``f = ||M x||^2 / 2``) or ``"norm"``
            (``f = ||M x||``) and ``M(d)`` the ``(d, d)`` matrix; ``None`` otherwise.
    """

    name: str
    formula: str
    fn: Callable[[torch.Tensor], torch.Tensor]
    low: float
    high: float
    structure: str
    group: str
    soc_block: tuple[str, Callable[[int], torch.Tensor]] | None = None

    @property
    def soc_exact(self) -> bool:
        """Whether the benchmark SOC-ICNN (backbone + one quadratic and one norm block of rank
        ``d``) contains ``f`` exactly: one block equals it and the backbone can be switched off."""
        return self.soc_block is not None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(x, torch.Tensor) or x.ndim != 2 or not x.is_floating_point():
            raise ValueError(f"target {self.name!r} expects a floating tensor of shape (N, d)")
        return self.fn(x)


GROUPS = ("quadratic", "norm", "mixed", "exponential-cone", "piecewise-linear")


def _t(name, formula, fn, structure, group, soc_block=None) -> Target:
    return Target(name, formula, fn, -3.0, 3.0, structure, group, soc_block)


TARGETS: dict[str, Target] = {
    t.name: t
    for t in (
        _t("quad_iso", r"\tfrac12\|x\|^2", _quad_iso, "one quadratic block (B = I)", "quadratic", ("quad", _identity)),
        _t("quad_aniso", r"\tfrac12 \sum_i w[0.5,2.5]_i x_i^2", _quad_aniso,
           "one quadratic block (B = diag(sqrt(w)))", "quadratic", ("quad", _sqrt_diag(*QUAD_ANISO_W))),
        _t("norm_euclid", r"\|x\|_2", _norm_euclid, "one norm block (A = I)", "norm", ("norm", _identity)),
        _t("norm_aniso", r"\big(\sum_i w[1,10]_i x_i^2\big)^{1/2}", _norm_aniso,
           "one norm block (A = diag(sqrt(w)))", "norm", ("norm", _sqrt_diag(*NORM_ANISO_W))),
        _t("mixed", r"\tfrac14\sum_i w[0.5,2]_i x_i^2 + 0.7\big(\sum_i w[2,0.5]_i x_i^2\big)^{1/2}"
           r" + \max(a_1^\top x + 0.2,\ a_2^\top x - 0.1,\ a_3^\top x + 0.4)", _mixed,
           "quadratic + norm blocks exact; the max of three affine maps is left to the backbone "
           "(a_1 = w[-1,1], a_2 = cos(w[0,pi]), a_3 = sign(w[-1,1]))", "mixed"),
        _t("softplus_sum", r"\sum_i \mathrm{softplus}(x_i)", _softplus_sum,
           "smooth, exponential-cone; no block is exact", "exponential-cone"),
        _t("logsumexp_quad", r"\log\sum_i e^{x_i} + 0.1\|x\|^2", _logsumexp_quad,
           "quadratic part exact; log-sum-exp is exponential-cone", "exponential-cone"),
        _t("huber", r"\sum_i h(x_i),\ h(t) = t^2/2 \text{ if } |t|\le 1 \text{ else } |t| - 1/2", _huber,
           "SOC-representable by partial minimisation, but not a sum of one quadratic and one norm",
           "piecewise-linear"),
        _t("l1", r"\|x\|_1", _l1,
           "polyhedral: a ReLU backbone with width >= d is exact (|t| = 2 relu(t) - t)", "piecewise-linear"),
        _t("exp_sum", r"\sum_i e^{x_i/2}", _exp_sum,
           "smooth, not SOC-representable (exponential cone)", "exponential-cone"),
        _t("kinks_quad", r"\sum_i \big(|x_i| + |1 - x_i|\big) + \tfrac14 \sum_i w[0.5,2]_i x_i^2", _kinks_quad,
           "polyhedral kinks (a ReLU backbone of width >= 2d) plus a quadratic (one block)", "piecewise-linear"),
    )
}


# The ten targets of the reference scripts (their tenth is ``kinks_quad``; ``exp_sum`` is ours).
REFERENCE_TARGETS = (
    "quad_iso", "quad_aniso", "norm_euclid", "norm_aniso", "mixed",
    "softplus_sum", "logsumexp_quad", "huber", "l1", "kinks_quad",
)


def target_names() -> list[str]:
    """Registry keys in their documented order."""
    return list(TARGETS)


def get_target(name: str) -> Target:
    """The registered :class:`Target` called ``name`` (a clear ``ValueError`` otherwise)."""
    check_choice("target", name, TARGETS)
    return TARGETS[name]


@dataclass
class Dataset:
    """Inputs ``(N, d)`` and target values ``(N,)`` of the train, validation and test splits."""

    X_train: torch.Tensor
    y_train: torch.Tensor
    X_val: torch.Tensor
    y_val: torch.Tensor
    X_test: torch.Tensor
    y_test: torch.Tensor


def make_dataset(
    target: str | Target,
    dim: int,
    n_train: int = 6000,
    n_val: int = 1000,
    n_test: int = 2000,
    *,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    sample_dtype: torch.dtype = torch.float64,
) -> Dataset:
    """Sample ``x ~ U[low, high)^d`` for the three splits and evaluate the target.

    Deterministic given ``seed`` (a private CPU generator). The draws are made in
    ``sample_dtype`` (the reference draws float32), the target is evaluated in float64 on those
    draws, and both are cast to ``dtype``. The inputs depend on ``(dim, seed)`` only, so every
    target of one ``(dim, seed)`` shares them.
    """
    tgt = target if isinstance(target, Target) else get_target(target)
    if isinstance(dim, bool) or not isinstance(dim, int) or dim <= 0:
        raise ValueError(f"dim must be a positive integer, got {dim!r}")
    gen = torch.Generator().manual_seed(int(seed))
    splits = []
    for n in (n_train, n_val, n_test):
        if isinstance(n, bool) or not isinstance(n, int) or n <= 0:
            raise ValueError(f"split sizes must be positive integers, got {n!r}")
        X = tgt.low + (tgt.high - tgt.low) * torch.rand(n, dim, generator=gen, dtype=sample_dtype)
        y = tgt(X.double())
        splits += [X.to(dtype=dtype, device=device), y.to(dtype=dtype, device=device)]
    return Dataset(*splits)
