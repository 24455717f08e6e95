"""reversible.gpu's front end speaks the CPU API: same checks and messages, same result keys.

Runs without a GPU: the front end drives the CUDA kernels' source compiled for
the CPU (reversible.gpu.emulate).
"""

import numpy as np
import pytest
from _gpu_import import load_gpu  # noqa: E402  (tests/ is on sys.path)

import reversible
from reversible import ReversibilityError

rgpu = load_gpu()


def _quadratic():
    c = np.linspace(0.5, 2.0, 6)

    def grad(w, meta, t):
        return c * (w - 0.1 * t)

    def vjp(w, meta, t, u):
        return grad(w, meta, t), c * u, None
    return grad, vjp


@pytest.mark.parametrize("change", [
    dict(alphas=[-0.1, 0.1]), dict(alphas=[0.1, np.nan]), dict(alphas=[0.1 + 1j, 0.1]),
    dict(betas=[0.9, 1.5]), dict(betas=[0.9]), dict(frac_bits=70),
])
def test_bad_arguments_get_the_cpu_apis_error_and_message(change):
    grad, _ = _quadratic()
    kw = dict(alphas=[0.1, 0.2], betas=[0.9, 0.5])
    kw.update(change)
    a, b = kw.pop("alphas"), kw.pop("betas")
    errors = []
    for call in (lambda: rgpu.check_args(grad, np.zeros(6), a, b, **kw),
                 lambda: reversible.sgd(lambda w, m, t: np.sum(w ** 2), np.zeros(6), a, b, **kw)):
        with pytest.raises((TypeError, ValueError)) as info:
            call()
        errors.append((type(info.value), str(info.value)))
    assert errors[0] == errors[1]


def test_trained_run_hypergradient_has_the_cpu_keys_and_names(emu):
    grad, vjp = _quadratic()
    T = 5
    run = rgpu.sgd(grad, np.ones(6), np.full(T, 0.2), np.full(T, 0.8), vjp=vjp, backend=emu)
    hg = run.hypergradient(dw_T=np.ones(6), dv_T=np.zeros(6))
    assert sorted(hg) == ["alphas", "betas", "meta", "v0", "w0"]
    assert hg["alphas"].shape == (T, 1) and hg["meta"] is None
    assert np.array_equal(run.hypergrad(np.ones(6))["alphas"], hg["alphas"])   # the 0.1 name
    with pytest.raises(TypeError, match="keep must be True or False"):
        run.hypergradient(np.ones(6), keep="yes")


def test_reversal_failure_is_named_like_on_the_cpu(emu):
    grad, vjp = _quadratic()
    calls = {"n": 0}

    def drifting_vjp(w, meta, t, u):
        calls["n"] += 1
        g, hw, hm = vjp(w, meta, t, u)
        return g + (1e-9 if calls["n"] == 3 else 0.0), hw, hm

    run = rgpu.sgd(grad, np.ones(6), np.full(5, 0.2), np.full(5, 0.8), vjp=drifting_vjp,
                   backend=emu)
    with pytest.raises(ReversibilityError, match="(diverged from the forward trajectory|did not "
                                                 "return to the starting point).*deterministic "
                                                 "function of"):
        run.hypergradient(np.ones(6))
