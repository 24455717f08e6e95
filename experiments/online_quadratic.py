"""Table 1 of "Online hyper-parameter optimization" (ICLR 2018 submission), on its quadratic.

Dimension 20, diagonal H (log-uniform in [0.2, 2]), lam* uniform in
[0.2, 0.4]; 20K steps of SGD at eta = 1e-3, then 20K at 1e-4; hyper step
0.1 eta <g_V, y> every step for clip(r) and unroll1_gtgv, 0.1 <g_V, y_K> every
K steps for unroll(K) (the same speed per step on the gtgv scale); lam0 = 0;
50 repetitions, run together in NumPy.  Reports, after each phase, the
relative increase of L_V(theta) over min_lam L_V(theta*(lam)) and |lam - lam*|.

    python -m experiments.online_quadratic --out results [--quick]
"""

import argparse
import sys
import time

import numpy as np

from experiments.common import add_common_arguments, save_results
from reversible import online_quadratic as oq

NAME = "online_quadratic"
METHODS = ["unroll1", "unroll5", "unroll10", "clip2", "clip5", "unroll1_gtgv", "clip1e9"]


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
    problem = oq.make_quadratic(args.reps, args.dim, seed=args.seed, h_range=tuple(args.h_range))
    phases = tuple(zip(args.steps, args.etas))
    rows, arrays = [], {"lam_star": problem.lam_star}
    total = sum(args.steps)
    keep = np.unique(np.linspace(0, total - 1, args.trace_points).astype(int))
    arrays["trace_steps"] = keep + 1
    for name in args.methods:
        t0 = time.perf_counter()
        res = oq.run(problem, name, phases=phases, c=args.c, lam0=args.lam0,
                     unroll_hyper_lr=args.unroll_hyper_lr)
        secs = time.perf_counter() - t0
        for i, row in enumerate(oq.summarise(problem, res)):
            rows.append({"method": name, "phase": i + 1, "seconds": secs, **row})
        trace = np.concatenate([ph["trace"] for ph in res["phases"]])
        arrays[f"lam_err_{name}"] = np.mean(np.abs(trace[keep] - problem.lam_star), axis=1)
        print(f"{name:>14s}: " + "  ".join(
            f"phase {r['phase']}: {r['lv_increase_pct']:+.2f}% |lam-lam*|={r['lam_abs_err']:.3f}"
            for r in rows[-len(phases):]) + f"  ({secs:.1f}s)", flush=True)
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
