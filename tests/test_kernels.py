"""The compiled (numba) kernel against the NumPy specification, bit for bit.

Every test runs the same steps through ``kernels.numpy_kernel`` (the
specification) and the numba kernel on copies of the same state and compares
``W``, ``V``, buffer heads, pointers and every live tail word; error tests
compare exception class and message.
"""

import numpy as np
import pytest

from reversible import kernels, trajectory
from reversible.buffer import BETA_ONE, InfoBuffer, beta_of
from reversible.errors import (BufferUnderflowError, FixedPointOverflowError, NonFiniteError,
                               ReversibleError)
from reversible.fixedpoint import to_fixed
from reversible.trajectory import Schedule

numba_kernels = pytest.importorskip("reversible.numba_kernels")
NP = kernels.numpy_kernel
NB = numba_kernels.numba_kernel
BETAS = [2 ** -32, 2 ** -16 - 2 ** -32, 0.3, 0.5 - 2 ** -32, 0.5, 0.5 + 2 ** -32, 0.9, 0.99,
         0.999, 0.9999, 1 - 2 ** -32, 1.0]


# ---------------------------------------------------------------- helpers
class Run:
    """A fixed-point state (W, V, buffer) stepped by one kernel."""

    def __init__(self, kernel, W, V, chunk_rows):
        self.k = kernel
        self.W, self.V = W.copy(), V.copy()
        self.buf = InfoBuffer(W.size, chunk_rows)

    def forward(self, g, sched, F, t):
        self.W, self.V = self.k.forward_step(self.W, self.V, g, sched.alphas[t], sched.n[t], sched,
                                             self.buf, F, t)

    def reverse(self, g, sched, F, t):
        self.W = self.k.reverse_position(self.W, self.V, sched.alphas[t], sched, F, t)
        self.V = self.k.reverse_velocity(self.V, g, sched.n[t], sched, self.buf, F, t)


def live_tail(buf):
    """All tail words as ``(words, N)`` with the dead slots above each pointer zeroed."""
    tail = buf.tail_matrix()
    return np.where(np.arange(tail.shape[0])[:, None] < buf.ptr[None, :], tail, 0)


def assert_same(a, b):
    np.testing.assert_array_equal(a.W, b.W)
    np.testing.assert_array_equal(a.V, b.V)
    np.testing.assert_array_equal(a.buf.head, b.buf.head)
    np.testing.assert_array_equal(a.buf.ptr, b.buf.ptr)
    np.testing.assert_array_equal(live_tail(a.buf), live_tail(b.buf))


def make_problem(rng, N, T, betas, G=1, shuffle=False, F=40, scale=1.0, vscale=1.0):
    """Random state, gradients and a per-group schedule (betas cycle over groups)."""
    gi = np.arange(N) * G // N
    if shuffle:
        rng.shuffle(gi)
    betas = np.atleast_1d(betas)
    beta_tg = np.array([[betas[(g + t) % betas.size] for g in range(G)] for t in range(T)])
    sched = Schedule.build(rng.uniform(0.001, 0.3, (T, G)), beta_tg, gi, G)
    W = to_fixed(rng.standard_normal(N) * scale, F)
    V = to_fixed(rng.standard_normal(N) * vscale, F)
    gs = rng.standard_normal((T, N)) * rng.uniform(0.1, 10.0)
    return sched, W, V, gs


def run_both(sched, W, V, gs, F, chunk_rows=3, check_every=7):
    runs = [Run(NP, W, V, chunk_rows), Run(NB, W, V, chunk_rows)]
    T = sched.T
    for t in range(T):
        for r in runs:
            r.forward(gs[t], sched, F, t)
        if t % check_every == 0 or t == T - 1:
            assert_same(*runs)
    for t in reversed(range(T)):
        for r in runs:
            r.reverse(gs[t], sched, F, t)
        if t % check_every == 0:
            assert_same(*runs)
    for r in runs:
        np.testing.assert_array_equal(r.W, W)
        np.testing.assert_array_equal(r.V, V)
        assert r.buf.is_empty()
    return runs


def expect_same_error(fn_np, fn_nb):
    """Both calls raise; same class and message.  Returns the exception."""
    with pytest.raises(ReversibleError) as e_np:
        fn_np()
    with pytest.raises(ReversibleError) as e_nb:
        fn_nb()
    assert type(e_nb.value) is type(e_np.value)
    assert str(e_nb.value) == str(e_np.value)
    return e_np.value


