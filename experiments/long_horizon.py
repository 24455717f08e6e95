"""The exact hypergradient over up to 10^4 steps: cost, memory and the growth of its norm.

An MLP on MNIST (the 10k test images; ``--quick``: the bundled digits) is
trained by SGD with momentum for ``T`` steps at a constant learning rate;
the meta-objective is the validation loss of ``w_T`` and the hyperparameters
are the per-step learning rates ``alphas`` and the log learning rate.  For
each ``T`` we measure the exact hypergradient's time and peak memory
(``tracemalloc``, a second run), its information-buffer size, and the norms
of ``d f / d alphas`` and ``d f / d log alpha`` (Maclaurin et al.'s chaos:
the hypergradient grows with the horizon).  Beside it, the cost of storing
the trajectory: measured for ``method="unrolled"`` (autograd's tape) up to
``--unrolled-max`` steps and projected linearly beyond, and the raw size of
the stored ``(w_t, v_t)`` in float64, ``16 N T`` bytes.

    python -m experiments.long_horizon --out results [--quick] [--mnist-dir DIR] [--T 100 1000 10000]
"""

import time
import tracemalloc

import autograd.numpy as anp
import numpy as np
from autograd import grad

from experiments.common import parse_experiment_args, save_results

NAME = "long_horizon"


def measure(fn):
    """``(value, seconds, peak MiB)``: one timed run, then one run traced by tracemalloc."""
    t0 = time.perf_counter()
    value = fn()
    seconds = time.perf_counter() - t0
    tracemalloc.start()
    try:
        fn()
        peak = tracemalloc.get_traced_memory()[1] / 2 ** 20
    finally:
        tracemalloc.stop()
    return value, seconds, peak


def build(args, data):
    from reversible import data as rdata
    from reversible import models
    train, val = rdata.split(data, (data.n - args.n_val, args.n_val), seed=args.seed)
    sizes = [data.d] + list(args.hidden) + [data.n_classes]
    train_loss = models.make_train_loss(train, sizes, args.batch_size, seed=args.seed)
    w0 = models.init_mlp(sizes, scale=0.1, seed=args.seed)
    N = int(sum(w.size for w in w0))

    def objective(log_alpha, alphas_scale, T, method, stats=None):
        from reversible import sgd
        from reversible.models import nll
        alphas = anp.exp(log_alpha) * alphas_scale
        w = sgd(train_loss, w0, alphas, np.full(T, args.beta), None, method=method, stats=stats)
        return nll(w, val.X, val.y)

    return objective, N, sizes


def run(args):
    from experiments.pes_schedule import load_data
    data, source = load_data(args)
    objective, N, sizes = build(args, data)
    objective(float(np.log(args.alpha[0])), np.ones(2), 2, "exact")   # warm-up (imports, JIT)
    from reversible.errors import ReversibleError
    rows = []
    from tqdm.auto import tqdm
    for k, alpha in enumerate(args.alpha):
        la = float(np.log(alpha))
        for T in tqdm(args.T, desc=f"horizons (alpha={alpha:g})", unit="T", leave=False):
            stats = {}
            ones = np.ones(T)
            g = grad(lambda a, s: objective(a, s, T, "exact", stats), (0, 1))
            row = {"alpha": alpha, "T": T, "stored_trajectory_mb": 16.0 * N * T / 2 ** 20}
            try:
                (g_log, g_alphas), seconds, peak = measure(lambda: g(la, ones))
            except (ReversibleError, FloatingPointError) as err:     # training diverged
                row["error"] = f"{type(err).__name__}: {err}"
                rows.append(row)
                tqdm.write(f"alpha={alpha} T={T}: {row['error']}")
                continue
            row.update(seconds=seconds, peak_mb=peak,
                       buffer_mb=stats.get("buffer_bits", float("nan")) / 8 / 2 ** 20,
                       norm_log_alpha=float(abs(g_log)), norm_alphas=float(np.linalg.norm(g_alphas)))
            if k == 0 and T <= args.unrolled_max:
                gu = grad(lambda a: objective(a, ones, T, "unrolled"))
                gval, row["unrolled_seconds"], row["unrolled_peak_mb"] = measure(lambda: gu(la))
                row["unrolled_rel_diff"] = float(abs(gval - g_log) / max(abs(g_log), 1e-300))
            rows.append(row)
            tqdm.write(f"alpha={alpha} T={T}: exact {seconds:.2f} s, peak {peak:.1f} MiB, "
                  f"|df/dlog alpha| {row['norm_log_alpha']:.3g}, |df/dalphas| "
                  f"{row['norm_alphas']:.3g}")
    measured = [(r["T"], r["unrolled_peak_mb"]) for r in rows if "unrolled_peak_mb" in r]
    projection = None
    if len(measured) >= 2:
        Ts, mb = np.array(measured, dtype=float).T
        slope, intercept = np.polyfit(Ts, mb, 1)
        projection = {"mb_per_step": float(slope), "intercept_mb": float(intercept)}
        for r in rows:
            r["unrolled_projected_mb"] = float(intercept + slope * r["T"])
    meta = {"experiment": NAME, "settings": {"T": args.T, "hidden": args.hidden, "batch_size": args.batch_size,
                         "n_val": args.n_val, "alpha": args.alpha, "beta": args.beta,
                         "unrolled_max": args.unrolled_max, "quick": args.quick},
            "data": source, "N": N, "layer_sizes": sizes, "rows": rows,
            "unrolled_projection": projection}
    path = save_results(args.out, NAME, meta)
    print("wrote", path)
    return meta


