"""A compiled CPU kernel (numba) bit-identical to the NumPy specification.

The NumPy kernel (:data:`reversible.kernels.numpy_kernel`) makes a dozen
passes over the parameter vector per step: the rANS bijection of
:mod:`reversible.buffer` in vectorised stages, then the conversions and
checked additions of :mod:`reversible.fixedpoint`.  Here one compiled loop
does a whole step element by element with the same integer results and the
same float64 roundings, so ``W``, ``V``, buffer heads, pointers and tail words
agree bit for bit (``tests/test_kernels.py`` checks this).

Design points:

* Elements are visited in *runs* of equal group index; a run's alpha, n and
  symbol-table constants are computed once, nothing per element is built.
* No hardware division on the forward path nor in the fused reverse: the
  symbol of ``cf < 2**24`` is ``max(floor(cf / (q+1)), floor((cf - rho) / q))``,
  each floor taken from a float64 product with a reciprocal rounded *up* by
  ``2**-50`` (exact for numerators below ``2**49``; see :func:`_reciprocal_up`);
  the reverse divides 64-bit heads in two such 32-bit digits.
* Fixed-point roundings: ``rint(((1 - beta) g) * 2**F)`` equals
  ``rint(g * ((1 - beta) 2**F))`` and ``rint((alpha (V 2**-F)) 2**F)`` equals
  ``rint(alpha V)`` bit for bit (scaling by a power of two commutes with
  rounding; where a product would be subnormal both sides round to 0).
* Tails stay in the :class:`~reversible.buffer.InfoBuffer` chunk list; the
  loops get the chunks' data addresses (rebuilt only when the list changes)
  and view each chunk in place.  Forward pushes (about 0.5 % of
  element-steps at beta = 0.9) are queued in a small scratch list and written
  after the run; when a tail is full, control returns to Python, which appends
  one chunk (never copying history) and resumes.
* Errors never raise inside a loop: the loops OR flags into a status vector
  and the wrapper replays the failing stage with the NumPy functions
  (:func:`~reversible.fixedpoint.to_fixed`, ``checked_add``), so the
  exception class and message are exactly NumPy's.  As with the NumPy
  kernel, the state after an error is not usable.

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
from .fixedpoint import _remedy, _where, checked_add, to_fixed, to_float

# status vector (int64): any fixed-point problem, velocity-add overflow (reverse),
# first element (+1) whose pop found an empty tail per scheme, a pop emptied a chunk
_BAD, _BAD_VEL, _UF_FUSED, _UF_TWO, _EMPTIED = range(5)
_STATUS_LEN = 5



def _cache_probe():
    return 0


def _caching_possible():
    """Whether numba can cache this module's compiled code (beside it or in the user's cache dir)."""
    try:
        njit(cache=True)(_cache_probe)      # finds a cache directory now; compiles nothing
    except RuntimeError:    # read-only install and no writable cache directory
        import warnings
        warnings.warn("reversible: numba cannot cache the compiled kernel (read-only install and no "
                      "writable cache directory); it is compiled in every process. Set NUMBA_CACHE_DIR "
                      "to a writable directory to cache it.", RuntimeWarning, stacklevel=2)
        return False
    return True


_JIT = dict(nogil=True, cache=_caching_possible(), error_model="numpy", fastmath=False)

_TWO63 = 9223372036854775808.0     # 2.0**63
_U8, _U16, _U23, _U24, _U32, _U39 = (np.uint64(k) for k in (8, 16, 23, 24, 32, 39))
_MASK8, _MASK16U, _MASK24, _MASK32 = (np.uint64((1 << k) - 1) for k in (8, 16, 24, 32))
_HEAD_LOW = np.uint64(1 << 31)       # heads live in [2**31, 2**63)
_HEAD_HIGH = np.uint64(1 << 63)
_SPILL_TWO = np.uint64(1 << 47)      # two-step push of 16 raw bits spills above this
_HALF = BETA_ONE >> 1
_SCRATCH = 1 << 16                   # queued forward pushes before a flush


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


@njit(**_JIT)
def _flush(spill, k, ptr, addrs, rows, N):
    """Write ``k`` queued pushes ``(i << 32) | word``; False (nothing written) if a tail is full."""
    capacity = addrs.shape[0] * rows
    for e in range(k):
        if ptr[spill[e] >> 32] >= capacity:
            return False
    for e in range(k):
        i = spill[e] >> 32
        p = ptr[i]
        chunk, row = _chunk_of(addrs, rows, N, p)
        chunk[row, i] = np.uint32(spill[e] & 0xFFFFFFFF)
        ptr[i] = p + 1
    return True


# ----------------------------------------------------------------- constants
@njit(**_JIT)
def _reciprocal_up(d):
    """``1/d`` rounded up by about ``2**-50`` relative.

    For integers ``0 <= x < 2**49`` and ``d >= 1``, ``int(x * _reciprocal_up(d))``
    is exactly ``x // d``: with the three roundings the product lies in
    ``(x/d, x/d (1 + 2**-49.4))``, and a non-integer ``x/d`` is at least
    ``1/d`` below the next integer.
    """
    return (1.0 / np.float64(d)) * (1.0 + 2.0 ** -50)


@njit(**_JIT)
def _divmod_u64(h, f, rf):
    """``(h // f, h % f)`` for uint64 ``h`` and ``f <= 2**17`` (``rf = _reciprocal_up(f)``).

    Long division in two 32-bit digits, each quotient from a float64 product
    (numerators below ``2**49``): no hardware 64-bit division.
    """
    hi = np.int64(h >> _U32)
    lo = np.int64(h & _MASK32)
    q1 = np.int64(np.float64(hi) * rf)
    x2 = ((hi - q1 * f) << 32) | lo
    q2 = np.int64(np.float64(x2) * rf)
    return (np.uint64(q1) << _U32) + np.uint64(q2), x2 - q2 * f


@njit(**_JIT)
def _table(n):
    """Symbol table of ``n`` (total 2**24): ``q, rho`` and reciprocals of ``q + 1`` and ``q``."""
    q = np.int64(1 << 24) // n
    rho = np.int64(1 << 24) - q * n
    return q, rho, _reciprocal_up(q + 1), _reciprocal_up(q)


@njit(**_JIT)
def _decode(cf, q, rho, iq1, iq):
    """Symbol ``u`` of ``0 <= cf < 2**24``, its frequency and ``cf - cumfreq(u)``.

    Symbols below ``rho`` have frequency ``q + 1``, the others ``q`` (as
    ``buffer._decode_symbol``); ``max`` picks the right one of the two
    candidate quotients without a branch.
    """
    u = max(np.int64(np.float64(cf) * iq1), np.int64(np.float64(cf - rho) * iq))
    return u, q + (u < rho), cf - u * q - min(u, rho)


@njit(**_JIT)
def _freq_cum(u, q, rho):
    if u < rho:
        return q + 1, u * (q + 1)
    return q, u * q + rho


@njit(**_JIT)
def _fix(x):
    """``rint(x)`` as int64 and whether it is valid (finite, ``|.| < 2**63``)."""
    s = np.rint(x)
    ok = abs(s) < _TWO63
    return (np.int64(s) if ok else np.int64(0)), ok


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


# ------------------------------------------------------------------ forward
# Each loop: V <- V * n / 2**16 through the buffer, then
#   V <- V - fix((1 - beta) g),  W <- W + fix(alpha V)
# with checked_add's overflow test ((X ^ S) & (D ^ S)) < 0 OR-ed into `acc`.
# Loops run over slices so indices are provably >= 0 (numba otherwise emits
# negative-index handling on every access, measured 2-3x slower), and helpers
# take scalars only (array arguments cost reference counting per call).

@njit(**_JIT)
def _forward_identity(W, V, g, lo, hi, alpha, status):
    ok, acc = True, np.int64(0)
    Vs, Ws, gs = V[lo:hi], W[lo:hi], g[lo:hi]
    for j in range(Vs.shape[0]):
        v = Vs[j]
        D1, ok1 = _fix(gs[j] * 0.0)
        vn = v - D1
        D3, ok3 = _fix(alpha * np.float64(vn))
        w = Ws[j]
        wn = w + D3
        ok &= ok1 & ok3
        acc |= ((v ^ vn) & ((-D1) ^ vn)) | ((w ^ wn) & (D3 ^ wn))
        Vs[j] = vn
        Ws[j] = wn
    if not ok or acc < 0:
        status[_BAD] = 1


@njit(**_JIT)
def _forward_fused(W, V, g, lo, hi, n, alpha, c1, head, status, spill):
    """Fused bijection (1/2 < beta < 1) over ``lo..hi-1``; returns (next element, queued pushes).

    Stops early when the push queue ``spill`` is full.  The hot loop of the
    package: everything is written out inline.
    """
    q, rho, iq1, iq = _table(n)
    ok, acc = True, np.int64(0)
    Vs, Ws, gs, hs = V[lo:hi], W[lo:hi], g[lo:hi], head[lo:hi]
    cap = spill.shape[0]
    k = 0
    done = Vs.shape[0]
    for j in range(Vs.shape[0]):
        v = Vs[j]
        h = hs[j]
        # rANS: push the 16 low bits of v, pop u in [0, n), one bijection of total 2**24
        cf = (np.int64(h & _MASK8) << 16) | (v & 0xFFFF)
        u = max(np.int64(np.float64(cf) * iq1), np.int64(np.float64(cf - rho) * iq))
        h = np.uint64(q + (u < rho)) * (h >> _U8) + np.uint64(cf - u * q - min(u, rho))
        full = False
        if h >= _HEAD_HIGH:
            spill[k] = ((lo + j) << 32) | np.int64(h & _MASK32)
            k += 1
            h >>= _U32
            full = k == cap
        hs[j] = h
        v = (v >> 16) * n + u
        # fixed point
        s1 = np.rint(gs[j] * c1)
        ok1 = abs(s1) < _TWO63
        D1 = np.int64(s1) if ok1 else np.int64(0)
        vn = v - D1
        s3 = np.rint(alpha * np.float64(vn))
        ok3 = abs(s3) < _TWO63
        D3 = np.int64(s3) if ok3 else np.int64(0)
        w = Ws[j]
        wn = w + D3
        ok &= ok1 & ok3
        acc |= ((v ^ vn) & ((-D1) ^ vn)) | ((w ^ wn) & (D3 ^ wn))
        Vs[j] = vn
        Ws[j] = wn
        if full:
            done = j + 1
            break
    if not ok or acc < 0:
        status[_BAD] = 1
    return lo + done, k


@njit(**_JIT)
def _forward_two_step(W, V, g, lo, hi, n, alpha, c1, head, ptr, addrs, rows, status):
    """Two steps (beta <= 1/2) over ``lo..hi-1``; returns -1, or the element whose tail is full.

    Push and pop can hit the same tail within one element, so pushes are
    written at once; a full tail stops the loop *before* that element changes.
    """
    q, rho, iq1, iq = _table(n)
    capacity = addrs.shape[0] * rows
    N = V.shape[0]
    ok, acc = True, np.int64(0)
    Vs, Ws, gs, hs = V[lo:hi], W[lo:hi], g[lo:hi], head[lo:hi]
    stopped = -1
    for j in range(Vs.shape[0]):
        v = Vs[j]
        h = hs[j]
        if h >= _SPILL_TWO:                   # push 16 raw bits: make room first
            i = lo + j
            p = ptr[i]
            if p >= capacity:
                stopped = i
                break
            chunk, row = _chunk_of(addrs, rows, N, p)
            chunk[row, i] = np.uint32(h & _MASK32)
            ptr[i] = p + 1
            h >>= _U32
        h = (h << _U16) | np.uint64(v & 0xFFFF)
        u, f, rem = _decode(np.int64(h & _MASK24), q, rho, iq1, iq)    # pop u, total 2**24
        h = np.uint64(f) * (h >> _U24) + np.uint64(rem)
        if h < _HEAD_LOW:
            h = _pop(addrs, rows, N, ptr, lo + j, h, status, _UF_TWO)
        hs[j] = h
        v = (v >> 16) * n + u
        D1, ok1 = _fix(gs[j] * c1)
        vn = v - D1
        D3, ok3 = _fix(alpha * np.float64(vn))
        w = Ws[j]
        wn = w + D3
        ok &= ok1 & ok3
        acc |= ((v ^ vn) & ((-D1) ^ vn)) | ((w ^ wn) & (D3 ^ wn))
        Vs[j] = vn
        Ws[j] = wn
    if not ok or acc < 0:
        status[_BAD] = 1
    return stopped


@njit(**_JIT)
def _forward_loop(W, V, g, starts, run_group, alpha_row, n_row, head, ptr, addrs, rows,
                  frac_bits, status, resume, spill):
    """One forward step; returns True when done, False when a tail needs another chunk.

    ``resume = [first element to process, pushes still queued in spill]``
    carries the position across calls.
    """
    N = V.shape[0]
    scale = 2.0 ** frac_bits
    if resume[1] > 0:
        if not _flush(spill, resume[1], ptr, addrs, rows, N):
            return False
        resume[1] = 0
    for r in range(starts.shape[0] - 1):
        lo = max(starts[r], resume[0])
        hi = starts[r + 1]
        if lo >= hi:
            continue
        n = n_row[run_group[r]]
        alpha = alpha_row[run_group[r]]
        c1 = (np.float64(BETA_ONE - n) * 2.0 ** -16) * scale      # (1 - beta) 2**F, exact
        if n == BETA_ONE:
            _forward_identity(W, V, g, lo, hi, alpha, status)
        elif n > _HALF:
            while lo < hi:
                lo, k = _forward_fused(W, V, g, lo, hi, n, alpha, c1, head, status, spill)
                if k > 0 and not _flush(spill, k, ptr, addrs, rows, N):
                    resume[0] = lo
                    resume[1] = k
                    return False
        else:
            stopped = _forward_two_step(W, V, g, lo, hi, n, alpha, c1, head, ptr, addrs, rows,
                                        status)
            if stopped >= 0:
                resume[0] = stopped
                return False
        resume[0] = hi
    return True


# ------------------------------------------------------------------ reverse
@njit(**_JIT)
def _reverse_position_loop(W, V, starts, run_group, alpha_row, status):
    """``W -= fix(alpha V)`` in place."""
    ok, acc = True, np.int64(0)
    for r in range(starts.shape[0] - 1):
        alpha = alpha_row[run_group[r]]
        Vs, Ws = V[starts[r]:starts[r + 1]], W[starts[r]:starts[r + 1]]
        for j in range(Vs.shape[0]):
            D, ok1 = _fix(alpha * np.float64(Vs[j]))
            w = Ws[j]
            wn = w - D
            ok &= ok1
            acc |= (w ^ wn) & ((-D) ^ wn)
            Ws[j] = wn
    if not ok or acc < 0:
        status[_BAD] = 1


@njit(**_JIT)
def _reverse_velocity_loop(V, g, starts, run_group, n_row, head, ptr, addrs, rows, frac_bits,
                           start, status):
    """Undo the velocity update over elements ``start..N-1``; returns -1 or a resume index.

    Per element: ``V += fix((1 - beta) g)`` (checked), then the inverse of the
    buffer multiply.  Only the two-step scheme pushes here; an element that
    finds its tail full is redone from its start after the caller grows the
    buffer (flags are OR-ed, so redoing is harmless).
    """
    scale = 2.0 ** frac_bits
    capacity = addrs.shape[0] * rows
    N = V.shape[0]
    ok, acc = True, np.int64(0)
    stopped = -1
    for r in range(starts.shape[0] - 1):
        lo = max(starts[r], start)
        hi = starts[r + 1]
        if lo >= hi:
            continue
        n = n_row[run_group[r]]
        c1 = (np.float64(BETA_ONE - n) * 2.0 ** -16) * scale
        q, rho, _, _ = _table(n)
        inv_n = 1.0 / np.float64(n)
        rq1, rq = _reciprocal_up(q + 1), _reciprocal_up(q)
        Vs, gs, hs = V[lo:hi], g[lo:hi], head[lo:hi]
        for j in range(Vs.shape[0]):
            D1, ok1 = _fix(gs[j] * c1)
            v0 = Vs[j]
            v = v0 + D1
            ok &= ok1
            acc |= (v0 ^ v) & (D1 ^ v)
            if n == BETA_ONE:
                Vs[j] = v
                continue
            h = hs[j]
            if n > _HALF:                     # fused bijection
                qv, u = _floordiv_big_n(v, n, inv_n)
                f, c = _freq_cum(u, q, rho)
                fu = np.uint64(f)
                if h < (fu << _U23):
                    h = _pop(addrs, rows, N, ptr, lo + j, h, status, _UF_FUSED)
                hq, hr = _divmod_u64(h, f, rq1 if f > q else rq)
                cf = c + hr
                hs[j] = (hq << _U8) + np.uint64(cf >> 16)
                Vs[j] = (qv << 16) + (cf & 0xFFFF)
            else:                             # two steps: push u back, pop 16 raw bits
                qv = v // n
                u = v - qv * n
                f, c = _freq_cum(u, q, rho)
                fu = np.uint64(f)
                if h >= (fu << _U39):
                    i = lo + j
                    p = ptr[i]
                    if p >= capacity:
                        stopped = i
                        break
                    chunk, row = _chunk_of(addrs, rows, N, p)
                    chunk[row, i] = np.uint32(h & _MASK32)
                    ptr[i] = p + 1
                    h >>= _U32
                hq = h // fu
                h = (hq << _U24) + np.uint64(c) + (h - hq * fu)
                rbits = np.int64(h & _MASK16U)
                h >>= _U16
                if h < _HEAD_LOW:
                    h = _pop(addrs, rows, N, ptr, lo + j, h, status, _UF_TWO)
                hs[j] = h
                Vs[j] = (qv << 16) + rbits
        if stopped >= 0:
            break
    if not ok:
        status[_BAD] = 1
    if acc < 0:
        status[_BAD_VEL] = 1
    return stopped


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
    starts, groups = _runs(np.ascontiguousarray(group_index, dtype=np.int64))
    if len(_RUN_CACHE) >= 16:
        _RUN_CACHE.pop(next(iter(_RUN_CACHE)))
    _RUN_CACHE[id(group_index)] = (group_index, starts, groups)
    return starts, groups


def _mirror(buffer):
    """Data addresses of ``buffer.chunks`` as int64 (cached until the chunk list changes)."""
    chunks = buffer.chunks
    entry = _MIRRORS.get(buffer)
    if (entry is not None and len(entry[0]) == len(chunks)
            and all(map(operator.is_, entry[0], chunks))):
        return entry[1]
    shape = (buffer.chunk_rows, buffer.size)
    for c in chunks:
        if (c.dtype != np.uint32 or c.shape != shape or not c.flags.c_contiguous
                or not c.flags.writeable):
            raise TypeError("information-buffer chunks must be writeable C-contiguous "
                            f"uint32{list(shape)} arrays")
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


def _check_buffer(buffer, N):
    if (buffer.size != N or buffer.head.shape != (N,) or buffer.ptr.shape != (N,)
            or buffer.head.dtype != np.uint64 or buffer.ptr.dtype != np.int64):
        raise ValueError(f"buffer of {buffer.size} elements does not match {N} values")


def _layout(schedule, N, rows, *vectors):
    """Runs of the schedule's groups, after the shape checks the compiled loops rely on
    (they do not bounds-check, so a mismatch must be caught here, not as a crash)."""
    for x in vectors:
        if x.shape != (N,):
            raise ValueError(f"kernel arrays must all have shape ({N},); got {x.shape}")
    if schedule.group_index.shape != (N,):
        raise ValueError(f"group_index has shape {schedule.group_index.shape}, expected ({N},)")
    starts, groups = _plan(schedule.group_index)
    for row in rows:
        if groups.size and (groups.min() < 0 or groups.max() >= row.shape[0]):
            raise IndexError(f"group index {int(groups.max())} is out of bounds for a "
                             f"schedule row of {row.shape[0]} groups")
    return starts, groups


def _per_element(row, schedule):
    return row[0] if row.shape[0] == 1 else row[schedule.group_index]


def _underflow(status):
    for which in (_UF_FUSED, _UF_TWO):      # NumPy handles fused elements first
        if status[which]:
            raise BufferUnderflowError(
                f"information buffer of element {int(status[which]) - 1} is empty but a pop "
                "needs a word: the buffer is corrupt or the reverse pass does not mirror the "
                "forward pass")


# The replays below run the NumPy functions of the failing step on values
# reconstructed from the outputs (each addition is undone by wrap-around
# subtraction), so errors carry NumPy's exact class and message.
_GRAD_STEP = "gradient step (1 - beta) * g"
_WEIGHT_STEP = "weight step alpha * v"


def _grad_increment(g, n_row, schedule, frac_bits, t):
    one_minus_beta = (BETA_ONE - _per_element(n_row, schedule)) * 2.0 ** -16
    return to_fixed(one_minus_beta * g, frac_bits, _GRAD_STEP, t)


def _weight_increment(V, alpha_row, schedule, frac_bits, t):
    return to_fixed(_per_element(alpha_row, schedule) * to_float(V, frac_bits), frac_bits,
                    _WEIGHT_STEP, t)


def _undo(S, D, subtract):
    with np.errstate(over="ignore"):
        return S + D if subtract else S - D


def _replay_forward(W, V, g, alpha_row, n_row, schedule, frac_bits, t):
    D1 = _grad_increment(g, n_row, schedule, frac_bits, t)
    checked_add(_undo(V, D1, True), D1, frac_bits, "velocity", t, subtract=True)
    D3 = _weight_increment(V, alpha_row, schedule, frac_bits, t)
    checked_add(_undo(W, D3, False), D3, frac_bits, "weights", t)
    raise AssertionError(f"numba kernel flagged step {t} but the NumPy replay passed")


def forward_step(W, V, g, alpha_row, n_row, schedule, buffer, frac_bits, t):
    W = np.ascontiguousarray(W, dtype=np.int64)
    V = np.ascontiguousarray(V, dtype=np.int64)
    g = np.ascontiguousarray(g, dtype=np.float64)
    alpha_row = np.ascontiguousarray(alpha_row, dtype=np.float64)
    n_row = np.ascontiguousarray(n_row, dtype=np.int64)
    _check_buffer(buffer, V.size)
    starts, groups = _layout(schedule, V.size, (alpha_row, n_row), W, g)
    status = np.zeros(_STATUS_LEN, np.int64)
    resume = np.zeros(2, np.int64)
    spill = np.empty(max(1, min(V.size, _SCRATCH)), np.int64)
    addrs = _mirror(buffer)
    while not _forward_loop(W, V, g, starts, groups, alpha_row, n_row, buffer.head, buffer.ptr,
                            addrs, buffer.chunk_rows, frac_bits, status, resume, spill):
        addrs = _grow(buffer)
    if status[_UF_FUSED] or status[_UF_TWO]:
        _underflow(status)
    if status[_BAD]:
        _replay_forward(W, V, g, alpha_row, n_row, schedule, frac_bits, t)
    return W, V


def reverse_position(W, V, alpha_row, schedule, frac_bits, t):
    W = np.ascontiguousarray(W, dtype=np.int64)
    V = np.ascontiguousarray(V, dtype=np.int64)
    alpha_row = np.ascontiguousarray(alpha_row, dtype=np.float64)
    starts, groups = _layout(schedule, V.size, (alpha_row,), W)
    status = np.zeros(_STATUS_LEN, np.int64)
    _reverse_position_loop(W, V, starts, groups, alpha_row, status)
    if status[_BAD]:
        D = _weight_increment(V, alpha_row, schedule, frac_bits, t)
        checked_add(_undo(W, D, True), D, frac_bits, "weights", t, subtract=True)
        raise AssertionError(f"numba kernel flagged step {t} but the NumPy replay passed")
    return W


def reverse_velocity(V, g, n_row, schedule, buffer, frac_bits, t):
    V = np.ascontiguousarray(V, dtype=np.int64)
    g = np.ascontiguousarray(g, dtype=np.float64)
    n_row = np.ascontiguousarray(n_row, dtype=np.int64)
    _check_buffer(buffer, V.size)
    starts, groups = _layout(schedule, V.size, (n_row,), g)
    status = np.zeros(_STATUS_LEN, np.int64)
    addrs = _mirror(buffer)
    start = 0
    while True:
        start = _reverse_velocity_loop(V, g, starts, groups, n_row, buffer.head, buffer.ptr,
                                       addrs, buffer.chunk_rows, frac_bits, start, status)
        if start < 0:
            break
        addrs = _grow(buffer)
    if status[_BAD]:
        _grad_increment(g, n_row, schedule, frac_bits, t)      # raises NumPy's error
    if status[_BAD_VEL]:
        raise FixedPointOverflowError(f"{_where('velocity', t)} overflows the fixed-point "
                                      "range; " + _remedy(frac_bits))
    if status[_UF_FUSED] or status[_UF_TWO]:
        _underflow(status)
    if status[_EMPTIED]:
        _release(buffer)
    return V


numba_kernel = pytypes.SimpleNamespace(
    name="numba",
    forward_step=forward_step,
    reverse_position=reverse_position,
    reverse_velocity=reverse_velocity,
)
