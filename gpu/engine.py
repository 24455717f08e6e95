"""Device state of exact training and the launches of the fused CUDA kernels.

:class:`Engine` keeps ``W``, ``V`` (int64 fixed point), one rANS head per
element, the per-element tail pointers and a dense ``uint16[capacity, N]``
tail on the GPU, plus the schedules.  :meth:`Engine.forward_step` and
:meth:`Engine.reverse_step` are one kernel launch each and never wait for the
device: failures land in a device flag that :meth:`Engine.check` reads (the
front end calls it every ``check_every`` steps and at the end) and turns into
the exceptions of :mod:`reversible.errors`, naming the step.

The capacity of the tail is reserved up front from a proven bound on the
words one element can hold (:func:`tail_capacity`); exceeding it is recorded
as an error, never written out of bounds.  This module imports CuPy only
when an :class:`Engine` is made.
"""

import math

import numpy as np

from reversible.buffer import (BETA_ONE, HEAD_BITS, HEAD_LOW, UNDO_OVERFLOW_MESSAGE, WORD_BITS,
                               WORD_DTYPE, ideal_bits)
from reversible.errors import (BufferUnderflowError, FixedPointOverflowError, NonFiniteError,
                               ReversibilityError, ReversibleError)
from reversible.fixedpoint import overflow_remedy

from . import _source
from ._cupy import require_cupy

NO_ERROR = (1 << 64) - 1
BLOCK = 256
FWD_KERNELS = ("fwd_step2", "fwd_step")   # the first is the default: two elements per thread

# code -> (exception class, what failed, kind of failure)
_ERRORS = {
    _source.CODE_NONFINITE_G: (NonFiniteError, "gradient", "nonfinite"),
    _source.CODE_UNDERFLOW: (BufferUnderflowError, "information buffer", "underflow"),
    _source.CODE_CAPACITY: (ReversibilityError, "information buffer", "capacity"),
    _source.CODE_GRADSTEP: (FixedPointOverflowError, "gradient step (1 - beta) * g", "overflow"),
    _source.CODE_VELOCITY: (FixedPointOverflowError, "velocity", "overflow"),
    _source.CODE_WSTEP_NONFINITE: (NonFiniteError, "weight step alpha * v", "nonfinite"),
    _source.CODE_WSTEP: (FixedPointOverflowError, "weight step alpha * v", "overflow"),
    _source.CODE_WEIGHTS: (FixedPointOverflowError, "weights", "overflow"),
    _source.CODE_NONFINITE_HVP: (NonFiniteError, "Hessian-vector product", "nonfinite"),
    _source.CODE_UNDO_OVERFLOW: (FixedPointOverflowError, "velocity", "undo"),
}


def bits_bound(n):
    """Upper bound on the bits one multiply by ``n / 2**32`` adds to an element's stack.

    The head goes from ``h >= n 2**16`` to ``floor(h / n) 2**32 + r < (h / n + 1) 2**32``,
    a factor below ``(2**32 / n)(1 + 2**-16)``; spills move bits to the tail
    without adding any.  So ``log2(2**32 / n) + log2(1 + 2**-16)`` (0 for ``n = 2**32``).
    """
    n = np.asarray(n, dtype=np.int64)
    bits = ideal_bits(n) + np.log2(1.0 + 2.0 ** -16) + 1e-9
    return np.where(n >= BETA_ONE, 0.0, bits)


def tail_capacity(n):
    """Words per element to reserve for a ``(T, G)`` schedule of ``n``: never exceeded in training.

    The information ``16 * words + log2(head) - 48`` grows by at most
    :func:`bits_bound` per step and the head ends every step ``>= 2**48``; in
    mid-step (after spilling, head ``>= n 2**16 >= 2**16``) two more words may be held.
    """
    n = np.atleast_2d(np.asarray(n, dtype=np.int64))
    total = float(np.sum(np.max(bits_bound(n), axis=1)))
    return int(math.floor(total / WORD_BITS)) + 3


