"""InfoBuffer: bit-exact multiply/divide round trips, bit accounting, corruption detection.

References used here are independent of the rANS machinery: the defining
property of a multiply (``out = floor((V * n + u) / 2**32)`` for some
``0 <= u < n``, hence ``|out - V n / 2**32| < 1``), checked in Python integers,
the identity of the inverse, and the information bound ``log2(2**32 / n)``.
"""

import numpy as np
import pytest

from reversible.buffer import (BETA_ONE, HEAD_LOW, OVERHEAD_BITS, WORD_BITS, InfoBuffer,
                               divide_ints, effective_beta, ideal_bits, multiply_ints,
                               quantize_beta)
from reversible.errors import BufferUnderflowError, FixedPointOverflowError, ReversibilityError

# every regime edge: n = 1, two spills (n < 2**16), one spill, beta = 1/2, n = 2**32 - 1, identity
BETAS = [2**-32, 2**-16 - 2**-32, 2**-16, 0.3, 0.5 - 2**-32, 0.5, 0.5 + 2**-32, 0.9, 0.99, 0.999,
         0.9999, 1 - 2**-32, 1.0]
I64 = np.iinfo(np.int64)


def _values(rng, N):
    """int64 test values: extremes of the range, small signed values and random bits."""
    special = np.array([I64.min, I64.min + 1, I64.max, I64.max - 1, 0, -1, 1,
                        -(1 << 32), (1 << 32) - 1, -(1 << 62), 1 << 62], dtype=np.int64)
    rand = rng.integers(I64.min, I64.max, size=N, dtype=np.int64, endpoint=True)
    small = rng.integers(-1000, 1000, size=N)
    return np.concatenate([special, rand, small])


def _run(buf, V0, n, increments):
    """Forward: multiply then add each step's increment; returns the final V."""
    V = V0.copy()
    for inc in increments:
        V = buf.multiply(V, n)
        V = V + inc
    return V


def _unrun(buf, V, n, increments):
    for inc in increments[::-1]:
        V = V - inc
        V = buf.divide(V, n)
    return V


def _increments(rng, T, N, scale=1 << 40):
    return rng.integers(-scale, scale, size=(T, N), dtype=np.int64)


def _bits_per_element(buf):
    return WORD_BITS * buf.ptr + np.log2(buf.head.astype(np.float64)) - np.log2(float(HEAD_LOW))


def _deviation_units(out, V, n):
    """``out - V n / 2**32`` in exact rational arithmetic (Python ints), as floats."""
    n = np.broadcast_to(n, V.shape)
    return np.array([(int(o) * (1 << 32) - int(v) * int(k)) / (1 << 32)
                     for o, v, k in zip(out, V, n)])


# ------------------------------------------------------------ quantisation
def test_quantize_beta_is_round_to_32_bits():
    betas = np.array(BETAS)
    assert np.array_equal(quantize_beta(betas), np.rint(betas * 2.0**32).astype(np.int64))
    assert np.array_equal(effective_beta(betas), np.rint(betas * 2.0**32) / 2.0**32)
    assert quantize_beta(1.0) == BETA_ONE == 2**32
    assert quantize_beta(2**-32) == 1 and quantize_beta(1 - 2**-32) == 2**32 - 1
    for beta in (0.9, 0.99, 0.999, 0.9999, 0.99999):
        assert abs(float(effective_beta(beta)) - beta) <= 2.0**-33 < 1e-9


@pytest.mark.parametrize("bad, fragment", [(0.0, "(0, 1]"), (-0.2, "(0, 1]"), (1.0 + 1e-9, "(0, 1]"),
                                           (np.nan, "finite"), (np.inf, "finite"),
                                           (2.0**-34, "rounds to zero")])
def test_quantize_beta_rejects(bad, fragment):
    with pytest.raises(ValueError, match=fragment.replace("(", r"\(").replace(")", r"\)")
                       .replace("[", r"\[").replace("]", r"\]")):
        quantize_beta(np.array([0.9, bad]))


