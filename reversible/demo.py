"""``reversible demo``: exact hypergradients of an MLP's training run on the bundled digits.

Hyperparameters, one entry per parameter array (weights and biases of each
layer are separate groups): learning-rate schedules ``exp(log_alpha[t, g])``,
momentum schedules ``logistic(logit_beta[t, g])``, initial scales
``exp(log_init_scale[g])`` (times fixed noise) and L2 strengths
``exp(log_l2[g])``.  The meta-objective is the validation loss after training.
"""

import json
import os
import time

import numpy as onp
from autograd import grad

from .atomic import atomic_write
from .cli import (check_output_directory, int_list, nonnegative_int, positive_float, positive_int,
                  warm_up_kernels)
from .meta import optimize
from .models import MLPClassifierProblem

#: measured (CPU seconds of ``reversible demo`` on a busy machine; the one-time numba
#: compilation, measured with an empty NUMBA_CACHE_DIR, comes on top on the first run)
DURATION = ("about 10 s on 2 cores, plus about 10 s once to compile the kernels "
            "(--quick: about 5 s)")
N_TRAIN, N_VALID = 1000, 397                   # of the 1797 bundled digits
PIXELS, CLASSES = 64, 10


def add_arguments(parser):
    parser.add_argument("--out", default="reversible-demo", help="output directory (default: %(default)s)")
    parser.add_argument("--layers", type=int_list, default=[64, 32, 10],
                        help=f"MLP layer sizes, comma-separated, from {PIXELS} inputs to {CLASSES} "
                             "classes (default: 64,32,10)")
    parser.add_argument("--T", type=positive_int, default=100, help="training steps (default: %(default)s)")
    parser.add_argument("--batch", type=positive_int, default=100,
                        help=f"minibatch size, at most {N_TRAIN} (default: %(default)s)")
    parser.add_argument("--meta-steps", type=positive_int, default=15,
                        help="meta-iterations (default: %(default)s)")
    parser.add_argument("--meta-lr", type=positive_float, default=0.05,
                        help="Adam step (default: %(default)s)")
    parser.add_argument("--seed", type=nonnegative_int, default=0)
    parser.add_argument("--quick", action="store_true", help="tiny settings (a few seconds)")


def check_arguments(args):
    """Checks argparse cannot express alone: a usage error (exit 2) names the option."""
    layers = args.layers
    if len(layers) < 2 or layers[0] != PIXELS or layers[-1] != CLASSES:
        args.command_parser.error(f"argument --layers: must start with {PIXELS} (pixels of a digit) and end "
                           f"with {CLASSES} (classes), e.g. 64,32,10; got {','.join(map(str, layers))}")
    if args.batch > N_TRAIN:
        args.command_parser.error(f"argument --batch: must be at most {N_TRAIN} (the training examples); "
                           f"got {args.batch}")
    check_output_directory(args.command_parser, args.out)


def build_problem(layers, T, batch, seed):
    """The demo's problem and starting hyperparameters: per-step schedules for every group."""
    problem = MLPClassifierProblem.on_digits(T, n_train=N_TRAIN, n_valid=N_VALID, seed=seed,
                                             hidden=tuple(layers[1:-1]), batch_size=batch)
    hypers0 = problem.hypers0(alpha=0.3, beta=0.9, l2=onp.exp(-6.0), schedule=True,
                              init_scale=problem.fan_in_scales(bias_scale=0.01))
    return problem, hypers0


def _agreement(g_exact, g_ref):
    rows = {}
    for k in g_exact:
        a, b = onp.ravel(g_exact[k]), onp.ravel(g_ref[k])
        rel = onp.linalg.norm(a - b) / max(onp.linalg.norm(b), 1e-300)
        cos = float(onp.dot(a, b) / max(onp.linalg.norm(a) * onp.linalg.norm(b), 1e-300))
        rows[k] = {"relative_error": float(rel), "cosine": cos}
    return rows


