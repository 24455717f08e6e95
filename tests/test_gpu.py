"""reversible.gpu on a CUDA device: bit-equality of the fused kernels with the NumPy
specification, device-side error reporting, and GPU hypergradients against the CPU
engine.  Skipped without CuPy and a CUDA device."""


import numpy as np
import pytest
from _gpu_import import load_gpu  # tests/ is on sys.path

import reversible
from reversible.errors import FixedPointOverflowError, NonFiniteError
from reversible.trajectory import Schedule, forward, reverse

pytestmark = pytest.mark.gpu
cp = pytest.importorskip("cupy")
try:
    if cp.cuda.runtime.getDeviceCount() < 1:
        raise RuntimeError("no device")
except Exception as err:  # noqa: BLE001 - any CUDA failure means: no usable GPU here
    pytest.skip(f"no CUDA device: {err}", allow_module_level=True)


rgpu = load_gpu()
from reversible.gpu import selfcheck  # noqa: E402
from reversible.gpu.engine import FWD_KERNELS  # noqa: E402
from reversible.gpu.mlp import MLP  # noqa: E402

EQUAL_KEYS = ("weights_equal", "velocity_equal", "heads_equal", "pointers_equal", "tails_equal",
              "reversed_exactly", "dw0_equal", "dv0_equal")


def _assert_identical(res):
    for key in EQUAL_KEYS:
        assert res[key] is True, (key, res)
    assert res["max_words"] <= res["capacity"]
    assert res["dalpha_rel"] < 1e-12 and res["dbeta_rel"] < 1e-12


@pytest.mark.parametrize("fwd_kernel", FWD_KERNELS)
@pytest.mark.parametrize("regime", list(selfcheck.REGIMES))
def test_kernels_bit_identical_to_numpy(regime, fwd_kernel):
    # N odd and not a multiple of the block size; a quarter of the weights large and negative
    _assert_identical(selfcheck.compare(regime, N=5003, T=300, frac_bits=40, seed=1,
                                        fwd_kernel=fwd_kernel))


@pytest.mark.parametrize("regime,frac_bits", [("fused", 52), ("two_step", 30), ("mixed", 44)])
def test_long_runs_bit_identical(regime, frac_bits):
    _assert_identical(selfcheck.compare(regime, N=2000, T=2500, frac_bits=frac_bits, seed=2,
                                        check_every=300))


def test_device_errors_name_the_step():
    N, T = 10000, 40
    w0 = cp.linspace(-1, 1, N)
    big = lambda w, m, t: w * (1e30 if t == 23 else 1.0)
    with pytest.raises(FixedPointOverflowError, match="step 23"):
        rgpu.sgd(big, w0, [0.1] * T, [0.9] * T, check_every=16)
    nan = lambda w, m, t: w * (cp.nan if t == 9 else 1.0)
    with pytest.raises(NonFiniteError, match="gradient at step 9"):
        rgpu.sgd(nan, w0, [0.1] * T, [0.9] * T)
    run = rgpu.sgd(lambda w, m, t: w, w0, [0.1] * T, [0.3] * T,
                   vjp=lambda w, m, t, u: (w + (1e-6 if t == 30 else 0.0), u, None))
    with pytest.raises(reversible.ReversibleError):      # gradient differs in reverse: loud failure
        run.hypergrad(cp.ones(N))


def test_gpu_mlp_hypergradient_matches_the_cpu_engine():
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((256, 20)), rng.integers(0, 5, 256)
    T = 30
    net_cpu = MLP([20, 32, 32, 5], X, y, activation="tanh", batch_size=64, seed=3)
    net_gpu = MLP([20, 32, 32, 5], cp.asarray(X), cp.asarray(y), activation="tanh", batch_size=64, seed=3)
    G = len(net_cpu.shapes)
    A, B = np.full((T, G), 0.2), np.full((T, G), 0.9)
    w0 = net_cpu.init(1.0, seed=1)
    meta = np.full(net_cpu.N, 1e-3)
    gi = net_cpu.group_index()
    # the GPU MLP's derivatives agree with the CPU ones to rounding
    wd = cp.asarray(w0)
    u = rng.standard_normal(net_cpu.N)
    g_c, h_c, m_c = net_cpu.vjp(w0, meta, 0, u)
    g_g, h_g, m_g = net_gpu.vjp(wd, cp.asarray(meta), 0, cp.asarray(u))
    np.testing.assert_allclose(g_g.get(), g_c, rtol=1e-9, atol=1e-14)
    np.testing.assert_allclose(h_g.get(), h_c, rtol=1e-9, atol=1e-14)
    run = rgpu.sgd(net_gpu, wd, A, B, cp.asarray(meta), group_index=gi)
    st = forward(net_cpu.grad, w0, Schedule.build(A, B, gi, G), meta, kernel="numpy")
    # cuBLAS and NumPy round the gradient differently, and training amplifies it: compare to 1e-7
    np.testing.assert_allclose(run.w.get(), st.w, rtol=0, atol=1e-7)
    dw = rng.standard_normal(net_cpu.N)
    hg = run.hypergrad(cp.asarray(dw))
    assert run.stats["reversed_exactly"] is True
    ref = reverse(st, net_cpu.vjp, dw, meta=meta, meta_size=net_cpu.N, kernel="numpy")
    for k in ("w0", "v0", "alphas", "betas", "meta"):
        np.testing.assert_allclose(hg[k].get(), ref[k], rtol=1e-5, atol=1e-6 * np.abs(ref[k]).max())


