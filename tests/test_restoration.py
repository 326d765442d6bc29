"""Offline images, the restoration energy and its exact optimum, and energy training."""

import json

import pandas as pd
import pytest
import torch

from socicnn import images
from socicnn.conv_model import ConvSOCICNN
from socicnn.energy_training import fit_energy
from socicnn.restoration import candidates, corrupt, exact_optimum, first_order_optimum, true_energy


def test_patches_are_offline_deterministic_and_split_by_source():
    assert not set(images.SPLITS["train"]) & set(images.SPLITS["test"])
    assert not set(images.SPLITS["val"]) & (set(images.SPLITS["train"]) | set(images.SPLITS["test"]))
    a = images.image_patches("test", 5, 16, seed=3)
    b = images.image_patches("test", 5, 16, seed=3)
    assert a.shape == (5, 16, 16) and (a == b).all() and a.min() >= 0 and a.max() <= 1
    assert a.std() > 0.01  # real image content, not a constant
    with pytest.raises(ValueError, match="split"):
        images.image_patches("holdout", 1)


def test_olivetti_loader_says_how_to_obtain_the_file(tmp_path, monkeypatch):
    monkeypatch.delenv("SOCICNN_OLIVETTI", raising=False)
    with pytest.raises(FileNotFoundError, match="fetch_olivetti_faces"):
        images.load_olivetti(tmp_path / "absent.npy")
    path = tmp_path / "faces.npy"
    import numpy as np

    np.save(path, np.random.default_rng(0).random((400, 64, 64)))
    assert images.load_olivetti(path).shape == (400, 64, 64)


def test_exact_optimum_matches_the_certified_first_order_method():
    X = torch.as_tensor(images.image_patches("test", 3, 8, seed=0))
    c = corrupt(X, seed=1)
    x_star, sols = exact_optimum(c)
    assert all(s.status == "optimal" for s in sols)
    e_star = true_energy(x_star, c.Y, c.M)
    fo = first_order_optimum(c, tol=1e-9)
    assert float(fo.gap_bound.max()) <= 1e-9
    assert float((fo.value - e_star).abs().max()) <= 1e-8
    # nothing in the box does better than the optimum
    cand = candidates(c, seed=2)
    e_cand = true_energy(cand.reshape(-1, 8, 8), *(t[:, None].expand_as(cand).reshape(-1, 8, 8) for t in (c.Y, c.M)))
    assert float((e_cand.reshape(3, -1) - e_star[:, None]).min()) >= -1e-8


def test_fit_energy_reduces_the_loss_and_checks_rows():
    X = torch.as_tensor(images.image_patches("train", 4, 8, seed=0))
    c = corrupt(X, seed=0)
    cand = candidates(c).reshape(-1, 1, 8, 8)
    ctx = c.context[:, None].expand(-1, 16, -1, -1, -1).reshape(-1, 2, 8, 8)
    energy = true_energy(cand[:, 0], ctx[:, 0], ctx[:, 1])
    cm = ConvSOCICNN((1, 8, 8), 2, (3, 3), 2, 1, dtype=torch.float64, seed=0)
    fit = fit_energy(cm, cand, ctx, energy, epochs=15, batch=32, lr=1e-2)
    assert fit.losses[-1] < 0.5 * fit.losses[0]
    with pytest.raises(ValueError, match="same positive number of rows"):
        fit_energy(cm, cand[:3], ctx, energy)


class Stopped(Exception):
    pass


def _stub_cases(monkeypatch, calls: list, stop: list):
    """The image-restoration runner with the training and restoration of a case stubbed out: each
    case is recorded in ``calls`` and the run stops (``Stopped``) in case number ``stop[0]``."""
    from socicnn.experiments import image_restoration as ir

    def fake_case(cfg, data, e_ref_opt, family, seed, cross_check, device, log=None):
        calls.append((family, seed))
        if len(calls) == stop[0]:
            raise Stopped
        return {"rows": [{"family": family, "seed": seed, "method": cfg["certify"], "certified": cfg["n_test"]}],
                "summary": f"{family} {seed}"}  # fmt: skip

    monkeypatch.setattr(ir, "prepare", lambda cfg, seed, log: (None, None))
    monkeypatch.setattr(ir, "run_case", fake_case)
    monkeypatch.setattr(ir, "reference_scores", lambda data: pd.DataFrame(
        {"regret": [0.5, 0.0], "psnr_clean": [9.0, 12.0]}, index=["observation Y", "exact optimum X*"]))  # fmt: skip
    return ir


