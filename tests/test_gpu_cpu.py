"""reversible.gpu without a GPU: the xp MLP against autograd, argument checking, the
capacity bound, error decoding, and the CUDA kernels' source run on the CPU
(compiled with the host C++ compiler) against the NumPy specification."""

import importlib.util
import os
import subprocess
import sys

import autograd.numpy as anp
import numpy as np
import pytest
from _gpu_import import REPO, load_gpu  # noqa: E402  (tests/ is on sys.path)
from autograd import grad as ag_grad
from autograd import make_jvp

import reversible
from reversible import InfoBuffer, quantize_beta
from reversible.errors import (BufferUnderflowError, FixedPointOverflowError, NonFiniteError,
                               ReversibilityError)
from reversible.trajectory import Schedule, forward, reverse


rgpu = load_gpu()
from reversible.gpu import engine, selfcheck  # noqa: E402
from reversible.gpu.mlp import MLP  # noqa: E402


# ------------------------------------------------------------------ imports
def test_importing_reversible_and_its_gpu_package_does_not_import_cupy():
    code = (f"import sys; sys.path.insert(0, r'{REPO / 'tests'}')\n"
            "import reversible\nfrom _gpu_import import load_gpu\nload_gpu()\n"
            "import reversible.gpu.mlp, reversible.gpu.engine, reversible.gpu.front\n"
            "print('cupy' in sys.modules)")
    path = os.pathsep.join([str(REPO)] + [p for p in sys.path if p])
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                         env=dict(os.environ, PYTHONPATH=path))
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_without_cupy_sgd_raises_a_clear_import_error():
    if importlib.util.find_spec("cupy") is not None:
        pytest.skip("CuPy is installed here")
    with pytest.raises(ImportError, match="cupy-cuda12x.*cupy-cuda13x"):
        rgpu.sgd(lambda w, m, t: w, np.zeros(3), [0.1] * 4, [0.9] * 4)
    assert not rgpu.has_cuda()


# ------------------------------------------------------------------ MLP vs autograd
def _autograd_loss(net, X, Y, act):
    """An independent definition of the MLP's loss, written with autograd.numpy."""
    sizes = net.sizes

    def loss(w, meta, t):
        Xb, Yb = X(t), Y(t)
        h, o = Xb, 0
        for l in range(len(sizes) - 1):
            a, b = sizes[l], sizes[l + 1]
            W = anp.reshape(w[o:o + a * b], (a, b))
            bias = w[o + a * b:o + a * b + b]
            o += a * b + b
            z = anp.dot(h, W) + bias
            h = z if l == len(sizes) - 2 else (anp.tanh(z) if act == "tanh" else anp.maximum(z, 0.0))
        z = h - anp.max(h, axis=1, keepdims=True)
        logp = z - anp.log(anp.sum(anp.exp(z), axis=1, keepdims=True))
        out = -anp.sum(Yb * logp) / Xb.shape[0]
        return out if meta is None else out + 0.5 * anp.sum(meta * w * w)
    return loss


@pytest.mark.parametrize("act", ["tanh", "relu"])
@pytest.mark.parametrize("with_meta", [False, True])
def test_mlp_gradient_and_hessian_products_match_autograd(act, with_meta):
    rng = np.random.default_rng(5)
    X = rng.standard_normal((40, 6))
    y = rng.integers(0, 4, 40)
    B = 16
    net = MLP([6, 9, 7, 4], X, y, activation=act, batch_size=B, seed=11)
    perm = np.random.Generator(np.random.Philox(key=11)).permutation(40)
    idx = lambda t: perm[(t * B + np.arange(B)) % 40]
    L = _autograd_loss(net, lambda t: X[idx(t)], lambda t: np.eye(4)[y[idx(t)]], act)
    w = net.init(1.3, seed=2) + 0.05 * rng.standard_normal(net.N)
    meta = rng.uniform(0.0, 0.3, net.N) if with_meta else None
    u = rng.standard_normal(net.N)
    for t in (0, 3):
        assert net.loss(w, meta, t) == pytest.approx(float(L(w, meta, t)), rel=1e-12)
        g_ref = ag_grad(L)(w, meta, t)
        g = net.grad(w, meta, t)
        np.testing.assert_allclose(g, g_ref, rtol=1e-10, atol=1e-13)
        g2, hu, hm = net.vjp(w, meta, t, u)
        assert np.array_equal(g2, g)                      # same bits: the reverse pass needs it
        hu_ref = make_jvp(lambda x: ag_grad(L)(x, meta, t))(w)(u)[1]
        np.testing.assert_allclose(hu, hu_ref, rtol=1e-9, atol=1e-12)
        if with_meta:
            hm_ref = ag_grad(lambda m: anp.dot(ag_grad(L)(w, m, t), u))(meta)
            np.testing.assert_allclose(hm, hm_ref, rtol=1e-12, atol=1e-15)
        else:
            assert hm is None


