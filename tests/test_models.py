"""Tests of reversible.models: MLP log-probabilities, NLL, L2, derivatives, train_loss."""

import autograd
import numpy as np
import pytest
from autograd import grad, make_jvp
from scipy.special import log_softmax

import reversible
from reversible import data as D
from reversible import models as M


def _numpy_logprobs(params, X, act):
    """Independent NumPy forward pass (scipy log_softmax)."""
    f = {"tanh": np.tanh, "relu": lambda a: np.maximum(a, 0),
         "sigmoid": lambda a: 1 / (1 + np.exp(-a))}[act]
    h = X
    for k in range(0, len(params), 2):
        a = h @ params[k] + params[k + 1]
        h = f(a) if k < len(params) - 2 else a
    return log_softmax(h, axis=1)


def _small(seed=0, sizes=(5, 4, 3)):
    rng = np.random.default_rng(seed)
    return M.init_mlp(list(sizes), 0.5, seed), rng.random((7, sizes[0])), rng.integers(0, sizes[-1], 7)


def test_shapes_and_init():
    assert M.mlp_shapes([64, 50, 10]) == [(64, 50), (50,), (50, 10), (10,)]
    assert M.logistic_shapes(784, 10) == [(784, 10), (10,)]
    p = M.init_mlp([3, 4, 2], scale=[1.0, 2.0, 3.0, 4.0], seed=5)
    rng = np.random.default_rng(5)
    for s, arr, shape in zip([1.0, 2.0, 3.0, 4.0], p, M.mlp_shapes([3, 4, 2])):
        assert arr.dtype == np.float64 and arr.shape == shape
        assert np.array_equal(arr, s * rng.standard_normal(shape))
    q = M.init_mlp([3, 4, 2], scale=0.1, seed=5)
    assert np.allclose(q[0] * 10, p[0])
    with pytest.raises(ValueError, match="one entry per parameter array"):
        M.init_mlp([3, 4, 2], scale=[1.0, 2.0])
    with pytest.raises(ValueError, match="layer_sizes"):
        M.mlp_shapes([3])


@pytest.mark.parametrize("act", ["tanh", "relu", "sigmoid"])
def test_logprobs_match_reference_and_normalise(act):
    p, X, _ = _small()
    lp = M.mlp_logprobs(p, X, act)
    assert np.allclose(lp, _numpy_logprobs(p, X, act), rtol=1e-12, atol=1e-12)
    assert np.allclose(np.exp(lp).sum(axis=1), 1.0, atol=1e-13)
    big = [10000 * w for w in p]                     # huge logits: still finite and normalised
    lp = M.mlp_logprobs(big, X, act)
    assert np.all(np.isfinite(lp)) and np.allclose(np.exp(lp).sum(axis=1), 1.0)


def test_logprobs_errors():
    p, X, _ = _small()
    with pytest.raises(ValueError, match="activation"):
        M.mlp_logprobs(p, X, "softsign")
    with pytest.raises(ValueError, match="do not fit"):
        M.mlp_logprobs(p, X[:, :3])
    with pytest.raises(ValueError, match="W1, b1"):
        M.mlp_logprobs(p[:3], X)


def test_nll_targets_and_accuracy():
    p, X, y = _small()
    lp = _numpy_logprobs(p, X, "tanh")
    ref = -np.mean(lp[np.arange(7), y])
    assert np.isclose(M.nll(p, X, y), ref, rtol=1e-13)
    assert np.isclose(M.nll(p, X, D.one_hot(y, 3)), ref, rtol=1e-13)
    soft = np.full((7, 3), 1 / 3)
    assert np.isclose(M.nll(p, X, soft), -np.mean(lp.mean(axis=1)), rtol=1e-13)
    assert M.accuracy(p, X, y) == np.mean(lp.argmax(1) == y)
    assert M.accuracy(p, X, D.one_hot(y, 3)) == M.accuracy(p, X, y)
    with pytest.raises(ValueError, match="targets"):
        M.nll(p, X, np.zeros((7, 4)))


def _central_fd(f, x, eps=1e-6):
    g = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        e = np.zeros_like(x)
        e[i] = eps
        g[i] = (f(x + e) - f(x - e)) / (2 * eps)
    return g


@pytest.mark.parametrize("act", ["tanh", "sigmoid", "relu"])
def test_gradient_vs_finite_differences(act):
    p, X, y = _small(1)
    g = autograd.grad(M.nll)(p, X, y, act)
    for k in range(len(p)):
        def f(x, k=k):
            q = list(p)
            q[k] = x
            return M.nll(q, X, y, act)
        assert np.allclose(g[k], _central_fd(f, p[k]), rtol=1e-6, atol=1e-8)
    gX = autograd.grad(M.nll, 1)(p, X, y, act)          # learned training data
    assert np.allclose(gX, _central_fd(lambda x: M.nll(p, x, y, act), X), rtol=1e-6, atol=1e-8)


