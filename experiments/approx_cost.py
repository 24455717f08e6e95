"""Time and peak memory of every hypergradient method against the horizon T.

Runs :func:`reversible.compare` on :class:`reversible.models.MLPClassifierProblem` (MLP on the
bundled digits, per-layer hyperparameters) for each T; wall time is that of
``autograd.grad`` of the meta-objective (training + hypergradient), peak memory
is what :mod:`tracemalloc` sees during a second run.

    python -m experiments.approx_cost --out results [--quick] [--T 10 30 100 300 1000] [--jobs 10]
"""

import argparse
import sys

from experiments.common import add_common_arguments, save_results

NAME = "approx_cost"
METHODS = ("exact", "unrolled", "checkpointed", "forward", "drmad", "drmad_hybrid", "truncated",
           "neumann", "cg", "identity")


def run(args):
    from tqdm.auto import tqdm

    from reversible import compare
    from reversible.models import MLPClassifierProblem
    results = []
    for T in tqdm(args.T, desc=NAME, unit="T", leave=False):
        prob = MLPClassifierProblem.on_digits(T, hidden=tuple(args.hidden), batch_size=args.batch_size,
                                              n_train=args.n_train, seed=args.seed)
        table = compare(prob.objective, prob.hypers0(), args.methods, "exact", memory=True,
                        jobs=args.jobs, warmup=prob.warmup_pair(), progress=f"T={T}")
        tqdm.write(f"\n== T = {T} ==\n{table.format(kinds=False)}")
        results.append({"T": T, "N": prob.N, "rows": table.rows})
        meta = {"experiment": NAME, "layer_sizes": prob.layer_sizes, "batch_size": args.batch_size,
                "n_train": args.n_train, "seed": args.seed, "jobs": args.jobs,
                "methods": args.methods, "results": sorted(results, key=lambda r: r["T"])}
        path = save_results(args.out, NAME, meta)          # after every T: partial results survive
    return path


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_common_arguments(parser)
    parser.add_argument("--T", type=int, nargs="+", default=None,
                        help="horizons (default 10 30 100 300 1000; quick 5 10 20)")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), help="method specs")
    parser.add_argument("--hidden", type=int, nargs="*", default=[32], help="hidden layer sizes")
    parser.add_argument("--batch-size", type=int, default=50)
    parser.add_argument("--n-train", type=int, default=1000)
    parser.add_argument("--jobs", type=int, default=1,
                        help="worker processes, one method each (give each its own core)")
    args = parser.parse_args(argv)
    if args.T is None:
        args.T = [5, 10, 20] if args.quick else [10, 30, 100, 300, 1000]
    print("wrote", run(args))


if __name__ == "__main__":
    sys.exit(main())
