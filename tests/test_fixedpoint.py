"""Fixed point: conversions, checked addition (against Python's exact integers), errors."""

import numpy as np
import pytest

from reversible.buffer import InfoBuffer, quantize_beta
from reversible.errors import FixedPointOverflowError, NonFiniteError
from reversible.fixedpoint import (DEFAULT_FRAC_BITS, ExactArray, check_frac_bits, checked_add,
                                   limit, to_fixed, to_float)

I64 = np.iinfo(np.int64)


@pytest.mark.parametrize("frac_bits", [1, 20, 52, 62])
def test_conversion_definition(frac_bits, rng):
    """fix(x) = rint(x * 2**F); values on the grid convert back exactly."""
    lim = limit(frac_bits)
    assert lim == 2.0 ** (63 - frac_bits)
    x = rng.uniform(-0.9 * lim, 0.9 * lim, size=500)
    X = to_fixed(x, frac_bits)
    assert X.dtype == np.int64
    assert np.array_equal(X, np.rint(x * 2.0**frac_bits).astype(np.int64))
    on_grid = to_float(X, frac_bits)
    assert np.array_equal(to_fixed(on_grid, frac_bits), X)
    assert np.all(np.abs(on_grid - x) <= 2.0 ** -(frac_bits + 1) + np.spacing(np.abs(x)))


def test_conversion_range_limit():
    F = 52
    lim = limit(F)                       # 2048
    ok = np.nextafter(lim, 0)            # largest double below the limit
    assert to_fixed(np.array([ok, -ok]), F).tolist() == [int(ok * 2**F), -int(ok * 2**F)]
    for bad in (lim, -lim, -2 * lim, 1e300):    # the range is symmetric: |x| < limit
        with pytest.raises(FixedPointOverflowError, match="frac_bits"):
            to_fixed(np.array([0.0, bad]), F, "weights", step=7)


def test_overflow_message_names_step_and_remedy():
    with pytest.raises(FixedPointOverflowError) as err:
        to_fixed(np.array([1e4]), 52, "weight step alpha * v", step=13)
    msg = str(err.value)
    assert "step 13" in msg and "weight step" in msg
    assert "fewer frac_bits" in msg and "learning rate" in msg
    assert isinstance(err.value, OverflowError)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_raises(bad):
    with pytest.raises(NonFiniteError, match="step 4"):
        to_fixed(np.array([1.0, bad, 2.0]), 52, "gradient", step=4)
    assert issubclass(NonFiniteError, FloatingPointError)


def _edge_ints(rng, size):
    edges = np.array([I64.min, I64.min + 1, I64.max, I64.max - 1, 0, 1, -1,
                      I64.max // 2, I64.min // 2, I64.max // 2 + 1], dtype=np.int64)
    rand = rng.integers(I64.min, I64.max, size=size, dtype=np.int64, endpoint=True)
    near = I64.max - rng.integers(0, 1000, size=size)
    return np.concatenate([edges, rand, near, -near])


@pytest.mark.parametrize("subtract", [False, True])
def test_checked_add_matches_exact_integers(subtract, rng):
    """checked_add raises exactly when the exact (Python int) result leaves int64.

    Subtracting ``D = -2**63`` (which ``to_fixed`` never produces) is refused
    conservatively, so those pairs only have to raise.
    """
    a = _edge_ints(rng, 60)
    b = _edge_ints(rng, 60)
    X = np.repeat(a, b.size)
    D = np.tile(b, a.size)
    exact = [int(x) - int(d) if subtract else int(x) + int(d) for x, d in zip(X, D)]
    fits = np.array([I64.min <= e <= I64.max for e in exact])
    if subtract:
        fits &= D != I64.min
    assert fits.any() and not fits.all()
    S = checked_add(X[fits], D[fits], 52, subtract=subtract)
    assert S.tolist() == [e for e, f in zip(exact, fits) if f]
    for i in np.flatnonzero(~fits)[:200]:
        with pytest.raises(FixedPointOverflowError):
            checked_add(X[i:i + 1], D[i:i + 1], 52, subtract=subtract)


def test_checked_add_message():
    with pytest.raises(FixedPointOverflowError) as err:
        checked_add(np.array([I64.max - 3]), np.array([4]), 40, "velocity", step=21)
    msg = str(err.value)
    assert "velocity at step 21" in msg and "frac_bits=40" in msg and "learning rate" in msg


def test_exact_array_add_sub_round_trip(rng):
    w0 = rng.normal(size=200) * 100
    a = ExactArray(w0, 52, "weights")
    start = a.ints.copy()
    steps = [rng.normal(size=200) * 10.0 ** rng.integers(-20, 2) for _ in range(50)]
    for d in steps:
        a.add(d)
    for d in steps[::-1]:
        a.sub(d)
    assert np.array_equal(a.ints, start)
    assert a == ExactArray(w0, 52)


def test_exact_array_add_overflow_names_step():
    a = ExactArray(np.array([2000.0, 0.0]), 52, "weights")
    with pytest.raises(FixedPointOverflowError, match="weights at step 3"):
        a.add(np.array([100.0, 0.0]), step=3)
    with pytest.raises(FixedPointOverflowError, match="increment of weights at step 5"):
        a.add(np.array([5000.0, 0.0]), step=5)
    with pytest.raises(NonFiniteError, match="step 6"):
        a.add(np.array([np.nan, 0.0]), step=6)


@pytest.mark.parametrize("beta", [2**-32, 0.3, 0.5, 0.9, 0.999, 0.9999, 1 - 2**-32, 1.0])
def test_exact_array_mul_div(beta, rng):
    a = ExactArray(rng.normal(size=30), 52)
    start = a.copy()
    buf = InfoBuffer(30)
    n = quantize_beta(beta)
    idx = np.arange(0, 30, 3)
    for _ in range(20):
        a.mul(n, buf)
        a.mul(n, buf, idx)
    # each multiply lands within one unit (2**-52) of the exact product and beta <= 1 does not
    # amplify earlier errors: after k multiplies |A - S n**k / 2**(32 k)| < k units (Python ints)
    n = int(n)
    for sel, k in ((slice(1, None, 3), 20), (slice(0, None, 3), 40)):
        for got, s0 in zip(a.ints[sel], start.ints[sel]):
            assert abs(int(got) * 2 ** (32 * k) - int(s0) * n ** k) < k * 2 ** (32 * k)
    for _ in range(20):
        a.div(n, buf, idx)
        a.div(n, buf)
    assert a == start
    buf.check_empty()


@pytest.mark.parametrize("bad", [0, 63, -1, 100])
def test_check_frac_bits_rejects(bad):
    with pytest.raises(ValueError, match=r"frac_bits must be an integer in \[1, 62\]"):
        check_frac_bits(bad)
    assert check_frac_bits(DEFAULT_FRAC_BITS) == 52
