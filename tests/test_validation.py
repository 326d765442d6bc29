"""Every bad input fails early with a clear ValueError/TypeError that names the problem."""

import numpy as np
import pytest
import torch

import socicnn as sc

F64 = torch.float64
D = 3


@pytest.fixture(scope="module")
def model():
    return sc.SOCICNN(D, (4, 4), quad_dims=(2,), norm_dims=(2,), dtype=F64, seed=0)


# ----------------------------------------------------------------- inputs x


@pytest.mark.parametrize(
    "x, error, message",
    [
        (torch.zeros(5, D + 1, dtype=F64), ValueError, r"^x has 4 features .* expects 3"),
        (torch.zeros(D + 1, dtype=F64), ValueError, r"^x has 4 features"),
        (torch.zeros(2, 5, D, dtype=F64), ValueError, r"^x must have shape \(N, 3\) or \(3,\), got \(2, 5, 3\)"),
        (torch.tensor(1.0, dtype=F64), ValueError, r"^x must have shape"),
        (torch.zeros(5, D, dtype=torch.float32), TypeError, r"^x has dtype torch.float32 but the model uses"),
        (torch.zeros(5, D, dtype=torch.int64), TypeError, r"^x must be a floating-point tensor"),
        (torch.zeros(5, D, dtype=torch.bool), TypeError, r"^x must be a floating-point tensor"),
        (torch.zeros(5, D, dtype=torch.complex128), TypeError, r"^x must be a floating-point tensor"),
        (np.array([["a", "b", "c"]]), TypeError, r"^x must hold real numbers"),
        ("0 0 0", TypeError, r"^x must be a torch.Tensor or array"),
    ],
    ids=["d+1", "vector d+1", "3-D", "scalar", "float32", "int", "bool", "complex", "strings", "str"],
)
def test_bad_x_shape_or_dtype(model, x, error, message):
    with pytest.raises(error, match=message):
        model(x)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_x(model, bad):
    x = torch.zeros(4, D, dtype=F64)
    x[1, 2] = bad
    with pytest.raises(ValueError, match=r"^x has 1 non-finite entries"):
        model(x)
    with pytest.raises(ValueError, match=r"^x has 1 non-finite entries"):
        sc.readout.readout(model, x)


def test_finite_x_with_an_overflowing_sum_is_accepted(model):
    # The finiteness check first looks at the sum; an overflowing sum of finite entries must
    # fall back to the entrywise test, not reject the input.
    x = torch.full((4, D), 1e308, dtype=F64)
    assert model.check_input(x)[0] is x


def test_arrays_are_accepted(model):
    x = np.random.default_rng(0).standard_normal((4, D))
    with torch.no_grad():
        torch.testing.assert_close(model(x), model(torch.as_tensor(x)), rtol=0, atol=0)
        torch.testing.assert_close(model(x.tolist()), model(torch.as_tensor(x)), rtol=0, atol=0)


def test_check_magnitude_names_the_argument_and_the_limit():
    from socicnn._checks import check_magnitude

    check_magnitude("x0", np.array([1e4, -1e4]), 1e4)  # at the limit: accepted
    check_magnitude("x0", torch.tensor([0.5, -2.0]), 1e4)
    with pytest.raises(ValueError, match=r"^x0 reaches 2e\+04 in absolute value, beyond 1e\+04; rescale$"):
        check_magnitude("x0", torch.tensor([1.0, -2e4]), 1e4, "; rescale")


def test_check_input_names_the_argument(model):
    with pytest.raises(ValueError, match=r"^delta has 4 features"):
        model.check_input(torch.zeros(D + 1, dtype=F64), "delta")


def test_readout_needs_a_batch(model):
    with pytest.raises(ValueError, match=r"x must have shape \(N, 3\)"):
        sc.readout.readout(model, torch.zeros(D, dtype=F64))


@pytest.mark.parametrize("tol, error", [(-1.0, ValueError), (float("nan"), ValueError), ("0", TypeError)])
def test_bad_tolerance(model, tol, error):
    with pytest.raises(error, match="tol"):
        sc.readout.readout(model, torch.zeros(2, D, dtype=F64), tol=tol)


