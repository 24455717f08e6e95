"""Approximate hypergradient methods, each checked against a mathematical definition."""

import autograd.numpy as anp
import numpy as np
import pytest
from autograd import grad

import reversible
from reversible.buffer import effective_beta
from _adam_hypergrads import ADAM_KINDS, adam_hypergrads  # tests/ is on sys.path

KINDS = ("w0", "v0", "alphas", "betas", "meta")


# ---------------------------------------------------------------- a small nonlinear problem
def make_problem(seed=0, T=17, groups=False):
    """Minibatched tanh regression with per-weight log-L2 (meta); 2 groups if ``groups``."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(24, 4))
    y = rng.normal(size=24)

    def loss(w, meta, t):
        if groups:
            w = anp.concatenate([w[0], w[1]])
        b = t % 4
        Xb, yb = X[6 * b:6 * b + 6], y[6 * b:6 * b + 6]
        pred = anp.tanh(Xb @ w[:4]) * w[4] + w[5]
        return anp.mean((pred - yb) ** 2) + 0.5 * anp.sum(anp.exp(meta) * w ** 2)

    w0 = rng.normal(size=6)
    if groups:
        w0 = [w0[:4], w0[4:]]
    G = 2 if groups else 1
    hyp = {"w0": w0, "v0": None, "alphas": 0.1 + 0.02 * rng.random((T, G)),
           "betas": 0.85 + 0.1 * rng.random((T, G)), "meta": -1.0 + 0.1 * rng.normal(size=6)}
    return loss, hyp


def hypergrads(loss, hyp, method, kinds=KINDS, **options):
    """Hypergradients of ``|w_T|^2 + sum(w_T)`` with respect to ``kinds``."""
    base = dict(hyp)
    if base["v0"] is None:
        base["v0"] = reversible.structure.Structure(base["w0"]).unflatten(
            np.zeros(reversible.structure.Structure(base["w0"]).size)) if isinstance(base["w0"], list) \
            else np.zeros_like(base["w0"])

    def f(h):
        args = dict(base, **h)
        w = reversible.sgd(loss, args["w0"], args["alphas"], args["betas"], args["meta"],
                           v0=args["v0"], method=method, **options)
        flat = anp.concatenate(w) if isinstance(w, list) else w
        return anp.sum(flat ** 2) + anp.sum(flat)

    return grad(f)({k: base[k] for k in kinds})


def flat(x):
    return np.concatenate([np.ravel(a) for a in x]) if isinstance(x, list) else np.ravel(x)


def assert_same(a, b, rtol=1e-7, atol=1e-10, kinds=KINDS):
    for k in kinds:
        np.testing.assert_allclose(flat(a[k]), flat(b[k]), rtol=rtol, atol=atol, err_msg=k)


# ---------------------------------------------------------------- exact-equivalent methods
@pytest.mark.parametrize("segment", [None, 1, 5, 17, 40])
def test_checkpointed_equals_unrolled(segment):
    loss, hyp = make_problem(T=17, groups=True)
    opts = {} if segment is None else {"segment": segment}
    assert_same(hypergrads(loss, hyp, "checkpointed", **opts), hypergrads(loss, hyp, "unrolled"),
                rtol=1e-12, atol=1e-14)


def test_truncated_full_and_hybrid_full_equal_exact():
    loss, hyp = make_problem(T=13)
    ref = hypergrads(loss, hyp, "exact")
    assert_same(hypergrads(loss, hyp, "truncated", K=13), ref)
    assert_same(hypergrads(loss, hyp, "drmad_hybrid", K=13), ref, rtol=0, atol=0)


@pytest.mark.parametrize("groups", [False, True])
def test_forward_equals_exact(groups):
    loss, hyp = make_problem(T=9, groups=groups)
    assert_same(hypergrads(loss, hyp, "forward"), hypergrads(loss, hyp, "exact"))


def test_forward_with_group_bases_matches_exact_on_a_spanned_parameterisation():
    loss, hyp = make_problem(T=9, groups=True)
    raw = hyp["w0"]

    def objective(h, method, **opts):
        w0 = [anp.exp(h["s"][i]) * raw[i] for i in range(2)]
        alphas = anp.ones((9, 1)) * anp.exp(h["la"])[None, :]
        betas = anp.ones((9, 1)) * h["b"][None, :]
        w = reversible.sgd(loss, w0, alphas, betas, h["m"], method=method, **opts)
        return anp.sum(anp.concatenate(w) ** 2)

    h0 = {"s": np.array([0.1, -0.2]), "la": np.log([0.1, 0.15]), "b": np.array([0.9, 0.8]),
          "m": -np.ones(6)}
    basis = {"w0": "scale", "v0": None, "alphas": "groups", "betas": "groups", "meta": "full"}
    got = grad(lambda h: objective(h, "forward", basis=basis))(h0)
    ref = grad(lambda h: objective(h, "exact"))(h0)
    for k in h0:
        np.testing.assert_allclose(got[k], ref[k], rtol=1e-7, err_msg=k)


def test_forward_without_directions_gives_nan_not_zero():
    loss, hyp = make_problem(T=4)
    g = hypergrads(loss, hyp, "forward", kinds=("v0", "meta"), basis={"v0": None})
    assert np.all(np.isnan(g["v0"]))
    assert np.all(np.isfinite(g["meta"]))


# ---------------------------------------------------------------- truncated, by definition
def test_truncated_equals_backprop_of_the_last_K_steps():
    T, K = 15, 4
    loss, hyp = make_problem(T=T)
    # w_{T-K}, v_{T-K} by an independent float loop (effective betas, as every method uses)
    w, v = hyp["w0"].copy(), np.zeros(6)
    dloss = grad(loss)
    for t in range(T - K):
        beta = effective_beta(hyp["betas"][t, 0])
        v = beta * v - (1 - beta) * dloss(w, hyp["meta"], t)
        w = w + hyp["alphas"][t, 0] * v
    tail_loss = lambda w_, m, t: loss(w_, m, t + T - K)  # noqa: E731
    tail = {"w0": w, "v0": v, "alphas": hyp["alphas"][T - K:], "betas": hyp["betas"][T - K:],
            "meta": hyp["meta"]}
    ref = hypergrads(tail_loss, tail, "unrolled", kinds=("alphas", "betas", "meta"))
    got = hypergrads(loss, hyp, "truncated", K=K)
    np.testing.assert_allclose(got["alphas"][T - K:], ref["alphas"], rtol=1e-10)
    np.testing.assert_allclose(got["betas"][T - K:], ref["betas"], rtol=1e-10)
    np.testing.assert_allclose(got["meta"], ref["meta"], rtol=1e-10)
    assert not np.any(got["alphas"][:T - K]) and not np.any(got["betas"][:T - K])
    assert not np.any(got["w0"]) and not np.any(got["v0"])


# ---------------------------------------------------------------- DrMAD
def straight_line_problem(T=12, on_line=True):
    """Quadratic plus a quartic along an eigenvector ``e`` of ``A``: started on the line
    ``m + s e``, the run stays on it; the alphas are chosen so that it moves at constant speed."""
    rng = np.random.default_rng(3)
    Q, _ = np.linalg.qr(rng.normal(size=(4, 4)))
    lam = np.array([0.5, 1.0, 2.0, 3.0])
    A = Q @ np.diag(lam) @ Q.T
    m0 = rng.normal(size=4)

    e = Q[:, 1]

    def loss(w, m, t):
        d = w - m
        return 0.5 * anp.dot(d, anp.dot(A, d)) + 0.25 * anp.dot(e, d) ** 4

    def gradient(w):
        d = w - m0
        return A @ d + np.dot(e, d) ** 3 * e

    direction = e if on_line else 1.5 * e + 1.5 * Q[:, 3]
    w0 = m0 + 0.8 * direction
    beta = effective_beta(0.8)
    step = -0.4 / T                       # coordinate moved along the line per step
    alphas, v = [], np.zeros(4)
    w = w0.copy()
    for _ in range(T):                    # choose alpha_t so that every step moves by `step`
        v = beta * v - (1 - beta) * gradient(w)
        a = step * 0.8 / np.dot(v, direction) if on_line else 0.3
        alphas.append(a)
        w = w + a * v
    hyp = {"w0": w0, "v0": np.zeros(4), "alphas": np.array(alphas)[:, None],
           "betas": np.full((T, 1), 0.8), "meta": m0}
    return loss, hyp


def test_drmad_equals_exact_on_a_straight_constant_speed_path():
    loss, hyp = straight_line_problem()
    assert_same(hypergrads(loss, hyp, "drmad"), hypergrads(loss, hyp, "exact"), rtol=1e-6,
                atol=1e-9)


def test_drmad_differs_from_exact_off_the_line():
    loss, hyp = straight_line_problem(on_line=False)
    got, ref = hypergrads(loss, hyp, "drmad"), hypergrads(loss, hyp, "exact")
    for k in ("alphas", "betas", "meta"):
        rel = np.linalg.norm(got[k] - ref[k]) / np.linalg.norm(ref[k])
        assert rel > 1e-3, (k, rel)


def test_drmad_options():
    loss, hyp = make_problem(T=12)
    full = hypergrads(loss, hyp, "drmad")
    assert_same(hypergrads(loss, hyp, "drmad", reverse_steps=12), full, rtol=0, atol=0)
    assert_same(hypergrads(loss, hyp, "drmad_hybrid", K=0), full, rtol=0, atol=0)
    coarse = hypergrads(loss, hyp, "drmad", reverse_steps=5)
    assert np.all(coarse["alphas"] != 0)          # every forward step gets a share
    with pytest.raises(ValueError, match="reverse_steps"):
        hypergrads(loss, hyp, "drmad", reverse_steps=13)
    with pytest.raises(ValueError, match="K must be"):
        hypergrads(loss, hyp, "truncated", K=13)


# ---------------------------------------------------------------- implicit differentiation
def ridge(seed=0, n=40, d=5):
    rng = np.random.default_rng(seed)
    X, Xv = rng.normal(size=(n, d)), rng.normal(size=(n, d))
    w_true = rng.normal(size=d)
    y, yv = X @ w_true + 0.3 * rng.normal(size=n), Xv @ w_true + 0.3 * rng.normal(size=n)
    meta = np.log(np.linspace(0.05, 0.5, d))

    def loss(w, m, t):
        return 0.5 * anp.mean((anp.dot(X, w) - y) ** 2) + 0.5 * anp.sum(anp.exp(m) * w ** 2)

    def valid(w):
        return 0.5 * anp.mean((anp.dot(Xv, w) - yv) ** 2)

    H = X.T @ X / n + np.diag(np.exp(meta))
    return loss, valid, meta, H


def ift_hypergrad(method, T=60, **options):
    """(method's d L_V/d meta, closed form at the same w_T, w_T)."""
    loss, valid, meta, H = ridge()
    w0, alphas, betas = np.zeros(5), np.full(T, 0.1), np.full(T, 0.5)
    out = {}

    def f(m):
        w = reversible.sgd(loss, w0, alphas, betas, m, method=method, **options)
        out["w"] = np.asarray(getattr(w, "_value", w))
        return valid(w)

    g = grad(f)(meta)
    w = out["w"]
    dLv = grad(valid)(w)
    closed = -(np.exp(meta) * w) * np.linalg.solve(H, dLv)      # -H_{meta,w} H^{-1} dL_V/dw
    return g, closed, np.exp(meta) * w * dLv


def test_neumann_converges_to_closed_form_ift():
    errs = []
    for terms in (0, 5, 400):
        g, closed, _ = ift_hypergrad("neumann", terms=terms)
        errs.append(np.linalg.norm(g - closed) / np.linalg.norm(closed))
    assert errs[-1] < 1e-8
    assert errs[0] > errs[1] > 1e3 * errs[2]


def test_cg_reaches_closed_form_within_N_iterations():
    g, closed, _ = ift_hypergrad("cg", iterations=5)           # N = 5 weights
    np.testing.assert_allclose(g, closed, rtol=1e-8)
    g1, _, _ = ift_hypergrad("cg", iterations=1)
    assert np.linalg.norm(g1 - closed) > 1e-3 * np.linalg.norm(closed)


def test_identity_equals_its_formula():
    g, _, formula = ift_hypergrad("identity")
    np.testing.assert_allclose(g, -formula, rtol=1e-12)
    g2, _, _ = ift_hypergrad("identity", scale=0.25)
    np.testing.assert_allclose(g2, -0.25 * formula, rtol=1e-12)


@pytest.mark.parametrize("method", ["neumann", "cg", "identity"])
def test_ift_methods_are_blind_to_optimiser_hyperparameters(method):
    loss, hyp = make_problem(T=5)
    with pytest.raises(ValueError, match="cannot see alphas"):
        hypergrads(loss, hyp, method, kinds=("alphas",))
    with pytest.raises(ValueError, match="cannot see"):
        hypergrads(loss, hyp, method, kinds=("w0", "betas"))
    g = hypergrads(loss, hyp, method, kinds=("alphas", "meta"))
    assert not np.any(g["alphas"]) and np.any(g["meta"])
    stats = {}
    reversible.sgd(loss, hyp["w0"], hyp["alphas"], hyp["betas"], hyp["meta"], method=method,
                   stats=stats)
    assert set(stats["blind_to"]) == {"w0", "v0", "alphas", "betas"}


# ---------------------------------------------------------------- the same methods for Adam


def make_adam_problem(seed=0, T=12):
    loss, hyp = make_problem(seed=seed, T=T, groups=True)
    rng = np.random.default_rng(seed + 1)
    adam_hyp = {"w0": hyp["w0"], "alphas": 0.02 + 0.01 * rng.random((T, 2)),
                "beta1s": 0.8 + 0.1 * rng.random((T, 2)), "beta2s": 0.99 + 0.005 * rng.random((T, 2)),
                "eps": np.array([1e-3, 3e-3]), "weight_decay": 0.05 + 0.05 * rng.random((T, 2)),
                "meta": hyp["meta"]}
    return loss, adam_hyp


@pytest.mark.parametrize("method, options", [("checkpointed", {}), ("checkpointed", {"segment": 5}),
                                             ("truncated", {"K": 12})])
def test_adam_float_methods_equal_unrolled(method, options):
    loss, hyp = make_adam_problem()
    assert_same(adam_hypergrads(loss, hyp, method, **options), adam_hypergrads(loss, hyp, "unrolled"),
                rtol=1e-11, atol=1e-13, kinds=ADAM_KINDS)


def test_adam_forward_mode_equals_unrolled():
    loss, hyp = make_adam_problem(T=6)
    assert_same(adam_hypergrads(loss, hyp, "forward"), adam_hypergrads(loss, hyp, "unrolled"),
                rtol=1e-9, atol=1e-12, kinds=ADAM_KINDS)


def test_adam_truncated_equals_backprop_of_the_last_K_steps():
    """Truncation holds the state at T - K constant; the bias corrections of the last K
    steps still depend on every earlier beta, and their share is kept."""
    from autograd.tracer import getval

    from reversible.adam_rule import AdamSchedule
    T, K = 12, 4
    loss, hyp = make_adam_problem(T=T)
    w0 = np.concatenate(hyp["w0"])
    gi = np.repeat([0, 1], [4, 2])
    rule = AdamSchedule.build(hyp["alphas"], hyp["beta1s"], hyp["beta2s"], gi, 2, hyp["eps"],
                              hyp["weight_decay"]).rule()
    flat_loss = lambda w, m, t: loss([w[:4], w[4:]], m, t)  # noqa: E731
    dloss = grad(flat_loss, 0)

    def objective(h):
        hyper = rule.traced_hyper(h)
        w, aux = w0, (np.zeros(6), np.zeros(6))
        for t in range(T):
            if t == T - K:                       # truncation: the state is a constant here
                w, aux = getval(w), tuple(getval(a) for a in aux)
            w, aux = rule.float_step(hyper, t, w, aux, dloss(w, hyp["meta"], t))
        return anp.sum(w ** 2) + anp.sum(w)

    raw = {k: hyp[k] for k in rule.hyper_kinds}
    ref = grad(objective)(raw)
    got = adam_hypergrads(loss, hyp, "truncated", kinds=rule.hyper_kinds, K=K)
    for k in rule.hyper_kinds:
        np.testing.assert_allclose(got[k], ref[k], rtol=1e-10, atol=1e-14, err_msg=k)
    assert not np.any(got["alphas"][:T - K]) and np.all(got["beta1s"][:T - K] != 0)


def test_adam_drmad_follows_the_line_with_interpolated_moments():
    loss, hyp = make_adam_problem()
    got = adam_hypergrads(loss, hyp, "drmad")
    ref = adam_hypergrads(loss, hyp, "exact")
    for k in ADAM_KINDS:
        assert np.all(np.isfinite(flat(got[k]))), k
    rel = np.linalg.norm(flat(got["alphas"]) - flat(ref["alphas"])) / np.linalg.norm(flat(ref["alphas"]))
    assert rel > 1e-4                 # an approximation: not the exact hypergradient
    with pytest.raises(ValueError, match="velocity='path' needs a momentum velocity"):
        adam_hypergrads(loss, hyp, "drmad", velocity="path")


@pytest.mark.parametrize("method", ["cg", "neumann", "identity", "drmad_hybrid"])
def test_methods_without_adam_support_say_so(method):
    loss, hyp = make_adam_problem(T=3)
    with pytest.raises(ValueError, match="does not support Adam"):
        adam_hypergrads(loss, hyp, method)
