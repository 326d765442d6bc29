"""Train many small models of one architecture at once (the batched counterpart of :func:`~socicnn.train.fit`).

A sweep such as the function-approximation benchmark trains hundreds of models with a few
thousand parameters each. One at a time, every optimiser step is a few dozen small kernels, each
followed by its autograd bookkeeping, and the time goes to per-operation overhead and to many
passes over small tensors. :func:`fit_batched` keeps the parameters of ``M`` models of one
architecture in one ``(M, P)`` buffer and takes one optimiser step of all of them with one
kernel per layer:

- :class:`~socicnn.families.ReferenceICNN` models (the reference parameterisation of every
  family) run a hand-written forward and backward pass: one batched matrix product per layer and
  per gradient (``torch.bmm`` over the model axis), the activation's derivative recovered from
  the stored activations, and no autograd graph;
- any other architecture is evaluated by :func:`torch.func.functional_call` under
  :func:`torch.func.vmap` with views of the buffer as its parameters, and differentiated by
  autograd;
- gradient clipping and Adam (with its coupled weight decay) act on the whole buffer at once.

The result is the one-at-a-time loop's, model by model, up to floating-point reassociation:

- each model sees the batches :func:`~socicnn.train.fit` would give it (a private generator per
  seed, a fresh permutation each epoch, the remainder batch kept), and its loss is its own mean
  squared error;
- gradient clipping uses each model's own global gradient norm, Adam's update
  (:class:`torch.optim.Adam`'s arithmetic) and its coupled weight decay are elementwise, and the
  learning-rate schedule is shared (equal budgets);
- validation, best-state tracking and early stopping (``patience``) are per model; a model that
  stops keeps being carried along (its updates are ignored), so stopping never changes another
  model's arithmetic.

Convexity is untouched: the models' constraints are built into their parameterisations (nonnegative
weights through ``|.|`` or softplus), which both paths evaluate unchanged.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, vmap

from .families import ReferenceICNN
from .profiles import resolve_device
from .train import FitResult, _positive_int, check_fit_options, lr_factor

__all__ = ["fit_batched"]

ADAM_BETAS = (0.9, 0.999)
ADAM_EPS = 1e-8
#: On a CPU, the hand-written pass takes as many models at once as keep ``(models, batch, width)``
#: within this many floats (256 KiB in float32).
CPU_CHUNK_FLOATS = 2**16
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


class _Stack:
    """The parameters of ``M`` models of one architecture in one ``(M, P)`` buffer, with a
    ``(M, ...)`` view per parameter name (in ``named_parameters`` order)."""

    def __init__(self, models: Sequence[nn.Module], dev: torch.device) -> None:
        named = list(models[0].named_parameters())
        self.names = [n for n, _ in named]
        self.shapes = [tuple(p.shape) for _, p in named]
        sizes = [p.numel() for _, p in named]
        self.offsets = np.cumsum([0, *sizes]).tolist()
        with torch.no_grad():
            rows = [torch.cat([p.detach().reshape(-1) for p in m.parameters()]) for m in models]
            self.flat = torch.stack(rows).to(dev)
        self.m = len(models)

    def views(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        """``flat`` ``(k, P)`` (some rows of the buffer) as a dict of ``(k, *shape)`` views."""
        return {n: flat[:, a:b].view(flat.shape[0], *shape) for n, shape, a, b in
                zip(self.names, self.shapes, self.offsets[:-1], self.offsets[1:], strict=True)}

    def flatten(self, tensors: dict[str, torch.Tensor]) -> torch.Tensor:
        """The inverse of :meth:`views`: a dict of ``(k, *shape)`` tensors as one ``(k, P)`` tensor."""
        return torch.cat([tensors[n].reshape(tensors[n].shape[0], -1) for n in self.names], 1)


class _AutogradEngine:
    """Any architecture: ``functional_call`` under ``vmap`` on views of the buffer, autograd."""

    def __init__(self, models: Sequence[nn.Module], stack: _Stack) -> None:
        self.stack = stack
        self.buffers = {k: torch.stack([dict(m.named_buffers())[k] for m in models]) for k, _ in
                        models[0].named_buffers()}
        template = copy.deepcopy(models[0]).to("meta")

        def one(p: dict, b: dict, x: torch.Tensor) -> torch.Tensor:
            return functional_call(template, (p, b), (x,))

        self.fwd = {2: vmap(one, in_dims=(0, 0, None)), 3: vmap(one, in_dims=(0, 0, 0))}

    def predict(self, flat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return self.fwd[x.ndim](self.stack.views(flat), self.buffers, x)

    def loss_and_grad(self, flat: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        leaf = flat.detach().requires_grad_(True)
        with torch.enable_grad():
            losses = ((self.predict(leaf, x) - y) ** 2).mean(1)
            (grad,) = torch.autograd.grad(losses.sum(), leaf)
        return losses.detach(), grad


class _ReferenceEngine:
    """:class:`~socicnn.families.ReferenceICNN` (module docstring there), forward and backward
    written out over the model axis: one ``bmm`` per layer and per gradient, no autograd.

    On a CPU the models go through in chunks whose activations ``(chunk, batch, width)`` stay
    within :data:`CPU_CHUNK_FLOATS` (a cache-sized working set: with every model at once, each of
    the two dozen passes per step would stream its activations from memory); on a GPU all at once.
    """

    def __init__(self, model: ReferenceICNN, stack: _Stack, dev: torch.device) -> None:
        self.stack = stack
        self.in_dim, self.depth, self.width = model.in_dim, model.depth, model.width
        self.softplus = model.activation == "softplus"
        self.quad, self.norm = model.L is not None, model.A is not None
        self.cpu = dev.type == "cpu"

    def _chunks(self, rows: int) -> list[slice]:
        m = self.stack.m
        size = max(1, CPU_CHUNK_FLOATS // (rows * max(self.width, self.in_dim))) if self.cpu else m
        return [slice(i, min(i + size, m)) for i in range(0, m, size)]

    def _forward(self, p: dict, x: torch.Tensor, keep: bool):
        m = p["b_out"].shape[0]
        if x.ndim == 2:
            x = x.expand(m, *x.shape)
        zs, s = [], []
        z = None
        for l in range(self.depth):
            a = torch.baddbmm(p[f"b.{l}"].unsqueeze(1), x, p[f"W.{l}"].transpose(1, 2))
            if l:
                s.append(F.softplus(p[f"U_raw.{l - 1}"]))
                a.baddbmm_(z, s[-1].transpose(1, 2))
            z = F.softplus(a) if self.softplus else a.clamp_min_(0.0)
            zs.append(z)
        s_out = F.softplus(p["u_out_raw"])
        out = torch.baddbmm(p["b_out"].view(m, 1, 1), x, p["w_out"].unsqueeze(2))
        out.baddbmm_(z, s_out.unsqueeze(2))
        out = out.squeeze(2)
        q = u = nrm = None
        if self.quad:
            q = torch.bmm(x, p["L"])
            qq = (q * q).sum(2)
            out.add_(qq.mul_((0.5 * (F.softplus(p["alpha_raw"]) + 1e-8)).unsqueeze(1)))
        if self.norm:
            u = torch.baddbmm(p["c"].unsqueeze(1), x, p["A"].transpose(1, 2))
            nrm = torch.linalg.vector_norm(u, dim=2)
            out.add_(nrm * (F.softplus(p["lam_raw"]) + 1e-8).unsqueeze(1))
        return out, (x, zs, s, s_out, q, u, nrm) if keep else None

    def predict(self, flat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self._forward(self.stack.views(flat[c]), x if x.ndim == 2 else x[c], keep=False)[0]
                          for c in self._chunks(x.shape[-2])])

    def loss_and_grad(self, flat: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        parts = [self._loss_and_grad(flat[c], x if x.ndim == 2 else x[c], y[c]) for c in self._chunks(x.shape[-2])]
        return torch.cat([l for l, _ in parts]), torch.cat([g for _, g in parts])

    def _loss_and_grad(self, flat: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        p = self.stack.views(flat)
        out, (x, zs, s, s_out, q, u, nrm) = self._forward(p, x, keep=True)
        r = out.sub_(y)
        losses = (r * r).mean(1)
        g = r.mul_(2.0 / y.shape[1])  # d(loss_m) / d(out_m), (M, B)
        g3 = g.unsqueeze(1)  # (M, 1, B)
        grads = {"w_out": torch.bmm(g3, x).squeeze(1), "b_out": g.sum(1),
                 "u_out_raw": torch.bmm(g3, zs[-1]).squeeze(1).mul_(torch.sigmoid(p["u_out_raw"]))}
        gz = g.unsqueeze(2) * s_out.unsqueeze(1)  # (M, B, h)
        for l in range(self.depth - 1, -1, -1):
            z = zs[l]
            # relu' from relu(a) > 0; softplus' = sigmoid(a) = 1 - exp(-softplus(a))
            ga = gz.mul_(torch.expm1(-z).neg_()) if self.softplus else torch.ops.aten.threshold_backward(gz, z, 0)
            gat = ga.transpose(1, 2)
            grads[f"W.{l}"] = torch.bmm(gat, x)
            grads[f"b.{l}"] = ga.sum(1)
            if l:
                grads[f"U_raw.{l - 1}"] = torch.bmm(gat, zs[l - 1]).mul_(torch.sigmoid(p[f"U_raw.{l - 1}"]))
                gz = torch.bmm(ga, s[l - 1].mT.contiguous().mT)  # column-major: CPU bmm's fast layout here
        if self.quad:
            alpha = F.softplus(p["alpha_raw"]) + 1e-8
            grads["L"] = torch.bmm(x.transpose(1, 2), q * (g * alpha.unsqueeze(1)).unsqueeze(2))
            grads["alpha_raw"] = 0.5 * (g * (q * q).sum(2)).sum(1) * torch.sigmoid(p["alpha_raw"])
        if self.norm:
            lam = F.softplus(p["lam_raw"]) + 1e-8
            scale = torch.where(nrm > 0, g * lam.unsqueeze(1) / nrm.clamp_min(torch.finfo(nrm.dtype).tiny), 0.0)
            du = u * scale.unsqueeze(2)
            grads["A"] = torch.bmm(du.transpose(1, 2), x)
            grads["c"] = du.sum(1)
            grads["lam_raw"] = (g * nrm).sum(1) * torch.sigmoid(p["lam_raw"])
        return losses, self.stack.flatten(grads)


def _adam_step(flat, grad, exp_avg, exp_avg_sq, step: int, lr: float, weight_decay: float) -> None:
    """:class:`torch.optim.Adam`'s update (single-tensor arithmetic, coupled weight decay) on the buffer."""
    beta1, beta2 = ADAM_BETAS
    if weight_decay:
        grad = grad.add(flat, alpha=weight_decay)
    exp_avg.lerp_(grad, 1 - beta1)
    exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
    step_size = lr / (1 - beta1**step)
    denom = (exp_avg_sq.sqrt() / math.sqrt(1 - beta2**step)).add_(ADAM_EPS)
    flat.addcdiv_(exp_avg, denom, value=-step_size)


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
    stack = _Stack(models, dev)
    fused = type(models[0]) is ReferenceICNN
    engine = _ReferenceEngine(models[0], stack, dev) if fused else _AutogradEngine(models, stack)
    flat = stack.flat
    x_shared = Xt.ndim == 2

    def val_mse() -> torch.Tensor:
        with torch.no_grad():
            err = engine.predict(flat, Xv) - yv
            return (err * err).sum(1).double() / yv.shape[1]

    n = yt.shape[1]
    bs = min(batch_size, n)
    per_epoch = math.ceil(n / bs)
    eval_every = per_epoch if eval_every is None else _positive_int("eval_every", eval_every)
    unique = sorted(set(int(s) for s in seed_list))
    gens = {s: torch.Generator().manual_seed(s) for s in unique}
    which = torch.tensor([unique.index(int(s)) for s in seed_list], device=dev)
    rows_of = torch.arange(m, device=dev)[:, None]
    exp_avg, exp_avg_sq = torch.zeros_like(flat), torch.zeros_like(flat)
    max_norm = clip_norm if clip_norm is not None else float("inf")

    best_val = val_mse().cpu().numpy()
    best = flat.clone()
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
        lr_now = lr * lr_factor(step, steps, schedule, warmup, final_lr_fraction)
        losses, grad = engine.loss_and_grad(flat, xb, yb)
        norms = torch.linalg.vector_norm(grad, dim=1)
        grad.mul_((max_norm / (norms + 1e-6)).clamp_(max=1.0).unsqueeze(1))
        _adam_step(flat, grad, exp_avg, exp_avg_sq, step + 1, lr_now, weight_decay)
        step += 1
        since_eval += 1
        loss_sum += losses.detach().double()
        grad_sum += norms.double()
        if step % eval_every == 0 or step == steps:
            val = val_mse().cpu().numpy()
            train_loss = (loss_sum / since_eval).cpu().numpy()
            grad_mean = (grad_sum / since_eval).cpu().numpy()
            synchronize()
            now = time.perf_counter() - t0
            lr_next = lr * lr_factor(step, steps, schedule, warmup, final_lr_fraction)  # as fit() logs it
            loss_sum.zero_()
            grad_sum.zero_()
            since_eval = 0
            improved = np.zeros(m, dtype=bool)
            for i in np.flatnonzero(active):
                logs[i].append(dict(step=step, epoch=step / per_epoch, lr=lr_next, train_loss=float(train_loss[i]),
                                    val_loss=float(val[i]), grad_norm=float(grad_mean[i]), time=now))
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
                best[mask] = flat[mask]
    synchronize()
    elapsed = time.perf_counter() - t0
    results = []
    for i, model in enumerate(models):
        with torch.no_grad():
            for p, v in zip(model.parameters(), stack.views(best).values(), strict=True):
                p.copy_(v[i])
        model.eval()
        results.append(FitResult(
            model=model, log=pd.DataFrame(logs[i]), best_step=int(best_step[i]), best_val_loss=float(best_val[i]),
            steps=int(taken[i]), stopped_early=bool(stopped_early[i]), train_time=elapsed / m, device=dev,
        ))
    return results
