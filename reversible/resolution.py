"""Is ``frac_bits`` fine enough for the training increments?  Checked on the first step.

The exact engine holds ``w`` and ``v`` as integers in units of ``2**-frac_bits``
and rounds every increment, ``(1 - beta) g`` and ``alpha v``, to that unit.
Resolution costs range, nothing else: magnitudes must stay below
``2**(63 - frac_bits)``, while the information buffer's size does not depend
on ``frac_bits``.  Too few fractional bits, however, turn training into
rounding: with ``frac_bits=16`` the digits MLP ends 100x further from float64
training than it moved.

The check is cheap and made once, on step 0, where the increments are known
without extra work: ``r = ||round(d) - d|| / ||d||`` for both increment vectors
``d`` (norms, so a few tiny entries do not count).  Measured on small problems
(least squares, the digits MLP, T = 30-100), the final weights differ from
float64 training by about ``10**3 * r`` relative to how far they moved, since
later increments shrink and rounding accumulates.  Hence:

* ``r > REFUSE_AT`` (1e-3): ``ValueError`` naming the ``frac_bits`` that would do;
* ``r > WARN_AT`` (1e-8): :class:`~reversible.errors.ResolutionWarning`;

and ``stats["first_step_rounding"]`` reports ``r`` in every exact run.
"""

import math
import warnings

import numpy as np

from .errors import ResolutionWarning
from .fixedpoint import limit

WARN_AT = 1e-8
REFUSE_AT = 1e-3


def relative_rounding(d, frac_bits):
    """``||round(d, 2**-frac_bits) - d|| / ||d||`` (0 for a zero increment)."""
    norm = float(np.linalg.norm(d))
    if norm == 0.0 or not math.isfinite(norm):
        return 0.0
    unit = 2.0 ** -frac_bits
    return float(np.linalg.norm(np.rint(d / unit) * unit - d)) / norm


def bits_needed(rounding, frac_bits, target=WARN_AT):
    """The ``frac_bits`` that bring a measured ``rounding`` down to ``target`` (rounding halves per bit)."""
    return min(62, frac_bits + max(0, math.ceil(math.log2(rounding / target))))


def check_first_step(g, v0, alpha, one_minus_beta, beta, frac_bits):
    """Relative rounding of step 0's increments; warn or refuse as the module docstring says.

    ``alpha``, ``beta`` and ``one_minus_beta`` are per element (or scalars).
    """
    dv = one_minus_beta * g
    dw = alpha * (beta * v0 - dv)
    parts = {"(1 - beta) * g": relative_rounding(dv, frac_bits),
             "alpha * v": relative_rounding(dw, frac_bits)}
    what, r = max(parts.items(), key=lambda kv: kv[1])
    if r > WARN_AT:
        need = bits_needed(r, frac_bits)
        msg = (f"frac_bits={frac_bits} (resolution 2**-{frac_bits} = {2.0 ** -frac_bits:.2g}) "
               f"rounds the first step's increments {what} by {r:.2g} of their size; expect final "
               f"weights to differ from float64 training by about {1e3 * r:.2g} of how far "
               f"they move. frac_bits={need} would bring the rounding to {WARN_AT:g} "
               f"(magnitudes must then stay below {limit(need):g}; more fractional bits cost "
               "range only, not memory)")
        if r > REFUSE_AT:
            raise ValueError(msg)
        warnings.warn(msg, ResolutionWarning, stacklevel=4)
    return r
