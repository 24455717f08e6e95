"""trajectory.forward / reverse on explicit callables: exact reversal, adjoints, loud failures.

The reference for the adjoints is autograd applied to an independently written
float64 training loop (no fixed point, no buffer) using the engine's effective
momenta ``round(beta * 2**32) / 2**32``.
"""

import autograd
import autograd.numpy as anp
import numpy as np
import pytest

from reversible import kernels, trajectory
from reversible.buffer import effective_beta
from reversible.errors import (FixedPointOverflowError, NonFiniteError, ReversibilityError)

N = 9
_rng = np.random.default_rng(7)
_B = _rng.normal(size=(N, N))
A = _B @ _B.T / N + 0.5 * np.eye(N)          # positive definite
C = 0.05                                      # quartic term: Hessian depends on w


def _b(t):
    return np.cos(0.3 * t + np.arange(N))       # per-step "minibatch" term, pure in t


def loss(w, meta, t):
    """0.5 w'Aw + b_t'w + 0.5 sum(exp(meta) w^2) + C/4 sum(w^4)."""
    out = 0.5 * anp.dot(w, anp.dot(A, w)) + anp.dot(_b(t), w) + 0.25 * C * anp.sum(w**4)
    if meta is not None:
        out = out + 0.5 * anp.sum(anp.exp(meta) * w**2)
    return out


def grad(w, meta, t):
    g = A @ w + _b(t) + C * w**3
    return g if meta is None else g + np.exp(meta) * w


def vjp(w, meta, t, u):
    """(g, H_ww u, H_meta,w u) written out by hand."""
    hw = A @ u + 3 * C * w**2 * u
    if meta is None:
        return grad(w, meta, t), hw, None
    return grad(w, meta, t), hw + np.exp(meta) * u, np.exp(meta) * w * u


