"""A compiled CPU kernel (numba) bit-identical to the NumPy specification.

The NumPy kernel (:data:`reversible.kernels.numpy_kernel`) makes a dozen
passes over the parameter vector per step: the rANS bijection of
:mod:`reversible.buffer` in several vectorised stages, then the fixed-point
conversions and checked additions of :mod:`reversible.fixedpoint`.  Here one
compiled loop does all of it element by element, with exactly the same integer
and float64 operations in the same order, so the results (``W``, ``V``, buffer
heads, pointers and tail words) agree bit for bit; ``tests/test_kernels.py``
checks this.

Design points:

* Elements are visited in *runs* of equal group index, so a run's alpha, n and
  symbol-table constants (``q``, ``rho``, reciprocals) are computed once;
  nothing per element is materialised.
* The forward symbol decode ``cf // d`` (``cf < 2**24``) uses a float64
  reciprocal and an exact one-step correction: no 64-bit division on the hot
  forward path.
* Tails stay in the :class:`~reversible.buffer.InfoBuffer` chunk list; the
  loop gets the chunks' data addresses (an int64 array, rebuilt only when the
  list changes) and views each chunk in place.  (A ``numba.typed.List``
  mirror works too but its methods compile for seconds in every process.)  When an element
  needs to push onto a full tail, the loop stops *before* changing that
  element, Python appends one chunk (never copying history) and the loop
  resumes there.
* Errors do not raise inside the loop: each element's flags (NaN/Inf,
  overflow per stage, empty pop) are committed to a status vector, and the
  wrapper raises the same exception class with the same message as the NumPy
  kernel, choosing the stage NumPy would have reported first.  As with the
  NumPy kernel, the state after an error is not usable.

``W`` and ``V`` are updated in place (and returned).
"""

import operator
import types as pytypes
import weakref

import numba
import numpy as np
from numba import njit, types
from numba.core.extending import intrinsic

from .buffer import BETA_ONE
from .errors import BufferUnderflowError, FixedPointOverflowError
from .fixedpoint import _remedy, _where, to_fixed, to_float

# status vector (int64) filled by the loops: a flag per checked stage, the first element
# (+1) whose pop found an empty tail, per buffer scheme, and whether a pop emptied a chunk
_BAD1, _BAD2, _BAD3, _BAD4, _UF_FUSED, _UF_TWO, _EMPTIED = range(7)
_STATUS_LEN = 7

_JIT = dict(nogil=True, cache=True, error_model="numpy", fastmath=False)

_TWO63 = 9223372036854775808.0     # 2.0**63
_U8, _U16, _U23, _U24, _U32, _U39 = (np.uint64(k) for k in (8, 16, 23, 24, 32, 39))
_MASK8, _MASK16U, _MASK24, _MASK32 = (np.uint64((1 << k) - 1) for k in (8, 16, 24, 32))
_HEAD_LOW = np.uint64(1 << 31)       # heads live in [2**31, 2**63)
_HEAD_HIGH = np.uint64(1 << 63)
_SPILL_TWO = np.uint64(1 << 47)      # two-step push of 16 raw bits spills above this
_HALF = BETA_ONE >> 1


# ------------------------------------------------------------------ tail access
@intrinsic
def _u32_ptr(typingctx, addr):
    """The int64 address ``addr`` as a ``uint32*`` (to view a chunk owned by Python)."""
    sig = types.CPointer(types.uint32)(types.int64)

    def codegen(context, builder, signature, args):
        return builder.inttoptr(args[0], context.get_value_type(types.CPointer(types.uint32)))

    return sig, codegen


@njit(**_JIT)
def _chunk_of(addrs, rows, N, p):
    """The chunk holding tail word ``p`` (viewed in place) and the word's row in it."""
    k = p // rows
    return numba.carray(_u32_ptr(addrs[k]), (rows, N)), p - k * rows


@njit(**_JIT)
def _pop(addrs, rows, N, ptr, i, h, status, which):
    """``h * 2**32 + (top word of element i)``; an empty tail is recorded in ``status[which]``."""
    p = ptr[i]
    if p == 0:
        if status[which] == 0:
            status[which] = i + 1
        return h << _U32
    p -= 1
    chunk, row = _chunk_of(addrs, rows, N, p)
    ptr[i] = p
    if row == 0:
        status[_EMPTIED] = 1
    return (h << _U32) | np.uint64(chunk[row, i])


