"""A compiled CPU kernel (numba) bit-identical to the NumPy specification.

The NumPy kernel (:data:`reversible.kernels.numpy_kernel`) makes a dozen
passes over the parameter vector per step: the multiply of
:mod:`reversible.buffer` in vectorised stages, then the conversions and
checked additions of :mod:`reversible.fixedpoint`.  Here one compiled loop
does a whole step element by element with the same integer results and the
same float64 roundings, so ``W``, ``V``, buffer heads, pointers and tail words
agree bit for bit (``tests/test_kernels.py`` checks this).

Design points:

* Elements are cut into *blocks*: pieces of at most :data:`BLOCK` elements
  of one parameter group.  A block's alpha and n are looked up once, and the
  blocks can run in parallel (``numba.prange``) once a step has at least
  :data:`PARALLEL_MIN` elements; whether they do is decided by timing both
  ways now and then (:class:`_ThreadChoice`), as busy cores make threads a loss.  Blocks touch disjoint elements (heads,
  pointers, tail columns) and keep their own status row, so the result does
  not depend on the number of threads.
* No hardware division in the common case: every quotient the multiply needs
  is below ``2**32``, so it comes from a float64 product with ``1/n`` (error
  far below one) and is fixed up exactly by its remainder (:func:`_quot32`).
* Fixed-point roundings: ``rint(((1 - beta) g) * 2**F)`` equals
  ``rint(g * ((1 - beta) 2**F))`` and ``rint((alpha (V 2**-F)) 2**F)`` equals
  ``rint(alpha V)`` bit for bit (scaling by a power of two commutes with
  rounding; where a product would be subnormal both sides round to 0).
* Tails stay in the :class:`~reversible.buffer.InfoBuffer` chunk list; the
  loops get the chunks' data addresses (rebuilt only when the list changes)
  and view each chunk in place.  The forward pass only pushes and the
  reverse pass only pops.  Forward spills (about 1 % of element-steps at
  beta = 0.9) are queued per block and written after the block's loop, so
  the hot loop writes no tail; when a tail is full, control returns to
  Python, which appends one chunk (never copying history), and the blocks
  resume where they stopped.
* Errors never raise inside a loop: the loops OR flags into the status rows
  and the wrapper replays the failing stage with the NumPy functions
  (:func:`~reversible.fixedpoint.to_fixed`, ``checked_add``), so the
  exception class and message are exactly NumPy's.  As with the NumPy
  kernel, the state after an error is not usable.

``W`` and ``V`` are updated in place (and returned).  ``forward_step`` can
also write ``float(W)`` of the new weights into ``w_out`` in the same pass.
"""

import operator
import threading
import time
import types as pytypes
import weakref

import numba
import numpy as np
from numba import njit, prange, types
from numba.core.extending import intrinsic

from .buffer import (BETA_BITS, BETA_ONE, HEAD_LOW, UNDO_OVERFLOW_MESSAGE,
                     WORD_BITS, WORD_DTYPE, one_minus_beta)
from .errors import BufferUnderflowError, FixedPointOverflowError
from .fixedpoint import checked_add, located, overflow_remedy, to_fixed, to_float

# status row per block (int64): any fixed-point problem, velocity-add overflow (reverse),
# velocity overflow undoing the multiply, first element (+1) whose first / second refill
# found an empty tail, a pop emptied a chunk
_BAD, _BAD_VEL, _BAD_DIV, _UF1, _UF2, _EMPTIED = range(6)
_STATUS_LEN = 6

BLOCK = 1 << 14            # elements per block
TILE = 1 << 8              # elements multiplied, then updated, while in cache
QUEUE = 1 << 11            # spilled words a block queues before writing them to the tails
PARALLEL_MIN = 1 << 16     # steps with fewer elements run on one thread



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
_U32 = np.uint64(32)
_UW = np.uint64(WORD_BITS)
_MASK32 = np.uint64(0xFFFFFFFF)
_MASKW = np.uint64((1 << WORD_BITS) - 1)
_HEAD_LOW = np.uint64(HEAD_LOW)
_HALF_N = np.int64(BETA_ONE >> 1)
_ONE_MINUS_SCALE = 2.0 ** -BETA_BITS
assert BETA_BITS == 32 and WORD_DTYPE is np.uint16    # the loops below are written for these


