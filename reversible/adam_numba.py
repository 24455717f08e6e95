"""Adam's exact step compiled with numba, bit-identical to the NumPy specification.

The specification (:mod:`reversible.adam_rule`: ``numpy_forward_step``,
``numpy_undo_position``, ``numpy_undo_moments``) makes some thirty passes
over the parameter vector per step; here one compiled loop does each of them
element by element, with the same integer results and the same float64
roundings (the same expressions in the same order), so ``W``, ``M``, ``S``
and the buffer agree bit for bit (``tests/test_adam.py`` checks this).

The buffer arithmetic is the engine's (:mod:`reversible.numba_kernels`'
element primitives ``quot32``, ``floordivmod``, ``refill_word``,
``chunk_of``), composed here into the three multiplications of a step
(by ``beta1`` on ``m``, ``beta2`` on ``s``, the decay factor on ``w``; pushed
in that order, popped in the reverse order).  Blocks of one group run in
parallel for large steps.  A forward block stops before an element whose tail
might not hold the step's words (at most two per multiplication); Python
appends a chunk and the block resumes.  Errors never raise inside a loop:
each failing stage sets a bit, and the wrapper raises the error of the
earliest stage, built by the same functions as the specification's.
"""

import types as pytypes

import numpy as np
from numba import njit, prange

from . import numba_kernels as nk
from .adam_rule import (M_NAME, M_STEP, S_NAME, S_STEP, W_NAME, W_STEP, fix_error,
                        negative_s_error, overflow_error, step_constants)
from .buffer import BETA_ONE, HEAD_LOW, UNDO_OVERFLOW_MESSAGE
from .errors import FixedPointOverflowError

_JIT = nk.JIT_OPTIONS
_TWO63 = 2.0 ** 63
_INT64_MIN = np.int64(-(2 ** 63))
_MASK32 = np.uint64(0xFFFFFFFF)
_MASKW = np.uint64(0xFFFF)
_U32 = np.uint64(32)
_UW = np.uint64(16)
_HEAD_LOW = np.uint64(HEAD_LOW)
_MAX_WORDS = 6                 # two per multiplication, three multiplications per step
# status row per block: [flags, empty-tail element (+1) for 3 divides x 2 refills, emptied]
_FLAGS, _EMPTIED = 0, nk.STATUS_EMPTIED
_UF = (6, 7, 8, 9, 10, 11)     # (w, w), (s, s), (m, m): first / second refill of each divide
_STATUS_LEN = 12


# ------------------------------------------------------------- element helpers
# Inlined at the numba IR level: a call that passes arrays would otherwise cost atomic
# reference-count updates per element.
@njit(inline="always", **_JIT)
def _fix(x):
    """``(rint(x), finite, in range)``."""
    if not np.isfinite(x):
        return np.int64(0), False, True
    s = np.rint(x)
    if abs(s) >= _TWO63:
        return np.int64(0), True, False
    return np.int64(s), True, True


@njit(inline="always", **_JIT)
def _push(addrs, rows, N, ptr, i, word):
    """Push the low 16 bits of ``word`` onto element ``i``'s tail."""
    p = ptr[i]
    chunk, row = nk.chunk_of(addrs, rows, N, p)
    chunk[row, i] = np.uint16(word & _MASKW)
    ptr[i] = p + 1


@njit(inline="always", **_JIT)
def _mul_core(v, h, n, inv2_n):
    """:func:`_mul` for a head that needs no spill (``h < n 2**32``): arithmetic only."""
    if n >= BETA_ONE:
        return v, h
    nu = np.uint64(n)
    q, u = nk.quot32(h, n, nu, inv2_n)
    P = np.uint64(v & 0xFFFFFFFF) * nu + np.uint64(u)
    return (v >> 32) * n + np.int64(P >> _U32), (q << _U32) | (P & _MASK32)


@njit(inline="always", **_JIT)
def _div_core(v, h, n, inv_n, inv2_n):
    """:func:`_div` without its refills: ``(v, h, fits)``; the caller checks ``h < 2**48``."""
    if n >= BETA_ONE:
        return v, h, True
    nu = np.uint64(n)
    a, bq = nk.floordivmod(v, n, nu, inv_n, inv2_n)
    c, u = nk.quot32((np.uint64(bq) << _U32) | (h & _MASK32), n, nu, inv2_n)
    fits = (a >= -(1 << 31)) & (a < (1 << 31))
    return (a << 32) + np.int64(c), (h >> _U32) * nu + np.uint64(u), fits


