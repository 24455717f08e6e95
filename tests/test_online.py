"""Online hyperparameter optimisation: estimators against independent derivatives."""

import autograd.numpy as anp
import numpy as np
import pytest
from autograd import grad, jacobian
from scipy.optimize import minimize_scalar

from reversible import online
from reversible import online_quadratic as oq
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


# ----------------------------------------------------------------- quadratic benchmark
def test_lam_star_minimises_the_validation_loss_at_the_training_optimum():
    q = oq.make_quadratic(reps=4, dim=6, seed=3)
    for r in range(4):
        f = lambda lam: 0.5 * np.sum(q.h[r] * (q.tt[r] / (1 + lam) - q.th[r]) ** 2)
        best = minimize_scalar(f, bounds=(-0.5, 5.0), method="bounded",
                               options={"xatol": 1e-10}).x
        assert abs(best - q.lam_star[r]) < 1e-6
        assert 0.2 <= q.lam_star[r] <= 0.4
        # lam_greedy zeroes <g_V, H theta> along theta*(lam)
        th = lambda lam: q.tt[r] / (1 + lam)
        phi = lambda lam: np.sum(q.h[r] * (th(lam) - q.th[r]) * q.h[r] * th(lam))
        assert abs(phi(q.lam_greedy[r])) < 1e-9 * np.sum(q.h[r] ** 2 * q.tt[r] ** 2)
        # theta*(lam) is the minimiser of L_T
        g = q.h[r] * (q.theta_star(0.3)[r] - q.tt[r]) + 0.3 * q.h[r] * q.theta_star(0.3)[r]
        assert np.allclose(g, 0)


def _quadratic_loop(q, r, lam, eta, steps, theta0):
    def step_map(lam):
        th = theta0
        for _ in range(steps):
            th = th - eta * (q.h[r] * (th - q.tt[r]) + lam * q.h[r] * th)
        return th
    return step_map


def test_quadratic_unroll_tangent_is_the_k_step_derivative():
    q = oq.make_quadratic(reps=3, dim=5, seed=1)
    K, eta, lam0 = 7, 0.05, 0.1
    res = oq.run(q, f"unroll{K}", phases=((K, eta),), lam0=lam0, unroll_hyper_lr=1.0)
    # lam moved by -<g_V(theta_K), d theta_K / d lam> (the unroll hyper step with rate 1)
    for r in range(3):
        m = _quadratic_loop(q, r, lam0, eta, K, np.zeros(5))
        dth = jacobian(m)(lam0)
        gv = q.h[r] * (m(lam0) - q.th[r])
        assert np.isclose(res["phases"][0]["lam"][r], lam0 - gv @ dth, rtol=1e-10)


def test_quadratic_clip_with_huge_radius_is_the_full_derivative():
    q = oq.make_quadratic(reps=2, dim=5, seed=2)
    T, eta, lam0 = 12, 0.05, 0.2
    # with c = 0 lam stays fixed; the tangent is checked through the first hyper step, taken last
    res = oq.run(q, "clip1e9", phases=((T, eta),), lam0=lam0, c=1.0, warmup=T - 1)
    for r in range(2):
        m = _quadratic_loop(q, r, lam0, eta, T, np.zeros(5))
        want = lam0 - eta * (q.h[r] * (m(lam0) - q.th[r])) @ jacobian(m)(lam0)
        assert np.isclose(res["phases"][0]["lam"][r], want, rtol=1e-10)


def test_quadratic_batched_agrees_with_the_general_loop():
    q = oq.make_quadratic(reps=1, dim=4, seed=5)
    h, tt, th = q.h[0], q.tt[0], q.th[0]
    tl = lambda w, m, t: 0.5 * anp.sum(h * (w - tt) ** 2) + 0.5 * m[0] * anp.sum(h * w ** 2)
    vl = lambda w, t: 0.5 * anp.sum(h * (w - th) ** 2)
    eta, T = 0.05, 40
    for name, lr_u in (("clip0.5", eta * 0.1), ("unroll5", 0.1), ("unroll1_gtgv", eta * 0.1)):
        res = online.train_online(tl, vl, np.zeros(4), np.array([0.0]), T, name, lr=eta,
                                  hyper_lr=lr_u)
        ref = oq.run(q, name, phases=((T, eta),), lam0=0.0, c=0.1)
        assert np.isclose(res.u[0], ref["phases"][0]["lam"][0], rtol=1e-9), name
        assert np.allclose(res.w, ref["phases"][0]["theta"][0], rtol=1e-9), name


def test_quadratic_table_direction_clip_beats_short_unrolls():
    q = oq.make_quadratic(reps=20, dim=20, seed=0)
    phases = ((4000, 1e-2),)
    res = {name: oq.run(q, name, phases=phases)["phases"][0]["lam"] for name in ("unroll1", "clip5")}
    err = {k: np.mean(np.abs(v - q.lam_star)) for k, v in res.items()}
    assert err["clip5"] < 0.25 * err["unroll1"]
    # short unrolls settle near the zero of <g_V, H theta> at theta*(lam), not at lam*
    assert np.median(np.abs(res["unroll1"] - q.lam_greedy)) < 0.1 * err["unroll1"]


# ------------------------------------------- experiments (quick modes: the CI smoke test)
@pytest.mark.parametrize("name", ["online_quadratic", "online_digits", "online_graded"])
def test_experiment_quick_runs_and_plots(name, tmp_path):
    import importlib
    import json

    exp = importlib.import_module(f"experiments.{name}")
    exp.main(["--quick", "--out", str(tmp_path)])
    meta = json.loads((tmp_path / f"{name}.json").read_text())
    assert meta["experiment"] == name and meta["rows"]
    if name == "online_graded":       # never-clipped forward mode is the exact hypergradient
        rows = [r for r in meta["rows"] if r["method"] == "clip1e12"]
        assert all(abs(r["cos_l2"] - 1) < 1e-8 and abs(r["ratio_lr"] - 1) < 1e-6 for r in rows)
    if name in ("online_quadratic", "online_graded"):
        fig = importlib.import_module(f"figures.{name}")
        paths = fig.plot(tmp_path, tmp_path)
        assert all(p.stat().st_size > 1000 for p in paths)
