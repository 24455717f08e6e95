"""``method="drmad"`` and ``"drmad_hybrid"``: reverse along a straight line (Fu et al. 2016).

DrMAD stores only ``w_0`` and ``w_T`` and runs the reverse pass at the points
``w_t = (t/T) w_T + (1 - t/T) w_0``, with the exact adjoint formulas
otherwise (docs/engine.md, "The reverse pass and the adjoint recurrence").
The adjoints also need ``v_t``; the default
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

For Adam (any rule whose state is not a velocity) the optimiser state
``(m, s)`` is interpolated between its initial and final values
(``velocity="interpolate"``, the default there; ``"path"`` is refused).

``drmad_hybrid`` (the "DrMAD2" variant) reverses the last ``K`` steps along
the true path with the exact engine, then follows the straight line from
``w_{T-K}`` back to ``w_0``.  ``K = T`` is ``exact``; ``K = 0`` is ``drmad``.
"""

import math

import numpy as np

from .. import trajectory
from ..fixedpoint import to_float
from . import register
from .checkpointed import Adjoint, positive_int, problem_rule, train_float
from .truncated import resolve_K


def _nearest_forward(s, n, S):
    """Forward step (0-based within the segment) nearest to reverse step ``s`` of ``S``."""
    return min(n - 1, int(math.floor((s + 0.5) * n / S)))


def _blocks(n, S):
    """For each reverse step, the forward steps whose nearest reverse step it is."""
    owner = np.minimum(S - 1, np.floor((np.arange(n) + 0.5) * S / n).astype(int))
    return [np.flatnonzero(owner == s) for s in range(S)]


def _velocity(rule, velocity):
    has_velocity = rule.aux_names == ("v",)
    if velocity is None:
        return "path" if has_velocity else "interpolate"
    if velocity not in ("path", "interpolate"):
        raise ValueError(f"drmad: velocity must be 'path' or 'interpolate'; got {velocity!r}")
    if velocity == "path" and not has_velocity:
        raise ValueError(f"drmad: velocity='path' needs a momentum velocity; the {rule.name} rule "
                         "has none: use velocity='interpolate'")
    return velocity


def reverse_line(problem, adj, w_a, aux_a, w_b, aux_b, t_a, t_b, steps=None, velocity=None):
    """Back-propagate ``adj`` through forward steps ``t_a .. t_b-1`` along the line ``w_a -> w_b``.

    ``adj`` holds the cotangents of ``(w_b, aux_b)``; on return it holds those
    of ``(w_a, aux_a)``, with the schedule rows of steps ``t_a .. t_b-1`` filled.
    """
    n = t_b - t_a
    velocity = _velocity(adj.rule, velocity)
    if n == 0:
        return adj
    S = n if steps is None else positive_int(steps, "drmad: reverse_steps")
    if not 1 <= S <= n:
        raise ValueError(f"drmad: reverse_steps must be between 1 and the {n} forward steps it "
                         f"replaces; got {steps}")
    delta = w_b - w_a
    blocks = _blocks(n, S)

    def aux_at(s):
        """Optimiser state after ``s`` reverse-grid steps (``s = 0`` is ``aux_a``)."""
        interp = tuple(a + (s / S) * (b - a) for a, b in zip(aux_a, aux_b))
        if s == 0 or velocity == "interpolate":
            return interp
        alpha = problem.per_element(problem.alphas[t_a + _nearest_forward(s - 1, n, S)])
        with np.errstate(divide="ignore", invalid="ignore"):
            path = delta / (S * alpha)
        return (np.where(alpha != 0, path, interp[0]),)

    aux_next = aux_at(S)
    for s in range(S - 1, -1, -1):
        t = t_a + _nearest_forward(s, n, S)
        w_s = w_a + (s / S) * delta
        aux_s = aux_at(s)
        adj.step_spread(t, t_a + blocks[s], w_s, aux_s, aux_next)
        aux_next = aux_s
    return adj


@register("drmad")
def run_drmad(problem, stats, reverse_steps=None, velocity=None):
    """DrMAD: float training, reverse pass along the straight line from w_0 to w_T."""
    rule = problem_rule(problem)
    velocity = _velocity(rule, velocity)
    if reverse_steps is not None:
        positive_int(reverse_steps, "drmad: reverse_steps")
    w0, aux0 = rule.float_start(problem)
    w_T, aux_T = train_float(problem, rule=rule)
    stats.update(reverse_steps=problem.T if reverse_steps is None else int(reverse_steps),
                 velocity=velocity)

    def backward(dw):
        adj = Adjoint(problem, dw, rule=rule)
        reverse_line(problem, adj, w0, aux0, w_T, aux_T, 0, problem.T, reverse_steps, velocity)
        return adj.result()

    return w_T, backward


def _shifted(fun, offset):
    return lambda w, meta, t, *rest: fun(w, meta, t + offset, *rest)


@register("drmad_hybrid")
def run_drmad_hybrid(problem, stats, K=None, reverse_steps=None, velocity=None, check=True):
    """Exact reversal of the last K steps, then DrMAD's straight line from w_{T-K} to w_0."""
    T = problem.T
    K = resolve_K(K, T, "drmad_hybrid")
    rule = problem_rule(problem)
    if rule.name != "momentum":
        raise ValueError(f"drmad_hybrid supports SGD with momentum only, not {rule.name}; "
                         "use method='drmad' or 'exact'")
    if K == 0:
        stats.update(K=0)
        return run_drmad(problem, stats, reverse_steps, velocity)
    velocity = _velocity(rule, velocity)
    start = T - K
    w_mid, (v_mid,) = train_float(problem, 0, start, rule=rule)
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
        adj = Adjoint(problem, out["w0"], [out["v0"]], out["meta"], rule=rule)
        adj.cot.hyper["alphas"][start:] = out["alphas"]
        adj.cot.hyper["betas"][start:] = out["betas"]
        reverse_line(problem, adj, problem.w0, (problem.v0,), w_mid, (v_mid,), 0, start,
                     reverse_steps, velocity)
        return adj.result()

    return state.w, backward
