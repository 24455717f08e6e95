"""``method="truncated"``: back-propagate through the last ``K`` steps only (Shaban et al. 2019).

Float64 training that keeps the last ``K + 1`` states (``O(K N)`` memory);
the reverse pass stops at ``w_{T-K}``, treating it as a constant.  So the
hypergradients of ``w0`` and ``v0`` are zero unless ``K = T``, and the rows
of ``alphas`` / ``betas`` before step ``T - K`` are zero.  ``K = T`` is the
full reverse pass (``unrolled`` / ``exact`` to rounding).
"""

import math

from . import register
from .checkpointed import Adjoint, train_float


def resolve_K(K, T, name):
    """``K`` steps (default: 10 % of ``T``, at least 1), checked to lie in ``[0, T]``."""
    K = max(1, math.ceil(0.1 * T)) if K is None else int(K)
    if not 0 <= K <= T:
        raise ValueError(f"{name}: K must be between 0 and T={T}; got {K}")
    return K


@register("truncated")
def run_truncated(problem, stats, K=None):
    """Truncated backprop: reverse through the last K of T steps (default K = ceil(T/10))."""
    T = problem.T
    K = resolve_K(K, T, "truncated")
    window = {}

    def keep(t, w, v):
        if t >= T - K:
            window[t] = (w, v)

    w_T, _ = train_float(problem, keep=keep)
    stats.update(K=K, stored_states=len(window))

    def backward(dw):
        adj = Adjoint(problem, dw)
        for t in range(T - 1, T - K - 1, -1):
            w_t, v_t = window[t]
            adj.step_into(t, w_t, v_t, window[t + 1][1])
        return adj.result(keep_initial=(K == T))

    return w_T, backward
