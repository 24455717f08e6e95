"""Exact Adam / AdamW: bit-exact reversal, fidelity to float64 Adam, hypergradients, errors.

References: an independently written float64 Adam loop in this file (autograd
and central finite differences through it), ``method="unrolled"`` and, where
installed, ``torch.optim.Adam`` / ``AdamW``.
"""

import autograd
import autograd.numpy as anp
import numpy as np
import pytest

import reversible
from reversible import trajectory
from reversible.adam_rule import AdamSchedule
from reversible.buffer import BETA_ONE
from reversible.errors import FixedPointOverflowError, NonFiniteError, ReversibilityError
from _adam_hypergrads import ADAM_KINDS, adam_hypergrads  # tests/ is on sys.path

N = 10
_rng = np.random.default_rng(3)
_B = _rng.normal(size=(N, N))
A = _B @ _B.T / N + 0.5 * np.eye(N)


def grad(w, meta, t):
    g = A @ w + np.cos(0.3 * t + np.arange(N)) + 0.05 * w ** 3
    return g if meta is None else g + np.exp(meta) * w


def vjp(w, meta, t, u):
    hw = A @ u + 0.15 * w ** 2 * u
    if meta is None:
        return grad(w, meta, t), hw, None
    return grad(w, meta, t), hw + np.exp(meta) * u, np.exp(meta) * w * u


