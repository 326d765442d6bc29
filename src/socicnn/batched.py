"""Train many small models of one architecture at once (the batched counterpart of :func:`~socicnn.train.fit`).

A sweep such as the function-approximation benchmark trains hundreds of models with a few
thousand parameters each. One at a time, every optimiser step is a few dozen tiny kernels and
the time goes to per-operation overhead, not arithmetic. :func:`fit_batched` stacks the
parameters of ``M`` models of one architecture along a leading axis
(:func:`torch.func.stack_module_state`) and evaluates all of them in one call of
:func:`torch.func.functional_call` under :func:`torch.func.vmap`, so one optimiser step of the
``M`` models costs about as many kernel launches as one step of one model.

The result is the one-at-a-time loop's, model by model, up to floating-point reassociation:

- each model sees the batches :func:`~socicnn.train.fit` would give it (a private generator per
  seed, a fresh permutation each epoch, the remainder batch kept), and its loss is its own mean
  squared error (the summed loss has the same gradient per model);
- gradient clipping uses each model's own global gradient norm, Adam's update and its coupled
  weight decay are elementwise, and the learning-rate schedule is shared (equal budgets);
- validation, best-state tracking and early stopping (``patience``) are per model; a model that
  stops keeps being carried along (its updates are ignored), so stopping never changes another
  model's arithmetic.

Convexity is untouched: the models' constraints are built into their parameterisations (nonnegative
weights through ``|.|`` or softplus), which ``functional_call`` evaluates unchanged.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from .profiles import resolve_device
from .train import FitResult, _positive_int, check_fit_options, lr_factor

__all__ = ["fit_batched"]


def _stack_data(name: str, t, m: int, dtype: torch.dtype, dev: torch.device, ndims: tuple[int, ...]) -> torch.Tensor:
    if not isinstance(t, (torch.Tensor, np.ndarray)):
        raise TypeError(f"{name} must be a torch.Tensor or numpy array, got {type(t).__name__}")
    t = torch.as_tensor(t).to(dtype=dtype, device=dev)
    if t.ndim not in ndims:
        raise ValueError(f"{name} must have {' or '.join(map(str, ndims))} dimensions, got shape {tuple(t.shape)}")
    if t.ndim == max(ndims) and t.shape[0] != m:
        raise ValueError(f"{name} stacks {t.shape[0]} datasets but {m} models were given")
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} has non-finite entries (NaN or inf)")
    return t


def _check_models(models: Sequence[nn.Module]) -> None:
    if not models or not all(isinstance(m, nn.Module) for m in models):
        raise TypeError("models must be a non-empty sequence of torch.nn.Module")
    ref = [(n, p.shape, p.dtype) for n, p in models[0].named_parameters()]
    if not ref:
        raise ValueError("models have no trainable parameters")
    for i, m in enumerate(models[1:], 1):
        if type(m) is not type(models[0]) or [(n, p.shape, p.dtype) for n, p in m.named_parameters()] != ref:
            raise ValueError(f"model {i} does not have the architecture of model 0; batch models of one architecture")


def fit_batched(
    models: Sequence[nn.Module],
    X_train,
    y_train,
    X_val,
    y_val,
    *,
    seeds: int | Sequence[int] = 0,
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
) -> list[FitResult]:
    """Train ``M`` models of one architecture together, each as :func:`~socicnn.train.fit` would.

    Args:
        models: ``M`` modules of one architecture (same class, parameter names and shapes),
            mapping ``(N, d) -> (N,)`` without data-dependent branches and without layers that
            behave differently in training and evaluation (dropout, batch norm); trained in place.
        X_train, X_val: inputs shared by every model ``(N, d)``, or one set per model ``(M, N, d)``.
        y_train, y_val: targets, one row per model ``(M, N)``.
        seeds: the batch-order seed of every model (an int for all, or ``M`` ints), as
            ``fit(..., seed=...)``.
        steps, batch_size, lr, schedule, warmup, final_lr_fraction, weight_decay, clip_norm,
        patience, min_delta, eval_every, device: as in :func:`~socicnn.train.fit`, shared by
            every model.

    Returns:
        One :class:`~socicnn.train.FitResult` per model, in order, each model restored to its
        best validation state. ``train_time`` is the batched loop's wall time divided by ``M``
        (the amortised cost per model); the logs' ``time`` column is the batched loop's clock.
    """
    models = list(models)
    _check_models(models)
    m = len(models)
    steps, batch_size, patience = check_fit_options(
        steps, batch_size, lr, schedule, warmup, final_lr_fraction, clip_norm, patience
    )
    seed_list = [seeds] * m if isinstance(seeds, (int, np.integer)) and not isinstance(seeds, bool) else list(seeds)
    if len(seed_list) != m or any(isinstance(s, bool) or not isinstance(s, (int, np.integer)) for s in seed_list):
        raise ValueError(f"seeds must be an integer or {m} integers, got {seeds!r}")
    dev = device if isinstance(device, torch.device) else resolve_device(device)
    dtype = next(models[0].parameters()).dtype

    Xt = _stack_data("X_train", X_train, m, dtype, dev, (2, 3))
    Xv = _stack_data("X_val", X_val, m, dtype, dev, (2, 3))
    yt = _stack_data("y_train", y_train, m, dtype, dev, (2,))
    yv = _stack_data("y_val", y_val, m, dtype, dev, (2,))
    for xname, X, yname, y in (("X_train", Xt, "y_train", yt), ("X_val", Xv, "y_val", yv)):
        if X.shape[-2] != y.shape[1] or y.shape[1] == 0:
            raise ValueError(f"{xname} and {yname} must have the same non-zero length, got {X.shape[-2]}, {y.shape[1]}")

    for model in models:
        model.to(dev).train()
    params, buffers = stack_module_state(models)
    template = copy.deepcopy(models[0]).to("meta")

    def one(p: dict, b: dict, x: torch.Tensor) -> torch.Tensor:
        return functional_call(template, (p, b), (x,))

    x_shared = Xt.ndim == 2
    fwd_shared, fwd_each = vmap(one, in_dims=(0, 0, None)), vmap(one, in_dims=(0, 0, 0))

    def val_mse() -> torch.Tensor:
        with torch.no_grad():
            pred = (fwd_shared if Xv.ndim == 2 else fwd_each)(params, buffers, Xv)
            err = pred - yv
            return (err * err).sum(1).double() / yv.shape[1]

    n = yt.shape[1]
    bs = min(batch_size, n)
    per_epoch = math.ceil(n / bs)
    eval_every = per_epoch if eval_every is None else _positive_int("eval_every", eval_every)
    unique = sorted(set(int(s) for s in seed_list))
    gens = {s: torch.Generator().manual_seed(s) for s in unique}
    which = torch.tensor([unique.index(int(s)) for s in seed_list], device=dev)
    rows_of = torch.arange(m, device=dev)[:, None]
    plist = list(params.values())
    optimizer = torch.optim.Adam(plist, lr=lr, weight_decay=weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, steps, schedule, warmup, final_lr_fraction)
    )
    max_norm = clip_norm if clip_norm is not None else float("inf")

    best_val = val_mse().cpu().numpy()
    best = {k: v.detach().clone() for k, v in params.items()}
    best_step = np.zeros(m, dtype=int)
    bad = np.zeros(m, dtype=int)
    active = np.ones(m, dtype=bool)
    stopped_early = np.zeros(m, dtype=bool)
    taken = np.full(m, steps)
    lr0 = lr * lr_factor(0, steps, schedule, warmup, final_lr_fraction)
    logs = [[dict(step=0, epoch=0.0, lr=lr0, train_loss=float("nan"), val_loss=float(best_val[i]),
                  grad_norm=float("nan"), time=0.0)] for i in range(m)]
    loss_sum = torch.zeros(m, dtype=torch.float64, device=dev)
    grad_sum = torch.zeros(m, dtype=torch.float64, device=dev)
    since_eval = 0

    def synchronize() -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    synchronize()
    t0 = time.perf_counter()
    step = 0
    perm = None
    while step < steps and active.any():
        pos = (step % per_epoch) * bs
        if pos == 0:
            perm = torch.stack([torch.randperm(n, generator=gens[s]) for s in unique]).to(dev)
        idx = perm[:, pos : pos + bs]  # (unique seeds, bs)
        if len(unique) == 1:
            idx = idx[0]
            xb = Xt[idx] if x_shared else Xt[:, idx]
            yb = yt[:, idx]
        else:
            idx = idx[which]  # (M, bs)
            xb = Xt[idx] if x_shared else Xt[rows_of, idx]
            yb = yt.gather(1, idx)
        optimizer.zero_grad(set_to_none=True)
        pred = (fwd_shared if xb.ndim == 2 else fwd_each)(params, buffers, xb)
        losses = ((pred - yb) ** 2).mean(1)
        losses.sum().backward()
        with torch.no_grad():
            norms = torch.linalg.vector_norm(
                torch.stack([torch.linalg.vector_norm(p.grad.reshape(m, -1), dim=1) for p in plist], 1), dim=1
            )
            coef = (max_norm / (norms + 1e-6)).clamp(max=1.0)
            for p in plist:
                p.grad.mul_(coef.view(-1, *([1] * (p.ndim - 1))))
        optimizer.step()
        scheduler.step()
        step += 1
        since_eval += 1
        loss_sum += losses.detach().double()
        grad_sum += norms.double()
        if step % eval_every == 0 or step == steps:
            val = val_mse().cpu().numpy()
            train_loss = (loss_sum / since_eval).cpu().numpy()
            grad = (grad_sum / since_eval).cpu().numpy()
            synchronize()
            now = time.perf_counter() - t0
            lr_now = optimizer.param_groups[0]["lr"]
            loss_sum.zero_()
            grad_sum.zero_()
            since_eval = 0
            improved = np.zeros(m, dtype=bool)
            for i in np.flatnonzero(active):
                logs[i].append(dict(step=step, epoch=step / per_epoch, lr=lr_now, train_loss=float(train_loss[i]),
                                    val_loss=float(val[i]), grad_norm=float(grad[i]), time=now))
                if not math.isfinite(train_loss[i]) or not math.isfinite(val[i]):
                    active[i], taken[i] = False, step  # diverged: keep the best finite state
                elif val[i] < best_val[i] * (1.0 - min_delta):
                    best_val[i], best_step[i], bad[i], improved[i] = val[i], step, 0, True
                else:
                    bad[i] += 1
                    if patience is not None and bad[i] >= patience:
                        active[i], taken[i], stopped_early[i] = False, step, step < steps
            if improved.any():
                mask = torch.as_tensor(improved, device=dev)
                with torch.no_grad():
                    for k, v in params.items():
                        best[k][mask] = v.detach()[mask]
    synchronize()
    elapsed = time.perf_counter() - t0
    results = []
    for i, model in enumerate(models):
        with torch.no_grad():
            for k, p in model.named_parameters():
                p.copy_(best[k][i])
            for k, b in model.named_buffers():
                b.copy_(buffers[k][i])
        model.eval()
        results.append(FitResult(
            model=model, log=pd.DataFrame(logs[i]), best_step=int(best_step[i]), best_val_loss=float(best_val[i]),
            steps=int(taken[i]), stopped_early=bool(stopped_early[i]), train_time=elapsed / m, device=dev,
        ))
    return results
