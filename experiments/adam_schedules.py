"""Learned per-layer Adam schedules (alpha_t, beta1_t) against the best constant schedule of a grid.

An MLP (digits [64, 50, 10], or MNIST with ``--mnist-dir``) is trained for T
Adam steps on a training split.  First a grid of constant (alpha, beta1) is
searched for the lowest validation loss.  Then, starting from that best
constant point, a schedule per parameter array (layer weights and biases) and
per step, ``log alpha[t, g]`` and ``logit beta1[t, g]``, is learned by
meta-Adam on the validation loss with exact hypergradients through the whole
training run (``reversible.adam``, ``method="exact"``); the schedule kept is
the meta-iterate with the lowest validation loss (iterate 0 is the best
constant, so it can only tie or improve on the grid there).  A held-out test
split shows whether the gain is more than fitting the validation set.

    python -m experiments.adam_schedules --out results [--mnist-dir DIR] [--quick]
"""

import sys

import numpy as np

from experiments.common import load_data_from_args, parse_experiment_args, save_results

NAME = "adam_schedules"


def add_arguments(parser):
    parser.add_argument("--T", type=int, default=100, help="Adam training steps")
    parser.add_argument("--batch", type=int, default=50, help="training batch size")
    parser.add_argument("--hidden", type=int, nargs="*", default=[50], help="hidden widths")
    parser.add_argument("--n", type=int, default=1500, help="examples used (train/valid/test)")
    parser.add_argument("--meta-steps", type=int, default=40, help="meta-iterations")
    parser.add_argument("--meta-lr", type=float, default=0.02, help="meta-Adam step size")
    parser.add_argument("--alphas", type=float, nargs="+",
                        default=[3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1], help="grid of alpha")
    parser.add_argument("--beta1s", type=float, nargs="+", default=[0.5, 0.8, 0.9, 0.95],
                        help="grid of beta1")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")


def quick_settings(args):
    args.T, args.batch, args.hidden, args.n, args.meta_steps = 8, 20, [8], 150, 2
    args.alphas, args.beta1s = [1e-3, 1e-2], [0.8, 0.9]


def _logistic(x):
    import autograd.numpy as anp
    return 1.0 / (1.0 + anp.exp(-x))


def run(args):
    import autograd.numpy as anp
    from tqdm.auto import tqdm

    import reversible
    from reversible.data import split
    from reversible.models import accuracy, init_mlp, make_train_loss, nll
    if args.quick:
        quick_settings(args)
    data = load_data_from_args(args, n=args.n)
    third = data.n // 3
    train, valid, test = split(data, [third, third, data.n - 2 * third], seed=args.seed)
    sizes = [data.d] + list(args.hidden) + [data.n_classes]
    loss = make_train_loss(train, sizes, args.batch, seed=args.seed)
    w0 = init_mlp(sizes, 0.1, args.seed)
    T, G = args.T, len(w0)
    beta2s = np.full(T, 0.999)

    def trained(log_alpha, logit_beta1):
        return reversible.adam(loss, w0, anp.exp(log_alpha), _logistic(logit_beta1), beta2s)

    def valid_loss(w):
        return nll(w, valid.X, valid.y)

    grid = np.full((len(args.alphas), len(args.beta1s)), np.nan)
    with tqdm(total=grid.size, desc="constant grid", disable=args.no_progress) as bar:
        for i, a in enumerate(args.alphas):
            for j, b in enumerate(args.beta1s):
                w = reversible.adam(loss, w0, np.full(T, a), np.full(T, b), beta2s)
                grid[i, j] = float(valid_loss(w))
                bar.update()
    bi, bj = np.unravel_index(np.nanargmin(grid), grid.shape)
    best = {"alpha": args.alphas[bi], "beta1": args.beta1s[bj], "valid_loss": float(grid[bi, bj])}
    hypers0 = {"log_alpha": np.full((T, G), np.log(best["alpha"])),
               "logit_beta1": np.full((T, G), np.log(best["beta1"] / (1 - best["beta1"])))}

    def meta_objective(h, i):
        return valid_loss(trained(h["log_alpha"], h["logit_beta1"]))

    result = reversible.optimize(meta_objective, hypers0, args.meta_steps, lr=args.meta_lr,
                                 progress=not args.no_progress)
    best_iteration = int(np.argmin(result.objectives))
    learned = result.hypers_history[best_iteration]
    w_best = trained(hypers0["log_alpha"], hypers0["logit_beta1"])
    w_learned = trained(learned["log_alpha"], learned["logit_beta1"])
    final = {name: {"valid_loss": float(valid_loss(w)), "test_loss": float(nll(w, test.X, test.y)),
                    "test_accuracy": float(accuracy(w, test.X, test.y))}
             for name, w in (("best_constant", w_best), ("learned", w_learned))}
    summary = {"experiment": NAME, "dataset": data.name, "layer_sizes": sizes, "T": T,
               "batch": args.batch, "splits": [train.n, valid.n, test.n], "beta2": 0.999,
               "grid_alphas": args.alphas, "grid_beta1s": args.beta1s, "best_constant": best,
               "meta_steps": args.meta_steps, "meta_lr": args.meta_lr, "quick": args.quick,
               "best_iteration": best_iteration,
               "final": final, "seed": args.seed,
               "group_labels": [f"{'W' if k % 2 == 0 else 'b'}{k // 2 + 1}" for k in range(G)]}
    arrays = {"grid_valid_loss": grid, "meta_objectives": result.objectives,
              "learned_alpha": np.exp(learned["log_alpha"]),
              "learned_beta1": 1.0 / (1.0 + np.exp(-learned["logit_beta1"]))}
    save_results(args.out, NAME, summary, arrays)
    return summary


def main(argv=None):
    args = parse_experiment_args(NAME, __doc__, add_arguments, argv)
    s = run(args)
    f = s["final"]
    print(f"adam_schedules on {s['dataset']}: validation loss {f['best_constant']['valid_loss']:.4f} "
          f"(best constant alpha={s['best_constant']['alpha']}, beta1={s['best_constant']['beta1']}) "
          f"-> {f['learned']['valid_loss']:.4f} (learned); test accuracy "
          f"{f['best_constant']['test_accuracy']:.3f} -> {f['learned']['test_accuracy']:.3f}; "
          f"results in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