def _setup(T=30, G=1, beta=0.9, alpha=0.1, seed=0, meta=True, v0=True):
    rng = np.random.default_rng(seed)
    gi = np.repeat(np.arange(G), -(-N // G))[:N]
    alphas = alpha * (1 + 0.5 * rng.uniform(size=(T, G)))
    betas = np.clip(beta + 0.05 * rng.uniform(-1, 1, size=(T, G)), 2**-16, 1.0) if beta < 1 \
        else np.ones((T, G))
    sched = trajectory.Schedule.build(alphas, betas, gi, G)
    w0 = rng.normal(size=N)
    v0_ = 0.3 * rng.normal(size=N) if v0 else None
    m = -1 + 0.2 * rng.normal(size=N) if meta else None
    return sched, w0, v0_, m


def _reference_objective(w0, v0, alphas, betas_eff, meta, gi, T):
    """sum(w_T^2) + sum(v_T) after the float64 loop (autograd-differentiable)."""
    w, v = w0, v0
    dloss = autograd.grad(loss, 0)
    for t in range(T):
        beta = betas_eff[t][gi]
        v = beta * v - (1.0 - beta) * dloss(w, meta, t)
        w = w + alphas[t][gi] * v
    return anp.sum(w**2), (w, v)


@pytest.mark.parametrize("beta", [0.3, 0.5, 0.5 + 2**-16, 0.9, 0.99, 0.999, 1.0, 2**-16])
def test_reversal_is_bit_exact(beta):
    sched, w0, v0, meta = _setup(T=40, G=3, beta=beta, alpha=0.05)
    state = trajectory.forward(grad, w0, sched, meta, v0)
    assert not np.array_equal(state.W, state.W0)
    rng = np.random.default_rng(1)
    trajectory.reverse(state, vjp, rng.normal(size=N), rng.normal(size=N), meta, N)
    assert np.array_equal(state.W, np.rint(w0 * 2.0**52).astype(np.int64))
    assert np.array_equal(state.V, np.rint(v0 * 2.0**52).astype(np.int64))
    assert state.buffer.is_empty()
    assert state.stats["reversed_exactly"] is True


@pytest.mark.parametrize("frac_bits", [30, 44, 52])
def test_forward_matches_float_loop(frac_bits):
    """Fixed-point training follows the float64 loop.

    A bits-back multiply lands within one grid unit of ``beta * V`` and the
    two conversions round to the grid, so each step errs by at most a few
    units ``2**-frac_bits``; this problem contracts, so errors add up at most.
    """
    T = 50
    sched, w0, v0, meta = _setup(T=T, G=2)
    state = trajectory.forward(grad, w0, sched, meta, v0, frac_bits=frac_bits)
    _, (w_ref, v_ref) = _reference_objective(w0, v0, sched.alphas, sched.betas, meta,
                                             sched.group_index, T)
    tol = T * 2.0 ** (2 - frac_bits)
    assert np.max(np.abs(state.w - w_ref)) < tol
    assert np.max(np.abs(state.v - v_ref)) < tol
    for key in ("forward_seconds", "buffer_bits", "bits_per_element_step",
                "ideal_bits_per_element_step"):
        assert key in state.stats


@pytest.mark.parametrize("G, beta", [(1, 0.9), (3, 0.9), (3, 0.3), (2, 1.0)])
def test_adjoints_match_autograd_of_float_loop(G, beta):
    T = 40
    sched, w0, v0, meta = _setup(T=T, G=G, beta=beta, alpha=0.08)
    state = trajectory.forward(grad, w0, sched, meta, v0)
    w_T = state.w
    out = trajectory.reverse(state, vjp, 2 * w_T, np.zeros(N), meta, N)

    def f(w0_, v0_, alphas, betas, meta_):
        return _reference_objective(w0_, v0_, alphas, betas, meta_, sched.group_index, T)[0]

    ref = autograd.grad(f, (0, 1, 2, 3, 4))(w0, v0, sched.alphas, sched.betas, meta)
    for name, r in zip(("w0", "v0", "alphas", "betas", "meta"), ref):
        got = out[name]
        assert got.shape == np.shape(r), name
        if np.linalg.norm(r) == 0:          # beta = 1: gradients never reach w, meta is inert
            assert np.all(got == 0), name
            continue
        err = np.linalg.norm(got - r) / np.linalg.norm(r)
        assert err <= 1e-13, (name, err)


def test_dv_cotangent_is_propagated():
    """A cotangent on v_T alone: compare with autograd of sum(v_T)."""
    T = 25
    sched, w0, v0, meta = _setup(T=T)
    state = trajectory.forward(grad, w0, sched, meta, v0)
    out = trajectory.reverse(state, vjp, np.zeros(N), np.ones(N), meta, N)
    ref = autograd.grad(lambda a: anp.sum(_reference_objective(
        w0, v0, a, sched.betas, meta, sched.group_index, T)[1][1]))(sched.alphas)
    assert np.linalg.norm(out["alphas"] - ref) / np.linalg.norm(ref) <= 1e-13


@pytest.mark.parametrize("name", kernels.available())
def test_kernels_agree_with_numpy_bit_for_bit(name):
    sched, w0, v0, meta = _setup(T=30, G=3, beta=0.6)
    ref = trajectory.forward(grad, w0, sched, meta, v0, kernel="numpy")
    got = trajectory.forward(grad, w0, sched, meta, v0, kernel=name)
    assert np.array_equal(got.W, ref.W) and np.array_equal(got.V, ref.V)
    assert np.array_equal(got.buffer.head, ref.buffer.head)
    assert np.array_equal(got.buffer.ptr, ref.buffer.ptr)
    assert np.array_equal(got.buffer.tail_matrix(), ref.buffer.tail_matrix())
    dw = np.linspace(-1, 1, N)
    r_ref = trajectory.reverse(ref, vjp, dw, None, meta, N, kernel="numpy")
    r_got = trajectory.reverse(got, vjp, dw, None, meta, N, kernel=name)
    for key in ("w0", "v0", "alphas", "betas", "meta"):
        assert np.array_equal(r_got[key], r_ref[key]), key


def test_state_copy_allows_repeated_reverse():
    sched, w0, v0, meta = _setup(T=20, beta=0.4)
    state = trajectory.forward(grad, w0, sched, meta, v0)
    W, head = state.W.copy(), state.buffer.head.copy()
    a = trajectory.reverse(state.copy(), vjp, np.ones(N), None, meta, N)
    b = trajectory.reverse(state.copy(), vjp, np.ones(N), None, meta, N)
    assert np.array_equal(state.W, W) and np.array_equal(state.buffer.head, head)
    for key in a:
        assert np.array_equal(a[key], b[key])


def test_single_step():
    sched, w0, v0, meta = _setup(T=1)
    state = trajectory.forward(grad, w0, sched, meta, v0)
    beta = effective_beta(sched.betas[0, 0])
    v1 = beta * v0 - (1 - beta) * grad(w0, meta, 0)
    assert np.allclose(state.v, v1, atol=1e-14)
    assert np.allclose(state.w, w0 + sched.alphas[0, 0] * v1, atol=1e-14)
    trajectory.reverse(state, vjp, np.ones(N), None, meta, N)


# ---------------------------------------------------------------- failures
def _drifting():
    calls = {"n": 0}

    def drifting_grad(w, m, t):
        calls["n"] += 1
        return grad(w, m, t) + 1e-9 * calls["n"]       # differs at every call

    def drifting_vjp(w, m, t, u):
        _, hw, hm = vjp(w, m, t, u)
        return drifting_grad(w, m, t), hw, hm

    return drifting_grad, drifting_vjp


@pytest.mark.parametrize("beta", [0.3, 0.9])
def test_non_deterministic_gradient_raises(beta):
    """With momentum < 1 the buffer is read with wrong bits: some ReversibilityError."""
    sched, w0, v0, meta = _setup(T=15, beta=beta)
    g, v = _drifting()
    state = trajectory.forward(g, w0, sched, meta, v0)
    with pytest.raises(ReversibilityError):
        trajectory.reverse(state, v, np.ones(N), None, meta, N)


def test_gradient_differing_at_first_step_caught_by_final_check():
    """A gradient that differs only when step 0 is recomputed: the buffer does not
    underflow, so the comparison with w0, v0 and the empty buffer must catch it."""
    sched, w0, v0, meta = _setup(T=15, beta=0.9)

    def v(w, m, t, u):
        g, hw, hm = vjp(w, m, t, u)
        return (g + 1e-9 if t == 0 else g), hw, hm

    state = trajectory.forward(grad, w0, sched, meta, v0)
    with pytest.raises(ReversibilityError, match="deterministic"):
        trajectory.reverse(state.copy(), v, np.ones(N), None, meta, N)
    out = trajectory.reverse(state, v, np.ones(N), None, meta, N, check=False)
    assert state.stats["reversed_exactly"] is False and out["w0"].shape == (N,)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_gradient_raises_at_its_step(bad):
    sched, w0, v0, meta = _setup(T=20)

    def g(w, m, t):
        out = grad(w, m, t)
        if t == 7:
            out[3] = bad
        return out

    with pytest.raises(NonFiniteError, match="gradient at step 7"):
        trajectory.forward(g, w0, sched, meta, v0)


def test_non_finite_hvp_raises_at_its_step():
    sched, w0, v0, meta = _setup(T=20)
    state = trajectory.forward(grad, w0, sched, meta, v0)

    def v(w, m, t, u):
        g, hw, hm = vjp(w, m, t, u)
        if t == 11:
            hw = hw * np.nan
        return g, hw, hm

    with pytest.raises(NonFiniteError, match="Hessian-vector product at step 11"):
        trajectory.reverse(state, v, np.ones(N), None, meta, N)


def test_overflow_names_step_and_remedy():
    sched, w0, v0, meta = _setup(T=5)

    def g(w, m, t):                     # an impulse at the last step
        return grad(w, m, t) + (1e5 if t == 4 else 0.0)

    with pytest.raises(FixedPointOverflowError, match="at step 4") as err:
        trajectory.forward(g, w0, sched, meta, v0)
    assert "frac_bits" in str(err.value) and "learning rate" in str(err.value)
    # the same run fits with more range (fewer fractional bits) and still reverses
    state = trajectory.forward(g, w0, sched, meta, v0, frac_bits=40)
    trajectory.reverse(state, lambda w, m, t, u: (g(w, m, t),) + vjp(w, m, t, u)[1:],
                       np.ones(N), None, meta, N)


def test_initial_point_out_of_range():
    sched, _, _, _ = _setup(T=3, meta=False)
    with pytest.raises(FixedPointOverflowError, match="w0"):
        trajectory.forward(grad, np.full(N, 5000.0), sched)


def test_wrong_gradient_size_raises():
    sched, w0, v0, meta = _setup(T=5)
    with pytest.raises(ValueError, match="gradient at step 0 has 3 elements, expected 9"):
        trajectory.forward(lambda w, m, t: np.ones(3), w0, sched, meta, v0)
    with pytest.raises(ValueError, match="v0"):
        trajectory.forward(grad, w0, sched, meta, np.ones(N + 1))


@pytest.mark.parametrize("alphas, betas, G, fragment", [
    (np.ones(5), np.ones(4) * 0.9, 1, "5 steps but betas has 4"),
    (np.ones((5, 2)), np.ones(5) * 0.9, 3, r"shape \(T,\) or \(T, 3\)"),
    (np.ones(5), np.full(5, 1.2), 1, r"\(0, 1\]"),
    (np.full(5, np.nan), np.full(5, 0.9), 1, "NaN"),
    (np.ones(0), np.ones(0), 1, "at least one step"),
])
def test_schedule_validation(alphas, betas, G, fragment):
    with pytest.raises(ValueError, match=fragment):
        trajectory.Schedule.build(alphas, betas, np.zeros(N, dtype=np.int64), G)
