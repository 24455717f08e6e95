"""Learned learning-rate and momentum schedules and initial scales (Maclaurin et al. 2015, Figs. 2-4).

An MLP [784, 50, 50, 50, 10] (tanh, batch 200, T = 100) is trained by
``reversible.sgd`` with one learning-rate and one momentum schedule per
parameter array (weights and biases separately: 100 x 8 each) and one initial
scale per array.  Hyperparameters: ``log alpha`` (init -1), ``logit beta``
(init 0, i.e. beta = 0.5) and ``log scale`` (init -3), tuned by Adam (step
0.04, 50 meta-iterations) on the final training loss with a new seed (init
draw and batch order) per meta-iteration.  Also records the hypergradient with
respect to the schedule at the initial point for many seeds (smoothness
figure) and learning curves before and after.

    python -m experiments.schedules --out results --mnist-dir /path/to/mnist
"""

import argparse
import functools
import sys

import numpy as np

from experiments.common import add_common_arguments, load_data_from_args, save_results

NAME = "schedules"


def add_arguments(parser):
    add_common_arguments(parser)
    parser.add_argument("--T", type=int, default=100, help="training steps (default %(default)s)")
    parser.add_argument("--hidden", type=int, nargs="*", default=[50, 50, 50], help="hidden widths")
    parser.add_argument("--batch", type=int, default=200, help="batch size (default %(default)s)")
    parser.add_argument("--n-train", type=int, default=8000, help="training examples")
    parser.add_argument("--n-valid", type=int, default=2000, help="validation examples")
    parser.add_argument("--meta-steps", type=int, default=50, help="meta-iterations (Adam)")
    parser.add_argument("--meta-lr", type=float, default=0.04, help="Adam step size")
    parser.add_argument("--init-log-alpha", type=float, default=-1.0)
    parser.add_argument("--init-beta", type=float, default=0.5)
    parser.add_argument("--init-log-scale", type=float, default=-3.0)
    parser.add_argument("--objective", choices=["train", "valid"], default="train",
                        help="meta-objective: final NLL on the training or validation set")
    parser.add_argument("--smooth-seeds", type=int, default=20,
                        help="seeds for the averaged schedule hypergradient (0: skip)")
    parser.add_argument("--curve-seeds", type=int, default=3,
                        help="held-out seeds averaged in the learning curves")
    parser.add_argument("--scheduler", default="serial",
                        help="dask scheduler address, 'local' (LocalCluster) or 'serial' (default)")
    parser.add_argument("--workers", type=int, default=None, help="LocalCluster workers")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    return parser


def quick_settings(args):
    """Shrink ``args`` in place to a smoke test that runs in seconds."""
    args.T, args.hidden, args.batch = 6, [8, 8], 20
    args.n_train, args.n_valid = 100, 50
    args.meta_steps, args.smooth_seeds, args.curve_seeds = 2, 2, 1


def _logistic(x):
    import autograd.numpy as anp
    return 0.5 * (anp.tanh(0.5 * x) + 1.0)