# ------------------------------------------------------------- element helpers
@njit(**_JIT)
def _fix(x, scale):
    """``rint(x * scale)`` as int64 and whether it is valid (finite, |.| < 2**63).

    NaN, Inf and overflow all fail the one comparison; the wrapper re-runs
    the NumPy ``to_fixed`` to tell them apart in the message.
    """
    s = np.rint(x * scale)
    ok = abs(s) < _TWO63
    return (np.int64(s) if ok else np.int64(0)), ok


@njit(**_JIT)
def _decode(cf, q, rho, bound, inv_q1, inv_q):
    """Decode ``cf < 2**24`` in the ``(q, rho)`` table: (frequency d, cf - cumfreq, symbol u).

    Same result as ``buffer._decode_symbol``/``_freq_cum``: symbols below
    ``rho`` (cf below ``bound = rho*(q+1)``) have frequency q+1, the others q.
    The float64 reciprocal is off by at most one; the remainder test fixes it.
    """
    if cf < bound:
        d = q + 1
        a = cf
        inv = inv_q1
    else:
        d = q
        a = cf - rho
        inv = inv_q
    u = np.int64(np.float64(a) * inv)
    rem = a - u * d
    if rem < 0:
        u -= 1
        rem += d
    elif rem >= d:
        u += 1
        rem -= d
    return d, rem, u


@njit(**_JIT)
def _table(n):
    """Symbol table of ``n``: q, rho, the boundary rho*(q+1) and the reciprocals of q+1, q."""
    q = np.int64(1 << 24) // n
    rho = np.int64(1 << 24) - q * n
    return q, rho, rho * (q + 1), 1.0 / np.float64(q + 1), 1.0 / np.float64(q)


@njit(**_JIT)
def _freq_cum(u, q, rho):
    if u < rho:
        return q + 1, u * (q + 1)
    return q, u * q + rho


@njit(**_JIT)
def _floordiv_big_n(v, n, inv_n):
    """``(v // n, v % n)`` for int64 ``v`` and ``2**15 < n <= 2**16`` without a division."""
    qv = np.int64(np.floor(np.float64(v) * inv_n))    # within one of the true quotient
    r = v - qv * n                                     # exact: wrap-around cancels
    if r < 0:
        qv -= 1
        r += n
    elif r >= n:
        qv += 1
        r -= n
    return qv, r


@njit(**_JIT)
def _commit(status, ok1, acc2, ok3, acc4):
    if not ok1:
        status[_BAD1] = 1
    if acc2 < 0:
        status[_BAD2] = 1
    if not ok3:
        status[_BAD3] = 1
    if acc4 < 0:
        status[_BAD4] = 1


# --------------------------------------------------------- forward, per scheme
# Each loop: multiply V by n / 2**16 through the buffer, then
#   V <- V - fix((1 - beta) g),  W <- W + fix(alpha * V)
# (checked_add's overflow test: ((X ^ S) & (D ^ S)) < 0, OR-ed over the run).
# An element that must push onto a full tail is left untouched and its index
# returned, so the caller can add a chunk and resume there.

@njit(**_JIT)
def _fixed_point_forward(v, w, gi, omb, alpha, scale, inv_scale):
    """Scalars only (array arguments would cost reference counting per call)."""
    D1, ok1 = _fix(omb * gi, scale)
    vn = v - D1
    o2 = (v ^ vn) & ((-D1) ^ vn)
    D3, ok3 = _fix(alpha * (np.float64(vn) * inv_scale), scale)
    wn = w + D3
    o4 = (w ^ wn) & (D3 ^ wn)
    return vn, wn, ok1, o2, ok3, o4


@njit(**_JIT)
def _forward_identity(W, V, g, lo, hi, alpha, scale, inv_scale, status):
    ok1, acc2, ok3, acc4 = True, np.int64(0), True, np.int64(0)
    Vs, Ws, gs = V[lo:hi], W[lo:hi], g[lo:hi]      # slices: indices provably >= 0 (faster)
    for j in range(Vs.shape[0]):
        vn, wn, a, b, c, d = _fixed_point_forward(Vs[j], Ws[j], gs[j], 0.0, alpha, scale,
                                                  inv_scale)
        Vs[j] = vn
        Ws[j] = wn
        ok1 &= a
        acc2 |= b
        ok3 &= c
        acc4 |= d
    _commit(status, ok1, acc2, ok3, acc4)
    return -1


