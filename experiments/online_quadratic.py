"""Table 1 of "Online hyper-parameter optimization" (ICLR 2018 submission), on its quadratic.

Dimension 20, diagonal H (log-uniform in [0.2, 2]), lam* uniform in
[0.2, 0.4]; 20K steps of SGD at eta = 1e-3, then 20K at 1e-4; hyper step
0.1 eta <g_V, y> every step for clip(r) and unroll1_gtgv, 0.1 <g_V, y_K> every
K steps for unroll(K) (the same speed per step on the gtgv scale); lam0 = 0;
50 repetitions, run together in NumPy.  Reports, after each phase, the
relative increase of L_V(theta) over min_lam L_V(theta*(lam)) and |lam - lam*|.

    python -m experiments.online_quadratic --out results [--quick]

The problem (its code is below, batched over repetitions):

Training and validation losses, for a diagonal positive ``H``::

    L_T(theta, lam) = 1/2 (theta - tt)' H (theta - tt) + 1/2 lam theta' H theta
    L_V(theta)      = 1/2 (theta - th)' H (theta - th)

``theta*(lam) = tt / (1 + lam)`` and ``lam* = tt'H tt / tt'H th - 1``.
Everything is closed form, so training, the tangent ``y = d theta / d lam``
and the hyperparameter updates run in NumPy batched over repetitions (rows).
Plain SGD: ``theta <- theta - eta g``; the tangent follows
``y <- y - eta (A y + H theta)`` with ``A = (1 + lam) H``.
"""

import argparse
import sys
import time
from dataclasses import dataclass

import numpy as np
from tqdm.auto import tqdm

from experiments.common import add_common_arguments, save_results

NAME = "online_quadratic"
METHODS = ["unroll1", "unroll5", "unroll10", "clip2", "clip5", "unroll1_gtgv", "clip1e9"]


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


def run_method(problem, method, phases=((20000, 1e-3), (20000, 1e-4)), c=0.1, lam0=0.0,
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


def add_arguments(parser):
    add_common_arguments(parser)
    parser.add_argument("--methods", nargs="+", default=METHODS,
                        help="unroll1_gtgv, unroll<K>, clip<r> (default %(default)s)")
    parser.add_argument("--reps", type=int, default=50, help="repetitions (default %(default)s)")
    parser.add_argument("--dim", type=int, default=20, help="dimension (default %(default)s)")
    parser.add_argument("--steps", type=int, nargs=2, default=[20000, 20000],
                        help="steps of the two phases (default %(default)s)")
    parser.add_argument("--etas", type=float, nargs=2, default=[1e-3, 1e-4],
                        help="learning rates of the two phases (default %(default)s)")
    parser.add_argument("--c", type=float, default=0.1,
                        help="hyper learning rate factor c (step c*eta*h) (default %(default)s)")
    parser.add_argument("--unroll-hyper-lr", type=float, default=None,
                        help="hyper step of unroll(K) per block (default: c)")
    parser.add_argument("--lam0", type=float, default=0.0, help="initial lambda")
    parser.add_argument("--h-range", type=float, nargs=2, default=[0.2, 2.0],
                        help="range of diag(H), log-uniform (default %(default)s)")
    parser.add_argument("--trace-points", type=int, default=400,
                        help="points kept of each lambda trace for the figure")
    return parser


def run(args):
    if args.quick:
        args.reps, args.steps, args.etas = 10, [2000, 2000], [1e-2, 1e-3]
    problem = make_quadratic(args.reps, args.dim, seed=args.seed, h_range=tuple(args.h_range))
    phases = tuple(zip(args.steps, args.etas))
    rows, arrays = [], {"lam_star": problem.lam_star}
    total = sum(args.steps)
    keep = np.unique(np.linspace(0, total - 1, args.trace_points).astype(int))
    arrays["trace_steps"] = keep + 1
    for name in tqdm(args.methods, desc=NAME, unit="method", leave=False):
        t0 = time.perf_counter()
        res = run_method(problem, name, phases=phases, c=args.c, lam0=args.lam0,
                         unroll_hyper_lr=args.unroll_hyper_lr)
        secs = time.perf_counter() - t0
        for i, row in enumerate(summarise(problem, res)):
            rows.append({"method": name, "phase": i + 1, "seconds": secs, **row})
        trace = np.concatenate([ph["trace"] for ph in res["phases"]])
        arrays[f"lam_err_{name}"] = np.mean(np.abs(trace[keep] - problem.lam_star), axis=1)
        tqdm.write(f"{name:>14s}: " + "  ".join(
            f"phase {r['phase']}: {r['lv_increase_pct']:+.2f}% |lam-lam*|={r['lam_abs_err']:.3f}"
            for r in rows[-len(phases):]) + f"  ({secs:.1f}s)")
    summary = {"experiment": NAME, "args": vars(args), "rows": rows,
               "lam_star_range": [float(problem.lam_star.min()), float(problem.lam_star.max())],
               "lam_greedy_abs_err": float(np.mean(np.abs(problem.lam_greedy - problem.lam_star)))}
    return save_results(args.out, NAME, summary, arrays)


def main(argv=None):
    parser = add_arguments(argparse.ArgumentParser(description=__doc__.split("\n")[0]))
    args = parser.parse_args(argv)
    print("wrote", run(args))


if __name__ == "__main__":
    sys.exit(main())
