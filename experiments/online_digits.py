"""Online L2 tuning of a digits MLP (the analogue of Table 2 of "Online hyper-parameter
optimization", ICLR 2018 submission, which used MNIST).

An MLP [64, 32, 10] (tanh) is trained on 300 of scikit-learn's 8x8 digits
(batches of 50, momentum 0.9, learning rate 1.0, 1500 steps) with one weight
decay ``lam`` on every parameter array (``0.5 lam |w|^2`` added to the mean
cross-entropy), tuned online on ``log lam`` from six initial values log-spaced
in [1e-6, 1e-1]; g_V uses validation minibatches of 50 from a separate 300.
Reports, per method and start, the final validation cross-entropy, the best one
seen every 50 steps (early stopping) and the gap, against a grid of fixed lam.

``--dropout`` adds online tuning of a keep-probability on the hidden units
(logistic parameterisation, ``d g / d keep`` by finite differences with coupled
masks) against fixed keep-probabilities; ``--skip-l2 --dropout`` runs only that
and writes ``online_digits_dropout.json``.

Hyper steps are RMS-normalised (RMSprop on ``log lam``, decay 0.9, because
``d L_V / d log lam`` is proportional to ``lam`` and would leave lam = 1e-6
stuck): ``c * period * h / rms(h)`` per update, ``period`` = the number of
training steps between updates (K for unroll(K), ``every`` for adaptive, 1
for clip), so every method may drift by ``c`` per training step.

    python -m experiments.online_digits --out results [--quick]
"""

import argparse
import sys
import time

import autograd.numpy as anp
import numpy as np
from tqdm.auto import tqdm

from experiments.common import add_common_arguments, save_results
from reversible import data, models, online

NAME = "online_digits"
METHODS = ["unroll1", "unroll10", "clip0.1", "clip10", "adaptive50_50"]


class DigitsSetup:
    """Data, losses and initial weights of the digits MLP with one global log-L2."""

    def __init__(self, n_train=300, n_val=300, hidden=32, batch=50, seed=0, scale=0.1,
                 activation="tanh", per_group=False, val_batch=50):
        ds = data.load_digits()
        self.train, self.val, self.test = data.split(
            ds, [n_train, n_val, ds.n - n_train - n_val], seed=seed)
        self.sizes = [ds.d, hidden, ds.n_classes]
        self.batch, self.seed, self.activation = batch, seed, activation
        self.per_group, self.val_batch = per_group, val_batch
        self.G = len(models.mlp_shapes(self.sizes))
        self._base = models.make_train_loss(self.train, self.sizes, batch, seed=seed,
                                            activation=activation, l2="group")
        self.w0 = models.init_mlp(self.sizes, scale=scale, seed=seed)

    def train_loss(self, w, meta, t):
        """Minibatch NLL + 0.5 exp(meta[0]) |w|^2 (``meta`` = [log lam]); with
        ``per_group``, ``meta`` holds one log-L2 per parameter array."""
        if self.per_group:
            return self._base(w, meta, t)
        return self._base(w, meta[0] * anp.ones(self.G), t)

    def val_loss(self, w, t):
        """NLL on validation minibatch ``t`` (seeded apart from the training batches), or on
        the whole validation set when ``val_batch`` is None."""
        if self.val_batch is None:
            return models.nll(w, self.val.X, self.val.y, self.activation)
        idx = data.batch_indices(self.val.n, self.val_batch, self.seed + 1000, int(t))
        return models.nll(w, self.val.X[idx], self.val.y[idx], self.activation)

    def val_ce(self, w):
        return float(models.nll(w, self.val.X, self.val.y, self.activation))

    def test_ce(self, w):
        return float(models.nll(w, self.test.X, self.test.y, self.activation))


def dropout_train_loss(setup, log_lam):
    """Minibatch NLL of the MLP with inverted dropout on its hidden units, keep-probability
    ``meta[0]``; the mask is ``U_t < keep`` with uniforms ``U_t`` drawn from ``t`` alone
    (coupled masks: the finite difference in ``keep`` compares the same draws)."""
    from autograd.tracer import getval
    lam = float(np.exp(log_lam))
    X, y, n = setup.train.X, setup.train.y, setup.train.n

    def loss(w, meta, t):
        idx = data.batch_indices(n, setup.batch, setup.seed, int(t))
        keep = meta[0]
        U = np.random.Generator(np.random.Philox(key=np.array([setup.seed + 77, int(t)], np.uint64))
                                ).uniform(size=(setup.batch, setup.sizes[1]))
        h = anp.tanh(anp.dot(X[idx], w[0]) + w[1]) * (U < float(getval(keep))) / keep
        out = anp.dot(h, w[2]) + w[3]
        out = out - np.max(getval(out), axis=1, keepdims=True)
        logp = out - anp.log(anp.sum(anp.exp(out), axis=1, keepdims=True))
        return -anp.mean(logp[np.arange(setup.batch), y[idx]]) + 0.5 * lam * sum(
            anp.sum(p ** 2) for p in w)

    return loss