# ------------------------------------------------------------------ tail access
@intrinsic
def _word_ptr(typingctx, addr):
    """The int64 address ``addr`` as a ``uint16*`` (to view a chunk owned by Python)."""
    sig = types.CPointer(types.uint16)(types.int64)

    def codegen(context, builder, signature, args):
        return builder.inttoptr(args[0], context.get_value_type(types.CPointer(types.uint16)))

    return sig, codegen


@njit(**_JIT)
def _chunk_of(addrs, rows, N, p):
    """The chunk holding tail word ``p`` (viewed in place) and the word's row in it."""
    k = p // rows
    return numba.carray(_word_ptr(addrs[k]), (rows, N)), p - k * rows


@njit(**_JIT)
def _refill(addrs, rows, N, ptr, i, h, status, which):
    """``h * 2**16 + (top word of element i)``; an empty tail is recorded in ``status[which]``."""
    p = ptr[i]
    if p == 0:
        if status[which] == 0:
            status[which] = i + 1
        return h << _UW
    p -= 1
    chunk, row = _chunk_of(addrs, rows, N, p)
    ptr[i] = p
    if row == 0:
        status[_EMPTIED] = 1
    return (h << _UW) | np.uint64(chunk[row, i])


# ------------------------------------------------------------------ arithmetic
@njit(**_JIT)
def _fixup(q, r, n):
    """Correct a quotient estimate that is off by at most one, using its remainder ``r``."""
    if r < 0:
        return q - 1, r + n
    if r >= n:
        return q + 1, r - n
    return q, r


@njit(**_JIT)
def _quot32(x, n, nu, inv_n):
    """``(x // n, x % n)`` for uint64 ``x < n * 2**32`` (quotient below 2**32).

    The float64 estimate ``(x >> 1) * (2 / n)`` (signed conversions only, which
    are single instructions) is within one of the quotient: relative error about
    ``2**-51`` on a value below ``2**32``, plus ``1 / n`` for the dropped bit.
    The remainder fixes it exactly.  ``inv_n`` is ``2.0 / n``.
    """
    q = np.int64(np.float64(np.int64(x >> np.uint64(1))) * inv_n)
    q, rem = _fixup(q, np.int64(x - np.uint64(q) * nu), n)   # |x - q n| < 2 n: exact mod 2**64
    return np.uint64(q), rem


@njit(**_JIT)
def _floordivmod(v, n, nu, inv_n, inv2_n):
    """``(v // n, v % n)`` for int64 ``v`` and ``1 <= n < 2**32`` (floor semantics), without a
    hardware division: ``inv_n = 1 / n``, ``inv2_n = 2 / n``."""
    if n > _HALF_N:                       # quotient below 2**32: float estimate, fixed up
        qv = np.int64(np.floor(np.float64(v) * inv_n))
        return _fixup(qv, v - qv * n, n)
    # long division in 32-bit limbs: v = vh 2**32 + vl, |vh| < 2**31
    vh = v >> 32
    a1 = np.int64(np.floor(np.float64(vh) * inv_n))
    a1, r1 = _fixup(a1, vh - a1 * n, n)
    c, r = _quot32((np.uint64(r1) << _U32) | np.uint64(v & 0xFFFFFFFF), n, nu, inv2_n)
    return (a1 << 32) + np.int64(c), r


@njit(**_JIT)
def _fix(x):
    """``rint(x)`` as int64 and whether it is valid (finite, ``|.| < 2**63``)."""
    s = np.rint(x)
    ok = abs(s) < _TWO63
    return (np.int64(s) if ok else np.int64(0)), ok


