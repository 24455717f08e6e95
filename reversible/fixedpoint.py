"""Fixed-point arrays: int64 with ``frac_bits`` fractional bits, exactly invertible updates.

A value ``x`` is held as ``X = rint(x * 2**frac_bits)``.  Adding ``fix(d)`` and
later subtracting the same ``fix(d)`` returns the same bits, so additive
updates reverse exactly; multiplication by ``beta`` goes through an
:class:`~reversible.buffer.InfoBuffer`.  Every conversion and addition checks
its range: overflow raises :class:`FixedPointOverflowError` naming the step
and the remedy, never wraps around silently.
"""

import numpy as np

from .errors import FixedPointOverflowError, NonFiniteError

DEFAULT_FRAC_BITS = 52  # |x| < 2**11 = 2048, resolution 2**-52


def check_frac_bits(frac_bits):
    """``frac_bits`` as an int after checking it is an integer in [1, 62]."""
    if isinstance(frac_bits, bool) or not isinstance(frac_bits, (int, np.integer)) \
            or not 1 <= frac_bits <= 62:
        raise ValueError(f"frac_bits must be an integer in [1, 62]; got {frac_bits!r}")
    return int(frac_bits)


def limit(frac_bits):
    """The largest magnitude (exclusive) representable with ``frac_bits``."""
    return 2.0 ** (63 - frac_bits)


def located(what, step):
    return f"{what} at step {step}" if step is not None else what


def overflow_remedy(frac_bits):
    return (f"representable magnitudes are below {limit(frac_bits):g} with frac_bits={frac_bits}: "
            "use fewer frac_bits (more range, less resolution), a smaller learning rate, "
            "or rescale the problem")


def to_fixed(x, frac_bits, what="value", step=None):
    """``rint(x * 2**frac_bits)`` as int64, after checking finiteness and range."""
    x = np.asarray(x, dtype=np.float64)
    if not np.all(np.isfinite(x)):
        raise NonFiniteError(f"{located(what, step)} contains NaN or Inf "
                             f"({int(np.sum(~np.isfinite(x)))} of {x.size} entries)")
    with np.errstate(over="ignore"):        # overflow to inf is caught just below
        scaled = np.rint(x * 2.0 ** frac_bits)
    big = np.abs(scaled) >= 2.0 ** 63
    if np.any(big):
        worst = float(np.max(np.abs(x)))
        raise FixedPointOverflowError(
            f"{located(what, step)} overflows the fixed-point range (|value| up to {worst:g}); "
            + overflow_remedy(frac_bits))
    return scaled.astype(np.int64)


def to_float(X, frac_bits):
    """The float64 value of fixed-point ``X`` (deterministic rounding to 53 bits)."""
    return np.asarray(X, dtype=np.int64).astype(np.float64) * 2.0 ** -frac_bits


def checked_add(X, D, frac_bits, what="value", step=None, subtract=False):
    """``X + D`` (or ``X - D``) for int64 arrays, raising on wrap-around."""
    with np.errstate(over="ignore"):
        S = X - D if subtract else X + D
    D_eff = -D if subtract else D
    # two's-complement overflow: operands of equal sign, result of the other sign
    wrapped = ((X ^ S) & (D_eff ^ S)) < 0
    if subtract:
        wrapped |= D == np.iinfo(np.int64).min
    if np.any(wrapped):
        raise FixedPointOverflowError(f"{located(what, step)} overflows the fixed-point range; "
                                      + overflow_remedy(frac_bits))
    return S


class ExactArray:
    """An int64 fixed-point vector with exact additive updates and exact scaling by beta."""

    def __init__(self, value, frac_bits=DEFAULT_FRAC_BITS, what="value"):
        self.frac_bits = check_frac_bits(frac_bits)
        self.what = what
        self.ints = to_fixed(np.ravel(value), self.frac_bits, what)

    @classmethod
    def from_ints(cls, ints, frac_bits, what="value"):
        out = cls.__new__(cls)
        out.frac_bits = check_frac_bits(frac_bits)
        out.what = what
        out.ints = np.array(ints, dtype=np.int64, copy=True)
        return out

    @property
    def val(self):
        return to_float(self.ints, self.frac_bits)

    def add(self, d, step=None):
        """``self += fix(d)``; returns the int64 increment so it can be undone exactly."""
        D = to_fixed(d, self.frac_bits, f"increment of {self.what}", step)
        self.ints = checked_add(self.ints, D, self.frac_bits, self.what, step)
        return D

    def sub(self, d, step=None):
        """``self -= fix(d)``: exactly undoes :meth:`add` of the same ``d``."""
        D = to_fixed(d, self.frac_bits, f"increment of {self.what}", step)
        self.ints = checked_add(self.ints, D, self.frac_bits, self.what, step, subtract=True)
        return D

    def mul(self, n, buffer, idx=None):
        """``self *= n / 2**32`` to within one unit, exactly invertibly, storing the destroyed bits in ``buffer``."""
        if idx is None:
            self.ints = buffer.multiply(self.ints, n)
        else:
            self.ints[idx] = buffer.multiply(self.ints[idx], n, idx)

    def div(self, n, buffer, idx=None):
        """Exactly undo :meth:`mul` (the bits come back out of ``buffer``)."""
        if idx is None:
            self.ints = buffer.divide(self.ints, n)
        else:
            self.ints[idx] = buffer.divide(self.ints[idx], n, idx)

    def copy(self):
        return ExactArray.from_ints(self.ints, self.frac_bits, self.what)

    def __len__(self):
        return self.ints.size

    def __eq__(self, other):
        return (isinstance(other, ExactArray) and self.frac_bits == other.frac_bits
                and np.array_equal(self.ints, other.ints))

    def __repr__(self):
        return f"ExactArray({self.val!r}, frac_bits={self.frac_bits})"
