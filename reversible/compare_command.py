"""``reversible compare``: grade approximate hypergradients on an MLP over several horizons.

For each horizon T, :class:`reversible.models.MLPClassifierProblem` on the
bundled digits is handed to :func:`reversible.compare`; the tables are
printed, saved to ``compare.json`` and drawn in ``compare.png`` (direction and
magnitude of each method's hypergradient against T).
"""

import json
import os

import numpy as np

from .atomic import atomic_write
from .cli import (check_output_directory, method_spec, nonnegative_int, positive_int,
                  warm_up_kernels)
from .grading import DEFAULT_METHODS, coinciding_groups, compare, json_default
from .models import MLPClassifierProblem

#: measured as CPU seconds on a busy machine: --T 30: 23 s, --T 100: 68 s, so about 200 s for
#: T = 300 (cost grows linearly with T); --quick: 31 s
DURATION = "about 5 min on 2 cores (--quick: about 30 s)"
DIGITS = 1797                                  # examples in the bundled digits


def add_arguments(parser):
    parser.add_argument("--T", type=positive_int, nargs="+", default=None,
                        help="training horizons (default 30 100 300; --quick: 10 30)")
    parser.add_argument("--methods", type=method_spec, nargs="+", default=list(DEFAULT_METHODS),
                        help="method specs, e.g. exact drmad truncated:K=10 neumann:terms=50 "
                             "(default: all)")
    parser.add_argument("--reference", type=method_spec, default="exact",
                        help="reference method (default exact)")
    parser.add_argument("--hidden", type=positive_int, nargs="*", default=[32],
                        help="hidden layer sizes (default 32; none: logistic regression)")
    parser.add_argument("--batch-size", type=positive_int, default=50,
                        help="minibatch size (default 50, at most --n-train)")
    parser.add_argument("--n-train", type=positive_int, default=1000,
                        help=f"training examples (default 1000; at most {DIGITS - 1}, the rest "
                             "validate)")
    parser.add_argument("--seed", type=nonnegative_int, default=0)
    parser.add_argument("--no-memory", action="store_true",
                        help="skip the second, tracemalloc-traced run of each method")
    parser.add_argument("--jobs", type=positive_int, default=1,
                        help="worker processes, one method each (give each its own core)")
    parser.add_argument("--quick", action="store_true", help="small horizons for a smoke test")
    parser.add_argument("--out", default="compare_out", help="folder for compare.json and figures")


def check_arguments(args):
    """Cross-argument checks argparse cannot express: a usage error (exit 2) names the problem."""
    if args.n_train >= DIGITS:
        args.command_parser.error(f"argument --n-train: must leave validation examples out of the "
                           f"{DIGITS} digits (at most {DIGITS - 1}); got {args.n_train}")
    if args.batch_size > args.n_train:
        args.command_parser.error(f"argument --batch-size: must be at most --n-train ({args.n_train}); "
                           f"got {args.batch_size}")
    check_output_directory(args.command_parser, args.out)


def main(args):
    from tqdm.auto import tqdm

    check_arguments(args)
    Ts = args.T or ([10, 30] if args.quick else [30, 100, 300])
    compile_seconds = warm_up_kernels()
    results = []
    horizons = tqdm(Ts, desc="horizons", unit="T", leave=False)
    for T in horizons:
        horizons.set_postfix(T=T)
        prob = MLPClassifierProblem.on_digits(T, n_train=args.n_train, seed=args.seed,
                                              hidden=tuple(args.hidden), batch_size=args.batch_size)
        table = compare(prob.objective, prob.hypers0(), args.methods, args.reference,
                        memory=not args.no_memory, jobs=args.jobs, warmup=prob.warmup_pair(),
                        progress=f"T={T}")
        table.meta.update(T=T, N=prob.N, layer_sizes=prob.layer_sizes)
        tqdm.write(f"\n== T = {T}  (N = {prob.N} weights; reference {table.reference}) ==")
        tqdm.write(table.format())
        results.append(table.to_dict())
    horizons.close()
    path = os.path.join(args.out, "compare.json")
    text = json.dumps({"results": results, "compile_seconds": compile_seconds}, indent=1,
                      default=json_default)
    atomic_write(path, lambda fh: fh.write(text), mode="w")
    fig = plot_horizons(results, os.path.join(args.out, "compare.png"))
    print(f"\nwrote {path} and {fig}")
    return 0


def method_curve(results, label, key):
    """One method's ``key`` at every horizon (NaN where it failed)."""
    out = []
    for r in results:
        row = next((x for x in r["rows"] if x["method"] == label), {})
        value = row.get(key) if not row.get("error") else None
        out.append(np.nan if value is None else float(value))
    return np.array(out)


def plot_horizons(results, path):
    """``1 - cosine`` and norm ratio against T; methods drawing the same curve share one line."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FixedLocator, NullLocator

    Ts = np.array([r["meta"]["T"] for r in results], dtype=float)
    labels = [row["method"] for row in results[0]["rows"]]
    groups = coinciding_groups({label: np.concatenate([method_curve(results, label, "cosine"),
                                                       method_curve(results, label, "norm_ratio")])
                                for label in labels})
    markers = "osD^vP*Xh<>p"
    colors = plt.cm.tab10(np.arange(len(groups)) % 10)
    # a small horizontal dodge per group, so markers at equal values stay visible
    dodge = np.exp(0.05 * (np.arange(len(groups)) - (len(groups) - 1) / 2))
    floor = 1e-16
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for i, group in enumerate(groups):
        cos = method_curve(results, group[0], "cosine")
        ratio = method_curve(results, group[0], "norm_ratio")
        label = " = ".join(group)
        style = dict(marker=markers[i % len(markers)], color=colors[i], lw=1.4, ms=6,
                     mfc="none" if i % 2 else colors[i], label=label)
        axes[0].plot(Ts * dodge[i], np.maximum(1.0 - cos, floor), **style)
        axes[1].plot(Ts * dodge[i], ratio, **style)
    axes[0].set(yscale="log", ylabel="1 - cosine to the reference (lower is better)",
                title="direction")
    axes[0].axhline(1.0, color="0.6", lw=0.8, ls=":")
    axes[0].text(1.0, 1.0, "orthogonal ", transform=axes[0].get_yaxis_transform(), ha="right",
                 va="bottom", fontsize=8, color="0.4")
    axes[0].text(1.0, floor, "identical to rounding ", transform=axes[0].get_yaxis_transform(),
                 ha="right", va="bottom", fontsize=8, color="0.4")
    axes[0].set_ylim(floor / 10, 10.0)
    axes[1].set(yscale="log", ylabel="|g| / |g_ref|", title="magnitude")
    axes[1].axhline(1.0, color="0.6", lw=0.8, ls=":")
    for ax in axes:
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(FixedLocator(Ts))
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_xticks(Ts, [f"{int(t)}" for t in Ts])
        ax.set_xlim(Ts.min() / 1.5, Ts.max() * 1.5)
        ax.set_xlabel("training steps T")
        ax.grid(alpha=0.3, which="major")
    handles, names = axes[0].get_legend_handles_labels()
    fig.legend(handles, names, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8,
               title=f"method (reference: {results[0]['reference']})", title_fontsize=8,
               frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path