# ------------------------------------------------------------------ forward
# Per element: V <- V * n / 2**32 through the buffer, then
#   V <- V - fix((1 - beta) g),  W <- W + fix(alpha V)
# with checked_add's overflow test ((X ^ S) & (D ^ S)) < 0 OR-ed into `acc`.
# Loops run over slices so indices are provably >= 0 (numba otherwise emits
# negative-index handling on every access), and helpers take scalars only.

@njit(**_JIT)
def _forward_update(W, V, g, wf, has_wf, lo, hi, alpha, c1, inv_scale, status):
    """``V -= fix((1 - beta) g)``, ``W += fix(alpha V)`` over ``lo..hi-1`` (checked; vectorises)."""
    ok, acc = True, np.int64(0)
    Vs, Ws, gs = V[lo:hi], W[lo:hi], g[lo:hi]
    for j in range(Vs.shape[0]):
        v = Vs[j]
        D1, ok1 = _fix(gs[j] * c1)
        vn = v - D1
        D3, ok3 = _fix(alpha * np.float64(vn))
        w = Ws[j]
        wn = w + D3
        ok &= ok1 & ok3
        acc |= ((v ^ vn) & ((-D1) ^ vn)) | ((w ^ wn) & (D3 ^ wn))
        Vs[j] = vn
        Ws[j] = wn
    if has_wf:
        wfs = wf[lo:hi]
        for j in range(Ws.shape[0]):
            wfs[j] = np.float64(Ws[j]) * inv_scale
    if not ok or acc < 0:
        status[_BAD] = 1


@njit(**_JIT)
def _forward_multiply(V, lo, hi, n, head, spill, k):
    """``V <- V n / 2**32`` through the heads over ``lo..hi-1``; spilled words are queued in
    ``spill`` from slot ``k`` as ``(element << 16) | word``; returns the new queue length.

    A range without any spill (most of them when beta > 1/2) runs a loop free of
    data-dependent stores, which the compiler can vectorise.
    """
    Vs, hs = V[lo:hi], head[lo:hi]
    nu = np.uint64(n)
    limit = nu << _U32                    # spill while head >= n 2**32
    inv2_n = 2.0 / np.float64(n)
    spills = 0
    for j in range(hs.shape[0]):
        spills += hs[j] >= limit
    if spills == 0:
        for j in range(Vs.shape[0]):
            v = Vs[j]
            q, u = _quot32(hs[j], n, nu, inv2_n)
            P = np.uint64(v & 0xFFFFFFFF) * nu + np.uint64(u)
            hs[j] = (q << _U32) | (P & _MASK32)
            Vs[j] = (v >> 32) * n + np.int64(P >> _U32)
        return k
    for j in range(Vs.shape[0]):
        v = Vs[j]
        h = hs[j]
        if h >= limit:                    # one word, a second one when n < 2**16
            spill[k] = ((lo + j) << 16) | np.int64(h & _MASKW)
            h >>= _UW
            k += 1
            if h >= limit:
                spill[k] = ((lo + j) << 16) | np.int64(h & _MASKW)
                h >>= _UW
                k += 1
        # pop u = h mod n, push the 32 low bits of X = V n + u
        q, u = _quot32(h, n, nu, inv2_n)
        P = np.uint64(v & 0xFFFFFFFF) * nu + np.uint64(u)
        hs[j] = (q << _U32) | (P & _MASK32)
        Vs[j] = (v >> 32) * n + np.int64(P >> _U32)
    return k


@njit(**_JIT)
def _forward_range(W, V, g, wf, has_wf, lo, hi, n, alpha, c1, inv_scale, head, spill, status):
    """One forward step over elements ``lo..hi-1`` of one group, in tiles of :data:`TILE`
    elements: the multiply (scalar integer work, no tail writes) then the fixed-point update
    (which vectorises) while the tile is in cache.  Returns ``(next element, words queued)``,
    stopping at a tile boundary when the queue might not hold another tile's spills."""
    k = 0
    start = lo
    while start < hi:
        if k > spill.shape[0] - 2 * TILE:
            break
        end = min(start + TILE, hi)
        if n < BETA_ONE:
            k = _forward_multiply(V, start, end, n, head, spill, k)
        _forward_update(W, V, g, wf, has_wf, start, end, alpha, c1, inv_scale, status)
        start = end
    return start, k


