"""A GPU-ready training loop for regression with convex models, in plain PyTorch.

One function, :func:`fit`, trains a model on ``(X, y)`` by mean-squared error with Adam for a
budget counted in optimiser steps (equal for every model of a comparison), and returns the
model restored to its best validation state with a per-evaluation log.

- Device: ``"auto"`` picks CUDA when present, else CPU. The data are moved to the device once
  and mini-batches are index slices of a per-epoch permutation: no ``DataLoader`` collation.
- Repeatability: the batch order comes from a private CPU generator seeded by ``seed`` (then
  moved to the device), so a run with the same model initialisation and seed is repeatable on
  CPU and uses the same batches on every device.
- Mixed precision (``amp=True``) is a CUDA-only option (bfloat16 autocast of the training
  forward pass); validation is always evaluated in full precision, so CPU and GPU numbers are
  comparable.
- A learning-rate schedule (``"constant"``, ``"cosine"`` decay with optional linear warm-up),
  early stopping on validation loss (``patience`` evaluations without improvement), gradient
  clipping by global norm, and a tqdm progress bar for long runs (off under pytest).
"""

from __future__ import annotations

import copy
import math
import os
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch import nn

from ._checks import check_choice
from .profiles import resolve_device

__all__ = ["SCHEDULES", "FitResult", "check_fit_options", "fit", "lr_factor", "mse"]

SCHEDULES = ("constant", "cosine")


@dataclass
class FitResult:
    """What :func:`fit` returns.

    Attributes:
        model: the trained model, restored to the parameters of its best validation loss
            (on the training device).
        log: one row per evaluation: ``step``, ``epoch``, ``lr``, ``train_loss`` (mean batch
            loss since the previous evaluation), ``val_loss`` (full precision), ``grad_norm``
            (mean pre-clipping gradient norm since the previous evaluation), ``time`` (seconds).
        best_step: optimiser step of the best validation loss (0: the initial model).
        best_val_loss: the best validation loss.
        steps: optimiser steps actually taken.
        stopped_early: whether early stopping ended the run before ``steps``.
        train_time: wall-clock seconds of the training loop (CUDA synchronised).
        device: the device the model was trained on.
    """

    model: nn.Module
    log: pd.DataFrame
    best_step: int
    best_val_loss: float
    steps: int
    stopped_early: bool
    train_time: float
    device: torch.device


def lr_factor(step: int, steps: int, schedule: str, warmup: int = 0, final_fraction: float = 0.0) -> float:
    """Multiplier of the base learning rate at optimiser step ``step`` (0-based) of ``steps``.

    Linear warm-up over ``warmup`` steps, then ``"constant"`` (1) or ``"cosine"`` decay from 1
    down to ``final_fraction`` at the last step.
    """
    if step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    span = max(steps - warmup - 1, 1)
    progress = min((step - warmup) / span, 1.0)
    return final_fraction + (1.0 - final_fraction) * 0.5 * (1.0 + math.cos(math.pi * progress))


def mse(model: nn.Module, X: torch.Tensor, y: torch.Tensor, batch_size: int = 65536) -> float:
    """Mean-squared error of ``model`` on ``(X (N, d), y (N,))`` in full precision, no gradients."""
    was_training = model.training
    model.eval()
    total = 0.0
    with torch.no_grad():
        for start in range(0, X.shape[0], batch_size):
            err = model(X[start : start + batch_size]) - y[start : start + batch_size]
            total += float((err * err).sum())
    model.train(was_training)
    return total / X.shape[0]


def _as_data(name: str, t, dtype: torch.dtype, device: torch.device, ndim: int) -> torch.Tensor:
    if not isinstance(t, (torch.Tensor, np.ndarray)):
        raise TypeError(f"{name} must be a torch.Tensor or numpy array, got {type(t).__name__}")
    t = torch.as_tensor(t).to(dtype=dtype, device=device)
    if t.ndim != ndim:
        shape = "(N, d)" if ndim == 2 else "(N,)"
        raise ValueError(f"{name} must have shape {shape}, got {tuple(t.shape)}")
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} has non-finite entries (NaN or inf)")
    return t


