"""The information buffer: a vectorised range-ANS stack per element.

Multiplying a fixed-point number ``V`` by ``beta = n / 2**32`` destroys
``log2(2**32 / n)`` bits.  :class:`InfoBuffer` keeps those bits so that the
multiplication can be undone exactly, at a cost within a fraction of a percent
of that information bound and with O(1) work per element per step.

Each element owns one rANS state:

* ``head``: a uint64 kept in ``[2**48, 2**64)``, starting at ``2**48``;
* a stack of uint16 words (its *tail*), written when ``head`` must shrink.

Tails are stored densely as a list of chunks, each ``uint16[rows, N]``; word
``j`` of element ``i`` lives at ``chunks[j // rows][j % rows, i]``.  Growth
appends a chunk and never copies the history.

The multiply rounds to within one unit of ``V * n / 2**32`` (``n < 2**32``)::

    u  = head mod n                 pop a uniform symbol over [0, n) ...
    X  = V * n + u                  ... to fill the low digits of the product
    V' = floor(X / 2**32)
    r  = X mod 2**32                push the 32 bits the division drops
    head' = floor(head / n) * 2**32 + r

so ``V * n / 2**32 - 1 < V' < V * n / 2**32 + 1``.  Before it, 16-bit words are
spilled from the head while ``head >= n * 2**32``; this puts ``head`` in
``[n * 2**16, n * 2**32)`` and hence ``head'`` in ``[2**48, 2**64)``.  The
inverse reads ``r = head' mod 2**32``, rebuilds ``X = V' * 2**32 + r``, takes
``V = floor(X / n)`` and ``u = X mod n``, restores
``head = floor(head' / 2**32) * n + u`` and refills 16-bit words while
``head < 2**48`` (exactly the words the forward pass spilled).  ``n = 2**32``
(beta = 1) is the identity.  ``docs/engine.md`` derives exactness and the cost.

This NumPy code is the specification: the compiled CPU kernel and the CUDA
kernel implement the same integer semantics and are tested against it.
"""

import numpy as np

from .errors import BufferUnderflowError, FixedPointOverflowError, ReversibilityError

BETA_BITS = 32                 # beta is quantised to n / 2**32
BETA_ONE = 1 << BETA_BITS      # n for beta = 1 (the identity)
WORD_BITS = 16                 # tail words (renormalisation unit)
WORD_DTYPE = np.uint16
HEAD_BITS = 64
HEAD_LOW = 1 << (HEAD_BITS - WORD_BITS)     # heads live in [2**48, 2**64)
HEAD_HIGH = 1 << HEAD_BITS
OVERHEAD_BITS = HEAD_BITS + 64              # fixed cost per element: head + int64 pointer

_U64 = np.uint64
_I64 = np.int64
_MASK32 = _U64(0xFFFFFFFF)
_MASK_WORD = _U64((1 << WORD_BITS) - 1)
_U32 = _U64(32)
_UWORD = _U64(WORD_BITS)


def quantize_beta(beta):
    """Return ``n = round(beta * 2**32)`` as int64 (the engine multiplies by n / 2**32).

    Raises ValueError for betas outside ``(0, 1]`` or too small to represent.
    """
    beta = np.asarray(beta, dtype=np.float64)
    if not np.all(np.isfinite(beta)):
        raise ValueError("betas must be finite; got NaN or Inf")
    if np.any(beta <= 0) or np.any(beta > 1):
        bad = float(beta[(beta <= 0) | (beta > 1)].ravel()[0])
        raise ValueError(f"every beta must lie in (0, 1]; got {bad!r}")
    n = np.rint(beta * BETA_ONE).astype(np.int64)
    if np.any(n < 1):
        raise ValueError(
            f"beta {float(beta[n < 1].ravel()[0])!r} is below 2**-33 and rounds to zero "
            f"at {BETA_BITS} bits; use beta >= 2**-{BETA_BITS}")
    return n