def _fixed_curve(setup, args, loss, meta):
    """Validation CE every ``args.every`` steps of plain training with ``meta`` fixed."""
    prob = online.OnlineProblem(loss, setup.val_loss, setup.w0, meta, "none", None, 1e-2, True,
                                False, args.beta)
    w, v, ces = prob.ws.flatten(setup.w0), None, []
    v = np.zeros_like(w)
    for start in range(0, args.steps, args.every):
        w, v = prob.train(w, v, meta, np.log(args.lr), start, min(args.every, args.steps - start))
        ces.append(setup.val_ce(prob.ws.unflatten(w)))
    return np.array(ces)


def _dropout_rows(setup, args):
    """Online keep-probability (clip estimator, finite differences) against fixed values."""
    lam = args.dropout_l2
    loss = dropout_train_loss(setup, np.log(lam))
    rows = []
    rec = lambda w, meta, lr, t: {"val_ce": setup.val_ce(w)}
    runs = [(k, True) for k in args.dropout_inits] + [(k, False) for k in args.dropout_grid]
    for keep0, online_run in runs:
        t0 = time.perf_counter()
        if online_run:
            res = online.train_online(
                loss, setup.val_loss, setup.w0, np.array([keep0]), args.steps,
                args.dropout_method, lr=args.lr, beta=args.beta,
                hyper_lr=args.c * period(args.dropout_method), transform="logistic", fd=[True],
                fd_step=0.02, warmup=args.warmup, hyper_clip=args.hyper_clip, hyper_rms=0.9,
                record_every=args.every, record=rec)
            ce, keep = res.history["val_ce"], float(np.asarray(res.meta)[0])
        else:
            ce, keep = _fixed_curve(setup, args, loss, np.array([keep0])), keep0
        rows.append({"kind": "online" if online_run else "fixed", "keep0": keep0,
                     "keep_final": keep, "val_ce_final": float(ce[-1]),
                     "val_ce_early_stop": float(np.min(ce)), "gap": float(ce[-1] - np.min(ce)),
                     "seconds": time.perf_counter() - t0})
        print(f"dropout {rows[-1]['kind']:>6s} keep0={keep0:.2f}: keep_T={keep:.3f}"
              f" val CE {ce[-1]:.4f} early {np.min(ce):.4f}", flush=True)
    return rows


def period(name):
    """Training steps between hyper updates of estimator ``name``."""
    est = online.estimator(name)
    return getattr(est, "K", getattr(est, "every", 1))


def add_arguments(parser):
    add_common_arguments(parser)
    parser.add_argument("--methods", nargs="+", default=METHODS,
                        help="online estimators (default %(default)s)")
    parser.add_argument("--inits", type=float, nargs="+",
                        default=list(np.logspace(-6, -1, 6)), help="initial weight decays")
    parser.add_argument("--grid", type=float, nargs="+", default=list(np.logspace(-6, -1, 11)),
                        help="fixed weight decays of the grid search")
    parser.add_argument("--steps", type=int, default=1500, help="training steps")
    parser.add_argument("--lr", type=float, default=1.0, help="learning rate")
    parser.add_argument("--beta", type=float, default=0.9, help="momentum")
    parser.add_argument("--c", type=float, default=0.005,
                        help="hyper step on log lam per training step (default %(default)s)")
    parser.add_argument("--hidden", type=int, default=32, help="hidden units")
    parser.add_argument("--n-train", type=int, default=300)
    parser.add_argument("--n-val", type=int, default=300)
    parser.add_argument("--every", type=int, default=50, help="validation record interval")
    parser.add_argument("--warmup", type=int, default=50, help="steps before hyper updates")
    parser.add_argument("--hyper-clip", type=float, default=0.5,
                        help="max |step| on log lam per update")
    parser.add_argument("--dropout", action="store_true",
                        help="also tune a hidden-unit dropout keep-probability (finite differences)")
    parser.add_argument("--dropout-method", default="clip10", help="estimator for the dropout run")
    parser.add_argument("--dropout-inits", type=float, nargs="+", default=[0.3, 0.95])
    parser.add_argument("--dropout-grid", type=float, nargs="+", default=[0.3, 0.5, 0.7, 0.9])
    parser.add_argument("--dropout-l2", type=float, default=1e-4, help="fixed L2 of the dropout runs")
    parser.add_argument("--skip-l2", action="store_true", help="skip the L2 table")
    return parser