def step_of(seq, T, direction):
    """The training step and phase of sequence number ``seq`` of a forward or reverse pass."""
    if direction == "forward":
        return int(seq), "forward step"
    k, phase = divmod(int(seq), 2)
    return T - 1 - k, ("reverse of the velocity update" if phase else "reverse of the position update")


def error_from_key(key, T, direction, frac_bits):
    """The exception for a device flag value (``None`` if it records no error)."""
    key = int(key)
    if key == NO_ERROR:
        return None
    code, seq = key & 0xF, key >> 8
    step, phase = step_of(seq, T, direction)
    cls, what, kind = _ERRORS.get(code, (ReversibleError, "unknown", "unknown"))
    where = f"{what} at step {step} ({phase})"
    if kind == "nonfinite":
        msg = (f"{where} contains NaN or Inf: lower the learning rate or check the loss for "
               "log(0) / overflow")
    elif kind == "overflow":
        msg = (f"{where} overflows the fixed-point range; representable magnitudes are below "
               f"{2.0 ** (63 - frac_bits):g} with frac_bits={frac_bits}: use fewer frac_bits (more "
               "range, less resolution), a smaller learning rate, or rescale the problem")
    elif kind == "undo":
        msg = f"{where}: {UNDO_OVERFLOW_MESSAGE}"
    elif kind == "underflow":
        msg = (f"{where} of some element is empty but a pop needs a word at step {step} ({phase}): "
               "the buffer is corrupt or the reverse pass does not mirror the forward pass")
    elif kind == "capacity":
        msg = (f"{where} outgrew its reserved tail at step {step} ({phase}): the reverse pass does "
               "not mirror the forward pass (the gradient is not a pure function of (w, meta, t))"
               if direction == "reverse" else
               f"{where} outgrew its reserved tail at step {step}: the capacity bound is wrong "
               "(a bug in reversible.gpu; please report it)")
    else:
        msg = f"unknown device error code {code} at step {step} ({phase})"
    return cls(msg)


_MODULE = {}


def _aligned(x, nbytes=16):
    ptr = x.data.ptr if hasattr(x.data, "ptr") else x.ctypes.data
    return ptr % nbytes == 0


def host(x):
    """A NumPy copy of a CuPy (or NumPy) array."""
    return x.get() if hasattr(x, "get") else np.array(x)


def _kernels(cp):
    dev = cp.cuda.runtime.getDevice()
    if dev not in _MODULE:
        mod = cp.RawModule(code=_source.SOURCE, options=("--fmad=false",))
        _MODULE[dev] = {name: mod.get_function(name)
                        for name in ("fwd_step", "fwd_step2", "rev_step", "plain_step",
                                     "divmod_check")}
    return _MODULE[dev]


def to_fixed_device(cp, x, frac_bits, what):
    """``rint(x * 2**frac_bits)`` as int64 on the device, checked (and worded) like
    :func:`reversible.fixedpoint.to_fixed`."""
    x = cp.asarray(x, dtype=cp.float64)
    bad = int(cp.count_nonzero(~cp.isfinite(x)))
    if bad:
        raise NonFiniteError(f"{what} contains NaN or Inf ({bad} of {x.size} entries)")
    scaled = cp.rint(x * (2.0 ** frac_bits))
    if bool((cp.abs(scaled) >= 2.0 ** 63).any()):
        raise FixedPointOverflowError(
            f"{what} overflows the fixed-point range (|value| up to {float(cp.abs(x).max()):g}); "
            + overflow_remedy(frac_bits))
    return scaled.astype(cp.int64)


def buffer_figures(xp, head, ptr, tail):
    """Bits held (16 per tail word + each head above ``2**48``), words and bytes of a device
    buffer, as :class:`reversible.buffer.InfoBuffer` counts them."""
    bits = float(WORD_BITS * xp.sum(ptr, dtype=xp.float64)
                 + xp.sum(xp.log2(head.astype(xp.float64)) - (HEAD_BITS - WORD_BITS)))
    return {"buffer_bits": bits, "buffer_words": int(xp.sum(ptr, dtype=xp.int64)),
            "buffer_bytes": int(head.nbytes + ptr.nbytes + tail.nbytes)}