@njit(**_JIT)
def _flush(spill, k, ptr, addrs, rows, N):
    """Write the ``k`` queued words in order; returns how many were written (fewer when a
    tail is full, and then the rest is moved to the front of the queue)."""
    capacity = addrs.shape[0] * rows
    for e in range(k):
        i = spill[e] >> 16
        p = ptr[i]
        if p >= capacity:
            for m in range(k - e):
                spill[m] = spill[e + m]
            return e
        chunk, row = _chunk_of(addrs, rows, N, p)
        chunk[row, i] = np.uint16(spill[e] & 0xFFFF)
        ptr[i] = p + 1
    return k


def _forward_blocks_py(W, V, g, wf, has_wf, bhi, bgroup, pos, pending, alpha_row, n_row, head,
                       ptr, addrs, rows, frac_bits, status, spill):
    """Every block ``b`` steps elements ``pos[b]..bhi[b]-1`` and writes its queued words;
    it stops (``pos[b]``, ``pending[b]`` say where) when a tail needs another chunk."""
    scale = 2.0 ** frac_bits
    inv_scale = 2.0 ** -frac_bits
    N = V.shape[0]
    for b in prange(bhi.shape[0]):
        while True:
            k = pending[b]
            if k > 0:
                written = _flush(spill[b], k, ptr, addrs, rows, N)
                pending[b] = k - written
                if written < k:
                    break
            lo = pos[b]
            hi = bhi[b]
            if lo >= hi:
                break
            grp = bgroup[b]
            n = n_row[grp]
            c1 = (np.float64(BETA_ONE - n) * _ONE_MINUS_SCALE) * scale   # (1 - beta) 2**F, exact
            pos[b], pending[b] = _forward_range(W, V, g, wf, has_wf, lo, hi, n, alpha_row[grp], c1,
                                                inv_scale, head, spill[b], status[b])


# ------------------------------------------------------------------ reverse
def _reverse_position_py(W, V, blo, bhi, bgroup, alpha_row, status):
    """``W -= fix(alpha V)`` in place."""
    for b in prange(bhi.shape[0]):
        alpha = alpha_row[bgroup[b]]
        Vs, Ws = V[blo[b]:bhi[b]], W[blo[b]:bhi[b]]
        ok, acc = True, np.int64(0)
        for j in range(Vs.shape[0]):
            D, ok1 = _fix(alpha * np.float64(Vs[j]))
            w = Ws[j]
            wn = w - D
            ok &= ok1
            acc |= (w ^ wn) & ((-D) ^ wn)
            Ws[j] = wn
        if not ok or acc < 0:
            status[b, _BAD] = 1