def _positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def check_fit_options(
    steps, batch_size, lr, schedule, warmup, final_lr_fraction, clip_norm, patience
) -> tuple[int, int, int | None]:
    """Validate the options shared by :func:`fit` and the batched trainer; returns
    ``(steps, batch_size, patience)`` as ints (``patience`` may be ``None``)."""
    steps = _positive_int("steps", steps)
    batch_size = _positive_int("batch_size", batch_size)
    check_choice("schedule", schedule, SCHEDULES)
    if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
        raise ValueError(f"lr must be a positive finite number, got {lr!r}")
    if clip_norm is not None and not clip_norm > 0:
        raise ValueError(f"clip_norm must be positive or None, got {clip_norm!r}")
    if patience is not None:
        patience = _positive_int("patience", patience)
    if warmup < 0 or warmup >= steps:
        raise ValueError(f"warmup must be in [0, steps), got {warmup!r}")
    if not 0.0 <= final_lr_fraction <= 1.0:
        raise ValueError(f"final_lr_fraction must be in [0, 1], got {final_lr_fraction!r}")
    return steps, batch_size, patience


def _show_progress(progress: bool | None, steps: int) -> bool:
    if progress is not None:
        return bool(progress)
    return steps >= 2000 and "PYTEST_CURRENT_TEST" not in os.environ


