"""``method="exact"``: reversible training in fixed point (Maclaurin et al. 2015), for any
update rule (SGD with momentum, Adam)."""

from .. import trajectory
from . import register


@register("exact")
def run_exact(problem, stats, check=True):
    """Exact hypergradients by running training backwards bit for bit (O(N) memory)."""
    state = trajectory.forward(problem.grad, problem.w0, problem.schedule(), problem.meta,
                               problem.v0, problem.frac_bits, problem.kernel, problem.progress)
    stats.update(state.stats)

    def backward(dw):
        st = state.copy()          # keep the forward state: the VJP may be asked again
        out = trajectory.reverse(st, problem.vjp, dw, None, problem.meta, problem.meta_size,
                                 problem.kernel, problem.progress, check=check,
                                 grad=problem.grad,
                                 grad_hvp=getattr(problem, "grad_then_hvp", None))
        stats.update(reverse_seconds=st.stats["reverse_seconds"],
                     reversed_exactly=st.stats["reversed_exactly"])
        return out

    return state.w, backward
