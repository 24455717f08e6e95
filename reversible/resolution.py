"""Is ``frac_bits`` fine enough for the training increments?  Checked on the first step.

The exact engine holds ``w`` and ``v`` as integers in units of ``2**-frac_bits``
and rounds every increment, ``(1 - beta) g`` and ``alpha v``, to that unit.
Resolution costs range, nothing else: magnitudes must stay below
``2**(63 - frac_bits)``, while the information buffer's size does not depend
on ``frac_bits``.  Too few fractional bits, however, turn training into
rounding: with ``frac_bits=8`` the digits MLP ends as far from float64
training as it moved.

The check is cheap and made once, on step 0, where the gradient is known
without extra work: ``r = ||round(d) - d|| / ||d||`` (norms, so a few tiny
entries do not count) for the velocity increment ``d = (1 - beta) g`` and for
the weight increment once the velocity has built up to the gradient's size,
``d = alpha g`` (step 0's own ``alpha v_1`` is smaller by ``1 - beta`` when
``v0 = 0`` and would overstate the problem).  Measured on least squares and
the digits MLP (T = 30-100, frac_bits 8-32, betas 0.9 and 0.99), the final
weights differ from float64 training by 0.2 to 2 times ``r``, relative to how
far they moved.  Hence:

* ``r > REFUSE_AT`` (1e-2, weights about 1 % off or worse): ``ValueError``
  naming the ``frac_bits`` that would do;
* ``r > WARN_AT`` (1e-4): :class:`~reversible.errors.ResolutionWarning`;

and ``stats["first_step_rounding"]`` reports ``r`` in every exact run (about
1e-14 at the default 52 bits for weights of order one).
"""

import math
import warnings

import numpy as np

from .errors import ResolutionWarning
from .fixedpoint import limit

WARN_AT = 1e-4
REFUSE_AT = 1e-2
SUGGEST_AT = 1e-8      # the rounding the suggested frac_bits achieves


SAMPLE = 1 << 16


def relative_rounding(d, frac_bits):
    """``||round(d, 2**-frac_bits) - d|| / ||d||`` (0 for a zero increment)."""
    norm = _norm(d)
    if norm == 0.0 or not math.isfinite(norm):
        return 0.0
    unit = 2.0 ** -frac_bits
    return _norm(np.rint(d / unit) * unit - d) / norm


def _norm(x):
    """Euclidean norm without BLAS (whose thread pool can cost more than the sum here)."""
    x = np.asarray(x, dtype=np.float64)
    return math.sqrt(float(np.add.reduce(x * x, axis=None)))


def bits_needed(rounding, frac_bits, target=SUGGEST_AT):
    """The ``frac_bits`` that bring a measured ``rounding`` to ``target`` (it halves per bit)."""
    return min(62, frac_bits + max(0, math.ceil(math.log2(rounding / target))))


def check_first_step(g, alpha, one_minus_beta, frac_bits):
    """Relative rounding of step 0's increments; warn or refuse as the module docstring says.

    ``alpha`` and ``one_minus_beta`` are per element (or scalars).
    Long vectors are estimated from every k-th entry (about ``SAMPLE`` of
    them), so the check costs a small fraction of one training step at any N;
    if the sampled increments are all zero (sparse gradients), all are used.
    """
    stride = max(1, np.size(g) // SAMPLE)
    parts = _roundings(g, alpha, one_minus_beta, frac_bits, stride)
    if stride > 1 and parts is None:
        parts = _roundings(g, alpha, one_minus_beta, frac_bits, 1)
    if parts is None:
        return 0.0
    what, r = max(parts.items(), key=lambda kv: kv[1])
    if r > WARN_AT:
        need = bits_needed(r, frac_bits)
        msg = (f"frac_bits={frac_bits} (resolution 2**-{frac_bits} = {2.0 ** -frac_bits:.2g}) "
               f"rounds the training increments {what} by {r:.2g} of their size (measured on "
               f"step 0); expect final weights to differ from float64 training by about that "
               f"fraction of how far they move. frac_bits={need} would bring the rounding to "
               f"{SUGGEST_AT:g} "
               f"(magnitudes must then stay below {limit(need):g}; more fractional bits cost "
               "range only, not memory)")
        if r > REFUSE_AT:
            raise ValueError(msg)
        warnings.warn(msg, ResolutionWarning, stacklevel=4)
    return r


def _roundings(g, alpha, one_minus_beta, frac_bits, stride):
    """Relative rounding of both increments on every ``stride``-th element (None if all zero)."""
    take = (lambda x: x[::stride] if np.ndim(x) else x) if stride > 1 else (lambda x: x)
    g = take(g)
    dv = take(one_minus_beta) * g
    dw = take(alpha) * g
    if not (np.any(dv) or np.any(dw)):
        return None
    return {"(1 - beta) * g": relative_rounding(dv, frac_bits),
            "alpha * v (|v| ~ |g|)": relative_rounding(dw, frac_bits)}