def fit(
    model: nn.Module,
    X_train,
    y_train,
    X_val,
    y_val,
    *,
    steps: int = 1000,
    batch_size: int = 256,
    lr: float = 1e-3,
    schedule: str = "constant",
    warmup: int = 0,
    final_lr_fraction: float = 0.0,
    weight_decay: float = 0.0,
    clip_norm: float | None = None,
    patience: int | None = None,
    min_delta: float = 0.0,
    eval_every: int | None = None,
    device: str | torch.device = "auto",
    amp: bool = False,
    seed: int = 0,
    progress: bool | None = None,
) -> FitResult:
    """Train ``model`` by MSE on ``(X_train (N, d), y_train (N,))`` for ``steps`` Adam steps.

    Args:
        model: a module mapping ``(N, d) -> (N,)``; moved to ``device`` and trained in place.
        X_train, y_train, X_val, y_val: tensors or arrays, cast to the model's dtype.
        steps: the budget in optimiser steps. Batches cycle through per-epoch permutations of
            the training set; the last batch of an epoch is the remainder (not dropped), so
            ``6000`` samples at ``batch_size=4096`` make 2 steps per epoch.
        batch_size: mini-batch size (capped at the number of training samples).
        lr: base learning rate; ``schedule`` (``"constant"`` or ``"cosine"``), ``warmup``
            (linear warm-up steps) and ``final_lr_fraction`` (cosine floor) shape it.
        weight_decay: Adam's L2 penalty.
        clip_norm: clip the global gradient norm to this value (``None``: no clipping).
        patience: stop after this many evaluations without an improvement of the best
            validation loss by more than ``min_delta`` (relative); ``None``: never stop early.
        eval_every: steps between validation evaluations (default: one epoch).
        device: ``"auto"``, ``"cpu"``, ``"cuda"`` or a ``torch.device``.
        amp: bfloat16 autocast of the training forward pass; CUDA only.
        seed: seed of the batch order.
        progress: show a tqdm bar (``None``: for runs of 2000 steps or more, never under pytest).

    Returns:
        :class:`FitResult`, with the model restored to its best validation state.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    steps, batch_size, patience = check_fit_options(
        steps, batch_size, lr, schedule, warmup, final_lr_fraction, clip_norm, patience
    )
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed must be an integer, got {seed!r}")
    dev = device if isinstance(device, torch.device) else resolve_device(device)
    if amp and dev.type != "cuda":
        raise ValueError("amp=True (mixed precision) is supported on CUDA only; use amp=False on CPU")

    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("model has no trainable parameters")
    dtype = params[0].dtype
    model.to(dev)
    Xt = _as_data("X_train", X_train, dtype, dev, 2)
    yt = _as_data("y_train", y_train, dtype, dev, 1)
    Xv = _as_data("X_val", X_val, dtype, dev, 2)
    yv = _as_data("y_val", y_val, dtype, dev, 1)
    for xname, X, yname, y in (("X_train", Xt, "y_train", yt), ("X_val", Xv, "y_val", yv)):
        if X.shape[0] != y.shape[0] or X.shape[0] == 0:
            raise ValueError(f"{xname} and {yname} must have the same non-zero length, got {X.shape[0]}, {y.shape[0]}")

    n = Xt.shape[0]
    bs = min(batch_size, n)
    per_epoch = math.ceil(n / bs)
    eval_every = per_epoch if eval_every is None else _positive_int("eval_every", eval_every)
    gen = torch.Generator().manual_seed(int(seed))
    optimizer = torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, steps, schedule, warmup, final_lr_fraction)
    )

    def synchronize() -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    best_val = mse(model, Xv, yv)
    best_state = copy.deepcopy(model.state_dict())
    best_step, bad_evals = 0, 0
    rows = [dict(step=0, epoch=0.0, lr=lr * lr_factor(0, steps, schedule, warmup, final_lr_fraction),
                 train_loss=float("nan"), val_loss=best_val, grad_norm=float("nan"), time=0.0)]
    loss_sum = torch.zeros((), dtype=torch.float64, device=dev)
    grad_sum = torch.zeros((), dtype=torch.float64, device=dev)
    since_eval = 0
    stopped_early = False
    perm = torch.empty(0, dtype=torch.long, device=dev)
    bar = None
    if _show_progress(progress, steps):
        from tqdm.auto import tqdm

        bar = tqdm(total=steps, desc=type(model).__name__, leave=False)

    model.train()
    synchronize()
    t0 = time.perf_counter()
    step = 0
    while step < steps:
        pos = (step % per_epoch) * bs
        if pos == 0:
            perm = torch.randperm(n, generator=gen).to(dev)
        idx = perm[pos : pos + bs]
        xb, yb = Xt[idx], yt[idx]
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=amp):
            pred = model(xb)
        loss = torch.mean((pred.to(dtype) - yb) ** 2)
        loss.backward()
        max_norm = clip_norm if clip_norm is not None else float("inf")
        gnorm = torch.nn.utils.clip_grad_norm_(params, max_norm)
        optimizer.step()
        scheduler.step()
        step += 1
        since_eval += 1
        loss_sum += loss.detach().to(torch.float64)
        grad_sum += gnorm.detach().to(torch.float64)
        if bar is not None:
            bar.update(1)
        if step % eval_every == 0 or step == steps:
            val = mse(model, Xv, yv)
            train_loss = float(loss_sum) / since_eval
            synchronize()
            rows.append(dict(step=step, epoch=step / per_epoch, lr=optimizer.param_groups[0]["lr"],
                             train_loss=train_loss, val_loss=val, grad_norm=float(grad_sum) / since_eval,
                             time=time.perf_counter() - t0))
            loss_sum.zero_()
            grad_sum.zero_()
            since_eval = 0
            if not math.isfinite(train_loss) or not math.isfinite(val):
                break  # diverged: keep the best finite state
            if val < best_val * (1.0 - min_delta):
                best_val, best_step, bad_evals = val, step, 0
                best_state = copy.deepcopy(model.state_dict())
            else:
                bad_evals += 1
                if patience is not None and bad_evals >= patience:
                    stopped_early = step < steps
                    break
    synchronize()
    train_time = time.perf_counter() - t0
    if bar is not None:
        bar.close()
    model.load_state_dict(best_state)
    model.eval()
    return FitResult(
        model=model,
        log=pd.DataFrame(rows),
        best_step=best_step,
        best_val_loss=best_val,
        steps=step,
        stopped_early=stopped_early,
        train_time=train_time,
        device=dev,
    )