def _schedule(T, G=2, b1=0.9, b2=0.999, wd=0.0, alpha=0.02, seed=0, vary=True):
    rng = np.random.default_rng(seed)
    gi = np.repeat(np.arange(G), -(-N // G))[:N]
    jitter = (lambda x, s: np.clip(x + s * rng.uniform(-1, 1, (T, G)), 2.0 ** -15, 1.0)) if vary \
        else (lambda x, s: np.full((T, G), x))
    beta1 = jitter(b1, 0.02 if b1 < 1 else 0)
    beta2 = jitter(b2, 0.0005 if b2 < 1 else 0)
    beta1[0] = np.minimum(beta1[0], 0.999)
    beta2[0] = np.minimum(beta2[0], 0.999)
    alphas = alpha * (1 + 0.5 * rng.uniform(size=(T, G)))
    wds = wd * rng.uniform(0.5, 1.5, (T, G))
    return AdamSchedule.build(alphas, beta1, beta2, gi, G, 1e-8, wds)


def _reversed_exactly(state, w0):
    assert np.array_equal(state.W, np.rint(w0 * 2.0 ** state.frac_bits).astype(np.int64))
    assert not np.any(state.M) and not np.any(state.S)
    assert state.buffer.is_empty() and state.stats["reversed_exactly"] is True


# ------------------------------------------------------------------ reversal
@pytest.mark.parametrize("b1, b2, wd", [
    (0.9, 0.999, 0.0), (0.9, 0.999, 0.1), (0.3, 0.5, 0.05), (0.5, 0.5 + 2.0 ** -16, 0.0),
    (0.99, 0.9999, 0.5), (2.0 ** -15, 0.9, 0.0), (0.9, 1.0, 0.01), (1.0, 0.999, 0.0)])
def test_reversal_is_bit_exact_over_beta_and_decay_schedules(b1, b2, wd):
    sched = _schedule(40, b1=b1, b2=b2, wd=wd)
    rng = np.random.default_rng(1)
    w0 = rng.normal(size=N)
    meta = -1 + 0.1 * rng.normal(size=N)
    state = trajectory.forward(grad, w0, sched, meta)
    assert not np.array_equal(state.W, state.W0) and np.any(state.S)
    trajectory.reverse(state, vjp, rng.normal(size=N), [rng.normal(size=N), rng.normal(size=N)],
                       meta, N, grad=grad)
    _reversed_exactly(state, w0)


def test_long_run_reverses_exactly():
    sched = _schedule(600, b1=0.9, b2=0.999, wd=0.01, alpha=0.005, seed=4)
    w0 = np.random.default_rng(2).normal(size=N)
    state = trajectory.forward(grad, w0, sched)
    trajectory.reverse(state, vjp, np.ones(N), grad=grad)
    _reversed_exactly(state, w0)


def test_negative_values_and_range_edges_reverse_exactly():
    """Weights near the top of a small fixed-point range, of both signs, with decay."""
    frac_bits = 20                                          # |w| < 2**43
    w0 = np.where(np.arange(N) % 2 == 0, -1.0, 1.0) * (2.0 ** 43 - 2.0 ** 20)

    def g_sin(w, m, t):
        return np.sin(w + t)

    def v_sin(w, m, t, u):
        return g_sin(w, m, t), np.cos(w + t) * u, None

    sched = _schedule(30, wd=1e-3, alpha=0.5)
    state = trajectory.forward(g_sin, w0, sched, frac_bits=frac_bits)
    trajectory.reverse(state, v_sin, np.ones(N), grad=g_sin)
    _reversed_exactly(state, w0)


@pytest.mark.parametrize("T, b1, b2, wd", [(25, 0.9, 0.999, 0.05), (300, 2.0 ** -15, 0.3, 0.2),
                                           (40, 0.5, 1.0, 0.0)])
def test_kernels_agree_with_the_numpy_specification(T, b1, b2, wd):
    """Bit for bit: states, buffer heads, tails (several chunks in the long case), adjoints."""
    from reversible import adam_kernels
    sched = _schedule(T, b1=b1, b2=b2, wd=wd, alpha=0.01)
    w0 = np.random.default_rng(5).normal(size=N)
    ref = trajectory.forward(grad, w0, sched, kernel="numpy")
    for name in adam_kernels.available():
        got = trajectory.forward(grad, w0, sched, kernel=name)
        for a in ("W", "M", "S"):
            assert np.array_equal(getattr(got, a), getattr(ref, a)), (name, a)
        assert np.array_equal(got.buffer.head, ref.buffer.head)
        assert np.array_equal(got.buffer.tail_matrix(), ref.buffer.tail_matrix())
        out_ref = trajectory.reverse(ref.copy(), vjp, np.ones(N), grad=grad, kernel="numpy")
        out = trajectory.reverse(got, vjp, np.ones(N), grad=grad, kernel=name)
        for key in out_ref:
            if out_ref[key] is not None:
                assert np.array_equal(out[key], out_ref[key]), (name, key)


def test_bits_stored_are_close_to_the_information_bound():
    sched = _schedule(200, b1=0.9, b2=0.999, wd=0.01, alpha=0.01, vary=False)
    state = trajectory.forward(grad, np.random.default_rng(0).normal(size=N), sched)
    ideal = state.stats["ideal_bits_per_element_step"]
    assert abs(state.stats["bits_per_element_step"] / ideal - 1) < 0.001


# ------------------------------------------------------------------ fidelity
def float_adam(grad_fn, w0, sched, meta=None):
    """Float64 Adam written out independently, with the engine's applied betas / decay."""
    gi = sched.group_index
    b1, b2 = sched.beta1s, sched.beta2s
    w, m, s = w0.copy(), np.zeros_like(w0), np.zeros_like(w0)
    p1, p2 = np.ones(sched.G), np.ones(sched.G)
    for t in range(sched.T):
        g = grad_fn(w, meta, t)
        p1, p2 = p1 * b1[t], p2 * b2[t]
        m = b1[t][gi] * m + (1 - b1[t][gi]) * g
        s = b2[t][gi] * s + (1 - b2[t][gi]) * g * g
        w = sched.decay[t][gi] * w - sched.alphas[t][gi] * (m / (1 - p1[gi])) / (
            np.sqrt(s / (1 - p2[gi])) + sched.eps[gi])
    return w, m, s


def fidelity_tolerance():
    """The exact trajectory's distance to float64 Adam, relative (measured: ~3e-11)."""
    return 1e-9


@pytest.mark.parametrize("T, wd", [(100, 0.0), (300, 0.02)])
def test_exact_trajectory_stays_close_to_float64_adam(T, wd):
    sched = _schedule(T, wd=wd, alpha=0.01, vary=False)
    w0 = np.random.default_rng(6).normal(size=N)
    state = trajectory.forward(grad, w0, sched)
    w, m, s = float_adam(grad, w0, sched)
    assert np.linalg.norm(state.w - w) / np.linalg.norm(w) < fidelity_tolerance()
    assert np.linalg.norm(state.s - s) / np.linalg.norm(s) < fidelity_tolerance()


def test_tiny_gradients_keep_their_precision():
    """g ~ 1e-7 (g^2 ~ 1e-14): the automatic per-group format still follows float64 Adam."""
    def small(w, m, t):
        return 1e-7 * grad(w, m, t)

    sched = _schedule(100, alpha=0.01, vary=False)
    w0 = np.random.default_rng(7).normal(size=N)
    state = trajectory.forward(small, w0, sched)
    w, _, s = float_adam(small, w0, sched)
    assert np.max(s) < 1e-12
    assert np.linalg.norm(state.w - w) / np.linalg.norm(w) < fidelity_tolerance()
    assert min(state.stats["adam_frac_bits"]["s"]) > 62


# ------------------------------------------------------------ hypergradients
def make_problem(T=20, seed=0):
    """Minibatched tanh regression, two parameter groups, per-weight log-L2 (meta)."""
    rng = np.random.default_rng(seed)
    X, y = rng.normal(size=(24, 4)), rng.normal(size=24)

    def loss(w, meta, t):
        b = t % 4
        Xb, yb = X[6 * b:6 * b + 6], y[6 * b:6 * b + 6]
        pred = anp.tanh(Xb @ w[0]) * w[1][0] + w[1][1]
        flat = anp.concatenate([w[0], w[1]])
        return anp.mean((pred - yb) ** 2) + 0.5 * anp.sum(anp.exp(meta) * flat ** 2)

    hyp = {"w0": [rng.normal(size=4), rng.normal(size=2)],
           "alphas": 0.02 + 0.01 * rng.random((T, 2)),
           "beta1s": 0.85 + 0.1 * rng.random((T, 2)),
           "beta2s": 0.99 + 0.009 * rng.random((T, 2)),
           "eps": 1e-3, "weight_decay": 0.05 + 0.05 * rng.random((T, 2)),
           "meta": -2.0 + 0.1 * rng.normal(size=6)}
    return loss, hyp


def _flat(x):
    return np.concatenate([np.ravel(a) for a in x]) if isinstance(x, list) else np.ravel(x)


def _relerr(a, b):
    return np.linalg.norm(_flat(a) - _flat(b)) / np.linalg.norm(_flat(b))


def hypergradient_tolerance():
    """Exact against unrolled, relative per kind (measured: ~1e-11)."""
    return 1e-9


@pytest.mark.parametrize("eps, wd", [
    (1e-3, "schedule"), (np.array([1e-3, 1e-2]), np.array([0.1, 0.02])), (1e-8, 0.03)],
    ids=["eps scalar, decay (T, G)", "per group", "eps 1e-8, decay scalar"])
def test_exact_hypergradients_match_unrolled_for_every_kind(eps, wd):
    loss, hyp = make_problem()
    hyp["eps"] = eps
    if not isinstance(wd, str):
        hyp["weight_decay"] = wd
    exact = adam_hypergrads(loss, hyp, "exact")
    ref = adam_hypergrads(loss, hyp, "unrolled")
    for k in ADAM_KINDS:
        assert np.shape(_flat(exact[k])) == np.shape(_flat(ref[k])), k
        assert np.linalg.norm(_flat(ref[k])) > 0, k
        assert _relerr(exact[k], ref[k]) < hypergradient_tolerance(), (k, _relerr(exact[k], ref[k]))


def fd_objective(loss, hyp):
    """The objective through an independently written float64 AdamW loop on raw (unquantised)
    hyperparameters; autograd-free, for central differences."""
    gfun = autograd.grad(loss, 0)
    w = [np.array(a, dtype=np.float64) for a in hyp["w0"]]
    m = [np.zeros_like(a) for a in w]
    s = [np.zeros_like(a) for a in w]
    T = hyp["alphas"].shape[0]
    eps = np.broadcast_to(hyp["eps"], (2,))
    wd = np.broadcast_to(hyp["weight_decay"], (T, 2))
    p1, p2 = np.ones(2), np.ones(2)
    for t in range(T):
        g = gfun(w, hyp["meta"], t)
        p1, p2 = p1 * hyp["beta1s"][t], p2 * hyp["beta2s"][t]
        for j in range(2):
            b1, b2, a = hyp["beta1s"][t, j], hyp["beta2s"][t, j], hyp["alphas"][t, j]
            m[j] = b1 * m[j] + (1 - b1) * g[j]
            s[j] = b2 * s[j] + (1 - b2) * g[j] ** 2
            w[j] = (1 - a * wd[t, j]) * w[j] - a * (m[j] / (1 - p1[j])) / (
                np.sqrt(s[j] / (1 - p2[j])) + eps[j])
    flat = np.concatenate(w)
    return np.sum(flat ** 2) + np.sum(flat)


def test_exact_hypergradients_match_central_differences():
    """At hyperparameters the engine represents exactly (betas and decay factors on the
    quantum grid), the exact hypergradient is the derivative of float64 AdamW."""
    T = 12
    loss, hyp = make_problem(T=T)
    q = 1.0 / BETA_ONE
    hyp["alphas"] = np.full((T, 2), 2.0 ** -6)
    hyp["beta1s"] = np.tile([0.875, 0.75], (T, 1))
    hyp["beta2s"] = np.tile([1 - 2.0 ** -7, 1 - 2.0 ** -8], (T, 1))
    hyp["weight_decay"] = np.array([2.0 ** -4, 2.0 ** -3])     # alpha * wd on the grid
    hyp["eps"] = np.array([1e-3, 2e-3])
    assert np.all((1 - hyp["alphas"] * hyp["weight_decay"]) / q % 1 == 0)
    exact = adam_hypergrads(loss, hyp, "exact")
    rng = np.random.default_rng(0)
    for k in ADAM_KINDS:
        base = hyp[k]
        direction = ([rng.normal(size=np.shape(a)) for a in base] if isinstance(base, list)
                     else rng.normal(size=np.shape(base)))
        h = 1e-6

        def shifted(sign):
            if isinstance(base, list):
                return [a + sign * h * d for a, d in zip(base, direction)]
            return base + sign * h * direction

        fd = (fd_objective(loss, dict(hyp, **{k: shifted(1)}))
              - fd_objective(loss, dict(hyp, **{k: shifted(-1)}))) / (2 * h)
        got = float(_flat(exact[k]) @ _flat(direction))
        assert abs(got - fd) <= 1e-5 * max(1.0, abs(fd)), (k, got, fd)


def test_hypergradients_of_a_schedule_reach_every_step():
    loss, hyp = make_problem(T=15)
    out = adam_hypergrads(loss, hyp, "exact", kinds=("alphas", "beta1s", "beta2s"))
    for k in ("alphas", "beta1s", "beta2s"):
        assert out[k].shape == (15, 2) and np.all(out[k] != 0), k


# -------------------------------------------------------------------- torch
@pytest.mark.parametrize("decoupled", [False, True])
def test_equals_torch_adam_and_adamw(decoupled):
    torch = pytest.importorskip("torch")
    T, alpha, wd = 60, 2.0 ** -7, 2.0 ** -3
    b1, b2, eps = 0.875, 1 - 2.0 ** -9, 1e-8
    w0 = np.random.default_rng(8).normal(size=N)
    p = torch.nn.Parameter(torch.tensor(w0, dtype=torch.float64))
    opt = (torch.optim.AdamW([p], lr=alpha, betas=(b1, b2), eps=eps, weight_decay=wd)
           if decoupled else torch.optim.Adam([p], lr=alpha, betas=(b1, b2), eps=eps))
    for t in range(T):
        p.grad = torch.tensor(grad(p.detach().numpy().copy(), None, t))
        opt.step()
    w_torch = p.detach().numpy()

    def loss(w, meta, t):
        return 0.5 * anp.dot(w, anp.dot(A, w)) + anp.dot(np.cos(0.3 * t + np.arange(N)), w) \
            + 0.0125 * anp.sum(w ** 4)

    w_exact = reversible.adam(loss, w0, np.full(T, alpha), np.full(T, b1), np.full(T, b2),
                              eps=eps, weight_decay=wd if decoupled else 0.0)
    assert np.linalg.norm(w_exact - w_torch) / np.linalg.norm(w_torch) < fidelity_tolerance()


# -------------------------------------------------------------------- errors
def _simple():
    loss, hyp = make_problem(T=5)
    return loss, hyp


@pytest.mark.parametrize("change, fragment", [
    ({"method": "cg"}, "does not support Adam"),
    ({"method": "bogus"}, "does not support Adam"),
    ({"eps": -1.0}, r"eps must lie in \(0, inf\)"),
    ({"eps": np.array([1e-8, 1e-8, 1e-8])}, "eps must be a scalar or one value per group"),
    ({"eps": np.nan}, "eps contains NaN"),
    ({"weight_decay": -0.1}, r"weight_decay must lie in \[0, inf\)"),
    ({"weight_decay": 100.0}, r"1 - alpha \* weight_decay must lie in \(0, 1\]"),
    ({"weight_decay": np.ones((3, 2))}, "weight_decay must be a scalar"),
    ({"beta1s": np.full(5, 1.0)}, "first step must be below 1"),
    ({"beta2s": np.full(5, 1.5)}, r"every entry of beta2s must lie in \(0, 1\]"),
    ({"beta1s": np.full(4, 0.9)}, "alphas has 5 steps but beta1s has 4"),
    ({"alphas": np.full(5, np.nan)}, "alphas contains NaN"),
    ({"frac_bits": {"w": 52, "q": 3}}, "keys 'w', 'm', 's'"),
    ({"frac_bits": {"s": 2.5}}, r"frac_bits\['s'\]"),
    ({"frac_bits": 70}, r"frac_bits must be an integer in \[1, 62\]"),
    ({"segment": 3}, "does not take option"),
])
def test_bad_inputs_are_named(change, fragment):
    loss, hyp = _simple()
    args = dict(hyp)
    opts = {k: change.pop(k) for k in list(change) if k in ("method", "frac_bits", "segment")}
    args.update(change)
    with pytest.raises(ValueError, match=fragment):
        reversible.adam(loss, args["w0"], args["alphas"], args["beta1s"], args["beta2s"],
                        args["meta"], eps=args["eps"], weight_decay=args["weight_decay"], **opts)


@pytest.mark.parametrize("method", ["exact", "checkpointed", "truncated", "drmad", "unrolled"])
def test_non_finite_gradient_names_its_step(method):
    def loss(w, meta, t):
        return anp.sum(w ** 2) + (anp.sqrt(-1.0 + 0 * w[0]) if t == 3 else 0.0)

    with pytest.raises(NonFiniteError, match="at step 3"), np.errstate(invalid="ignore"):
        if method == "unrolled":        # float reference: autograd cannot check, the caller can
            w = reversible.adam(loss, np.ones(3), np.full(6, 0.1), np.full(6, 0.9),
                                np.full(6, 0.99), method=method)
            raise NonFiniteError(f"at step 3: {w}" if not np.all(np.isfinite(w)) else "finite")
        autograd.grad(lambda w0: anp.sum(reversible.adam(
            loss, w0, np.full(6, 0.1), np.full(6, 0.9), np.full(6, 0.99), method=method)))(np.ones(3))


def test_overflow_names_step_and_remedy():
    def g(w, m, t):
        return grad(w, m, t) * (1e5 if t == 4 else 1.0)

    sched = _schedule(6)
    with pytest.raises(FixedPointOverflowError, match="at step 4") as err:
        trajectory.forward(g, np.ones(N), sched)
    assert "frac_bits" in str(err.value)
    state = trajectory.forward(g, np.ones(N), sched, frac_bits={"w": 40, "m": 30, "s": 20})
    trajectory.reverse(state, lambda w, m, t, u: (g(w, m, t),) + vjp(w, m, t, u)[1:],
                       np.ones(N), grad=g)
    assert state.stats["reversed_exactly"]


@pytest.mark.parametrize("kernel", ["numpy", "numba"])
def test_kernels_raise_the_specifications_errors(kernel):
    def g(w, m, t):
        return grad(w, m, t) * (1e5 if t == 4 else 1.0)

    sched = _schedule(6)
    with pytest.raises(FixedPointOverflowError) as err:
        trajectory.forward(g, np.ones(N), sched, kernel=kernel)
    assert str(err.value).startswith("first-moment step (1 - beta1) g at step 4 overflows")
    state = trajectory.forward(grad, np.ones(N), _schedule(60, b1=0.3), kernel=kernel)
    assert state.buffer.words() > 0
    state.buffer.head[:] = state.buffer.head[::-1].copy()    # corrupt: heads swapped around
    with pytest.raises(ReversibilityError):
        trajectory.reverse(state, vjp, np.ones(N), grad=grad, kernel=kernel)


def test_non_deterministic_gradient_is_caught():
    sched = _schedule(15)
    calls = {"n": 0}

    def drifting(w, m, t):
        calls["n"] += 1
        return grad(w, m, t) + 1e-9 * calls["n"]

    state = trajectory.forward(drifting, np.ones(N), sched)
    with pytest.raises(ReversibilityError):
        trajectory.reverse(state, lambda w, m, t, u: (drifting(w, m, t),) + vjp(w, m, t, u)[1:],
                           np.ones(N), grad=drifting)


def test_corrupt_negative_second_moment_is_named():
    sched = _schedule(5)
    rule = sched.rule("numpy")
    state = rule.start(np.ones(N), None, None)
    rule.exact_forward(state, grad(np.ones(N), None, 0), 0)
    state.S[2] = -(2 ** 60)
    with pytest.raises(NonFiniteError, match="second moment s at step 1 is negative"):
        rule.exact_forward(state, grad(state.w, None, 1), 1)


def test_effective_beta_is_what_every_method_applies():
    loss, hyp = make_problem(T=8)
    b1 = np.full((8, 2), 0.9)
    b1_eff = reversible.effective_beta(b1)
    a = reversible.adam(loss, hyp["w0"], hyp["alphas"], b1, hyp["beta2s"], hyp["meta"],
                        method="unrolled")
    b = reversible.adam(loss, hyp["w0"], hyp["alphas"], b1_eff, hyp["beta2s"], hyp["meta"],
                        method="unrolled")
    assert np.array_equal(_flat(a), _flat(b))


@pytest.mark.parametrize("change, fragment", [
    ({"eps": 1e-8 + 0j}, "eps is complex"),
    ({"alphas": np.full(5, 0.1 + 0j)}, "alphas is complex"),
    ({"stats": []}, "stats must be a dict"),
    ({"progress": "yes"}, "progress must be True or False"),
])
def test_wrong_kinds_are_type_errors(change, fragment):
    loss, hyp = _simple()
    args = dict(hyp)
    opts = {k: change.pop(k) for k in list(change) if k in ("stats", "progress")}
    args.update(change)
    with pytest.raises(TypeError, match=fragment):
        reversible.adam(loss, args["w0"], args["alphas"], args["beta1s"], args["beta2s"],
                        args["meta"], eps=args["eps"], weight_decay=args["weight_decay"], **opts)


def test_inputs_whose_gradient_is_always_zero_keep_hypergradients_finite():
    """A weight that never gets a gradient (a constant-zero input pixel) has s = m = 0: the
    exact and the unrolled hypergradients stay finite and agree."""
    X = np.random.default_rng(0).normal(size=(12, 3))
    X[:, 1] = 0.0

    def loss(w, meta, t):
        return anp.mean((anp.tanh(X @ w) - 0.5) ** 2)

    def hyper(method):
        return autograd.grad(lambda a: anp.sum(reversible.adam(
            loss, np.full(3, 0.3), a, np.full(10, 0.9), np.full(10, 0.99), method=method) ** 2))(
            np.full(10, 0.01))

    exact, ref = hyper("exact"), hyper("unrolled")
    assert np.all(np.isfinite(ref)) and np.all(np.isfinite(exact))
    assert _relerr(exact, ref) < hypergradient_tolerance()


def test_stats_report_the_buffer_formats_and_reversal():
    loss, hyp = make_problem(T=10)
    stats = {}
    autograd.grad(lambda a: anp.sum(anp.concatenate(reversible.adam(
        loss, hyp["w0"], a, hyp["beta1s"], hyp["beta2s"], hyp["meta"], stats=stats))))(
        hyp["alphas"])
    assert stats["rule"] == "adam" and stats["method"] == "exact"
    assert stats["reversed_exactly"] is True
    assert abs(stats["bits_per_element_step"] / stats["ideal_bits_per_element_step"] - 1) < 0.05
    assert set(stats["adam_frac_bits"]) == {"w", "m", "s"} and len(stats["adam_frac_bits"]["s"]) == 2