# ----------------------------------------------------------------- constructor arguments


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (dict(in_dim=0), ValueError, "in_dim must be a positive integer"),
        (dict(in_dim=-2), ValueError, "in_dim must be a positive integer"),
        (dict(in_dim=2.5), ValueError, "in_dim must be a positive integer"),
        (dict(in_dim=True), ValueError, "in_dim must be a positive integer"),
        (dict(hidden=()), ValueError, "hidden must be a non-empty sequence of positive integers"),
        (dict(hidden=(4, -1)), ValueError, "hidden must be a non-empty sequence"),
        (dict(hidden=(4, 0)), ValueError, "hidden must be a non-empty sequence"),
        (dict(hidden=4), TypeError, "hidden must be a sequence of positive integers"),
        (dict(quad_dims=(0,)), ValueError, "quad_dims must be a sequence of positive integers"),
        (dict(norm_dims=(-3,)), ValueError, "norm_dims must be a sequence of positive integers"),
        (dict(activation="tanh"), ValueError, r"unknown activation 'tanh'; choose one of \['relu', 'softplus'\]"),
        (dict(dtype=torch.int32), TypeError, "socicnn models work in float32 or float64"),
        (dict(dtype=torch.float16), TypeError, "socicnn models work in float32 or float64"),
        (dict(dtype=torch.bfloat16), TypeError, "socicnn models work in float32 or float64"),
        (dict(hidden="32"), TypeError, "hidden must be a sequence of positive integers, got the string '32'"),
        (dict(norm_dims="3"), TypeError, "norm_dims must be a sequence of positive integers, got the string"),
        (dict(hidden=(4, 2.5)), TypeError, "hidden must hold integers"),
    ],
)
def test_bad_constructor_arguments(kwargs, error, message):
    args = dict(in_dim=D, hidden=(4,)) | kwargs
    with pytest.raises(error, match=message):
        sc.SOCICNN(**args)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_a_half_precision_model_is_rejected_before_any_work(dtype):
    model = sc.SOCICNN(D, (4,), quad_dims=(2,), norm_dims=(2,), seed=0).to(dtype)
    x = torch.zeros(2, D, dtype=dtype)
    for call in (model, lambda v: sc.readout.readout(model, v), lambda v: sc.inference.prox(model, v)):
        with pytest.raises(TypeError, match=f"socicnn models work in float32 or float64, got {dtype}"):
            call(x)


def test_relu_icnn_refuses_blocks():
    with pytest.raises(ValueError, match="ReLUICNN has no quadratic or norm blocks"):
        sc.ReLUICNN(D, (4,), quad_dims=(2,))
    w = sc.SOCICNN(D, (4,), norm_dims=(2,), seed=0).weights()
    with pytest.raises(ValueError, match="ReLUICNN has no quadratic or norm blocks"):
        sc.ReLUICNN.from_weights(w)


# ----------------------------------------------------------------- effective weights


def _weights() -> sc.SOCICNNWeights:
    return sc.SOCICNN(D, (4, 5), quad_dims=(2,), norm_dims=(2,), dtype=F64, seed=1).weights()


@pytest.mark.parametrize(
    "corrupt, message",
    [
        (lambda w: w.U.__setitem__(1, -w.U[1]), r"U\[1\] has negative entries"),
        (lambda w: w.U[1].__setitem__((0, 0), -1e-12), r"U\[1\] has negative entries"),
        (lambda w: setattr(w, "c", -w.c), "c has negative entries"),
        (lambda w: w.quad.__setitem__(0, (-w.quad[0][0], *w.quad[0][1:])), r"quad\[0\] has a negative scale"),
        (lambda w: w.norm.__setitem__(0, (-w.norm[0][0], *w.norm[0][1:])), r"norm\[0\] has a negative scale"),
        (lambda w: w.W.__setitem__(0, None), r"W\[0\] is required"),
        (lambda w: w.W.__setitem__(1, torch.zeros(5, D + 1, dtype=F64)), r"W\[1\] has shape \(5, 4\)"),
        (lambda w: w.U.__setitem__(0, torch.zeros(4, 4, dtype=F64)), r"U\[0\] must be None"),
        (lambda w: w.U.__setitem__(1, torch.zeros(5, 3, dtype=F64)), r"U\[1\] must have shape \(5, 4\)"),
        (lambda w: setattr(w, "c", torch.ones(4, dtype=F64)), r"c has shape \(4,\), expected \(5,\)"),
        (lambda w: w.W.pop(), "one entry per layer"),
        (lambda w: w.norm.__setitem__(0, (w.norm[0][0], w.norm[0][1], torch.zeros(3, dtype=F64))), "inconsistent"),
    ],
    ids=["U<0", "U tiny<0", "c<0", "alpha<0", "lam<0", "no W0", "W shape", "U0", "U shape", "c shape", "W len",
         "norm shapes"],
)
def test_validate_rejects_bad_weights(corrupt, message):
    w = _weights()
    corrupt(w)
    with pytest.raises(ValueError, match=message):
        w.validate()
    with pytest.raises(ValueError, match=message):
        sc.SOCICNN.from_weights(w)


