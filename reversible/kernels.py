"""Executors of one exact momentum step: the NumPy specification and compiled variants.

A kernel is a namespace with three functions on int64 fixed-point vectors:

* ``forward_step(W, V, g, alpha_row, n_row, schedule, buffer, frac_bits, t, w_out=None) -> (W, V)``:
  ``V <- n/2**32 * V - fix((1 - beta) g)``, then ``W <- W + fix(alpha * V)``; with
  ``w_out`` (a float64 N-vector) also writes ``to_float(W)`` of the new weights into it
  (the compiled kernel does so in the same pass);
* ``reverse_position(W, V, alpha_row, schedule, frac_bits, t) -> W``: undo the position update;
* ``reverse_velocity(V, g, n_row, schedule, buffer, frac_bits, t) -> V``: undo the velocity update.

``alpha_row`` and ``n_row`` are the step's per-group values (length G).  All
kernels must agree bit for bit with :data:`numpy_kernel`, which is the
specification, and raise the same errors with the same messages; the tests
check this.  A kernel may update ``W`` and ``V`` in place (the compiled one
does): callers use the returned arrays and do not keep the old ones.

Kernels: ``"numpy"`` (the specification), ``"numba"`` (one compiled pass per
step, :mod:`reversible.numba_kernels`); ``get("auto")`` picks numba and falls
back to NumPy when numba cannot be imported.
"""

import types

import numpy as np

from .buffer import one_minus_beta
from .fixedpoint import checked_add, to_fixed, to_float


def _row_per_element(row, schedule):
    """The step's per-group row as a scalar (all groups equal) or an N-vector."""
    if row.shape[0] == 1 or np.all(row == row[0]):
        return row[0]
    return row[schedule.group_index]


def _np_forward_step(W, V, g, alpha_row, n_row, schedule, buffer, frac_bits, t, w_out=None):
    n_e = _row_per_element(n_row, schedule)
    alpha_e = _row_per_element(alpha_row, schedule)
    V = buffer.multiply(V, n_e)
    D = to_fixed(one_minus_beta(n_e) * g, frac_bits, "gradient step (1 - beta) * g", t)
    V = checked_add(V, D, frac_bits, "velocity", t, subtract=True)
    D = to_fixed(alpha_e * to_float(V, frac_bits), frac_bits, "weight step alpha * v", t)
    W = checked_add(W, D, frac_bits, "weights", t)
    if w_out is not None:
        w_out[...] = to_float(W, frac_bits)
    return W, V


def _np_reverse_position(W, V, alpha_row, schedule, frac_bits, t):
    alpha_e = _row_per_element(alpha_row, schedule)
    D = to_fixed(alpha_e * to_float(V, frac_bits), frac_bits, "weight step alpha * v", t)
    return checked_add(W, D, frac_bits, "weights", t, subtract=True)


def _np_reverse_velocity(V, g, n_row, schedule, buffer, frac_bits, t):
    n_e = _row_per_element(n_row, schedule)
    D = to_fixed(one_minus_beta(n_e) * g, frac_bits, "gradient step (1 - beta) * g", t)
    V = checked_add(V, D, frac_bits, "velocity", t)
    return buffer.divide(V, n_e)


numpy_kernel = types.SimpleNamespace(
    name="numpy",
    forward_step=_np_forward_step,
    reverse_position=_np_reverse_position,
    reverse_velocity=_np_reverse_velocity,
)

def _load_numba():
    """The compiled CPU kernel (:mod:`reversible.numba_kernels`); ImportError without numba."""
    from .numba_kernels import numba_kernel
    return numba_kernel


_REGISTRY = {"numpy": lambda: numpy_kernel, "numba": _load_numba}

_WARM = {}
_WARM_NOTICE_AFTER_S = 1.0


def warm_up(name="auto"):
    """Compile kernel ``name`` once (or load it from numba's cache); returns the seconds spent.

    Runs tiny problems through every regime (identity, at most one spilled
    word per step, two words per step for ``beta < 2**-16``, a per-group
    mixture, forward and reverse, serial and parallel loops) so no later call
    compiles.  Prints one line to stderr only when numba actually compiles
    (a cache miss) and it takes longer than a second; loading the on-disk
    cache prints nothing.  Benchmarks call it first so compile time never
    enters their timings.
    """
    import sys
    import threading
    import time

    kernel = get(name)
    if kernel.name in _WARM:
        return 0.0
    compiling = getattr(kernel, "compiling", lambda: False)
    done = threading.Event()

    def notice():       # one line, once the kernel is seen compiling (not loading a cache)
        while not done.wait(0.2):
            if time.perf_counter() - start > _WARM_NOTICE_AFTER_S and compiling():
                print("compiling the exact kernel (once, cached) ...", file=sys.stderr, flush=True)
                return

    start = time.perf_counter()
    watcher = threading.Thread(target=notice, daemon=True)
    watcher.start()
    try:
        _exercise(kernel)
    finally:
        done.set()
        watcher.join()
    _WARM[kernel.name] = time.perf_counter() - start
    return _WARM[kernel.name]


def _exercise(kernel):
    """A few forward and reverse steps over every regime, serial and parallel (checks the round trip)."""
    from .buffer import InfoBuffer
    from .trajectory import Schedule

    T, F = 3, 40
    betas = np.array([[1.0, 0.9, 0.3, 2.0 ** -20], [0.99, 1.0, 2.0 ** -20, 0.2],
                      [0.3, 0.3, 1.0, 0.9999]])     # identity, one spill, two spills per step
    sizes = [8, 8]
    if getattr(kernel, "parallel_min", 0):           # the parallel loops compile separately
        sizes.append(kernel.parallel_min)
    for N, G in zip(sizes, (4, 1, 4)):
        group_index = np.arange(N) * G // N
        sched = Schedule.build(np.full((T, G), 0.1), betas[:, :G], group_index, G)
        rng = np.random.default_rng(0)
        W0 = to_fixed(rng.standard_normal(N), F)
        V0 = to_fixed(rng.standard_normal(N), F)
        gs = rng.standard_normal((T, N))
        W, V, buf = W0.copy(), V0.copy(), InfoBuffer(N, 1)
        for t in range(T):
            W, V = kernel.forward_step(W, V, gs[t], sched.alphas[t], sched.n[t], sched, buf, F, t)
        for t in reversed(range(T)):
            W = kernel.reverse_position(W, V, sched.alphas[t], sched, F, t)
            V = kernel.reverse_velocity(V, gs[t], sched.n[t], sched, buf, F, t)
        if not (np.array_equal(W, W0) and np.array_equal(V, V0) and buf.is_empty()):
            raise AssertionError(f"kernel {kernel.name!r} did not reverse its warm-up problem")


def register(name, loader):
    """Register a kernel under ``name``; ``loader()`` returns it (called lazily)."""
    _REGISTRY[name] = loader


def available():
    return sorted(_REGISTRY)


def get(name="auto"):
    """The kernel called ``name``; ``"auto"`` picks the fastest that loads here."""
    if not isinstance(name, str):
        return name
    if name == "auto":
        for candidate in ("numba", "numpy"):
            if candidate in _REGISTRY:
                try:
                    return _REGISTRY[candidate]()
                except ImportError:
                    continue
    if name not in _REGISTRY:
        raise ValueError(f"unknown kernel {name!r}; choose one of {['auto'] + available()}")
    return _REGISTRY[name]()
