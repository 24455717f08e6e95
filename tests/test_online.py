"""Online hyperparameter optimisation: estimators against independent derivatives."""

import autograd.numpy as anp
import numpy as np
import pytest
from autograd import grad, jacobian

from reversible import online
from reversible.errors import NonFiniteError

# ----------------------------------------------------------------- a small non-quadratic problem
RNG = np.random.default_rng(7)
X = RNG.standard_normal((40, 4))
Y = np.sign(X @ np.array([1.0, -2.0, 0.5, 1.0]) + 0.3 * RNG.standard_normal(40))
XV = RNG.standard_normal((30, 4))
YV = np.sign(XV @ np.array([1.0, -2.0, 0.5, 1.0]))
W0 = [0.1 * RNG.standard_normal(4), np.array([0.05])]


def _batch(t):
    return (np.arange(8) + 8 * t) % 40


def train_loss(w, meta, t):
    i = _batch(t)
    z = Y[i] * (anp.dot(X[i], w[0]) + w[1][0])
    pen = 0.5 * meta[0] * anp.sum(w[0] ** 2) + 0.5 * meta[1] * anp.sum(w[1] ** 2)
    return anp.mean(anp.logaddexp(0.0, -z)) + pen


def val_loss(w, t):
    z = YV * (anp.dot(XV, w[0]) + w[1][0])
    return anp.mean(anp.logaddexp(0.0, -z))


META0 = np.array([0.05, 0.02])


def unrolled_val(meta, log_lr, steps, beta, w0=W0, v0=None, t0=0):
    """Independent reference: the float64 training loop differentiated by autograd."""
    b = float(online.effective_beta(beta)) if beta else 0.0
    w = anp.concatenate([w0[0], w0[1]])
    v = anp.zeros(5) if v0 is None else v0
    loss = lambda x, t: train_loss([x[:4], x[4:]], meta, t)
    g = grad(loss)
    for t in range(t0, t0 + steps):
        v = b * v - (1 - b) * g(w, t)
        w = w + anp.exp(log_lr) * v
    return val_loss([w[:4], w[4:]], t0 + steps - 1)


def run_window(name, steps, beta=0.5, tune_lr=True, lr=0.3, **kw):
    """One window with the hyperparameters frozen (hyper_lr = 0): the last estimate."""
    res = online.train_online(train_loss, val_loss, W0, META0, steps, name, lr=lr, beta=beta,
                              hyper_lr=0.0, transform="exp", tune_lr=tune_lr, record_every=1, **kw)
    return res.history["h"][-1]


def reference(steps, beta=0.5, lr=0.3):
    """d L_V / d (log meta, log lr) of the unrolled loop."""
    f = lambda x: unrolled_val(anp.exp(x[:2]), x[2], steps, beta)
    return grad(f)(np.concatenate([np.log(META0), [np.log(lr)]]))


@pytest.mark.parametrize("beta", [0.0, 0.5])
def test_unroll_k_is_the_derivative_of_the_k_step_map(beta):
    K = 6
    np.testing.assert_allclose(run_window(f"unroll{K}", K, beta), reference(K, beta),
                               rtol=1e-8, atol=1e-12)


def test_unroll_resets_the_tangent_every_k_steps():
    # after 2K steps the estimate covers only the last K steps: a window started at step K
    K, lr, beta = 4, 0.3, 0.5
    res = online.train_online(train_loss, val_loss, W0, META0, K, "unroll1", lr=lr, beta=beta,
                              hyper_lr=0.0, transform="exp", tune_lr=True)
    wK = np.concatenate(res.w)
    f = lambda x: unrolled_val(anp.exp(x[:2]), x[2], K, beta, w0=[wK[:4], wK[4:]], v0=res.v, t0=K)
    want = grad(f)(np.concatenate([np.log(META0), [np.log(lr)]]))
    np.testing.assert_allclose(run_window(f"unroll{K}", 2 * K, beta, lr=lr), want, rtol=1e-8,
                               atol=1e-12)


def test_clip_with_huge_radius_is_never_reset_forward_mode():
    T = 15
    np.testing.assert_allclose(run_window("clip1e12", T), reference(T), rtol=1e-8, atol=1e-12)