# Each loop below comes in two parts: a hot loop over the elements that need no tail access
# (no spill going forward, no refill going back), with arithmetic only, which stops at the
# first element that does; and the full element step, with pushes / pops, for that element.
# A tail access inside the hot loop would make it several times slower.
#
# k: per-group constants [m_scale, s_scale, alpha, c1, c2, eps, one_minus_b1, one_minus_b2,
#    w_scale, 1 / m_scale, 1 / s_scale, 1 / n1, 1 / n2, 1 / nd, 2 / n1, 2 / n2, 2 / nd]
@njit(inline="always", **_JIT)
def _forward_tail(m, s, w, gi, k):
    """The element step after the three multiplies: additions and the position step."""
    flags = np.int64(0)
    d, finite, fits = _fix((k[6] * gi) * k[0])
    flags |= (0 if finite else 1) | (0 if fits else 2)
    m, wrapped = _added(m, d)
    flags |= 4 if wrapped else 0
    d, finite, fits = _fix((k[7] * (gi * gi)) * k[1])
    flags |= (0 if finite else 8) | (0 if fits else 16)
    s, wrapped = _added(s, d)
    flags |= 32 if wrapped else 0
    flags |= 64 if s < 0 else 0
    d, finite, fits = _fix(_increment(m, s, k) * k[8])
    flags |= (0 if finite else 128) | (0 if fits else 256)
    w, wrapped = _added(w, -d)
    flags |= 512 if (wrapped or d == _INT64_MIN) else 0
    return m, s, w, flags


@njit(**_JIT)
def _forward_hot(Ws, Ms, Ss, gs, hs, j, n1, n2, nd, k):
    """Step elements ``j, j+1, ...`` of a block while no multiply spills; returns the first
    element that would (or the block's length) and the flags."""
    flags = np.int64(0)
    l1, l2, ld = np.uint64(n1) << _U32, np.uint64(n2) << _U32, np.uint64(nd) << _U32
    while j < Ws.shape[0]:
        h = hs[j]
        if n1 < BETA_ONE and h >= l1:
            break
        m, h = _mul_core(Ms[j], h, n1, k[14])
        if n2 < BETA_ONE and h >= l2:
            break
        s, h = _mul_core(Ss[j], h, n2, k[15])
        if nd < BETA_ONE and h >= ld:
            break
        w, h = _mul_core(Ws[j], h, nd, k[16])
        m, s, w, f = _forward_tail(m, s, w, gs[j], k)
        flags |= f
        Ws[j], Ms[j], Ss[j], hs[j] = w, m, s, h
        j += 1
    return j, flags


@njit(**_JIT)
def _forward_element(W, M, S, g, i, n1, n2, nd, k, head, ptr, addrs, rows):
    """The full step of element ``i`` (multiplies that spill words to its tail)."""
    N = W.shape[0]
    h = head[i]
    m, h = _mul(M[i], h, n1, k[14], addrs, rows, N, ptr, i)
    s, h = _mul(S[i], h, n2, k[15], addrs, rows, N, ptr, i)
    w, h = _mul(W[i], h, nd, k[16], addrs, rows, N, ptr, i)
    m, s, w, flags = _forward_tail(m, s, w, g[i], k)
    W[i], M[i], S[i], head[i] = w, m, s, h
    return flags


@njit(**_JIT)
def _forward_range(W, M, S, g, lo, hi, n1, n2, nd, k, head, ptr, addrs, rows, status):
    """One forward step over elements ``lo..hi-1`` of one group; returns ``hi``, or the
    element whose tail might be full (left unchanged)."""
    capacity = addrs.shape[0] * rows
    Ws, Ms, Ss, gs, hs = W[lo:hi], M[lo:hi], S[lo:hi], g[lo:hi], head[lo:hi]
    j, flags = 0, np.int64(0)
    stop = hi
    while j < hi - lo:
        j, f = _forward_hot(Ws, Ms, Ss, gs, hs, j, n1, n2, nd, k)
        flags |= f
        if j >= hi - lo:
            break
        if ptr[lo + j] + _MAX_WORDS > capacity:
            stop = lo + j
            break
        flags |= _forward_element(W, M, S, g, lo + j, n1, n2, nd, k, head, ptr, addrs, rows)
        j += 1
    status[_FLAGS] |= flags
    return stop


