"""reversible.gpu.adam, run on the CPU emulation of the CUDA kernels: the CPU engine's exact Adam
bit for bit (w_T, state, buffer, every hypergradient), its reversal, and its errors in the CPU's
words.  The same code drives CuPy on a GPU (tests/test_gpu.py covers the device itself)."""

import autograd
import autograd.numpy as anp
import numpy as np
import pytest
from _gpu_import import load_gpu  # noqa: E402  (tests/ is on sys.path)
from autograd import make_vjp

import reversible
from reversible import trajectory
from reversible.adam_rule import AdamSchedule
from reversible.errors import FixedPointOverflowError, NonFiniteError, ReversibilityError

rgpu = load_gpu()

N, B = 9, 6
_rng = np.random.default_rng(7)
X, Y = _rng.normal(size=(4, B, N)), _rng.normal(size=(4, B))
GROUPS = [slice(0, 3), slice(3, 5), slice(5, N)]
GROUP_INDEX = np.repeat([0, 1, 2], [3, 2, 4])


def loss(w, meta, t):
    """A least-squares loss on the minibatch of step t, an L2 term tuned by meta and a sine."""
    r = anp.dot(X[t % 4], w) - Y[t % 4]
    return 0.5 * anp.mean(r ** 2) + anp.exp(meta[0]) * anp.sum(w ** 2) + 0.05 * anp.sum(anp.sin(3 * w))


_grad = autograd.grad(loss, 0)


def grad(w, meta, t):
    return _grad(w, meta, t)


def grad_hvp(w, meta, t, vector):
    back, g = make_vjp(lambda x, m: _grad(x, m, t), argnum=(0, 1))(w, meta)
    hw, hm = back(vector(g))
    return g, hw, hm


def vjp(w, meta, t, u):
    return grad_hvp(w, meta, t, lambda g: u)


def grouped_loss(ws, meta, t):
    return loss(anp.concatenate(ws), meta, t)


def cpu_adam(w0, alphas, b1, b2, meta, eps, wd, dw, grouped):
    """w_T and the autograd hypergradient of <dw, w_T> through reversible.adam(method="exact")."""
    def run(w0, alphas, b1, b2, eps, wd, meta):
        w = [w0[s] for s in GROUPS] if grouped else w0
        w_T = reversible.adam(grouped_loss if grouped else loss, w, alphas, b1, b2, meta, eps=eps,
                              weight_decay=wd)
        return anp.concatenate(w_T) if grouped else w_T

    args = (w0, alphas, b1, b2, eps, wd, meta)
    w_T = run(*args)
    grads = autograd.grad(lambda *a: anp.sum(dw * run(*a)), tuple(range(7)))(*args)
    return w_T, dict(zip(("w0", "alphas", "beta1s", "beta2s", "eps", "weight_decay", "meta"), grads))


T = 8
_h = np.random.default_rng(3)
CASES = {
    "one group, no decay": dict(alphas=np.full(T, 0.02), b1=np.full(T, 0.9), b2=np.full(T, 0.99),
                                eps=1e-8, wd=0.0, grouped=False),
    "one group, AdamW": dict(alphas=0.01 * (1 + _h.random(T)), b1=np.linspace(0.8, 0.95, T),
                             b2=np.full(T, 0.999), eps=1e-3, wd=0.5, grouped=False),
    "(T, G) schedules, per-group eps and decay": dict(
        alphas=0.02 * (1 + _h.random((T, 3))), b1=0.85 + 0.1 * _h.random((T, 3)),
        b2=np.tile([0.99, 0.9, 0.999], (T, 1)), eps=np.array([1e-8, 1e-4, 1e-2]),
        wd=np.array([0.0, 0.3, 1.0]), grouped=True),
    "(T, G) decay schedule": dict(
        alphas=np.full((T, 3), 0.03), b1=np.full((T, 3), 0.9), b2=np.full((T, 3), 0.95),
        eps=1e-6, wd=0.2 * _h.random((T, 3)), grouped=True),
}


