"""reversible.sgd: exact hypergradients of every kind against method="unrolled" and finite
differences; containers; hvp modes; kernels; stats; every input error path."""

import autograd
import autograd.numpy as anp
import numpy as np
import pytest

import reversible
from reversible import kernels
from reversible.buffer import BETA_ONE

# ----------------------------------------------------------------- problems
_rng = np.random.default_rng(42)
X = _rng.normal(size=(40, 6))
Y = X @ _rng.normal(size=6) + 0.1 * _rng.normal(size=40)
XV, YV = _rng.normal(size=(20, 6)), _rng.normal(size=20)
T = 30
BATCH = 10


def _rows(t):
    """Minibatch as a pure function of t."""
    return (7 * t + np.arange(BATCH)) % X.shape[0]


def ridge_loss(w, meta, t):
    """Least squares on a minibatch plus per-weight L2 with log-strength ``meta``."""
    r = _rows(t)
    out = anp.mean((anp.dot(X[r], w) - Y[r]) ** 2)
    if meta is not None:
        out = out + 0.5 * anp.sum(anp.exp(meta) * w**2)
    return out


def data_loss(w, meta, t):
    """meta is training data: learned inputs (BATCH, 6) regressed onto fixed targets."""
    r = _rows(t) % BATCH
    return anp.mean((anp.dot(meta[r], w) - Y[r]) ** 2) + 0.01 * anp.sum(w**2)


def mlp_loss(p, meta, t):
    """A mildly nonconvex model: one tanh layer, parameters in a dict (4 groups)."""
    r = _rows(t)
    h = anp.tanh(anp.dot(X[r], p["W1"]) + p["b1"])
    out = anp.mean((anp.dot(h, p["W2"]) + p["b2"] - Y[r]) ** 2)
    if meta is not None:
        out = out + 0.5 * anp.exp(meta[0]) * anp.sum(p["W1"] ** 2)
    return out


def val_ridge(w):
    return anp.mean((anp.dot(XV, w) - YV) ** 2)


def _mlp_params(rng):
    return {"W1": 0.5 * rng.normal(size=(6, 4)), "b1": 0.1 * rng.normal(size=4),
            "W2": 0.5 * rng.normal(size=4), "b2": np.zeros(1)}


def val_mlp(p):
    h = anp.tanh(anp.dot(XV, p["W1"]) + p["b1"])
    return anp.mean((anp.dot(h, p["W2"]) + p["b2"] - YV) ** 2)


# the exact engine and autograd through the float64 loop agree to a few ulps here (measured
# <= 2.2e-15 with the engine's pop-first multiply, which lands within one unit of V n / 2**32)
UNROLLED_TOL = 1e-13


def _relerr(a, b):
    a, b = np.ravel(a), np.ravel(b)
    return np.linalg.norm(a - b) / np.linalg.norm(b)


def _ridge_args(rng, G=1):
    shape = (T,) if G == 1 else (T, G)
    return dict(w0=0.3 * rng.normal(size=6), v0=0.1 * rng.normal(size=6),
                alphas=0.08 * (1 + 0.3 * rng.uniform(size=shape)),
                betas=0.9 + 0.05 * rng.uniform(-1, 1, size=shape),
                meta=-2 + 0.3 * rng.normal(size=6))


def _objective(loss, val, method, **opts):
    def f(w0, v0, alphas, betas, meta):
        return val(reversible.sgd(loss, w0, alphas, betas, meta, v0=v0, method=method, **opts))
    return f


ARGS = ("w0", "v0", "alphas", "betas", "meta")


def _grads(f, args, names):
    nums = tuple(ARGS.index(n) for n in names)
    out = autograd.grad(f, nums)(*[args[n] for n in ARGS])
    return dict(zip(names, out))


# ------------------------------------------------- exact against unrolled
@pytest.mark.parametrize("loss, make_args, val", [
    (ridge_loss, _ridge_args, val_ridge),
    (data_loss, lambda rng: dict(_ridge_args(rng), meta=rng.normal(size=(BATCH, 6))), val_ridge),
], ids=["meta_is_l2", "meta_is_training_data"])
def test_every_kind_matches_unrolled(loss, make_args, val):
    args = make_args(np.random.default_rng(0))
    exact = _grads(_objective(loss, val, "exact"), args, ARGS)
    ref = _grads(_objective(loss, val, "unrolled"), args, ARGS)
    for name in ARGS:
        assert np.shape(exact[name]) == np.shape(args[name])
        assert _relerr(exact[name], ref[name]) <= UNROLLED_TOL, name


