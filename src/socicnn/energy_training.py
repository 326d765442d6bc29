"""Training a contextual convex model as an energy: regression on candidates labelled by a true
energy (the reference protocol of the image and trajectory experiments).

Each row is a candidate ``x`` with its context and the true energy ``E(x; context)``; labels are
standardised (``(E - mean) / sd`` over the training rows) and shifted by the untrained model's
mean prediction ``offset`` (so no optimiser steps are spent moving an output bias), and the model
is fitted by mean-squared error with AdamW and gradient clipping. A positive affine map of the
labels does not move the minimiser, so the trained model's minimiser over a set is the learned
estimate of the true one: ``E ~ mean + sd * (model - offset)``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch

__all__ = ["EnergyFit", "fit_energy"]


@dataclass
class EnergyFit:
    """``mean`` and ``sd`` of the training labels and the untrained model's mean prediction
    ``offset`` (``E ~ mean + sd * (model - offset)``), the per-epoch training loss and the wall
    time."""

    mean: float
    sd: float
    offset: float
    losses: list[float] = field(default_factory=list)
    time: float = 0.0


def fit_energy(
    model: torch.nn.Module,
    x: torch.Tensor,
    context: torch.Tensor,
    energy: torch.Tensor,
    *,
    epochs: int = 50,
    batch: int = 280,
    lr: float = 2e-3,
    weight_decay: float = 1e-6,
    clip: float = 10.0,
    seed: int = 0,
) -> EnergyFit:
    """Fit ``model(x, context) ~ (energy - mean) / sd + offset`` (rows ``x``, ``context``, ``energy``) by
    AdamW (``lr``, ``weight_decay``), mini-batches of ``batch`` rows in a seeded order, gradient
    norm clipped at ``clip``, for ``epochs`` passes. Trains ``model`` in place."""
    if not (x.shape[0] == context.shape[0] == energy.shape[0]) or x.shape[0] == 0:
        raise ValueError(
            "x, context and energy must have the same positive number of rows, got "
            f"{x.shape[0]}, {context.shape[0]}, {energy.shape[0]}"
        )
    t0 = time.perf_counter()
    mean, sd = float(energy.mean()), float(energy.std().clamp(min=1e-12))
    with torch.no_grad():
        offset = float(
            torch.cat([model(x[i : i + batch], context[i : i + batch]) for i in range(0, len(x), batch)]).mean()
        )
    target = (energy - mean) / sd + offset
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    g = torch.Generator().manual_seed(seed)
    out = EnergyFit(mean, sd, offset)
    n = x.shape[0]
    for _ in range(epochs):
        order = torch.randperm(n, generator=g).to(x.device)
        total = 0.0
        for start in range(0, n, batch):
            idx = order[start : start + batch]
            opt.zero_grad()
            loss = torch.nn.functional.mse_loss(model(x[idx], context[idx]), target[idx])
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
            opt.step()
            total += float(loss.detach()) * idx.numel()
        out.losses.append(total / n)
    out.time = time.perf_counter() - t0
    return out