@njit(**_JIT)
def _reverse_range(V, g, lo, hi, n, c1, head, ptr, addrs, rows, status):
    """Undo the velocity update over elements ``lo..hi-1`` of one group.

    Per element: ``V += fix((1 - beta) g)`` (checked), then the inverse of
    the buffer multiply: ``r = head mod 2**32``, ``(V, u) = divmod(V 2**32 + r, n)``,
    ``head = floor(head / 2**32) n + u``, refills while ``head < 2**48``.  In
    tiles of :data:`TILE`: the checked addition, the arithmetic of the inverse
    (no tail reads), then the rare refills.
    """
    N = V.shape[0]
    ok, acc, div_ok = True, np.int64(0), True
    bb = n < BETA_ONE
    nu = np.uint64(n)
    inv_n = 1.0 / np.float64(n)
    inv2_n = 2.0 / np.float64(n)
    for start in range(lo, hi, TILE):
        end = min(start + TILE, hi)
        Vs, gs, hs = V[start:end], g[start:end], head[start:end]
        for j in range(Vs.shape[0]):
            D1, ok1 = _fix(gs[j] * c1)
            v0 = Vs[j]
            v = v0 + D1
            ok &= ok1
            acc |= (v0 ^ v) & (D1 ^ v)
            Vs[j] = v
        if not bb:
            continue
        for j in range(Vs.shape[0]):
            h = hs[j]
            a, bq = _floordivmod(Vs[j], n, nu, inv_n, inv2_n)
            c, u = _quot32((np.uint64(bq) << _U32) | (h & _MASK32), n, nu, inv2_n)
            div_ok &= (a >= -(1 << 31)) & (a < (1 << 31))
            hs[j] = (h >> _U32) * nu + np.uint64(u)
            Vs[j] = (a << 32) + np.int64(c)
        for j in range(hs.shape[0]):
            h = hs[j]
            if h < _HEAD_LOW:
                h = _refill(addrs, rows, N, ptr, start + j, h, status, _UF1)
                if h < _HEAD_LOW:
                    h = _refill(addrs, rows, N, ptr, start + j, h, status, _UF2)
                hs[j] = h
    if not ok:
        status[_BAD] = 1
    if acc < 0:
        status[_BAD_VEL] = 1
    if not div_ok:
        status[_BAD_DIV] = 1


def _reverse_blocks_py(V, g, blo, bhi, bgroup, n_row, head, ptr, addrs, rows, frac_bits, status):
    scale = 2.0 ** frac_bits
    for b in prange(bhi.shape[0]):
        n = n_row[bgroup[b]]
        c1 = (np.float64(BETA_ONE - n) * _ONE_MINUS_SCALE) * scale
        _reverse_range(V, g, blo[b], bhi[b], n, c1, head, ptr, addrs, rows, status[b])


def _renamed(f, suffix):
    """A copy of function ``f`` under another name.  numba's on-disk cache is keyed by the
    function's qualified name, not by compile options, so the parallel compilation of a
    body needs its own name or it would load the serial one from the cache."""
    g = pytypes.FunctionType(f.__code__, f.__globals__, f.__name__ + suffix, f.__defaults__,
                             f.__closure__)
    g.__qualname__ = f.__qualname__ + suffix
    return g


# One body, two compilations: parallel over blocks, and serial for small steps
# (where starting threads would cost more than the step).
_LOOPS = (_forward_blocks_py, _reverse_position_py, _reverse_blocks_py)
_SERIAL = {f.__name__: njit(**_JIT)(f) for f in _LOOPS}
_PARALLEL = {f.__name__: njit(parallel=True, **_JIT)(_renamed(f, "_parallel")) for f in _LOOPS}


_PARALLEL_LOCK = threading.Lock()


def compiling():
    """True once a loop of this kernel had to be compiled in this process (a numba cache miss),
    as opposed to loaded from the on-disk cache."""
    loops = list(_SERIAL.values()) + list(_PARALLEL.values()) + [_blocks]
    return any(sum(d.stats.cache_misses.values()) for d in loops)


class _ThreadChoice:
    """Whether the parallel loops pay for a given loop and size, decided by timing.

    Both variants give the same bits, so the choice is free to follow the machine:
    the first :data:`PROBES` calls of each side (alternating), and again every
    :data:`REPROBE` calls, are timed; in between the faster side by median runs.
    On a quiet multi-core machine that is the parallel loop; on one whose cores
    are all busy, threads wait for each other and the serial loop wins.
    """

    def __init__(self):
        self.calls = 0
        self.times = ([], [])            # recent seconds of (serial, parallel) runs

    def parallel_next(self):
        """``(use parallel?, time this run?)`` for the next call."""
        k = self.calls % REPROBE
        self.calls += 1
        if k < 2 * PROBES:
            return k % 2 == 1, True
        serial, parallel = (np.median(t) if t else np.inf for t in self.times)
        return bool(parallel < serial), False

    def record(self, parallel, seconds):
        t = self.times[int(parallel)]
        t.append(seconds)
        del t[:-PROBES]


