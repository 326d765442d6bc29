"""Image restoration: the corruption, the true energy (an SOCP) and its exact optimum.

For a clean image ``X`` (``H x W``, pixels in ``[0, 1]``): a keep mask ``M`` (Bernoulli(0.8) per
pixel times 2-4 rectangular holes of 1/8-3/16 of the side, 8-12 px at 64 x 64), a 5 x 5
Gaussian blur ``K`` (sigma 0.7, zero padding), noise ``0.1 xi``, and the observation
``Y = clamp(M * (K X + 0.1 xi), 0, 1)``; the context is ``[Y, M]``. The true energy, means over
pixels,

``E(X) = 1/2 mean[(M (K X - Y))^2] + 0.035/2 mean[(Lap X)^2] + 0.055 mean[sqrt(Dx X^2 + Dy X^2 + 1e-4)]``

(``Lap`` the 5-point Laplacian with zero padding; ``Dx, Dy`` forward differences, zero across the
last column / row) is an SOCP: ``sqrt(v^2 + eps) = ||(v, sqrt(eps))||``. :func:`exact_optimum`
solves it over ``[0, 1]^{H W}`` with a conic solver (status checked); :func:`first_order_optimum`
is the cross-check (FISTA with a Frank-Wolfe certificate).
"""

from __future__ import annotations

from dataclasses import dataclass

import cvxpy as cp
import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F

from .convmaps import ConvMap
from .ground_truth import BoxSolution, ConicSolution, accelerated_box, solve_conic

__all__ = [
    "Corrupted",
    "EnergyWeights",
    "candidates",
    "corrupt",
    "exact_optimum",
    "first_order_optimum",
    "true_energy",
]

KEEP, NOISE, SIGMA, EPS = 0.8, 0.1, 0.7, 1e-4


@dataclass(frozen=True)
class EnergyWeights:
    """The weights of the true energy's three terms and the smoothing ``eps`` of its TV term."""

    data: float = 0.5
    laplacian: float = 0.035 / 2
    tv: float = 0.055
    eps: float = EPS


def blur_kernel(dtype=torch.float64) -> torch.Tensor:
    """The normalised 5 x 5 Gaussian kernel (sigma 0.7) ``(1, 1, 5, 5)``."""
    r = torch.arange(-2, 3, dtype=dtype)
    g = torch.exp(-(r[:, None] ** 2 + r[None] ** 2) / (2 * SIGMA**2))
    return (g / g.sum())[None, None]


LAPLACIAN = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]], dtype=torch.float64)[None, None]


def blur(X: torch.Tensor) -> torch.Tensor:
    """``K X`` for images ``(N, H, W)`` (zero padding)."""
    return F.conv2d(X[:, None], blur_kernel(X.dtype).to(X.device), padding=2)[:, 0]


def _laplacian(X: torch.Tensor) -> torch.Tensor:
    return F.conv2d(X[:, None], LAPLACIAN.to(X), padding=1)[:, 0]


