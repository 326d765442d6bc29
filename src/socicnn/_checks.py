"""Input validation shared by the public entry points.

Every public function validates its tensors here so that bad input fails with a message that
names the argument, instead of a traceback from deep inside PyTorch or CVXPY. Value checks
(finiteness) are skipped where a tensor's values cannot be read: under ``torch.func``
transforms and while ``torch.compile`` or ``torch.export`` trace a function (a data-dependent
branch would break the graph); shape and dtype checks still run.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import numpy as np
import torch

try:  # torch >= 2.0
    from torch._C._functorch import is_functorch_wrapped_tensor as _is_wrapped
except ImportError:  # pragma: no cover - very old torch

    def _is_wrapped(x: torch.Tensor) -> bool:
        return False


def is_transformed(x: torch.Tensor) -> bool:
    """True when ``x``'s values cannot be read (nor results cached by them): ``x`` is traced by a
    ``torch.func`` transform (vmap, grad, jacrev, ...), or ``torch.compile`` / ``torch.export``
    is tracing the caller. The tracing test comes first, so a compiled graph never meets the
    functorch query (which Dynamo cannot trace)."""
    return torch.compiler.is_compiling() or bool(_is_wrapped(x))


def check_finite(name: str, x: torch.Tensor) -> None:
    """Raise ``ValueError`` if ``x`` has NaN or infinite entries (skipped where :func:`is_transformed`)."""
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


def check_model(model, name: str = "model") -> None:
    """Raise ``TypeError`` unless ``model`` is a socicnn model: anything exposing ``blocks()``,
    ``in_dim`` and ``check_input`` (``sc.SOCICNN``, ``sc.ReLUICNN``, a bound or user
    ``BlockModel``); a ``dict``, a ``torch.nn.Linear`` or a plain function is not one."""
    if not all(hasattr(model, attr) for attr in ("blocks", "check_input", "in_dim")):
        raise TypeError(
            f"{name} must be a socicnn model (e.g. sc.SOCICNN, or a BlockModel built from blocks), "
            f"got {type(model).__name__}"
        )


# The conic solvers behind the lifting work to a relative accuracy of about 1e-8 on moderately
# scaled data. Measured with Clarabel's defaults on random SOC-ICNNs (d = 3, widths (8, 8), six
# seeds, inputs scaled by 10**k): with quadratic blocks the first failures (wrong values reported
# "optimal", or "infeasible"/"solver failed" statuses) appear once the largest of |x| and the
# blocks' values f_b(x) reaches 5e4; ReLU backbones and norm blocks alone fail from about 2e8.
LIFTING_SCALE_LIMIT = 1e4


def check_magnitude(name: str, x, limit: float, remedy: str = "") -> None:
    """Raise ``ValueError`` if an entry of ``x`` (tensor, array or number) exceeds ``limit`` in
    absolute value; ``remedy`` is appended to the message (skipped where :func:`is_transformed`)."""
    if isinstance(x, torch.Tensor):
        if is_transformed(x):
            return
        x = x.detach().to("cpu", torch.float64).numpy()
    arr = np.abs(np.asarray(x, dtype=float))
    largest = float(arr.max(initial=0.0))
    if largest > limit:
        raise ValueError(f"{name} reaches {largest:.3g} in absolute value, beyond {limit:.0e}{remedy}")


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


SUPPORTED_DTYPES = (torch.float32, torch.float64)


def check_model_dtype(dtype: torch.dtype) -> None:
    """Raise ``TypeError`` unless ``dtype`` is float32 or float64: half precisions cannot carry
    the readout's tie tests, Cholesky factors or conic lifting."""
    if dtype not in SUPPORTED_DTYPES:
        raise TypeError(
            f"socicnn models work in float32 or float64, got {dtype}; convert with model.to(torch.float32)"
        )


def check_real(name: str, value) -> float:
    """``value`` as a Python float: any real number (``int``, ``float``, NumPy scalars such as
    ``np.float32`` or ``np.int64``, a 0-d tensor), never a bool. Raises ``TypeError``
    otherwise; the caller checks the range."""
    if isinstance(value, torch.Tensor) and value.ndim == 0 and not value.is_complex():
        value = value.item()
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    return float(value)


def check_integer(name: str, value) -> int:
    """``value`` as a Python int: ``int`` or a NumPy integer, never a bool (``TypeError`` otherwise)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__}")
    return int(value)


def check_tol(tol: float, name: str = "tol") -> float:
    """Validate a degeneracy tolerance (a non-negative finite real number)."""
    tol = check_real(name, tol)
    if not math.isfinite(tol) or tol < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {tol}")
    return tol


def check_choice(name: str, value: str, choices) -> str:
    """Raise ``ValueError`` naming the allowed values when ``value`` is not one of them."""
    if value not in choices:
        raise ValueError(f"unknown {name} {value!r}; choose one of {sorted(choices)}")
    return value


def check_dims(name: str, dims: Sequence[int], allow_empty: bool) -> tuple[int, ...]:
    """``dims`` as a tuple of positive integers (a ``TypeError`` for a string, a number or
    non-integers, a ``ValueError`` for non-positive entries, or an empty one unless ``allow_empty``)."""
    if isinstance(dims, (str, bytes)):
        raise TypeError(f"{name} must be a sequence of positive integers, got the string {dims!r}")
    try:
        out = tuple(int(k) for k in dims)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{name} must be a sequence of positive integers, got {dims!r}") from exc
    if any(isinstance(k, bool) or int(k) != k for k in dims):
        raise TypeError(f"{name} must hold integers, got {dims!r}")
    if (not out and not allow_empty) or any(k <= 0 for k in out):
        kind = "a" if allow_empty else "a non-empty"
        raise ValueError(f"{name} must be {kind} sequence of positive integers, got {dims!r}")
    return out
