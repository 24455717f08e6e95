"""``method="unrolled"``: plain float64 training that autograd differentiates directly.

The independent reference for every other method: O(T N) memory, no fixed
point.  The loop is the update rule's own float step (momentum or Adam) run on
autograd boxes.  Momenta are the engine's effective betas
(:func:`reversible.effective_beta`) with a straight-through gradient, so both
paths train the same model.
"""

from autograd import grad
from autograd.tracer import getval

from ..trajectory import check_vector
from . import register
from .checkpointed import problem_rule


def unroll(rule, loss, w, aux, hyper, meta, T):
    """``w_T`` after ``T`` float steps of ``rule`` with (possibly boxed) ``hyper`` arrays."""
    dloss = grad(loss, 0)
    N = getval(w).size
    for t in range(T):
        g = dloss(w, meta, t)
        check_vector(getval(g), N, "gradient", t)        # loud like the exact engine
        w, aux = rule.float_step(hyper, t, w, aux, g)
        check_vector(getval(w), N, "weights after the update", t)
    return w


@register("unrolled", traced=True)
def run_unrolled(problem, w0, v0, alphas, betas, meta, stats):
    """Differentiate the float64 training loop with autograd (stores the trajectory)."""
    rule = problem_rule(problem)
    hyper = rule.traced_hyper({"alphas": alphas, "betas": betas})
    return unroll(rule, problem.loss, w0, (v0,), hyper, meta, problem.T)
