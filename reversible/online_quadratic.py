"""The quadratic benchmark of "Online hyper-parameter optimization" (ICLR 2018 submission).

Training and validation losses, for a diagonal positive ``H``::

    L_T(theta, lam) = 1/2 (theta - tt)' H (theta - tt) + 1/2 lam theta' H theta
    L_V(theta)      = 1/2 (theta - th)' H (theta - th)

``theta*(lam) = tt / (1 + lam)`` and ``lam* = tt'H tt / tt'H th - 1``.
Everything is closed form, so training, the tangent ``y = d theta / d lam``
and the hyperparameter updates run in NumPy batched over repetitions (rows).
Plain SGD: ``theta <- theta - eta g``; the tangent follows
``y <- y - eta (A y + H theta)`` with ``A = (1 + lam) H``.
"""

from dataclasses import dataclass

import numpy as np


@dataclass
class Quadratic:
    """``reps`` independent problems (one per row)."""

    h: np.ndarray            # (R, D) diagonal of H
    tt: np.ndarray           # (R, D) theta tilde (training target)
    th: np.ndarray           # (R, D) theta hat (validation target)

    @property
    def lam_star(self):
        return lam_star(self.h, self.tt, self.th)

    @property
    def lam_greedy(self):
        return lam_greedy(self.h, self.tt, self.th)

    def val_loss(self, theta):
        return 0.5 * np.sum(self.h * (theta - self.th) ** 2, axis=-1)

    def theta_star(self, lam):
        return self.tt / (1.0 + np.asarray(lam, dtype=float)[..., None])

    def val_optimum(self):
        """``min over lam of L_V(theta*(lam))`` per repetition."""
        return self.val_loss(self.theta_star(self.lam_star))


def lam_star(h, tt, th):
    """The L2 weight minimising ``L_V(theta*(lam))``: ``tt'H tt / tt'H th - 1``."""
    return np.sum(h * tt * tt, axis=-1) / np.sum(h * tt * th, axis=-1) - 1.0


def lam_greedy(h, tt, th):
    """Where short unrolls settle: the zero of ``<g_V, H theta>`` at ``theta*(lam)``,
    ``sum h^2 tt^2 / sum h^2 tt th - 1`` (an H^2-weighted version of ``lam*``)."""
    return np.sum(h * h * tt * tt, axis=-1) / np.sum(h * h * tt * th, axis=-1) - 1.0


def make_quadratic(reps=50, dim=20, seed=0, lam_range=(0.2, 0.4), h_range=(0.2, 2.0), noise=1.0):
    """Sample problems whose optimal L2 weight ``lam*`` is uniform in ``lam_range``.

    ``diag(H)`` is log-uniform in ``h_range``; ``tt ~ N(0, I)``;
    ``th = tt / (1 + lam*) + e`` with ``e ~ noise * N(0, I)`` made
    H-orthogonal to ``tt`` (which fixes ``lam*`` exactly).
    """
    if reps < 1 or dim < 2:
        raise ValueError(f"make_quadratic needs reps >= 1 and dim >= 2; got reps={reps}, dim={dim}")
    lo, hi = h_range
    if not 0 < lo <= hi:
        raise ValueError(f"h_range must satisfy 0 < low <= high; got {h_range}")
    rng = np.random.default_rng(seed)
    h = np.exp(rng.uniform(np.log(lo), np.log(hi), (reps, dim)))
    tt = rng.standard_normal((reps, dim))
    ls = rng.uniform(lam_range[0], lam_range[1], reps)
    e = noise * rng.standard_normal((reps, dim))
    e -= (np.sum(h * tt * e, axis=1) / np.sum(h * tt * tt, axis=1))[:, None] * tt
    th = tt / (1.0 + ls[:, None]) + e
    return Quadratic(h, tt, th)