@pytest.mark.parametrize(
    "corrupt, name",
    [
        (lambda w: w.U[1].__setitem__((0, 0), float("nan")), r"U\[1\]"),  # NaN passes U >= 0
        (lambda w: w.W[0].__setitem__((1, 2), float("inf")), r"W\[0\]"),
        (lambda w: w.b[1].__setitem__(0, -float("inf")), r"b\[1\]"),
        (lambda w: setattr(w, "c", w.c * float("nan")), "c"),
        (lambda w: setattr(w, "b0", torch.tensor(float("inf"), dtype=F64)), "b0"),
        (lambda w: w.quad.__setitem__(0, (torch.tensor(float("nan"), dtype=F64), *w.quad[0][1:])), r"quad\[0\].alpha"),
        (lambda w: w.norm[0][1].__setitem__((0, 0), float("nan")), r"norm\[0\].A"),
    ],
    ids=["U NaN", "W inf", "b -inf", "c NaN", "b0 inf", "alpha NaN", "A NaN"],
)
def test_validate_rejects_non_finite_weights(corrupt, name):
    w = _weights()
    corrupt(w)
    with pytest.raises(ValueError, match=f"^{name} has non-finite entries"):
        w.validate()
    with pytest.raises(ValueError, match="non-finite"):
        sc.SOCICNN.from_weights(w)


def test_validate_rejects_non_tensor_weights():
    w = _weights()
    w.v = [0.0] * D
    with pytest.raises(TypeError, match="v must be a torch.Tensor, got list"):
        w.validate()
    w = _weights()
    w.b[0] = w.b[0].long()
    with pytest.raises(TypeError, match=r"b\[0\] must be a floating-point tensor"):
        w.validate()


def test_validate_rejects_mixed_dtypes():
    w = _weights()
    w.W[0] = w.W[0].float()
    with pytest.raises(ValueError, match="the weights mix dtypes"):
        sc.SOCICNN.from_weights(w)


def test_from_weights_needs_weights():
    with pytest.raises(TypeError, match="expected SOCICNNWeights, got dict"):
        sc.SOCICNN.from_weights({})


# ----------------------------------------------------------------- profiles and devices


def test_unknown_profile():
    with pytest.raises(ValueError, match=r"unknown PROFILE 'fast'; choose one of \['book', 'paper', 'smoke'\]"):
        sc.profiles.setup("fast", "cpu", 0, verbose=False)


def test_unknown_device():
    with pytest.raises(ValueError, match="unknown device 'tpu'"):
        sc.profiles.setup("smoke", "tpu", 0, verbose=False)


def test_cuda_without_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="DEVICE='cuda' but no CUDA device is available"):
        sc.profiles.setup("smoke", "cuda", 0, verbose=False)
    assert sc.profiles.resolve_device("auto") == torch.device("cpu")


@pytest.mark.parametrize("seed", [1.5, "0", True])
def test_bad_seed(seed):
    with pytest.raises(TypeError, match="SEED must be an integer"):
        sc.profiles.setup("smoke", "cpu", seed, verbose=False)


def test_setup_validates_prints_and_seeds(capsys):
    ctx = sc.profiles.setup("smoke", "cpu", 3)
    printed = capsys.readouterr().out
    assert "profile=smoke" in printed and "seed=3" in printed and "cpu" in printed
    first = torch.rand(2)
    sc.profiles.setup("smoke", "cpu", 3, verbose=False)
    assert torch.equal(torch.rand(2), first)
    assert ctx.pick(smoke=1, book=2, paper=3) == 1
    with pytest.raises(ValueError, match="needs a value for every profile; missing"):
        ctx.pick(smoke=1, book=2)