@njit(**_JIT)
def _forward_fused(W, V, g, lo, hi, n, alpha, head, ptr, addrs, rows, scale, inv_scale, status):
    # The hot loop: helpers are written out by hand (calls here measured 2-3x slower).
    q, rho, bound, inv_q1, inv_q = _table(n)
    omb = np.float64(BETA_ONE - n) * 2.0 ** -16
    capacity = addrs.shape[0] * rows
    N = V.shape[0]
    ok1, acc2, ok3, acc4 = True, np.int64(0), True, np.int64(0)
    Vs, Ws, gs, hs = V[lo:hi], W[lo:hi], g[lo:hi], head[lo:hi]
    for j in range(Vs.shape[0]):
        v = Vs[j]
        h = hs[j]
        # rANS: push the 16 low bits of v, pop u in [0, n) (as _decode)
        cf = (np.int64(h & _MASK8) << 16) | (v & 0xFFFF)
        if cf < bound:
            d = q + 1
            a = cf
            inv = inv_q1
        else:
            d = q
            a = cf - rho
            inv = inv_q
        u = np.int64(np.float64(a) * inv)
        rem = a - u * d
        if rem < 0:
            u -= 1
            rem += d
        elif rem >= d:
            u += 1
            rem -= d
        h = np.uint64(d) * (h >> _U8) + np.uint64(rem)
        if h >= _HEAD_HIGH:
            i = lo + j
            p = ptr[i]
            if p >= capacity:
                _commit(status, ok1, acc2, ok3, acc4)
                return i
            chunk, row = _chunk_of(addrs, rows, N, p)
            chunk[row, i] = np.uint32(h & _MASK32)
            ptr[i] = p + 1
            h >>= _U32
        hs[j] = h
        v = (v >> 16) * n + u
        # fixed point (as _fixed_point_forward)
        s1 = np.rint((omb * gs[j]) * scale)
        ok = abs(s1) < _TWO63
        ok1 &= ok
        D1 = np.int64(s1) if ok else np.int64(0)
        vn = v - D1
        acc2 |= (v ^ vn) & ((-D1) ^ vn)
        s3 = np.rint((alpha * (np.float64(vn) * inv_scale)) * scale)
        ok = abs(s3) < _TWO63
        ok3 &= ok
        D3 = np.int64(s3) if ok else np.int64(0)
        w = Ws[j]
        wn = w + D3
        acc4 |= (w ^ wn) & (D3 ^ wn)
        Vs[j] = vn
        Ws[j] = wn
    _commit(status, ok1, acc2, ok3, acc4)
    return -1


@njit(**_JIT)
def _forward_two_step(W, V, g, lo, hi, n, alpha, head, ptr, addrs, rows, scale, inv_scale,
                      status):
    q, rho, bound, inv_q1, inv_q = _table(n)
    omb = np.float64(BETA_ONE - n) * 2.0 ** -16
    capacity = addrs.shape[0] * rows
    N = V.shape[0]
    ok1, acc2, ok3, acc4 = True, np.int64(0), True, np.int64(0)
    Vs, Ws, gs, hs = V[lo:hi], W[lo:hi], g[lo:hi], head[lo:hi]
    for j in range(Vs.shape[0]):
        i = lo + j
        v = Vs[j]
        h = hs[j]
        if h >= _SPILL_TWO:                   # push 16 raw bits: make room first
            p = ptr[i]
            if p >= capacity:
                _commit(status, ok1, acc2, ok3, acc4)
                return i
            chunk, row = _chunk_of(addrs, rows, N, p)
            chunk[row, i] = np.uint32(h & _MASK32)
            ptr[i] = p + 1
            h >>= _U32
        h = (h << _U16) | np.uint64(v & 0xFFFF)
        cf = np.int64(h & _MASK24)            # pop u in [0, n) with total 2**24
        d, rem, u = _decode(cf, q, rho, bound, inv_q1, inv_q)
        h = np.uint64(d) * (h >> _U24) + np.uint64(rem)
        if h < _HEAD_LOW:
            h = _pop(addrs, rows, N, ptr, i, h, status, _UF_TWO)
        hs[j] = h
        vn, wn, a, b, c, e = _fixed_point_forward((v >> 16) * n + u, Ws[j], gs[j], omb, alpha,
                                                  scale, inv_scale)
        Vs[j] = vn
        Ws[j] = wn
        ok1 &= a
        acc2 |= b
        ok3 &= c
        acc4 |= e
    _commit(status, ok1, acc2, ok3, acc4)
    return -1