PROBES = 3                 # timed runs of each variant per probe
REPROBE = 256              # calls between probes
_CHOICES = {}              # (loop name, N) -> _ThreadChoice


def _run(name, N, *args):
    """Run loop ``name``: serially for small steps, else in parallel or serially as
    :class:`_ThreadChoice` finds faster here.  One parallel launch at a time per process
    (numba's default threading layer must not be entered concurrently): a step from
    another Python thread meanwhile runs serially."""
    if N >= PARALLEL_MIN and _PARALLEL_LOCK.acquire(blocking=False):
        try:
            choice = _CHOICES.get((name, N))
            if choice is None:
                if len(_CHOICES) >= 64:
                    _CHOICES.clear()
                choice = _CHOICES[name, N] = _ThreadChoice()
            parallel, timed = choice.parallel_next()
            loop = (_PARALLEL if parallel else _SERIAL)[name]
            if not timed:
                return loop(*args)
            start = time.perf_counter()
            out = loop(*args)
            choice.record(parallel, time.perf_counter() - start)
            return out
        finally:
            _PARALLEL_LOCK.release()
    return _SERIAL[name](*args)


@njit(**_JIT)
def _blocks(group_index, block):
    """Blocks of at most ``block`` consecutive elements of one group: ``(lo, hi, group)``."""
    N = group_index.shape[0]
    lo = np.empty(N, np.int64)        # at most N blocks; trimmed below
    i = 0
    count = 0
    while i < N:
        lo[count] = i
        count += 1
        j = i + 1
        while j < N and j - i < block and group_index[j] == group_index[i]:
            j += 1
        i = j
    lo = lo[:count].copy()
    hi = np.empty(count, np.int64)
    hi[:count - 1] = lo[1:]
    if count:
        hi[count - 1] = N
    return lo, hi, group_index[lo]


# ------------------------------------------------------------- Python wrappers
_PLAN_CACHE = {}         # id(group_index) -> (group_index, blocks); a few entries
_MIRRORS = weakref.WeakKeyDictionary()   # InfoBuffer -> (chunk refs, chunk addresses)


def _plan(group_index):
    """Blocks of ``group_index`` (cached by array identity; the array is kept alive)."""
    hit = _PLAN_CACHE.get(id(group_index))
    if hit is not None and hit[0] is group_index:
        return hit[1]
    blocks = _blocks(np.ascontiguousarray(group_index, dtype=np.int64), BLOCK)
    if len(_PLAN_CACHE) >= 16:
        _PLAN_CACHE.pop(next(iter(_PLAN_CACHE)))
    _PLAN_CACHE[id(group_index)] = (group_index, blocks)
    return blocks


def _mirror(buffer):
    """Data addresses of ``buffer.chunks`` as int64 (cached until the chunk list changes)."""
    chunks = buffer.chunks
    entry = _MIRRORS.get(buffer)
    if (entry is not None and len(entry[0]) == len(chunks)
            and all(map(operator.is_, entry[0], chunks))):
        return entry[1]
    shape = (buffer.chunk_rows, buffer.size)
    for c in chunks:
        if (c.dtype != WORD_DTYPE or c.shape != shape or not c.flags.c_contiguous
                or not c.flags.writeable):
            raise TypeError("information-buffer chunks must be writeable C-contiguous "
                            f"{np.dtype(WORD_DTYPE).name}{list(shape)} arrays")
    addrs = np.array([c.__array_interface__["data"][0] for c in chunks], dtype=np.int64)
    _MIRRORS[buffer] = (list(chunks), addrs)    # the refs keep the chunks alive while cached
    return addrs


def _grow(buffer):
    """Append one chunk to ``buffer`` (never copies history); returns the new addresses."""
    buffer.reserve(buffer.capacity + 1)
    return _mirror(buffer)