def main(args):
    check_arguments(args)
    if args.quick:
        args.T, args.meta_steps, args.layers = min(args.T, 20), min(args.meta_steps, 3), [64, 16, 10]
    layers = args.layers
    p, h0 = build_problem(layers, args.T, args.batch, args.seed)
    print(f"MLP {layers} on the bundled digits: {p.N} weights in {p.G} groups, "
          f"T = {args.T} steps, batch {args.batch}")
    compile_seconds = warm_up_kernels()

    stats = {}
    t0 = time.perf_counter()
    g_exact = grad(p.objective)(h0, "exact", stats)
    t_exact = time.perf_counter() - t0
    t0 = time.perf_counter()
    g_unrolled = grad(p.objective)(h0, "unrolled")
    t_unrolled = time.perf_counter() - t0
    agree = _agreement(g_exact, g_unrolled)
    print("\nexact hypergradient vs autograd through the unrolled float64 loop:")
    for k, row in agree.items():
        print(f"  {k:14s} relative error {row['relative_error']:.2e}   cosine {row['cosine']:.12f}")
    print(f"  reversed bit for bit: {stats['reversed_exactly']}   "
          f"time exact {t_exact:.2f} s, unrolled {t_unrolled:.2f} s "
          f"(kernel compilation, {compile_seconds:.1f} s, not included)")
    bits, ideal = stats["bits_per_element_step"], stats["ideal_bits_per_element_step"]
    traj_bytes = 2 * 8 * p.N * args.T
    print(f"\ninformation buffer: {bits:.4f} bits per weight per step "
          f"(ideal log2(1/beta) = {ideal:.4f}, ratio {bits / ideal:.4f})")
    print(f"memory: buffer {stats['buffer_bits'] / 8 / 1024:.1f} KiB of information "
          f"({stats['buffer_bytes'] / 1024:.1f} KiB allocated) vs {traj_bytes / 1024:.1f} KiB to store "
          f"the trajectory (w and v in float64): {traj_bytes / max(stats['buffer_bytes'], 1):.0f}x less")

    print(f"\n{args.meta_steps} meta-iterations of Adam on the validation loss:")
    result = optimize(lambda h, i: p.objective(h), h0, args.meta_steps, lr=args.meta_lr,
                      progress=True)
    print(f"  validation loss {result.objectives[0]:.4f} -> {result.objectives[-1]:.4f} "
          f"(last evaluated iterate)")
    final = float(p.objective(result.hypers))
    print(f"  validation loss at the final hyperparameters: {final:.4f}")

    png = os.path.join(args.out, "learned_schedules.png")
    plot_schedules(h0, result.hypers, p.group_names(), png)
    summary = {"layers": layers, "T": args.T, "weights": p.N, "agreement": agree,
               "reversed_exactly": bool(stats["reversed_exactly"]),
               "bits_per_element_step": bits, "ideal_bits_per_element_step": ideal,
               "buffer_bytes": stats["buffer_bytes"], "trajectory_bytes": traj_bytes,
               "seconds_exact": t_exact, "seconds_unrolled": t_unrolled,
               "seconds_compile": compile_seconds,
               "meta": result.to_json(), "final_validation_loss": final}
    path = os.path.join(args.out, "demo.json")
    atomic_write(path, lambda fh: json.dump(summary, fh, indent=2), mode="w")
    print(f"\nwrote {png} and {path}")
    return 0


def plot_schedules(h0, h1, names, path):
    """Learned learning-rate and momentum schedules per group: running mean bold, raw values faint."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from scipy.ndimage import uniform_filter1d

    alphas = onp.exp(h1["log_alpha"])
    betas = 1 / (1 + onp.exp(-h1["logit_beta"]))
    T = alphas.shape[0]
    window = max(1, T // 5)
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    colors = plt.cm.tab10(onp.arange(len(names)) % 10)
    steps = onp.arange(T)
    for ax, values, initial in ((axes[0], alphas, onp.exp(h0["log_alpha"][:, 0])),
                                (axes[1], betas, 1 / (1 + onp.exp(-h0["logit_beta"][:, 0])))):
        smooth = uniform_filter1d(values, window, axis=0, mode="nearest")
        for g, name in enumerate(names):
            ax.plot(steps, values[:, g], color=colors[g], lw=0.6, alpha=0.25)
            ax.plot(steps, smooth[:, g], color=colors[g], lw=2, label=name)
        ax.plot(steps, initial, "k--", lw=1, label="initial")
        ax.set_xlabel("training step t")
        ax.grid(alpha=0.3)
    axes[0].set(title=f"learning rate (running mean over {window} steps; raw faint)",
                ylabel="alpha_t")
    axes[1].set(title=f"momentum (running mean over {window} steps; raw faint)", ylabel="beta_t")
    for ax in axes:
        ax.title.set_fontsize(10)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8,
               title="parameter group", title_fontsize=8, frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
