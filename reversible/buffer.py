"""The information buffer: a vectorised range-ANS stack per element.

Multiplying a fixed-point number ``V`` by ``beta = n / 2**16`` destroys
``log2(2**16 / n)`` bits.  :class:`InfoBuffer` keeps those bits so that the
multiplication can be undone exactly, at a cost within a fraction of a percent
of that information bound and with O(1) work per element per step.

Each element owns one rANS state:

* ``head``: a uint64 kept in ``[2**31, 2**63)``, starting at ``2**31``;
* a stack of uint32 words (its *tail*), written when ``head`` overflows.

Tails are stored densely as a list of chunks, each ``uint32[rows, N]``; word
``j`` of element ``i`` lives at ``chunks[j // rows][j % rows, i]``.  Growth
appends a chunk and never copies the history.

The forward multiply is ``V -> floor(V / 2**16) * n + u``: the 16 low bits
``r`` of ``V`` are pushed into the state and a symbol ``u`` in ``[0, n)`` is
popped from it (bits back).  For ``beta > 1/2`` both happen in one fused
bijection with total ``M = 2**24`` (see DESIGN.md section 4); for
``beta <= 1/2`` they are two standard rANS steps (push 16 raw bits, then pop a
near-uniform symbol over ``[0, n)`` with total ``2**24``); ``beta = 1`` is the
identity.  The reverse is the exact inverse of each.

This NumPy code is the specification: the compiled CPU kernel and the CUDA
kernel implement the same integer semantics and are tested against it.
"""

import numpy as np

from .errors import BufferUnderflowError, ReversibilityError

BETA_BITS = 16                 # beta is quantised to n / 2**16
BETA_ONE = 1 << BETA_BITS      # n for beta = 1 (the identity)
PREC_BITS = 24                 # rANS total M = 2**24
SHIFT = PREC_BITS - BETA_BITS  # s = k - 16 = 8
HEAD_LOW = 1 << 31             # head lives in [2**31, 2**63)
HEAD_HIGH = 1 << 63

_U64 = np.uint64
_I64 = np.int64
_MASK16 = _I64(0xFFFF)
_MASK32 = _U64(0xFFFFFFFF)
_MASK24 = _U64((1 << PREC_BITS) - 1)
_MASK_SHIFT = _U64((1 << SHIFT) - 1)