def test_per_group_schedules_nonconvex_dict():
    rng = np.random.default_rng(1)
    p0 = _mlp_params(rng)
    G = 4
    args = dict(w0=p0, v0={k: 0.05 * rng.normal(size=np.shape(v)) for k, v in p0.items()},
                alphas=0.1 * (1 + 0.5 * rng.uniform(size=(T, G))),
                betas=np.clip(0.85 + 0.1 * rng.uniform(-1, 1, size=(T, G)), 0, 0.999),
                meta=np.array([-3.0]))
    exact = _grads(_objective(mlp_loss, val_mlp, "exact"), args, ARGS)
    ref = _grads(_objective(mlp_loss, val_mlp, "unrolled"), args, ARGS)
    for name in ("alphas", "betas", "meta"):
        assert np.shape(exact[name]) == np.shape(args[name])
        assert _relerr(exact[name], ref[name]) <= UNROLLED_TOL, name
    for name in ("w0", "v0"):
        assert list(exact[name]) == list(p0)
        for k in p0:
            assert np.shape(exact[name][k]) == np.shape(p0[k])
        flat = lambda d: np.concatenate([np.ravel(d[k]) for k in p0])  # noqa: E731
        assert _relerr(flat(exact[name]), flat(ref[name])) <= UNROLLED_TOL, name


def test_shared_schedule_gradient_is_sum_of_per_group():
    """d/d alpha_shared = sum over groups of d/d alpha_g when all groups use the same row."""
    rng = np.random.default_rng(2)
    p0 = _mlp_params(rng)
    a, b = np.full(T, 0.1), np.full(T, 0.9)
    f = lambda al, be: val_mlp(reversible.sgd(mlp_loss, p0, al, be))  # noqa: E731
    ga, gb = autograd.grad(f, (0, 1))(a, b)
    Ga, Gb = autograd.grad(f, (0, 1))(np.tile(a[:, None], 4), np.tile(b[:, None], 4))
    assert Ga.shape == (T, 4)
    assert np.allclose(Ga.sum(axis=1), ga, rtol=1e-12, atol=1e-15)
    assert np.allclose(Gb.sum(axis=1), gb, rtol=1e-12, atol=1e-15)


def test_parameterised_hyperparameters():
    """Gradients flow through exp / logistic / scale parameterisations like any autograd op."""
    noise = np.random.default_rng(3).normal(size=6)

    def objective(log_alpha, logit_beta, log_scale, method):
        alphas = anp.exp(log_alpha)
        betas = 1.0 / (1.0 + anp.exp(-logit_beta))
        w_T = reversible.sgd(ridge_loss, anp.exp(log_scale) * noise, alphas, betas, None,
                             method=method)
        return val_ridge(w_T)

    hyp = (np.log(np.full(T, 0.07)), np.full(T, 2.0), np.log(0.5))
    ge = autograd.grad(objective, (0, 1, 2))(*hyp, "exact")
    gu = autograd.grad(objective, (0, 1, 2))(*hyp, "unrolled")
    for a, b in zip(ge, gu):
        assert _relerr(a, b) <= UNROLLED_TOL


# --------------------------------------------------- finite differences
def _fd_check(f_unrolled_value, g_exact, x, h, tol, rng):
    """Central difference of the unrolled objective along a random direction."""
    d = rng.normal(size=np.shape(x))
    fd = (f_unrolled_value(x + h * d) - f_unrolled_value(x - h * d)) / (2 * h)
    an = float(np.sum(np.asarray(g_exact) * d))
    assert abs(fd - an) <= tol * max(abs(an), 1e-8), (fd, an)


@pytest.mark.parametrize("name", ["w0", "v0", "alphas", "meta"])
def test_against_finite_differences(name):
    """h = 1e-5: truncation error ~ h**2 * f''' ~ 1e-10 and rounding ~ 1e-16 / h ~ 1e-11,
    both relative to derivatives of order one, so 1e-6 leaves a wide margin."""
    rng = np.random.default_rng(4)
    args = _ridge_args(rng)
    g = _grads(_objective(ridge_loss, val_ridge, "exact"), args, [name])[name]
    unrolled = _objective(ridge_loss, val_ridge, "unrolled")

    def value(x):
        return unrolled(**dict(args, **{name: x}))

    _fd_check(value, g, args[name], 1e-5, 1e-6, rng)


