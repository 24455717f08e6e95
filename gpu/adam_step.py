"""The exact Adam step on a GPU (CuPy) or on its CPU emulation: device-resident ``W, M, S``,
heads, pointers and a dense ``uint16[capacity, N]`` tail, stepped by the CUDA kernels of
:mod:`reversible.gpu._adam_source`, bit for bit the NumPy specification
(:mod:`reversible.adam_rule`).

    dev = DeviceAdam(schedule, w0, backend=emulated_backend())     # or backend=None: CuPy
    for t in range(T): dev.forward(g_t, t)
    ... dev.undo_position(t); g = grad(dev.w()); dev.undo_moments(g, t) ...
"""

import numpy as np

from reversible.adam_rule import (M_NAME, M_STEP, S_NAME, S_STEP, W_NAME, W_STEP, AdamFormat,
                                  fix_error, negative_s_error, overflow_error, step_constants)
from reversible.buffer import BETA_ONE, HEAD_LOW, UNDO_OVERFLOW_MESSAGE
from reversible.errors import BufferUnderflowError, FixedPointOverflowError, ReversibilityError
from reversible.fixedpoint import to_fixed

from . import _adam_source, _source

NO_FLAG = (1 << 64) - 1
BLOCK = 256
KERNELS = {
    "adam_fwd": "i64* W, i64* M, i64* S, u64* head, int* ptr, u16* tail, const double* g, "
                "const i64* n1s, const i64* n2s, const i64* nds, const double* consts, "
                "const int* gidx, i64 N, int has_gidx, i64 cap, u64* flag",
    "adam_undo_position": "i64* W, const i64* M, const i64* S, u64* head, int* ptr, u16* tail, "
                          "const i64* nds, const double* consts, const int* gidx, i64 N, "
                          "int has_gidx, i64 cap, u64* flag",
    "adam_undo_moments": "i64* M, i64* S, u64* head, int* ptr, u16* tail, const double* g, "
                         "const i64* n1s, const i64* n2s, const double* consts, const int* gidx, "
                         "i64 N, int has_gidx, i64 cap, u64* flag",
}


def emulated_backend():
    """The kernels compiled for the CPU (NumPy arrays); RuntimeError without a C++ compiler."""
    import types

    from . import emulate
    return types.SimpleNamespace(xp=np, kernels=emulate.extra_kernels(_adam_source.ADAM_SOURCE,
                                                                      KERNELS))


def cupy_backend():
    """The kernels compiled by CuPy for the current device."""
    import types

    from ._cupy import require_cupy
    cp = require_cupy()
    mod = cp.RawModule(code=_source.SOURCE + _adam_source.ADAM_SOURCE, options=("--fmad=false",))
    kernels = {name: (lambda f: lambda grid, block, args: f(grid, block, args))(mod.get_function(name))
               for name in KERNELS}
    return types.SimpleNamespace(xp=cp, kernels=kernels)


def tail_capacity(schedule):
    """Tail words per element that ``schedule.T`` steps can need: each multiply by
    ``n / 2**32`` stores at most ``log2(2**32 / n) + 1`` bits net, in 16-bit words."""
    bits = 0.0
    for n in (schedule.n, schedule.n2, schedule.n_decay):
        n = n.astype(np.float64)
        bits += float(np.max(np.sum(np.where(n < BETA_ONE, np.log2(BETA_ONE / n) + 1.0, 0.0),
                                    axis=0), initial=0.0))
    return int(np.ceil(bits / 16.0)) + 8


