"""``method="checkpointed"``: float64 training, reverse pass by segment recomputation.

What a PyTorch or JAX user does today: store the optimiser state every
``segment`` steps (about ``sqrt(T)`` checkpoints), and in the reverse pass
recompute each segment from its checkpoint before back-propagating through it.
Memory is ``O(sqrt(T) N)``; the hypergradient equals ``unrolled`` to rounding.

The float training loop and the adjoint bookkeeping defined here are shared by
the other float methods (``drmad``, ``truncated``, ``ift``); the step and
adjoint formulas themselves are the update rule's
(:mod:`reversible.trajectory`), the same the exact reverse pass uses.
"""

import math

import numpy as np

from .. import trajectory
from . import register


def problem_rule(problem):
    """The update rule of ``problem`` (momentum for ``sgd``, Adam for ``adam``)."""
    return problem.schedule().rule(problem.kernel)


def train_float(problem, t_start=0, t_stop=None, w=None, aux=None, keep=None, rule=None):
    """Float64 training over steps ``t_start .. t_stop-1``; returns ``(w, aux)``.

    ``aux`` is the rule's tuple of optimiser-state vectors (momentum: ``(v,)``).
    ``keep(t, w, aux)`` is called with every state for ``t = t_start .. t_stop``
    (to store checkpoints or a window of states).  A NaN or Inf raises
    :class:`~reversible.errors.NonFiniteError` naming the step.
    """
    rule = problem_rule(problem) if rule is None else rule
    t_stop = problem.T if t_stop is None else t_stop
    if w is None:
        w, aux = rule.float_start(problem)
    return trajectory.float_train(rule, problem.grad, w, aux, problem.meta, t_start, t_stop, keep)


class Adjoint:
    """Cotangents of a float reverse pass, stepped with the update rule's adjoint.

    ``cot`` holds the cotangents of the current state (``cot.w``, ``cot.aux``),
    the hyperparameters' (``cot.hyper``, by the rule's names) and ``cot.meta``.
    """

    def __init__(self, problem, dw, daux=None, meta=None, rule=None):
        self.problem = problem
        self.rule = problem_rule(problem) if rule is None else rule
        dw = np.array(dw, dtype=np.float64).reshape(problem.N)
        n_aux = len(self.rule.aux_names)
        daux = [np.zeros(problem.N) for _ in range(n_aux)] if daux is None else daux
        self.cot = trajectory.Cotangents(self.rule, dw, daux, problem.meta_size, meta)

    def step(self, t, w_t, aux_t, aux_next):
        """Back-propagate through step ``t`` taken from ``(w_t, aux_t)`` to ``aux_next``."""
        p = self.problem
        trajectory.float_adjoint_step(self.rule, self.cot, p.grad, p.vjp, p.meta, t, w_t, aux_t,
                                      aux_next, getattr(p, "grad_then_hvp", None))

    def step_spread(self, t, rows, w_t, aux_t, aux_next):
        """:meth:`step`, spreading step ``t``'s per-step hypergradients evenly over ``rows``."""
        per_step = {k: v for k, v in self.cot.hyper.items() if v.ndim == 2}
        before = {k: v[t].copy() for k, v in per_step.items()}
        self.step(t, w_t, aux_t, aux_next)
        for k, v in per_step.items():
            delta = v[t] - before[k]
            v[t] = before[k]
            v[rows] += delta / rows.size

    def result(self, keep_initial=True):
        """The cotangent dict; ``keep_initial=False`` zeroes those of the initial state."""
        return self.rule.result(self.cot, keep_initial)


def default_segment(T):
    """Segment length giving about ``sqrt(T)`` checkpoints of ``sqrt(T)`` steps each."""
    return max(1, math.ceil(math.sqrt(T)))


def positive_int(value, name, minimum=1):
    """``value`` as an int, refusing fractions, NaN, bools and values below ``minimum``."""
    ok = isinstance(value, (int, np.integer)) and not isinstance(value, bool)
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        ok = True
    if not ok or int(value) < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}; got {value!r}")
    return int(value)


@register("checkpointed")
def run_checkpointed(problem, stats, segment=None):
    """Float64 training with ~sqrt(T) checkpoints; segments recomputed in the reverse pass."""
    T = problem.T
    segment = default_segment(T) if segment is None else positive_int(segment, "checkpointed: segment")
    rule = problem_rule(problem)
    checkpoints = {}

    def keep(t, w, aux):
        if t % segment == 0 and t < T:
            checkpoints[t] = (w.copy(), tuple(a.copy() for a in aux))

    w_T, _ = train_float(problem, keep=keep, rule=rule)
    stats.update(checkpoints=len(checkpoints), segment=segment)

    def backward(dw):
        adj = Adjoint(problem, dw, rule=rule)
        for start in sorted(checkpoints, reverse=True):
            stop = min(start + segment, T)
            states = []
            w, aux = checkpoints[start]
            train_float(problem, start, stop, w.copy(), tuple(a.copy() for a in aux),
                        keep=lambda t, w, aux: states.append((w, aux)), rule=rule)
            for t in range(stop - 1, start - 1, -1):
                w_t, aux_t = states[t - start]
                adj.step(t, w_t, aux_t, states[t - start + 1][1])
        return adj.result()

    return w_T, backward
