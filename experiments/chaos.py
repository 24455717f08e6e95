"""Chaotic learning dynamics (Maclaurin et al. 2015, "chaos" figure).

An MLP [784, 200, 50, 10] is trained on the first 1,000 MNIST images (batches
of 250 in order, T = 50, beta = 0.9, initial scale e^-2, the same seed at every
point).  For each log learning rate on a grid over [0.5, 2.5] we record the
final training loss and its exact hypergradient d loss / d log alpha.  A second
sweep repeats this for T in {1, 5, 10, 20, 50} over a wider range.  Points run
through :func:`reversible.sweep.sweep` (dask; resumable).

    python -m experiments.chaos --out results --mnist-dir /path/to/mnist
"""

import argparse
import functools
import sys

import numpy as np

from experiments.common import add_common_arguments, load_data_from_args, save_results

NAME = "chaos"


def add_arguments(parser):
    add_common_arguments(parser)
    parser.add_argument("--points", type=int, default=1000,
                        help="log learning rates in the main sweep (default %(default)s)")
    parser.add_argument("--log-alpha-range", type=float, nargs=2, default=[0.5, 2.5],
                        metavar=("LO", "HI"), help="main sweep range (default %(default)s)")
    parser.add_argument("--T", type=int, default=50, help="training steps (default %(default)s)")
    parser.add_argument("--Ts", type=int, nargs="*", default=[1, 5, 10, 20, 50],
                        help="T values of the second sweep (none: skip it)")
    parser.add_argument("--T-points", type=int, default=200,
                        help="log learning rates per T in the second sweep (default %(default)s)")
    parser.add_argument("--T-log-alpha-range", type=float, nargs=2, default=[-3.0, 3.0],
                        metavar=("LO", "HI"), help="second sweep range (default %(default)s)")
    parser.add_argument("--beta", type=float, default=0.9, help="momentum (default %(default)s)")
    parser.add_argument("--n-train", type=int, default=1000, help="training images (first n)")
    parser.add_argument("--batch", type=int, default=250, help="batch size, in order")
    parser.add_argument("--hidden", type=int, nargs="*", default=[200, 50], help="hidden widths")
    parser.add_argument("--log-scale", type=float, default=-2.0, help="log initial weight scale")
    parser.add_argument("--scheduler", default=None,
                        help="dask scheduler address, or 'serial'; default: embedded LocalCluster")
    parser.add_argument("--workers", type=int, default=None, help="LocalCluster workers")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return parser


def quick_settings(args):
    """Shrink ``args`` in place to a smoke test that runs in seconds."""
    args.points, args.T, args.Ts, args.T_points = 6, 5, [1, 3], 4
    args.n_train, args.batch, args.hidden = 200, 50, [16]
    if args.scheduler is None:
        args.scheduler = "serial"       # starting a cluster would take longer than the work


@functools.lru_cache(maxsize=4)
def _problem(data_args):
    """Data, layer sizes and train loss for one worker (cached per process)."""
    from reversible.models import make_train_loss
    ns = argparse.Namespace(**dict(data_args))
    data = load_data_from_args(ns, n=ns.n_train)
    sizes = [data.d] + list(ns.hidden) + [data.n_classes]
    loss = make_train_loss(data, sizes, ns.batch, seed=ns.seed, shuffle=False)
    return data, sizes, loss


def run_point(point, data_args):
    """Train at one (log alpha, T); return the final training loss and d loss / d log alpha."""
    import autograd.numpy as anp
    from autograd import value_and_grad

    import reversible
    from reversible.models import init_mlp, nll
    data, sizes, loss = _problem(data_args)
    w0 = init_mlp(sizes, scale=float(np.exp(point["log_scale"])), seed=point["seed"])
    T = int(point["T"])
    betas = np.full(T, point["beta"])
    stats = {}

    def final_loss(log_alpha):
        w_T = reversible.sgd(loss, w0, anp.exp(log_alpha) * anp.ones(T), betas, stats=stats)
        return nll(w_T, data.X, data.y)

    try:
        value, grad = value_and_grad(final_loss)(float(point["log_alpha"]))
        status = "ok"
    except (reversible.FixedPointOverflowError, reversible.NonFiniteError) as err:
        # divergent training at a huge learning rate: record a gap, not a crash
        # (a ReversibilityError is a real bug and propagates)
        value, grad, status = np.nan, np.nan, f"{type(err).__name__}: {err}"[:300]
    return {"loss": float(value), "grad": float(grad), "status": status,
            "reversed_exactly": bool(stats.get("reversed_exactly", False)),
            "bits_per_element_step": float(stats.get("bits_per_element_step", np.nan))}


