"""The quadratic benchmark of the online-HO paper (experiments/online_quadratic.py):
closed forms, tangents against autograd, the batched loop against reversible.online,
and its quick run and figure."""

import importlib
import json

import autograd.numpy as anp
import numpy as np
from autograd import jacobian
from scipy.optimize import minimize_scalar

from experiments import online_quadratic as oq
from reversible import online


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
    res = oq.run_method(q, f"unroll{K}", phases=((K, eta),), lam0=lam0, unroll_hyper_lr=1.0)
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
    res = oq.run_method(q, "clip1e9", phases=((T, eta),), lam0=lam0, c=1.0, warmup=T - 1)
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
        ref = oq.run_method(q, name, phases=((T, eta),), lam0=0.0, c=0.1)
        assert np.isclose(res.u[0], ref["phases"][0]["lam"][0], rtol=1e-9), name
        assert np.allclose(res.w, ref["phases"][0]["theta"][0], rtol=1e-9), name


def test_quadratic_table_direction_clip_beats_short_unrolls():
    q = oq.make_quadratic(reps=20, dim=20, seed=0)
    phases = ((4000, 1e-2),)
    res = {name: oq.run_method(q, name, phases=phases)["phases"][0]["lam"] for name in ("unroll1", "clip5")}
    err = {k: np.mean(np.abs(v - q.lam_star)) for k, v in res.items()}
    assert err["clip5"] < 0.25 * err["unroll1"]
    # short unrolls settle near the zero of <g_V, H theta> at theta*(lam), not at lam*
    assert np.median(np.abs(res["unroll1"] - q.lam_greedy)) < 0.1 * err["unroll1"]


def test_quick_run_writes_every_method_and_plots(tmp_path):
    oq.main(["--quick", "--out", str(tmp_path)])
    meta = json.loads((tmp_path / "online_quadratic.json").read_text())
    assert meta["experiment"] == "online_quadratic"
    assert {(r["method"], r["phase"]) for r in meta["rows"]} == {
        (m, p) for m in oq.METHODS for p in (1, 2)}
    lam_lo, lam_hi = meta["lam_star_range"]
    assert 0.2 <= lam_lo <= lam_hi <= 0.4
    with np.load(tmp_path / "online_quadratic.npz") as arrays:
        assert arrays["lam_star"].shape == (10,)
        for m in oq.METHODS:
            assert np.all(np.isfinite(arrays[f"lam_err_{m}"]))
    fig = importlib.import_module("figures.online_quadratic")
    paths = fig.plot(tmp_path, tmp_path)
    assert sorted(p.suffix for p in paths) == [".pdf", ".png"]
    assert all(p.stat().st_size > 1000 for p in paths)


def test_unknown_method_names_the_valid_forms():
    import pytest
    with pytest.raises(ValueError, match="unroll<K>"):
        oq.parse_method("unroll0")