def _one_run(setup, args, name, lam0):
    tune = name != "fixed"
    rec = lambda w, meta, lr, t: {"val_ce": setup.val_ce(w)}
    t0 = time.perf_counter()
    res = online.train_online(
        setup.train_loss, setup.val_loss, setup.w0, np.array([np.log(lam0)]), args.steps,
        name if tune else "clip1", lr=args.lr, beta=args.beta,
        hyper_lr=args.c * period(name) if tune else 0.0, warmup=args.warmup,
        hyper_clip=args.hyper_clip, hyper_rms=0.9, record_every=args.every, record=rec)
    ce = res.history["val_ce"]
    return {"method": name, "lam0": lam0, "lam_final": float(np.exp(res.u[0])),
            "val_ce_final": float(ce[-1]), "val_ce_early_stop": float(np.min(ce)),
            "gap": float(ce[-1] - np.min(ce)), "test_ce_final": setup.test_ce(res.w),
            "val_acc_final": models.accuracy(res.w, setup.val.X, setup.val.y),
            "seconds": time.perf_counter() - t0}, res


def _fixed_run(setup, args, lam):
    """Plain training at a fixed weight decay (the grid search)."""
    from autograd import grad
    g = grad(setup.train_loss)
    w = [p.copy() for p in setup.w0]
    v = [np.zeros_like(p) for p in setup.w0]
    b = float(online.effective_beta(args.beta))
    meta = np.array([np.log(lam)])
    ces = []
    for t in range(args.steps):
        gt = g(w, meta, t)
        v = [b * vi - (1 - b) * gi for vi, gi in zip(v, gt)]
        w = [wi + args.lr * vi for wi, vi in zip(w, v)]
        if (t + 1) % args.every == 0 or t == args.steps - 1:
            ces.append(setup.val_ce(w))
    return {"lam": lam, "val_ce_final": ces[-1], "val_ce_early_stop": float(np.min(ces)),
            "gap": ces[-1] - float(np.min(ces)), "test_ce_final": setup.test_ce(w)}


def run(args):
    if args.quick:
        args.steps, args.inits, args.grid = 60, [1e-6, 1e-1], [1e-4, 1e-2]
        args.methods, args.every, args.warmup = ["unroll5", "clip1", "adaptive20_20"], 20, 10
        args.dropout_inits, args.dropout_grid = [0.5], [0.5]
    setup = DigitsSetup(args.n_train, args.n_val, args.hidden, seed=args.seed)
    dropout = _dropout_rows(setup, args) if args.dropout else []
    grid = []
    for lam in tqdm([] if args.skip_l2 else args.grid, desc="fixed L2 grid", leave=False):
        grid.append(_fixed_run(setup, args, lam))
        tqdm.write(f"fixed lam={lam:.1e}: val CE {grid[-1]['val_ce_final']:.4f} "
                   f"(early stop {grid[-1]['val_ce_early_stop']:.4f})")
    best = min(grid, key=lambda r: r["val_ce_final"]) if grid else None
    rows, arrays = [], {}
    runs = [] if args.skip_l2 else [(name, lam0) for name in args.methods for lam0 in args.inits]
    for name, lam0 in tqdm(runs, desc="online runs", leave=False):
        row, res = _one_run(setup, args, name, lam0)
        rows.append(row)
        key = f"{name}_{lam0:.0e}"
        arrays[f"log_lam_{key}"] = res.history["u"][:, 0]
        arrays[f"val_ce_{key}"] = res.history["val_ce"]
        arrays["record_steps"] = res.history["t"]
        tqdm.write(f"{name:>14s} lam0={lam0:.0e}: lam_T={row['lam_final']:.2e} val CE "
                   f"{row['val_ce_final']:.4f} early {row['val_ce_early_stop']:.4f} gap "
                   f"{row['gap']:.4f} ({row['seconds']:.0f}s)")
    summary = {"experiment": NAME, "args": vars(args), "sizes": setup.sizes, "grid": grid,
               "grid_best": best, "rows": rows, "dropout": dropout,
               "per_method": {m: {k: float(np.mean([r[k] for r in rows if r["method"] == m]))
                                  for k in ("val_ce_final", "val_ce_early_stop", "gap")}
                              for m in args.methods} if rows else {}}
    name = NAME + "_dropout" if args.skip_l2 else NAME
    summary["experiment"] = name
    return save_results(args.out, name, summary, arrays)


def main(argv=None):
    parser = add_arguments(argparse.ArgumentParser(description=__doc__.split("\n")[0]))
    print("wrote", run(parser.parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
