"""``method="unrolled"``: plain float64 training that autograd differentiates directly.

The independent reference for every other method: O(T N) memory, no fixed
point.  The loop is the update rule's own float step (momentum or Adam) run on
autograd boxes.  Momenta are the engine's effective betas
(:func:`reversible.effective_beta`) with a straight-through gradient, so both
paths train the same model.
"""

from autograd import grad
from autograd.tracer import getval

from ..buffer import effective_beta
from . import register
from .checkpointed import problem_rule


def straight_through_beta(betas):
    """``effective_beta(betas)`` in value, identity in derivative."""
    return betas + (effective_beta(getval(betas)) - getval(betas))


def unroll(rule, loss, w, aux, hyper, meta, T):
    """``w_T`` after ``T`` float steps of ``rule`` with (possibly boxed) ``hyper`` arrays."""
    dloss = grad(loss, 0)
    for t in range(T):
        w, aux = rule.float_step(hyper, t, w, aux, dloss(w, meta, t))
    return w


@register("unrolled", traced=True)
def run_unrolled(problem, w0, v0, alphas, betas, meta, stats):
    """Differentiate the float64 training loop with autograd (stores the trajectory)."""
    hyper = {"alphas": alphas, "betas": straight_through_beta(betas)}
    return unroll(problem_rule(problem), problem.loss, w0, (v0,), hyper, meta, problem.T)