def test_betas_against_finite_differences():
    """Momenta are quantised to multiples of 2**-32: start on that grid and step by
    h = 2**-14 so both probes stay on it; the O(h**2) ~ 4e-9 truncation error
    relative to curvature of order 100 gives a 1e-5 tolerance."""
    rng = np.random.default_rng(5)
    args = _ridge_args(rng)
    args["betas"] = reversible.effective_beta(args["betas"])
    g = _grads(_objective(ridge_loss, val_ridge, "exact"), args, ["betas"])["betas"]
    unrolled = _objective(ridge_loss, val_ridge, "unrolled")
    d = np.sign(rng.normal(size=T))            # +-1: beta +- h*d stays on the grid
    h = 2.0**-14
    fd = (unrolled(**dict(args, betas=args["betas"] + h * d))
          - unrolled(**dict(args, betas=args["betas"] - h * d))) / (2 * h)
    an = float(np.sum(g * d))
    assert abs(fd - an) <= 1e-5 * abs(an)


# ---------------------------------------------------------- containers
@pytest.mark.parametrize("kind", ["array", "list", "tuple", "dict", "nested"])
def test_w0_containers(kind):
    rng = np.random.default_rng(6)
    w = 0.3 * rng.normal(size=6)
    parts = [w[:2], w[2:3], w[3:]]
    w0 = {"array": w, "list": list(parts), "tuple": tuple(parts),
          "dict": {"a": parts[0], "b": parts[1], "c": parts[2]},
          "nested": {"a": [parts[0], parts[1]], "c": (parts[2],)}}[kind]
    flat = {"array": lambda x: x, "list": anp.concatenate, "tuple": anp.concatenate,
            "dict": lambda x: anp.concatenate([x["a"], x["b"], x["c"]]),
            "nested": lambda x: anp.concatenate([x["a"][0], x["a"][1], x["c"][0]])}[kind]
    loss = lambda p, m, t: ridge_loss(flat(p), m, t)  # noqa: E731
    alphas, betas = np.full(T, 0.08), np.full(T, 0.9)

    w_T = reversible.sgd(loss, w0, alphas, betas)
    ref = reversible.sgd(ridge_loss, w, alphas, betas)
    assert type(w_T) is type(w0)
    assert np.array_equal(flat(w_T), ref)          # same arithmetic elementwise: bit for bit

    f = lambda p0, a: val_ridge(flat(reversible.sgd(loss, p0, a, betas)))  # noqa: E731
    g_w0, g_a = autograd.grad(f, (0, 1))(w0, alphas)
    r_w0, r_a = autograd.grad(lambda p0, a: val_ridge(reversible.sgd(ridge_loss, p0, a, betas)),
                              (0, 1))(w, alphas)
    assert type(g_w0) is type(w0)
    assert np.allclose(flat(g_w0), r_w0, rtol=1e-12, atol=1e-15)
    assert np.allclose(g_a, r_a, rtol=1e-12, atol=1e-15)


def test_jacobian_asks_the_vjp_repeatedly():
    """A vector-valued objective: autograd calls the exact VJP once per output."""
    args = _ridge_args(np.random.default_rng(11))

    def wT(alphas, method):
        return reversible.sgd(ridge_loss, args["w0"], alphas, args["betas"], args["meta"],
                              method=method)

    je = autograd.jacobian(wT)(args["alphas"], "exact")
    ju = autograd.jacobian(wT)(args["alphas"], "unrolled")
    assert je.shape == (6, T)
    assert _relerr(je, ju) <= UNROLLED_TOL


def test_meta_as_dict():
    rng = np.random.default_rng(7)

    def loss(w, meta, t):
        return data_loss(w, meta["X"], t) + 0.5 * anp.exp(meta["log_l2"]) * anp.sum(w**2)

    meta = {"X": rng.normal(size=(BATCH, 6)), "log_l2": np.array(-2.0)}
    w0 = 0.3 * rng.normal(size=6)
    f = lambda m, method: val_ridge(reversible.sgd(loss, w0, np.full(T, 0.05),  # noqa: E731
                                                   np.full(T, 0.9), m, method=method))
    ge, gu = autograd.grad(f)(meta, "exact"), autograd.grad(f)(meta, "unrolled")
    assert list(ge) == ["X", "log_l2"] and ge["X"].shape == (BATCH, 6)
    for k in meta:
        assert _relerr(ge[k], gu[k]) <= UNROLLED_TOL


