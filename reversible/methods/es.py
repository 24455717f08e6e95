"""``method="es"``: antithetic evolution strategies over the whole run.

The VJP of ``sgd(..., method="es")`` at cotangent ``dw`` is the antithetic ES
estimate of the gradient of the Gaussian-smoothed map

    F_sigma(theta) = E_eps < dw, w_T(theta + sigma eps) >,     eps ~ N(0, I),

namely ``(1 / (sigma n)) sum_i (F(theta + sigma eps_i) - F(theta - sigma eps_i)) / 2 * eps_i``
over ``n = particles / 2`` antithetic pairs.  The particles are trained
once, in the forward pass, as one stacked ``(particles + 1, N)`` float64 run
(row 0 unperturbed: it is the ``w_T`` returned, bit for bit that of the other
float methods); only the loss-gradient calls loop over particles.  The
backward pass is a contraction of the stored final weights with ``dw``, so
any number of cotangents can be pulled back through one set of runs.

Which hyperparameters are perturbed (``perturb``):

* by default the learning rates ``alphas`` (every step and group: ``(T, G)``
  coordinates) and ``meta`` (when the loss has one);
* ``betas`` only on request (``perturb=("alphas", "betas", "meta")``):
  momenta must stay in ``(0, 1]`` and are applied after rounding to the
  momentum quantum, so a perturbed momentum outside that range is an error;
* never ``w0`` / ``v0`` (``blind_to``): an ``N``-dimensional perturbation of
  the weights would add its variance to every other hyperparameter's estimate.
  Their cotangents are zero; those of a schedule kind left out of ``perturb``
  are NaN, so that using them cannot go unnoticed.

``sigma`` is the smoothing scale in the hyperparameters' own units: one
float for every perturbed kind, or a dict ``{kind: sigma}`` (its keys then
name the perturbed kinds).  Perturbed step sizes are used as drawn, even
negative ones (the float training map is defined there); to smooth in
log step size, parameterise ``alphas = exp(log_alpha)`` outside ``sgd`` and
use :mod:`reversible.smoothed`.  After the backward pass, ``stats`` holds
``standard_error`` (per kind, the estimator's own standard error from the
spread over pairs) and the options used.

Both run under :func:`reversible.adam` too (its update rule's own float step,
one particle at a time); there only ``alphas`` and ``meta`` can be perturbed,
and the other Adam hyperparameters get NaN cotangents.

``method="pes"`` (:mod:`reversible.methods.pes`) is the same estimator over
truncations of ``K`` steps; ``es`` is ``pes`` with one truncation of ``T`` steps.
"""

import numbers

import numpy as np

from ..buffer import effective_beta
from ..errors import NonFiniteError
from . import register
from .checkpointed import problem_rule

SCHEDULE_KINDS = ("alphas", "betas")
PERTURBABLE = ("alphas", "betas", "meta")


# ------------------------------------------------------------------ options
def check_sigma(sigma, name):
    """A positive finite float (not a bool)."""
    if isinstance(sigma, bool) or not isinstance(sigma, numbers.Real):
        raise ValueError(f"{name}: sigma must be a positive float (the smoothing scale in the "
                         f"hyperparameters' units); got {sigma!r}")
    sigma = float(sigma)
    if not (np.isfinite(sigma) and sigma > 0):
        raise ValueError(f"{name}: sigma must be positive and finite; got {sigma!r}")
    return sigma


def check_particles(particles, name):
    """A positive even integer: antithetic pairs ``(theta + sigma eps, theta - sigma eps)``."""
    if isinstance(particles, bool) or not isinstance(particles, numbers.Integral):
        raise ValueError(f"{name}: particles must be a positive even integer; got {particles!r}")
    particles = int(particles)
    if particles < 2 or particles % 2:
        raise ValueError(f"{name}: particles must be a positive even integer (antithetic pairs); "
                         f"got {particles}")
    return particles


def check_seed(seed, name):
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ValueError(f"{name}: seed must be a non-negative integer; got {seed!r}")
    return int(seed)


