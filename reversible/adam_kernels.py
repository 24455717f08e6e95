"""Executors of one exact Adam step: the NumPy specification and compiled variants.

A kernel is a namespace with three functions acting in place on an
:class:`~reversible.adam_rule.AdamState`:

* ``forward_step(state, g, t)``: moments through the buffer, decay, position step;
* ``undo_position(state, t)``: add the recomputed position increment back, divide out the decay;
* ``undo_moments(state, g, t)``: undo the second then the first moment update.

All kernels must agree bit for bit with ``"numpy"`` (:mod:`reversible.adam_rule`'s
functions, the specification) and raise the same errors; ``get("auto")`` picks
the compiled kernel when it loads and NumPy otherwise.
"""

import types

from . import adam_rule, kernels


def _numpy():
    return types.SimpleNamespace(name="numpy", forward_step=adam_rule.numpy_forward_step,
                                 undo_position=adam_rule.numpy_undo_position,
                                 undo_moments=adam_rule.numpy_undo_moments)


def _numba():
    """The compiled kernel (:mod:`reversible.adam_numba`); ImportError without numba."""
    from .adam_numba import numba_adam_kernel
    return numba_adam_kernel


_REGISTRY = {"numpy": _numpy, "numba": _numba}


def available():
    return sorted(_REGISTRY)


def get(name="auto"):
    """The Adam kernel called ``name``; ``"auto"`` follows the momentum kernels' choice
    (:func:`reversible.kernels.get`: numba where it loads, else NumPy)."""
    if not isinstance(name, str):
        return name
    if name == "auto":
        name = kernels.get("auto").name
    if name not in _REGISTRY:
        raise ValueError(f"unknown Adam kernel {name!r}; choose one of {['auto'] + available()}")
    return _REGISTRY[name]()