def _forward_blocks_py(W, M, S, g, bhi, bgroup, pos, n1_row, n2_row, nd_row, consts, head, ptr,
                       addrs, rows, status):
    for b in prange(bhi.shape[0]):
        if pos[b] < bhi[b]:
            grp = bgroup[b]
            pos[b] = _forward_range(W, M, S, g, pos[b], bhi[b], n1_row[grp], n2_row[grp],
                                    nd_row[grp], consts[grp], head, ptr, addrs, rows, status[b])


@njit(inline="always", **_JIT)
def _position_head(Wi, Mi, Si, k):
    """``W + fix(increment)`` and its flags."""
    d, finite, fits = _fix(_increment(Mi, Si, k) * k[8])
    w, wrapped = _added(Wi, d)
    return w, (0 if finite else 1) | (0 if fits else 2) | (4 if wrapped else 0)


@njit(**_JIT)
def _undo_position_hot(Ws, Ms, Ss, hs, j, nd, k):
    flags = np.int64(0)
    while j < Ws.shape[0]:
        w, f = _position_head(Ws[j], Ms[j], Ss[j], k)
        w, h, ok = _div_core(w, hs[j], nd, k[13], k[16])
        if h < _HEAD_LOW:
            break
        flags |= f | (0 if ok else 8)
        Ws[j], hs[j] = w, h
        j += 1
    return j, flags


@njit(**_JIT)
def _undo_position_element(W, M, S, i, nd, k, head, ptr, addrs, rows, st):
    w, flags = _position_head(W[i], M[i], S[i], k)
    w, h, ok = _div(w, head[i], nd, k[13], k[16], addrs, rows, W.shape[0], ptr, i, st, 6, 7)
    W[i], head[i] = w, h
    return flags | (0 if ok else 8)


def _undo_position_py(W, M, S, blo, bhi, bgroup, nd_row, consts, head, ptr, addrs, rows, status):
    for b in prange(bhi.shape[0]):
        grp, lo, hi = bgroup[b], blo[b], bhi[b]
        k, nd = consts[grp], nd_row[grp]
        Ws, Ms, Ss, hs = W[lo:hi], M[lo:hi], S[lo:hi], head[lo:hi]
        st = status[b]
        flags, j = np.int64(0), 0
        while j < hi - lo:
            j, f = _undo_position_hot(Ws, Ms, Ss, hs, j, nd, k)
            flags |= f
            if j < hi - lo:
                flags |= _undo_position_element(W, M, S, lo + j, nd, k, head, ptr, addrs, rows,
                                                st)
                j += 1
        st[_FLAGS] |= flags


@njit(inline="always", **_JIT)
def _s_head(Si, gi, k):
    d, finite, fits = _fix((k[7] * (gi * gi)) * k[1])
    s, wrapped = _added(Si, -d)
    return s, (0 if finite else 1) | (0 if fits else 2) | (4 if (wrapped or d == _INT64_MIN) else 0)


@njit(inline="always", **_JIT)
def _m_head(Mi, gi, k):
    d, finite, fits = _fix((k[6] * gi) * k[0])
    m, wrapped = _added(Mi, -d)
    return m, (0 if finite else 16) | (0 if fits else 32) | (64 if (wrapped or d == _INT64_MIN) else 0)


@njit(**_JIT)
def _undo_moments_hot(Ms, Ss, gs, hs, j, n1, n2, k):
    flags = np.int64(0)
    while j < Ms.shape[0]:
        gi = gs[j]
        s, f1 = _s_head(Ss[j], gi, k)
        s, h, ok1 = _div_core(s, hs[j], n2, k[12], k[15])
        if h < _HEAD_LOW:
            break
        m, f2 = _m_head(Ms[j], gi, k)
        m, h, ok2 = _div_core(m, h, n1, k[11], k[14])
        if h < _HEAD_LOW:
            break
        flags |= f1 | f2 | (0 if ok1 else 8) | (0 if ok2 else 128)
        Ms[j], Ss[j], hs[j] = m, s, h
        j += 1
    return j, flags