def parse_method(name):
    """``"unroll1_gtgv"``, ``"unrollK"`` or ``"clipR"`` -> (kind, parameter)."""
    if name == "unroll1_gtgv":
        return "gtgv", 1
    for prefix, kind, cast in (("unroll", "unroll", int), ("clip", "clip", float)):
        if name.startswith(prefix):
            try:
                value = cast(name[len(prefix):])
            except ValueError:
                break
            if value > 0:
                return kind, value
    raise ValueError(f"unknown quadratic method {name!r}; use 'unroll1_gtgv', 'unroll<K>' "
                     "(e.g. 'unroll5') or 'clip<r>' (e.g. 'clip2', 'clip0.5')")


def run(problem, method, phases=((20000, 1e-3), (20000, 1e-4)), c=0.1, lam0=0.0,
        unroll_hyper_lr=None, warmup=0, theta0=None):
    """Online training of ``theta`` and ``lam`` on every repetition at once.

    ``method``: ``"clip<r>"`` (tangent never reset, projected on the ball of
    radius r every step, ``lam -= c eta <g_V, y>`` every step after ``warmup``
    steps), ``"unroll<K>"`` (tangent reset every K steps, ``lam -=
    unroll_hyper_lr * <g_V, y>`` at the end of each block; default
    ``unroll_hyper_lr = c``, the rate that moves ``lam`` per step like ``c eta``
    on the ``unroll1_gtgv`` scale), ``"unroll1_gtgv"`` (``lam -= c eta *
    (-<g_V, H theta>)`` every step).  ``g_V`` is taken after the step.

    Returns a dict: per phase, ``theta``, ``lam`` and the rows' ``lam`` trace.
    """
    kind, param = parse_method(method)
    R, D = problem.h.shape
    h, tt, th = problem.h, problem.tt, problem.th
    theta = np.zeros((R, D)) if theta0 is None else np.array(theta0, dtype=float)
    lam = np.full(R, float(lam0))
    y = np.zeros((R, D))
    out = {"method": method, "phases": []}
    step = 0
    for n_steps, eta in phases:
        trace = np.empty((n_steps, R))
        u_lr = c if unroll_hyper_lr is None else unroll_hyper_lr
        for i in range(n_steps):
            hth = h * theta                                   # d g_T / d lam = H theta
            g = h * (theta - tt) + lam[:, None] * hth
            y_prev = y
            theta = theta - eta * g
            if kind != "gtgv":
                y = y_prev - eta * ((1.0 + lam)[:, None] * h * y_prev + hth)
            gv = h * (theta - th)
            hyper = step >= warmup
            if kind == "clip":
                norm = np.sqrt(np.sum(y * y, axis=1))
                y = y * np.where(norm > param, param / np.where(norm > param, norm, 1.0), 1.0)[:, None]
                if hyper:
                    lam = lam - c * eta * np.sum(gv * y, axis=1)
            elif kind == "unroll":
                if (step + 1) % param == 0:
                    if hyper:
                        lam = lam - u_lr * np.sum(gv * y, axis=1)
                    y = np.zeros_like(y)
            elif hyper:
                lam = lam + c * eta * np.sum(gv * hth, axis=1)
            if not np.all(np.isfinite(lam)):
                raise FloatingPointError(f"{method}: lambda became non-finite at step {step}; "
                                         "lower the hyper learning rate")
            trace[i] = lam
            step += 1
        out["phases"].append({"eta": eta, "steps": n_steps, "theta": theta.copy(),
                              "lam": lam.copy(), "trace": trace})
    return out


def summarise(problem, result):
    """Per phase: mean (and std) over repetitions of the relative increase of
    ``L_V`` over its optimum (percent) and of ``|lam - lam*|``."""
    best = problem.val_optimum()
    rows = []
    for ph in result["phases"]:
        inc = 100.0 * (problem.val_loss(ph["theta"]) - best) / best
        err = np.abs(ph["lam"] - problem.lam_star)
        rows.append({"eta": ph["eta"], "steps": ph["steps"],
                     "lam_greedy_abs_dist_median": float(np.median(np.abs(ph["lam"] - problem.lam_greedy))),
                     "lv_increase_pct": float(np.mean(inc)), "lv_increase_pct_std": float(np.std(inc)),
                     "lam_abs_err": float(np.mean(err)), "lam_abs_err_std": float(np.std(err))})
    return rows
