"""ES and PES (methods "es" / "pes") against their definitions.

Problem: a diagonal quadratic training loss ``1/2 sum (a + m^2) w^2 - b.w``
whose curvature depends on the meta-parameter ``m``; the meta-objective is
``<dw, w_T>``.  ``w_T`` is multilinear in the learning rates ``alphas`` (each
enters one step once) and a polynomial of degree ``2T`` in ``m``.  So the
Gaussian-smoothed gradient has a closed form: smoothing over ``alphas``
changes nothing (multilinear, zero-mean independent noise), and the integral
over ``m`` is exact with Gauss-Hermite quadrature of ``> T`` nodes, applied to
exact gradients from ``method="unrolled"`` (autograd through float64 training).

Statistical tests: each compares the estimate with the closed form using the
estimator's own standard error (spread over antithetic pairs, 1000 pairs):
``max_j |z_j| < Z`` with ``Z`` the two-sided normal quantile at ``1e-6 / D``
(Bonferroni over the ``D`` coordinates), so a correct estimator fails a test
with probability at most about 1e-6.
"""

import autograd.numpy as anp
import numpy as np
import pytest
from autograd import grad
from scipy.stats import norm

import reversible

A = np.array([1.0, 3.0, 0.5])
B = np.array([1.0, -1.0, 0.5])
W0 = np.array([0.3, -0.2, 0.1])
DW = np.array([1.0, 0.5, -2.0])
T = 5
BETAS = np.full(T, 0.5)
ALPHAS = np.full(T, 0.6)
META = np.array([0.1])
FALSE_FAILURE = 1e-6


def loss(w, m, t):
    return 0.5 * anp.sum((A + m[0] ** 2) * w ** 2) - anp.dot(B, w)


def objective(alphas, meta, **kw):
    return anp.dot(DW, reversible.sgd(loss, W0, alphas, BETAS, meta, **kw))


exact_grad = grad(objective, (0, 1))


def estimate(method, particles=2000, **options):
    stats = {}
    ga, gm = exact_grad(ALPHAS, META, method=method, particles=particles, stats=stats, **options)
    return {"alphas": ga, "meta": gm}, stats


def closed_form_smoothed(sigma_meta, nodes=20):
    """E over m of the exact gradient (alphas: multilinear, so their smoothing is void)."""
    x, wts = np.polynomial.hermite.hermgauss(nodes)
    out = {"alphas": np.zeros(T), "meta": np.zeros(1)}
    for xi, wi in zip(x, wts):
        ga, gm = exact_grad(ALPHAS, META + np.sqrt(2.0) * sigma_meta * xi, method="unrolled")
        out["alphas"] += wi * ga / np.sqrt(np.pi)
        out["meta"] += wi * gm / np.sqrt(np.pi)
    return out


def z_max(est, ref, se, kinds):
    z = np.concatenate([np.ravel((est[k] - ref[k]) / np.ravel(se[k])) for k in kinds])
    return float(np.max(np.abs(z))), z.size


def critical(D):
    return norm.isf(FALSE_FAILURE / (2 * D))


def assert_agrees(est, ref, stats, kinds):
    zmax, D = z_max(est, ref, stats["standard_error"], kinds)
    assert zmax < critical(D), f"max |z| = {zmax:.2f} >= {critical(D):.2f}: {est} vs {ref}"


def test_es_converges_to_the_smoothed_gradient_not_the_exact_one():
    sigma = 0.5
    est, stats = estimate("es", sigma={"meta": sigma}, seed=1)
    smoothed = closed_form_smoothed(sigma)
    assert_agrees(est, smoothed, stats, ["meta"])
    # the test has power: the exact gradient lies many standard errors away
    exact = exact_grad(ALPHAS, META, method="unrolled")[1]
    assert abs(smoothed["meta"][0] - exact[0]) > 10 * stats["standard_error"]["meta"][0]
    assert np.all(np.isnan(est["alphas"]))        # not perturbed: NaN, never a silent zero


