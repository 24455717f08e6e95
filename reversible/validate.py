"""Checks of single user-supplied values: nothing is silently cast, clipped or accepted.

Every public front end (``reversible.sgd``, ``reversible.checkpoint.train``, the
meta-optimiser, an Adam front end) checks its arguments with these functions,
so a bad value gets the same message whichever door it came in by: a
``TypeError`` for the wrong kind of value (complex, text, a list where a dict
is needed), a ``ValueError`` for a value of the right kind out of range (NaN,
Inf, a step size <= 0, a momentum above 1).  Values may be autograd boxes; they
are inspected through ``getval`` and returned unchanged.
"""

import math
import numbers

import numpy as np
from autograd.tracer import getval


def real_array(x, name):
    """The (unboxed) value of ``x`` as a NumPy array after checking it is real and finite.

    Complex, boolean, text and object arrays raise ``TypeError`` (a complex value
    would otherwise lose its imaginary part without a word); NaN or Inf raise
    ``ValueError``.
    """
    raw = getval(x)
    try:
        arr = np.asarray(raw)
    except ValueError as err:           # ragged nested lists
        raise TypeError(f"{name} must be a real float array; got a ragged {type(raw).__name__} "
                        f"({err})") from None
    if np.iscomplexobj(arr):
        raise TypeError(f"{name} is complex (dtype {arr.dtype}); reversible trains real "
                        "parameters only: pass the real part, or split real and imaginary parts "
                        "into two real arrays")
    if arr.dtype == np.bool_ or not np.issubdtype(arr.dtype, np.number):
        raise TypeError(f"{name} must be a real float array; got dtype {arr.dtype}")
    if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
        bad = int(np.sum(~np.isfinite(arr)))
        raise ValueError(f"{name} contains NaN or Inf ({bad} of {arr.size} entries)")
    return arr


def interval(low=None, high=None, low_open=False, high_open=False):
    """The text of an interval, e.g. ``(0, 1]`` or ``(0, inf)``."""
    lo = "-inf" if low is None else f"{low:g}"
    hi = "inf" if high is None else f"{high:g}"
    left = "(" if low_open or low is None else "["
    right = ")" if high_open or high is None else "]"
    return f"{left}{lo}, {hi}{right}"


def in_interval(values, name, low=None, high=None, low_open=False, high_open=False, hint="",
                axes=None):
    """Raise ``ValueError`` naming the first entry of ``values`` outside the interval.

    ``axes`` names the array's axes in the message (e.g. ``("step", "group")``).
    """
    v = np.asarray(values, dtype=np.float64)
    bad = np.zeros(v.shape, dtype=bool)
    if low is not None:
        bad |= (v <= low) if low_open else (v < low)
    if high is not None:
        bad |= (v >= high) if high_open else (v > high)
    if np.any(bad):
        where = np.argwhere(bad)[0]
        if axes is not None:
            at = " at " + ", ".join(f"{a} {int(i)}" for a, i in zip(axes, where))
        else:
            at = f" at index {tuple(int(i) for i in where)}" if v.ndim else ""
        raise ValueError(f"every entry of {name} must lie in "
                         f"{interval(low, high, low_open, high_open)}; got {float(v[bad][0])!r}"
                         f"{at}" + (f". {hint}" if hint else ""))


def scalar(x, name, low=None, high=None, low_open=False, high_open=False, integer=False,
           hint=""):
    """A real, finite Python number (an ``int`` if ``integer``) inside the given interval."""
    raw = getval(x)
    if isinstance(raw, np.ndarray) and raw.shape == ():
        raw = raw[()]
    if isinstance(raw, (bool, np.bool_)) or not isinstance(raw, numbers.Real):
        kind = "an integer" if integer else "a real number"
        raise TypeError(f"{name} must be {kind}; got {raw!r} ({type(raw).__name__})")
    if integer and not isinstance(raw, numbers.Integral):
        raise TypeError(f"{name} must be an integer; got {raw!r}")
    if not integer and not math.isfinite(float(raw)):
        raise ValueError(f"{name} must be finite; got {raw!r}")
    in_interval(float(raw), name, low, high, low_open, high_open, hint)
    return int(raw) if integer else float(raw)


def choice(value, name, options):
    """``value`` if it is one of ``options`` (compared by equality), else ``ValueError``."""
    if not isinstance(value, (str, bool, int, type(None))) or value not in options:
        raise ValueError(f"{name} must be one of {', '.join(repr(o) for o in options)}; "
                         f"got {value!r}")
    return value


def flag(value, name):
    """A bool (``True`` / ``False`` only: ``"no"`` would otherwise count as true)."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False; got {value!r}")
    return bool(value)


def stats_dict(stats, name="stats"):
    """A fresh dict for ``None``, the caller's dict otherwise (it is filled in place)."""
    if stats is None:
        return {}
    if not isinstance(stats, dict):
        raise TypeError(f"{name} must be a dict to fill with figures (or None); got "
                        f"{type(stats).__name__}: pass stats={{}} and read it afterwards")
    return stats


def function(f, name, signature=""):
    """``f`` if it is callable."""
    if not callable(f):
        raise TypeError(f"{name} must be a function{signature}; got {type(f).__name__}")
    return f