def test_clip_projects_the_tangent_onto_the_ball():
    est = online.Clip(1e-3)
    online.train_online(train_loss, val_loss, W0, META0, 10, est, lr=0.3, beta=0.5, hyper_lr=0.0,
                        transform="exp", tune_lr=True)
    norms = np.sqrt(np.sum(est.Yw ** 2, 0) + np.sum(est.Yv ** 2, 0))
    assert np.all(norms <= 1e-3 * (1 + 1e-12)) and np.isclose(norms.max(), 1e-3, rtol=1e-12)


def test_unroll1_is_gtgv_times_the_effective_learning_rate():
    lr, beta = 0.3, 0.5
    b = float(online.effective_beta(beta))
    h1 = run_window("unroll1", 1, beta, tune_lr=False, lr=lr)
    hg = run_window("unroll1_gtgv", 1, beta, tune_lr=False, lr=lr)
    np.testing.assert_allclose(h1, lr * (1 - b) * hg, rtol=1e-10)
    # and gtgv is -<g_V(w_1), d g_T / d log meta> computed directly
    w1 = np.concatenate(W0) - lr * (1 - b) * grad(lambda x: train_loss([x[:4], x[4:]], META0, 0))(
        np.concatenate(W0))
    gv = grad(lambda x: val_loss([x[:4], x[4:]], 0))(w1)
    cross = jacobian(lambda lm: grad(lambda x: train_loss([x[:4], x[4:]], anp.exp(lm), 0))(
        np.concatenate(W0)))(np.log(META0))
    np.testing.assert_allclose(hg, -gv @ cross, rtol=1e-10)


def test_adaptive_equals_exact_engine_and_forward_unroll():
    K = 5
    h_exact = run_window(online.Adaptive(K, K, kernel="numpy"), K)
    np.testing.assert_allclose(h_exact, reference(K), rtol=1e-6)
    np.testing.assert_allclose(h_exact, run_window(f"unroll{K}", K), rtol=1e-6)


def test_adaptive_window_over_the_last_steps_only():
    every, last, lr, beta = 2, 3, 0.3, 0.5
    res = online.train_online(train_loss, val_loss, W0, META0, 3, "unroll1", lr=lr, beta=beta,
                              hyper_lr=0.0, transform="exp", tune_lr=True)
    w3 = np.concatenate(res.w)
    f = lambda x: unrolled_val(anp.exp(x[:2]), x[2], last, beta, w0=[w3[:4], w3[4:]], v0=res.v,
                               t0=3)
    want = grad(f)(np.concatenate([np.log(META0), [np.log(lr)]]))
    np.testing.assert_allclose(run_window(online.Adaptive(every, last, kernel="numpy"), 6, beta, lr=lr), want,
                               rtol=1e-6)


def test_hypergradient_descent_matches_its_definition():
    lr, beta = 0.3, 0.5
    b = float(online.effective_beta(beta))
    res = online.train_online(train_loss, val_loss, W0, META0, 1, "hd", lr=lr, beta=beta,
                              hyper_lr=0.0, tune_meta=False, tune_lr=True, record_every=1)
    w0 = np.concatenate(W0)
    gT = lambda x, t: grad(lambda z: train_loss([z[:4], z[4:]], META0, t))(x)
    v1 = -(1 - b) * gT(w0, 0)
    # d L_T(w_1(log a), meta, t=1) / d log a
    want = grad(lambda la: train_loss([(w0 + anp.exp(la) * v1)[:4], (w0 + anp.exp(la) * v1)[4:]],
                                      META0, 1))(np.log(lr))
    np.testing.assert_allclose(res.history["h"][-1], [want], rtol=1e-10)
    # hd on the validation loss is unroll1 for the learning rate
    hv = online.train_online(train_loss, val_loss, W0, META0, 1, "hd_val", lr=lr, beta=beta,
                             hyper_lr=0.0, tune_meta=False, tune_lr=True, record_every=1)
    np.testing.assert_allclose(hv.history["h"][-1], reference(1)[2:], rtol=1e-10)


