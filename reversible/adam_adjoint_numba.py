"""Adam's adjoint step, compiled: the vector work of one reverse step in two passes.

:meth:`reversible.adam_rule.AdamRule.adjoint_step` is the specification: about
thirty NumPy expressions over the N elements per step (square roots, quotients,
six group sums).  On models of a few thousand weights each expression costs
more in dispatch and temporaries than in arithmetic, and together they were a
quarter of the reverse pass.  Here the part before the Hessian-vector product
(:func:`before_hvp`: the position step's cotangents) and the part after it
(:func:`after_hvp`: the moments' cotangents) are one loop each, reading the
per-group constants through the group index instead of expanding them.

The results equal the specification's up to the order of the additions in the
group sums (``tests/test_adam.py`` compares them).
"""

import numpy as np
from numba import njit

from .numba_kernels import JIT_OPTIONS

# rows of the per-group accumulator ``acc`` of before_hvp / after_hvp
ALPHA, WEIGHT_DECAY, EPS, C1, C2, BETA1, BETA2 = range(7)


@njit(**JIT_OPTIONS)
def _before_hvp(dw, dm, ds, m_after, s_after, w_t, gi, alpha, c1, c2, eps, wd, acc):
    for i in range(dw.size):
        k = gi[i]
        r = np.sqrt(s_after[i] / c2[k])
        D = r + eps[k]
        u = (m_after[i] / c1[k]) / D
        d = dw[i]
        ubar = -alpha[k] * d
        acc[ALPHA, k] += -d * (u + wd[k] * w_t[i])
        acc[WEIGHT_DECAY, k] += -d * alpha[k] * w_t[i]
        acc[EPS, k] += -ubar * u / D
        acc[C1, k] += -ubar * u / c1[k]
        acc[C2, k] += ubar * u * r / (2.0 * c2[k] * D)
        dm[i] += ubar / (c1[k] * D)
        if r > 0:
            ds[i] += -ubar * u / (2.0 * c2[k] * r * D)


@njit(**JIT_OPTIONS)
def _hvp_vector(dm, ds, g, gi, one_minus_b1, one_minus_b2, out):
    for i in range(dm.size):
        k = gi[i]
        out[i] = one_minus_b1[k] * dm[i] + 2.0 * one_minus_b2[k] * g[i] * ds[i]


@njit(**JIT_OPTIONS)
def _after_hvp(dw, dm, ds, m_t, s_t, g, hw, gi, b1, b2, decay, acc):
    for i in range(dw.size):
        k = gi[i]
        acc[BETA1, k] += dm[i] * (m_t[i] - g[i])
        acc[BETA2, k] += ds[i] * (s_t[i] - g[i] * g[i])
        dw[i] = decay[k] * dw[i] + hw[i]
        dm[i] *= b1[k]
        ds[i] *= b2[k]


def _f64(x):
    return np.ascontiguousarray(x, dtype=np.float64)


def before_hvp(dw, dm, ds, m_after, s_after, w_t, group_index, alpha, c1, c2, eps, wd, acc):
    """The position step's cotangents: adds to ``acc`` rows ALPHA .. C2 and to ``dm``, ``ds``
    (in place); per-group rows are ``(G,)``."""
    _before_hvp(dw, dm, ds, _f64(m_after), _f64(s_after), _f64(w_t), group_index, _f64(alpha),
                _f64(c1), _f64(c2), _f64(eps), _f64(wd), acc)


def hvp_vector(dm, ds, g, group_index, one_minus_b1, one_minus_b2):
    """``(1 - beta1) dm + 2 (1 - beta2) g ds``: the vector of the step's Hessian product."""
    out = np.empty_like(dm)
    _hvp_vector(dm, ds, _f64(g), group_index, _f64(one_minus_b1), _f64(one_minus_b2), out)
    return out


def after_hvp(dw, dm, ds, m_t, s_t, g, hw, group_index, b1, b2, decay, acc):
    """The moments' cotangents: adds to ``acc`` rows BETA1, BETA2; updates ``dw``, ``dm``,
    ``ds`` in place."""
    _after_hvp(dw, dm, ds, _f64(m_t), _f64(s_t), _f64(g), _f64(hw), group_index, _f64(b1),
               _f64(b2), _f64(decay), acc)