def test_dlpack_inputs_from_torch():
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("torch without CUDA")
    N, T = 1000, 20
    w0 = torch.linspace(-1, 1, N, dtype=torch.float64, device="cuda")

    def grad(w, m, t):                              # a PyTorch gradient function
        return 0.5 * torch.from_dlpack(w)

    def vjp(w, m, t, u):
        return 0.5 * torch.from_dlpack(w), 0.5 * torch.from_dlpack(u), None

    run = rgpu.sgd(grad, w0, [0.1] * T, [0.9] * T, vjp=vjp)
    ref = forward(lambda w, m, t: 0.5 * w, w0.cpu().numpy(), Schedule.build([0.1] * T, [0.9] * T,
                                                                          np.zeros(N, int), 1))
    assert np.array_equal(run._engine.W.get(), ref.W)
    hg = run.hypergrad(torch.ones(N, dtype=torch.float64, device="cuda"))
    assert run.stats["reversed_exactly"] and hg["w0"].shape == (N,)


def test_division_routine_matches_numpy():
    assert selfcheck.check_division() is True


def test_adam_on_the_device_is_the_cpu_engine():
    """reversible.gpu.adam on CuPy: w_T, moments and buffer bit for bit with the CPU engine,
    hypergradients to rounding (the device sums groups in another order), errors by step."""
    from reversible.adam_rule import AdamSchedule
    N, T = 3001, 60
    rng = np.random.default_rng(4)
    A = rng.uniform(0.5, 2.0, N)
    gi = np.repeat([0, 1, 2], [1000, 1000, 1001])
    alphas = 0.01 * (1 + rng.random((T, 3)))
    b1, b2 = np.full((T, 3), 0.9), np.tile([0.99, 0.999, 0.9], (T, 1))
    eps, wd = np.array([1e-8, 1e-6, 1e-3]), 0.05

    def grad(w, meta, t):
        xp = cp.get_array_module(w)
        return xp.asarray(A) * w + meta * xp.sin(w + 0.1 * t)

    def vjp(w, meta, t, u):
        xp = cp.get_array_module(w)
        return grad(w, meta, t), xp.asarray(A) * u + meta * xp.cos(w + 0.1 * t) * u, \
            xp.asarray([float((xp.sin(w + 0.1 * t) * u).sum())])

    w0 = rng.normal(size=N)
    meta = 0.3
    sched = AdamSchedule.build(alphas, b1, b2, gi, 3, eps, wd)
    st = forward(grad, w0, sched, meta, kernel="numpy")
    run = rgpu.adam(grad, cp.asarray(w0), alphas, b1, b2, meta, vjp=vjp, eps=eps, weight_decay=wd,
                    group_index=gi, check_every=16)
    dev = run.engine
    for ours, theirs in ((dev.W, st.W), (dev.M, st.M), (dev.S, st.S), (dev.head, st.buffer.head),
                         (dev.ptr, st.buffer.ptr)):
        assert np.array_equal(ours.get(), theirs)
    dw = rng.normal(size=N)
    ref = reverse(st, vjp, dw, meta=np.array([meta]), meta_size=1, kernel="numpy", grad=grad)
    hyper = run.hypergradient(cp.asarray(dw))
    assert run.stats["reversed_exactly"] is True
    for kind in ("w0", "alphas", "beta1s", "beta2s", "eps", "weight_decay", "meta"):
        np.testing.assert_allclose(hyper[kind].get(), ref[kind], rtol=1e-12,
                                   atol=1e-14 * np.abs(ref[kind]).max(), err_msg=kind)
    nan = lambda w, m, t: grad(w, m, t) * (cp.nan if t == 9 else 1.0)
    with pytest.raises(NonFiniteError, match="gradient at step 9 contains NaN or Inf"):
        rgpu.adam(nan, cp.asarray(w0), alphas, b1, b2, meta, eps=eps, group_index=gi)