# ---------------------------------------------------------------- registry
def test_auto_prefers_numba():
    assert kernels.get("auto").name == "numba"
    assert kernels.get("numba") is NB
    assert "numba" in kernels.available()


def test_auto_falls_back_to_numpy_without_numba(monkeypatch):
    def broken():
        raise ImportError("No module named 'numba'")
    monkeypatch.setitem(kernels._REGISTRY, "numba", broken)
    assert kernels.get("auto") is NP
    with pytest.raises(ImportError):
        kernels.get("numba")


# ---------------------------------------------------------------- division helpers
_DIV_ALL = []


def divide_all(x, v, n):
    """``numba_kernels._quot32`` and ``_floordivmod`` over arrays (compiled once per session)."""
    if not _DIV_ALL:
        from numba import njit

        @njit
        def run(x, v, n):
            q, r = np.empty_like(x), np.empty_like(v)
            a, b = np.empty_like(v), np.empty_like(v)
            for i in range(x.shape[0]):
                inv = 1.0 / np.float64(n[i])
                inv2 = 2.0 / np.float64(n[i])
                q[i], r[i] = numba_kernels._quot32(x[i], n[i], np.uint64(n[i]), inv2)
                a[i], b[i] = numba_kernels._floordivmod(v[i], n[i], np.uint64(n[i]), inv, inv2)
            return q, r, a, b
        _DIV_ALL.append(run)
    return _DIV_ALL[0](x, v, n)


