"""Learned training data (Maclaurin et al. 2015, Fig. 7).

Ten synthetic training images with fixed labels 0-9 are hyperparameters
(together with one log-L2 strength).  Logistic regression is trained on them
for T = 20 steps (batch 10: all of them; alpha = 1, beta = 0.9); the
meta-objective is the NLL of the trained model on real images, minimised with
Adam through exact hypergradients with respect to every pixel.  As a
baseline, the same training run on one real image per class.

    python -m experiments.learned_data --mnist-dir ../shared/data/mnist --out results
"""

import time

import autograd.numpy as anp
import numpy as np

from experiments.common import load_data_from_args, parse_experiment_args, save_results

NAME = "learned_data"

FULL = dict(n_valid=1000, n_test=5000, T=20, alpha=1.0, beta=0.9, init_log_l2=float(np.log(0.01)),
            init_log_scale=-4.0, meta_steps=200, meta_lr=0.04)
QUICK = dict(n_valid=200, n_test=200, T=5, alpha=1.0, beta=0.9, init_log_l2=float(np.log(0.01)),
             init_log_scale=-4.0, meta_steps=3, meta_lr=0.04)


def add_arguments(parser):
    for key in FULL:
        parser.add_argument("--" + key.replace("_", "-"), type=type(FULL[key]), default=None,
                            help=f"default {FULL[key]:.4g} (quick: {QUICK[key]:.4g})")
    return parser


def resolve(args):
    cfg = dict(QUICK if args.quick else FULL)
    cfg.update({k: getattr(args, k) for k in FULL if getattr(args, k, None) is not None})
    return cfg


def make_loss(n_classes):
    """``train_loss(w, meta, t)``: NLL of the synthetic images (labels 0..C-1) plus L2."""
    from reversible.models import nll
    labels = np.arange(n_classes)

    def train_loss(w, meta, t):
        penalty = sum(anp.sum(x ** 2) for x in w)
        return nll(w, meta["images"], labels) + 0.5 * anp.exp(meta["log_l2"][0]) * penalty

    return train_loss


def train_on(images, log_l2, w0, cfg, method="exact"):
    """Train logistic regression on ``images`` (one per class) for ``cfg['T']`` steps."""
    import reversible
    T = cfg["T"]
    meta = {"images": images, "log_l2": log_l2}
    return reversible.sgd(make_loss(len(w0[1])), w0, np.full(T, cfg["alpha"]),
                          np.full(T, cfg["beta"]), meta, method=method)


def run(data, cfg, seed=0, progress=True):
    """Learn the synthetic training set; returns ``(json_dict, arrays)``."""
    from reversible.data import split
    from reversible.meta import optimize
    from reversible.models import accuracy, init_mlp, nll
    C = data.n_classes
    need = cfg["n_valid"] + cfg["n_test"]
    if need > data.n:
        raise ValueError(f"n_valid + n_test = {need} exceeds the {data.n} examples of "
                         f"{data.name!r}; lower the sizes")
    valid, test, rest = split(data, [cfg["n_valid"], cfg["n_test"], data.n - need], seed=seed)
    w0 = init_mlp([data.d, C], scale=float(np.exp(cfg["init_log_scale"])), seed=seed)
    hypers0 = {"images": np.zeros((C, data.d)), "log_l2": np.array([cfg["init_log_l2"]])}

    def meta_objective(h, i):
        w = train_on(h["images"], h["log_l2"], w0, cfg)
        return nll(w, valid.X, valid.y)

    t0 = time.perf_counter()
    res = optimize(meta_objective, hypers0, cfg["meta_steps"], optimizer="adam",
                   lr=cfg["meta_lr"], progress=progress)
    seconds = time.perf_counter() - t0
    images = np.asarray(res.hypers["images"])
    log_l2 = np.asarray(res.hypers["log_l2"])

    def scores(imgs, l2):
        w = [np.asarray(x) for x in train_on(imgs, l2, w0, cfg)]
        return {k: {"nll": float(nll(w, d.X, d.y)), "accuracy": accuracy(w, d.X, d.y)}
                for k, d in (("valid", valid), ("test", test))}

    # baseline: one real image per class from the examples not used for valid / test
    pool = rest if rest.n else valid
    real = np.stack([pool.X[np.flatnonzero(pool.y == c)[0]] if np.any(pool.y == c)
                     else np.zeros(data.d) for c in range(C)])
    shape = list(data.image_shape) if data.image_shape else [data.d]
    out = {"experiment": NAME, "dataset": data.name, "config": cfg, "seed": seed,
           "image_shape": shape, "n_hyperparameters": int(images.size + 1),
           "learned_log_l2": float(log_l2[0]),
           "learned": scores(images, log_l2), "one_real_image_per_class":
               scores(real, np.array([cfg["init_log_l2"]])),
           "meta": res.to_json(), "seconds": seconds}
    arrays = {"images": images, "real_images": real, "objectives": res.objectives}
    return out, arrays


def main(argv=None):
    args = parse_experiment_args(NAME, __doc__, add_arguments, argv)
    cfg = resolve(args)
    data = load_data_from_args(args, kind="mnist")
    out, arrays = run(data, cfg, seed=args.seed, progress=not args.quick)
    path = save_results(args.out, NAME, out, arrays)
    print(f"{NAME}: test accuracy {out['learned']['test']['accuracy']:.3f} trained on 10 learned "
          f"images vs {out['one_real_image_per_class']['test']['accuracy']:.3f} on 10 real ones; "
          f"wrote {path}")
    return out


if __name__ == "__main__":
    main()