def onset_of_chaos(log_alpha, loss, grad, window=5, tol=0.5):
    """First log alpha where the exact hypergradient stops matching the loss curve's slope.

    Compares ``grad`` with the finite-difference slope of ``loss`` on the grid;
    returns the first grid point from which the median relative disagreement
    over ``window`` consecutive points exceeds ``tol`` (NaN if never).
    """
    x, f, g = (np.asarray(a, dtype=np.float64) for a in (log_alpha, loss, grad))
    if x.size < window + 2:
        return float("nan")
    fd = np.gradient(f, x)
    rel = np.abs(fd - g) / (np.abs(fd) + np.abs(g) + 1e-12)
    rel[~np.isfinite(rel)] = 1.0
    for i in range(x.size - window + 1):
        if np.median(rel[i:i + window]) > tol:
            return float(x[i])
    return float("nan")


def _data_args(args):
    keep = ("mnist_dir", "omniglot_zip", "seed", "n_train", "batch", "hidden")
    items = []
    for k in keep:
        v = getattr(args, k)
        items.append((k, tuple(v) if isinstance(v, list) else v))
    return tuple(items)


def _sweep(args, name, log_alphas, T, out, client):
    from reversible.sweep import sweep
    points = [{"log_alpha": float(a), "T": int(T), "beta": args.beta, "log_scale": args.log_scale,
               "seed": args.seed} for a in log_alphas]
    fn = functools.partial(run_point, data_args=_data_args(args))
    res = sweep(fn, points, out / "sweeps" / name, scheduler=args.scheduler,
                progress=not args.no_progress, name=name, client=client)
    loss = np.array([r["loss"] for r in res], dtype=np.float64)
    grad = np.array([r["grad"] for r in res], dtype=np.float64)
    exact = all(r["reversed_exactly"] for r in res if r["status"] == "ok")
    failed = sum(r["status"] != "ok" for r in res)
    return loss, grad, exact, failed


def run(args):
    """Run both sweeps and save ``chaos.json`` / ``chaos.npz`` in ``args.out``."""
    if args.quick:
        quick_settings(args)
    if args.scheduler in ("local", ""):
        args.scheduler = None
    from reversible.sweep import open_client
    with open_client(args.scheduler, args.workers) as client:
        return _run(args, client)


def _run(args, client):
    import pathlib
    out = pathlib.Path(args.out)
    data, sizes, _ = _problem(_data_args(args))
    la = np.linspace(*args.log_alpha_range, args.points)
    loss, grad, exact, failed = _sweep(args, f"chaos-T{args.T}", la, args.T, out, client)
    arrays = {"log_alpha": la, "loss": loss, "grad": grad}
    summary = {"experiment": NAME, "dataset": data.name, "layer_sizes": sizes,
               "n_train": data.n, "batch": args.batch, "T": args.T, "beta": args.beta,
               "log_scale": args.log_scale, "seed": args.seed, "points": args.points,
               "log_alpha_range": args.log_alpha_range, "quick": args.quick,
               "reversed_exactly": exact, "failed_points": failed,
               "onset_of_chaos": onset_of_chaos(la, loss, grad)}
    if args.Ts:
        la_T = np.linspace(*args.T_log_alpha_range, args.T_points)
        losses, grads, onsets = [], [], []
        for T in args.Ts:
            lT, gT, eT, fT = _sweep(args, f"chaos-T{T}-wide", la_T, T, out, client)
            losses.append(lT)
            grads.append(gT)
            onsets.append(onset_of_chaos(la_T, lT, gT))
            summary["reversed_exactly"] = summary["reversed_exactly"] and eT
            summary["failed_points"] += fT
        arrays.update(T_values=np.array(args.Ts), T_log_alpha=la_T, T_loss=np.array(losses),
                      T_grad=np.array(grads))
        summary.update(Ts=args.Ts, T_points=args.T_points,
                       T_log_alpha_range=args.T_log_alpha_range, T_onset_of_chaos=onsets)
    save_results(out, NAME, summary, arrays)
    return summary


def main(argv=None):
    parser = add_arguments(argparse.ArgumentParser(prog="python -m experiments.chaos",
                                                   description=__doc__.splitlines()[0]))
    args = parser.parse_args(argv)
    # run from the importable module (not __main__) so dask workers can unpickle run_point
    import importlib
    summary = importlib.import_module("experiments.chaos").run(args)
    print(f"chaos: {summary['points']} points on {summary['dataset']}, onset of chaos at "
          f"log alpha ~ {summary['onset_of_chaos']:.3g}; results in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
