"""Executors of one exact momentum step: the NumPy specification and compiled variants.

A kernel is a namespace with three functions on int64 fixed-point vectors:

* ``forward_step(W, V, g, alpha_row, n_row, schedule, buffer, frac_bits, t) -> (W, V)``:
  ``V <- n/2**16 * V - fix((1 - beta) g)``, then ``W <- W + fix(alpha * V)``;
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

from .buffer import BETA_ONE
from .fixedpoint import checked_add, to_fixed, to_float

_ONE_MINUS_BETA_SCALE = 2.0 ** -16


def _row_per_element(row, schedule):
    """The step's per-group row as a scalar (all groups equal) or an N-vector."""
    if row.shape[0] == 1 or np.all(row == row[0]):
        return row[0]
    return row[schedule.group_index]


def _np_forward_step(W, V, g, alpha_row, n_row, schedule, buffer, frac_bits, t):
    n_e = _row_per_element(n_row, schedule)
    alpha_e = _row_per_element(alpha_row, schedule)
    V = buffer.multiply(V, n_e)
    one_minus_beta = (BETA_ONE - n_e) * _ONE_MINUS_BETA_SCALE      # exact in float64
    D = to_fixed(one_minus_beta * g, frac_bits, "gradient step (1 - beta) * g", t)
    V = checked_add(V, D, frac_bits, "velocity", t, subtract=True)
    D = to_fixed(alpha_e * to_float(V, frac_bits), frac_bits, "weight step alpha * v", t)
    W = checked_add(W, D, frac_bits, "weights", t)
    return W, V


def _np_reverse_position(W, V, alpha_row, schedule, frac_bits, t):
    alpha_e = _row_per_element(alpha_row, schedule)
    D = to_fixed(alpha_e * to_float(V, frac_bits), frac_bits, "weight step alpha * v", t)
    return checked_add(W, D, frac_bits, "weights", t, subtract=True)


def _np_reverse_velocity(V, g, n_row, schedule, buffer, frac_bits, t):
    n_e = _row_per_element(n_row, schedule)
    one_minus_beta = (BETA_ONE - n_e) * _ONE_MINUS_BETA_SCALE
    D = to_fixed(one_minus_beta * g, frac_bits, "gradient step (1 - beta) * g", t)
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
