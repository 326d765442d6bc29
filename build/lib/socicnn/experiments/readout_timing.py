"""Timing of the dual readout against autograd (used by ``benchmarks/bench_readout.py`` and the
first-order and local-Hessian chapters).

Each comparison times the two ways of computing the same object separately, as the median of
repeated runs interleaved in rounds, after checking that they agree:

- gradient: :func:`socicnn.readout.readout` vs a forward + backward autograd pass;
- Hessian: :func:`socicnn.readout.hessian` vs ``torch.func.vmap(torch.func.hessian(f))``;
- HVP: :func:`socicnn.readout.hvp` vs autograd double backward.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import numpy as np
import torch

from .. import readout as ro

__all__ = [
    "autograd_gradient",
    "autograd_hessian",
    "autograd_hvp",
    "gradient_timing",
    "hessian_timing",
    "hvp_timing",
    "median_times",
]


def autograd_gradient(model, X: torch.Tensor) -> torch.Tensor:
    """``(N, d)`` gradients by one forward and one backward pass."""
    Xr = X.detach().requires_grad_(True)
    (g,) = torch.autograd.grad(model(Xr).sum(), Xr)
    return g


def autograd_hessian(model, X: torch.Tensor) -> torch.Tensor:
    """``(N, d, d)`` Hessians by ``torch.func.vmap(torch.func.hessian(f))``."""
    return torch.func.vmap(torch.func.hessian(model))(X.detach())


def autograd_hvp(model, X: torch.Tensor, V: torch.Tensor) -> torch.Tensor:
    """``(N, d)`` Hessian-vector products by double backward."""
    Xr = X.detach().requires_grad_(True)
    (g,) = torch.autograd.grad(model(Xr).sum(), Xr, create_graph=True)
    (hv,) = torch.autograd.grad((g * V).sum(), Xr)
    return hv


def _block_time(fn: Callable[[], object], number: int) -> float:
    t0 = time.perf_counter()
    for _ in range(number):
        fn()
    return (time.perf_counter() - t0) / number


def median_times(fns: Sequence[Callable[[], object]], min_run_time: float = 0.2, rounds: int = 15) -> list[float]:
    """Median wall time per call (seconds) of each ``fn`` in ``fns``, timed in interleaved
    rounds so that a change of machine load hits all of them alike."""
    for fn in fns:  # warm-up (allocator, lazy init)
        fn()
    numbers = [max(1, int(min_run_time / rounds / max(_block_time(fn, 1), 1e-7))) for fn in fns]
    samples: list[list[float]] = [[] for _ in fns]
    for _ in range(rounds):
        for fn, number, out in zip(fns, numbers, samples, strict=True):
            out.append(_block_time(fn, number))
    return [float(np.median(out)) for out in samples]


def _compare(name: str, readout_fn, autograd_fn, min_run_time: float, rtol: float) -> dict:
    a, b = readout_fn().detach(), autograd_fn().detach()
    err = float((a - b).norm() / b.norm().clamp_min(1e-300))
    if not err <= rtol:
        raise AssertionError(f"{name}: readout and autograd disagree (relative error {err:.2e} > {rtol:.0e})")
    t_readout, t_autograd = median_times([readout_fn, autograd_fn], min_run_time)
    speedup = t_autograd / t_readout
    return {"what": name, "readout_s": t_readout, "autograd_s": t_autograd, "speedup": speedup, "rel_err": err}


def gradient_timing(model, X: torch.Tensor, min_run_time: float = 0.2, rtol: float = 1e-5) -> dict:
    """Readout gradient vs forward + backward autograd at ``X`` ``(N, d)``: times and speedup."""
    return _compare(
        "gradient", lambda: ro.readout(model, X).grad, lambda: autograd_gradient(model, X), min_run_time, rtol
    )


def hessian_timing(model, X: torch.Tensor, min_run_time: float = 0.2, rtol: float = 1e-5) -> dict:
    """Readout Hessian vs vmapped autograd Hessian at ``X`` ``(N, d)``: times and speedup."""
    return _compare("hessian", lambda: ro.hessian(model, X), lambda: autograd_hessian(model, X), min_run_time, rtol)


def hvp_timing(model, X: torch.Tensor, V: torch.Tensor, min_run_time: float = 0.2, rtol: float = 1e-5) -> dict:
    """Readout HVP vs double-backward HVP at ``X``, ``V`` ``(N, d)``: times and speedup."""
    return _compare("hvp", lambda: ro.hvp(model, X, V), lambda: autograd_hvp(model, X, V), min_run_time, rtol)