def test_hessian_vector_forward_over_reverse():
    """make_jvp(grad) (what the engine uses) equals reverse-over-reverse and finite differences."""
    p, X, y = _small(2)
    meta = [np.full(s.shape, -2.0) for s in p]
    u = [np.random.default_rng(3).standard_normal(s.shape) for s in p]

    def loss(w):
        return M.nll(w, X, y) + M.l2_penalty(w, meta, "weight")

    gradf = autograd.grad(loss)
    _, hv_fwd = make_jvp(gradf)(p)(u)
    hv_rev = autograd.grad(lambda w: sum(np.sum(a * b) for a, b in zip(gradf(w), u)))(p)
    eps = 1e-5
    gp = gradf([a + eps * b for a, b in zip(p, u)])
    gm = gradf([a - eps * b for a, b in zip(p, u)])
    for a, b, c, d in zip(hv_fwd, hv_rev, gp, gm):
        assert np.allclose(a, b, rtol=1e-10, atol=1e-12)
        assert np.allclose(a, (c - d) / (2 * eps), rtol=1e-5, atol=1e-7)


def test_l2_modes():
    p, _, _ = _small()
    log_g = np.log(np.array([0.1, 0.2, 0.3, 0.4]))
    ref = sum(0.5 * lam * np.sum(w ** 2) for lam, w in zip(np.exp(log_g), p))
    assert np.isclose(M.l2_penalty(p, log_g, "group"), ref, rtol=1e-14)
    per_weight = [np.full(w.shape, lg) for w, lg in zip(p, log_g)]
    assert np.isclose(M.l2_penalty(p, per_weight, "weight"), ref, rtol=1e-14)
    rng = np.random.default_rng(0)
    lw = [rng.standard_normal(w.shape) for w in p]
    ref_w = 0.5 * sum(np.sum(np.exp(l) * w ** 2) for l, w in zip(lw, p))
    assert np.isclose(M.l2_penalty(p, lw, "weight"), ref_w, rtol=1e-14)
    # gradient wrt log-L2 per weight: 0.5 exp(l) w^2
    g = autograd.grad(M.l2_penalty, 1)(p, lw, "weight")
    assert all(np.allclose(a, 0.5 * np.exp(l) * w ** 2) for a, l, w in zip(g, lw, p))
    with pytest.raises(ValueError, match="group"):
        M.l2_penalty(p, log_g[:3], "group")
    with pytest.raises(ValueError, match="weight"):
        M.l2_penalty(p, lw[:2], "weight")
    with pytest.raises(ValueError, match="l2 mode"):
        M.l2_penalty(p, log_g, "layer")


def test_train_loss_uses_the_step_batch():
    d = D.load_digits()
    sizes = [64, 8, 10]
    p = M.init_mlp(sizes, 0.1, seed=1)
    meta = np.full(4, -3.0)
    f = M.make_train_loss(d, sizes, batch_size=32, seed=7, l2="group")
    first = f(p, meta, 0)
    for t in (0, 5, 60):
        idx = D.batch_indices(d.n, 32, 7, t)
        ref = M.nll(p, d.X[idx], d.y[idx]) + M.l2_penalty(p, meta, "group")
        assert f(p, meta, t) == ref
    assert f(p, meta, 0) == first               # no hidden state: step 0 again after step 60
    assert f(p, meta, 0) != f(p, meta, 1)
    g = M.make_train_loss((d.X, d.y), sizes, 32, shuffle=False)
    assert g(p, None, 1) == M.nll(p, d.X[32:64], d.y[32:64])
    with pytest.raises(ValueError, match="meta"):
        g(p, meta, 0)
    with pytest.raises(ValueError, match="layer_sizes"):
        M.make_train_loss(d, [10, 10], 32)
    with pytest.raises(ValueError, match="classes"):
        M.make_train_loss(d, [64, 5], 32)
    with pytest.raises(ValueError, match="batch_size"):
        M.make_train_loss(d, sizes, 5000)
    with pytest.raises(ValueError, match="l2"):
        M.make_train_loss(d, sizes, 32, l2="lasso")


def _flat(x):
    return np.concatenate([np.ravel(a) for a in x]) if isinstance(x, (list, tuple)) else np.ravel(x)


def _rel(a, b):
    return np.linalg.norm(np.ravel(a) - np.ravel(b)) / np.linalg.norm(np.ravel(b))


