"""Property tests: every model family is convex in x along random segments, trained or not."""

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import socicnn as sc

F64 = torch.float64
SETTINGS = settings(max_examples=12, deadline=None, derandomize=True)

model_configs = st.fixed_dictionaries(
    dict(
        in_dim=st.integers(1, 4),
        hidden=st.lists(st.integers(1, 6), min_size=1, max_size=4).map(tuple),
        quad_dims=st.lists(st.integers(1, 3), max_size=2).map(tuple),
        norm_dims=st.lists(st.integers(1, 3), max_size=2).map(tuple),
        passthrough=st.booleans(),
        activation=st.sampled_from(["relu", "softplus"]),
        seed=st.integers(0, 2**16),
    )
)


def jensen_violation(model: sc.SOCICNN, seed: int, n_segments: int = 64) -> float:
    """Largest ``f(t a + (1-t) b) - (t f(a) + (1-t) f(b))`` over random segments and ``t``, relative."""
    g = torch.Generator().manual_seed(seed)
    d = model.in_dim
    a = 3.0 * torch.randn(n_segments, d, generator=g, dtype=F64)
    b = 3.0 * torch.randn(n_segments, d, generator=g, dtype=F64)
    t = torch.rand(n_segments, 5, 1, generator=g, dtype=F64)
    t[:, 0] = 0.5  # the midpoint
    with torch.no_grad():
        fa, fb = model(a), model(b)
        mix = (t * a[:, None] + (1 - t) * b[:, None]).reshape(-1, d)
        f_mix = model(mix).reshape(n_segments, 5)
        chord = t[..., 0] * fa[:, None] + (1 - t[..., 0]) * fb[:, None]
        scale = 1.0 + fa.abs()[:, None] + fb.abs()[:, None]
    return float(((f_mix - chord) / scale).max())


@SETTINGS
@given(config=model_configs)
def test_every_model_is_convex_along_segments(config):
    model = sc.SOCICNN(**config, dtype=F64)
    # 1e-12 relative: float64 rounding of a few dozen operations, far below any real violation.
    assert jensen_violation(model, config["seed"]) <= 1e-12


def test_jensen_check_detects_a_nonconvex_model(monkeypatch):
    """The check is not vacuous: output weights c <= 0 (impossible by construction) fail it."""
    model = sc.ReLUICNN(2, (8, 8), dtype=F64, seed=0)
    assert jensen_violation(model, 0) <= 1e-12
    monkeypatch.setattr(sc.Backbone, "c", property(lambda self: -self.c_raw.abs()))
    assert jensen_violation(model, 0) > 1e-3


@SETTINGS
@given(config=model_configs, steps=st.integers(12, 16))
def test_convex_after_adversarial_training(config, steps):
    """Adam on a loss that drives every raw weight negative cannot break convexity."""
    model = sc.SOCICNN(**config, dtype=F64)
    g = torch.Generator().manual_seed(config["seed"])
    x = torch.randn(32, model.in_dim, generator=g, dtype=F64)
    y = torch.randn(32, generator=g, dtype=F64)
    raw = [model.backbone.c_raw, *model.backbone.U_raw]
    raw += [b.alpha_raw for b in model.quad_blocks] + [b.lam_raw for b in model.norm_blocks]
    opt = torch.optim.Adam(model.parameters(), lr=0.5)
    for _ in range(steps):
        opt.zero_grad()
        fit = torch.nn.functional.smooth_l1_loss(model(x), y)  # bounded slope: the push term dominates
        push_negative = 1e3 * sum(p.sum() for p in model.parameters())  # every raw weight decreases
        (fit + push_negative).backward()
        opt.step()
    assert all(bool((p < 0).all()) for p in raw), "the loss failed to push every raw weight negative"
    w = model.weights()
    w.validate()  # effective U, c, alpha, lam >= 0
    assert jensen_violation(model, config["seed"] + 1) <= 1e-12