@pytest.mark.parametrize("case", list(CASES))
def test_w_T_and_every_hypergradient_are_the_cpu_exact_adams_bit_for_bit(case, emu):
    c = CASES[case]
    w0, meta, dw = _h.normal(size=N), np.array([-2.0]), _h.normal(size=N)
    ref_w, ref = cpu_adam(w0, c["alphas"], c["b1"], c["b2"], meta, c["eps"], c["wd"], dw,
                          c["grouped"])
    stats = {}
    run = rgpu.adam(grad, w0, c["alphas"], c["b1"], c["b2"], meta, grad_hvp=grad_hvp,
                    eps=c["eps"], weight_decay=c["wd"], stats=stats,
                    group_index=GROUP_INDEX if c["grouped"] else None, backend=emu, check_every=3)
    assert np.array_equal(run.w, ref_w)
    hyper = run.hypergradient(dw)
    assert sorted(hyper) == sorted(ref)
    G = 3 if c["grouped"] else 1
    for kind, value in ref.items():
        got = hyper[kind]
        if kind in ("alphas", "beta1s", "beta2s") and np.ndim(value) == 1:
            got = got.sum(axis=1)                     # a (T,) schedule is shared by the groups
        elif kind == "eps" and np.ndim(value) == 0:
            got = got.sum()
        elif kind == "weight_decay" and np.ndim(value) != 2:
            got = got.sum(axis=0) if np.ndim(value) == 1 else got.sum()
        assert np.shape(got) == np.shape(value), kind
        assert np.array_equal(got, value), (kind, got, value)
    assert hyper["alphas"].shape == (T, G) and hyper["eps"].shape == (G,)
    assert hyper["weight_decay"].shape == (T, G) and hyper["w0"].shape == (N,)
    assert stats["reversed_exactly"] is True and stats["rule"] == "adam"
    assert 0 < stats["bits_per_element_step"] < 1.01 * stats["ideal_bits_per_element_step"] + 0.2


def _schedule(T, G=3, b1=0.9, b2=0.99, wd=0.1):
    rng = np.random.default_rng(T)
    return dict(alphas=0.02 * (1 + rng.random((T, G))), beta1s=np.full((T, G), b1),
                beta2s=np.full((T, G), b2), eps=np.array([1e-8, 1e-5, 1e-3]), weight_decay=wd)


@pytest.mark.parametrize("b1, b2", [(0.9, 0.999), (2.0 ** -15, 0.4), (1 - 2.0 ** -32, 0.5)])
def test_state_buffer_and_reversal_are_the_specifications_bit_for_bit(b1, b2, emu):
    """Against the NumPy specification's own loop (trajectory.forward / reverse, kernel "numpy"):
    W, M, S, heads, pointers and tail words after training, and the initial bits after the
    reverse pass, also when the pass is repeated (keep=True) or consumes the run (keep=False)."""
    T = 40
    h = _schedule(T, b1=b1, b2=b2)
    w0, meta, dw = np.linspace(-1.5, 2.0, N), np.array([-1.0]), np.ones(N)
    sched = AdamSchedule.build(h["alphas"], h["beta1s"], h["beta2s"], GROUP_INDEX, 3, h["eps"],
                               h["weight_decay"])
    st = trajectory.forward(grad, w0, sched, meta, kernel="numpy")
    run = rgpu.adam(grad, w0, meta=meta, vjp=vjp, group_index=GROUP_INDEX, backend=emu,
                    check_every=7, **h)
    dev = run.engine
    for ours, theirs in ((dev.W, st.W), (dev.M, st.M), (dev.S, st.S), (dev.head, st.buffer.head),
                         (dev.ptr, st.buffer.ptr)):
        assert np.array_equal(ours, theirs)
    top = int(st.buffer.ptr.max())
    assert np.array_equal(dev.tail[:top], st.buffer.tail_matrix())
    assert np.array_equal(run.m, st.m) and np.array_equal(run.s, st.s)
    ref = trajectory.reverse(st, vjp, dw, meta=meta, meta_size=1, kernel="numpy", grad=grad)
    first = run.hypergradient(dw)
    again = run.hypergradient(dw, keep=False)
    for kind in ("w0", "alphas", "beta1s", "beta2s", "eps", "weight_decay", "meta"):
        assert np.array_equal(first[kind], ref[kind]), kind
        assert np.array_equal(again[kind], first[kind]), kind
    W0 = np.rint(w0 * 2.0 ** 52).astype(np.int64)
    assert np.array_equal(dev.W, W0) and not dev.M.any() and not dev.S.any()
    assert np.all(dev.head == np.uint64(1 << 48)) and not dev.ptr.any()