def test_es_over_schedules_and_meta_matches_the_closed_form_and_its_error_shrinks():
    sigma = 0.3
    smoothed = closed_form_smoothed(sigma)
    small, s_small = estimate("es", particles=200, sigma=sigma, seed=2)
    big, s_big = estimate("es", particles=2000, sigma=sigma, seed=3)
    for est, st in ((small, s_small), (big, s_big)):
        assert_agrees(est, smoothed, st, ["alphas", "meta"])
    ratio = np.median(s_small["standard_error"]["alphas"] / s_big["standard_error"]["alphas"])
    assert 0.7 * np.sqrt(10) < ratio < 1.3 * np.sqrt(10)     # standard error ~ 1/sqrt(particles)


def test_es_with_small_sigma_gives_the_exact_hypergradient():
    est, stats = estimate("es", sigma=1e-5, seed=4)
    ga, gm = exact_grad(ALPHAS, META, method="exact")
    assert_agrees(est, {"alphas": ga, "meta": gm}, stats, ["alphas", "meta"])
    cos = np.dot(est["alphas"], ga) / np.linalg.norm(est["alphas"]) / np.linalg.norm(ga)
    assert cos > 0.99


def pes_reference(sigma, K, nodes=4):
    """PES-smoothed gradient: each truncation sees its own m; an independent autograd loop
    (momentum convention of the engine) integrated on a Gauss-Hermite tensor grid."""
    starts = list(range(0, T, K))
    beta = float(reversible.effective_beta(0.5))

    def F(alphas, ms):
        w, v = W0, np.zeros(3)
        for t in range(T):
            m = ms[t // K]
            g = (A + m ** 2) * w - B
            v = beta * v - (1 - beta) * g
            w = w + alphas[t] * v
        return anp.dot(DW, w)

    dF = grad(F, (0, 1))
    x, wts = np.polynomial.hermite.hermgauss(nodes)
    out = {"alphas": np.zeros(T), "meta": np.zeros(1)}
    for idx in np.ndindex(*(nodes,) * len(starts)):
        ms = META[0] + np.sqrt(2.0) * sigma * x[list(idx)]
        weight = np.prod(wts[list(idx)]) / np.pi ** (len(starts) / 2)
        ga, gm = dF(ALPHAS, ms)
        out["alphas"] += weight * ga
        out["meta"] += weight * np.sum(gm)        # m is shared: sum over its truncations
    return out


def test_pes_with_a_remainder_matches_its_smoothed_gradient():
    sigma, K = 0.5, 2                         # truncations [0, 2), [2, 4), [4, 5)
    est, stats = estimate("pes", sigma=sigma, K=K, seed=5)
    assert stats["truncations"] == 3 and stats["K"] == K
    assert_agrees(est, pes_reference(sigma, K), stats, ["alphas", "meta"])


def test_pes_reference_differs_from_the_es_one():
    """The PES-smoothed map (independent m per truncation) is not the ES-smoothed one."""
    assert abs(pes_reference(0.5, 2)["meta"][0] - closed_form_smoothed(0.5)["meta"][0]) > 1e-3
    np.testing.assert_allclose(pes_reference(0.5, T, nodes=20)["meta"],
                               closed_form_smoothed(0.5)["meta"], rtol=1e-10)


def test_pes_with_K_equal_T_is_es_draw_for_draw():
    es, _ = estimate("es", particles=20, sigma=0.2, seed=7)
    pes, _ = estimate("pes", particles=20, sigma=0.2, seed=7, K=T)
    for k in es:
        np.testing.assert_array_equal(es[k], pes[k])


@pytest.mark.parametrize("method,extra", [("es", {}), ("pes", {"K": 2})])
def test_seeds_reproduce_results(method, extra):
    a, _ = estimate(method, particles=10, sigma=0.2, seed=11, **extra)
    b, _ = estimate(method, particles=10, sigma=0.2, seed=11, **extra)
    c, _ = estimate(method, particles=10, sigma=0.2, seed=12, **extra)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    assert not np.allclose(a["alphas"], c["alphas"])


@pytest.mark.parametrize("method", ["es", "pes"])
def test_forward_value_is_that_of_the_float_methods(method):
    w_es = reversible.sgd(loss, W0, ALPHAS, BETAS, META, method=method, sigma=0.1, particles=4)
    w_ck = reversible.sgd(loss, W0, ALPHAS, BETAS, META, method="checkpointed")
    np.testing.assert_array_equal(w_es, w_ck)


def test_initial_weights_are_blind_and_momenta_only_on_request():
    def f(w0, betas):
        return anp.dot(DW, reversible.sgd(loss, w0, ALPHAS, betas, META, method="es",
                                           sigma=0.1, particles=4))
    with pytest.raises(ValueError, match="cannot see w0"):
        grad(f, 0)(W0, BETAS)
    gw, gb = grad(f, (0, 1))(W0, BETAS)
    assert np.all(gw == 0) and np.all(np.isnan(gb))
    stats = {}
    gb = grad(lambda b: anp.dot(DW, reversible.sgd(
        loss, W0, ALPHAS, b, META, method="es", sigma={"betas": 0.01}, particles=4,
        stats=stats)))(BETAS)
    assert np.all(np.isfinite(gb)) and stats["perturbed"] == ["betas"]
    assert "alphas" in stats["blind_to"]


BAD_OPTIONS = [
    ({}, "give sigma"),
    ({"sigma": 0.0}, "positive and finite"),
    ({"sigma": -1.0}, "positive and finite"),
    ({"sigma": float("nan")}, "positive and finite"),
    ({"sigma": float("inf")}, "positive and finite"),
    ({"sigma": True}, "positive float"),
    ({"sigma": "big"}, "positive float"),
    ({"sigma": {"meta": 0.1}, "perturb": ("alphas",)}, "disagree"),
    ({"sigma": {"w0": 0.1}}, "perturb must name"),
    ({"sigma": 0.1, "perturb": ()}, "perturb must name"),
    ({"sigma": 0.1, "particles": 0}, "positive even integer"),
    ({"sigma": 0.1, "particles": 3}, "positive even integer"),
    ({"sigma": 0.1, "particles": -2}, "positive even integer"),
    ({"sigma": 0.1, "particles": 4.0}, "positive even integer"),
    ({"sigma": 0.1, "particles": True}, "positive even integer"),
    ({"sigma": 0.1, "seed": -1}, "seed"),
    ({"sigma": 0.1, "seed": 1.5}, "seed"),
    ({"sigma": 0.1, "seed": True}, "seed"),
    ({"sigma": 0.1, "seed": "x"}, "seed"),
    ({"sigma": 0.1, "bogus": 1}, "does not take"),
]


@pytest.mark.parametrize("method", ["es", "pes"])
@pytest.mark.parametrize("options,message", BAD_OPTIONS)
def test_bad_options_are_loud(method, options, message):
    options = dict({"particles": 4}, **options)
    with pytest.raises(ValueError, match=message):
        reversible.sgd(loss, W0, ALPHAS, BETAS, META, method=method, **options)


@pytest.mark.parametrize("K", [0, T + 1, 1.5, True, "2"])
def test_bad_truncation_lengths_are_loud(K):
    with pytest.raises(ValueError, match="K must be"):
        reversible.sgd(loss, W0, ALPHAS, BETAS, META, method="pes", sigma=0.1, particles=4, K=K)


def test_perturbing_meta_without_meta_is_loud():
    with pytest.raises(ValueError, match="has no meta"):
        reversible.sgd(lambda w, m, t: anp.sum(w ** 2), W0, ALPHAS, BETAS, method="es",
                       sigma={"meta": 0.1}, particles=4)


# ------------------------------------------------------------------ online (reversible.online)
def _online_problem():
    a, c = np.array([1.0, 2.0, 0.5]), np.array([1.0, -1.0, 2.0])

    def train_loss(w, m, t):
        return 0.5 * anp.sum(a * (w - c) ** 2) + 0.5 * m[0] * anp.sum(w ** 2)

    def val_loss(w, t):
        return 0.5 * anp.sum((w - c - 0.3) ** 2)

    def exact(steps, u_meta, log_lr, beta):
        """d val_loss(w_steps) / d (log meta, log lr), autograd through the plain loop."""
        def f(u):
            w, v = np.zeros(3), np.zeros(3)
            for t in range(steps):
                g = a * (w - c) + anp.exp(u[0]) * w
                v = beta * v - (1 - beta) * g
                w = w + anp.exp(u[1]) * v
            return val_loss(w, steps - 1)
        return grad(f)(np.array([u_meta, log_lr]))

    return train_loss, val_loss, exact


def _online_h(est, steps, K):
    from reversible.online import train_online
    tl, vl, _ = _online_problem()
    r = train_online(tl, vl, np.zeros(3), np.array([0.5]), steps, est, lr=0.2, beta=0.5,
                     hyper_lr=0.0, transform="exp", tune_lr=True, record_every=1)
    return r.history["h"][K - 1], r.history["h"][steps - 1]


def _small_sigma_bound(g, n):
    """Antithetic ES at small sigma: coordinate j has variance (|g|^2 + g_j^2) / n."""
    return critical(g.size) * np.sqrt((g @ g + g ** 2) / n)


def test_online_pes_is_unbiased_across_truncations_and_truncated_es_is_not():
    from reversible.online import PersistentES, TruncatedES
    K, particles = 3, 2000
    _, _, exact = _online_problem()
    beta = float(reversible.effective_beta(0.5))
    g_full = exact(2 * K, np.log(0.5), np.log(0.2), beta)
    h1, h2 = _online_h(PersistentES(K, 1e-4, particles, seed=1), 2 * K, K)
    t1, t2 = _online_h(TruncatedES(K, 1e-4, particles, seed=1), 2 * K, K)
    np.testing.assert_array_equal(h1, t1)                # the first truncation is shared
    assert np.all(np.abs(h2 - g_full) < _small_sigma_bound(g_full, particles // 2))
    # truncated ES misses the first truncation's effect: it fails the test PES passes
    assert np.max(np.abs(t2 - g_full) / _small_sigma_bound(g_full, particles // 2)) > 1


@pytest.mark.parametrize("kw,message", [({"K": 0}, "K >= 1"), ({"sigma": 0.0}, "positive"),
                                        ({"particles": 3}, "even"), ({"seed": -1}, "seed")])
def test_online_es_options_are_loud(kw, message):
    from reversible.online import PersistentES
    args = dict({"K": 2, "sigma": 0.1, "particles": 4}, **kw)
    with pytest.raises(ValueError, match=message):
        PersistentES(**args)


# ------------------------------------------------------------------ Adam (reversible.adam)
def adam_objective(alphas, meta, beta1s=np.full(T, 0.9), **kw):
    return anp.dot(DW, reversible.adam(loss, W0, alphas, beta1s, np.full(T, 0.999), meta, **kw))


ADAM_ALPHAS = np.full(T, 0.05)


@pytest.mark.parametrize("method,extra", [("es", {}), ("pes", {"K": 2})])
def test_adam_forward_value_is_that_of_the_float_methods(method, extra):
    w = reversible.adam(loss, W0, ADAM_ALPHAS, np.full(T, 0.9), np.full(T, 0.999), META,
                        method=method, sigma=0.01, particles=4, **extra)
    ref = reversible.adam(loss, W0, ADAM_ALPHAS, np.full(T, 0.9), np.full(T, 0.999), META,
                          method="checkpointed")
    np.testing.assert_array_equal(w, ref)


@pytest.mark.parametrize("method,extra", [("es", {}), ("pes", {"K": 2})])
def test_adam_small_sigma_gives_the_exact_hypergradient(method, extra):
    stats = {}
    ga, gm = grad(adam_objective, (0, 1))(ADAM_ALPHAS, META, method=method, sigma=1e-5,
                                          particles=2000, seed=21, stats=stats, **extra)
    ea, em = grad(adam_objective, (0, 1))(ADAM_ALPHAS, META, method="exact")
    assert_agrees({"alphas": ga, "meta": gm}, {"alphas": ea, "meta": em}, stats,
                  ["alphas", "meta"])


def test_adam_other_hyperparameters_are_nan_and_momenta_cannot_be_perturbed():
    g = grad(lambda b1: adam_objective(ADAM_ALPHAS, META, b1, method="es", sigma=0.01,
                                       particles=4))(np.full(T, 0.9))
    assert np.all(np.isnan(g))
    with pytest.raises(ValueError, match="only alphas and meta"):
        adam_objective(ADAM_ALPHAS, META, method="es", sigma={"betas": 0.01}, particles=4)


def test_adam_initial_weights_alone_are_refused_as_under_sgd():
    def f(w0):
        return anp.dot(DW, reversible.adam(loss, w0, ADAM_ALPHAS, np.full(T, 0.9),
                                           np.full(T, 0.999), META, method="es", sigma=0.01,
                                           particles=4))
    with pytest.raises(ValueError, match="cannot see w0"):
        grad(f)(W0)


def test_stacked_particle_step_is_the_float_momentum_step_bit_for_bit():
    from reversible.numba_kernels import particles_momentum_step
    from reversible.trajectory import momentum_step
    rng = np.random.default_rng(7)
    P, N, G = 3, 11, 4
    group_index = rng.integers(0, G, N)              # groups need not be contiguous
    W, V, g = (rng.standard_normal((P, N)) * 10.0 ** rng.integers(-3, 3, (P, N)) for _ in range(3))
    alphas, betas = rng.uniform(0, 2, (P, G)), rng.uniform(0, 1, (P, G))
    betas[0, 0], betas[1, 1] = 1.0, 0.0
    ref_w, ref_v = momentum_step(W, V, g, alphas[:, group_index], betas[:, group_index])
    W2, V2 = W.copy(), V.copy()
    particles_momentum_step(W2, V2, g, alphas, betas, group_index)
    assert np.array_equal(W2, ref_w) and np.array_equal(V2, ref_v)


def test_a_batched_particle_gradient_gives_what_the_loop_gives():
    from reversible.methods.es import train_particles
    from reversible.problem import Problem
    from reversible.structure import Structure
    s = Structure(W0, "w0")
    problem = Problem.from_containers(loss, s, Structure(META, "meta"), w0=W0, v0=np.zeros(3), alphas=np.zeros((T, 1)),
                                      betas=np.full((T, 1), 0.5), meta=META, frac_bits=32)
    P = 4
    rng = np.random.default_rng(3)
    alphas = rng.uniform(0.1, 0.6, (T, P, 1))
    betas = np.full((T, P, 1), 0.5)
    metas = rng.standard_normal((P, 1))
    calls = []

    def stacked(Wp, m, t):
        calls.append(t)
        return (A + m ** 2) * Wp - B
    start = (np.tile(W0, (P, 1)), np.zeros((P, 3)))
    looped = train_particles(problem, alphas, betas, metas, *start, 0, T)
    batched = train_particles(problem, alphas, betas, metas, *start, 0, T, stacked_grad=stacked)
    assert calls == list(range(T))
    np.testing.assert_allclose(batched[0], looped[0], rtol=1e-13)
    np.testing.assert_allclose(batched[1], looped[1], rtol=1e-13)
    assert np.array_equal(start[0], np.tile(W0, (P, 1)))         # inputs are not overwritten