def test_float_estimated_divisions_are_exact():
    """Quotients from float64 reciprocals, fixed up by the remainder, against NumPy's integer
    division: largest numerators (``x`` just below ``n 2**32``), every n regime, int64 extremes."""
    rng = np.random.default_rng(0)
    size = 200_000
    n = np.where(rng.random(size) < 0.5, rng.integers(1, 1 << 32, size),
                 rng.integers((1 << 31) - 4, 1 << 32, size)).astype(np.int64)
    n[:6] = [1, 2, (1 << 31) - 1, 1 << 31, (1 << 31) + 1, (1 << 32) - 1]
    nu = n.astype(np.uint64)
    top = nu << np.uint64(32)
    frac = rng.random(size)
    x = np.where(frac < 0.3, top - np.uint64(1) - rng.integers(0, 1 << 20, size).astype(np.uint64),
                 (frac * top.astype(np.float64)).astype(np.uint64))
    x = np.minimum(x, top - np.uint64(1))
    x[6:12] = top[6:12] - np.uint64(1)
    i64 = np.iinfo(np.int64)
    v = rng.integers(i64.min, i64.max, size, dtype=np.int64, endpoint=True)
    v[:8] = [i64.min, i64.min + 1, i64.max, i64.max - 1, -1, 0, 1, -(1 << 32)]
    q, r, a, b = divide_all(x, v, n)
    np.testing.assert_array_equal(q, x // nu)
    np.testing.assert_array_equal(r, (x % nu).astype(np.int64))
    np.testing.assert_array_equal(a, v // n)
    np.testing.assert_array_equal(b, v % n)


# ---------------------------------------------------------------- bit identity
@pytest.mark.parametrize("beta", BETAS)
def test_bit_identical_each_beta(beta):
    rng = np.random.default_rng(int(beta * 1e6))
    sched, W, V, gs = make_problem(rng, 101, 120, [beta])
    run_both(sched, W, V, gs, 40)


def test_bit_identical_per_group_schedules():
    """Groups with different betas (every regime), contiguous and shuffled, varying in t."""
    rng = np.random.default_rng(7)
    for shuffle in (False, True):
        sched, W, V, gs = make_problem(rng, 150, 80, BETAS, G=5, shuffle=shuffle)
        run_both(sched, W, V, gs, 44, chunk_rows=2)


def test_bit_identical_near_range_limits():
    """frac_bits=52: |w| close to 2048, |v| close to 2048 (ints near 2**63), negative values."""
    rng = np.random.default_rng(3)
    F = 52
    N, T = 64, 40
    gi = np.zeros(N, np.int64)
    sched = Schedule.build(np.full(T, 1e-7), np.full(T, 0.9), gi)
    W = to_fixed(np.where(np.arange(N) % 2, 1, -1) * rng.uniform(2040, 2047, N), F)
    V = to_fixed(np.where(np.arange(N) % 3, 1, -1) * rng.uniform(2000, 2047, N), F)
    gs = rng.standard_normal((T, N)) * 1e-3
    assert np.abs(V).min() > 2 ** 62
    run_both(sched, W, V, gs, F, chunk_rows=1)


@pytest.mark.parametrize("T", [2000, pytest.param(10_000, marks=pytest.mark.slow)])
def test_bit_identical_long_run_small_n(T):
    """Long runs on a few elements: heads spill many times, tails span many chunks."""
    rng = np.random.default_rng(11)
    sched, W, V, gs = make_problem(rng, 6, T, [0.9, 0.3, 0.999, 0.5 + 2 ** -32, 2 ** -20], G=3)
    runs = run_both(sched, W, V, gs, 30, chunk_rows=16, check_every=T // 4)
    assert max(len(r.buf.chunks) for r in runs) <= 1      # released on the way back


def test_growth_appends_chunks_without_copying():
    rng = np.random.default_rng(5)
    sched, W, V, gs = make_problem(rng, 50, 200, [2 ** -20])   # ~20 bits per step
    run = Run(NB, W, V, chunk_rows=2)
    run.forward(gs[0], sched, 40, 0)
    seen = []
    for t in range(1, sched.T):
        run.forward(gs[t], sched, 40, t)
        if run.buf.chunks and (not seen or seen[-1] is not run.buf.chunks[-1]):
            seen.append(run.buf.chunks[-1])
    assert len(run.buf.chunks) >= 4
    assert all(a is b for a, b in zip(seen, run.buf.chunks))    # old chunks stay in place


def test_parallel_blocks_with_growth_are_bit_identical(monkeypatch):
    """Steps large enough for the parallel loops, several groups split into blocks, with
    every block hitting a full tail mid-step (resume after growth) and two spills per element."""
    monkeypatch.setattr(numba_kernels, "BLOCK", 700)
    monkeypatch.setattr(numba_kernels, "PARALLEL_MIN", 1000)
    monkeypatch.setattr(numba_kernels, "_PLAN_CACHE", {})
    rng = np.random.default_rng(2)
    sched, W, V, gs = make_problem(rng, 5003, 12, [2 ** -30, 0.3, 0.9, 1.0, 0.5], G=4,
                                   shuffle=False)
    runs = run_both(sched, W, V, gs, 40, chunk_rows=1, check_every=3)
    assert numba_kernels._plan(sched.group_index)[0].size >= 8


def test_cross_kernel_reversal():
    """Forward with numba, reverse with NumPy (and vice versa): exact either way."""
    rng = np.random.default_rng(9)
    sched, W, V, gs = make_problem(rng, 40, 60, [0.3, 0.9, 1.0], G=3)
    for fwd, rev in ((NB, NP), (NP, NB)):
        r = Run(fwd, W, V, 4)
        for t in range(sched.T):
            r.forward(gs[t], sched, 40, t)
        r.k = rev
        for t in reversed(range(sched.T)):
            r.reverse(gs[t], sched, 40, t)
        np.testing.assert_array_equal(r.W, W)
        np.testing.assert_array_equal(r.V, V)
        assert r.buf.is_empty()


def test_trajectory_identical_across_kernels():
    rng = np.random.default_rng(4)
    N, T = 30, 50
    A = rng.standard_normal((N, N)) / N
    H = A @ A.T + np.eye(N)

    def grad(w, meta, t):
        return H @ w + np.sin(t + w)

    def vjp(w, meta, t, u):
        return grad(w, meta, t), H @ u + np.cos(t + w) * u, None

    gi = np.repeat([0, 1], N // 2)
    sched = Schedule.build(np.full((T, 2), 0.05), np.tile([0.9, 0.4], (T, 1)), gi)
    out = {}
    for name in ("numpy", "numba"):
        st = trajectory.forward(grad, rng.standard_normal(N) * 0 + 0.5, sched, kernel=name)
        wT = st.w.copy()
        res = trajectory.reverse(st, vjp, np.ones(N), kernel=name)
        out[name] = (wT, res)
    np.testing.assert_array_equal(out["numpy"][0], out["numba"][0])
    for key in ("w0", "v0", "alphas", "betas"):
        np.testing.assert_array_equal(out["numpy"][1][key], out["numba"][1][key])


# ---------------------------------------------------------------- error paths
def state(N=20, beta=0.9, F=40, G=1, T=3, alpha=0.1, seed=0):
    rng = np.random.default_rng(seed)
    sched, W, V, gs = make_problem(rng, N, T, [beta], G=G, F=F)
    sched.alphas[:] = alpha
    return sched, W, V, gs


def both(method, *args_of_run):
    """Callables running ``method`` on a fresh NumPy and a fresh numba run."""
    return [lambda k=k: method(Run(k, *args_of_run)) for k in (NP, NB)]


@pytest.mark.parametrize("beta", [0.3, 0.9])          # (1 - beta) g is 0 at beta = 1
def test_error_gradient_step_overflow_names_step(beta):
    sched, W, V, gs = state(beta=beta)
    gs[2, 7] = 1e300

    def go(r):
        for t in range(3):
            r.forward(gs[t], sched, 40, t)
    err = expect_same_error(*both(go, W, V, 3))
    assert isinstance(err, FixedPointOverflowError) and "at step 2" in str(err)


@pytest.mark.parametrize("beta", [0.3, 0.9, 1.0])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_error_nonfinite_gradient(beta, bad):
    sched, W, V, gs = state(beta=beta)
    gs[1, [3, 9]] = bad

    def go(r):
        for t in range(2):
            r.forward(gs[t], sched, 40, t)
    err = expect_same_error(*both(go, W, V, 3))
    assert isinstance(err, NonFiniteError) and "at step 1" in str(err) and "2 of 20" in str(err)


def test_error_velocity_add_overflow():
    F = 52
    sched, _, _, gs = state(F=F, alpha=1e-9)
    W = to_fixed(np.zeros(20), F)
    V = to_fixed(np.full(20, -2047.9), F)
    gs[0, 4] = 3e3                  # (1 - 0.9) * 3e3 fits alone, not added to 0.9 * -2047.9
    err = expect_same_error(*both(lambda r: r.forward(gs[0], sched, F, 0), W, V, 3))
    assert isinstance(err, FixedPointOverflowError) and err.args[0].startswith("velocity at step 0")


def test_error_weight_step_and_weights_overflow():
    F = 52
    sched, _, _, gs = state(F=F, alpha=1e6)
    W = to_fixed(np.zeros(20), F)
    V = to_fixed(np.full(20, 1.0), F)
    err = expect_same_error(*both(lambda r: r.forward(gs[0] * 0, sched, F, 0), W, V, 3))
    assert err.args[0].startswith("weight step alpha * v at step 0 overflows")
    sched.alphas[:] = 1.0
    W = to_fixed(np.full(20, 2047.5), F)
    err = expect_same_error(*both(lambda r: r.forward(gs[0] * 0, sched, F, 0), W, V, 3))
    assert err.args[0].startswith("weights at step 0 overflows")


def test_error_nonfinite_weight_step():
    sched, W, V, gs = state(alpha=1e308, F=30)
    V = to_fixed(np.full(20, 1e5), 30)
    err = expect_same_error(*both(lambda r: r.forward(gs[0] * 0, sched, 30, 0), W, V, 3))
    assert isinstance(err, (NonFiniteError, FixedPointOverflowError)) and "step 0" in str(err)


def test_error_reverse_paths():
    F = 52
    sched, W, V, gs = state(F=F, alpha=1.0)
    V = to_fixed(np.full(20, 1000.0), F)
    W = to_fixed(np.full(20, -2047.0), F)

    def rev_pos(r):
        r.W = r.k.reverse_position(r.W, r.V, sched.alphas[2], sched, F, 2)
    err = expect_same_error(*both(rev_pos, W, V, 3))
    assert err.args[0].startswith("weights at step 2 overflows")

    bad_g = gs[1].copy()
    bad_g[5] = np.nan

    def rev_vel(r):
        r.V = r.k.reverse_velocity(r.V, bad_g, sched.n[1], sched, r.buf, F, 1)
    err = expect_same_error(*both(rev_vel, W, V, 3))
    assert isinstance(err, NonFiniteError) and "at step 1" in str(err)

    big_g = gs[1] * 0
    big_g[0] = 1e4                          # (1 - beta) g pushes +1000 past 2048
    V = to_fixed(np.full(20, 2000.0), F)

    def rev_vel_big(r):
        r.V = r.k.reverse_velocity(r.V, big_g, sched.n[1], sched, r.buf, F, 1)
    err = expect_same_error(*both(rev_vel_big, W, V, 3))
    assert err.args[0].startswith("velocity at step 1 overflows")


@pytest.mark.parametrize("betas", [[0.9], [0.3], [0.9, 0.3]])
def test_error_empty_pop_on_corrupted_buffer(betas):
    """Forward, then wipe some tails: the reverse pass must raise, naming NumPy's element."""
    rng = np.random.default_rng(1)
    sched, W, V, gs = make_problem(rng, 24, 400, betas, G=len(betas))
    sched.n[:] = sched.n[0]
    runs = [Run(NP, W, V, 8), Run(NB, W, V, 8)]
    for t in range(sched.T):
        for r in runs:
            r.forward(gs[t], sched, 40, t)
    assert runs[0].buf.ptr.min() > 0
    for r in runs:
        r.buf.ptr[[5, 17, 20]] = 0            # corrupt: tails lost

    def rev(r):
        for t in reversed(range(sched.T)):
            r.reverse(gs[t], sched, 40, t)
    errs = []
    for r in runs:
        with pytest.raises(BufferUnderflowError) as e:
            rev(r)
        errs.append(str(e.value))
    assert errs[0] == errs[1] and "element" in errs[0]


def test_error_velocity_overflow_undoing_a_multiply():
    """A reverse step on a state training never produced can need a velocity beyond int64."""
    sched, W, V, gs = state(beta=2 ** -30)
    V = np.full(20, 1 << 62, dtype=np.int64)

    def go(r):
        r.buf.head[:] = np.uint64(1 << 60)
        r.V = r.k.reverse_velocity(r.V, gs[0] * 0, sched.n[0], sched, r.buf, 40, 0)
    err = expect_same_error(*both(go, W, V, 3))
    assert isinstance(err, FixedPointOverflowError) and "undoing a multiply" in str(err)


def test_trajectory_reports_gradient_error_first():
    """A NaN gradient is reported by the trajectory's own check, whatever the kernel."""
    sched = Schedule.build(np.full(4, 0.1), np.full(4, 0.9), np.zeros(5, np.int64))

    def grad(w, meta, t):
        return np.full(5, np.nan) if t == 2 else w

    msgs = []
    for name in ("numpy", "numba"):
        with pytest.raises(NonFiniteError) as e:
            trajectory.forward(grad, np.ones(5), sched, kernel=name)
        msgs.append(str(e.value))
    assert msgs[0] == msgs[1] and msgs[0].startswith("gradient at step 2 contains NaN")


def test_beta_one_is_identity_on_buffer():
    rng = np.random.default_rng(0)
    sched, W, V, gs = make_problem(rng, 30, 20, [1.0])
    r = Run(NB, W, V, 2)
    for t in range(sched.T):
        r.forward(gs[t], sched, 40, t)
    assert r.buf.is_empty() and not r.buf.chunks
    assert np.all(sched.n == BETA_ONE)


def test_shape_mismatches_raise_instead_of_reading_out_of_bounds():
    sched, W, V, gs = state(G=2)
    buf = InfoBuffer(W.size)
    with pytest.raises(ValueError):
        NB.forward_step(W, V, gs[0][:-1], sched.alphas[0], sched.n[0], sched, buf, 40, 0)
    with pytest.raises(ValueError):
        NB.forward_step(W, V, gs[0], sched.alphas[0], sched.n[0], sched, InfoBuffer(3), 40, 0)
    with pytest.raises(IndexError):
        NB.forward_step(W, V, gs[0], sched.alphas[0][:1], sched.n[0][:1], sched, buf, 40, 0)
    with pytest.raises(ValueError):
        NB.reverse_position(W, V[:-1], sched.alphas[0], sched, 40, 0)


def test_schedule_per_element_matches_fancy_indexing():
    rng = np.random.default_rng(8)
    for gi in (np.repeat([0, 1, 2, 3], [5, 1, 7, 2]), rng.integers(0, 4, 40)):
        sched = Schedule.build(rng.random((3, 4)), np.full((3, 4), 0.9), gi, 4)
        for row in (sched.alphas[1], beta_of(sched.n[2])):
            got = sched.per_element(row)
            assert got.dtype == row.dtype
            np.testing.assert_array_equal(got, row[gi])


def test_trajectory_huge_finite_gradient_is_an_overflow_not_nan():
    """Gradients whose sum overflows are finite: the fast finite check must not misreport."""
    N = 5000
    sched = Schedule.build(np.full(2, 0.1), np.full(2, 0.9), np.zeros(N, np.int64))
    msgs = []
    for name in ("numpy", "numba"):
        with pytest.raises(FixedPointOverflowError) as e:
            trajectory.forward(lambda w, m, t: np.full(N, 1e308), np.zeros(N), sched, kernel=name)
        msgs.append(str(e.value))
    assert msgs[0] == msgs[1] and "at step 0" in msgs[0]


def test_warm_up_compiles_once_and_exercises_every_regime(capsys):
    """warm_up returns seconds spent, runs forward and reverse (checked), and is free the second time."""
    first = kernels.warm_up("numba")
    assert first >= 0.0
    assert kernels.warm_up("numba") == 0.0
    assert kernels.warm_up("numpy") >= 0.0
    err = capsys.readouterr().err
    assert err.count("\n") <= 1 and (not err or err.startswith("compiling the exact kernel"))


def test_w_out_receives_float_weights_in_the_same_pass():
    """``w_out`` holds ``to_float(W)`` of the new weights, bit for bit, for both kernels."""
    rng = np.random.default_rng(12)
    sched, W, V, gs = make_problem(rng, 300, 4, [0.9, 0.3, 1.0], G=3)
    outs = []
    for k in (NP, NB):
        w_out = np.full(W.size, np.nan)
        Wk, Vk = k.forward_step(W.copy(), V.copy(), gs[0], sched.alphas[0], sched.n[0], sched,
                                InfoBuffer(W.size), 40, 0, w_out=w_out)
        np.testing.assert_array_equal(w_out, Wk * 2.0 ** -40)
        outs.append(w_out)
    np.testing.assert_array_equal(*outs)
    with pytest.raises(ValueError, match="w_out"):
        NB.forward_step(W.copy(), V.copy(), gs[0], sched.alphas[0], sched.n[0], sched,
                        InfoBuffer(W.size), 40, 0, w_out=np.empty(W.size, np.float32))


def test_concurrent_calls_from_threads_stay_bit_identical(monkeypatch):
    """Steps from several Python threads at once (one may run the parallel loops, the others
    run serially) give the NumPy specification's bits."""
    import concurrent.futures
    monkeypatch.setattr(numba_kernels, "PARALLEL_MIN", 100)
    rng = np.random.default_rng(13)
    sched, W, V, gs = make_problem(rng, 2000, 6, [0.9, 0.3], G=2)

    def run(kernel):
        r = Run(kernel, W, V, 4)
        for t in range(sched.T):
            r.forward(gs[t], sched, 40, t)
        return r

    ref = run(NP)
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        for r in pool.map(lambda _: run(NB), range(4)):
            assert_same(r, ref)


def test_parallel_loops_have_their_own_cache_entries():
    """numba keys its disk cache by qualified name, not by options: the parallel compilation of
    each loop must have its own name, or a process would load the serial code from the cache."""
    for name, par in numba_kernels._PARALLEL.items():
        ser = numba_kernels._SERIAL[name]
        assert par.targetoptions.get("parallel") and not ser.targetoptions.get("parallel")
        assert par.py_func.__qualname__ != ser.py_func.__qualname__
        assert par.py_func.__code__ is ser.py_func.__code__          # one body


@pytest.mark.parametrize("compiles", [True, False])
def test_warm_up_notice_only_when_numba_compiles(compiles, monkeypatch, capsys):
    """The stderr line appears when the kernel reports a compilation taking time, and never for
    a cache load, however slow."""
    import time
    import types
    fake = types.SimpleNamespace(name=f"fake_{compiles}", compiling=lambda: compiles)
    monkeypatch.setitem(kernels._REGISTRY, fake.name, lambda: fake)
    monkeypatch.setattr(kernels, "_WARM_NOTICE_AFTER_S", 0.0)
    monkeypatch.setattr(kernels, "_exercise", lambda kernel: time.sleep(0.6))
    monkeypatch.setattr(kernels, "_WARM", {})
    assert kernels.warm_up(fake.name) >= 0.6
    err = capsys.readouterr().err
    assert err == ("compiling the exact kernel (once, cached) ...\n" if compiles else "")


def test_thread_choice_probes_both_ways_then_follows_the_faster():
    choice = numba_kernels._ThreadChoice()
    P, R = numba_kernels.PROBES, numba_kernels.REPROBE
    probes = [choice.parallel_next() for _ in range(2 * P)]
    assert probes == [(k % 2 == 1, True) for k in range(2 * P)]
    for parallel, _ in probes:
        choice.record(parallel, 1.0 if parallel else 2.0)
    assert choice.parallel_next() == (True, False)
    choice.times = ([1.0] * P, [3.0] * P)
    assert choice.parallel_next() == (False, False)
    choice.calls = R                     # the next probe
    assert choice.parallel_next() == (False, True)
