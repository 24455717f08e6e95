"""Chaos for Adam (after Maclaurin et al. 2015): final loss and its exact hypergradient against
log alpha, for T = 50 and T = 200, beside SGD with momentum.

An MLP (digits [64, 50, 10], or MNIST with ``--mnist-dir``) is trained on the
first ``--n-train`` images in fixed batches, from the same initial weights at
every point, by Adam (beta1 0.9, beta2 0.999) and by SGD with momentum 0.9.
For each log learning rate on a grid (one grid per optimiser, as their step
sizes live on different scales) it records the final training loss and the
exact ``d loss / d log alpha`` (``method="exact"``: every run reversed bit for
bit).  Where the hypergradient stops agreeing with the slope of the loss
curve, training has become chaotic in the learning rate.

    python -m experiments.adam_chaos --out results [--mnist-dir DIR] [--quick]
"""

import sys

import numpy as np

from experiments.chaos import onset_of_chaos
from experiments.common import load_data_from_args, parse_experiment_args, save_results

NAME = "adam_chaos"
OPTIMISERS = ("adam", "sgd")


def add_arguments(parser):
    parser.add_argument("--points", type=int, default=40, help="log learning rates per curve")
    parser.add_argument("--Ts", type=int, nargs="+", default=[50, 200], help="training steps")
    parser.add_argument("--adam-range", type=float, nargs=2, default=[-8.0, 0.0],
                        metavar=("LO", "HI"), help="log alpha range for Adam")
    parser.add_argument("--sgd-range", type=float, nargs=2, default=[-4.0, 3.0],
                        metavar=("LO", "HI"), help="log alpha range for SGD with momentum")
    parser.add_argument("--n-train", type=int, default=500, help="training images (first n)")
    parser.add_argument("--batch", type=int, default=100, help="batch size, in order")
    parser.add_argument("--hidden", type=int, nargs="*", default=[50], help="hidden widths")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def quick_settings(args):
    args.points, args.Ts, args.n_train, args.batch, args.hidden = 4, [3, 6], 100, 25, [8]


def run_point(optimiser, log_alpha, T, problem):
    """``(final training loss, d loss / d log alpha, reversed exactly)``; NaN where training
    diverges (fixed-point overflow or non-finite values)."""
    import autograd.numpy as anp
    from autograd import value_and_grad

    import reversible
    from reversible.models import nll
    data, loss, w0 = problem
    stats = {}

    def final_loss(la):
        alphas = anp.exp(la) * anp.ones(T)
        if optimiser == "adam":
            w_T = reversible.adam(loss, w0, alphas, np.full(T, 0.9), np.full(T, 0.999),
                                  stats=stats)
        else:
            w_T = reversible.sgd(loss, w0, alphas, np.full(T, 0.9), stats=stats)
        return nll(w_T, data.X, data.y)

    try:
        value, grad = value_and_grad(final_loss)(float(log_alpha))
    except (reversible.FixedPointOverflowError, reversible.NonFiniteError):
        return np.nan, np.nan, True
    return float(value), float(grad), bool(stats.get("reversed_exactly", False))


def run(args):
    from tqdm.auto import tqdm

    from reversible.models import init_mlp, make_train_loss
    if args.quick:
        quick_settings(args)
    data = load_data_from_args(args, n=args.n_train)
    sizes = [data.d] + list(args.hidden) + [data.n_classes]
    loss = make_train_loss(data, sizes, args.batch, seed=args.seed, shuffle=False)
    problem = (data, loss, init_mlp(sizes, 0.1, args.seed))
    grids = {"adam": np.linspace(*args.adam_range, args.points),
             "sgd": np.linspace(*args.sgd_range, args.points)}
    arrays, onsets, exact, failed = {}, {}, True, 0
    total = len(OPTIMISERS) * len(args.Ts) * args.points
    with tqdm(total=total, desc="adam_chaos", disable=args.no_progress) as bar:
        for opt in OPTIMISERS:
            losses, grads = [], []
            for T in args.Ts:
                row_l, row_g = [], []
                for la in grids[opt]:
                    value, grad, ok = run_point(opt, la, T, problem)
                    row_l.append(value)
                    row_g.append(grad)
                    exact &= ok
                    failed += int(not np.isfinite(value))
                    bar.update()
                losses.append(row_l)
                grads.append(row_g)
                onsets[f"{opt}_T{T}"] = onset_of_chaos(grids[opt], row_l, row_g)
            arrays[f"{opt}_log_alpha"] = grids[opt]
            arrays[f"{opt}_loss"] = np.array(losses)
            arrays[f"{opt}_grad"] = np.array(grads)
    arrays["Ts"] = np.array(args.Ts)
    summary = {"experiment": NAME, "dataset": data.name, "layer_sizes": sizes, "n_train": data.n,
               "batch": args.batch, "Ts": args.Ts, "points": args.points, "seed": args.seed,
               "beta1": 0.9, "beta2": 0.999, "sgd_beta": 0.9, "quick": args.quick,
               "adam_range": args.adam_range, "sgd_range": args.sgd_range,
               "reversed_exactly": exact, "diverged_points": failed, "onset_of_chaos": onsets}
    save_results(args.out, NAME, summary, arrays)
    return summary


def main(argv=None):
    args = parse_experiment_args(NAME, __doc__, add_arguments, argv)
    summary = run(args)
    onsets = ", ".join(f"{k} {v:.2f}" for k, v in summary["onset_of_chaos"].items())
    print(f"adam_chaos on {summary['dataset']}: onset of chaos (log alpha): {onsets}; "
          f"all runs reversed exactly: {summary['reversed_exactly']}; results in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
