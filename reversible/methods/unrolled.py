"""``method="unrolled"``: plain float64 training that autograd differentiates directly.

The independent reference for every other method: O(T N) memory, no fixed
point.  Momenta are the engine's effective betas (``round(beta * 2**32) /
2**32``) with a straight-through gradient, so both paths train the same model.
"""

from autograd import grad
from autograd.tracer import getval

from ..buffer import effective_beta
from . import register


def straight_through_beta(betas):
    """``effective_beta(betas)`` in value, identity in derivative."""
    return betas + (effective_beta(getval(betas)) - getval(betas))


@register("unrolled", traced=True)
def run_unrolled(problem, w0, v0, alphas, betas, meta, stats):
    """Differentiate the float64 training loop with autograd (stores the trajectory)."""
    dloss = grad(problem.loss, 0)
    betas = straight_through_beta(betas)
    gi = problem.group_index
    w, v = w0, v0
    for t in range(problem.T):
        g = dloss(w, meta, t)
        beta = betas[t][gi]
        v = beta * v - (1.0 - beta) * g
        w = w + alphas[t][gi] * v
    return w