class Engine:
    """Exact SGD-with-momentum state on one GPU.

    ``alphas`` float64 ``(T, G)``, ``n`` int64 ``(T, G)`` (``beta = n / 2**32``),
    ``group_index`` an int array of length N or None (one group).
    """

    def __init__(self, w0, v0, alphas, n, group_index, frac_bits, capacity=None, backend=None):
        if backend is None:
            cp = self.cp = require_cupy()
            self.k = _kernels(cp)
            sms = cp.cuda.Device().attributes["MultiProcessorCount"]
        else:   # e.g. reversible.gpu.emulate: the same CUDA source compiled for the CPU
            cp = self.cp = backend.xp
            self.k, sms = backend.kernels, backend.sms
        self.frac_bits = int(frac_bits)
        self.scale, self.inv_scale = 2.0 ** self.frac_bits, 2.0 ** -self.frac_bits
        alphas = np.ascontiguousarray(alphas, dtype=np.float64)
        n = np.ascontiguousarray(n, dtype=np.int64)
        self.T, self.G = alphas.shape
        self.alphas_d, self.n_d = cp.asarray(alphas), cp.asarray(n)
        self.inv_d = cp.asarray(1.0 / n.astype(np.float64))    # quotient estimates (fixed up exactly)
        self.n_host = n
        self.W0 = to_fixed_device(cp, w0, self.frac_bits, "initial weights w0").ravel()
        self.V0 = to_fixed_device(cp, v0, self.frac_bits, "initial velocity v0").ravel()
        self.N = self.W0.size
        if group_index is None:
            self.gidx, self.has_gidx = cp.zeros(1, dtype=cp.int32), 0
        else:
            self.gidx, self.has_gidx = cp.asarray(group_index, dtype=cp.int32), 1
        self.capacity = tail_capacity(n) if capacity is None else int(capacity)
        self.W, self.V = self.W0.copy(), self.V0.copy()
        self.head = cp.full(self.N, HEAD_LOW, dtype=cp.uint64)
        self.ptr = cp.zeros(self.N, dtype=cp.int32)
        self.tail = cp.zeros((self.capacity, self.N), dtype=WORD_DTYPE)
        self.flag = cp.asarray(np.array([NO_ERROR], dtype=np.uint64))
        self.direction = "forward"
        self._dummy = cp.zeros(1, dtype=cp.float64)
        self.fwd_kernel = FWD_KERNELS[0]
        self.fwd_grid = ((self.N + BLOCK - 1) // BLOCK,)
        self.fwd2_grid = ((self.N + 2 * BLOCK - 1) // (2 * BLOCK),)
        self.rev_grid = (max(1, min((self.N + BLOCK - 1) // BLOCK, 8 * sms)),)

    # ------------------------------------------------------------ values
    def float_of(self, X):
        return X.astype(self.cp.float64) * self.inv_scale

    @property
    def w(self):
        return self.float_of(self.W)

    @property
    def v(self):
        return self.float_of(self.V)

    # ------------------------------------------------------------ steps
    def forward_step(self, g, t, wf=None):
        """One exact step ``t`` with gradient ``g`` (float64, device); writes ``float(W)`` into ``wf``."""
        vec = self.fwd_kernel == "fwd_step2" and (wf is None or _aligned(wf))
        name, grid = ("fwd_step2", self.fwd2_grid) if vec else ("fwd_step", self.fwd_grid)
        self.k[name](grid, (BLOCK,), (
            self.W, self.V, self.head, self.ptr, self.tail, self._dummy if wf is None else wf,
            g, self.alphas_d, self.n_d, self.inv_d, self.gidx,
            np.int64(self.N), np.int32(self.G), np.int32(self.has_gidx),
            np.int32(wf is not None), np.int32(t), np.int64(self.capacity),
            np.float64(self.scale), np.float64(self.inv_scale), np.uint64(int(t) << 8), self.flag))

    def reverse_begin(self, dw, dv):
        """Start the reverse pass with cotangents ``dw, dv`` of ``(w_T, v_T)``; undoes the last position update.

        Returns ``(u, w)``: ``u = (1 - beta_{T-1}) dv`` for the first joint VJP and ``w = w_{T-1}``.
        """
        cp = self.cp
        self.check()
        self.direction = "reverse"
        self.flag[:] = cp.asarray(np.array([NO_ERROR], dtype=np.uint64))
        self.dw = cp.array(dw, dtype=cp.float64).ravel()
        self.dv = cp.array(dv, dtype=cp.float64).ravel()
        self.d_alpha = cp.zeros((self.T, self.G), dtype=cp.float64)
        self.d_beta = cp.zeros((self.T, self.G), dtype=cp.float64)
        return self._reverse(-1, self.T - 1, self._dummy, self._dummy)

    def reverse_step(self, t, g, hw):
        """Undo the velocity update of step ``t`` (gradient ``g``, ``hw = H_ww u``), then the position update of step ``t - 1``.

        Returns ``(u, w_{t-1})`` for the next joint VJP (``(None, None)`` after step 0).
        """
        return self._reverse(int(t), int(t) - 1, g, hw)

    def _reverse(self, t_vel, t_pos, g, hw):
        cp = self.cp
        if t_pos >= 0:
            u = cp.empty(self.N, dtype=cp.float64)
            wf = cp.empty(self.N, dtype=cp.float64)
        else:
            u = wf = self._dummy
        seq_vel = 2 * (self.T - 1 - t_vel) + 1 if t_vel >= 0 else 0
        seq_pos = 2 * (self.T - 1 - t_pos) if t_pos >= 0 else 0
        self.k["rev_step"](self.rev_grid, (BLOCK,), (
            self.W, self.V, self.head, self.ptr, self.tail, wf, g, hw, self.dw, self.dv, u,
            self.alphas_d, self.n_d, self.inv_d, self.gidx, self.d_alpha, self.d_beta,
            np.int64(self.N), np.int32(self.G), np.int32(self.has_gidx), np.int32(t_pos >= 0),
            np.int32(t_vel), np.int32(t_pos), np.int64(self.capacity),
            np.float64(self.scale), np.float64(self.inv_scale),
            np.uint64(seq_vel << 8), np.uint64(seq_pos << 8), self.flag))
        return (u, wf) if t_pos >= 0 else (None, None)

    # ------------------------------------------------------------ checks
    def check(self):
        """Raise the first recorded device error (one small device-to-host copy)."""
        err = error_from_key(int(host(self.flag)[0]), self.T, self.direction, self.frac_bits)
        if err is not None:
            raise err

    def is_back(self):
        """True when ``W, V`` equal their initial bits and every stack is empty."""
        cp = self.cp
        ok = (cp.array_equal(self.W, self.W0) & cp.array_equal(self.V, self.V0)
              & cp.all(self.head == HEAD_LOW) & cp.all(self.ptr == 0))
        return bool(ok)

    # ------------------------------------------------------------ accounting
    def buffer_bits(self):
        return buffer_figures(self.cp, self.head, self.ptr, self.tail)["buffer_bits"]

    def buffer_words(self):
        return buffer_figures(self.cp, self.head, self.ptr, self.tail)["buffer_words"]

    def nbytes(self):
        return buffer_figures(self.cp, self.head, self.ptr, self.tail)["buffer_bytes"]

    def buffer_arrays(self):
        """``(head, ptr, tail)`` as NumPy arrays; ``tail`` is ``uint16[max(ptr), N]``, like
        :meth:`reversible.buffer.InfoBuffer.tail_matrix` (words above an element's pointer are stale)."""
        ptr = host(self.ptr).astype(np.int64)
        top = int(ptr.max()) if ptr.size else 0
        return host(self.head), ptr, host(self.tail[:top])

    def copy(self):
        """A deep copy of the device state (so a reverse pass can be repeated)."""
        out = Engine.__new__(Engine)
        out.__dict__.update(self.__dict__)
        for name in ("W", "V", "head", "ptr", "tail", "flag"):
            setattr(out, name, getattr(self, name).copy())
        return out