def effective_beta(beta):
    """The beta the engine actually applies: ``round(beta * 2**32) / 2**32``."""
    return quantize_beta(beta) / float(BETA_ONE)


def beta_of(n):
    """The momentum ``n / 2**32`` of quantised ``n`` (float64, exact)."""
    return np.asarray(n, dtype=np.int64) / float(BETA_ONE)


def one_minus_beta(n):
    """``1 - n / 2**32`` computed exactly in float64 (``n`` is an integer below 2**53)."""
    return (BETA_ONE - np.asarray(n, dtype=np.int64)) * 2.0 ** -BETA_BITS


def ideal_bits(n):
    """Information destroyed by one multiply by ``n / 2**32``: ``log2(2**32 / n)``."""
    return BETA_BITS - np.log2(np.asarray(n, dtype=np.float64))


def _spill_threshold(n):
    """``n * 2**32``: spill while ``head`` is at least this (uint64; ``n < 2**32``)."""
    return n.astype(np.uint64) << _U32


UNDO_OVERFLOW_MESSAGE = ("velocity overflows the fixed-point range while undoing a multiply by "
                         "beta: the reverse pass does not mirror the forward pass")


def multiply_ints(V, n, u):
    """``(floor((V n + u) / 2**32), (V n + u) mod 2**32)`` for int64 V and ``0 <= u < n < 2**32``.

    ``V n`` needs 95 bits, so ``V = Vh 2**32 + Vl`` is split into 32-bit limbs:
    ``Vl n + u < 2**64`` and ``|Vh n| < 2**63`` are exact in 64 bits.
    """
    P = (V & _I64(0xFFFFFFFF)).astype(np.uint64) * n.astype(np.uint64) + u.astype(np.uint64)
    return (V >> _I64(32)) * n + (P >> _U32).astype(np.int64), P & _MASK32


def divide_ints(V1, r, n):
    """Inverse of :func:`multiply_ints`: ``(V, u)`` with ``V1 2**32 + r = V n + u``.

    Raises FixedPointOverflowError when ``V`` would leave int64 (only a reverse
    pass on values training never produced can get there).
    """
    a, b = np.divmod(V1, n)                   # V1 = a n + b, 0 <= b < n
    Y = (b.astype(np.uint64) << _U32) | r     # b 2**32 + r < n 2**32 <= 2**64
    nu = n.astype(np.uint64)
    c, u = Y // nu, Y % nu                    # c < 2**32
    if np.any((a < -(1 << 31)) | (a >= (1 << 31))):
        raise FixedPointOverflowError(UNDO_OVERFLOW_MESSAGE)
    return (a << _I64(32)) + c.astype(np.int64), u.astype(np.int64)


