"""The exact Adam step on a GPU (CuPy) or on its CPU emulation: device-resident ``W, M, S``,
heads, pointers and a dense ``uint16[capacity, N]`` tail, stepped by the CUDA kernels of
:mod:`reversible.gpu._adam_source`, bit for bit the NumPy specification
(:mod:`reversible.adam_rule`).

    dev = DeviceAdam(schedule, w0, backend=emulated_backend())     # or backend=None: CuPy
    for t in range(T): dev.forward(g_t, t)
    ... dev.undo_position(t); g = grad(dev.w()); dev.undo_moments(g, t) ...

Every kernel launch has its own flag word on the device (the lowest failing
check, in the specification's order).  By default a launch's flag is read at
once and its error raised; with ``deferred=True`` nothing waits for the device
and :meth:`DeviceAdam.first_error` reads the flags of many launches in one copy
(the front end, :func:`reversible.gpu.adam`, does that every ``check_every`` steps).
"""

import numpy as np

from reversible.adam_rule import (M_NAME, M_STEP, S_NAME, S_STEP, W_NAME, W_STEP, AdamFormat,
                                  fix_error, negative_s_error, overflow_error, step_constants)
from reversible.buffer import HEAD_LOW, UNDO_OVERFLOW_MESSAGE
from reversible.errors import BufferUnderflowError, FixedPointOverflowError, ReversibilityError

from . import _adam_source, _source
from .engine import bits_bound, buffer_figures, host, to_fixed_device

NO_FLAG = (1 << 64) - 1
BLOCK = 256
CHUNK = 64              # steps whose constants are copied to the device together
FORWARD, UNDO_POSITION, UNDO_MOMENTS = "adam_fwd", "adam_undo_position", "adam_undo_moments"


def emulated_backend():
    """The kernels compiled for the CPU (NumPy arrays); RuntimeError without a C++ compiler."""
    from . import emulate
    return emulate.backend()


_CUPY_BACKENDS = {}


def cupy_backend():
    """The kernels compiled by CuPy for the current device (once per device)."""
    import types

    from ._cupy import require_cupy
    cp = require_cupy()
    dev = cp.cuda.runtime.getDevice()
    if dev not in _CUPY_BACKENDS:
        mod = cp.RawModule(code=_source.SOURCE + _adam_source.ADAM_SOURCE,
                           options=("--fmad=false",))
        kernels = {name: (lambda f: lambda grid, block, args: f(grid, block, args))(
            mod.get_function(name)) for name in _adam_source.KERNELS}
        _CUPY_BACKENDS[dev] = types.SimpleNamespace(xp=cp, kernels=kernels)
    return _CUPY_BACKENDS[dev]


def tail_capacity(schedule):
    """Tail words per element that ``schedule.T`` steps can need: each multiply by
    ``n / 2**32`` stores at most :func:`reversible.gpu.engine.bits_bound` bits net, in
    16-bit words, plus a few words held in mid-step."""
    bits = 0.0
    for n in (schedule.n, schedule.n2, schedule.n_decay):
        bits += float(np.max(np.sum(bits_bound(n), axis=0), initial=0.0))
    return int(np.ceil(bits / 16.0)) + 8


def _underflow(t, cap):
    return BufferUnderflowError(f"information buffer empty at step {t} on the device: the buffer "
                                "is corrupt or the reverse pass does not mirror the forward pass")


def _capacity(t, cap):
    return ReversibilityError(f"the device tail outgrew its {cap} words per element at step {t}")


def _undo_overflow(t, cap):
    return FixedPointOverflowError(UNDO_OVERFLOW_MESSAGE)


# kernel -> the error of each bit of its flag (the order of _adam_source's *_BITS), from (t, capacity)
_ERRORS = {
    FORWARD: (lambda t, c: fix_error(M_STEP, t, False), lambda t, c: fix_error(M_STEP, t, True),
              lambda t, c: overflow_error(M_NAME, t), lambda t, c: fix_error(S_STEP, t, False),
              lambda t, c: fix_error(S_STEP, t, True), lambda t, c: overflow_error(S_NAME, t),
              lambda t, c: negative_s_error(t), lambda t, c: fix_error(W_STEP, t, False),
              lambda t, c: fix_error(W_STEP, t, True), lambda t, c: overflow_error(W_NAME, t),
              _capacity),
    UNDO_POSITION: (lambda t, c: fix_error(W_STEP, t, False), lambda t, c: fix_error(W_STEP, t, True),
                    lambda t, c: overflow_error(W_NAME, t), _underflow, _undo_overflow),
    UNDO_MOMENTS: (lambda t, c: fix_error(S_STEP, t, False), lambda t, c: fix_error(S_STEP, t, True),
                   lambda t, c: overflow_error(S_NAME, t), _underflow, _undo_overflow,
                   lambda t, c: fix_error(M_STEP, t, False), lambda t, c: fix_error(M_STEP, t, True),
                   lambda t, c: overflow_error(M_NAME, t), _underflow, _undo_overflow),
}


