"""Approximate against exact hypergradients as the training horizon grows
(as in the DrMAD thesis: DrMAD, its hybrid "DrMAD2" variant and truncated backprop).

For each horizon T, :class:`reversible.models.MLPClassifierProblem` (MLP on the bundled digits,
per-layer learning rates, momenta, L2 penalties and initial scales) is trained
for T steps and its validation-loss hypergradient is computed by ``exact`` and
by each method; results are the cosine to the exact hypergradient (overall and
per hyperparameter kind), the norms, and the times.

    python -m experiments.approx_horizon --out results [--quick] [--T 200 2000 20000]
"""

import argparse
import sys

import numpy as np

from experiments.common import add_common_arguments, save_results

NAME = "approx_horizon"


def methods_for(T, fraction):
    K = max(1, int(round(fraction * T)))
    return ["exact", "drmad", f"drmad_hybrid:K={K}", f"truncated:K={K}", "identity"]


def _hypergradient(job):
    """One (T, method) hypergradient of the built-in problem: (T, spec, gradient, seconds, error)."""
    from reversible.grading import measure
    from reversible.models import MLPClassifierProblem
    T, spec, cfg = job
    prob = MLPClassifierProblem.on_digits(T, **cfg)
    g, seconds, _, err = measure(prob.objective, prob.hypers0(), spec, memory=False)
    g = None if g is None else {k: np.asarray(v) for k, v in g.items()}
    return T, spec, g, seconds, err


def run(args):
    from tqdm.auto import tqdm

    from reversible.grading import grade
    from reversible.models import MLPClassifierProblem
    cfg = {"hidden": tuple(args.hidden), "batch_size": args.batch_size, "n_train": args.n_train,
           "seed": args.seed}
    # longest horizons first, so that a pool finishes them together
    jobs = [(T, spec, cfg) for T in sorted(args.T, reverse=True) for spec in methods_for(T, args.fraction)]
    if args.jobs > 1:
        from concurrent.futures import ProcessPoolExecutor
        with ProcessPoolExecutor(args.jobs) as pool:
            done = list(tqdm(pool.map(_hypergradient, jobs), total=len(jobs), desc=NAME,
                             unit="hypergradient", leave=False))
    else:
        done = [_hypergradient(j) for j in tqdm(jobs, desc=NAME, unit="hypergradient", leave=False)]
    results, arrays = [], {}
    for T in args.T:
        mine = [d for d in done if d[0] == T]
        ref = next(d for d in mine if d[1] == "exact")
        if ref[4]:
            raise RuntimeError(f"exact failed at T={T}: {ref[4]}")
        kinds = list(ref[2])
        ref_flat = np.concatenate([ref[2][k].ravel() for k in kinds])
        rows = []
        for _, spec, g, seconds, err in mine:
            row = {"method": spec, "error": err, "seconds": seconds}
            if err is None:
                row.update(grade(np.concatenate([g[k].ravel() for k in kinds]), ref_flat))
                row["kinds"] = {k: grade(g[k], ref[2][k]) for k in kinds}
                row["time_ratio"] = seconds / ref[3]
                for k in kinds:
                    arrays[f"T{T}_{spec.split(':')[0]}_{k}"] = g[k]
            rows.append(row)
            print(f"T={T:6d} {spec:24s} " + (f"error {err}" if err else
                  f"cosine {row['cosine']:+.4f} norm ratio {row['norm_ratio']:.3g} "
                  f"time {seconds:.1f}s"), flush=True)
        results.append({"T": T, "rows": rows})
    prob = MLPClassifierProblem.on_digits(args.T[0], **cfg)
    meta = {"experiment": NAME, "layer_sizes": prob.layer_sizes, "N": prob.N,
            "batch_size": args.batch_size, "n_train": args.n_train, "fraction": args.fraction,
            "seed": args.seed, "jobs": args.jobs, "results": results}
    return save_results(args.out, NAME, meta, arrays)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_common_arguments(parser)
    parser.add_argument("--T", type=int, nargs="+", default=None,
                        help="horizons (default 200 2000 20000; quick 20 200)")
    parser.add_argument("--hidden", type=int, nargs="*", default=[16], help="hidden layer sizes")
    parser.add_argument("--batch-size", type=int, default=50)
    parser.add_argument("--n-train", type=int, default=1000)
    parser.add_argument("--fraction", type=float, default=0.1,
                        help="K / T for drmad_hybrid and truncated (default 0.1)")
    parser.add_argument("--jobs", type=int, default=1,
                        help="worker processes (one hypergradient each; timings then overlap)")
    args = parser.parse_args(argv)
    if args.T is None:
        args.T = [20, 200] if args.quick else [200, 2000, 20000]
    print("wrote", run(args))


if __name__ == "__main__":
    sys.exit(main())