@njit(**_JIT)
def _forward_loop(W, V, g, starts, run_group, alpha_row, n_row, head, ptr, addrs, rows,
                  frac_bits, start, status):
    """One forward step over elements ``start..N-1``; returns -1, or the element to resume at."""
    scale = 2.0 ** frac_bits
    inv_scale = 2.0 ** -frac_bits
    for r in range(starts.shape[0] - 1):
        lo = max(starts[r], start)
        hi = starts[r + 1]
        if lo >= hi:
            continue
        n = n_row[run_group[r]]
        alpha = alpha_row[run_group[r]]
        if n == BETA_ONE:
            res = _forward_identity(W, V, g, lo, hi, alpha, scale, inv_scale, status)
        elif n > _HALF:
            res = _forward_fused(W, V, g, lo, hi, n, alpha, head, ptr, addrs, rows, scale,
                                 inv_scale, status)
        else:
            res = _forward_two_step(W, V, g, lo, hi, n, alpha, head, ptr, addrs, rows, scale,
                                    inv_scale, status)
        if res >= 0:
            return res
    return -1


# ------------------------------------------------------------------ reverse
@njit(**_JIT)
def _reverse_position_loop(W, V, starts, run_group, alpha_row, frac_bits, status):
    """``W -= fix(alpha * V)`` in place, with the checks of the NumPy kernel."""
    scale = 2.0 ** frac_bits
    inv_scale = 2.0 ** -frac_bits
    ok3, acc4 = True, np.int64(0)
    for r in range(starts.shape[0] - 1):
        alpha = alpha_row[run_group[r]]
        for i in range(starts[r], starts[r + 1]):
            D, ok = _fix(alpha * (np.float64(V[i]) * inv_scale), scale)
            w = W[i]
            wn = w - D
            ok3 &= ok
            acc4 |= (w ^ wn) & ((-D) ^ wn)
            W[i] = wn
    _commit(status, True, np.int64(0), ok3, acc4)


@njit(**_JIT)
def _reverse_velocity_loop(V, g, starts, run_group, n_row, head, ptr, addrs, rows, frac_bits,
                           start, status):
    """Undo the velocity update over elements ``start..N-1``; returns -1 or a resume index.

    Per element: ``V += fix((1 - beta) g)`` (checked), then the inverse of the
    buffer multiply.  Only the two-step scheme pushes in reverse; an element
    that finds its tail full is redone from the start after the caller grows
    the buffer (flags are OR-ed, so redoing is harmless).
    """
    scale = 2.0 ** frac_bits
    capacity = addrs.shape[0] * rows
    N = V.shape[0]
    ok1, acc2 = True, np.int64(0)
    for r in range(starts.shape[0] - 1):
        lo = max(starts[r], start)
        hi = starts[r + 1]
        if lo >= hi:
            continue
        n = n_row[run_group[r]]
        omb = np.float64(BETA_ONE - n) * 2.0 ** -16
        q, rho, bound, inv_q1, inv_q = _table(n)
        inv_n = 1.0 / np.float64(n)
        for i in range(lo, hi):
            D1, ok = _fix(omb * g[i], scale)
            v0 = V[i]
            v = v0 + D1
            ok1 &= ok
            acc2 |= (v0 ^ v) & (D1 ^ v)
            if n == BETA_ONE:
                V[i] = v
                continue
            h = head[i]
            if n > _HALF:                     # fused bijection
                qv, u = _floordiv_big_n(v, n, inv_n)
                f, c = _freq_cum(u, q, rho)
                fu = np.uint64(f)
                if h < (fu << _U23):
                    h = _pop(addrs, rows, N, ptr, i, h, status, _UF_FUSED)
                hq = h // fu
                cf = c + np.int64(h - hq * fu)
                head[i] = (hq << _U8) + np.uint64(cf >> 16)
                V[i] = (qv << 16) + (cf & 0xFFFF)
            else:                             # two steps: push u back, pop 16 raw bits
                qv = v // n
                u = v - qv * n
                f, c = _freq_cum(u, q, rho)
                fu = np.uint64(f)
                if h >= (fu << _U39):
                    p = ptr[i]
                    if p >= capacity:
                        _commit(status, ok1, acc2, True, np.int64(0))
                        return i
                    chunk, row = _chunk_of(addrs, rows, N, p)
                    chunk[row, i] = np.uint32(h & _MASK32)
                    ptr[i] = p + 1
                    h >>= _U32
                hq = h // fu
                h = (hq << _U24) + np.uint64(c) + (h - hq * fu)
                rbits = np.int64(h & _MASK16U)
                h >>= _U16
                if h < _HEAD_LOW:
                    h = _pop(addrs, rows, N, ptr, i, h, status, _UF_TWO)
                head[i] = h
                V[i] = (qv << 16) + rbits
    _commit(status, ok1, acc2, True, np.int64(0))
    return -1


