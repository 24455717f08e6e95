"""Overfitting a small validation set (Lorraine, Vicol & Duvenaud 2020, section 5.2).

Logistic regression on 50 training examples with one weight-decay strength
per weight (7,850 hyperparameters on MNIST) is tuned on 50 validation
examples with exact hypergradients until validation accuracy reaches 100 %;
test accuracy, measured on held-out data along the way, does not follow.
With that many hyperparameters the validation set is just another training
set.

    python -m experiments.overfit_validation --mnist-dir ../shared/data/mnist --out results
"""

import time

import autograd.numpy as anp
import numpy as np
from autograd.tracer import getval

from experiments.common import load_data_from_args, parse_experiment_args, save_results
from experiments.l2_per_weight import evaluate, logistic_setup, train_logistic

NAME = "overfit_validation"

FULL = dict(n_train=50, n_valid=50, n_test=5000, T=100, alpha=1.0, beta=0.9, batch=50,
            init_log_l2=-4.0, init_log_scale=-4.0, max_log_l2=2.0, meta_steps=300, meta_lr=0.2,
            extra_steps=100)
QUICK = dict(n_train=50, n_valid=50, n_test=200, T=5, alpha=1.0, beta=0.9, batch=50,
             init_log_l2=-4.0, init_log_scale=-4.0, max_log_l2=2.0, meta_steps=3, meta_lr=0.2,
             extra_steps=0)


HELP = dict(max_log_l2="soft upper bound on the log weight decay (keeps SGD stable)",
            extra_steps="meta-iterations to continue after validation accuracy hits 100 %%")


def add_arguments(parser):
    for key in FULL:
        what = HELP.get(key, key.replace("_", " "))
        parser.add_argument("--" + key.replace("_", "-"), type=type(FULL[key]), default=None,
                            help=f"{what}; default {FULL[key]} (quick: {QUICK[key]})")
    return parser


def resolve(args):
    cfg = dict(QUICK if args.quick else FULL)
    cfg.update({k: getattr(args, k) for k in FULL if getattr(args, k, None) is not None})
    return cfg


def soft_cap(h, cap):
    """``cap - softplus(cap - h)``: smooth, increasing, below ``cap``; keeps the decay
    ``exp(log_l2)`` inside the stable range of SGD with momentum (alpha*lambda*(1-beta) <
    2(1+beta)), where the weights would otherwise blow up."""
    return cap - anp.logaddexp(0.0, cap - h)


def run(data, cfg, seed=0, progress=True):
    """Tune per-weight decay on the validation set; returns ``(json_dict, arrays)``.

    Stops ``extra_steps`` meta-iterations after validation accuracy first
    reaches 100 % (or after ``meta_steps``).
    """
    from reversible.meta import optimize
    from reversible.models import nll
    train, valid, test, layers, w0 = logistic_setup(data, cfg, seed)
    sets = {"train": train, "valid": valid, "test": test}
    init = [np.full(np.shape(w), cfg["init_log_l2"]) for w in w0]
    last = {}
    curves = {f"{k}_{m}": [] for k in sets for m in ("nll", "accuracy")}
    state = {"hit": None}

    def meta_objective(h, i):
        h = [soft_cap(x, cfg["max_log_l2"]) for x in h]
        w = train_logistic(train, layers, w0, h, cfg, seed)       # same batches every time
        last["w"] = [np.array(getval(x)) for x in w]
        return nll(w, valid.X, valid.y)

    def callback(i, hypers, value, g):
        scores = evaluate(last["w"], sets)
        for k in sets:
            for m in ("nll", "accuracy"):
                curves[f"{k}_{m}"].append(scores[k][m])
        if state["hit"] is None and scores["valid"]["accuracy"] >= 1.0:
            state["hit"] = i
        return state["hit"] is not None and i >= state["hit"] + cfg["extra_steps"]

    t0 = time.perf_counter()
    res = optimize(meta_objective, init, cfg["meta_steps"], optimizer="adam", lr=cfg["meta_lr"],
                   progress=progress, callback=callback)
    seconds = time.perf_counter() - t0
    final = {k: {"nll": curves[f"{k}_nll"][-1], "accuracy": curves[f"{k}_accuracy"][-1]}
             for k in sets}
    initial = {k: {"nll": curves[f"{k}_nll"][0], "accuracy": curves[f"{k}_accuracy"][0]}
               for k in sets}
    best_test = int(np.argmax(curves["test_accuracy"]))
    # the hyperparameters of the last evaluated point (the callback stops before updating)
    learned = res.hypers_history[-1] if res.stopped_early else res.hypers
    learned = [soft_cap(np.asarray(x), cfg["max_log_l2"]) for x in learned]
    out = {"experiment": NAME, "dataset": data.name, "config": cfg, "seed": seed,
           "n_hyperparameters": int(sum(x.size for x in init)),
           "reached_100_percent_valid_at": state["hit"], "meta_iterations": len(res.objectives),
           "initial": initial, "final": final,
           "best_test_accuracy": curves["test_accuracy"][best_test],
           "best_test_accuracy_at": best_test, "curves": curves, "meta": res.to_json(),
           "seconds": seconds}
    arrays = {"log_l2_weights": np.asarray(learned[0]), "log_l2_biases": np.asarray(learned[1]),
              **{k: np.asarray(v) for k, v in curves.items()}}
    return out, arrays


def main(argv=None):
    args = parse_experiment_args(NAME, __doc__, add_arguments, argv)
    cfg = resolve(args)
    data = load_data_from_args(args, kind="mnist")
    out, arrays = run(data, cfg, seed=args.seed, progress=not args.quick)
    path = save_results(args.out, NAME, out, arrays)
    i, f = out["initial"], out["final"]
    print(f"{NAME}: valid accuracy {i['valid']['accuracy']:.2f} -> {f['valid']['accuracy']:.2f}, "
          f"test accuracy {i['test']['accuracy']:.3f} -> {f['test']['accuracy']:.3f} after "
          f"{out['meta_iterations']} meta-iterations; wrote {path}")
    return out


if __name__ == "__main__":
    main()
