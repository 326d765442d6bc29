"""Input validation shared by the public entry points.

Every public function validates its tensors here so that bad input fails with a message that
names the argument, instead of a traceback from deep inside PyTorch or CVXPY. Value checks
(finiteness) are skipped for tensors wrapped by ``torch.func`` transforms, where reading a
tensor's values is not allowed; shape and dtype checks still run.
"""

from __future__ import annotations

import math

import numpy as np
import torch

try:  # torch >= 2.0
    from torch._C._functorch import is_functorch_wrapped_tensor as _is_wrapped
except ImportError:  # pragma: no cover - very old torch

    def _is_wrapped(x: torch.Tensor) -> bool:
        return False


def is_transformed(x: torch.Tensor) -> bool:
    """True when ``x`` is traced by a ``torch.func`` transform (vmap, grad, jacrev, ...)."""
    return bool(_is_wrapped(x))


def check_finite(name: str, x: torch.Tensor) -> None:
    """Raise ``ValueError`` if ``x`` has NaN or infinite entries (skipped under transforms)."""
    if is_transformed(x):
        return
    # One reduction settles the common case: NaN and inf propagate through a sum, so a finite
    # sum means every entry is finite. Only a non-finite (or overflowing) sum needs the
    # entrywise test, which is several times slower on CPU.
    if bool(torch.isfinite(x.sum())):
        return
    if not bool(torch.isfinite(x).all()):
        bad = int((~torch.isfinite(x)).sum())
        raise ValueError(f"{name} has {bad} non-finite entries (NaN or inf); all must be finite")


def as_input(
    name: str,
    x,
    dim: int,
    dtype: torch.dtype,
    device: torch.device,
    *,
    allow_vector: bool = True,
) -> tuple[torch.Tensor, bool]:
    """Validate a batch of points for a model of input dimension ``dim``.

    Accepts a tensor (or array) of shape ``(N, dim)``, or ``(dim,)`` when ``allow_vector``.
    Returns ``(x2d, was_vector)``. Tensors must already have the model's dtype and device
    (silent casts hide precision bugs); NumPy arrays and lists are converted.
    """
    if not isinstance(x, torch.Tensor):
        if isinstance(x, (np.ndarray, list, tuple)):
            arr = np.asarray(x)
            if not np.issubdtype(arr.dtype, np.number) or np.issubdtype(arr.dtype, np.complexfloating):
                raise TypeError(f"{name} must hold real numbers, got dtype {arr.dtype}")
            x = torch.as_tensor(arr, dtype=dtype, device=device)
        else:
            raise TypeError(f"{name} must be a torch.Tensor or array, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
    if x.dtype != dtype:
        raise TypeError(
            f"{name} has dtype {x.dtype} but the model uses {dtype}; convert one of them "
            f"(x.to({dtype}) or model.to({x.dtype}))"
        )
    if x.device.type != torch.device(device).type:
        raise ValueError(f"{name} is on {x.device} but the model is on {device}; move one of them")
    if x.ndim == 1 and allow_vector:
        vector = True
        x2 = x.unsqueeze(0)
    elif x.ndim == 2:
        vector = False
        x2 = x
    else:
        want = f"(N, {dim})" + (f" or ({dim},)" if allow_vector else "")
        raise ValueError(f"{name} must have shape {want}, got {tuple(x.shape)}")
    if x2.shape[-1] != dim:
        raise ValueError(
            f"{name} has {x2.shape[-1]} features in its last dimension but the model expects {dim}"
        )
    check_finite(name, x2)
    return x2, vector


def check_tol(tol: float) -> float:
    """Validate a degeneracy tolerance (a non-negative finite float)."""
    if not isinstance(tol, (int, float)) or isinstance(tol, bool):
        raise TypeError(f"tol must be a float, got {type(tol).__name__}")
    if not math.isfinite(tol) or tol < 0:
        raise ValueError(f"tol must be a finite number >= 0, got {tol}")
    return float(tol)


def check_choice(name: str, value: str, choices) -> str:
    """Raise ``ValueError`` naming the allowed values when ``value`` is not one of them."""
    if value not in choices:
        raise ValueError(f"unknown {name} {value!r}; choose one of {sorted(choices)}")
    return value
