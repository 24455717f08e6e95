"""InfoBuffer: bit-exact multiply/divide round trips, bit accounting, corruption detection.

References used here are independent of the rANS machinery: the defining
property of a multiply (``out = floor(V / 2**16) * n + u`` with ``0 <= u < n``),
the identity of the inverse, and the information bound ``log2(2**16 / n)``.
"""

import numpy as np
import pytest

from reversible.buffer import (BETA_ONE, HEAD_LOW, InfoBuffer, effective_beta, ideal_bits,
                               quantize_beta)
from reversible.errors import BufferUnderflowError, ReversibilityError

BETAS = [0.3, 0.5, 0.5 + 2**-16, 0.9, 0.99, 0.999, 1.0, 2**-16]
I64 = np.iinfo(np.int64)


def _values(rng, N):
    """int64 test values: extremes of the range, small signed values and random bits."""
    special = np.array([I64.min, I64.min + 1, I64.max, I64.max - 1, 0, -1, 1,
                        -(1 << 16), (1 << 16) - 1, -(1 << 62), 1 << 62], dtype=np.int64)
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
    return 32.0 * buf.ptr + np.log2(buf.head.astype(np.float64)) - 31.0


# ------------------------------------------------------------ quantisation
def test_quantize_beta_is_round_to_16_bits():
    betas = np.array(BETAS)
    assert np.array_equal(quantize_beta(betas), np.rint(betas * 65536).astype(np.int64))
    assert np.array_equal(effective_beta(betas), np.rint(betas * 65536) / 65536)
    assert quantize_beta(1.0) == BETA_ONE


@pytest.mark.parametrize("bad, fragment", [(0.0, "(0, 1]"), (-0.2, "(0, 1]"), (1.0 + 1e-9, "(0, 1]"),
                                           (np.nan, "finite"), (np.inf, "finite"),
                                           (2.0**-18, "rounds to zero")])
def test_quantize_beta_rejects(bad, fragment):
    with pytest.raises(ValueError, match=fragment.replace("(", r"\(").replace(")", r"\)")
                       .replace("[", r"\[").replace("]", r"\]")):
        quantize_beta(np.array([0.9, bad]))


# ---------------------------------------------------------- single multiply
@pytest.mark.parametrize("beta", BETAS)
def test_multiply_definition(beta, rng):
    """out = floor(V / 2**16) * n + u with 0 <= u < n; the identity when n = 2**16."""
    n = int(quantize_beta(beta))
    V = _values(rng, 200)
    buf = InfoBuffer(V.size)
    out = buf.multiply(V, n)
    if n == BETA_ONE:
        assert np.array_equal(out, V)
        assert buf.is_empty()
    else:
        assert np.array_equal(out // n, V >> 16)
        u = out - (V >> 16) * n
        assert np.all((u >= 0) & (u < n))
        # |out - V * n / 2**16| < n + 1 in exact integer arithmetic (Python ints)
        assert all(abs(int(o) * BETA_ONE - int(v) * n) < (n + 1) * BETA_ONE
                   for o, v in zip(out, V))
    back = buf.divide(out, n)
    assert np.array_equal(back, V)
    buf.check_empty()


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
    """T = 10**4 on small N: exact round trip; bits stored within one head's worth of the bound.

    The information held is ``32 * tail words + log2(head) - 31`` per element.
    rANS stores ``log2(2**16 / n)`` per multiply up to the frequency
    quantisation (second order in ``n / 2**24``) and the fractional state of
    the head, which is below one bit in practice; so per element
    ``|bits - T log2(2**16 / n)| <= 1`` and the ratio tends to 1 as ``1 / T``.
    """
    T = 10_000
    n = quantize_beta(np.array([0.9, 0.9, 0.99, 0.99]))
    V0 = rng.integers(-(1 << 50), 1 << 50, size=n.size)
    inc = _increments(rng, T, n.size, 1 << 45)
    buf = InfoBuffer(n.size)
    V = _run(buf, V0, n, inc)
    ideal = T * ideal_bits(n)
    held = _bits_per_element(buf)
    assert np.all(np.abs(held - ideal) <= 1.0), held - ideal
    assert buf.bits() == pytest.approx(held.sum())
    ratio = buf.bits() / ideal.sum()
    assert abs(ratio - 1.0) <= n.size / ideal.sum()      # < 0.13 % here
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
    assert np.all(np.abs(held - T * ideal_bits(n)) <= 1.0)
    assert np.array_equal(_unrun(buf, V, n, inc), V0)
    buf.check_empty()


@pytest.mark.parametrize("beta", BETAS)
def test_bit_accounting_each_beta(beta, rng):
    T, N = 300, 16
    n = quantize_beta(beta)
    buf = InfoBuffer(N)
    _run(buf, rng.integers(-(1 << 50), 1 << 50, size=N), n, _increments(rng, T, N))
    held = _bits_per_element(buf)
    assert np.all(np.abs(held - T * ideal_bits(n)) <= 1.0)
    if beta == 1.0:
        assert buf.is_empty() and buf.bits() == 0.0


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
    assert tail.dtype == np.uint32 and tail.shape == (buf.ptr.max(), n.size)
    rebuilt = InfoBuffer.from_arrays(buf.head, buf.ptr, tail, chunk_rows=5)
    assert rebuilt.bits() == buf.bits() and rebuilt.words() == buf.words()
    assert np.array_equal(_unrun(rebuilt, V.copy(), n, inc), V0)
    rebuilt.check_empty()


@pytest.mark.parametrize("head, ptr, tail, fragment", [
    ([HEAD_LOW, HEAD_LOW], [0], np.zeros((0, 2)), "inconsistent"),
    ([HEAD_LOW - 1, HEAD_LOW], [0, 0], np.zeros((0, 2)), "heads"),
    ([HEAD_LOW, HEAD_LOW], [0, 2], np.zeros((1, 2)), "pointers"),
    ([HEAD_LOW, HEAD_LOW], [0, -1], np.zeros((1, 2)), "pointers"),
])
def test_from_arrays_validates(head, ptr, tail, fragment):
    with pytest.raises(ValueError, match=fragment):
        InfoBuffer.from_arrays(np.array(head, dtype=np.uint64), ptr, tail)