def test_mlp_rejects_bad_shapes():
    X, y = np.zeros((5, 3)), np.zeros(5, dtype=int)
    with pytest.raises(ValueError, match="X must have shape"):
        MLP([4, 2], X, y)
    with pytest.raises(ValueError, match="activation"):
        MLP([3, 2], X, y, activation="sigmoid")
    with pytest.raises(ValueError, match="one integer label"):
        MLP([3, 2], X, np.zeros(4, dtype=int))


# ------------------------------------------------------------------ argument checking
def test_check_args_normalises_and_rejects():
    f = lambda w, m, t: w
    grad, vjp, N, A, n, gi, F = rgpu.check_args(f, np.zeros(5), [0.1, 0.2], [0.9, 0.5])
    assert N == 5 and A.shape == (2, 1) and n.tolist() == quantize_beta([[0.9], [0.5]]).tolist() and gi is None and F == 52
    _, _, _, A, n, gi, _ = rgpu.check_args(f, np.zeros(4), np.full((3, 2), 0.1), np.full((3, 2), 0.9),
                                           group_index=[0, 0, 1, 1])
    assert A.shape == (3, 2) and gi.tolist() == [0, 0, 1, 1]
    bad = [
        (dict(w0=np.zeros((2, 2))), ValueError, "flat"),
        (dict(betas=[0.9, 1.5]), ValueError, "beta"),
        (dict(betas=[0.9]), ValueError, "steps"),
        (dict(alphas=[0.1, np.nan]), ValueError, "NaN"),
        (dict(frac_bits=70), ValueError, "frac_bits"),
        (dict(check_every=0), ValueError, "check_every"),
        (dict(group_index=[0, 1]), ValueError, "group_index"),
        (dict(v0=np.zeros(3)), ValueError, "v0"),
        (dict(grad=3), TypeError, "callable"),
        (dict(vjp="x"), TypeError, "vjp"),
    ]
    for change, exc, msg in bad:
        kw = dict(grad=f, w0=np.zeros(5), alphas=[0.1, 0.2], betas=[0.9, 0.5])
        kw.update(change)
        args = (kw.pop("grad"), kw.pop("w0"), kw.pop("alphas"), kw.pop("betas"))
        with pytest.raises(exc, match=msg):
            rgpu.check_args(*args, **kw)


def test_model_object_supplies_grad_and_vjp():
    X, y = np.zeros((5, 3)), np.zeros(5, dtype=int)
    net = MLP([3, 2], X, y)
    grad, vjp, N, *_ = rgpu.check_args(net, np.zeros(net.N), [0.1], [0.9])
    assert grad == net.grad and vjp == net.vjp and N == net.N


# ------------------------------------------------------------------ capacity bound and errors
@pytest.mark.parametrize("beta", [2.0 ** -32, 2.0 ** -20, 0.05, 0.3, 0.5, 0.6, 0.9, 0.999, 0.9999])
def test_tail_capacity_bounds_the_numpy_buffer(beta):
    """The reserved tail never runs out: checked against InfoBuffer on random data."""
    rng = np.random.default_rng(1)
    n = int(quantize_beta(beta))
    buf = InfoBuffer(500)
    V = rng.integers(-(1 << 50), 1 << 50, 500)
    T = 400
    top = 0
    for _ in range(T):
        V = buf.multiply(V, n) + rng.integers(-(1 << 40), 1 << 40, 500)
        top = max(top, int(buf.ptr.max()))
    cap = engine.tail_capacity(np.full((T, 1), n))
    assert top <= cap <= top + 4 + T * 1e-3


def test_error_keys_decode_to_step_and_class():
    F = 30
    k = lambda seq, code: (seq << 8) | code
    assert engine.error_from_key(engine.NO_ERROR, 10, "forward", F) is None
    e = engine.error_from_key(k(7, 4), 10, "forward", F)
    assert isinstance(e, FixedPointOverflowError) and "step 7" in str(e)
    e = engine.error_from_key(k(3, 1), 10, "reverse", F)     # seq 3: velocity of step 10-1-1 = 8
    assert isinstance(e, NonFiniteError) and "step 8" in str(e) and "velocity" in str(e)
    e = engine.error_from_key(k(4, 8), 10, "reverse", F)     # seq 4: position of step 7
    assert isinstance(e, FixedPointOverflowError) and "step 7" in str(e)
    assert isinstance(engine.error_from_key(k(5, 2), 10, "reverse", F), BufferUnderflowError)
    assert isinstance(engine.error_from_key(k(5, 3), 10, "reverse", F), ReversibilityError)
    e = engine.error_from_key(k(5, 10), 10, "reverse", F)    # velocity beyond int64 undoing beta
    assert isinstance(e, FixedPointOverflowError) and "step 7" in str(e) and "undoing" in str(e)


