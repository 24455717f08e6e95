"""Adam's adjoint step, compiled: the vector work of one reverse step in two passes.

:meth:`reversible.adam_rule.AdamRule.adjoint_step` is the specification: about
thirty NumPy expressions over the N elements per step (square roots, quotients,
six group sums).  On models of a few thousand weights each expression costs
more in dispatch and temporaries than in arithmetic, and together they were a
quarter of the reverse pass.  Here the part before the Hessian-vector product
(:func:`before_hvp`: the position step's cotangents) and the part after it
(:func:`after_hvp`: the moments' cotangents) are one loop each, reading the
per-group constants through the group index instead of expanding them.

The loops write each hyperparameter's per-element terms into a work array whose
rows are then summed per group by the schedule's own ``group_sum``: every
result is bit-identical to the specification's (``tests/test_adam.py``).
"""

import numpy as np
from numba import njit

from .numba_kernels import JIT_OPTIONS

# rows of the per-element work array of before_hvp / after_hvp (summed per group afterwards)
ALPHA, WEIGHT_DECAY, EPS, C1, C2, BETA1, BETA2 = range(7)


@njit(**JIT_OPTIONS)
def _before_hvp(dw, dm, ds, m_after, s_after, w_t, gi, alpha, c1, c2, eps, wd, work):
    for i in range(dw.size):
        k = gi[i]
        r = np.sqrt(s_after[i] / c2[k])
        D = r + eps[k]
        u = (m_after[i] / c1[k]) / D
        d = dw[i]
        ubar = -alpha[k] * d
        work[ALPHA, i] = -d * (u + wd[k] * w_t[i])
        work[WEIGHT_DECAY, i] = -d * alpha[k] * w_t[i]
        work[EPS, i] = -ubar * u / D
        work[C1, i] = -ubar * u / c1[k]
        work[C2, i] = ubar * u * r / (2.0 * c2[k] * D)
        dm[i] += ubar / (c1[k] * D)
        if r > 0:
            ds[i] += -ubar * u / (2.0 * c2[k] * r * D)


@njit(**JIT_OPTIONS)
def _hvp_vector(dm, ds, g, gi, one_minus_b1, one_minus_b2, out):
    for i in range(dm.size):
        k = gi[i]
        out[i] = one_minus_b1[k] * dm[i] + 2.0 * one_minus_b2[k] * g[i] * ds[i]


@njit(**JIT_OPTIONS)
def _after_hvp(dw, dm, ds, m_t, s_t, g, hw, gi, b1, b2, decay, work):
    for i in range(dw.size):
        k = gi[i]
        work[BETA1, i] = dm[i] * (m_t[i] - g[i])
        work[BETA2, i] = ds[i] * (s_t[i] - g[i] * g[i])
        dw[i] = decay[k] * dw[i] + hw[i]
        dm[i] *= b1[k]
        ds[i] *= b2[k]


def _f64(x):
    return np.ascontiguousarray(x, dtype=np.float64)


def before_hvp(dw, dm, ds, m_after, s_after, w_t, group_index, alpha, c1, c2, eps, wd, work):
    """The position step's cotangents: per-element terms into ``work`` rows ALPHA .. C2, and
    ``dm``, ``ds`` updated in place; per-group rows are ``(G,)``, ``work`` is ``(7, N)``."""
    _before_hvp(dw, dm, ds, _f64(m_after), _f64(s_after), _f64(w_t), group_index, _f64(alpha),
                _f64(c1), _f64(c2), _f64(eps), _f64(wd), work)


def hvp_vector(dm, ds, g, group_index, one_minus_b1, one_minus_b2):
    """``(1 - beta1) dm + 2 (1 - beta2) g ds``: the vector of the step's Hessian product."""
    out = np.empty_like(dm)
    _hvp_vector(dm, ds, _f64(g), group_index, _f64(one_minus_b1), _f64(one_minus_b2), out)
    return out


def after_hvp(dw, dm, ds, m_t, s_t, g, hw, group_index, b1, b2, decay, work):
    """The moments' cotangents: per-element terms into ``work`` rows BETA1, BETA2; ``dw``,
    ``dm``, ``ds`` updated in place."""
    _after_hvp(dw, dm, ds, _f64(m_t), _f64(s_t), _f64(g), _f64(hw), group_index, _f64(b1),
               _f64(b2), _f64(decay), work)