@njit(**_JIT)
def _undo_moments_element(M, S, g, i, n1, n2, k, head, ptr, addrs, rows, st):
    N = M.shape[0]
    gi = g[i]
    s, f1 = _s_head(S[i], gi, k)
    s, h, ok1 = _div(s, head[i], n2, k[12], k[15], addrs, rows, N, ptr, i, st, 8, 9)
    m, f2 = _m_head(M[i], gi, k)
    m, h, ok2 = _div(m, h, n1, k[11], k[14], addrs, rows, N, ptr, i, st, 10, 11)
    M[i], S[i], head[i] = m, s, h
    return f1 | f2 | (0 if ok1 else 8) | (0 if ok2 else 128)


def _undo_moments_py(M, S, g, blo, bhi, bgroup, n1_row, n2_row, consts, head, ptr, addrs, rows,
                     status):
    for b in prange(bhi.shape[0]):
        grp, lo, hi = bgroup[b], blo[b], bhi[b]
        k, n1, n2 = consts[grp], n1_row[grp], n2_row[grp]
        Ms, Ss, gs, hs = M[lo:hi], S[lo:hi], g[lo:hi], head[lo:hi]
        st = status[b]
        flags, j = np.int64(0), 0
        while j < hi - lo:
            j, f = _undo_moments_hot(Ms, Ss, gs, hs, j, n1, n2, k)
            flags |= f
            if j < hi - lo:
                flags |= _undo_moments_element(M, S, g, lo + j, n1, n2, k, head, ptr, addrs,
                                               rows, st)
                j += 1
        st[_FLAGS] |= flags


_BODIES = (_forward_blocks_py, _undo_position_py, _undo_moments_py)
_SERIAL = {f.__name__: njit(**_JIT)(f) for f in _BODIES}
_PARALLEL = {f.__name__: njit(parallel=True, **_JIT)(f) for f in _BODIES}


def _loops(N):
    return _PARALLEL if N >= nk.PARALLEL_MIN else _SERIAL


@njit(inline="always", **_JIT)
def _mul(v, h, n, inv2_n, addrs, rows, N, ptr, i):
    """``v * n / 2**32`` through the element's rANS state ``h`` (the engine's pop-first multiply);
    ``inv2_n = 2 / n`` in float64."""
    if n >= BETA_ONE:
        return v, h
    nu = np.uint64(n)
    limit = nu << _U32
    if h >= limit:
        _push(addrs, rows, N, ptr, i, h)
        h >>= _UW
        if h >= limit:
            _push(addrs, rows, N, ptr, i, h)
            h >>= _UW
    return _mul_core(v, h, n, inv2_n)


@njit(inline="always", **_JIT)
def _div(v, h, n, inv_n, inv2_n, addrs, rows, N, ptr, i, status, uf1, uf2):
    """Inverse of :func:`_mul` (``inv_n = 1 / n``, ``inv2_n = 2 / n``); returns ``(v, h, fits)``."""
    if n >= BETA_ONE:
        return v, h, True
    v, h, fits = _div_core(v, h, n, inv_n, inv2_n)
    if h < _HEAD_LOW:
        h = nk.refill_word(addrs, rows, N, ptr, i, h, status, uf1)
        if h < _HEAD_LOW:
            h = nk.refill_word(addrs, rows, N, ptr, i, h, status, uf2)
    return v, h, fits


@njit(inline="always", **_JIT)
def _added(x, d):
    """``x + d`` and whether it wrapped around (checked_add's test)."""
    s = x + d
    return s, ((x ^ s) & (d ^ s)) < 0


@njit(inline="always", **_JIT)
def _increment(Mi, Si, k):
    """The position increment, as :func:`reversible.adam_rule.position_increment`."""
    m = np.float64(Mi) * k[9]             # = M / 2**f exactly (a power of two)
    s = np.float64(Si) * k[10]
    return k[2] * (m / k[3]) / (np.sqrt(s / k[4]) + k[5])


# ------------------------------------------------------------- Python wrappers
def _raise_first(flags, errors):
    """Raise the error of the lowest set bit of ``flags`` (``errors[bit]``)."""
    for bit, make in enumerate(errors):
        if flags & (1 << bit):
            raise make()