def _grads(X: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    dx = F.pad(X[:, :, 1:] - X[:, :, :-1], (0, 1))
    dy = F.pad(X[:, 1:, :] - X[:, :-1, :], (0, 0, 0, 1))
    return dx, dy


def true_energy(X: torch.Tensor, Y: torch.Tensor, M: torch.Tensor, w: EnergyWeights = EnergyWeights()) -> torch.Tensor:
    """``E(X; Y, M)`` ``(N,)`` for images ``X, Y, M`` ``(N, H, W)`` (differentiable)."""
    res = M * (blur(X) - Y)
    dx, dy = _grads(X)
    tv = torch.sqrt(dx * dx + dy * dy + w.eps)
    mean = lambda t: t.mean((-2, -1))  # noqa: E731
    return w.data * mean(res * res) + w.laplacian * mean(_laplacian(X) ** 2) + w.tv * mean(tv)


def lipschitz(H: int, W: int, w: EnergyWeights = EnergyWeights()) -> float:
    """An upper bound on the Lipschitz constant of ``grad E``: ``||K|| <= 1``, ``||Lap|| <= 8``,
    ``||D|| <= sqrt(8)`` and ``sqrt(.+eps)'' <= 1/sqrt(eps)``."""
    return (2 * w.data + 2 * w.laplacian * 64 + w.tv * 8 / np.sqrt(w.eps)) / (H * W)


@dataclass
class Corrupted:
    """Clean ``X``, mask ``M`` and observation ``Y``, each ``(N, H, W)``; ``context`` ``[Y, M]``."""

    X: torch.Tensor
    M: torch.Tensor
    Y: torch.Tensor

    @property
    def context(self) -> torch.Tensor:
        return torch.stack([self.Y, self.M], dim=1)


def corrupt(X: torch.Tensor, seed: int = 0) -> Corrupted:
    """The corruption of the module docstring applied to clean images ``X`` ``(N, H, W)``."""
    g = torch.Generator().manual_seed(seed)
    N, H, W = X.shape
    M = (torch.rand(N, H, W, generator=g, dtype=torch.float64) < KEEP).to(X.dtype)
    lo, hi = max(1, round(H / 8)), max(1, round(3 * H / 16))
    for i in range(N):
        for _ in range(int(torch.randint(2, 5, (1,), generator=g))):
            h, w_ = (int(torch.randint(lo, hi + 1, (1,), generator=g)) for _ in range(2))
            y0, x0 = (
                int(torch.randint(0, H - h + 1, (1,), generator=g)),
                int(torch.randint(0, W - w_ + 1, (1,), generator=g)),
            )
            M[i, y0 : y0 + h, x0 : x0 + w_] = 0
    noise = NOISE * torch.randn(N, H, W, generator=g, dtype=torch.float64).to(X.dtype)
    Y = (M * (blur(X) + noise)).clamp(0, 1)
    return Corrupted(X, M, Y)


def candidates(c: Corrupted, seed: int = 0) -> torch.Tensor:
    """16 candidate images per clean image ``(N, 16, H, W)``: the observation, the clean image,
    its blur, noisy copies, the observation's blur, hole fill, and 8 blends of clean and observed."""
    g = torch.Generator().manual_seed(seed)
    X, Y, M = c.X, c.Y, c.M

    def noisy(Z: torch.Tensor, s: float) -> torch.Tensor:
        return (Z + s * torch.randn(Z.shape, generator=g, dtype=Z.dtype)).clamp(0, 1)

    fill = M * Y + (1 - M) * (Y.sum((-2, -1), keepdim=True) / M.sum((-2, -1), keepdim=True).clamp(min=1))
    out = [Y, X, blur(X), noisy(X, 0.05), noisy(X, 0.1), noisy(Y, 0.05), blur(Y), fill]
    out += [(1 - t) * X + t * Y for t in torch.linspace(0.1, 0.9, 8).tolist()]
    return torch.stack(out, dim=1)


# ----------------------------------------------------------------------------- exact optimum
def _difference(n: int) -> sp.csr_matrix:
    """Forward differences on ``n`` points, zero at the last one."""
    D = sp.diags([-np.ones(n), np.ones(n - 1)], [0, 1], shape=(n, n)).tolil()
    D[n - 1, n - 1] = 0.0
    return D.tocsr()


def _operators(H: int, W: int) -> dict[str, sp.csr_matrix]:
    def fixed(kernel: torch.Tensor) -> sp.csr_matrix:
        m = ConvMap(1, 1, kernel.shape[-1], H, W, dtype=torch.float64)
        with torch.no_grad():
            m.raw.copy_(kernel)
        return m.sparse()

    return {
        "K": fixed(blur_kernel()),
        "L": fixed(LAPLACIAN),
        "Dx": sp.kron(sp.identity(H), _difference(W)).tocsr(),
        "Dy": sp.kron(_difference(H), sp.identity(W)).tocsr(),
    }


class ExactRestoration:
    """``min_{X in [0,1]^{HW}} E(X; Y, M)`` as one parametrised SOCP (compiled once; ``Y`` and
    ``M`` are parameters), solved per image by :meth:`solve`."""

    def __init__(self, H: int, W: int, w: EnergyWeights = EnergyWeights(), solver: str = "clarabel") -> None:
        ops, P = _operators(H, W), H * W
        self.H, self.W, self.solver = H, W, solver
        self.x = cp.Variable(P)
        self.y = cp.Parameter(P)
        self.m = cp.Parameter(P, nonneg=True)
        res = cp.multiply(self.m, ops["K"] @ self.x) - self.y  # y is already masked: M Y = Y
        grads = cp.vstack([ops["Dx"] @ self.x, ops["Dy"] @ self.x, np.full(P, np.sqrt(w.eps))])
        objective = (
            w.data * cp.sum_squares(res)
            + w.laplacian * cp.sum_squares(ops["L"] @ self.x)
            + w.tv * cp.sum(cp.norm(grads, 2, axis=0))
        ) / P
        self.problem = cp.Problem(cp.Minimize(objective), [self.x >= 0, self.x <= 1])

    def solve(self, Y: torch.Tensor, M: torch.Tensor) -> tuple[torch.Tensor, ConicSolution]:
        """The exact optimum ``(H, W)`` for one observation and its solve record."""
        m = M.detach().to("cpu", torch.float64).numpy().reshape(-1)
        self.m.value = m
        self.y.value = m * Y.detach().to("cpu", torch.float64).numpy().reshape(-1)
        sol = solve_conic(self.problem, self.solver)
        return torch.as_tensor(self.x.value.reshape(self.H, self.W)).to(Y), sol


def exact_optimum(c: Corrupted, solver: str = "clarabel") -> tuple[torch.Tensor, list[ConicSolution]]:
    """Exact optima ``(N, H, W)`` of the true energy over ``[0, 1]`` for every observation."""
    N, H, W = c.Y.shape
    problem = ExactRestoration(H, W, solver=solver)
    out = [problem.solve(c.Y[i], c.M[i]) for i in range(N)]
    return torch.stack([x for x, _ in out]), [s for _, s in out]


def first_order_optimum(c: Corrupted, tol: float = 1e-7, max_iter: int = 20000) -> BoxSolution:
    """The convergent first-order cross-check: FISTA over ``[0, 1]`` from the observation, with a
    Frank-Wolfe gap certificate per image (``x`` flattened ``(N, H W)``)."""
    N, H, W = c.Y.shape

    def f(x: torch.Tensor) -> torch.Tensor:
        return true_energy(x.reshape(N, H, W), c.Y, c.M)

    return accelerated_box(f, c.Y.reshape(N, -1), lipschitz(H, W), tol=tol, max_iter=max_iter)