def _check_buffer(buffer, N):
    if (buffer.size != N or buffer.head.shape != (N,) or buffer.ptr.shape != (N,)
            or buffer.head.dtype != np.uint64 or buffer.ptr.dtype != np.int64):
        raise ValueError(f"buffer of {buffer.size} elements does not match {N} values")


def _layout(schedule, N, rows, *vectors):
    """Blocks of the schedule's groups, after the shape checks the compiled loops rely on
    (they do not bounds-check, so a mismatch must be caught here, not as a crash)."""
    for x in vectors:
        if x.shape != (N,):
            raise ValueError(f"kernel arrays must all have shape ({N},); got {x.shape}")
    if schedule.group_index.shape != (N,):
        raise ValueError(f"group_index has shape {schedule.group_index.shape}, expected ({N},)")
    lo, hi, groups = _plan(schedule.group_index)
    for row in rows:
        if groups.size and (groups.min() < 0 or groups.max() >= row.shape[0]):
            raise IndexError(f"group index {int(groups.max())} is out of bounds for a "
                             f"schedule row of {row.shape[0]} groups")
    return lo, hi, groups


def _per_element(row, schedule):
    return row[0] if row.shape[0] == 1 else row[schedule.group_index]


def _underflow(status):
    raise_underflow(status, (_UF1, _UF2))   # NumPy refills every element once before the second


def raise_underflow(status, slots):
    """Raise NumPy's underflow error for the first element (+1) recorded in a ``slots`` column
    of the status rows, the columns taken in order (each a pass of refills)."""
    for which in slots:
        hit = status[:, which]
        hit = hit[hit > 0]
        if hit.size:
            raise BufferUnderflowError(
                f"information buffer of element {int(hit.min()) - 1} is empty but a pop "
                "needs a word: the buffer is corrupt or the reverse pass does not mirror the "
                "forward pass")


# The replays below run the NumPy functions of the failing step on values
# reconstructed from the outputs (each addition is undone by wrap-around
# subtraction), so errors carry NumPy's exact class and message.
_GRAD_STEP = "gradient step (1 - beta) * g"
_WEIGHT_STEP = "weight step alpha * v"


def _grad_increment(g, n_row, schedule, frac_bits, t):
    return to_fixed(one_minus_beta(_per_element(n_row, schedule)) * g, frac_bits, _GRAD_STEP, t)


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


_NO_WF = np.empty(0, np.float64)


def forward_step(W, V, g, alpha_row, n_row, schedule, buffer, frac_bits, t, w_out=None):
    W = np.ascontiguousarray(W, dtype=np.int64)
    V = np.ascontiguousarray(V, dtype=np.int64)
    g = np.ascontiguousarray(g, dtype=np.float64)
    alpha_row = np.ascontiguousarray(alpha_row, dtype=np.float64)
    n_row = np.ascontiguousarray(n_row, dtype=np.int64)
    _check_buffer(buffer, V.size)
    lo, hi, groups = _layout(schedule, V.size, (alpha_row, n_row), W, g)
    if w_out is not None and (not isinstance(w_out, np.ndarray) or w_out.dtype != np.float64
                              or w_out.shape != (V.size,) or not w_out.flags.c_contiguous
                              or not w_out.flags.writeable):
        raise ValueError(f"w_out must be a writeable contiguous float64 array of shape ({V.size},)")
    wf = _NO_WF if w_out is None else w_out
    status = np.zeros((lo.size, _STATUS_LEN), np.int64)
    pos = lo.copy()
    pending = np.zeros(lo.size, np.int64)
    spill = np.empty((lo.size, max(QUEUE, 4 * TILE)), np.int64)
    addrs = _mirror(buffer)
    while True:
        _run("_forward_blocks_py", V.size, W, V, g, wf, w_out is not None, hi, groups, pos,
             pending, alpha_row, n_row, buffer.head, buffer.ptr, addrs, buffer.chunk_rows,
             frac_bits, status, spill)
        if np.array_equal(pos, hi) and not pending.any():
            break
        addrs = _grow(buffer)
    if status[:, _BAD].any():
        _replay_forward(W, V, g, alpha_row, n_row, schedule, frac_bits, t)
    return W, V


