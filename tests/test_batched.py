"""The batched trainer against the one-at-a-time loop: same runs, up to float reassociation."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import socicnn.batched as batched_trainer
from socicnn.batched import fit_batched
from socicnn.families import FAMILIES, family_spec
from socicnn.train import fit


def _data(dtype=torch.float64):
    """Three datasets (convex, polyhedral, non-convex) on separate input draws."""
    g = torch.Generator().manual_seed(0)

    def targets(X):
        return torch.stack([(X[0] ** 2).sum(1), X[1].abs().sum(1), 5 * torch.sin(X[2]).sum(1)])

    X = 6 * torch.rand(3, 200, 3, generator=g, dtype=dtype) - 3
    Xv = 6 * torch.rand(3, 80, 3, generator=g, dtype=dtype) - 3
    return X, targets(X), Xv, targets(Xv)


OPTS = dict(steps=60, batch_size=32, lr=0.05, eval_every=3, patience=3, clip_norm=1.0, weight_decay=1e-6,
            schedule="cosine", warmup=5)
SEEDS = [5, 6, 5]


@pytest.mark.parametrize("parameterisation,family,chunked", [("library", "soc", False), ("reference", "soc", True),
                                                              *(("reference", f, False) for f in FAMILIES)])
def test_batched_runs_equal_one_at_a_time_runs(parameterisation, family, chunked, monkeypatch):
    """Float64: the same batches, clipping, Adam steps, validation, best state and early stop
    (the reference families run the hand-written forward and backward pass, the library's autograd;
    ``chunked``: one model per chunk, as large sweeps run on a CPU)."""
    if chunked:
        monkeypatch.setattr(batched_trainer, "CPU_CHUNK_FLOATS", 1)
    X, Y, Xv, Yv = _data()
    spec = family_spec(family, 3, 6, 2, parameterisation=parameterisation)
    single = [fit(spec.build(dtype=torch.float64, seed=i), X[i], Y[i], Xv[i], Yv[i], seed=SEEDS[i], **OPTS)
              for i in range(3)]
    models = [spec.build(dtype=torch.float64, seed=i) for i in range(3)]
    batched = fit_batched(models, X, Y, Xv, Yv, seeds=SEEDS, device="cpu", **OPTS)
    if family == "soc":  # this case exercises per-model early stopping: some runs stop, some do not
        assert 0 < sum(r.stopped_early for r in single) < 3
    for a, b in zip(single, batched, strict=True):
        assert (a.steps, a.best_step, a.stopped_early) == (b.steps, b.best_step, b.stopped_early)
        assert a.log["step"].tolist() == b.log["step"].tolist()
        for col in ("val_loss", "train_loss", "grad_norm", "lr"):
            torch.testing.assert_close(torch.tensor(b.log[col].to_numpy()), torch.tensor(a.log[col].to_numpy()),
                                       rtol=1e-10, atol=1e-12, equal_nan=True)
        for (name, p), q in zip(a.model.named_parameters(), b.model.parameters(), strict=True):
            torch.testing.assert_close(q, p, rtol=1e-10, atol=1e-12, msg=name)
        assert b.best_val_loss == pytest.approx(a.best_val_loss, rel=1e-10)


def test_shared_inputs_and_one_seed_give_the_stacked_result():
    """Inputs shared by every model ``(N, d)`` with one seed equal the stacked copies."""
    X, Y, Xv, Yv = _data()
    spec = family_spec("relu", 3, 6, 2, parameterisation="reference")
    Y = torch.stack([(X[0] ** 2).sum(1), X[0].abs().sum(1)])
    Yv = torch.stack([(Xv[0] ** 2).sum(1), Xv[0].abs().sum(1)])
    opts = {**OPTS, "patience": None}
    shared = fit_batched([spec.build(dtype=torch.float64, seed=i) for i in range(2)], X[0], Y, Xv[0], Yv,
                         seeds=3, device="cpu", **opts)
    stacked = fit_batched([spec.build(dtype=torch.float64, seed=i) for i in range(2)], X[0].expand(2, -1, -1), Y,
                          Xv[0].expand(2, -1, -1), Yv, seeds=[3, 3], device="cpu", **opts)
    for a, b in zip(shared, stacked, strict=True):
        for p, q in zip(a.model.parameters(), b.model.parameters(), strict=True):
            torch.testing.assert_close(p, q, rtol=1e-12, atol=1e-13)


def test_float32_runs_agree_to_single_precision():
    X, Y, Xv, Yv = (t.float() for t in _data())
    spec = family_spec("quad", 3, 6, 2, parameterisation="reference")
    opts = {**OPTS, "patience": None, "lr": 1e-2}
    single = [fit(spec.build(dtype=torch.float32, seed=i), X[i], Y[i], Xv[i], Yv[i], seed=SEEDS[i], **opts)
              for i in range(3)]
    batched = fit_batched([spec.build(dtype=torch.float32, seed=i) for i in range(3)], X, Y, Xv, Yv,
                          seeds=SEEDS, device="cpu", **opts)
    for a, b in zip(single, batched, strict=True):
        assert b.best_val_loss == pytest.approx(a.best_val_loss, rel=1e-4)


def test_bad_input_is_named():
    X, Y, Xv, Yv = _data()
    a = family_spec("soc", 3, 6, 2, parameterisation="reference").build(dtype=torch.float64, seed=0)
    b = family_spec("soc", 3, 6, 3, parameterisation="reference").build(dtype=torch.float64, seed=0)
    with pytest.raises(ValueError, match="architecture"):
        fit_batched([a, b], X[:2], Y[:2], Xv[:2], Yv[:2], device="cpu")
    with pytest.raises(ValueError, match="seeds"):
        fit_batched([a, a], X[:2], Y[:2], Xv[:2], Yv[:2], seeds=[1, 2, 3], device="cpu")
    with pytest.raises(ValueError, match="2 models"):
        fit_batched([a, a], X, Y[:2], Xv[:2], Yv[:2], device="cpu")
    with pytest.raises(ValueError, match="same non-zero length"):
        fit_batched([a, a], X[:2], Y[:2, :50], Xv[:2], Yv[:2], device="cpu")
    with pytest.raises(ValueError, match="non-finite"):
        fit_batched([a, a], X[:2], Y[:2] * float("nan"), Xv[:2], Yv[:2], device="cpu")
    with pytest.raises(TypeError, match="nn.Module"):
        fit_batched([], X, Y, Xv, Yv, device="cpu")


@settings(max_examples=6, deadline=None)
@given(family=st.sampled_from(FAMILIES), parameterisation=st.sampled_from(["reference", "library"]),
       seed=st.integers(0, 10_000))
def test_batched_training_keeps_every_model_convex(family, parameterisation, seed):
    g = torch.Generator().manual_seed(seed)
    X = 6 * torch.rand(2, 128, 3, generator=g, dtype=torch.float64) - 3
    Y = torch.sin(X).sum(2) * 5  # non-convex targets push the weights hard
    spec = family_spec(family, 3, 8, 2, parameterisation=parameterisation)
    models = [spec.build(dtype=torch.float64, seed=seed + i) for i in range(2)]
    fit_batched(models, X, Y, X, Y, seeds=[seed, seed + 1], steps=30, batch_size=64, lr=0.1, device="cpu")
    a, b = (6 * torch.rand(300, 3, generator=g, dtype=torch.float64) - 3 for _ in range(2))
    lam = torch.rand(300, 1, generator=g, dtype=torch.float64)
    for model in models:
        with torch.no_grad():
            lhs = model(lam * a + (1 - lam) * b)
            rhs = lam[:, 0] * model(a) + (1 - lam[:, 0]) * model(b)
        assert bool((lhs <= rhs + 1e-9 * (1 + rhs.abs())).all())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("family", ["softplus", "soc"])
def test_cuda_runs_equal_cpu_runs(family):
    """On a GPU every model goes through at once (no chunks); float64 results equal the CPU's."""
    X, Y, Xv, Yv = _data()
    spec = family_spec(family, 3, 6, 2, parameterisation="reference")
    runs = {dev: fit_batched([spec.build(dtype=torch.float64, seed=i) for i in range(3)], X, Y, Xv, Yv,
                             seeds=SEEDS, device=dev, **OPTS) for dev in ("cpu", "cuda")}
    for a, b in zip(runs["cpu"], runs["cuda"], strict=True):
        assert (a.steps, a.best_step) == (b.steps, b.best_step)
        for p, q in zip(a.model.parameters(), b.model.parameters(), strict=True):
            torch.testing.assert_close(q.cpu(), p, rtol=1e-9, atol=1e-11)