class DeviceAdam:
    """Exact Adam state on a device (see the module docstring)."""

    def __init__(self, schedule, w0, frac_bits=None, backend=None, g0=None):
        self.backend = cupy_backend() if backend is None else backend
        xp = self.xp = self.backend.xp
        self.schedule = schedule
        self.fmt = frac_bits if isinstance(frac_bits, AdamFormat) else AdamFormat.parse(
            frac_bits, schedule.G)
        w0 = np.ascontiguousarray(w0, dtype=np.float64).ravel()
        self.N = w0.size
        self.W = xp.asarray(to_fixed(w0, self.fmt.w, "initial weights w0"))
        self.M = xp.zeros(self.N, dtype=np.int64)
        self.S = xp.zeros(self.N, dtype=np.int64)
        self.head = xp.full(self.N, HEAD_LOW, dtype=np.uint64)
        self.ptr = xp.zeros(self.N, dtype=np.int32)
        self.cap = tail_capacity(schedule)
        self.tail = xp.zeros((self.cap, self.N), dtype=np.uint16)
        self.gidx = xp.asarray(schedule.group_index.astype(np.int32))
        self.flag = xp.full(1, NO_FLAG, dtype=np.uint64)

    # the constants of step t, as the numba kernel reads them (``stats`` only for the formats)
    def _constants(self, t):
        (n1, n2, nd), consts = step_constants(self, t)
        xp = self.xp
        return [xp.asarray(a) for a in (n1, n2, nd)], xp.asarray(np.ascontiguousarray(consts))

    def _launch(self, name, *args):
        grid = ((self.N + BLOCK - 1) // BLOCK,)
        self.flag[...] = NO_FLAG
        self.backend.kernels[name](grid, (BLOCK,), args + (self.flag,))
        return int(self.flag[0])

    def _common(self):
        return (self.gidx, np.int64(self.N), np.int32(self.schedule.G > 1), np.int64(self.cap))

    def w(self):
        """Float64 weights on the device."""
        return self.W.astype(np.float64) * 2.0 ** -self.fmt.w

    def forward(self, g, t):
        g = self.xp.ascontiguousarray(self.xp.asarray(g, dtype=np.float64))
        if self.fmt.m is None or self.fmt.s is None:
            self.fmt.resolve(np.asarray(g.get() if hasattr(g, "get") else g), self.schedule)
        (n1, n2, nd), consts = self._constants(t)
        bit = self._launch("adam_fwd", self.W, self.M, self.S, self.head, self.ptr, self.tail, g,
                           n1, n2, nd, consts, *self._common())
        if bit != NO_FLAG:
            raise ([lambda: fix_error(M_STEP, t, False), lambda: fix_error(M_STEP, t, True),
                    lambda: overflow_error(M_NAME, t), lambda: fix_error(S_STEP, t, False),
                    lambda: fix_error(S_STEP, t, True), lambda: overflow_error(S_NAME, t),
                    lambda: negative_s_error(t), lambda: fix_error(W_STEP, t, False),
                    lambda: fix_error(W_STEP, t, True), lambda: overflow_error(W_NAME, t),
                    lambda: ReversibilityError(f"the device tail outgrew its {self.cap} words "
                                               f"per element at step {t}")][bit])()

    def undo_position(self, t):
        (_, _, nd), consts = self._constants(t)
        bit = self._launch("adam_undo_position", self.W, self.M, self.S, self.head, self.ptr,
                           self.tail, nd, consts, *self._common())
        if bit != NO_FLAG:
            raise ([lambda: fix_error(W_STEP, t, False), lambda: fix_error(W_STEP, t, True),
                    lambda: overflow_error(W_NAME, t), lambda: _underflow(t),
                    lambda: FixedPointOverflowError(UNDO_OVERFLOW_MESSAGE)][bit])()

    def undo_moments(self, g, t):
        g = self.xp.ascontiguousarray(self.xp.asarray(g, dtype=np.float64))
        (n1, n2, _), consts = self._constants(t)
        bit = self._launch("adam_undo_moments", self.M, self.S, self.head, self.ptr, self.tail, g,
                           n1, n2, consts, *self._common())
        if bit != NO_FLAG:
            raise ([lambda: fix_error(S_STEP, t, False), lambda: fix_error(S_STEP, t, True),
                    lambda: overflow_error(S_NAME, t), lambda: _underflow(t),
                    lambda: FixedPointOverflowError(UNDO_OVERFLOW_MESSAGE),
                    lambda: fix_error(M_STEP, t, False), lambda: fix_error(M_STEP, t, True),
                    lambda: overflow_error(M_NAME, t), lambda: _underflow(t),
                    lambda: FixedPointOverflowError(UNDO_OVERFLOW_MESSAGE)][bit])()


def _underflow(t):
    return BufferUnderflowError(f"information buffer empty at step {t} on the device: the buffer "
                                "is corrupt or the reverse pass does not mirror the forward pass")