def test_the_paper_runner_saves_after_every_case_and_resumes(tmp_path, monkeypatch):
    # The runner's bookkeeping: a table with provenance after every (family, seed), and a resumed
    # run that redoes nothing saved.
    from socicnn.results import load_table

    calls, stop = [], [4]  # the run stops in its fourth case
    ir = _stub_cases(monkeypatch, calls, stop)
    out = tmp_path / "ir.csv"
    with pytest.raises(Stopped):
        ir.main(["smoke", "--out", str(out)])
    saved = load_table(out)
    assert len(saved.table) == 3 and saved.meta["config"]["cases_total"] == 15
    assert [tuple(c) for c in saved.meta["config"]["cases_done"]] == calls[:3]
    assert saved.cases() == (3, 15) and not saved.complete
    calls.clear()
    stop[0] = None
    ir.main(["smoke", "--out", str(out), "--resume"])
    assert len(calls) == 12 and len(load_table(out).table) == 15
    assert load_table(out).cases() == (15, 15) and load_table(out).complete
    runs = load_table(out).meta["config"]["runs"]  # the stopped run and the one that resumed it
    assert [r["cases"] for r in runs] == [3, 12] and all(r["git_commit"] == runs[0]["git_commit"] for r in runs)
    assert "s summed over its 2 runs" in load_table(out).describe()
    calls.clear()
    ir.main(["smoke", "--out", str(out), "--resume"])  # nothing left: nothing runs
    assert calls == []


def test_the_paper_runner_can_run_some_families_first(tmp_path, monkeypatch):
    from socicnn.results import load_table

    calls = []
    ir = _stub_cases(monkeypatch, calls, [None])
    out = tmp_path / "ir.csv"
    ir.main(["smoke", "--out", str(out), "--families", "Conv-SOC", "Conv-Quad"])
    assert sorted(calls) == [(f, s) for f in ("Conv-Quad", "Conv-SOC") for s in (0, 1, 2)]
    assert load_table(out).cases() == (6, 15) and not load_table(out).complete
    calls.clear()
    ir.main(["smoke", "--out", str(out), "--resume"])  # the other families' cases, and only those
    assert len(calls) == 9 and not {f for f, _ in calls} & {"Conv-SOC", "Conv-Quad"}
    assert load_table(out).complete
    with pytest.raises(SystemExit):
        ir.main(["smoke", "--out", str(out), "--families", "Conv-Typo"])


def test_two_processes_share_the_paper_run_and_merge(tmp_path, monkeypatch, capsys):
    from socicnn.results import load_table

    calls = []
    ir = _stub_cases(monkeypatch, calls, [None])
    a, b, both = tmp_path / "a.csv", tmp_path / "b.csv", tmp_path / "all.csv"
    ir.main(["smoke", "--out", str(a), "--families", "Conv-SOC", "--limit", "2"])
    ir.main(["smoke", "--out", str(b), "--families", "Conv-Quad", "Conv-Norm", "--skip", "1", "--limit", "2"])
    assert calls == [("Conv-SOC", 0), ("Conv-SOC", 1), ("Conv-Norm", 0), ("Conv-Quad", 1)]
    ir.main(["smoke", "--out", str(both), "--merge", str(a), str(b)])
    merged = load_table(both)
    assert merged.cases() == (4, 15) and [tuple(c) for c in merged.meta["config"]["cases_done"]] == calls
    assert len(merged.meta["config"]["runs"]) == 2 and len(merged.table) == 4
    ref = ir.recorded_reference_scores(merged)  # recorded once per run, kept through the merge
    assert ref.loc["observation Y", "psnr_clean"] == 9.0 and ref.loc["exact optimum X*", "regret"] == 0.0
    meta = a.with_suffix(".meta.json")  # a part whose run did not record them takes the other's
    old = json.loads(meta.read_text())
    old["config"]["checks"] = {}
    meta.write_text(json.dumps(old))
    assert ir.recorded_reference_scores(load_table(a)) is None
    ir.main(["smoke", "--out", str(both), "--merge", str(a), str(b)])
    assert ir.recorded_reference_scores(load_table(both)).equals(ref)
    with pytest.raises(SystemExit, match="cannot merge: .* repeats cases"):
        ir.main(["smoke", "--out", str(tmp_path / "x.csv"), "--merge", str(a), str(a)])
    with pytest.raises(SystemExit):
        ir.main(["smoke", "--out", str(a), "--skip", "-1"])
    assert "--skip must be >= 0" in capsys.readouterr().err


def test_reference_scores_put_the_observation_and_the_exact_optimum_on_the_same_scale():
    from socicnn.experiments import image_restoration as ir

    data = ir.make_data(4, 2, 2, seed=0)
    ref = ir.reference_scores(data)
    assert list(ref.index) == ["observation Y", "exact optimum X*"]
    assert ref.loc["exact optimum X*", "regret"] == pytest.approx(0.0, abs=1e-12)
    assert ref.loc["exact optimum X*", "rmse_optimum"] == 0.0 and ref.loc["observation Y", "regret"] > 0
    assert ref.loc["exact optimum X*", "psnr_optimum"] == float("inf")
