"""``method="truncated"``: back-propagate through the last ``K`` steps only (Shaban et al. 2019).

Float64 training that keeps the last ``K + 1`` states (``O(K N)`` memory);
the reverse pass stops at ``w_{T-K}``, treating it as a constant.  So the
hypergradients of the initial state are zero unless ``K = T``, and the rows
of the per-step schedules before step ``T - K`` are zero (except where a
later step depends on them directly, as Adam's bias corrections do).
``K = T`` is the full reverse pass (``unrolled`` / ``exact`` to rounding).
Works for every update rule (momentum, Adam).
"""

import math

from . import register
from .checkpointed import Adjoint, positive_int, problem_rule, train_float


def resolve_K(K, T, name):
    """``K`` steps (default: 10 % of ``T``, at least 1), an integer checked to lie in ``[0, T]``."""
    K = max(1, math.ceil(0.1 * T)) if K is None else positive_int(K, f"{name}: K", minimum=0)
    if not 0 <= K <= T:
        raise ValueError(f"{name}: K must be between 0 and T={T}; got {K}")
    return K


@register("truncated")
def run_truncated(problem, stats, K=None):
    """Truncated backprop: reverse through the last K of T steps (default K = ceil(T/10))."""
    T = problem.T
    K = resolve_K(K, T, "truncated")
    rule = problem_rule(problem)
    window = {}

    def keep(t, w, aux):
        if t >= T - K:
            window[t] = (w, aux)

    w_T, _ = train_float(problem, keep=keep, rule=rule)
    stats.update(K=K, stored_states=len(window))

    def backward(dw):
        adj = Adjoint(problem, dw, rule=rule)
        for t in range(T - 1, T - K - 1, -1):
            w_t, aux_t = window[t]
            adj.step(t, w_t, aux_t, window[t + 1][1])
        return adj.result(keep_initial=(K == T))

    return w_T, backward
