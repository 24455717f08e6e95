"""Per-weight L2 penalties learned by exact hypergradients (Maclaurin et al. 2015, Fig. 6).

Logistic regression with one log-L2 strength per weight (7,850 on MNIST),
trained for T = 50 steps of SGD with momentum (alpha = 1, beta = 0.9).  The
meta-objective is the validation NLL after training plus a small quadratic
penalty pulling the log-L2s towards their initial value; it is minimised
with Adam (:func:`reversible.meta.optimize`), drawing new minibatches at
every meta-iteration.

    python -m experiments.l2_per_weight --mnist-dir ../shared/data/mnist --out results
"""

import time

import autograd.numpy as anp
import numpy as np

from experiments.common import load_data_from_args, parse_experiment_args, save_results

NAME = "l2_per_weight"

FULL = dict(n_train=1000, n_valid=4000, n_test=5000, T=50, alpha=1.0, beta=0.9, batch=200,
            init_log_l2=-4.0, init_log_scale=-4.0, hyper_penalty=1e-3, meta_steps=100,
            meta_lr=0.1)
QUICK = dict(n_train=200, n_valid=200, n_test=200, T=5, alpha=1.0, beta=0.9, batch=50,
             init_log_l2=-4.0, init_log_scale=-4.0, hyper_penalty=1e-3, meta_steps=3,
             meta_lr=0.1)


def add_arguments(parser):
    """Experiment options; ``None`` means the full (or, with --quick, the quick) setting."""
    for key in FULL:
        parser.add_argument("--" + key.replace("_", "-"), type=type(FULL[key]), default=None,
                            help=f"default {FULL[key]} (quick: {QUICK[key]})")
    return parser


def resolve(args):
    """The settings dict: quick or full defaults overridden by explicit options."""
    cfg = dict(QUICK if args.quick else FULL)
    for key in FULL:
        val = getattr(args, key, None)
        if val is not None:
            cfg[key] = val
    return cfg


def logistic_setup(data, cfg, seed):
    """Split ``data`` into train / valid / test and draw the initial weights."""
    from reversible.data import split
    from reversible.models import init_mlp
    need = cfg["n_train"] + cfg["n_valid"] + cfg["n_test"]
    if need > data.n:
        raise ValueError(f"n_train + n_valid + n_test = {need} exceeds the {data.n} examples of "
                         f"{data.name!r}; lower the sizes")
    train, valid, test = split(data, [cfg["n_train"], cfg["n_valid"], cfg["n_test"]], seed=seed)
    layers = [data.d, data.n_classes]
    w0 = init_mlp(layers, scale=float(np.exp(cfg["init_log_scale"])), seed=seed)
    return train, valid, test, layers, w0


def train_logistic(train, layers, w0, log_l2, cfg, seed, method="exact"):
    """Train logistic regression with per-weight ``log_l2`` (a list like ``w0``).

    Returns ``w_T``; ``cfg`` gives ``T``, ``alpha``, ``beta`` and ``batch``.
    """
    import reversible
    from reversible.models import make_train_loss
    batch = min(cfg["batch"], train.n)
    loss = make_train_loss(train, layers, batch, seed=seed, l2="weight")
    T = cfg["T"]
    return reversible.sgd(loss, w0, np.full(T, cfg["alpha"]), np.full(T, cfg["beta"]),
                          list(log_l2), method=method)


def evaluate(w, sets):
    """``{name: {"nll": ..., "accuracy": ...}}`` of weights ``w`` on each data set."""
    from reversible.models import accuracy, nll
    w = [np.asarray(x) for x in w]
    return {k: {"nll": float(nll(w, d.X, d.y)), "accuracy": accuracy(w, d.X, d.y)}
            for k, d in sets.items()}


def run(data, cfg, seed=0, progress=True):
    """Learn per-weight L2; returns ``(json_dict, arrays)``."""
    from reversible.meta import optimize
    from reversible.models import nll
    train, valid, test, layers, w0 = logistic_setup(data, cfg, seed)
    sets = {"train": train, "valid": valid, "test": test}
    init = [np.full(np.shape(w), cfg["init_log_l2"]) for w in w0]
    n_hyper = sum(h.size for h in init)

    def meta_objective(h, i):
        w = train_logistic(train, layers, w0, h, cfg, seed + 1 + i)
        penalty = sum(anp.sum((x - cfg["init_log_l2"]) ** 2) for x in h)
        return nll(w, valid.X, valid.y) + 0.5 * cfg["hyper_penalty"] * penalty / n_hyper

    t0 = time.perf_counter()
    res = optimize(meta_objective, init, cfg["meta_steps"], optimizer="adam", lr=cfg["meta_lr"],
                   progress=progress)
    seconds = time.perf_counter() - t0
    before = evaluate(train_logistic(train, layers, w0, init, cfg, seed), sets)
    after = evaluate(train_logistic(train, layers, w0, res.hypers, cfg, seed), sets)
    learned = [np.asarray(h) for h in res.hypers]
    shape = list(data.image_shape) if data.image_shape else [data.d]
    out = {"experiment": NAME, "dataset": data.name, "config": cfg, "seed": seed,
           "n_hyperparameters": n_hyper, "image_shape": shape,
           "before": before, "after": after, "meta": res.to_json(), "seconds": seconds}
    arrays = {"log_l2_weights": learned[0], "log_l2_biases": learned[1],
              "objectives": res.objectives}
    return out, arrays


def main(argv=None):
    args = parse_experiment_args(NAME, __doc__, add_arguments, argv)
    cfg = resolve(args)
    data = load_data_from_args(args, kind="mnist")
    out, arrays = run(data, cfg, seed=args.seed, progress=not args.quick)
    path = save_results(args.out, NAME, out, arrays)
    print(f"{NAME}: valid NLL {out['before']['valid']['nll']:.4f} -> "
          f"{out['after']['valid']['nll']:.4f}, test NLL {out['before']['test']['nll']:.4f} -> "
          f"{out['after']['test']['nll']:.4f}; wrote {path}")
    return out


if __name__ == "__main__":
    main()