@functools.lru_cache(maxsize=2)
def _setup(setup_args):
    """(train, valid, layer sizes) for the given data options (cached per process)."""
    from reversible.data import split
    ns = argparse.Namespace(**dict(setup_args))
    data = load_data_from_args(ns)
    n_valid = min(ns.n_valid, data.n // 4)
    n_train = min(ns.n_train, data.n - n_valid)
    train, valid = split(data, [n_train, n_valid], seed=ns.seed)
    sizes = [data.d] + list(ns.hidden) + [data.n_classes]
    return train, valid, sizes, data.name


def _setup_args(args):
    keys = ("mnist_dir", "omniglot_zip", "seed", "n_train", "n_valid", "hidden")
    return tuple((k, tuple(getattr(args, k)) if isinstance(getattr(args, k), list)
                  else getattr(args, k)) for k in keys)


def initial_hypers(T, G, log_alpha, beta, log_scale):
    """Hyperparameter dict at the paper's starting point."""
    return {"log_alphas": np.full((T, G), float(log_alpha)),
            "logit_betas": np.full((T, G), float(np.log(beta / (1.0 - beta)))),
            "log_scales": np.full(G, float(log_scale))}


def _noise(sizes, seed):
    from reversible.models import init_mlp
    return init_mlp(sizes, scale=1.0, seed=seed)


def final_loss(hypers, setup_args, batch, seed, objective="train", stats=None):
    """Train with ``hypers`` for one seed; the final NLL (an autograd scalar)."""
    import autograd.numpy as anp

    import reversible
    from reversible.models import make_train_loss, nll
    train, valid, sizes, _ = _setup(setup_args)
    loss = make_train_loss(train, sizes, batch, seed=seed)
    w0 = [anp.exp(hypers["log_scales"][i]) * z for i, z in enumerate(_noise(sizes, seed))]
    w_T = reversible.sgd(loss, w0, anp.exp(hypers["log_alphas"]),
                         _logistic(hypers["logit_betas"]), stats=stats)
    target = train if objective == "train" else valid
    return nll(w_T, target.X, target.y)


def schedule_gradient(point, setup_args, hypers, batch):
    """d loss / d alpha_t (T x G) at ``hypers`` for one seed (a sweep point)."""
    from autograd import grad
    la = hypers["log_alphas"]
    g = grad(lambda h: final_loss(h, setup_args, batch, point["seed"]))(hypers)
    return {"dalpha": np.asarray(g["log_alphas"]) / np.exp(la),
            "dbeta": np.asarray(g["logit_betas"]),
            "dlog_scale": np.asarray(g["log_scales"])}


def learning_curve(hypers, setup_args, batch, seed):
    """Training and validation NLL after every step (float64 replay of the same update)."""
    from reversible.buffer import effective_beta
    from reversible.models import make_train_loss, nll
    from autograd import grad
    train, valid, sizes, _ = _setup(setup_args)
    loss = make_train_loss(train, sizes, batch, seed=seed)
    gfun = grad(loss)
    alphas = np.exp(hypers["log_alphas"])
    betas = effective_beta(1.0 / (1.0 + np.exp(-hypers["logit_betas"])))
    w = [np.exp(hypers["log_scales"][i]) * z for i, z in enumerate(_noise(sizes, seed))]
    v = [np.zeros_like(x) for x in w]
    tr, va = [float(nll(w, train.X, train.y))], [float(nll(w, valid.X, valid.y))]
    for t in range(alphas.shape[0]):
        g = gfun(w, None, t)
        v = [betas[t, i] * v[i] - (1.0 - betas[t, i]) * g[i] for i in range(len(w))]
        w = [w[i] + alphas[t, i] * v[i] for i in range(len(w))]
        tr.append(float(nll(w, train.X, train.y)))
        va.append(float(nll(w, valid.X, valid.y)))
    return np.array(tr), np.array(va)


def run(args):
    """Meta-train the schedules; save ``schedules.json`` / ``schedules.npz`` in ``args.out``."""
    import pathlib

    from reversible.meta import optimize
    from reversible.sweep import open_client, sweep
    if args.quick:
        quick_settings(args)
    sa = _setup_args(args)
    train, valid, sizes, dname = _setup(sa)
    G = 2 * (len(sizes) - 1)
    h0 = initial_hypers(args.T, G, args.init_log_alpha, args.init_beta, args.init_log_scale)
    out = pathlib.Path(args.out)
    stats = {}

    def meta_objective(hypers, i):
        return final_loss(hypers, sa, args.batch, args.seed + 1 + i, args.objective, stats)

    res = optimize(meta_objective, h0, args.meta_steps, optimizer="adam", lr=args.meta_lr,
                   progress=not args.no_progress)
    learned = {k: np.asarray(v) for k, v in res.hypers.items()}
    arrays = {"objectives": res.objectives, "grad_norms": res.grad_norms,
              "log_alphas": learned["log_alphas"], "logit_betas": learned["logit_betas"],
              "log_scales": learned["log_scales"],
              "history_log_alphas": np.array([h["log_alphas"] for h in res.hypers_history]),
              "history_logit_betas": np.array([h["logit_betas"] for h in res.hypers_history]),
              "history_log_scales": np.array([h["log_scales"] for h in res.hypers_history]),
              "fan_in": np.array([sizes[k // 2] for k in range(G)])}
    # learning curves on held-out seeds (never used in meta-training)
    curves = {}
    for tag, h in (("before", h0), ("after", learned)):
        cs = [learning_curve(h, sa, args.batch, 10_000 + s) for s in range(args.curve_seeds)]
        curves[tag] = [np.mean([c[0] for c in cs], axis=0), np.mean([c[1] for c in cs], axis=0)]
        arrays[f"curve_train_{tag}"], arrays[f"curve_valid_{tag}"] = curves[tag]
    summary = {"experiment": NAME, "dataset": dname, "layer_sizes": sizes, "T": args.T,
               "batch": args.batch, "n_train": train.n, "n_valid": valid.n,
               "meta_steps": args.meta_steps, "meta_lr": args.meta_lr,
               "objective": args.objective, "quick": args.quick, "seed": args.seed,
               "init": {"log_alpha": args.init_log_alpha, "beta": args.init_beta,
                        "log_scale": args.init_log_scale},
               "groups": [f"{'W' if k % 2 == 0 else 'b'}{k // 2 + 1}" for k in range(G)],
               "final_train_before": float(curves["before"][0][-1]),
               "final_train_after": float(curves["after"][0][-1]),
               "final_valid_before": float(curves["before"][1][-1]),
               "final_valid_after": float(curves["after"][1][-1]),
               "learned_scales": np.exp(learned["log_scales"]).tolist(),
               "inv_sqrt_fan_in": (1.0 / np.sqrt(arrays["fan_in"])).tolist(),
               "reversed_exactly": bool(stats.get("reversed_exactly", False))}
    if args.smooth_seeds:
        points = [{"seed": 20_000 + s} for s in range(args.smooth_seeds)]
        fn = functools.partial(schedule_gradient, setup_args=sa, hypers=h0, batch=args.batch)
        sched = None if args.scheduler == "local" else args.scheduler
        with open_client(sched, args.workers) as client:
            grads = sweep(fn, points, out / "sweeps" / "schedules-smoothness", scheduler=sched,
                          client=client, progress=not args.no_progress, name="smoothness")
        arrays["smooth_dalpha"] = np.array([g["dalpha"] for g in grads])
        arrays["smooth_dbeta"] = np.array([g["dbeta"] for g in grads])
        summary["smooth_seeds"] = args.smooth_seeds
    save_results(out, NAME, summary, arrays)
    return summary


def main(argv=None):
    parser = add_arguments(argparse.ArgumentParser(prog="python -m experiments.schedules",
                                                   description=__doc__.splitlines()[0]))
    args = parser.parse_args(argv)
    import importlib        # run from the importable module so dask workers can unpickle
    s = importlib.import_module("experiments.schedules").run(args)
    print(f"schedules on {s['dataset']}: final training loss {s['final_train_before']:.4f} -> "
          f"{s['final_train_after']:.4f} after {s['meta_steps']} meta-iterations; "
          f"results in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
