"""The training loop: repeatability, best-state restore, early stopping, schedule, clipping, guards."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch
from torch.optim.optimizer import register_optimizer_step_pre_hook

from socicnn import SOCICNN
from socicnn.train import FitResult, fit, lr_factor, mse

CUDA = torch.cuda.is_available()


def _data(n=200, d=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    X = 6 * torch.rand(n, d, generator=g) - 3
    return X, 0.5 * (X * X).sum(1)


def _model(seed=1):
    return SOCICNN(3, (8, 8), (3,), (3,), seed=seed)


def test_fit_returns_log_and_restores_best_state():
    X, y = _data()
    Xv, yv = _data(100, seed=1)
    res = fit(_model(), X, y, Xv, yv, steps=30, batch_size=64, lr=1e-2, eval_every=5)
    assert isinstance(res, FitResult)
    assert isinstance(res.log, pd.DataFrame)
    assert list(res.log.columns) == ["step", "epoch", "lr", "train_loss", "val_loss", "grad_norm", "time"]
    assert res.log["step"].tolist() == [0, 5, 10, 15, 20, 25, 30]
    assert res.steps == 30 and not res.stopped_early
    assert res.best_val_loss == pytest.approx(res.log["val_loss"].min())
    assert res.best_step == int(res.log.loc[res.log["val_loss"].idxmin(), "step"])
    # the returned model is the best one, not the last one
    assert mse(res.model, Xv, yv) == pytest.approx(res.best_val_loss, rel=1e-6)
    assert res.best_val_loss < res.log["val_loss"].iloc[0]


def test_fit_is_repeatable_with_a_fixed_seed_on_cpu():
    X, y = _data()
    runs = [fit(_model(), X, y, X, y, steps=25, batch_size=50, lr=1e-2, seed=7, device="cpu") for _ in range(2)]
    for p, q in zip(runs[0].model.parameters(), runs[1].model.parameters(), strict=True):
        assert torch.equal(p, q)
    pd.testing.assert_frame_equal(runs[0].log.drop(columns="time"), runs[1].log.drop(columns="time"))
    other = fit(_model(), X, y, X, y, steps=25, batch_size=50, lr=1e-2, seed=8, device="cpu")
    assert not all(torch.equal(p, q) for p, q in zip(runs[0].model.parameters(), other.model.parameters(), strict=True))


def test_epochs_keep_the_remainder_batch():
    X, y = _data(n=6000)
    res = fit(_model(), X, y, X[:10], y[:10], steps=8, batch_size=4096, lr=1e-3)
    # 6000 samples at batch 4096: 2 steps per epoch, evaluated once per epoch
    assert res.log["step"].tolist() == [0, 2, 4, 6, 8]
    assert res.log["epoch"].tolist() == [0.0, 1.0, 2.0, 3.0, 4.0]


def test_early_stopping_stops_after_patience_evaluations():
    X, y = _data()
    # a step size far too small to improve the validation loss by 10%: no improvement ever
    res = fit(_model(), X, y, X, y, steps=1000, batch_size=50, lr=1e-9, patience=3, min_delta=0.1, eval_every=4)
    assert res.stopped_early
    assert res.steps == 12 and res.best_step == 0
    assert len(res.log) == 4


def test_lr_schedule():
    assert lr_factor(0, 100, "constant") == 1.0 and lr_factor(99, 100, "constant") == 1.0
    assert lr_factor(0, 100, "cosine") == pytest.approx(1.0)
    assert lr_factor(99, 100, "cosine") == pytest.approx(0.0, abs=1e-12)
    assert lr_factor(99, 100, "cosine", final_fraction=0.1) == pytest.approx(0.1)
    assert lr_factor(49 + 5, 100, "cosine", warmup=10) == pytest.approx(0.5 * (1 + math.cos(math.pi * 44 / 89)))
    assert [lr_factor(s, 100, "cosine", warmup=4) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    X, y = _data()
    res = fit(_model(), X, y, X, y, steps=40, batch_size=50, lr=0.1, schedule="cosine", warmup=5, eval_every=10)
    # the logged lr is the one the next step would use: cosine(step) after `step` steps
    for step, lr in zip(res.log["step"][1:], res.log["lr"][1:], strict=True):
        assert lr == pytest.approx(0.1 * lr_factor(step, 40, "cosine", 5))


def test_gradient_clipping_bounds_the_applied_gradient():
    X, y = _data()
    seen = []

    def hook(optimizer, args, kwargs):
        grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        seen.append(float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))))

    handle = register_optimizer_step_pre_hook(hook)
    try:
        res = fit(_model(), X, y, X, y, steps=10, batch_size=50, lr=1e-3, clip_norm=0.5, eval_every=5)
    finally:
        handle.remove()
    assert len(seen) == 10
    assert max(seen) <= 0.5 * (1 + 1e-5)
    assert res.log["grad_norm"].iloc[1:].min() > 0.5  # the raw gradients were larger: clipping acted


def test_bad_arguments_fail_clearly():
    X, y = _data()
    with pytest.raises(ValueError, match="steps"):
        fit(_model(), X, y, X, y, steps=0)
    with pytest.raises(ValueError, match="schedule"):
        fit(_model(), X, y, X, y, steps=5, schedule="linear")
    with pytest.raises(ValueError, match="same non-zero length"):
        fit(_model(), X, y[:-1], X, y, steps=5)
    with pytest.raises(ValueError, match="non-finite"):
        fit(_model(), X, torch.full_like(y, float("nan")), X, y, steps=5)
    with pytest.raises(ValueError, match="shape"):
        fit(_model(), X[:, 0], y, X, y, steps=5)
    with pytest.raises(TypeError, match="model"):
        fit("model", X, y, X, y, steps=5)


@pytest.mark.skipif(CUDA, reason="checks the CPU-only guards")
def test_cuda_options_are_guarded_without_a_gpu():
    X, y = _data()
    with pytest.raises(ValueError, match="CUDA"):
        fit(_model(), X, y, X, y, steps=5, amp=True, device="cpu")
    with pytest.raises(ValueError, match="cuda"):
        fit(_model(), X, y, X, y, steps=5, device="cuda")
    assert fit(_model(), X, y, X, y, steps=2, device="auto").device.type == "cpu"


@pytest.mark.skipif(not CUDA, reason="needs a CUDA device")
def test_cuda_training_with_mixed_precision():  # pragma: no cover - runs on GPU machines only
    X, y = _data()
    res = fit(_model(), X, y, X, y, steps=20, batch_size=64, lr=1e-2, device="cuda", amp=True)
    assert res.device.type == "cuda" and next(res.model.parameters()).is_cuda
    assert math.isfinite(res.best_val_loss) and res.best_val_loss < res.log["val_loss"].iloc[0]