def reverse_position(W, V, alpha_row, schedule, frac_bits, t):
    W = np.ascontiguousarray(W, dtype=np.int64)
    V = np.ascontiguousarray(V, dtype=np.int64)
    alpha_row = np.ascontiguousarray(alpha_row, dtype=np.float64)
    lo, hi, groups = _layout(schedule, V.size, (alpha_row,), W)
    status = np.zeros((lo.size, _STATUS_LEN), np.int64)
    _run("_reverse_position_py", V.size, W, V, lo, hi, groups, alpha_row, status)
    if status[:, _BAD].any():
        D = _weight_increment(V, alpha_row, schedule, frac_bits, t)
        checked_add(_undo(W, D, True), D, frac_bits, "weights", t, subtract=True)
        raise AssertionError(f"numba kernel flagged step {t} but the NumPy replay passed")
    return W


def reverse_velocity(V, g, n_row, schedule, buffer, frac_bits, t):
    V = np.ascontiguousarray(V, dtype=np.int64)
    g = np.ascontiguousarray(g, dtype=np.float64)
    n_row = np.ascontiguousarray(n_row, dtype=np.int64)
    _check_buffer(buffer, V.size)
    lo, hi, groups = _layout(schedule, V.size, (n_row,), g)
    status = np.zeros((lo.size, _STATUS_LEN), np.int64)
    _run("_reverse_blocks_py", V.size, V, g, lo, hi, groups, n_row, buffer.head, buffer.ptr,
         _mirror(buffer), buffer.chunk_rows, frac_bits, status)
    if status[:, _BAD].any():
        _grad_increment(g, n_row, schedule, frac_bits, t)      # raises NumPy's error
    if status[:, _BAD_VEL].any():
        raise FixedPointOverflowError(f"{located('velocity', t)} overflows the fixed-point "
                                      "range; " + overflow_remedy(frac_bits))
    if status[:, _BAD_DIV].any():
        raise FixedPointOverflowError(UNDO_OVERFLOW_MESSAGE)
    _underflow(status)
    if status[:, _EMPTIED].any():
        buffer.release()
    return V


numba_kernel = pytypes.SimpleNamespace(
    name="numba",
    forward_step=forward_step,
    reverse_position=reverse_position,
    reverse_velocity=reverse_velocity,
    parallel_min=PARALLEL_MIN,
    compiling=compiling,
)


# Element-level primitives and buffer plumbing for other compiled update rules
# (reversible.adam_numba builds Adam's step from them): public names, same objects.
JIT_OPTIONS = _JIT
STATUS_EMPTIED = _EMPTIED
quot32, floordivmod, refill_word, chunk_of = _quot32, _floordivmod, _refill, _chunk_of
chunk_addresses, grow_buffer, check_buffer, block_layout = _mirror, _grow, _check_buffer, _layout


# ------------------------------------------------------------------ stacked float particles
@njit(parallel=True, **_JIT)
def particles_momentum_step(W, V, G, alphas, betas, group_index):
    """One float64 momentum step of stacked particles, in place and in one pass.

    ``W, V, G``: ``(P, N)``; ``alphas, betas``: ``(P, num_groups)``.  Per element the
    arithmetic of :func:`reversible.trajectory.momentum_step` (same operations, same
    order), without the ``(P, N)`` temporaries and per-element schedule copies that
    dominate a NumPy step at ES / PES particle counts.
    """
    P, N = W.shape
    for p in prange(P):
        for i in range(N):
            k = group_index[i]
            beta = betas[p, k]
            v = beta * V[p, i] - (1.0 - beta) * G[p, i]
            V[p, i] = v
            W[p, i] = W[p, i] + alphas[p, k] * v