def quantize_beta(beta):
    """Return ``n = round(beta * 2**16)`` as int64 (the engine multiplies by n / 2**16).

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
            f"beta {float(beta[n < 1].ravel()[0])!r} is below 2**-17 and rounds to zero "
            "at 16 bits; use beta >= 2**-16")
    return n


def effective_beta(beta):
    """The beta the engine actually applies: ``round(beta * 2**16) / 2**16``."""
    return quantize_beta(beta) / float(BETA_ONE)


def ideal_bits(n):
    """Information destroyed by one multiply by ``n / 2**16``: ``log2(2**16 / n)``."""
    return np.log2(BETA_ONE / np.asarray(n, dtype=np.float64))


def symbol_table(n):
    """Frequencies of the 2**24-total distribution over ``[0, n)``: ``(q, rho)``.

    Symbol ``u`` has frequency ``q + 1`` if ``u < rho`` else ``q`` and
    cumulative frequency ``u * q + min(u, rho)``.
    """
    n = np.asarray(n, dtype=np.int64)
    return _I64(1 << PREC_BITS) // n, _I64(1 << PREC_BITS) % n


def _decode_symbol(cf, q, rho):
    """The symbol ``u`` with ``c(u) <= cf < c(u) + f(u)`` (all int64)."""
    boundary = rho * (q + 1)
    return np.where(cf < boundary, cf // (q + 1), (cf - rho) // np.maximum(q, 1))


def _freq_cum(u, q, rho):
    return q + (u < rho), u * q + np.minimum(u, rho)


class InfoBuffer:
    """Per-element rANS stacks holding the bits that multiplications by beta destroy.

    Parameters
    ----------
    size : int
        Number of elements (one stack each).
    chunk_rows : int, optional
        Words per element in each tail chunk; by default about 4 MiB per chunk.
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
            self.chunks.append(np.zeros((self.chunk_rows, self.size), dtype=np.uint32))

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
        """Push one uint32 word onto the tail of each element in ``idx``."""
        if idx.size == 0:
            return
        pos = self.ptr[idx]
        self.reserve(int(pos.max()) + 1)
        for k, sel in self._chunk_groups(pos):
            self.chunks[k][pos[sel] % self.chunk_rows, idx[sel]] = words[sel]
        self.ptr[idx] = pos + 1

    def pop_words(self, idx):
        """Pop one word from the tail of each element in ``idx``; raise if any is empty."""
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
        """Exact ``V * n / 2**16`` rounded by bits-back; returns the new int64 values.

        ``V`` (int64) and ``n`` (int64, scalar or per element) refer to the
        elements ``idx`` (all elements when None).  Elements with ``n == 2**16``
        are unchanged.
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
        out = V.copy()
        for kind in ("fused", "two_step"):
            sel = (n > (BETA_ONE >> 1)) & (n < BETA_ONE) if kind == "fused" else (n <= (BETA_ONE >> 1))
            if not sel.any():
                continue
            if sel.all():
                sel = slice(None)
            step = {("fused", True): self._fused_forward, ("fused", False): self._fused_reverse,
                    ("two_step", True): self._two_step_forward,
                    ("two_step", False): self._two_step_reverse}[kind, forward]
            out[sel] = step(out[sel], n[sel], idx[sel])
        return out

    def _fused_forward(self, V, n, idx):
        q, rho = symbol_table(n)
        head = self.head[idx]
        r = V & _MASK16
        cf = ((head & _MASK_SHIFT).astype(np.int64) << _I64(BETA_BITS)) | r
        u = _decode_symbol(cf, q, rho)
        f, c = _freq_cum(u, q, rho)
        head = f.astype(np.uint64) * (head >> _U64(SHIFT)) + (cf - c).astype(np.uint64)
        spill = np.flatnonzero(head >= _U64(HEAD_HIGH))
        if spill.size:
            self.push_words(idx[spill], (head[spill] & _MASK32).astype(np.uint32))
            head[spill] >>= _U64(32)
        self.head[idx] = head
        return (V >> _I64(BETA_BITS)) * n + u

    def _fused_reverse(self, V, n, idx):
        q, rho = symbol_table(n)
        head = self.head[idx]
        u = V % n
        f, c = _freq_cum(u, q, rho)
        fu = f.astype(np.uint64)
        refill = np.flatnonzero(head < (fu << _U64(PREC_BITS - 1)))   # f * 2**(31+16-k)
        if refill.size:
            head[refill] = (head[refill] << _U64(32)) | self.pop_words(idx[refill])
        cf = c + (head % fu).astype(np.int64)
        head = ((head // fu) << _U64(SHIFT)) + (cf >> _I64(BETA_BITS)).astype(np.uint64)
        self.head[idx] = head
        return ((V // n) << _I64(BETA_BITS)) + (cf & _MASK16)

    def _two_step_forward(self, V, n, idx):
        q, rho = symbol_table(n)
        head = self.head[idx]
        # push 16 raw bits r (frequency 1 of 2**16)
        spill = np.flatnonzero(head >= _U64(1 << 47))
        if spill.size:
            self.push_words(idx[spill], (head[spill] & _MASK32).astype(np.uint32))
            head[spill] >>= _U64(32)
        head = (head << _U64(BETA_BITS)) | (V & _MASK16).astype(np.uint64)
        # pop u in [0, n) with total 2**24
        cf = (head & _MASK24).astype(np.int64)
        u = _decode_symbol(cf, q, rho)
        f, c = _freq_cum(u, q, rho)
        head = f.astype(np.uint64) * (head >> _U64(PREC_BITS)) + (cf - c).astype(np.uint64)
        refill = np.flatnonzero(head < _U64(HEAD_LOW))
        if refill.size:
            head[refill] = (head[refill] << _U64(32)) | self.pop_words(idx[refill])
        self.head[idx] = head
        return (V >> _I64(BETA_BITS)) * n + u

    def _two_step_reverse(self, V, n, idx):
        q, rho = symbol_table(n)
        head = self.head[idx]
        u = V % n
        f, c = _freq_cum(u, q, rho)
        fu = f.astype(np.uint64)
        # push u back (encode with total 2**24)
        spill = np.flatnonzero(head >= (fu << _U64(39)))   # (2**31 / 2**24) * 2**32 * f
        if spill.size:
            self.push_words(idx[spill], (head[spill] & _MASK32).astype(np.uint32))
            head[spill] >>= _U64(32)
        head = ((head // fu) << _U64(PREC_BITS)) + c.astype(np.uint64) + head % fu
        # pop the 16 raw bits
        r = (head & _U64(0xFFFF)).astype(np.int64)
        head >>= _U64(BETA_BITS)
        refill = np.flatnonzero(head < _U64(HEAD_LOW))
        if refill.size:
            head[refill] = (head[refill] << _U64(32)) | self.pop_words(idx[refill])
        self.head[idx] = head
        return ((V // n) << _I64(BETA_BITS)) + r

    # ---------------------------------------------------------- accounting
    def bits(self):
        """Information held, in bits, summed over elements (32 per tail word + head)."""
        if self.size == 0:
            return 0.0
        return float(32.0 * self.ptr.sum() + np.sum(np.log2(self.head.astype(np.float64)) - 31.0))

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
        """All tail words as one ``uint32[max_ptr, N]`` array (a copy; for checkpoints)."""
        top = int(self.ptr.max()) if self.size else 0
        if top == 0:
            return np.zeros((0, self.size), dtype=np.uint32)
        return np.concatenate(self.chunks, axis=0)[:top].copy()

    @classmethod
    def from_arrays(cls, head, ptr, tail, chunk_rows=None):
        """Rebuild a buffer from :meth:`tail_matrix`, heads and pointers (validated)."""
        head = np.asarray(head, dtype=np.uint64)
        ptr = np.asarray(ptr, dtype=np.int64)
        tail = np.asarray(tail, dtype=np.uint32)
        if head.ndim != 1 or ptr.shape != head.shape or tail.ndim != 2 or tail.shape[1] != head.size:
            raise ValueError("inconsistent buffer arrays: head, ptr must be 1-D of equal size "
                             "and tail of shape (words, size)")
        if np.any(head < _U64(HEAD_LOW)) or np.any(head >= _U64(HEAD_HIGH)):
            raise ValueError("buffer heads must lie in [2**31, 2**63)")
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