def test_moment_cotangents_and_a_model_object(emu):
    """dv_T = (dm_T, ds_T) reaches the same adjoint as on the CPU; a model with .grad / .vjp
    stands in for the callables."""
    class Model:
        grad = staticmethod(grad)
        vjp = staticmethod(vjp)

    T = 6
    h = _schedule(T, wd=0.0)
    w0, meta = np.linspace(-1, 1, N), np.array([-3.0])
    dm, ds, dw = np.full(N, 0.5), np.linspace(0, 2, N), np.ones(N)
    sched = AdamSchedule.build(h["alphas"], h["beta1s"], h["beta2s"], GROUP_INDEX, 3, h["eps"], 0.0)
    st = trajectory.forward(grad, w0, sched, meta)
    ref = trajectory.reverse(st, vjp, dw, (dm, ds), meta=meta, meta_size=1, grad=grad)
    run = rgpu.adam(Model(), w0, meta=meta, group_index=GROUP_INDEX, backend=emu, **h)
    out = run.hypergradient(dw, (dm, ds))
    for kind in ("w0", "alphas", "beta1s", "beta2s", "eps", "meta"):
        assert np.array_equal(out[kind], ref[kind]), kind


# --------------------------------------------------------------------------- errors
def _ok(w, meta, t):
    return w - 0.1 * t


@pytest.mark.parametrize("change", [
    dict(alphas=[-0.1, 0.1]), dict(alphas=[0.1, np.nan]), dict(beta1s=[0.9, 1.5]),
    dict(beta2s=[0.9]), dict(beta1s=[0.0, 0.9]), dict(eps=-1.0), dict(eps=np.ones(2)),
    dict(weight_decay=np.ones((3, 1))), dict(weight_decay=-0.1), dict(weight_decay=20.0),
    dict(frac_bits={"w": 52, "q": 3}), dict(frac_bits=70), dict(alphas=np.full((2, 2), 0.1)),
])
def test_bad_arguments_get_reversible_adams_error_and_message(change):
    kw = dict(alphas=[0.1, 0.2], beta1s=[0.9, 0.5], beta2s=[0.99, 0.99])
    kw.update(change)
    a, b1, b2 = kw.pop("alphas"), kw.pop("beta1s"), kw.pop("beta2s")
    errors = []
    for call in (lambda: rgpu.adam(_ok, np.zeros(4), a, b1, b2, **kw),
                 lambda: reversible.adam(lambda w, m, t: anp.sum(w ** 2), np.zeros(4), a, b1, b2,
                                         **kw)):
        with pytest.raises((TypeError, ValueError)) as info:
            call()
        errors.append((type(info.value), str(info.value)))
    assert errors[0] == errors[1]


def test_shapes_the_gpu_needs_are_named():
    with pytest.raises(ValueError, match="w0 must be a flat"):
        rgpu.adam(_ok, np.zeros((2, 2)), [0.1], [0.9], [0.99])
    with pytest.raises(ValueError, match="group_index must be an integer vector of length 4"):
        rgpu.adam(_ok, np.zeros(4), [0.1], [0.9], [0.99], group_index=[0, 1])
    with pytest.raises(TypeError, match="grad_hvp must be"):
        rgpu.adam(_ok, np.zeros(4), [0.1], [0.9], [0.99], grad_hvp=3)


def _cpu_error(g, T=12, hvp=None, **kw):
    """The CPU engine's error for the same callables (forward, or reverse with ``hvp``)."""
    sched = AdamSchedule.build(np.full(T, 0.01), np.full(T, 0.9), np.full(T, 0.999),
                               np.zeros(N, np.int64), 1)
    with pytest.raises(Exception) as info:
        st = trajectory.forward(g, np.ones(N), sched, kernel="numpy")
        trajectory.reverse(st, hvp, np.ones(N), kernel="numpy", grad=g)
    return info


def _gpu_error(g, emu, T=12, hvp=None, check_every=256):
    with pytest.raises(Exception) as info:
        run = rgpu.adam(g, np.ones(N), np.full(T, 0.01), np.full(T, 0.9), np.full(T, 0.999),
                        vjp=hvp, backend=emu, check_every=check_every)
        run.hypergradient(np.ones(N))
    return info