class InfoBuffer:
    """Per-element rANS stacks holding the bits that multiplications by beta destroy.

    Parameters
    ----------
    size : int
        Number of elements (one stack each).
    chunk_rows : int, optional
        Words per element in each tail chunk; by default about 2 MiB per chunk.
    """

    def __init__(self, size, chunk_rows=None):
        size = int(size)
        if size < 0:
            raise ValueError(f"size must be >= 0, got {size}")
        self.size = size
        if chunk_rows is None:
            chunk_rows = int(min(256, max(1, (1 << 20) // max(size, 1))))
        if chunk_rows < 1:
            raise ValueError(f"chunk_rows must be >= 1, got {chunk_rows}")
        self.chunk_rows = int(chunk_rows)
        self.head = np.full(size, HEAD_LOW, dtype=np.uint64)
        self.ptr = np.zeros(size, dtype=np.int64)   # words on each tail
        self.chunks = []

    # ----------------------------------------------------------------- tail
    @property
    def capacity(self):
        return len(self.chunks) * self.chunk_rows

    def reserve(self, words):
        """Make room for ``words`` words on every tail (appends chunks, never copies)."""
        while self.capacity < words:
            self.chunks.append(np.zeros((self.chunk_rows, self.size), dtype=WORD_DTYPE))

    def _chunk_groups(self, pos):
        rows = self.chunk_rows
        lo, hi = int(pos.min()) // rows, int(pos.max()) // rows
        if lo == hi:
            yield lo, slice(None)
        else:
            which = pos // rows
            for k in range(lo, hi + 1):
                yield k, which == k

    def push_words(self, idx, words):
        """Push one 16-bit word onto the tail of each element in ``idx``."""
        if idx.size == 0:
            return
        pos = self.ptr[idx]
        self.reserve(int(pos.max()) + 1)
        for k, sel in self._chunk_groups(pos):
            self.chunks[k][pos[sel] % self.chunk_rows, idx[sel]] = words[sel]
        self.ptr[idx] = pos + 1

    def pop_words(self, idx):
        """Pop one word from the tail of each element in ``idx`` (as uint64); raise if any is empty."""
        if idx.size == 0:
            return np.zeros(0, dtype=np.uint64)
        pos = self.ptr[idx] - 1
        if pos.min() < 0:
            bad = int(idx[np.argmin(pos)])
            raise BufferUnderflowError(
                f"information buffer of element {bad} is empty but a pop needs a word: "
                "the buffer is corrupt or the reverse pass does not mirror the forward pass")
        words = np.empty(idx.size, dtype=np.uint64)
        for k, sel in self._chunk_groups(pos):
            words[sel] = self.chunks[k][pos[sel] % self.chunk_rows, idx[sel]]
        self.ptr[idx] = pos
        self.release()
        return words

    def release(self):
        """Drop trailing chunks that no element uses any more."""
        top = int(self.ptr.max()) if self.size else 0
        while self.chunks and self.capacity - self.chunk_rows >= top:
            self.chunks.pop()

    # ----------------------------------------------------- multiply by beta
    def multiply(self, V, n, idx=None):
        """``V * n / 2**32`` to within one unit, exactly invertible; returns the new int64 values.

        ``V`` (int64) and ``n`` (int64 in ``[1, 2**32]``, scalar or per element)
        refer to the elements ``idx`` (all elements when None).  Elements with
        ``n == 2**32`` are unchanged.
        """
        return self._apply(V, n, idx, forward=True)

    def divide(self, V, n, idx=None):
        """Exact inverse of :meth:`multiply` (pops the bits it stored)."""
        return self._apply(V, n, idx, forward=False)

    def _apply(self, V, n, idx, forward):
        V = np.asarray(V, dtype=np.int64)
        idx = np.arange(self.size) if idx is None else np.asarray(idx, dtype=np.int64)
        if V.shape != idx.shape:
            raise ValueError(f"V has shape {V.shape} but {idx.size} elements were named")
        n = np.broadcast_to(np.asarray(n, dtype=np.int64), V.shape)
        sel = n < BETA_ONE
        if not sel.any():
            return V.copy()
        out = V.copy()
        if sel.all():
            sel = slice(None)
        step = self._forward if forward else self._reverse
        out[sel] = step(out[sel], n[sel], idx[sel])
        return out

    def _forward(self, V, n, idx):
        head = self.head[idx]
        limit = _spill_threshold(n)
        for _ in range(2):                    # n >= 2**16 spills at most once, n >= 1 twice
            spill = np.flatnonzero(head >= limit)
            if spill.size == 0:
                break
            self.push_words(idx[spill], (head[spill] & _MASK_WORD).astype(WORD_DTYPE))
            head[spill] >>= _UWORD
        nu = n.astype(np.uint64)
        u = (head % nu).astype(np.int64)      # pop u in [0, n): head in [n 2**16, n 2**32)
        V1, r = multiply_ints(V, n, u)
        self.head[idx] = ((head // nu) << _U32) | r
        return V1

    def _reverse(self, V1, n, idx):
        head = self.head[idx]
        V, u = divide_ints(V1, head & _MASK32, n)
        head = (head >> _U32) * n.astype(np.uint64) + u.astype(np.uint64)
        for _ in range(2):
            refill = np.flatnonzero(head < _U64(HEAD_LOW))
            if refill.size == 0:
                break
            head[refill] = (head[refill] << _UWORD) | self.pop_words(idx[refill])
        self.head[idx] = head
        return V

    # ---------------------------------------------------------- accounting
    def bits(self):
        """Information held, in bits, summed over elements (16 per tail word + head above 2**48)."""
        if self.size == 0:
            return 0.0
        return float(WORD_BITS * self.ptr.sum()
                     + np.sum(np.log2(self.head.astype(np.float64)) - (HEAD_BITS - WORD_BITS)))

    def words(self):
        """Tail words written and not yet popped, summed over elements."""
        return int(self.ptr.sum())

    def nbytes(self):
        """Bytes the buffer occupies (heads, pointers and allocated chunks)."""
        return int(self.head.nbytes + self.ptr.nbytes + sum(c.nbytes for c in self.chunks))

    def is_empty(self):
        return bool(np.all(self.head == _U64(HEAD_LOW)) and np.all(self.ptr == 0))

    def check_empty(self):
        """Raise :class:`ReversibilityError` unless every stack is back at its initial state."""
        if self.is_empty():
            return
        bad = np.flatnonzero((self.head != _U64(HEAD_LOW)) | (self.ptr != 0))
        raise ReversibilityError(
            f"information buffer did not return to its initial state in {bad.size} of "
            f"{self.size} elements (first: element {int(bad[0])}, head={int(self.head[bad[0]])}, "
            f"{int(self.ptr[bad[0]])} tail words left): the reverse pass did not mirror the forward pass")

    # --------------------------------------------------------- persistence
    def tail_matrix(self):
        """All tail words as one ``uint16[max_ptr, N]`` array (a copy; for checkpoints)."""
        top = int(self.ptr.max()) if self.size else 0
        if top == 0:
            return np.zeros((0, self.size), dtype=WORD_DTYPE)
        return np.concatenate(self.chunks, axis=0)[:top].copy()

    @classmethod
    def from_arrays(cls, head, ptr, tail, chunk_rows=None):
        """Rebuild a buffer from :meth:`tail_matrix`, heads and pointers (validated).

        ``tail`` must hold 16-bit words (a ``uint16`` array, or integers below 2**16).
        """
        head = np.asarray(head, dtype=np.uint64)
        ptr = np.asarray(ptr, dtype=np.int64)
        tail = np.asarray(tail)
        if head.ndim != 1 or ptr.shape != head.shape or tail.ndim != 2 or tail.shape[1] != head.size:
            raise ValueError("inconsistent buffer arrays: head, ptr must be 1-D of equal size "
                             "and tail of shape (words, size)")
        if tail.dtype != WORD_DTYPE:
            words = tail.astype(WORD_DTYPE) if tail.dtype.kind in "iuf" else None
            if words is None or not np.array_equal(words, tail):
                raise ValueError(f"buffer tail words must be {WORD_BITS}-bit unsigned integers "
                                 f"(got dtype {tail.dtype} with other values): this buffer "
                                 "format stores uint16 words")
            tail = words
        if np.any(head < _U64(HEAD_LOW)):
            raise ValueError("buffer heads must lie in [2**48, 2**64)")
        if ptr.size and (ptr.min() < 0 or ptr.max() > tail.shape[0]):
            raise ValueError("buffer pointers out of range of the tail")
        buf = cls(head.size, chunk_rows)
        buf.head[:] = head
        buf.ptr[:] = ptr
        if tail.shape[0]:
            buf.reserve(tail.shape[0])
            rows = buf.chunk_rows
            for k in range(len(buf.chunks)):
                part = tail[k * rows:(k + 1) * rows]
                buf.chunks[k][:part.shape[0]] = part
        return buf
