"""reversible.resolution: frac_bits checked against the first step's increments."""

import warnings

import autograd.numpy as anp
import numpy as np
import pytest

import reversible
from reversible import resolution
from reversible.errors import ResolutionWarning

_rng = np.random.default_rng(0)
X, Y = _rng.normal(size=(40, 6)), _rng.normal(size=40)
W0 = 0.3 * _rng.normal(size=6)


def ridge(w, meta, t):
    r = (7 * t + np.arange(10)) % 40
    return anp.mean((anp.dot(X[r], w) - Y[r]) ** 2)


def _run(alpha, frac_bits, method="exact"):
    stats = {}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        w_T = reversible.sgd(ridge, W0, np.full(30, alpha), np.full(30, 0.9),
                             frac_bits=frac_bits, stats=stats, method=method)
    return w_T, stats, [w for w in caught if issubclass(w.category, ResolutionWarning)]


def test_relative_rounding_and_bits_needed():
    d = np.array([0.3, -0.75, 0.0])                 # 0.3 = 0.25 + 0.05 at 2**-2 resolution
    assert resolution.relative_rounding(d, 2) == pytest.approx(0.05 / np.hypot(0.3, 0.75))
    assert resolution.relative_rounding(d, 60) == 0.0
    assert resolution.relative_rounding(np.zeros(3), 4) == 0.0
    # rounding halves per bit: 1e-4 needs ceil(log2(1e-4 / 1e-8)) = 14 more bits
    assert resolution.bits_needed(1e-4, 16) == 30
    assert resolution.bits_needed(1e-4, 60) == 62


def test_default_resolution_is_silent_and_reported():
    _, stats, caught = _run(0.08, None)
    assert caught == []
    assert 0 < stats["first_step_rounding"] < 1e-13


def test_coarse_resolution_warns_with_the_remedy():
    """frac_bits=12 here: r = 7e-4, and w_T ends 6e-4 (of its movement) from float64."""
    w_T, stats, caught = _run(0.08, 12)
    assert len(caught) == 1
    msg = str(caught[0].message)
    need = resolution.bits_needed(stats["first_step_rounding"], 12)
    assert need == 29 and f"frac_bits={need} would bring" in msg
    assert msg.startswith("frac_bits=12 (resolution 2**-12") and "(1 - beta) * g" in msg
    assert resolution.WARN_AT < stats["first_step_rounding"] < resolution.REFUSE_AT
    ref = reversible.sgd(ridge, W0, np.full(30, 0.08), np.full(30, 0.9), method="unrolled")
    err = np.linalg.norm(w_T - ref) / np.linalg.norm(ref - W0)
    assert resolution.WARN_AT < err < resolution.REFUSE_AT             # the warning is earned


def test_hopeless_resolution_is_refused():
    with pytest.raises(ValueError, match=r"frac_bits=12 .* rounds the training increments"):
        _run(0.001, 12)


def test_float_methods_ignore_frac_bits():
    _, stats, caught = _run(0.001, 12, method="unrolled")
    assert caught == [] and "first_step_rounding" not in stats


def test_long_vectors_are_sampled_but_sparse_increments_are_not_missed():
    N = 5 * resolution.SAMPLE + 3
    stride = N // resolution.SAMPLE
    g = np.zeros(N)
    g[1::stride * 97] = np.random.default_rng(0).uniform(1e-4, 1e-3, size=g[1::stride * 97].size)
    assert not np.any(g[::stride])          # off the sampling stride: the sample is all zero
    with pytest.warns(ResolutionWarning, match="frac_bits=22"):
        r = resolution.check_first_step(g, 0.1, 0.1, 22)
    assert r == pytest.approx(resolution.relative_rounding(0.1 * g, 22))
    dense = np.random.default_rng(1).normal(size=N)
    r_sampled = resolution.check_first_step(dense, 0.1, 0.1, 52)
    assert r_sampled == pytest.approx(resolution.relative_rounding(0.1 * dense, 52), rel=0.05)
