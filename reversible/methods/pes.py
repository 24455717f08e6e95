"""``method="pes"``: Persistent Evolution Strategies (Vicol, Metz & Sohl-Dickstein, ICML 2021).

The run is cut into truncations of ``K`` steps (the last one shorter when
``K`` does not divide ``T``: it has ``T mod K`` steps).  Every particle keeps
its own state ``(w, v)`` across truncations; at the start of each
truncation each antithetic pair draws fresh noise ``eps_j`` and the pair runs
that truncation at ``theta +- sigma eps_j``, accumulating ``xi = sum_j eps_j``.
The VJP at cotangent ``dw`` is

    (1 / (sigma n)) sum_i (F_i(+) - F_i(-)) / 2 * xi_i,      F = < dw, w_T >,

an unbiased estimate of the gradient of the PES-smoothed map
``E < dw, w_T(theta + sigma eps_1 | ... | theta + sigma eps_m) >`` in which
each truncation sees its own perturbation.  For a per-step hyperparameter
(a row of ``alphas`` / ``betas``, read in one truncation only) only that
truncation's noise is accumulated (the others are independent of it and
would only add variance), so for schedules the PES- and ES-smoothed maps
coincide; for ``meta``, shared by all steps, they differ unless ``K = T``.
With ``K = T`` this is :mod:`es` draw for draw (same ``seed``, same result).

Options and perturbed hyperparameters as for ``es``; ``K`` defaults to
``ceil(T / 10)``.  Here PES's persistence buys no memory (the VJP needs the
whole run's particles); its use is online, where the hyperparameters change
after each truncation: :class:`reversible.online.PersistentES`.
"""

from . import register
from .es import run_particles


@register("pes", blind_to=("w0", "v0"))
def run_pes(problem, stats, sigma=None, particles=64, K=None, seed=0, perturb=None):
    """Persistent ES over truncations of K steps (remainder in a shorter last truncation)."""
    return run_particles(problem, stats, "pes", sigma, particles, seed, K, perturb)
