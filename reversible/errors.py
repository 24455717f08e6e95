"""Exceptions raised by the exact engine.

Every failure of exact reversal is loud: each error names what went wrong and
what to do about it.
"""


class ReversibleError(Exception):
    """Base class of the errors this package raises on purpose."""


class ReversibilityError(ReversibleError):
    """The reverse pass did not return bit for bit to the starting state.

    Usual causes: a training loss that is not a pure function of
    ``(w, meta, t)`` (a random minibatch drawn from global state, a changing
    data set), or a corrupted information buffer.
    """


class BufferUnderflowError(ReversibilityError):
    """A pop found an empty information buffer: its contents are corrupt."""


class FixedPointOverflowError(ReversibleError, OverflowError):
    """A value left the range of the int64 fixed-point representation."""


class NonFiniteError(ReversibleError, FloatingPointError):
    """A gradient, Hessian-vector product or update contained NaN or Inf."""


class CheckpointError(ReversibleError):
    """A checkpoint file is truncated, altered or of the wrong kind."""


class ResolutionWarning(UserWarning):
    """Fixed-point resolution (``frac_bits``) is coarse for the training increments."""
