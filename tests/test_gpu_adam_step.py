"""The CUDA Adam kernels (reversible.gpu.adam_step), run by the CPU emulation: bit for bit the
NumPy specification forward and backward, and its errors.  On a machine with CuPy and a GPU
the same comparison runs on the device."""

import numpy as np
import pytest

from reversible import trajectory
from reversible.adam_rule import AdamSchedule
from reversible.errors import FixedPointOverflowError
from tests._gpu_import import load_gpu

N = 37
_rng = np.random.default_rng(0)
_A = _rng.normal(size=(N, N)) / N


def grad(w, meta, t):
    return _A @ w + np.cos(0.3 * t + np.arange(N)) + 0.05 * w ** 3


def _backends():
    out = []
    gpu = load_gpu()
    from reversible.gpu import adam_step
    try:
        out.append(("emulated", adam_step.emulated_backend()))
    except RuntimeError as err:               # no C++ compiler
        out.append(("emulated", pytest.skip(str(err))))
    if gpu._cupy.has_cuda():
        out.append(("cupy", adam_step.cupy_backend()))
    return adam_step, out


def _host(x):
    return x.get() if hasattr(x, "get") else np.asarray(x)


@pytest.mark.parametrize("T, b1, b2, wd", [(30, 0.9, 0.999, 0.01), (120, 2.0 ** -15, 0.4, 0.2)])
def test_device_kernels_equal_the_numpy_specification(T, b1, b2, wd):
    adam_step, backends = _backends()
    gi = np.repeat([0, 1, 2], [12, 12, 13])
    rng = np.random.default_rng(1)
    sched = AdamSchedule.build(0.01 * (1 + rng.random((T, 3))), np.full((T, 3), b1),
                               np.full((T, 3), b2), gi, 3, np.array([1e-8, 1e-6, 1e-3]), wd)
    w0 = rng.normal(size=N)
    rule = sched.rule("numpy")
    ref = rule.start(w0, None, None)
    for t in range(T):
        rule.exact_forward(ref, grad(ref.w, None, t), t)
    for name, backend in backends:
        dev = adam_step.DeviceAdam(sched, w0, backend=backend)
        for t in range(T):
            dev.forward(grad(_host(dev.w()), None, t), t)
        for a in ("W", "M", "S"):
            assert np.array_equal(_host(getattr(dev, a)), getattr(ref, a)), (name, a)
        assert np.array_equal(_host(dev.head), ref.buffer.head), name
        assert np.array_equal(_host(dev.ptr), ref.buffer.ptr), name
        top = int(ref.buffer.ptr.max())
        assert top > 0 or b1 > 0.5                     # the small beta1 run spills many words
        assert np.array_equal(_host(dev.tail)[:top], ref.buffer.tail_matrix()), name
        for t in range(T - 1, -1, -1):
            dev.undo_position(t)
            dev.undo_moments(grad(_host(dev.w()), None, t), t)
        assert np.array_equal(_host(dev.W), np.rint(w0 * 2.0 ** 52).astype(np.int64)), name
        assert not np.any(_host(dev.M)) and not np.any(_host(dev.S)), name
        assert np.all(_host(dev.head) == np.uint64(1 << 48)), name
        assert not np.any(_host(dev.ptr)), name


def test_device_errors_are_the_specifications():
    adam_step, backends = _backends()
    sched = AdamSchedule.build(np.full(6, 0.01), np.full(6, 0.9), np.full(6, 0.999),
                               np.zeros(N, np.int64), 1)

    def g(w, m, t):
        return grad(w, m, t) * (1e5 if t == 4 else 1.0)

    with pytest.raises(FixedPointOverflowError) as ref:
        trajectory.forward(g, np.ones(N), sched, kernel="numpy")
    for name, backend in backends:
        dev = adam_step.DeviceAdam(sched, np.ones(N), backend=backend)
        with pytest.raises(FixedPointOverflowError) as err:
            for t in range(6):
                dev.forward(g(_host(dev.w()), None, t), t)
        assert str(err.value) == str(ref.value), name
