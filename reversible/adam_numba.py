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
from .errors import BufferUnderflowError, FixedPointOverflowError

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
@njit(**_JIT)
def _fix(x):
    """``(rint(x), finite, in range)``."""
    if not np.isfinite(x):
        return np.int64(0), False, True
    s = np.rint(x)
    if abs(s) >= _TWO63:
        return np.int64(0), True, False
    return np.int64(s), True, True


@njit(**_JIT)
def _push(addrs, rows, N, ptr, i, word):
    """Push the low 16 bits of ``word`` onto element ``i``'s tail."""
    p = ptr[i]
    chunk, row = nk.chunk_of(addrs, rows, N, p)
    chunk[row, i] = np.uint16(word & _MASKW)
    ptr[i] = p + 1


@njit(**_JIT)
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
    q, u = nk.quot32(h, n, nu, inv2_n)
    P = np.uint64(v & 0xFFFFFFFF) * nu + np.uint64(u)
    return (v >> 32) * n + np.int64(P >> _U32), (q << _U32) | (P & _MASK32)


@njit(**_JIT)
def _div(v, h, n, inv_n, inv2_n, addrs, rows, N, ptr, i, status, uf1, uf2):
    """Inverse of :func:`_mul` (``inv_n = 1 / n``, ``inv2_n = 2 / n``); returns ``(v, h, fits)``."""
    if n >= BETA_ONE:
        return v, h, True
    nu = np.uint64(n)
    a, bq = nk.floordivmod(v, n, nu, inv_n, inv2_n)
    c, u = nk.quot32((np.uint64(bq) << _U32) | (h & _MASK32), n, nu, inv2_n)
    fits = (a >= -(1 << 31)) & (a < (1 << 31))
    v = (a << 32) + np.int64(c)
    h = (h >> _U32) * nu + np.uint64(u)
    if h < _HEAD_LOW:
        h = nk.refill_word(addrs, rows, N, ptr, i, h, status, uf1)
        if h < _HEAD_LOW:
            h = nk.refill_word(addrs, rows, N, ptr, i, h, status, uf2)
    return v, h, fits


@njit(**_JIT)
def _added(x, d):
    """``x + d`` and whether it wrapped around (checked_add's test)."""
    s = x + d
    return s, ((x ^ s) & (d ^ s)) < 0


@njit(**_JIT)
def _increment(Mi, Si, k):
    """The position increment, as :func:`reversible.adam_rule.position_increment`."""
    m = np.float64(Mi) * k[9]             # = M / 2**f exactly (a power of two)
    s = np.float64(Si) * k[10]
    return k[2] * (m / k[3]) / (np.sqrt(s / k[4]) + k[5])


# k: per-group constants [m_scale, s_scale, alpha, c1, c2, eps, one_minus_b1, one_minus_b2,
#    w_scale, 1 / m_scale, 1 / s_scale, 1 / n1, 1 / n2, 1 / nd, 2 / n1, 2 / n2, 2 / nd]
@njit(**_JIT)
def _forward_range(W, M, S, g, lo, hi, n1, n2, nd, k, head, ptr, addrs, rows, status):
    N = W.shape[0]
    capacity = addrs.shape[0] * rows
    flags = np.int64(0)
    # slices: indices provably >= 0, so numba emits no negative-index handling per access
    Ws, Ms, Ss, gs, hs, ps = W[lo:hi], M[lo:hi], S[lo:hi], g[lo:hi], head[lo:hi], ptr[lo:hi]
    stop = hi
    for j in range(Ws.shape[0]):
        if ps[j] + _MAX_WORDS > capacity:
            stop = lo + j
            break
        i = lo + j
        h = hs[j]
        gi = gs[j]
        m, h = _mul(Ms[j], h, n1, k[14], addrs, rows, N, ptr, i)
        d, finite, fits = _fix((k[6] * gi) * k[0])
        flags |= (0 if finite else 1) | (0 if fits else 2)
        m, wrapped = _added(m, d)
        flags |= 4 if wrapped else 0
        s, h = _mul(Ss[j], h, n2, k[15], addrs, rows, N, ptr, i)
        d, finite, fits = _fix((k[7] * (gi * gi)) * k[1])
        flags |= (0 if finite else 8) | (0 if fits else 16)
        s, wrapped = _added(s, d)
        flags |= 32 if wrapped else 0
        flags |= 64 if s < 0 else 0
        w, h = _mul(Ws[j], h, nd, k[16], addrs, rows, N, ptr, i)
        d, finite, fits = _fix(_increment(m, s, k) * k[8])
        flags |= (0 if finite else 128) | (0 if fits else 256)
        w, wrapped = _added(w, -d)
        flags |= 512 if (wrapped or d == _INT64_MIN) else 0
        Ws[j], Ms[j], Ss[j], hs[j] = w, m, s, h
    status[_FLAGS] |= flags
    return stop


def _forward_blocks_py(W, M, S, g, bhi, bgroup, pos, n1_row, n2_row, nd_row, consts, head, ptr,
                       addrs, rows, status):
    for b in prange(bhi.shape[0]):
        if pos[b] < bhi[b]:
            grp = bgroup[b]
            pos[b] = _forward_range(W, M, S, g, pos[b], bhi[b], n1_row[grp], n2_row[grp],
                                    nd_row[grp], consts[grp], head, ptr, addrs, rows, status[b])