# ---------------------------------------------------- engine variants
def test_hvp_forward_and_reverse_agree():
    args = _ridge_args(np.random.default_rng(8), G=1)
    fwd = _grads(_objective(ridge_loss, val_ridge, "exact", hvp="forward"), args, ARGS)
    rev = _grads(_objective(ridge_loss, val_ridge, "exact", hvp="reverse"), args, ARGS)
    for name in ARGS:
        assert _relerr(fwd[name], rev[name]) <= 1e-10, name


@pytest.mark.parametrize("name", kernels.available())
def test_kernels_agree_bit_for_bit(name):
    rng = np.random.default_rng(9)
    p0 = _mlp_params(rng)
    args = dict(w0=p0, v0={k: np.zeros(np.shape(v)) for k, v in p0.items()},
                alphas=np.full((T, 4), 0.1) * [1, 0.5, 2, 1],
                betas=np.full((T, 4), 0.9) * [1, 0.5, 0.3, 1.1], meta=np.array([-2.0]))
    args["betas"][:, 3] = 1.0
    ref = _grads(_objective(mlp_loss, val_mlp, "exact", kernel="numpy"), args, ARGS[2:])
    got = _grads(_objective(mlp_loss, val_mlp, "exact", kernel=name), args, ARGS[2:])
    for key in ref:
        assert np.array_equal(np.asarray(got[key]), np.asarray(ref[key])), key


def test_stats():
    rng = np.random.default_rng(10)
    args = _ridge_args(rng, G=1)
    stats = {}
    f = lambda a: val_ridge(reversible.sgd(ridge_loss, args["w0"], a, args["betas"],  # noqa: E731
                                           args["meta"], stats=stats))
    autograd.grad(f)(args["alphas"])
    for key in ("buffer_bits", "bits_per_element_step", "ideal_bits_per_element_step",
                "reversed_exactly", "forward_seconds", "reverse_seconds"):
        assert key in stats, key
    assert stats["reversed_exactly"] is True
    ideal = np.mean(np.log2(1.0 / reversible.effective_beta(args["betas"])))
    assert stats["ideal_bits_per_element_step"] == pytest.approx(ideal, rel=1e-12)
    # at most about one bit of head per element above or below the bound, over T steps
    assert abs(stats["bits_per_element_step"] - ideal) <= 1.0 / T
    assert stats["buffer_bits"] == pytest.approx(stats["bits_per_element_step"] * 6 * T)


# ----------------------------------------------------------- error paths
_W0 = np.ones(6)
_A, _B = np.full(T, 0.05), np.full(T, 0.9)