@pytest.mark.parametrize("l2", ["group", "weight"])
def test_sgd_exact_matches_unrolled(l2):
    train, val = D.split(D.load_digits(), [60, 40], seed=0)
    sizes = [64, 6, 10]
    shapes = M.mlp_shapes(sizes)
    T = 12
    f = M.make_train_loss(train, sizes, batch_size=20, seed=0, l2=l2)
    w0 = _flat(M.init_mlp(sizes, 0.1, seed=0))
    meta0 = np.full(4, -2.0) if l2 == "group" else np.full(w0.size, -2.0)
    alphas = np.full((T, 4), 0.3)
    betas = np.full((T, 4), 0.9)

    def unflat(v):                      # a plain list of (boxed) arrays, one per layer array
        cuts = np.cumsum([0] + [int(np.prod(s)) for s in shapes])
        return [np.reshape(v[a:b], s) for a, b, s in zip(cuts[:-1], cuts[1:], shapes)]

    def objective(hyper, method):
        a, m, w = hyper
        meta = m if l2 == "group" else unflat(m)
        wT = reversible.sgd(f, unflat(w), a, betas, meta, method=method)
        return M.nll(wT, val.X, val.y)

    hyper = (alphas, meta0, w0)
    assert objective(hyper, "exact") == pytest.approx(objective(hyper, "unrolled"), rel=1e-9)
    ge = autograd.grad(objective)(hyper, "exact")
    gu = autograd.grad(objective)(hyper, "unrolled")
    for a, b in zip(ge, gu):
        assert np.linalg.norm(b) > 0
        assert _rel(a, b) < 1e-8


# ----------------------------------------------------------------- MLPClassifierProblem
def test_mlp_problem_objective_is_the_validation_loss_of_the_plain_loop():
    """objective(h) equals the validation NLL after an independent float64 SGD-with-momentum loop."""
    import pickle

    from reversible import effective_beta
    prob = M.MLPClassifierProblem.on_digits(5, hidden=(6,), n_train=200, batch_size=40, seed=2)
    assert prob.layer_sizes == [64, 6, 10] and prob.G == 4 and prob.N == 64 * 6 + 6 + 6 * 10 + 10
    assert len(prob.train_data) == 200 and len(prob.valid) == 1797 - 200
    h = prob.hypers0(alpha=0.3, beta=0.8, l2=1e-2, init_scale=[0.1, 0.01, 0.2, 0.01])
    w = [np.exp(h["log_init_scale"][g]) * prob.noise[g] for g in range(4)]
    v = [np.zeros_like(p) for p in w]
    b = float(effective_beta(0.8))
    g_fn = grad(prob.train_loss)
    for t in range(5):
        g = g_fn(w, h["log_l2"], t)
        v = [b * vi - (1 - b) * gi for vi, gi in zip(v, g)]
        w = [wi + 0.3 * vi for wi, vi in zip(w, v)]
    want = M.nll(w, prob.valid.X, prob.valid.y)
    assert prob.objective(h, "unrolled") == pytest.approx(want, rel=1e-12)
    assert prob.objective(h, "exact") == pytest.approx(want, rel=1e-8)
    # rebuilt from its arguments in another process: the same objective
    assert pickle.loads(pickle.dumps(prob)).objective(h, "unrolled") == prob.objective(h, "unrolled")


def test_mlp_problem_schedules_and_constants_agree_and_differentiate_alike():
    prob = M.MLPClassifierProblem.on_digits(4, hidden=(5,), n_train=100, batch_size=50)
    const, sched = prob.hypers0(), prob.hypers0(schedule=True)
    assert const["log_alpha"].shape == (4,) and sched["log_alpha"].shape == (4, 4)
    assert prob.objective(const) == prob.objective(sched)
    g_const = grad(prob.objective)(const)
    g_sched = grad(prob.objective)(sched)
    # a constant learning rate's hypergradient is the sum of the per-step ones
    np.testing.assert_allclose(g_sched["log_alpha"].sum(axis=0), g_const["log_alpha"], rtol=1e-10)
    np.testing.assert_allclose(g_sched["log_l2"], g_const["log_l2"], rtol=1e-10)


def test_mlp_problem_rejects_bad_settings():
    with pytest.raises(ValueError, match="positive number of training steps"):
        M.MLPClassifierProblem.on_digits(0)
    prob = M.MLPClassifierProblem.on_digits(3, hidden=())
    assert prob.layer_sizes == [64, 10] and prob.group_names() == ["W1", "b1"]
    with pytest.raises(ValueError, match="0 < beta < 1"):
        prob.hypers0(beta=1.0)
    with pytest.raises(ValueError, match="unknown method"):
        prob.objective(prob.hypers0(), "bogus")