def _raise_undo(flags, step, name, t, status, slots):
    """The errors of one undone update, in NumPy's order: its increment's conversion (bits
    0-1), the subtraction's overflow (bit 2), an empty tail (``slots``), the division's
    overflow (bit 3)."""
    _raise_first(flags & 7, (lambda: fix_error(step, t, False), lambda: fix_error(step, t, True),
                             lambda: overflow_error(name, t)))
    nk.raise_underflow(status, slots)
    if flags & 8:
        raise FixedPointOverflowError(UNDO_OVERFLOW_MESSAGE)


def _arrays(state, N):
    for name in ("W", "M", "S"):
        x = getattr(state, name)
        if not (isinstance(x, np.ndarray) and x.dtype == np.int64 and x.flags.c_contiguous):
            setattr(state, name, np.ascontiguousarray(x, dtype=np.int64))
    nk.check_buffer(state.buffer, N)


def forward_step(state, g, t):
    N = state.W.size
    _arrays(state, N)
    g = np.ascontiguousarray(g, dtype=np.float64)
    (n1, n2, nd), consts = step_constants(state, t)
    lo, hi, groups = nk.block_layout(state.schedule, N, (n1, n2, nd), state.M, state.S, g)
    status = np.zeros((lo.size, _STATUS_LEN), np.int64)
    pos = lo.copy()
    buf = state.buffer
    addrs = nk.chunk_addresses(buf)
    run = _loops(N)["_forward_blocks_py"]
    while True:
        run(state.W, state.M, state.S, g, hi, groups, pos, n1, n2, nd, consts, buf.head, buf.ptr,
            addrs, buf.chunk_rows, status)
        if np.array_equal(pos, hi):
            break
        addrs = nk.grow_buffer(buf)
    flags = int(np.bitwise_or.reduce(status[:, _FLAGS])) if status.size else 0
    _raise_first(flags, (
        lambda: fix_error(M_STEP, t, False), lambda: fix_error(M_STEP, t, True),
        lambda: overflow_error(M_NAME, t),
        lambda: fix_error(S_STEP, t, False), lambda: fix_error(S_STEP, t, True),
        lambda: overflow_error(S_NAME, t), lambda: negative_s_error(t),
        lambda: fix_error(W_STEP, t, False), lambda: fix_error(W_STEP, t, True),
        lambda: overflow_error(W_NAME, t)))


def undo_position(state, t):
    N = state.W.size
    _arrays(state, N)
    (_, _, nd), consts = step_constants(state, t)
    lo, hi, groups = nk.block_layout(state.schedule, N, (nd,), state.M, state.S)
    status = np.zeros((lo.size, _STATUS_LEN), np.int64)
    buf = state.buffer
    _loops(N)["_undo_position_py"](state.W, state.M, state.S, lo, hi, groups, nd, consts,
                                   buf.head, buf.ptr, nk.chunk_addresses(buf), buf.chunk_rows,
                                   status)
    flags = int(np.bitwise_or.reduce(status[:, _FLAGS])) if status.size else 0
    _raise_undo(flags, W_STEP, W_NAME, t, status, (6, 7))
    if status[:, _EMPTIED].any():
        buf.release()


def undo_moments(state, g, t):
    N = state.W.size
    _arrays(state, N)
    g = np.ascontiguousarray(g, dtype=np.float64)
    (n1, n2, _), consts = step_constants(state, t)
    lo, hi, groups = nk.block_layout(state.schedule, N, (n1, n2), state.M, state.S, g)
    status = np.zeros((lo.size, _STATUS_LEN), np.int64)
    buf = state.buffer
    _loops(N)["_undo_moments_py"](state.M, state.S, g, lo, hi, groups, n1, n2, consts, buf.head,
                                  buf.ptr, nk.chunk_addresses(buf), buf.chunk_rows, status)
    flags = int(np.bitwise_or.reduce(status[:, _FLAGS])) if status.size else 0
    _raise_undo(flags, S_STEP, S_NAME, t, status, (8, 9))
    _raise_undo(flags >> 4, M_STEP, M_NAME, t, status, (10, 11))
    if status[:, _EMPTIED].any():
        buf.release()


def _adjoint():
    from . import adam_adjoint_numba
    return adam_adjoint_numba


numba_adam_kernel = pytypes.SimpleNamespace(name="numba", forward_step=forward_step,
                                            undo_position=undo_position,
                                            undo_moments=undo_moments, adjoint=_adjoint())
