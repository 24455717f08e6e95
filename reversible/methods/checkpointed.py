"""``method="checkpointed"``: float64 training, reverse pass by segment recomputation.

What a PyTorch or JAX user does today: store ``(w, v)`` every ``segment``
steps (about ``sqrt(T)`` checkpoints), and in the reverse pass recompute each
segment from its checkpoint before back-propagating through it.  Memory is
``O(sqrt(T) N)``; the hypergradient equals ``unrolled`` to rounding.

The float step and the float adjoint step defined here are shared by the
other float methods (``drmad``, ``truncated``, ``forward``).
"""

import math

import numpy as np

from . import register


def float_step(problem, betas_eff, t, w, v):
    """One float64 training step ``t`` (same operations as ``unrolled``): ``(w_{t+1}, v_{t+1})``."""
    g = problem.grad(w, problem.meta, t)
    beta = problem.per_element(betas_eff[t])
    v = beta * v - (1.0 - beta) * g
    w = w + problem.per_element(problem.alphas[t]) * v
    return w, v


def train_float(problem, t_start=0, t_stop=None, w=None, v=None, betas_eff=None, keep=None):
    """Float64 training over steps ``t_start .. t_stop-1``; returns ``(w, v)``.

    ``keep(t, w, v)`` is called with every state ``(w_t, v_t)`` for
    ``t = t_start .. t_stop`` (to store checkpoints or a window of states).
    """
    t_stop = problem.T if t_stop is None else t_stop
    w = problem.w0.copy() if w is None else w
    v = problem.v0.copy() if v is None else v
    betas_eff = problem.effective_betas() if betas_eff is None else betas_eff
    for t in range(t_start, t_stop):
        if keep is not None:
            keep(t, w, v)
        w, v = float_step(problem, betas_eff, t, w, v)
    if keep is not None:
        keep(t_stop, w, v)
    return w, v


class Adjoint:
    """Cotangents of a reverse pass in float64 (the formulas of DESIGN.md section 2).

    ``dw``, ``dv`` are the cotangents of the current ``(w, v)``; ``alphas``
    and ``betas`` are ``(T, G)`` and ``meta`` the accumulated meta cotangent.
    """

    def __init__(self, problem, dw, dv=None, meta=None):
        self.problem = problem
        self.betas_eff = problem.effective_betas()
        self.dw = np.array(dw, dtype=np.float64).reshape(problem.N)
        self.dv = np.zeros(problem.N) if dv is None else np.array(dv, dtype=np.float64)
        self.alphas = np.zeros((problem.T, problem.G))
        self.betas = np.zeros((problem.T, problem.G))
        if meta is not None:
            self.meta = np.array(meta, dtype=np.float64)
        else:
            self.meta = np.zeros(problem.meta_size) if problem.meta_size else None

    def group_sum(self, x):
        return np.bincount(self.problem.group_index, weights=x, minlength=self.problem.G)

    def step(self, t, w_t, v_t, v_next):
        """Back-propagate through step ``t`` taken from ``(w_t, v_t)`` to velocity ``v_next``.

        Updates ``dw``, ``dv`` and ``meta`` in place and returns the rows
        ``(d alpha_t, d beta_t)`` (shape ``(G,)``), leaving it to the caller
        where to put them.
        """
        p = self.problem
        alpha = p.per_element(p.alphas[t])
        beta = p.per_element(self.betas_eff[t])
        d_alpha = self.group_sum(self.dw * v_next)
        self.dv = self.dv + alpha * self.dw
        g, hw, hm = p.vjp(w_t, p.meta, t, (1.0 - beta) * self.dv)
        d_beta = self.group_sum(self.dv * (v_t + g))
        self.dw = self.dw - hw
        if self.meta is not None:
            self.meta = self.meta - hm
        self.dv = beta * self.dv
        return d_alpha, d_beta

    def step_into(self, t, w_t, v_t, v_next):
        """:meth:`step`, storing the rows at step ``t``."""
        self.alphas[t], self.betas[t] = self.step(t, w_t, v_t, v_next)

    def result(self, keep_initial=True):
        """The cotangent dict; ``keep_initial=False`` zeroes those of ``w0`` and ``v0``."""
        zero = np.zeros(self.problem.N)
        return {"w0": self.dw if keep_initial else zero, "v0": self.dv if keep_initial else zero,
                "alphas": self.alphas, "betas": self.betas, "meta": self.meta}


def default_segment(T):
    """Segment length giving about ``sqrt(T)`` checkpoints of ``sqrt(T)`` steps each."""
    return max(1, math.ceil(math.sqrt(T)))


@register("checkpointed")
def run_checkpointed(problem, stats, segment=None):
    """Float64 training with ~sqrt(T) checkpoints; segments recomputed in the reverse pass."""
    T = problem.T
    segment = default_segment(T) if segment is None else int(segment)
    if segment < 1:
        raise ValueError(f"checkpointed: segment must be a positive number of steps; got {segment}")
    betas_eff = problem.effective_betas()
    checkpoints = {}

    def keep(t, w, v):
        if t % segment == 0 and t < T:
            checkpoints[t] = (w.copy(), v.copy())

    w_T, _ = train_float(problem, betas_eff=betas_eff, keep=keep)
    stats.update(checkpoints=len(checkpoints), segment=segment)

    def backward(dw):
        adj = Adjoint(problem, dw)
        for start in sorted(checkpoints, reverse=True):
            stop = min(start + segment, T)
            states = []
            w, v = checkpoints[start]
            train_float(problem, start, stop, w.copy(), v.copy(), betas_eff,
                        keep=lambda t, w, v: states.append((w, v)))
            for t in range(stop - 1, start - 1, -1):
                w_t, v_t = states[t - start]
                adj.step_into(t, w_t, v_t, states[t - start + 1][1])
        return adj.result()

    return w_T, backward