# ---------------------------------------------------------- single multiply
@pytest.mark.parametrize("beta", BETAS)
def test_multiply_definition(beta, rng):
    """out = floor((V n + u) / 2**32) for some 0 <= u < n, so |out - V n / 2**32| < 1 unit."""
    n = int(quantize_beta(beta))
    V = _values(rng, 200)
    buf = InfoBuffer(V.size)
    V1 = V.copy()
    for _ in range(3):                 # a few steps, so the head is not at its initial state
        out = buf.multiply(V1, n)
        if n == BETA_ONE:
            assert np.array_equal(out, V1)
            assert buf.is_empty()
        else:
            slack = [int(v) * n - int(o) * (1 << 32) for o, v in zip(out, V1)]   # = -u + r
            assert all(-n < s < (1 << 32) for s in slack)
            assert np.max(np.abs(_deviation_units(out, V1, n))) < 1.0
        V1 = out
    for _ in range(3):
        V1 = buf.divide(V1, n)
    assert np.array_equal(V1, V)
    buf.check_empty()


def test_limb_arithmetic_against_python_integers(rng):
    """multiply_ints / divide_ints: the 95-bit product and its inverse, exactly."""
    V = _values(rng, 3000)
    n = rng.integers(1, 1 << 32, size=V.size)
    n[:8] = [1, 2, (1 << 32) - 1, 1 << 31, (1 << 31) + 1, 65535, 65536, 3]
    u = (rng.random(V.size) * n).astype(np.int64)
    u[:V.size // 4] = n[:V.size // 4] - 1        # the largest symbol
    V1, r = multiply_ints(V, n, u)
    for v, k, s, v1, rr in zip(V, n, u, V1, r):
        X = int(v) * int(k) + int(s)
        assert (int(v1), int(rr)) == (X >> 32, X & 0xFFFFFFFF)
    back, u2 = divide_ints(V1, r, n)
    assert np.array_equal(back, V) and np.array_equal(u2, u)


def test_divide_ints_refuses_a_velocity_outside_int64():
    with pytest.raises(FixedPointOverflowError, match="undoing a multiply by beta"):
        divide_ints(np.array([1 << 40]), np.zeros(1, np.uint64), np.array([5]))


# ---------------------------------------------------- many-step round trips
@pytest.mark.parametrize("beta", BETAS)
def test_round_trip_each_beta(beta, rng):
    n = quantize_beta(beta)
    V0 = _values(rng, 21)
    T = 150
    inc = _increments(rng, T, V0.size)
    inc[:, :11] = 0      # keep the special values (extremes) free of increments
    buf = InfoBuffer(V0.size)
    V = _run(buf, V0, n, inc)
    if beta < 1:
        assert not buf.is_empty()
    assert np.array_equal(_unrun(buf, V, n, inc), V0)
    buf.check_empty()


@pytest.mark.parametrize("chunk_rows", [1, 3, None])
def test_round_trip_mixed_per_element_n(chunk_rows, rng):
    """Per-element n mixing every path (fused, two-step, identity), over several tail chunks."""
    n = np.tile(quantize_beta(np.array(BETAS)), 4)
    V0 = rng.integers(-(1 << 60), 1 << 60, size=n.size)
    V0[:len(BETAS)] = I64.max
    V0[len(BETAS):2 * len(BETAS)] = I64.min
    T = 120
    inc = _increments(rng, T, n.size)
    inc[:, :2 * len(BETAS)] = 0
    buf = InfoBuffer(n.size, chunk_rows=chunk_rows)
    V = _run(buf, V0, n, inc)
    assert buf.ptr.max() > buf.ptr.min()        # pointers really differ between elements
    if chunk_rows is not None:
        assert len(buf.chunks) > 1
    assert np.array_equal(_unrun(buf, V, n, inc), V0)
    buf.check_empty()
    assert buf.chunks == []                      # released as the tails emptied


def test_round_trip_per_step_schedule_and_subsets(rng):
    """A different beta every step, applied to changing subsets of elements (idx)."""
    N, T = 12, 200
    V0 = rng.integers(-(1 << 50), 1 << 50, size=N)
    ns = quantize_beta(rng.choice(BETAS, size=(T, N)))
    subsets = [np.sort(rng.choice(N, size=rng.integers(1, N + 1), replace=False)) for _ in range(T)]
    buf = InfoBuffer(N, chunk_rows=2)
    V = V0.copy()
    for t in range(T):
        idx = subsets[t]
        V[idx] = buf.multiply(V[idx], ns[t, idx], idx)
    for t in reversed(range(T)):
        idx = subsets[t]
        V[idx] = buf.divide(V[idx], ns[t, idx], idx)
    assert np.array_equal(V, V0)
    buf.check_empty()


def test_long_run_and_bit_accounting(rng):
    """T = 10**4 on small N: exact round trip; bits stored within 0.1 % of the bound.

    The information held is ``16 * tail words + log2(head) - 48`` per element.
    Each multiply adds ``log2(2**32 / n)`` up to the rounding of
    ``floor(head / n)`` (relative ``n / head <= 2**-16``, and first order
    cancelling on average), so per element ``|bits - T log2(2**32 / n)|``
    stays far below one bit and the ratio is within 0.1 % even for beta = 0.9999.
    """
    T = 10_000
    n = quantize_beta(np.array([0.9, 0.9, 0.99, 0.99, 0.999, 0.9999]))
    V0 = rng.integers(-(1 << 50), 1 << 50, size=n.size)
    inc = _increments(rng, T, n.size, 1 << 45)
    buf = InfoBuffer(n.size)
    V = _run(buf, V0, n, inc)
    ideal = T * ideal_bits(n)
    held = _bits_per_element(buf)
    assert np.all(np.abs(held - ideal) <= 0.01), held - ideal
    assert np.all(np.abs(held / ideal - 1.0) <= 1e-3), held / ideal - 1.0
    assert buf.bits() == pytest.approx(held.sum())
    assert np.array_equal(_unrun(buf, V, n, inc), V0)
    buf.check_empty()


@pytest.mark.slow
def test_long_run_every_beta(rng):
    """T = 10**4 with every beta of the grid side by side (slow: mixed paths)."""
    T = 10_000
    n = quantize_beta(np.array(BETAS))
    V0 = rng.integers(-(1 << 62), 1 << 62, size=n.size)
    inc = _increments(rng, T, n.size)
    buf = InfoBuffer(n.size, chunk_rows=5)
    V = _run(buf, V0, n, inc)
    held = _bits_per_element(buf)
    assert np.all(np.abs(held - T * ideal_bits(n)) <= 0.01)
    assert np.array_equal(_unrun(buf, V, n, inc), V0)
    buf.check_empty()


@pytest.mark.parametrize("beta", BETAS)
def test_bit_accounting_each_beta(beta, rng):
    T, N = 300, 16
    n = quantize_beta(beta)
    buf = InfoBuffer(N)
    _run(buf, rng.integers(-(1 << 50), 1 << 50, size=N), n, _increments(rng, T, N))
    held = _bits_per_element(buf)
    assert np.all(np.abs(held - T * ideal_bits(n)) <= 1e-3)
    assert np.all(buf.ptr <= T * ideal_bits(n) / WORD_BITS + 1)
    if beta == 1.0:
        assert buf.is_empty() and buf.bits() == 0.0


def test_fixed_overhead_per_element():
    """Head (64 bits) and pointer (64 bits) are all a fresh buffer costs per element."""
    buf = InfoBuffer(1000)
    assert buf.nbytes() * 8 == OVERHEAD_BITS * 1000 and OVERHEAD_BITS <= 160


# ------------------------------------------------------------ corruption
def test_check_empty_raises_until_reversed(rng):
    buf = InfoBuffer(5)
    buf.check_empty()
    V0 = rng.integers(-1000, 1000, size=5)
    V = buf.multiply(V0, quantize_beta(0.9))
    with pytest.raises(ReversibilityError, match="initial state"):
        buf.check_empty()
    buf.divide(V, quantize_beta(0.9))
    buf.check_empty()


@pytest.mark.parametrize("beta", [b for b in BETAS if b < 1])
def test_divide_on_fresh_buffer_underflows(beta):
    """Undoing a multiply that never happened needs bits that are not there: it must raise."""
    buf = InfoBuffer(3)
    with pytest.raises(BufferUnderflowError, match="empty"):
        buf.divide(np.array([5, -7, 123456789], dtype=np.int64), quantize_beta(beta))


def test_corrupted_pointer_underflows(rng):
    n = quantize_beta(0.3)
    buf = InfoBuffer(4)
    V0 = rng.integers(-(1 << 40), 1 << 40, size=4)
    inc = _increments(rng, 100, 4)
    V = _run(buf, V0, n, inc)
    assert buf.ptr.min() > 0
    buf.ptr[2] = 0                        # element 2 loses its tail
    with pytest.raises(BufferUnderflowError, match="element 2"):
        _unrun(buf, V, n, inc)


def test_pop_words_on_empty_raises():
    buf = InfoBuffer(2)
    with pytest.raises(BufferUnderflowError):
        buf.pop_words(np.array([1]))


def test_wrong_reverse_schedule_detected(rng):
    """Dividing by a different beta than was multiplied does not return to the start."""
    buf = InfoBuffer(6)
    V0 = rng.integers(-(1 << 40), 1 << 40, size=6)
    inc = _increments(rng, 50, 6)
    V = _run(buf, V0, quantize_beta(0.9), inc)
    try:
        V = _unrun(buf, V, quantize_beta(0.91), inc)
    except ReversibilityError:      # an underflow: detected during the reverse pass
        return
    assert not (np.array_equal(V, V0) and buf.is_empty())


# ----------------------------------------------------------- persistence
def test_tail_matrix_from_arrays_round_trip(rng):
    n = np.tile(quantize_beta(np.array(BETAS)), 2)
    V0 = rng.integers(-(1 << 40), 1 << 40, size=n.size)
    inc = _increments(rng, 80, n.size)
    buf = InfoBuffer(n.size, chunk_rows=3)
    V = _run(buf, V0, n, inc)
    tail = buf.tail_matrix()
    assert tail.dtype == np.uint16 and tail.shape == (buf.ptr.max(), n.size)
    rebuilt = InfoBuffer.from_arrays(buf.head, buf.ptr, tail, chunk_rows=5)
    assert rebuilt.bits() == buf.bits() and rebuilt.words() == buf.words()
    assert np.array_equal(_unrun(rebuilt, V.copy(), n, inc), V0)
    rebuilt.check_empty()


@pytest.mark.parametrize("head, ptr, tail, fragment", [
    ([HEAD_LOW, HEAD_LOW], [0], np.zeros((0, 2)), "inconsistent"),
    ([HEAD_LOW - 1, HEAD_LOW], [0, 0], np.zeros((0, 2)), "heads"),
    ([HEAD_LOW, HEAD_LOW], [0, 2], np.zeros((1, 2)), "pointers"),
    ([HEAD_LOW, HEAD_LOW], [0, -1], np.zeros((1, 2)), "pointers"),
    ([HEAD_LOW, HEAD_LOW], [1, 1], np.full((1, 2), 1 << 20, dtype=np.uint32), "16-bit"),
])
def test_from_arrays_validates(head, ptr, tail, fragment):
    with pytest.raises(ValueError, match=fragment):
        InfoBuffer.from_arrays(np.array(head, dtype=np.uint64), ptr, tail)
