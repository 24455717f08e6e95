"""Online hypergradient estimates graded against the exact hypergradient.

Digits MLP [64, 32, 10] (see :mod:`experiments.online_digits`) with one log-L2
per parameter array (4) and the log learning rate: 5 hyperparameters; the
validation loss is the cross-entropy on all 300 validation digits.  The
online run is driven in segments of ``W`` steps: at the end of each, the exact
hypergradient of that segment (reversible.sgd) moves every hyperparameter by a
signed step.  At the start ``s`` of each segment the state ``(w, v, hypers)``
is frozen and every estimator is run over the same ``W`` steps with the
hyperparameters held fixed; its last estimate is compared with the exact
``d L_V(w_{s+W}) / d (log l2, log lr)`` of that window: cosine similarity and
norm ratio over the four L2 entries, and the ratio estimate / exact on the
log learning rate.  ``clip1e12`` never clips: it is forward mode over the
whole window and must agree with the exact engine.

    python -m experiments.online_graded --out results [--quick]
"""

import argparse
import sys
import time

import numpy as np
from tqdm.auto import tqdm

from experiments.common import add_common_arguments, save_results
from experiments.online_digits import DigitsSetup
from reversible import online

NAME = "online_graded"
METHODS = ["unroll1_gtgv", "unroll1", "unroll10", "adaptive100_25", "clip0.05", "clip0.5",
           "clip1e12", "hd"]


def add_arguments(parser):
    add_common_arguments(parser)
    parser.add_argument("--methods", nargs="+", default=METHODS, help="estimators to grade")
    parser.add_argument("--window", type=int, default=100, help="window / segment length W")
    parser.add_argument("--segments", type=int, default=10, help="checkpoints (one per segment)")
    parser.add_argument("--lr", type=float, default=1.0, help="initial learning rate")
    parser.add_argument("--beta", type=float, default=0.9, help="momentum")
    parser.add_argument("--l2", type=float, default=1e-3, help="initial L2 of every array")
    parser.add_argument("--driver-step", type=float, default=0.2,
                        help="signed step of the driver on every log hyperparameter")
    parser.add_argument("--hidden", type=int, default=32)
    return parser


def compare(est, exact):
    """Cosine and norm ratio on the L2 block, ratio on the log learning rate."""
    e, x = np.asarray(est[:-1], float), np.asarray(exact[:-1], float)
    ne, nx = np.linalg.norm(e), np.linalg.norm(x)
    cos = float(e @ x / (ne * nx)) if ne > 0 and nx > 0 else float("nan")
    return {"cos_l2": cos, "ratio_l2": float(ne / nx) if nx > 0 and ne > 0 else float("nan"),
            "ratio_lr": float(est[-1] / exact[-1]) if np.isfinite(est[-1]) else float("nan")}


def estimate(setup, state, name, args, t0):
    """The estimator's hypergradient at the end of the window (NaN where it is blind)."""
    w, v, u, log_lr = state
    tune_meta = name not in ("hd", "hd_val")
    tune_lr = name != "unroll1_gtgv"
    est = online.estimator(name)
    if name.startswith("adaptive"):
        est = online.Adaptive(args.window, est.last)
    res = online.train_online(setup.train_loss, setup.val_loss, w, u, args.window, est,
                              lr=float(np.exp(log_lr)), beta=args.beta, hyper_lr=0.0, v0=v,
                              t0=t0, record_every=args.window, tune_meta=tune_meta,
                              tune_lr=tune_lr)
    h = res.history["h"][-1]
    out = np.full(5, np.nan)
    if tune_meta:
        out[:4] = h[:4]
    if tune_lr:
        out[4] = h[-1]
    return out


def _median(xs):
    xs = [x for x in xs if np.isfinite(x)]
    return float(np.median(xs)) if xs else None


def run(args):
    if args.quick:
        args.window, args.segments = 10, 2
        args.methods = ["unroll1_gtgv", "unroll5", "adaptive10_5", "clip0.05", "clip1e12", "hd"]
    setup = DigitsSetup(hidden=args.hidden, seed=args.seed, per_group=True, val_batch=None)
    prob = online.OnlineProblem(setup.train_loss, setup.val_loss, setup.w0, np.zeros(4), "none",
                                None, 1e-2, True, True, args.beta)
    w = prob.ws.flatten(setup.w0)
    v = np.zeros_like(w)
    u = np.log(np.full(4, args.l2))
    log_lr = float(np.log(args.lr))
    rows = []
    arrays = {"steps": [], "exact": [], "hypers": []}
    for k in tqdm(range(args.segments), desc=NAME, unit="segment", leave=False):
        s = k * args.window
        state = (prob.ws.unflatten(w), prob.ws.unflatten(v), u, log_lr)
        t_start = time.perf_counter()
        exact = online.window_hypergradient(prob, w, v, u, log_lr, s, args.window)
        arrays["steps"].append(s)
        arrays["exact"].append(exact)
        arrays["hypers"].append(np.concatenate([u, [log_lr]]))
        for name in args.methods:
            h = estimate(setup, state, name, args, s)
            rows.append({"step": s, "method": name, **compare(h, exact)})
            arrays.setdefault(f"est_{name}", []).append(h)
        tqdm.write(f"step {s}: exact {np.array2string(exact, precision=3)} " + " ".join(
            f"{r['method']}:cos={r['cos_l2']:.2f}" for r in rows[-len(args.methods):])
            + f" ({time.perf_counter() - t_start:.0f}s)")
        # drive: train the segment and take the signed exact step (adaptive(W, W))
        w, v = prob.train(w, v, u, log_lr, s, args.window)
        u = u - args.driver_step * np.sign(exact[:4])
        log_lr = log_lr - args.driver_step * np.sign(exact[4])
    summary = {"experiment": NAME, "args": vars(args), "rows": rows,
               "median_by_method": {m: {k: _median([r[k] for r in rows if r["method"] == m])
                                        for k in ("cos_l2", "ratio_l2", "ratio_lr")}
                                    for m in args.methods}}
    return save_results(args.out, NAME, summary, {k: np.asarray(val) for k, val in arrays.items()})


def main(argv=None):
    parser = add_arguments(argparse.ArgumentParser(description=__doc__.split("\n")[0]))
    print("wrote", run(parser.parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