@njit(**_JIT)
def _runs(group_index):
    """Boundaries and groups of the maximal runs of equal ``group_index``."""
    N = group_index.shape[0]
    count = 1
    for i in range(1, N):
        if group_index[i] != group_index[i - 1]:
            count += 1
    starts = np.empty(count + 1, np.int64)
    groups = np.empty(count, np.int64)
    starts[0] = 0
    groups[0] = group_index[0] if N else 0
    j = 1
    for i in range(1, N):
        if group_index[i] != group_index[i - 1]:
            starts[j] = i
            groups[j] = group_index[i]
            j += 1
    starts[count] = N
    return starts, groups


# ------------------------------------------------------------- Python wrappers
_RUN_CACHE = {}          # id(group_index) -> (group_index, starts, groups); a few entries
_MIRRORS = weakref.WeakKeyDictionary()   # InfoBuffer -> (chunk refs, chunk addresses)


def _plan(group_index):
    """Runs of ``group_index`` (cached by array identity; the array is kept alive)."""
    hit = _RUN_CACHE.get(id(group_index))
    if hit is not None and hit[0] is group_index:
        return hit[1], hit[2]
    gi = np.ascontiguousarray(group_index, dtype=np.int64)
    starts, groups = _runs(gi)
    if len(_RUN_CACHE) >= 16:
        _RUN_CACHE.pop(next(iter(_RUN_CACHE)))
    _RUN_CACHE[id(group_index)] = (group_index, starts, groups)
    return starts, groups


def _mirror(buffer):
    """Data addresses of ``buffer.chunks`` as int64 (cached until the chunk list changes)."""
    chunks = buffer.chunks
    entry = _MIRRORS.get(buffer)
    if entry is not None and len(entry[0]) == len(chunks) and all(map(operator.is_, entry[0], chunks)):
        return entry[1]
    shape = (buffer.chunk_rows, buffer.size)
    for c in chunks:
        if c.dtype != np.uint32 or c.shape != shape or not c.flags.c_contiguous or not c.flags.writeable:
            raise TypeError(f"information-buffer chunks must be writeable C-contiguous uint32{list(shape)} "
                            "arrays")
    addrs = np.array([c.__array_interface__["data"][0] for c in chunks], dtype=np.int64)
    _MIRRORS[buffer] = (list(chunks), addrs)    # the refs keep the chunks alive while cached
    return addrs


def _grow(buffer):
    """Append one chunk to ``buffer`` (never copies history); returns the new addresses."""
    buffer.reserve(buffer.capacity + 1)
    return _mirror(buffer)


def _release(buffer):
    """Drop trailing chunks no element uses any more (``InfoBuffer.release``'s rule)."""
    top = int(buffer.ptr.max()) if buffer.size else 0
    rows = buffer.chunk_rows
    while buffer.chunks and buffer.capacity - rows >= top:
        buffer.chunks.pop()


def _i64(x):
    return np.ascontiguousarray(x, dtype=np.int64)


def _f64(x):
    return np.ascontiguousarray(x, dtype=np.float64)


def _per_element(row, schedule):
    return row[0] if row.shape[0] == 1 else row[schedule.group_index]


_GRAD_STEP = "gradient step (1 - beta) * g"
_WEIGHT_STEP = "weight step alpha * v"