def check_K(K, T, name):
    """Truncation length: an integer in ``[1, T]``; ``None`` is ``ceil(T / 10)``."""
    if K is None:
        return max(1, -(-T // 10))
    if isinstance(K, bool) or not isinstance(K, numbers.Integral):
        raise ValueError(f"{name}: K must be a positive integer number of steps; got {K!r}")
    K = int(K)
    if not 1 <= K <= T:
        raise ValueError(f"{name}: K must be between 1 and T={T}; got {K}")
    return K


def resolve_sigmas(problem, sigma, perturb, name):
    """``{kind: sigma}`` for the perturbed kinds, checked against the problem."""
    if sigma is None:
        raise ValueError(f"{name}: give sigma, the standard deviation of the Gaussian smoothing "
                         "in the hyperparameters' units (a float, or a dict {kind: sigma})")
    if isinstance(sigma, dict):
        if perturb is not None and set(perturb) != set(sigma):
            raise ValueError(f"{name}: sigma's keys {sorted(sigma)} and perturb {list(perturb)} "
                             "disagree; give one of them")
        perturb = tuple(sigma)
    elif perturb is None:
        perturb = ("alphas",) + (("meta",) if problem.meta is not None else ())
    if isinstance(perturb, str):
        perturb = (perturb,)
    perturb = tuple(perturb)
    bad = [k for k in perturb if k not in PERTURBABLE]
    if bad or not perturb:
        raise ValueError(f"{name}: perturb must name one or more of {PERTURBABLE} (w0 and v0 "
                         f"are never perturbed); got {list(perturb)}")
    if "meta" in perturb and problem.meta is None:
        raise ValueError(f"{name}: perturb names meta but the training loss has no meta")
    return {k: check_sigma(sigma[k] if isinstance(sigma, dict) else sigma, f"{name} ({k})")
            for k in PERTURBABLE if k in perturb}


# ------------------------------------------------------------------ stacked particles
def _step_done(W, t, name, progress):
    """After step ``t``: a non-finite particle is an error naming it; advance the progress bar."""
    if not np.all(np.isfinite(W)):
        p = int(np.flatnonzero(~np.all(np.isfinite(W), axis=1))[0])
        raise NonFiniteError(f"{name}: the weights of particle {p} became NaN or Inf at step "
                             f"{t}; lower sigma or the learning rates")
    if progress is not None:
        progress.update(1)


def train_particles(problem, alphas, betas_eff, metas, W, V, t_start, t_stop, name="es",
                    progress=None, stacked_grad=None):
    """Float64 training of stacked particles over steps ``t_start .. t_stop-1``.

    ``W, V``: ``(P, N)``; ``alphas, betas_eff``: ``(T, P, G)`` (rows outside the
    range are not read); ``metas``: ``(P, M)`` or None.  The gradients of all
    particles come from ``stacked_grad(W, metas, t) -> (P, N)`` when given (a
    batched model), else from the problem's gradient one particle at a time (the
    user's loss takes one weight vector).  One compiled pass per step updates all
    particles in place.  A non-finite weight raises :class:`NonFiniteError`
    naming the step and the particle.
    """
    from ..numba_kernels import particles_momentum_step
    if stacked_grad is None:
        def stacked_grad(W, metas, t):
            return np.stack([problem.grad(W[p], None if metas is None else metas[p], t)
                             for p in range(W.shape[0])])
    W, V = np.array(W, dtype=np.float64, order="C"), np.array(V, dtype=np.float64, order="C")
    group_index = np.ascontiguousarray(problem.group_index, dtype=np.int64)
    for t in range(t_start, t_stop):
        g = np.ascontiguousarray(stacked_grad(W, metas, t), dtype=np.float64)
        particles_momentum_step(W, V, g, np.ascontiguousarray(alphas[t], dtype=np.float64),
                                np.ascontiguousarray(betas_eff[t], dtype=np.float64), group_index)
        _step_done(W, t, name, progress)
    return W, V


def train_particles_rule(problem, rule, alphas, metas, W, aux, t_start, t_stop, name="es",
                         progress=None):
    """:func:`train_particles` for any update rule (Adam): the rule's own float step, one
    particle at a time (its formulas index schedules by group for one state vector).

    ``aux`` is the rule's state tuple, each ``(P, N)``; updated in place with ``W``.
    """
    hyper = rule.float_hyper()
    P = W.shape[0]
    for t in range(t_start, t_stop):
        for p in range(P):
            g = problem.grad(W[p], None if metas is None else metas[p], t)
            w, a = rule.float_step(dict(hyper, alphas=alphas[:, p, :]), t, W[p],
                                   tuple(x[p] for x in aux), g)
            W[p] = w
            for x, new in zip(aux, a):
                x[p] = new
        _step_done(W, t, name, progress)
    return W, aux


def _draw(rng, n, sigmas, problem, start, stop):
    """Unit noise for one truncation: ``{kind: (n, rows, G) or (n, M)}``, in a fixed order."""
    eps = {}
    for kind in PERTURBABLE:
        if kind in sigmas:
            shape = (n, problem.meta_size) if kind == "meta" else (n, stop - start, problem.G)
            eps[kind] = rng.standard_normal(shape)
    return eps


def _stack_schedule(base_rows, eps, sigma):
    """``(rows, 1 + 2n, G)``: the unperturbed rows, then ``+ sigma eps``, then ``- sigma eps``."""
    rows = base_rows[:, None, :]
    if eps is None:
        return np.broadcast_to(rows, (rows.shape[0], 1, rows.shape[2])).copy()
    d = sigma * np.transpose(eps, (1, 0, 2))
    return np.concatenate([rows, rows + d, rows - d], axis=1)


def run_particles(problem, stats, name, sigma, particles, seed, K, perturb):
    """ES over truncations of ``K`` steps with persistent particles (``K = T``: plain ES).

    Returns ``(w_T, backward)`` as every registered method does.
    """
    sigmas = resolve_sigmas(problem, sigma, perturb, name)
    particles = check_particles(particles, name)
    seed = check_seed(seed, name)
    T, G, N = problem.T, problem.G, problem.N
    K = check_K(K, T, name)
    rule = problem_rule(problem)
    momentum = rule.name == "momentum"
    if not momentum and "betas" in sigmas:
        raise ValueError(f"{name}: with the {rule.name} update rule only alphas and meta can be "
                         "perturbed; leave betas out of perturb")
    n = particles // 2
    P = 1 + 2 * n
    rng = np.random.default_rng(seed)
    W = np.tile(problem.w0, (P, 1))
    if momentum:
        V = np.tile(problem.v0, (P, 1))
    else:
        aux = tuple(np.tile(x, (P, 1)) for x in rule.float_start(problem)[1])
    alphas = np.empty((T, P, G))
    betas_eff = np.empty((T, P, G))
    base_betas_eff = problem.effective_betas() if momentum else None
    xi = {k: np.zeros((n, T, G)) if k in SCHEDULE_KINDS else np.zeros((n, problem.meta_size))
          for k in sigmas}
    progress = None
    if problem.progress:
        from tqdm.auto import tqdm
        progress = tqdm(total=T, desc=f"{name} ({particles} particles)", leave=False)
    try:
        for start in range(0, T, K):
            stop = min(start + K, T)
            eps = _draw(rng, n, sigmas, problem, start, stop)
            alphas[start:stop] = _stack_schedule(problem.alphas[start:stop], eps.get("alphas"),
                                                 sigmas.get("alphas"))
            if "betas" in sigmas:
                raw = _stack_schedule(problem.betas[start:stop], eps["betas"], sigmas["betas"])
                betas_eff[start:stop] = _checked_betas(raw, start, name)
                xi["betas"][:, start:stop] = eps["betas"]
            elif momentum:
                betas_eff[start:stop] = base_betas_eff[start:stop, None, :]
            if "alphas" in sigmas:
                xi["alphas"][:, start:stop] = eps["alphas"]
            metas = None
            if problem.meta is not None:
                metas = np.tile(problem.meta, (P, 1))
                if "meta" in sigmas:
                    d = sigmas["meta"] * eps["meta"]
                    metas[1:n + 1] += d
                    metas[n + 1:] -= d
                    xi["meta"] += eps["meta"]
            if momentum:
                W, V = train_particles(problem, alphas, betas_eff, metas, W, V, start, stop,
                                       name, progress)
            else:
                W, aux = train_particles_rule(problem, rule, alphas, metas, W, aux, start, stop,
                                              name, progress)
    finally:
        if progress is not None:
            progress.close()
    finals = W[1:]
    stats.update(sigma=sigmas, particles=particles, seed=seed, K=K, truncations=-(-T // K),
                 perturbed=list(sigmas),
                 blind_to=sorted(set(stats.get("blind_to", [])) | {"w0", "v0"} |
                                 {k for k in rule.hyper_kinds + ("meta",) if k not in sigmas}))

    def backward(dw):
        dw = np.asarray(dw, dtype=np.float64).reshape(N)
        F = finals @ dw
        half = 0.5 * (F[:n] - F[n:])                     # (F(+) - F(-)) / 2 per pair
        out = {"w0": np.zeros(N), "v0": np.zeros(N), "meta": None}
        shapes = rule.hyper_shapes()
        out.update({k: np.full(shapes[k], np.nan) for k in rule.hyper_kinds})
        if problem.meta is not None:
            out["meta"] = np.full(problem.meta_size, np.nan)
        errors = {}
        for kind, s in sigmas.items():
            X = xi[kind].reshape(n, -1)
            mean = half @ X / (s * n)
            second = (half ** 2) @ (X ** 2) / (s * s * n)
            var = np.maximum(second - mean ** 2, 0.0) * n / max(n - 1, 1)
            se = np.sqrt(var / n) if n > 1 else np.full_like(mean, np.nan)
            out[kind] = mean.reshape(xi[kind].shape[1:])
            errors[kind] = se.reshape(xi[kind].shape[1:])
        stats["standard_error"] = errors
        return out

    return W[0], backward


def _checked_betas(raw, start, name):
    """Perturbed momenta rounded to the momentum quantum; outside ``(0, 1]`` is an error."""
    bad = (raw <= 0) | (raw > 1)
    if np.any(bad):
        t, p, g = np.argwhere(bad)[0]
        raise ValueError(f"{name}: the perturbed momentum of particle {p}, group {g} at step "
                         f"{start + t} is {raw[t, p, g]:.6g}, outside (0, 1]; lower sigma for "
                         "betas (sigma={'betas': ...}) or leave betas out of perturb")
    return effective_beta(raw)


@register("es", blind_to=("w0", "v0"))
def run_es(problem, stats, sigma=None, particles=64, seed=0, perturb=None):
    """Antithetic ES over the whole run: VJP = ES estimate of the Gaussian-smoothed map's gradient."""
    return run_particles(problem, stats, "es", sigma, particles, seed, problem.T, perturb)