def test_warmup_hyper_clip_rms_and_logistic_range():
    res = online.train_online(train_loss, val_loss, W0, np.array([0.5, 0.5]), 30, "clip100",
                              lr=0.3, beta=0.5, hyper_lr=1.0, transform="logistic", tune_lr=True,
                              hyper_clip=0.5, warmup=5, record_every=1)
    u = res.history["u"]
    assert np.all(u[:5] == u[0])                     # warm-up: no steps
    steps = np.abs(np.diff(u, axis=0))
    assert steps.max() <= 0.5 + 1e-12                # clipped hyper steps
    m = np.asarray(res.meta)
    assert np.all((m > 0) & (m < 1))
    # rho = 0: every step is hyper_lr * sign(h)
    res = online.train_online(train_loss, val_loss, W0, META0, 6, "clip100", lr=0.3, beta=0.5,
                              hyper_lr=0.01, transform="exp", tune_lr=True, hyper_rms=0.0,
                              record_every=1)
    du = np.diff(np.concatenate([[np.concatenate([np.log(META0), [np.log(0.3)]])],
                                 res.history["u"]]), axis=0)
    np.testing.assert_allclose(du, -0.01 * np.sign(res.history["h"]), rtol=1e-9)


def test_problem_train_is_the_plain_loop():
    prob = online.OnlineProblem(train_loss, val_loss, W0, META0, "exp", None, 1e-2, True, True, 0.5)
    w, v = prob.train(np.concatenate(W0), np.zeros(5), np.log(META0), np.log(0.3), 2, 4)
    b = float(online.effective_beta(0.5))
    x, vv = np.concatenate(W0), np.zeros(5)
    for t in range(2, 6):
        vv = b * vv - (1 - b) * grad(lambda z: train_loss([z[:4], z[4:]], META0, t))(x)
        x = x + 0.3 * vv
    np.testing.assert_allclose(w, x, rtol=1e-12)
    np.testing.assert_allclose(v, vv, rtol=1e-12)


def test_non_finite_hypergradient_raises():
    def bad_val(w, t):
        return val_loss(w, t) * np.nan
    with pytest.raises(NonFiniteError, match="non-finite hypergradient"):
        online.train_online(train_loss, bad_val, W0, META0, 3, "clip5", lr=0.1, hyper_lr=0.1,
                            transform="exp")


def test_finite_difference_dropout_with_coupled_masks():
    # keep-probability p on the inputs: mask = (U_t < p), U_t drawn from t alone
    def drop_loss(w, meta, t):
        i = _batch(t)
        U = np.random.default_rng(t).uniform(size=(8, 4))
        Xm = X[i] * (U < meta[0]) / meta[0]
        z = Y[i] * (anp.dot(Xm, w[0]) + w[1][0])
        return anp.mean(anp.logaddexp(0.0, -z))

    p, dp = 0.6, 1e-2
    prob = online.OnlineProblem(drop_loss, val_loss, W0, np.array([p]), "logistic", [True], dp,
                                True, False, 0.0)
    w = np.concatenate(W0)
    u = online.inverse_transform("logistic", [p])
    g = lambda q: prob.grad(w, np.array([q]), 3)
    want = (g(p + dp) - g(p)) / dp * p * (1 - p)     # coupled masks, chain rule through logistic
    np.testing.assert_allclose(prob.cross(w, u, 3)[:, 0], want, rtol=1e-12)
    # near 1 the difference is taken backwards, staying inside (0, 1)
    q = 0.995
    uq = online.inverse_transform("logistic", [q])
    want = (g(q) - g(q - dp)) / dp * q * (1 - q)
    np.testing.assert_allclose(prob.cross(w, uq, 3)[:, 0], want, rtol=1e-9)
    with pytest.raises(ValueError, match="finite-difference"):
        online.train_online(drop_loss, val_loss, W0, np.array([p]), 2, "adaptive1_1", lr=0.1,
                            beta=0.5, hyper_lr=0.1, transform="logistic", fd=[True])


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="unknown estimator"):
        online.estimator("unrollx")
    with pytest.raises(ValueError, match="needs"):
        online.estimator("clip0")
    with pytest.raises(ValueError, match="cannot tune the learning rate"):
        run_window("unroll1_gtgv", 1)
    with pytest.raises(ValueError, match="momentum"):
        run_window("adaptive1_1", 1, beta=0.0)