def _raise(status, stages, frac_bits, t):
    """Raise the error the NumPy kernel raises first; ``stages`` lists them in NumPy's order.

    A failed conversion is re-run through :func:`reversible.fixedpoint.to_fixed`
    on the stage's values, so its message (NaN count or largest magnitude) is
    NumPy's own.
    """
    for stage in stages:
        if stage[0] == "underflow":
            for which in (_UF_FUSED, _UF_TWO):      # NumPy handles fused elements first
                if status[which]:
                    raise BufferUnderflowError(
                        f"information buffer of element {int(status[which]) - 1} is empty but a "
                        "pop needs a word: the buffer is corrupt or the reverse pass does not "
                        "mirror the forward pass")
        elif stage[0] == "to_fixed" and status[stage[1]]:
            _, _, what, values = stage
            to_fixed(values(), frac_bits, what, t)
            raise AssertionError(f"numba kernel flagged {what} at step {t} but NumPy did not")
        elif stage[0] == "add" and status[stage[1]]:
            raise FixedPointOverflowError(f"{_where(stage[2], t)} overflows the fixed-point "
                                          "range; " + _remedy(frac_bits))


def forward_step(W, V, g, alpha_row, n_row, schedule, buffer, frac_bits, t):
    W, V, g = _i64(W), _i64(V), _f64(g)
    alpha_row, n_row = _f64(alpha_row), _i64(n_row)
    starts, groups = _plan(schedule.group_index)
    status = np.zeros(_STATUS_LEN, np.int64)
    addrs = _mirror(buffer)
    start = 0
    while True:
        start = _forward_loop(W, V, g, starts, groups, alpha_row, n_row, buffer.head, buffer.ptr,
                              addrs, buffer.chunk_rows, frac_bits, start, status)
        if start < 0:
            break
        addrs = _grow(buffer)
    if status[:_EMPTIED].any():
        _raise(status, (
            ("underflow",),
            ("to_fixed", _BAD1, _GRAD_STEP,
             lambda: (BETA_ONE - _per_element(n_row, schedule)) * 2.0 ** -16 * g),
            ("add", _BAD2, "velocity"),
            ("to_fixed", _BAD3, _WEIGHT_STEP,
             lambda: _per_element(alpha_row, schedule) * to_float(V, frac_bits)),
            ("add", _BAD4, "weights"),
        ), frac_bits, t)
    return W, V


def reverse_position(W, V, alpha_row, schedule, frac_bits, t):
    W, V, alpha_row = _i64(W), _i64(V), _f64(alpha_row)
    starts, groups = _plan(schedule.group_index)
    status = np.zeros(_STATUS_LEN, np.int64)
    _reverse_position_loop(W, V, starts, groups, alpha_row, frac_bits, status)
    if status[:_EMPTIED].any():
        _raise(status, (
            ("to_fixed", _BAD3, _WEIGHT_STEP,
             lambda: _per_element(alpha_row, schedule) * to_float(V, frac_bits)),
            ("add", _BAD4, "weights"),
        ), frac_bits, t)
    return W


def reverse_velocity(V, g, n_row, schedule, buffer, frac_bits, t):
    V, g, n_row = _i64(V), _f64(g), _i64(n_row)
    starts, groups = _plan(schedule.group_index)
    status = np.zeros(_STATUS_LEN, np.int64)
    addrs = _mirror(buffer)
    start = 0
    while True:
        start = _reverse_velocity_loop(V, g, starts, groups, n_row, buffer.head, buffer.ptr,
                                       addrs, buffer.chunk_rows, frac_bits, start, status)
        if start < 0:
            break
        addrs = _grow(buffer)
    if status[:_EMPTIED].any():
        _raise(status, (
            ("to_fixed", _BAD1, _GRAD_STEP,
             lambda: (BETA_ONE - _per_element(n_row, schedule)) * 2.0 ** -16 * g),
            ("add", _BAD2, "velocity"),
            ("underflow",),
        ), frac_bits, t)
    if status[_EMPTIED]:
        _release(buffer)
    return V


numba_kernel = pytypes.SimpleNamespace(
    name="numba",
    forward_step=forward_step,
    reverse_position=reverse_position,
    reverse_velocity=reverse_velocity,
    numba_version=numba.__version__,
)