def add_arguments(p):
    p.add_argument("--T", type=int, nargs="+", default=None,
                   help="horizons (default 100 1000 10000; --quick 10 20 40)")
    p.add_argument("--hidden", type=int, nargs="*", default=None, help="default 50; --quick 16")
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--n-val", type=int, default=None, help="default 2000; --quick 300")
    p.add_argument("--alpha", type=float, nargs="+", default=[0.3, 3.0],
                   help="constant learning rates, one series each (unrolled: first only)")
    p.add_argument("--beta", type=float, default=0.9, help="momentum")
    p.add_argument("--unrolled-max", type=int, default=None,
                   help="largest T measured with method='unrolled' (default 1000; --quick 40)")


def main(argv=None):
    args = parse_experiment_args(NAME, __doc__, add_arguments, argv)
    q = args.quick
    for k, v in {"T": [10, 20, 40] if q else [100, 1000, 10000], "hidden": [16] if q else [50],
                 "n_val": 300 if q else 2000, "unrolled_max": 40 if q else 1000}.items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    run(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


def tables(meta):
    """Markdown tables for docs/long-horizons.md: ``{"long_horizon": text}``."""
    lines = ["| alpha | T | exact s | exact peak MiB | buffer MiB | unrolled s | unrolled peak MiB "
             "(measured / projected) | stored (w, v) MiB | \\|df/dlog alpha\\| | \\|df/dalphas\\| |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    fmt = lambda x: "-" if x is None or x != x else f"{x:.3g}"
    default_alpha = meta.get("settings", {}).get("alpha", "-")
    for r in meta["rows"]:
        alpha = r.get("alpha", default_alpha)
        measured = r.get("unrolled_peak_mb")
        mem = fmt(measured) if measured is not None else f"({fmt(r.get('unrolled_projected_mb'))})"
        if r.get("error"):
            lines.append(f"| {alpha} | {r['T']} | diverged | | | | | | | |")
            continue
        lines.append(f"| {alpha} | {r['T']} | {fmt(r['seconds'])} | {fmt(r['peak_mb'])} | "
                     f"{fmt(r['buffer_mb'])} | {fmt(r.get('unrolled_seconds'))} | {mem} | "
                     f"{fmt(r['stored_trajectory_mb'])} | {fmt(r['norm_log_alpha'])} | "
                     f"{fmt(r['norm_alphas'])} |")
    s = meta.get("settings", {})
    data = "MNIST" if "mnist" in str(meta.get("data")).lower() else meta.get("data", "?")
    note = (f"{data}, layers {meta.get('layer_sizes', '?')} (N = {meta.get('N', '?')}), "
            f"beta {s.get('beta')}{' (quick mode)' if s.get('quick') else ''}; "
            "times on a shared machine. Source: docs/results/long_horizon.json, written by "
            "`python -m experiments.long_horizon` with these settings.")
    return {NAME: "\n".join(lines) + f"\n\n<sub>{note}</sub>"}