def _same_error(cpu, gpu):
    assert type(gpu.value) is type(cpu.value)
    assert str(gpu.value) == str(cpu.value)


@pytest.mark.parametrize("check_every", [1, 4, 256])
def test_nan_gradient_and_overflow_raise_the_cpus_errors_naming_the_step(check_every, emu):
    def nan_at_5(w, meta, t):
        return _ok(w, meta, t) * (np.nan if t == 5 else 1.0)

    def blows_up_at_7(w, meta, t):
        return _ok(w, meta, t) * (1e6 if t == 7 else 1.0)

    for g, cls in ((nan_at_5, NonFiniteError), (blows_up_at_7, FixedPointOverflowError)):
        cpu, gpu = _cpu_error(g), _gpu_error(g, emu, check_every=check_every)
        assert cpu.type is cls and "step" in str(cpu.value)
        _same_error(cpu, gpu)


def test_gradient_of_the_wrong_size_is_the_cpus_error(emu):
    def short(w, meta, t):
        return w[:-1]

    cpu, gpu = _cpu_error(short), _gpu_error(short, emu)
    assert cpu.type is ValueError
    _same_error(cpu, gpu)


@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")   # the emulation runs on past the Inf
def test_nonfinite_hessian_vector_product_in_the_reverse_pass_is_named_as_on_the_cpu(emu):
    def hvp(w, meta, t, u):
        return _ok(w, meta, t), u * (np.inf if t == 4 else 1.0), None

    cpu, gpu = _cpu_error(_ok, hvp=hvp), _gpu_error(_ok, emu, hvp=hvp, check_every=3)
    assert cpu.type is NonFiniteError and "Hessian-vector product at step 4" in str(cpu.value)
    _same_error(cpu, gpu)


def test_a_gradient_that_is_not_a_pure_function_fails_the_reversal_loudly(emu):
    calls = {"n": 0}

    def drifting(w, meta, t):
        calls["n"] += 1
        return _ok(w, meta, t) + 1e-9 * calls["n"]

    def hvp(w, meta, t, u):
        return drifting(w, meta, t), u, None

    run = rgpu.adam(drifting, np.ones(N), np.full(6, 0.01), np.full(6, 0.9), np.full(6, 0.999),
                    vjp=hvp, backend=emu)
    with pytest.raises(reversible.ReversibleError,      # ReversibilityError or BufferUnderflowError
                       match="(did not return to the starting point bit for bit|diverged from the "
                             "forward trajectory at step).*deterministic function of"):
        run.hypergradient(np.ones(N))


def test_a_reversal_off_its_start_is_named_unless_check_is_false(emu):
    run = rgpu.adam(_ok, np.ones(N), np.full(6, 0.01), np.full(6, 0.9), np.full(6, 0.999),
                    vjp=lambda w, m, t, u: (_ok(w, m, t), u, None), backend=emu)
    run.engine.W0[0] += 1                   # the start the reversal is checked against
    with pytest.raises(ReversibilityError, match="did not return to the starting point bit for "
                                                 "bit: 1 weights, 0 first moments and 0 second "
                                                 "moments differ, buffer empty: True"):
        run.hypergradient(np.ones(N))
    out = run.hypergradient(np.ones(N), check=False)
    assert out["w0"].shape == (N,) and run.stats["reversed_exactly"] is False


def test_hypergradient_needs_derivatives_and_finite_cotangents(emu):
    run = rgpu.adam(_ok, np.ones(N), [0.01] * 3, [0.9] * 3, [0.99] * 3, backend=emu)
    with pytest.raises(ValueError, match="hypergradients need a joint VJP.*reversible.gpu.adam"):
        run.hypergradient(np.ones(N))
    run = rgpu.adam(_ok, np.ones(N), [0.01] * 3, [0.9] * 3, [0.99] * 3, backend=emu,
                    vjp=lambda w, m, t, u: (_ok(w, m, t), u, None))
    with pytest.raises(NonFiniteError, match=r"cotangent of w_T contains NaN or Inf \(1 of 9"):
        run.hypergradient(np.r_[np.ones(N - 1), np.nan])
    with pytest.raises(ValueError, match="cotangent of w_T has 3 elements, expected 9"):
        run.hypergradient(np.ones(3))
