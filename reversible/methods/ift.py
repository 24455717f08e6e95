"""``method="neumann"``, ``"cg"``, ``"identity"``: implicit differentiation at ``w_T``.

Treating ``w_T`` as a stationary point of the training loss, the implicit
function theorem gives (Lorraine, Vicol & Duvenaud 2020)::

    d L_V / d meta = - H_{meta,w} [H_ww^{-1} dL_V/dw]      at w_T,

where ``dL_V/dw`` is the cotangent of ``w_T``.  The methods differ in the
inverse: ``i`` Neumann terms ``step * sum_{j=0..i} (I - step H)^j``
(``neumann``; ``step`` defaults to the last learning rate of each element),
``i`` conjugate-gradient iterations (``cg``; optional ``damping`` adds
``damping * I``; ``stats`` reports negative curvature met on the way), or ``scale * I`` (``identity``, as in T1-T2).  The Hessians
are those of the training loss at the minibatches of the last ``at_steps``
steps (averaged).  Training itself is plain float64.

These methods cannot see ``w0``, ``v0``, ``alphas`` or ``betas``: the
stationary point does not depend on them, so their cotangents are zeros.
"""

import numpy as np

from . import register
from .checkpointed import positive_int, train_float

BLIND = ("w0", "v0", "alphas", "betas")


def neumann_solve(hvp, b, terms, step):
    """``step * sum_{j=0..terms} (I - step H)^j b``: the truncated Neumann series for ``H^{-1} b``."""
    term = np.array(b, dtype=np.float64)
    total = term.copy()
    for _ in range(int(terms)):
        term = term - step * hvp(term)
        total = total + term
    return step * total


def cg_solve(hvp, b, iterations, damping=0.0, tol=0.0):
    """``iterations`` conjugate-gradient steps on ``(H + damping I) x = b`` from ``x = 0``.

    Returns ``(x, info)``; stops early on a residual below ``tol * |b|``.  CG
    assumes a positive definite ``H``: directions of negative curvature (a
    non-convex training loss) are followed anyway and reported in ``info``;
    ``damping`` can restore definiteness.
    """
    b = np.asarray(b, dtype=np.float64)
    x = np.zeros_like(b)
    r = b.copy()
    p = r.copy()
    rr = float(r @ r)
    bb = rr
    info = {"iterations": 0, "negative_curvature": False}
    for k in range(int(iterations)):
        if rr == 0.0 or rr <= (tol ** 2) * bb:
            break
        Ap = hvp(p) + damping * p
        pAp = float(p @ Ap)
        if pAp == 0.0 or not np.isfinite(pAp):
            break
        if pAp < 0.0:              # CG assumes H > 0; keep going (as plain CG does) but say so
            info["negative_curvature"] = True
        a = rr / pAp
        x = x + a * p
        r = r - a * Ap
        rr_new = float(r @ r)
        p = r + (rr_new / rr) * p
        rr = rr_new
        info["iterations"] = k + 1
    info["relative_residual"] = float(np.sqrt(rr / bb)) if bb > 0 else 0.0
    return x, info


def finite_number(value, name, minimum=None, strictly=False):
    """``value`` as a float, refusing NaN, Inf and values below ``minimum``."""
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a real number; got {value!r}") from None
    low = minimum is not None and (x <= minimum if strictly else x < minimum)
    if not np.isfinite(x) or low:
        bound = "" if minimum is None else f" {'>' if strictly else '>='} {minimum}"
        raise ValueError(f"{name} must be a finite number{bound}; got {value!r}")
    return x


def _steps(problem, at_steps):
    k = positive_int(at_steps, "at_steps")
    if not 1 <= k <= problem.T:
        raise ValueError(f"at_steps must be between 1 and T={problem.T}; got {at_steps}")
    return list(range(problem.T - k, problem.T))


def _ift_run(problem, stats, solve, at_steps):
    """Train in float64, then return ``(w_T, backward)`` using ``solve(hvp, b)``."""
    w_T, _ = train_float(problem)
    steps = _steps(problem, at_steps)
    stats.update(ift_steps=steps)

    def hvp(u):
        return sum(problem.vjp(w_T, problem.meta, t, u)[1] for t in steps) / len(steps)

    def backward(dw):
        p = solve(hvp, np.asarray(dw, dtype=np.float64))
        meta = None
        if problem.meta_size:
            meta = -sum(problem.vjp(w_T, problem.meta, t, p)[2] for t in steps) / len(steps)
        zeros = np.zeros(problem.N)
        sched = np.zeros((problem.T, problem.G))
        return {"w0": zeros, "v0": zeros.copy(), "alphas": sched, "betas": sched.copy(),
                "meta": meta}

    return w_T, backward


@register("neumann", blind_to=BLIND)
def run_neumann(problem, stats, terms=20, step=None, at_steps=1):
    """IFT hypergradient with a truncated Neumann series (step defaults to the last alphas)."""
    terms = positive_int(terms, "neumann: terms", minimum=0)
    if step is None:
        step = problem.per_element(problem.alphas[-1])
    else:
        step = np.asarray(step, dtype=np.float64)
        if not np.all(np.isfinite(step)) or np.any(step <= 0):
            raise ValueError(f"neumann: step must be finite and > 0; got {step!r}")
    stats.update(terms=terms)
    return _ift_run(problem, stats, lambda hvp, b: neumann_solve(hvp, b, terms, step), at_steps)


@register("cg", blind_to=BLIND)
def run_cg(problem, stats, iterations=20, damping=0.0, tol=0.0, at_steps=1):
    """IFT hypergradient with conjugate gradients on the training Hessian at w_T."""
    iterations = positive_int(iterations, "cg: iterations", minimum=0)
    damping = finite_number(damping, "cg: damping", minimum=0.0)
    tol = finite_number(tol, "cg: tol", minimum=0.0)

    def solve(hvp, b):
        x, info = cg_solve(hvp, b, iterations, damping, tol)
        stats.update(cg_iterations=info["iterations"], cg_relative_residual=info["relative_residual"],
                     cg_negative_curvature=info["negative_curvature"])
        return x

    return _ift_run(problem, stats, solve, at_steps)


@register("identity", blind_to=BLIND)
def run_identity(problem, stats, scale=1.0, at_steps=1):
    """IFT hypergradient with ``scale * I`` for the inverse Hessian: ``-scale H_{meta,w} dw``."""
    scale = finite_number(scale, "identity: scale")
    return _ift_run(problem, stats, lambda hvp, b: scale * b, at_steps)