def _undo_position_py(W, M, S, blo, bhi, bgroup, nd_row, consts, head, ptr, addrs, rows, status):
    for b in prange(bhi.shape[0]):
        grp, lo, hi = bgroup[b], blo[b], bhi[b]
        k, nd, N = consts[grp], nd_row[grp], W.shape[0]
        Ws, Ms, Ss, hs = W[lo:hi], M[lo:hi], S[lo:hi], head[lo:hi]
        flags = np.int64(0)
        for j in range(Ws.shape[0]):
            d, finite, fits = _fix(_increment(Ms[j], Ss[j], k) * k[8])
            flags |= (0 if finite else 1) | (0 if fits else 2)
            w, wrapped = _added(Ws[j], d)
            flags |= 4 if wrapped else 0
            w, h, ok = _div(w, hs[j], nd, k[13], k[16], addrs, rows, N, ptr, lo + j, status[b], 6, 7)
            flags |= 0 if ok else 8
            Ws[j], hs[j] = w, h
        status[b, _FLAGS] |= flags


def _undo_moments_py(M, S, g, blo, bhi, bgroup, n1_row, n2_row, consts, head, ptr, addrs, rows,
                     status):
    for b in prange(bhi.shape[0]):
        grp, lo, hi = bgroup[b], blo[b], bhi[b]
        k, n1, n2, N = consts[grp], n1_row[grp], n2_row[grp], M.shape[0]
        Ms, Ss, gs, hs = M[lo:hi], S[lo:hi], g[lo:hi], head[lo:hi]
        flags = np.int64(0)
        for j in range(Ms.shape[0]):
            i = lo + j
            gi = gs[j]
            d, finite, fits = _fix((k[7] * (gi * gi)) * k[1])
            flags |= (0 if finite else 1) | (0 if fits else 2)
            s, wrapped = _added(Ss[j], -d)
            flags |= 4 if (wrapped or d == _INT64_MIN) else 0
            s, h, ok = _div(s, hs[j], n2, k[12], k[15], addrs, rows, N, ptr, i, status[b], 8, 9)
            flags |= 0 if ok else 8
            d, finite, fits = _fix((k[6] * gi) * k[0])
            flags |= (0 if finite else 16) | (0 if fits else 32)
            m, wrapped = _added(Ms[j], -d)
            flags |= 64 if (wrapped or d == _INT64_MIN) else 0
            m, h, ok = _div(m, h, n1, k[11], k[14], addrs, rows, N, ptr, i, status[b], 10, 11)
            flags |= 0 if ok else 128
            Ms[j], Ss[j], hs[j] = m, s, h
        status[b, _FLAGS] |= flags


_BODIES = (_forward_blocks_py, _undo_position_py, _undo_moments_py)
_SERIAL = {f.__name__: njit(**_JIT)(f) for f in _BODIES}
_PARALLEL = {f.__name__: njit(parallel=True, **_JIT)(f) for f in _BODIES}


def _loops(N):
    return _PARALLEL if N >= nk.PARALLEL_MIN else _SERIAL


# ------------------------------------------------------------- Python wrappers
def _raise_first(flags, errors):
    """Raise the error of the lowest set bit of ``flags`` (``errors[bit]``)."""
    for bit, make in enumerate(errors):
        if flags & (1 << bit):
            raise make()


def _underflow(status, slots):
    for slot in slots:
        hit = status[:, slot]
        hit = hit[hit > 0]
        if hit.size:
            raise BufferUnderflowError(
                f"information buffer of element {int(hit.min()) - 1} is empty but a pop "
                "needs a word: the buffer is corrupt or the reverse pass does not mirror the "
                "forward pass")


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
    _raise_first(flags & 7, (lambda: fix_error(W_STEP, t, False),
                             lambda: fix_error(W_STEP, t, True), lambda: overflow_error(W_NAME, t)))
    _underflow(status, (6, 7))
    if flags & 8:
        raise FixedPointOverflowError(UNDO_OVERFLOW_MESSAGE)
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
    _raise_first(flags & 7, (lambda: fix_error(S_STEP, t, False),
                             lambda: fix_error(S_STEP, t, True), lambda: overflow_error(S_NAME, t)))
    _underflow(status, (8, 9))
    if flags & 8:
        raise FixedPointOverflowError(UNDO_OVERFLOW_MESSAGE)
    _raise_first(flags >> 4 & 7, (lambda: fix_error(M_STEP, t, False),
                                  lambda: fix_error(M_STEP, t, True),
                                  lambda: overflow_error(M_NAME, t)))
    _underflow(status, (10, 11))
    if flags & 128:
        raise FixedPointOverflowError(UNDO_OVERFLOW_MESSAGE)
    if status[:, _EMPTIED].any():
        buf.release()


numba_adam_kernel = pytypes.SimpleNamespace(name="numba", forward_step=forward_step,
                                            undo_position=undo_position,
                                            undo_moments=undo_moments)
