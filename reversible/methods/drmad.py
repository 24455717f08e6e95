"""``method="drmad"`` and ``"drmad_hybrid"``: reverse along a straight line (Fu et al. 2016).

DrMAD stores only ``w_0`` and ``w_T`` and runs the reverse pass at the points
``w_t = (t/T) w_T + (1 - t/T) w_0``, with the exact adjoint formulas
(DESIGN.md section 2) otherwise.  The adjoints also need ``v_t``; the default
(``velocity="path"``) is the velocity of the straight path itself,
``v_{t+1} = (w_{t+1} - w_t) / alpha_t = (w_T - w_0) / (T alpha_t)`` (with
``v_0`` as given), so that a training run that really moves along that line
at constant speed is reversed exactly.  ``velocity="interpolate"`` takes
``v_t`` on the straight line from ``v_0`` to ``v_T`` instead.  Elements whose
learning rate is zero always use the interpolated velocity.

``reverse_steps=S < T`` runs a pseudo-run of ``S`` steps along the line, each
with the learning rate, momentum and minibatch of the nearest forward step;
the hypergradient of each reverse step's ``alpha`` and ``beta`` is spread
evenly over the forward steps nearest to it.

``drmad_hybrid`` (the "DrMAD2" variant) reverses the last ``K`` steps along
the true path with the exact engine, then follows the straight line from
``w_{T-K}`` back to ``w_0``.  ``K = T`` is ``exact``; ``K = 0`` is ``drmad``.
"""

import math

import numpy as np

from .. import trajectory
from ..fixedpoint import to_float
from . import register
from .checkpointed import Adjoint, train_float
from .truncated import resolve_K


def _nearest_forward(s, n, S):
    """Forward step (0-based within the segment) nearest to reverse step ``s`` of ``S``."""
    return min(n - 1, int(math.floor((s + 0.5) * n / S)))


def _blocks(n, S):
    """For each reverse step, the forward steps whose nearest reverse step it is."""
    owner = np.minimum(S - 1, np.floor((np.arange(n) + 0.5) * S / n).astype(int))
    return [np.flatnonzero(owner == s) for s in range(S)]


def reverse_line(problem, adj, w_a, v_a, w_b, v_b, t_a, t_b, steps=None, velocity="path"):
    """Back-propagate ``adj`` through forward steps ``t_a .. t_b-1`` along the line ``w_a -> w_b``.

    ``adj`` holds the cotangents of ``(w_b, v_b)``; on return it holds those
    of ``(w_a, v_a)``, with the schedule rows of steps ``t_a .. t_b-1`` filled.
    """
    n = t_b - t_a
    if n == 0:
        return adj
    S = n if steps is None else int(steps)
    if not 1 <= S <= n:
        raise ValueError(f"drmad: reverse_steps must be between 1 and the {n} forward steps it "
                         f"replaces; got {steps}")
    if velocity not in ("path", "interpolate"):
        raise ValueError(f"drmad: velocity must be 'path' or 'interpolate'; got {velocity!r}")
    delta = w_b - w_a
    blocks = _blocks(n, S)

    def v_at(s):
        """Velocity after ``s`` reverse-grid steps (``s = 0`` is ``v_a``)."""
        interp = v_a + (s / S) * (v_b - v_a)
        if s == 0 or velocity == "interpolate":
            return interp
        alpha = problem.per_element(problem.alphas[t_a + _nearest_forward(s - 1, n, S)])
        with np.errstate(divide="ignore", invalid="ignore"):
            path = delta / (S * alpha)
        return np.where(alpha != 0, path, interp)

    v_next = v_at(S)
    for s in range(S - 1, -1, -1):
        t = t_a + _nearest_forward(s, n, S)
        w_s = w_a + (s / S) * delta
        v_s = v_at(s)
        d_alpha, d_beta = adj.step(t, w_s, v_s, v_next)
        rows = t_a + blocks[s]
        adj.alphas[rows] += d_alpha / rows.size
        adj.betas[rows] += d_beta / rows.size
        v_next = v_s
    return adj


@register("drmad")
def run_drmad(problem, stats, reverse_steps=None, velocity="path"):
    """DrMAD: float training, reverse pass along the straight line from w_0 to w_T."""
    w_T, v_T = train_float(problem)
    stats.update(reverse_steps=problem.T if reverse_steps is None else int(reverse_steps),
                 velocity=velocity)

    def backward(dw):
        adj = Adjoint(problem, dw)
        reverse_line(problem, adj, problem.w0, problem.v0, w_T, v_T, 0, problem.T,
                     reverse_steps, velocity)
        return adj.result()

    return w_T, backward


def _shifted(fun, offset):
    return lambda w, meta, t, *rest: fun(w, meta, t + offset, *rest)


@register("drmad_hybrid")
def run_drmad_hybrid(problem, stats, K=None, reverse_steps=None, velocity="path", check=True):
    """Exact reversal of the last K steps, then DrMAD's straight line from w_{T-K} to w_0."""
    T = problem.T
    K = resolve_K(K, T, "drmad_hybrid")
    if K == 0:
        stats.update(K=0)
        return run_drmad(problem, stats, reverse_steps, velocity)
    start = T - K
    w_mid, v_mid = train_float(problem, 0, start)
    schedule = trajectory.Schedule.build(problem.alphas[start:], problem.betas[start:],
                                         problem.group_index, problem.G)
    state = trajectory.forward(_shifted(problem.grad, start), w_mid, schedule, problem.meta,
                               v_mid, problem.frac_bits, problem.kernel, problem.progress)
    w_mid, v_mid = to_float(state.W0, state.frac_bits), to_float(state.V0, state.frac_bits)
    stats.update(K=K, reverse_steps=start if reverse_steps is None else int(reverse_steps),
                 velocity=velocity, buffer_bits=state.stats["buffer_bits"])

    def backward(dw):
        st = state.copy()
        out = trajectory.reverse(st, _shifted(problem.vjp, start), dw, None, problem.meta,
                                 problem.meta_size, problem.kernel, problem.progress, check=check)
        adj = Adjoint(problem, out["w0"], out["v0"], out["meta"])
        adj.alphas[start:], adj.betas[start:] = out["alphas"], out["betas"]
        reverse_line(problem, adj, problem.w0, problem.v0, w_mid, v_mid, 0, start,
                     reverse_steps, velocity)
        return adj.result()

    return state.w, backward