class DeviceAdam:
    """Exact Adam state on a device (see the module docstring).

    ``w0`` may be a NumPy or device array; ``frac_bits`` an int, a dict
    ``{"w", "m", "s"}`` or an :class:`~reversible.adam_rule.AdamFormat` (the
    moments' formats are chosen from the first gradient unless given).
    """

    def __init__(self, schedule, w0, frac_bits=None, backend=None, deferred=False):
        self.backend = cupy_backend() if backend is None else backend
        xp = self.xp = self.backend.xp
        self.schedule, self.T = schedule, schedule.T
        self.fmt = frac_bits if isinstance(frac_bits, AdamFormat) else AdamFormat.parse(
            frac_bits, schedule.G)
        self.W0 = to_fixed_device(xp, w0, self.fmt.w, "initial weights w0").ravel()
        self.N = self.W0.size
        self.W = self.W0.copy()
        self.M = xp.zeros(self.N, dtype=np.int64)
        self.S = xp.zeros(self.N, dtype=np.int64)
        self.head = xp.full(self.N, HEAD_LOW, dtype=np.uint64)
        self.ptr = xp.zeros(self.N, dtype=np.int32)
        self.cap = tail_capacity(schedule)
        self.tail = xp.zeros((self.cap, self.N), dtype=np.uint16)
        self.gidx = xp.asarray(schedule.group_index.astype(np.int32))
        self.deferred = bool(deferred)
        self._no_flag = xp.asarray(np.array([NO_FLAG], dtype=np.uint64))
        self.flags = xp.empty(3 * self.T, dtype=np.uint64)       # one word per launch
        self.flags[:] = self._no_flag
        self._chunk = None      # (first step, (3, steps, G) int64 rows, (steps, G, 17) constants)

    def _constants(self, t):
        """Step ``t``'s ``(n1, n2, nd)`` rows and constants on the device, as the numba kernel
        reads them: computed and copied for :data:`CHUNK` steps at a time (two host-to-device
        copies per chunk instead of four per launch)."""
        start = (t // CHUNK) * CHUNK
        if self._chunk is None or self._chunk[0] != start:
            rows, consts = step_constants(self, slice(start, min(start + CHUNK, self.T)))
            xp = self.xp
            self._chunk = (start, xp.asarray(np.ascontiguousarray(np.stack(rows))),
                           xp.asarray(np.ascontiguousarray(consts)))
        _, rows, consts = self._chunk
        i = t - start
        return [rows[0, i], rows[1, i], rows[2, i]], consts[i]

    def slot(self, kernel, t):
        """The flag word of a launch: forward steps first, then the reverse pass's two per step."""
        if kernel == FORWARD:
            return t
        return self.T + 2 * (self.T - 1 - t) + (kernel == UNDO_MOMENTS)

    def _launch(self, kernel, t, *args):
        s = self.slot(kernel, t)
        flag = self.flags[s:s + 1]
        flag[:] = self._no_flag
        grid = ((self.N + BLOCK - 1) // BLOCK,)
        self.backend.kernels[kernel](grid, (BLOCK,), args + self._common() + (flag,))
        if not self.deferred:
            (err,) = self.errors([(kernel, t)])
            if err is not None:
                raise err

    def errors(self, launches):
        """The error each launch of ``launches`` (``(kernel, t)`` pairs) recorded, or None for
        those that recorded none (one device-to-host copy)."""
        if not launches:
            return []
        slots = [self.slot(k, t) for k, t in launches]
        lo, hi = min(slots), max(slots) + 1
        flags = host(self.flags[lo:hi])
        return [None if int(flags[s - lo]) == NO_FLAG else _ERRORS[k][int(flags[s - lo])](t, self.cap)
                for (k, t), s in zip(launches, slots)]

    def reset_reverse_flags(self):
        self.flags[self.T:] = self._no_flag

    def _common(self):
        return (self.gidx, np.int64(self.N), np.int32(self.schedule.G > 1), np.int64(self.cap))

    def w(self):
        """Float64 weights on the device."""
        return self.W.astype(np.float64) * 2.0 ** -self.fmt.w

    def forward(self, g, t):
        g = self.xp.ascontiguousarray(self.xp.asarray(g, dtype=np.float64))
        if self.fmt.m is None or self.fmt.s is None:
            self.fmt.resolve(host(g), self.schedule)
        (n1, n2, nd), consts = self._constants(t)
        self._launch(FORWARD, t, self.W, self.M, self.S, self.head, self.ptr, self.tail, g,
                     n1, n2, nd, consts)

    def undo_position(self, t):
        (_, _, nd), consts = self._constants(t)
        self._launch(UNDO_POSITION, t, self.W, self.M, self.S, self.head, self.ptr, self.tail,
                     nd, consts)

    def undo_moments(self, g, t):
        g = self.xp.ascontiguousarray(self.xp.asarray(g, dtype=np.float64))
        (n1, n2, _), consts = self._constants(t)
        self._launch(UNDO_MOMENTS, t, self.M, self.S, self.head, self.ptr, self.tail, g,
                     n1, n2, consts)

    # ------------------------------------------------------------ state
    def is_back(self):
        """True when ``W`` equals its initial bits, the moments are zero and every stack empty."""
        xp = self.xp
        return bool(xp.array_equal(self.W, self.W0) & ~xp.any(self.M) & ~xp.any(self.S)
                    & self.buffer_empty())

    def buffer_empty(self):
        xp = self.xp
        return bool(xp.all(self.head == np.uint64(HEAD_LOW)) & xp.all(self.ptr == 0))

    def mismatch(self):
        """What differs from the initial state (the words of the CPU's not-reversed error)."""
        xp = self.xp
        return (f"{int(xp.count_nonzero(self.W != self.W0))} weights, "
                f"{int(xp.count_nonzero(self.M))} first moments and "
                f"{int(xp.count_nonzero(self.S))} second moments differ")

    def buffer_stats(self):
        return buffer_figures(self.xp, self.head, self.ptr, self.tail)

    def copy(self):
        """A deep copy of the device state (so a reverse pass can be repeated)."""
        out = DeviceAdam.__new__(DeviceAdam)
        out.__dict__.update(self.__dict__)
        out.fmt = AdamFormat(self.fmt.w, None if self.fmt.m is None else self.fmt.m.copy(),
                             None if self.fmt.s is None else self.fmt.s.copy())
        for name in ("W", "M", "S", "head", "ptr", "tail", "flags"):
            setattr(out, name, getattr(self, name).copy())
        return out