# ------------------------------------------------------------------ kernels on the CPU
@pytest.mark.parametrize("fwd_kernel", engine.FWD_KERNELS)
@pytest.mark.parametrize("regime", list(selfcheck.REGIMES))
def test_emulated_kernels_are_bit_identical_to_numpy(regime, fwd_kernel, emu):
    res = selfcheck.compare(regime, N=301, T=150, backend=emu, check_every=40, fwd_kernel=fwd_kernel)
    for key in ("weights_equal", "velocity_equal", "heads_equal", "pointers_equal", "tails_equal",
                "reversed_exactly", "dw0_equal", "dv0_equal"):
        assert res[key] is True, (key, res)
    assert res["max_words"] <= res["capacity"]
    assert res["dalpha_rel"] < 1e-12 and res["dbeta_rel"] < 1e-12


def test_emulated_errors_name_the_step(emu):
    N, T = 50, 30
    w0 = np.linspace(-1, 1, N)

    def blow_up(w, m, t):
        return w * (1e30 if t == 17 else 1.0)

    with pytest.raises(FixedPointOverflowError, match="step 17"):
        rgpu.sgd(blow_up, w0, [0.1] * T, [0.9] * T, backend=emu, check_every=8)

    def nan_at_5(w, m, t):
        return w * (np.nan if t == 5 else 1.0)

    with pytest.raises(NonFiniteError, match="gradient at step 5"):
        rgpu.sgd(nan_at_5, w0, [0.1] * T, [0.9] * T, backend=emu)

    calls = {"n": 0}

    def drifting(w, m, t):            # not a pure function of (w, t): the reversal must fail loudly
        calls["n"] += 1
        return w + 1e-9 * calls["n"]

    run = rgpu.sgd(drifting, w0, [0.1] * T, [0.3] * T, backend=emu,
                   vjp=lambda w, m, t, u: (drifting(w, m, t), u, None))
    with pytest.raises(reversible.ReversibleError):    # ReversibilityError, or garbage overflowing
        run.hypergrad(np.ones(N))


def test_emulated_mlp_training_matches_the_cpu_engine(emu):
    """The front end with the xp MLP: w_T bit for bit, hypergradients to rounding."""
    rng = np.random.default_rng(3)
    X, y = rng.standard_normal((60, 5)), rng.integers(0, 3, 60)
    net = MLP([5, 8, 3], X, y, activation="tanh", batch_size=20, seed=1)
    T = 25
    G = len(net.shapes)
    A = np.full((T, G), 0.3)
    B = np.full((T, G), 0.9)
    B[:, 1] = 0.4
    w0 = net.init(1.0, seed=4)
    meta = np.full(net.N, 1e-3)
    run = rgpu.sgd(net, w0, A, B, meta, group_index=net.group_index(), backend=emu, frac_bits=48)
    sched = Schedule.build(A, B, net.group_index(), G)
    st = forward(net.grad, w0, sched, meta, frac_bits=48, kernel="numpy")
    assert np.array_equal(run._engine.W, st.W) and np.array_equal(run._engine.V, st.V)
    dw = rng.standard_normal(net.N)
    hg = run.hypergrad(dw)
    ref = reverse(st, net.vjp, dw, meta=meta, meta_size=net.N, kernel="numpy")
    for k in ("w0", "v0", "alphas", "betas", "meta"):
        np.testing.assert_allclose(hg[k], ref[k], rtol=1e-10, atol=1e-14 * np.abs(ref[k]).max())
    assert run.stats["reversed_exactly"] is True
    hg2 = run.hypergrad(dw)                  # keep=True: the VJP can be asked again
    assert np.array_equal(hg2["w0"], hg["w0"])


def test_emulated_division_routine_matches_numpy(emu):
    assert selfcheck.check_division(emu)


def test_emulated_reverse_refuses_a_velocity_beyond_int64(emu):
    """Undoing a multiply on a state training never produced (here: overwritten velocities and
    heads) can ask for a velocity outside int64: flagged like the NumPy specification does, and
    reported by the front end as a reverse pass that diverged."""
    N, T = 16, 4
    run = rgpu.sgd(lambda w, m, t: w, np.linspace(-1, 1, N), [0.1] * T, [2.0 ** -30] * T,
                   vjp=lambda w, m, t, u: (w, u, None), backend=emu, frac_bits=40)
    run._engine.V[:] = 1 << 62
    run._engine.head[:] = np.uint64(1 << 60)
    with pytest.raises(ReversibilityError, match="diverged.*undoing a multiply by beta"):
        run.hypergrad(np.ones(N))