@pytest.mark.parametrize("method", ["exact", "unrolled"])
@pytest.mark.parametrize("kwargs, fragment", [
    (dict(betas=np.zeros(T)), r"\(0, 1\]"),
    (dict(betas=np.full(T, 1.5)), r"\(0, 1\]"),
    (dict(betas=np.full(T, -0.5)), r"\(0, 1\]"),
    (dict(betas=np.full(T, np.nan)), "NaN"),
    (dict(betas=np.full(T, 0.4 / BETA_ONE)), "rounds to zero"),
    (dict(alphas=np.zeros(T)), r"alphas must lie in \(0, inf\).*exp\(log_alpha\)"),
    (dict(alphas=np.full(T, -0.1)), r"alphas must lie in \(0, inf\)"),
    (dict(alphas=np.full(T, np.nan)), "alphas contains NaN or Inf"),
    (dict(betas=np.full(T + 1, 0.9)), "30 steps but betas has 31"),
    (dict(alphas=np.full(T - 1, 0.1)), "29 steps"),
    (dict(alphas=np.full((T, 2), 0.1)), r"\(T, 1\) for 1 parameter group"),
    (dict(betas=np.full((T, 3), 0.9)), r"\(T, 1\) for 1 parameter group"),
    (dict(alphas=np.zeros((T, 1, 1))), "shape"),
    (dict(alphas=np.zeros(0), betas=np.zeros(0)), "at least one step"),
    (dict(alphas=np.full(T, np.inf)), "alphas contains NaN or Inf"),
    (dict(w0=np.array([1.0, np.nan])), "w0 contains NaN or Inf"),
    (dict(w0={"a": _W0, "b": np.array([np.inf])}), r"w0\['b'\] contains NaN or Inf"),
    (dict(w0=[]), "empty"),
    (dict(w0={"a": _W0, "b": _W0}, alphas=np.full((T, 3), 0.1)), r"\(T, 2\) for 2 parameter"),
    (dict(v0=np.ones(5)), "v0"),
    (dict(v0=np.full(6, np.inf)), "v0 contains NaN or Inf"),
    (dict(meta=np.array([np.nan])), "meta contains NaN or Inf"),
    (dict(method="bogus"), "unknown method 'bogus'"),
    (dict(frac_bits=0), r"frac_bits must be an integer in \[1, 62\]"),
    (dict(frac_bits=63), r"frac_bits must be an integer in \[1, 62\]"),
    (dict(hvp="bogus"), "hvp must be one of 'auto', 'forward', 'reverse'"),
])
def test_invalid_input_raises_value_error(method, kwargs, fragment):
    call = dict(w0=_W0, alphas=_A, betas=_B, meta=None, method=method)
    call.update(kwargs)
    loss = lambda w, m, t: anp.sum(anp.concatenate([anp.ravel(x) for x in w.values()])**2) \
        if isinstance(w, dict) else anp.sum(w**2)  # noqa: E731
    with pytest.raises(ValueError, match=fragment):
        reversible.sgd(loss, call.pop("w0"), call.pop("alphas"), call.pop("betas"),
                       call.pop("meta"), **call)


@pytest.mark.parametrize("kwargs, fragment", [
    (dict(w0=np.array(["a", "b"])), "w0 must be a real float array"),
    (dict(w0=np.ones(6) + 1j), "w0 is complex"),
    (dict(w0={"a": _W0, "b": np.ones(2, complex)}), r"w0\['b'\] is complex"),
    (dict(v0=np.ones(6) * 1j), "v0 is complex"),
    (dict(alphas=_A + 0j), "alphas is complex"),
    (dict(betas=_B.astype(np.complex64)), "betas is complex"),
    (dict(meta=np.array([1j])), "meta is complex"),
    (dict(alphas=np.full(T, True)), "alphas must be a real float array"),
    (dict(stats=[]), "stats must be a dict"),
    (dict(progress="yes"), "progress must be True or False"),
    (dict(kernel=3), "kernel must be a kernel name"),
    (dict(train_loss="loss"), "train_loss must be a function"),
])
def test_wrong_kind_of_input_raises_type_error(kwargs, fragment):
    call = dict(train_loss=lambda w, m, t: anp.sum(w**2), w0=_W0, alphas=_A, betas=_B, meta=None)
    call.update(kwargs)
    if isinstance(call["w0"], dict):
        call["train_loss"] = lambda w, m, t: anp.sum(w["a"] ** 2)
    with pytest.raises(TypeError, match=fragment):
        reversible.sgd(call.pop("train_loss"), call.pop("w0"), call.pop("alphas"),
                       call.pop("betas"), call.pop("meta"), **call)


def test_unknown_kernel_raises():
    with pytest.raises(ValueError, match="unknown kernel 'bogus'"):
        reversible.sgd(lambda w, m, t: anp.sum(w**2), _W0, _A, _B, kernel="bogus")


@pytest.mark.parametrize("w0, v0", [
    (_W0, [_W0]),
    ({"a": _W0, "b": _W0}, {"a": _W0, "c": _W0}),
    ({"a": _W0, "b": _W0}, [_W0, _W0]),
])
def test_wrong_v0_structure_names_v0(w0, v0):
    loss = lambda w, m, t: anp.sum(w["a"] ** 2) if isinstance(w, dict) else anp.sum(w**2)  # noqa: E731
    with pytest.raises(ValueError, match="v0"):
        reversible.sgd(loss, w0, _A, _B, v0=v0)


@pytest.mark.parametrize("bad", [1.5, "x", 30.2])
def test_non_integer_frac_bits_rejected(bad):
    with pytest.raises(ValueError, match="frac_bits must be an integer"):
        reversible.sgd(lambda w, m, t: anp.sum(w**2), _W0, _A, _B, frac_bits=bad)
